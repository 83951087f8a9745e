"""What staff must know about sync beyond the waiting count, read from the station database: a central
that went back in time, dossiers it lost that this station can no longer resend, dossiers whose code
changed, and a clock far off. One reading serves the staff pages and ``kiosk sync status``."""
import json
import sqlite3
from datetime import datetime, timedelta, timezone

from kiosk.core import audit, outbox

from .worker import CENTRAL_RESTORED, lost_at_central, sync_state

CLOCK_WARNING_S = 600            # past this, staff are told the station's clock is off
REWOUND_SHOWN = timedelta(days=3)  # how long the "central restored" notice stays after it was found


def clock_report(state: dict) -> dict:
    """How far this station's clock was from the central's at the last exchange; ``clock_warning`` is
    ``clock_ahead`` or ``clock_behind`` when it is far off (the words are the pages' and commands')."""
    skew = int(state["clock_skew_seconds"]) if state.get("clock_skew_seconds", "").lstrip("-").isdigit() else None
    warning = None
    minutes = None if skew is None else round(abs(skew) / 60)
    if skew is not None and abs(skew) > CLOCK_WARNING_S:
        warning = "clock_ahead" if skew > 0 else "clock_behind"
    return {"clock_skew_seconds": skew, "clock_minutes": minutes, "clock_warning": warning}


def notices(conn: sqlite3.Connection) -> dict:
    """{"rewound": event or None, "resending": n, "lost": [...], "code_changed": [...], "reissued": [...],
    "clock_skew_seconds", "clock_warning"}; the lists hold tracking and official codes, never personal data."""
    try:
        state = sync_state(conn)
    except sqlite3.OperationalError:  # sync has not run on this database yet (no sync tables)
        return {"rewound": None, "resending": 0, "lost": [], "code_changed": [], "reissued": [],
                **clock_report({})}
    rewound = json.loads(state["central_rewound"]) if state.get("central_rewound") else None
    resending = outbox.pending_with_error(conn, f"{CENTRAL_RESTORED}:")
    if rewound and not resending and datetime.fromisoformat(rewound["at"]) < datetime.now(timezone.utc) - REWOUND_SHOWN:
        rewound = None
    return {"rewound": rewound, "resending": resending, "lost": lost_at_central(conn),
            "code_changed": audit.code_changes(conn), "reissued": audit.reissues(conn), **clock_report(state)}
