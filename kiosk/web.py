"""What the citizen's and the staff's pages share: the procedure of a URL, this session's draft, the
tracking address and its QR code, the receipt of a dossier, and the session's idle policy. Views import
this module; no view module imports another (tests/test_layers.py).
"""
import functools
import io
import logging
import sqlite3
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import qrcode
import qrcode.image.svg
from flask import Flask, abort, current_app, g, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from markupsafe import Markup

from agent import staff

from . import i18n, receipts
from .core import calendar as workdays
from .core import drafts
from .core.catalog import Procedure
from .core.db import connect, storage_problem

CARD_KEY = "_card"  # in a draft's answers: the fields read from the CCCD chip, for prefilling
SEEN_RESOLUTION_S = 10


class Connections:
    """The app's database connections: each server thread keeps its own between requests (opening one and
    setting its pragmas costs about a fifth of a simple request); a thread asked for another database
    (a test that points the app elsewhere) closes the old one. Held by the app, not the module, so two
    apps in one process never share a connection."""

    def __init__(self):
        self._local = threading.local()

    def for_thread(self, path: str) -> sqlite3.Connection:
        cached = getattr(self._local, "conn", None)
        if cached is None or self._local.path != path:
            if cached is not None:
                cached.close()
            self._local.conn, self._local.path = connect(path), path
        return self._local.conn


class DraftSweeper:
    """Deletes the app's idle drafts at most once every ``every_s`` seconds, on a request that reads a
    draft (the time of the last sweep belongs to the app, not to the module)."""

    def __init__(self, every_s: float = 60):
        self.every_s = every_s
        self._last = float("-inf")
        self._lock = threading.Lock()

    def maybe_sweep(self, conn: sqlite3.Connection, idle_minutes: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.every_s:
                return
            self._last = now
        drafts.purge_idle(conn, idle_minutes)


def init_limits(app: Flask, track: str) -> None:
    """Per-client limits (Flask-Limiter, in this app's memory): tracking lookups, ``track`` (the station
    file's ``server.track_limit``), so tracking codes cannot be tried by the thousand."""
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", default_limits=[],
                      headers_enabled=True)
    app.extensions["limiter"] = limiter
    for endpoint in ("citizen.track", "citizen.track_code"):  # one budget for both ways of looking up
        app.view_functions[endpoint] = limiter.shared_limit(track, scope="track", exempt_when=_no_code_asked)(
            app.view_functions[endpoint])


def _no_code_asked() -> bool:
    # The empty tracking form is a page like any other; only a code looked up counts.
    return request.endpoint == "citizen.track" and request.args.get("code") is None


def init_db(app: Flask) -> None:
    app.extensions["db"] = Connections()
    app.extensions["draft_sweeper"] = DraftSweeper()
    app.teardown_appcontext(close_db)


def get_db() -> sqlite3.Connection:
    """This request's connection to the station database."""
    if "db" not in g:
        g.db = current_app.extensions["db"].for_thread(current_app.config["DATABASE"])
    return g.db


def close_db(_exc=None) -> None:
    """End of request: the connection stays open for the thread's next request, with nothing pending."""
    db = g.pop("db", None)
    if db is not None and db.in_transaction:
        db.rollback()


def passive(view):
    """Mark a view whose requests are not activity: pictures and sounds that load beside a page never
    touch the session cookie, so their replies cannot overwrite what a form's reply stored in it
    meanwhile (a message, a draft)."""
    view.passive = True
    return view


def catalog() -> dict[str, Procedure]:
    return current_app.config["CATALOG"]


def procedure_or_404(slug: str) -> Procedure:
    """The definition ``slug``: of the catalog release this session's draft of it started on, when there
    is one (a draft finishes on its release after the station switches: sync/catalog_release.py), else
    of the live catalog."""
    proc = _draft_procedure(slug) or catalog().get(slug)
    if proc is None:
        abort(404)
    return proc


def procedure_in(slug, release: int | None) -> Procedure | None:
    """The definition ``slug`` of catalog release ``release`` (a dossier's, a draft's), else of the live
    catalog; None when neither has it."""
    releases = current_app.extensions.get("catalog_releases")
    live = catalog().get(slug)
    if releases is None or (live is not None and live.release == release):
        return live
    return releases.procedure(slug, release) or live


def _draft_procedure(slug: str) -> Procedure | None:
    ref = session.get("draft")
    if "catalog_releases" not in current_app.extensions or not ref or ref.get("slug") != slug or "id" not in ref:
        return None
    open_, release = drafts.release_of(get_db(), ref["id"], idle_minutes())
    # A draft gone or idle too long: a new application starts on the live release.
    return procedure_in(slug, release) if open_ else None


def idle_minutes() -> int:
    return current_app.config["STATION"]["session"]["draft_idle_minutes"]


def current_draft(proc: Procedure) -> tuple[str, dict] | None:
    """(draft id, answers) of this session's application for ``proc``, if there is one."""
    ref = session.get("draft")
    if not ref or ref.get("slug") != proc.slug:
        return None
    current_app.extensions["draft_sweeper"].maybe_sweep(get_db(), idle_minutes())
    loaded = drafts.load(get_db(), current_app.config["PAYLOAD_KEY"], ref["id"], idle_minutes())
    if loaded is None or loaded[0] != proc.slug:
        session.pop("draft", None)
        return None
    return ref["id"], loaded[1]


def tracking_url(code: str) -> str:
    base = current_app.config["STATION"]["station"]["public_url"].rstrip("/")
    return f"{base}{url_for('citizen.track_code', code=code)}"


@functools.lru_cache(maxsize=64)
def qr_svg(data: str) -> Markup:
    """The QR code of ``data`` as inline SVG. The mask is fixed rather than searched: every decoder reads
    all eight masks, and the search is most of the cost of making the code."""
    code = qrcode.QRCode(image_factory=qrcode.image.svg.SvgPathImage, box_size=12, border=2, mask_pattern=0)
    code.add_data(data)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image().save(out)
    svg = out.getvalue().decode()
    return Markup(svg[svg.index("<svg"):])


def receipt_of(proc: Procedure, submission_id: str, code: str):
    return receipts.receipt_for(get_db(), current_app.config["PAYLOAD_KEY"], current_app.config["STATION"],
                                proc, submission_id, tracking_url(code), current_app.extensions["calendar"])


def print_receipt_for(proc: Procedure, submission_id: str, code: str, actor: str) -> None:
    """Queue the dossier's receipt on the station's printer, if it has one (else it is shown on screen).

    Called after the dossier's commit, so nothing here may fail the request: the citizen must be shown
    the committed dossier. The printer keeps a job it cannot record (kiosk/receipts.py); a receipt that
    cannot even be composed is logged with the cause, and the confirmation page shows it on screen."""
    printer = current_app.extensions["receipts"]
    if not printer.enabled:
        return
    try:
        receipt = receipt_of(proc, submission_id, code)
    except Exception as exc:  # noqa: BLE001 - after the commit, the citizen sees the confirmation whatever this is
        logging.getLogger("kiosk").error("receipt of %s not printed (shown on screen): %s", code,
                                         storage_problem(exc) or type(exc).__name__)
        return
    printer.request(get_db(), receipt, submission_id, actor=actor)


def wipe_session() -> None:
    """Forget everything of this citizen's session on the station: the draft and the session itself.
    The next citizen starts in Vietnamese."""
    ref = session.get("draft")
    if ref:
        drafts.delete(get_db(), ref["id"])
    if "staff_session" in session:  # a member of staff pressed "end now": their session ends too, not later
        staff.end_session(get_db(), session["staff_session"], "wiped")
    session.clear()


def end_idle_session():
    """Without JavaScript (or with the browser closed) nobody sees the warning: the server ends a session
    that has been idle past the warning's end, whatever the next request is. A staff member's session
    is held on the server, and its longer idle limit and its shift's lifetime are checked against its row
    (not this cookie's clock) by agent.views.load_staff on every request."""
    view = current_app.view_functions.get(request.endpoint)
    if request.endpoint == "static" or getattr(view, "passive", False):
        return
    if "staff_session" in session and "agent" in current_app.blueprints:
        return
    limits = current_app.config["STATION"]["session"]
    limit = limits["idle_seconds"] + limits["warning_seconds"] + 10
    now = int(time.time())
    seen = session.get("seen")
    if seen is not None and now - seen > limit:
        wipe_session()
        seen = None
    # Rewriting the cookie on every request is not needed to measure minutes, and every rewrite is a
    # chance for a slow reply to overwrite what a newer one stored.
    if (session or request.method == "POST") and (seen is None or now - seen >= SEEN_RESOLUTION_S):
        session["seen"] = now


def local_target(target: str | None, default: str, prefix: str = "/") -> str:
    """A ``next`` address to go on to, if it stays on this station (a path under ``prefix``); else
    ``default``. The address is read the way a browser reads a Location header: tabs and line breaks
    are dropped and a backslash is a slash, so ``/\t/evil.example`` is ``//evil.example`` (another host)
    and is refused; a control character or anything with a scheme or host is refused too."""
    if not target:
        return default
    cleaned = "".join(c for c in target if c not in "\t\n\r").replace("\\", "/")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in cleaned):
        return default
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc or cleaned.startswith("//") or not cleaned.startswith(prefix):
        return default
    return cleaned


# --- processing times, the same on every page ------------------------------------------------------------

def processing_time(proc: Procedure, detail: bool = False) -> str:
    """The words of a procedure's processing time, the same on every page (the start page, the overview,
    the confirmation, the staff pages); ``detail`` adds the same-day cut-off hour."""
    key, values = workdays.processing_time_message(
        proc.processing_days, current_app.extensions["calendar"] if detail else None)
    return i18n.t(key, **values)


def result_due_day(proc: Procedure, received_at: str | None = None) -> str:
    """The day the result is due, as the receipt gives it: for a dossier received at ``received_at`` (ISO
    time), else for one handed in now."""
    received = datetime.fromisoformat(received_at) if received_at else datetime.now(timezone.utc)
    due = workdays.result_due(received, proc.processing_days, current_app.extensions["calendar"])
    return f"{i18n.t(f'receipt_weekday_{due.weekday()}')}, {due:%d/%m/%Y}"
