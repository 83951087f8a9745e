"""Satisfaction ratings: what a citizen thought of the service, after submitting and after a result is
handed over (docs/ratings.md).

A rating belongs to no one. It keeps only what the one-stop centre's index is counted by: the station, the
channel (kiosk | counter | mobile), the procedure's code, the local day and the moment (``submitted`` or
``handed_over``), and a level per criterion. No dossier id, no tracking code, no time of day: the table has
no rowid order either (``WITHOUT ROWID``, keyed by a random id), so the order of the ratings of a day does
not follow the order of its dossiers. The rating id is random and is the central's idempotency key.

The criteria follow the national ones a one-stop centre collects (Nghị định 61/2018/NĐ-CP art. 31,
Thông tư 01/2018/TT-VPCP, the service index of QĐ 766/QĐ-TTg): overall satisfaction, how convenient the
procedure was, whether the information was public and clear, the staff's attitude, the result on time and
the number of trips. Each is one touch on one of three levels, each may be left out, and no moment asks
more than four. The words are here, not in a messages file, because the central's summary names them too.

This module owns the station's ``ratings`` table: one transaction per rating, nothing else in it.
"""
import json
import re
import secrets
import sqlite3
import uuid

from .db import write_transaction

MOMENTS = ("submitted", "handed_over")
CHANNELS = ("kiosk", "counter", "mobile")
LEVELS = (3, 2, 1)  # 3: very satisfied, 2: satisfied, 1: not satisfied (the counter devices' three faces)

LEVEL_WORDS = {
    3: {"vi": "Rất hài lòng", "en": "Very satisfied"},
    2: {"vi": "Hài lòng", "en": "Satisfied"},
    1: {"vi": "Không hài lòng", "en": "Not satisfied"},
}

# In the order they are asked. ``moments``: when it is asked; ``channels``: where (None: everywhere; a
# citizen alone at a kiosk met no member of staff); ``levels``: its own words for the three levels, when the
# faces' words would not fit the question.
CRITERIA = {
    "overall": {
        "vi": "Nhìn chung, bạn hài lòng với việc giải quyết hồ sơ ở đây không?",
        "en": "Overall, how satisfied are you with the service here?",
        "short": {"vi": "Hài lòng chung", "en": "Overall"},
        "moments": MOMENTS, "channels": None, "levels": None,
    },
    "convenience": {
        "vi": "Làm hồ sơ ở đây có dễ và thuận tiện không?",
        "en": "Was it easy and convenient to apply here?",
        "short": {"vi": "Thuận tiện", "en": "Convenience"},
        "moments": ("submitted",), "channels": None,
        "levels": {3: {"vi": "Rất dễ", "en": "Very easy"}, 2: {"vi": "Được", "en": "All right"},
                   1: {"vi": "Khó", "en": "Hard"}},
    },
    "information": {
        "vi": "Thông tin, hướng dẫn về thủ tục có rõ ràng, đầy đủ không?",
        "en": "Was the information about the procedure clear and complete?",
        "short": {"vi": "Công khai, rõ ràng", "en": "Clear information"},
        "moments": ("submitted",), "channels": None,
        "levels": {3: {"vi": "Rất rõ", "en": "Very clear"}, 2: {"vi": "Tạm rõ", "en": "Mostly clear"},
                   1: {"vi": "Không rõ", "en": "Not clear"}},
    },
    "on_time": {
        "vi": "Bạn có nhận kết quả đúng hẹn không?",
        "en": "Did you get the result by the promised day?",
        "short": {"vi": "Đúng hẹn", "en": "On time"},
        "moments": ("handed_over",), "channels": None,
        "levels": {3: {"vi": "Sớm hơn hẹn", "en": "Early"}, 2: {"vi": "Đúng hẹn", "en": "On the day"},
                   1: {"vi": "Trễ hẹn", "en": "Late"}},
    },
    "trips": {
        "vi": "Bạn đã phải đến bao nhiêu lần cho hồ sơ này?",
        "en": "How many times did you have to come for this application?",
        "short": {"vi": "Số lần đi lại", "en": "Trips"},
        "moments": ("handed_over",), "channels": None,
        "levels": {3: {"vi": "1–2 lần", "en": "1–2 times"}, 2: {"vi": "3 lần", "en": "3 times"},
                   1: {"vi": "Hơn 3 lần", "en": "More than 3"}},
    },
    "staff": {
        "vi": "Thái độ của cán bộ tiếp đón bạn thế nào?",
        "en": "How were you treated by the staff?",
        "short": {"vi": "Thái độ cán bộ", "en": "Staff attitude"},
        "moments": MOMENTS, "channels": ("counter", "mobile"), "levels": None,
    },
}

RATING_ID = re.compile(r"^[0-9a-f]{32}$")
PROCEDURE_CODE = re.compile(r"^\d\.\d{6}$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_FIELD = 64


def criteria_for(moment: str, channel: str) -> list[str]:
    """The criteria asked at ``moment`` at a station of kind ``channel``, in order (overall first)."""
    return [name for name, c in CRITERIA.items()
            if moment in c["moments"] and (c["channels"] is None or channel in c["channels"])]


def level_words(criterion: str, level: int) -> dict:
    """The words of one level of one criterion (vi, en)."""
    return (CRITERIA[criterion]["levels"] or LEVEL_WORDS)[level]


def read_answers(moment: str, channel: str, form) -> dict[str, int]:
    """The levels chosen in a form (``form.get(criterion)``), for the criteria of this moment and channel
    only; anything else (a criterion not asked, a level that is not one) is left out, as if skipped."""
    chosen = {}
    for name in criteria_for(moment, channel):
        value = form.get(name)
        if isinstance(value, str) and value.isdigit() and int(value) in LEVELS:
            chosen[name] = int(value)
    return chosen


def problem(document: dict) -> str | None:
    """Why a rating document (as a station sends it) is not one, or None. The central checks every one it
    receives with this: it takes no field more than these, so nothing personal can ride along."""
    if not isinstance(document, dict):
        return "a rating is a JSON object"
    extra = set(document) - {"rating_id", "station_id", "local_day", "moment", "channel", "procedure_code",
                             "answers"}
    if extra:
        return f"unknown fields: {sorted(extra)}"
    if not isinstance(document.get("rating_id"), str) or not RATING_ID.match(document["rating_id"]):
        return "rating_id: 32 hexadecimal digits"
    if not isinstance(document.get("station_id"), str) or not 0 < len(document["station_id"]) <= MAX_FIELD:
        return "station_id"
    if not isinstance(document.get("local_day"), str) or not DAY.match(document["local_day"]):
        return "local_day: YYYY-MM-DD"
    if document.get("moment") not in MOMENTS:
        return f"moment: one of {MOMENTS}"
    if document.get("channel") not in CHANNELS:
        return f"channel: one of {CHANNELS}"
    code = document.get("procedure_code")
    if code is not None and (not isinstance(code, str) or not PROCEDURE_CODE.match(code)):
        return "procedure_code: like 1.004222, or null"
    answers = document.get("answers")
    if not isinstance(answers, dict) or not answers:
        return "answers: at least one criterion"
    for name, level in answers.items():
        if name not in CRITERIA or document["moment"] not in CRITERIA[name]["moments"]:
            return f"answers: {name!r} is not asked {document['moment']}"
        if type(level) is not int or level not in LEVELS:
            return f"answers: {name} is one of {LEVELS}"
    return None


def canonical(document: dict) -> bytes:
    """The bytes a rating is compared by at the central (same id, same bytes: the same rating)."""
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def record(conn: sqlite3.Connection, *, station_id: str, channel: str, procedure_code: str | None,
           local_day: str, moment: str, answers: dict[str, int]) -> str | None:
    """Store one rating in one transaction; returns its id, or None when nothing was chosen (a skip)."""
    if moment not in MOMENTS:
        raise ValueError(f"moment: {moment}")
    answers = {k: v for k, v in answers.items() if k in CRITERIA and v in LEVELS}
    if not answers:
        return None
    rating_id = uuid.UUID(bytes=secrets.token_bytes(16), version=4).hex
    with write_transaction(conn):
        conn.execute("INSERT INTO ratings (rating_id, station_id, local_day, moment, channel, procedure_code, "
                     "answers) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (rating_id, station_id, local_day, moment, channel, procedure_code,
                      json.dumps(answers, sort_keys=True)))
    return rating_id


def document(row: sqlite3.Row) -> dict:
    """What the central receives of one rating: the row's columns, nothing more."""
    return {"rating_id": row["rating_id"], "station_id": row["station_id"], "local_day": row["local_day"],
            "moment": row["moment"], "channel": row["channel"], "procedure_code": row["procedure_code"],
            "answers": json.loads(row["answers"])}


def unsent(conn: sqlite3.Connection, limit: int = 200) -> list[dict]:
    """Ratings the central has not confirmed yet, as documents (in the order of their random ids)."""
    rows = conn.execute("SELECT * FROM ratings WHERE state = 'pending' ORDER BY rating_id LIMIT ?", (limit,))
    return [document(row) for row in rows]


def unsent_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM ratings WHERE state = 'pending'").fetchone()[0]


def mark(conn: sqlite3.Connection, sent: list[str], refused: dict[str, str]) -> None:
    """Record the central's answer to a batch in one transaction: ``sent`` ids are held there; ``refused``
    (id: reason) will never be taken and are not sent again."""
    with write_transaction(conn):
        conn.executemany("UPDATE ratings SET state = 'sent' WHERE rating_id = ? AND state = 'pending'",
                         [(i,) for i in sent])
        conn.executemany("UPDATE ratings SET state = 'refused', refused_reason = ? WHERE rating_id = ? "
                         "AND state = 'pending'", [(reason[:200], i) for i, reason in refused.items()])


def of_day(conn: sqlite3.Connection, local_day: str) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM ratings WHERE local_day = ? ORDER BY rating_id", (local_day,)).fetchall()


def summary(rows) -> dict:
    """Counts and shares per criterion and level over rating documents or rows (``answers`` as a dict or
    its JSON): {"ratings": n, "by_moment": {...}, "criteria": {criterion: {"answered": n, "levels": {3: n,
    2: n, 1: n}, "shares": {3: percent, ...}}}} with the criteria in the order asked."""
    total, by_moment = 0, {m: 0 for m in MOMENTS}
    counts = {name: {level: 0 for level in LEVELS} for name in CRITERIA}
    for row in rows:
        answers = row["answers"]
        if isinstance(answers, str):
            answers = json.loads(answers)
        total += 1
        by_moment[row["moment"]] = by_moment.get(row["moment"], 0) + 1
        for name, level in answers.items():
            if name in counts and level in LEVELS:
                counts[name][level] += 1
    return tally(total, by_moment, counts)


def tally(total: int, by_moment: dict[str, int], counts: dict[str, dict[int, int]]) -> dict:
    """The summary's shape from counts already made (the central counts in SQL): shares in whole percent
    of those who answered the criterion, criteria in the order asked, unanswered ones left out."""
    criteria = {}
    for name in CRITERIA:
        levels = {level: int(counts.get(name, {}).get(level, 0)) for level in LEVELS}
        answered = sum(levels.values())
        if answered:
            criteria[name] = {"answered": answered, "levels": levels,
                              "shares": {lv: round(100 * n / answered) for lv, n in levels.items()}}
    return {"ratings": total, "by_moment": {m: int(by_moment.get(m, 0)) for m in MOMENTS}, "criteria": criteria}


def day_summary(conn: sqlite3.Connection, local_day: str) -> dict:
    """The summary of the ratings of one local day at this station (the staff's day report)."""
    return summary(of_day(conn, local_day))
