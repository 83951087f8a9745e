"""The card step of the citizen's path: give the chip's key, read the CCCD, then use what it holds to
prefill the wizard (or not).

Ask only what the card needs: the CCCD number first (or the QR printed on the card's front, through a
keyboard-wedge scanner, which gives the number and the birth date), and the station tries PACE with its
last 6 digits. Only where the chip has no PACE or refuses that does it ask the birth date and the expiry
date (or "Không thời hạn"), one question per page, and try BAC, never repeating a refused try. At most
MAX_WRONG_KEYS wrong-key tries per citizen's card, then "ask staff". The read itself runs in one
background thread per station process, never in the request, and every read has a deadline, so one
card that stops answering never holds up the next citizen: the page asks every second how it went
(htmx polling; without JavaScript a "check again" link).

Privacy: the key lives in this process's memory only, while the card step lasts (what was typed, and a
copy inside the read job until the read ends); it is never written anywhere, and "use", "skip", the end
of the session or the idle limit forget it. What the chip said lives in memory until
the citizen decides; "use it" seals it into the draft (``answers["_card"]``), anything else forgets it.
The photo is never asked for; raw chip files never leave devices/. Nothing personal is logged.
"""
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import date

from flask import Blueprint, abort, current_app, redirect, render_template, request, session, url_for

from .core import answers as answers_mod
from .core import drafts
from . import device_words, i18n
from .core.catalog import PREFILL_SOURCES
from .web import CARD_KEY, current_draft, get_db, procedure_or_404
from .core.masking import mask_id, mask_name

bp = Blueprint("card", __name__)
log = logging.getLogger(__name__)

PREFILL_NAMES = {s.removeprefix("card.") for s in PREFILL_SOURCES}
SLICE_S = 1.0  # read_cccd waits this long for a card per try, so a cancelled job stops within a second
MAX_REMOVALS = 3  # a card lifted mid-read may be put back this many times within one read

# The key questions, one per page, checked by kiosk.core.answers.read_field like the wizard's own fields;
# their words are in messages_card.toml.
NUMBER_FIELD = {"name": "card_number", "type": "id_number", "label": i18n.MESSAGES["card_key_number_label"],
                "hint": i18n.MESSAGES["card_key_number_hint"]}
BIRTH_FIELD = {"name": "birth_date", "type": "date", "date": "past", "label": i18n.MESSAGES["card_key_birth_label"],
               "hint": i18n.MESSAGES["card_key_birth_hint"]}
EXPIRY_FIELD = {"name": "expiry_date", "type": "date", "label": i18n.MESSAGES["card_key_expiry_label"],
                "hint": i18n.MESSAGES["card_key_expiry_hint"]}


# --- the read jobs -------------------------------------------------------------------------------------

@dataclass
class ReadJob:
    """One read for one draft. ``key`` is dropped as soon as the read ends."""

    draft_id: str
    key: object  # devices.card_reader.CardKey while the read runs, then None
    reader_name: str | None
    csca_dir: str | None
    wait_s: float
    via: str  # "number" or "qr": where "try again" goes
    access: str = "auto"  # "auto" (PACE first) or "bac" (after PACE was refused or is missing)
    wrong_keys: int = 0  # wrong-key tries already made on this citizen's card, then after this read
    state: str = "waiting"  # waiting -> done | failed | needs_dates
    fields: dict = field(default_factory=dict, repr=False)
    verified: bool = False
    verification: dict = field(default_factory=dict)  # {"status", "reason", "findings"}: codes, said by the page
    error: dict = field(default_factory=dict)  # device_words.card_error_of(err) and "protocol"
    notice: dict | None = None  # the same, while waiting, e.g. "the card was lifted: put it back"
    finished_at: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class CardReads:
    """The station's card read jobs and the keys being typed, by draft id, in memory only.

    One worker thread takes the jobs in turn: a station has one reader, and two reads at once would
    fight over it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, ReadJob] = {}
        self._keys: dict[str, tuple[float, dict]] = {}  # draft id -> (touched, key typed so far)
        self._wrong_keys: dict[str, int] = {}  # draft id -> wrong-key tries spent on the citizen's card
        self._queue: queue.Queue[ReadJob] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._running: ReadJob | None = None

    # The key, while it is being typed: one value per page.
    def typed(self, draft_id: str, keep_s: float) -> dict:
        with self._lock:
            self._purge(keep_s)
            touched_key = self._keys.get(draft_id)
            return dict(touched_key[1]) if touched_key else {}

    def remember(self, draft_id: str, **values) -> None:
        with self._lock:
            _, typed = self._keys.get(draft_id, (0.0, {}))
            self._keys[draft_id] = (time.monotonic(), {**typed, **values})

    def wrong_keys(self, draft_id: str) -> int:
        with self._lock:
            return self._wrong_keys.get(draft_id, 0)

    def forget_typed(self, draft_id: str) -> None:
        with self._lock:
            self._keys.pop(draft_id, None)

    def start(self, job: ReadJob) -> None:
        """Queue the read. What was typed stays too, until the card step ends: the read may need the dates
        next, or the citizen may correct one number and try again."""
        with self._lock:
            job.wrong_keys = self._wrong_keys.get(job.draft_id, 0)
            old = self._jobs.get(job.draft_id)
            if old is not None:
                old.cancelled.set()
            self._jobs[job.draft_id] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="card-reads", daemon=True)
                self._thread.start()
        self._queue.put(job)

    def job(self, draft_id: str, keep_s: float) -> ReadJob | None:
        with self._lock:
            self._purge(keep_s)
            return self._jobs.get(draft_id)

    def forget(self, draft_id: str) -> None:
        """Drop the key being typed, stop the read if it runs, forget what it read."""
        with self._lock:
            self._keys.pop(draft_id, None)
            self._wrong_keys.pop(draft_id, None)
            job = self._jobs.pop(draft_id, None)
        if job is not None:
            job.cancelled.set()
            job.key = None
            job.fields = {}

    def cancel_all(self) -> None:
        with self._lock:
            drafts_ids = list(self._jobs) + list(self._keys)
        for draft_id in drafts_ids:
            self.forget(draft_id)

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """True once no read is queued or running (for tests and shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._running is None and self._queue.empty():
                return True
            time.sleep(0.05)
        return False

    def _purge(self, keep_s: float) -> None:
        # Past the session's own idle limit nobody is there to see it: forget it.
        now = time.monotonic()
        for draft_id, job in list(self._jobs.items()):
            if job.finished_at is not None and now - job.finished_at > keep_s:
                del self._jobs[draft_id]
                job.fields = {}
        for draft_id, (touched, _) in list(self._keys.items()):
            if now - touched > keep_s:
                del self._keys[draft_id]
        for draft_id in list(self._wrong_keys):
            if draft_id not in self._jobs and draft_id not in self._keys:
                del self._wrong_keys[draft_id]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.cancelled.is_set():
                job.key = None
                continue
            self._running = job
            try:
                self._run(job)
            finally:
                job.key = None
                self._running = None

    def _run(self, job: ReadJob) -> None:
        from devices.card_reader import (CardError, CardRemovedError, DatesNeededError, NoCardError,
                                         read_cccd)
        key = job.key  # forget() may drop job.key at any time; this read finishes with its own copy
        if key is None:
            return
        deadline = time.monotonic() + job.wait_s
        removed: CardRemovedError | None = None
        removals = 0
        try:
            while True:
                if job.cancelled.is_set():
                    return
                wait = max(0.2, min(SLICE_S, deadline - time.monotonic()))
                try:
                    result = read_cccd(key, reader_name=job.reader_name, csca_dir=job.csca_dir,
                                       want_photo=False, timeout_s=wait, access=job.access,
                                       wrong_keys=job.wrong_keys)
                    break
                except NoCardError:
                    if time.monotonic() >= deadline:
                        raise removed or NoCardError() from None
                except CardRemovedError as err:
                    # A card lifted (or a contactless card that flickered) mid-read: while the job has
                    # time and the key, wait for it to come back, saying so, rather than ask for the key again.
                    removed, removals = err, removals + 1
                    if removals >= MAX_REMOVALS or time.monotonic() >= deadline:
                        raise
                    job.notice = device_words.card_error_of(err)
            if job.cancelled.is_set():  # forgotten while the chip was answering: keep nothing
                return
            job.fields = {k: v for k, v in result.fields.items() if k in PREFILL_NAMES}
            job.verified = result.verified
            job.verification = {"status": result.verification, "reason": result.verification_reason,
                                "findings": result.findings}
            job.state = "done"
        except DatesNeededError as err:
            # The number alone did not open this chip: the citizen is asked the dates, then BAC is tried.
            self._tally(job, err)
            job.state = "needs_dates"
        except CardError as err:
            # The type and technical detail name no person; the page says the code in the citizen's words.
            log.info("card read failed: %s", type(err).__name__)
            self._tally(job, err)
            job.error = {**device_words.card_error_of(err), "protocol": getattr(err, "protocol", "")}
            job.state = "failed"
        except Exception as exc:  # never a trace on the screen, never a dead worker
            log.error("card read broke: %s", type(exc).__name__)
            job.error = device_words.card_error_of(CardError())
            job.state = "failed"
        finally:
            job.notice = None
            job.finished_at = time.monotonic()

    def _tally(self, job: ReadJob, err) -> None:
        """Keep the wrong-key tries spent on this citizen's card for the next read of it."""
        spent = getattr(err, "wrong_keys", None)
        if spent is not None:
            job.wrong_keys = spent
            with self._lock:
                if job.draft_id in self._jobs or job.draft_id in self._keys:
                    self._wrong_keys[job.draft_id] = spent


@bp.record_once
def _one_reader_queue_per_app(state) -> None:
    # The app owns its reads (one reader, one queue), so two apps in one process never share a job.
    state.app.extensions["card_reads"] = CardReads()


def reads_of(app=None) -> CardReads:
    """The card reads of ``app`` (the current app by default)."""
    return (app or current_app).extensions["card_reads"]


# --- helpers -------------------------------------------------------------------------------------------

def _devices() -> dict:
    return current_app.config["STATION"]["devices"]


def card_reading_on() -> bool:
    return _devices().get("card_reader", "auto") != "none"


@bp.app_template_global("card_reading_on")
def _card_reading_on_global() -> bool:
    return card_reading_on()


def _keep_s() -> float:
    limits = current_app.config["STATION"]["session"]
    return limits["idle_seconds"] + limits["warning_seconds"] + 10


def _see_other(endpoint: str, **values):
    return redirect(url_for(endpoint, **values), code=303)


def _card_procedure(slug: str):
    if not card_reading_on():
        abort(404)
    return procedure_or_404(slug)


def _ensure_draft(proc) -> str:
    """This session's draft for ``proc``, made now if there is none (as "Bắt đầu" does)."""
    existing = current_draft(proc)
    if existing is not None:
        return existing[0]
    draft_id = drafts.create(get_db(), current_app.config["PAYLOAD_KEY"], proc.slug, proc.version,
                             release=proc.release)
    session["draft"] = {"id": draft_id, "slug": proc.slug}
    return draft_id


def _error_text(error, fld: dict) -> str:
    if isinstance(error, dict):
        return i18n.pick(error)
    key, params = error
    return i18n.t(key, label=i18n.pick(fld["label"]), **params)


def _first_question(proc):
    return _see_other("citizen.question", slug=proc.slug, page_id=proc.pages[0]["id"])


def _render_key_page(proc, fld, shown, errors, step, back, status=200, note=None):
    """``step`` is (n, total) on the dates pages: three pages when typed, two after the QR (which gives
    number and birth date); None on the number page, which may be the only one."""
    return render_template("card/key_question.html", proc=proc, field=fld, shown={fld["name"]: shown},
                           errors=errors, step=step[0] if step else None, total=step[1] if step else None,
                           back=back, note=note,
                           action=url_for(request.endpoint, slug=proc.slug)), status


def _date_shown(iso: str | None) -> dict:
    return answers_mod.shown_from_value({"type": "date"}, iso)


# --- giving the key ------------------------------------------------------------------------------------

@bp.route("/p/<slug>/card", methods=["GET", "POST"])
def number(slug):
    proc = _card_procedure(slug)
    back = url_for("citizen.overview", slug=slug)
    draft = current_draft(proc)
    if request.method == "GET":
        typed = reads_of().typed(draft[0], _keep_s()) if draft else {}
        return _render_key_page(proc, NUMBER_FIELD, typed.get("number", ""), {}, None, back)
    raw = request.form.get("card_number", "")
    if "|" in raw:  # the scanner typed the front QR into this field: take it as the QR
        return _take_qr(proc, raw)
    reading = answers_mod.read_field(NUMBER_FIELD, request.form)
    if reading.error is not None:
        errors = {"card_number": _error_text(reading.error, NUMBER_FIELD)}
        return _render_key_page(proc, NUMBER_FIELD, reading.shown, errors, None, back, status=422)
    draft_id = _ensure_draft(proc)
    _remember_number(draft_id, reading.value, via="number")
    return _start_read(proc, draft_id)


def _remember_number(draft_id: str, number: str, **values) -> None:
    """A number given anew: the dates typed for another number no longer go with it, and PACE may be tried
    with it (the wrong-key tries already spent on the card still count)."""
    typed = reads_of().typed(draft_id, float("inf"))
    if typed.get("number") != number:
        reads_of().forget_typed(draft_id)
        values.setdefault("access", "auto")
    reads_of().remember(draft_id, number=number, **values)


@bp.route("/p/<slug>/card/qr", methods=["GET", "POST"])
def qr(slug):
    proc = _card_procedure(slug)
    if request.method == "GET":
        return render_template("card/qr.html", proc=proc, errors={}, shown="")
    return _take_qr(proc, request.form.get("qr", ""))


def _take_qr(proc, raw: str):
    from devices.card_reader import QrFormatError, parse_front_qr
    text = answers_mod.normalise(raw if isinstance(raw, str) else "")
    try:
        if not text:
            raise QrFormatError("empty")
        found = parse_front_qr(text)
    except QrFormatError as err:
        errors = {"qr": device_words.card_error(err) if text else i18n.t("card_qr_required")}
        return render_template("card/qr.html", proc=proc, errors=errors, shown=""), 422
    # Only what opens the chip is kept; the QR's name and address are not used (the chip's are signed).
    draft_id = _ensure_draft(proc)
    _remember_number(draft_id, found["number"], birth_date=found["birth_date"],
                     expiry_estimate=found["expiry_date_estimated"], via="qr")
    return _start_read(proc, draft_id)


def _start_read(proc, draft_id: str):
    """Read with what was typed: PACE with the number first; BAC once the dates are there. Where BAC is
    next and a date is missing, ask it."""
    from devices.card_reader import CardKey
    typed = reads_of().typed(draft_id, _keep_s())
    if "number" not in typed:
        return _see_other("card.number", slug=proc.slug)
    access = typed.get("access", "auto")
    if access == "bac" and "birth_date" not in typed:
        return _see_other("card.birth_date", slug=proc.slug)
    if access == "bac" and not (typed.get("expiry_date") or typed.get("no_expiry")):
        return _see_other("card.expiry_date", slug=proc.slug)
    birth = date.fromisoformat(typed["birth_date"]) if typed.get("birth_date") else None
    expiry = date.fromisoformat(typed["expiry_date"]) if typed.get("expiry_date") else None
    key = CardKey(typed["number"], birth, expiry, bool(typed.get("no_expiry")))
    devices = _devices()
    reader = devices.get("card_reader", "auto")
    reads_of().start(ReadJob(draft_id=draft_id, key=key, reader_name=None if reader == "auto" else reader,
                             csca_dir=devices.get("csca_dir") or None, wait_s=devices["card_wait_seconds"],
                             via=typed.get("via", "number"), access=access))
    return _see_other("card.read", slug=proc.slug)


@bp.post("/p/<slug>/card/retry")
def retry(slug):
    """The same read again (the card was lifted, did not answer, or was not there)."""
    proc = _card_procedure(slug)
    draft = current_draft(proc)
    if draft is None:
        return _see_other("citizen.overview", slug=slug)
    return _start_read(proc, draft[0])


@bp.route("/p/<slug>/card/birth-date", methods=["GET", "POST"])
def birth_date(slug):
    proc = _card_procedure(slug)
    draft = current_draft(proc)
    typed = reads_of().typed(draft[0], _keep_s()) if draft else {}
    if "number" not in typed:
        return _see_other("card.number", slug=slug)
    back = url_for("card.number", slug=slug)
    note = i18n.t("card_dates_needed")
    if request.method == "GET":
        return _render_key_page(proc, BIRTH_FIELD, _date_shown(typed.get("birth_date")), {}, (2, 3), back,
                                note=note)
    reading = answers_mod.read_field(BIRTH_FIELD, request.form)
    if reading.error is not None:
        errors = {"birth_date": _error_text(reading.error, BIRTH_FIELD)}
        return _render_key_page(proc, BIRTH_FIELD, reading.shown, errors, (2, 3), back, status=422, note=note)
    reads_of().remember(draft[0], birth_date=reading.value)
    return _see_other("card.expiry_date", slug=slug)


@bp.route("/p/<slug>/card/expiry-date", methods=["GET", "POST"])
def expiry_date(slug):
    proc = _card_procedure(slug)
    draft = current_draft(proc)
    typed = reads_of().typed(draft[0], _keep_s()) if draft else {}
    if "number" not in typed or "birth_date" not in typed:
        return _see_other("card.number", slug=slug)
    from_qr = typed.get("via") == "qr"
    back = url_for("card.qr", slug=slug) if from_qr else url_for("card.birth_date", slug=slug)
    note, step = i18n.t("card_dates_needed"), ((2, 2) if from_qr else (3, 3))
    if from_qr:
        note = i18n.t("card_qr_taken", number=mask_id(typed["number"])) + " " + note
        if typed.get("expiry_estimate"):
            note += " " + i18n.t("card_expiry_estimated")
    if request.method == "GET":
        shown = _date_shown(typed.get("expiry_date") or typed.get("expiry_estimate"))
        return _render_key_page(proc, EXPIRY_FIELD, shown, {}, step, back, note=note)
    if request.form.get("no_expiry"):
        # "Không thời hạn": the card of someone issued it from about 58 on has no expiry date.
        reads_of().remember(draft[0], expiry_date=None, no_expiry=True, access="bac")
        return _start_read(proc, draft[0])
    reading = answers_mod.read_field(EXPIRY_FIELD, request.form)
    if reading.error is not None:
        errors = {"expiry_date": _error_text(reading.error, EXPIRY_FIELD)}
        return _render_key_page(proc, EXPIRY_FIELD, reading.shown, errors, step, back, status=422, note=note)
    reads_of().remember(draft[0], expiry_date=reading.value, no_expiry=False, access="bac")
    return _start_read(proc, draft[0])


# --- reading, and what was read ------------------------------------------------------------------------

def _shown_result(proc, job: ReadJob) -> dict:
    """What the result page shows: masked, as for anyone standing near the kiosk."""
    fields = job.fields
    birth = fields.get("birth_date", "")
    will_fill = []
    for page in proc.pages:
        for fld in page["fields"]:
            source = fld.get("prefill", "")
            if source.startswith("card.") and source[5:] in fields:
                will_fill.append(i18n.pick(fld["label"]))
    return {"name": mask_name(fields.get("full_name")), "id_number": mask_id(fields.get("id_number")),
            "birth_year": birth[:4] if len(birth) >= 4 and birth[:4].isdigit() else "",
            "will_fill": will_fill}


def _after_failure(job: ReadJob) -> str:
    """What a failed read lets the citizen do: "dates" (check the dates typed: BAC refused them), "retry"
    (the same read again: card lifted, silent, not there), or "staff" (no more tries on this card)."""
    kind = job.error.get("type", "")
    if kind in ("TooManyTriesError", "CardBlockedError", "NotAnIdCardError", "CardTamperedError",
                "NoReaderError", "ReaderServiceError"):
        return "staff"
    if kind == "AccessDeniedError":
        return "dates" if job.error.get("protocol") == "BAC" else "number"
    return "retry"


def _waiting_shown(job: ReadJob) -> str:
    return "notice" if job.notice else "waiting"


@bp.app_template_global("card_waiting_shown")
def _waiting_shown_global(job: ReadJob) -> str:
    return _waiting_shown(job)


@bp.app_template_global("card_error_words")
def _card_error_words(error: dict) -> str:
    return device_words.card_error(error)


@bp.app_template_global("card_verification_words")
def _card_verification_words(verification: dict) -> str:
    return device_words.verification(verification["status"], verification["reason"], verification["findings"])


@bp.get("/p/<slug>/card/read")
def read(slug):
    proc = _card_procedure(slug)
    draft = current_draft(proc)
    job = reads_of().job(draft[0], _keep_s()) if draft else None
    if job is None:
        if request.headers.get("HX-Trigger") == "card-read":
            # The poll of a read that is gone (the session ended): show the start again.
            response = current_app.response_class("", 204)
            response.headers["HX-Redirect"] = url_for("citizen.overview", slug=slug)
            return response
        return _see_other("citizen.overview", slug=slug)
    if job.state == "needs_dates":
        # The number alone did not open the chip: ask the dates (BAC), and never try PACE again on it.
        reads_of().remember(draft[0], access="bac")
        target = url_for("card.expiry_date" if "birth_date" in reads_of().typed(draft[0], _keep_s())
                         else "card.birth_date", slug=slug)
        if request.headers.get("HX-Trigger") == "card-read":
            response = current_app.response_class("", 204)
            response.headers["HX-Redirect"] = target
            return response
        return redirect(target, code=303)
    lang = i18n.current_language()
    context = {"proc": proc, "job": job, "lang_key": lang, "next_step": _after_failure(job)}
    if job.state == "waiting":
        if request.headers.get("HX-Trigger") == "card-read":
            if request.args.get("shown") == _waiting_shown(job):
                # Nothing new: no swap, so a screen reader does not hear the same notice every second.
                return current_app.response_class("", 204)
            return render_template("card/_waiting.html", **context)
        return render_template("card/read.html", **context)
    if job.state == "done":
        context["shown"] = _shown_result(proc, job)
    response = current_app.make_response(render_template("card/read.html", **context))
    if request.headers.get("HX-Trigger") == "card-read":
        # The poll found the read over: the whole page changes, not just the waiting notice.
        response.headers["HX-Retarget"] = "#main"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


@bp.post("/p/<slug>/card/use")
def use(slug):
    """The citizen takes what the chip said: it goes, sealed, into the draft, for the questions to offer."""
    proc = _card_procedure(slug)
    draft = current_draft(proc)
    if draft is None:
        return _see_other("citizen.overview", slug=slug)
    draft_id, answers = draft
    job = reads_of().job(draft_id, _keep_s())
    if job is None or job.state != "done":
        return _see_other("card.read", slug=slug)
    answers[CARD_KEY] = dict(job.fields)
    reads_of().forget(draft_id)
    if not drafts.save(get_db(), current_app.config["PAYLOAD_KEY"], draft_id, answers):
        session.pop("draft", None)
        return _see_other("citizen.overview", slug=slug)
    return _first_question(proc)


@bp.post("/p/<slug>/card/skip")
def skip(slug):
    """Go on without the card: whatever was typed or read is forgotten, the questions start empty."""
    proc = _card_procedure(slug)
    draft_id = _ensure_draft(proc)
    reads_of().forget(draft_id)
    return _first_question(proc)


@bp.before_app_request
def forget_on_session_end():
    # "Finish" wipes the session; the key typed and the card read for its draft go with it.
    if request.endpoint == "citizen.end" and request.method == "POST":
        ref = session.get("draft")
        if ref:
            reads_of().forget(ref["id"])
