"""The citizen's path: choose a procedure, one question per page, one step per paper to capture (when
the station offers a way to capture it: kiosk/capture.py), check answers, consent, submit.

Every page is a plain form post that works without JavaScript; with htmx (hx-boost on <body>) only the
inside of <main> is fetched and swapped. State changes answer 303 (post/redirect/get); a page with
errors answers 422 with the error summary.
"""
import logging
import functools
import re
import sqlite3
import unicodedata
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import (Blueprint, abort, current_app, g, redirect, render_template, request, send_file, session,
                   url_for)

from devices.scanner import ScanError
from devices.vietqr import payment_account

from .core import answers as answers_mod
from .core import address_answer
from . import audio, capture, device_words, health, i18n, receipts, web
from .web import get_db
from .core import documents, dossiers, drafts, fees, tracking_code
from .core import pages as pages_mod
from .core.catalog import CATEGORIES, DELIVERY_FIELDS, Procedure
from .core.db import storage_problem
from .core import ratings
from .receipt_document import payment_message

bp = Blueprint("citizen", __name__)
log = logging.getLogger(__name__)


# --- fees --------------------------------------------------------------------------------------------

def _channel() -> str:
    """This station's channel (its kind): which rate of a fee applies here (kiosk.core.fees.rate_for)."""
    return current_app.config["STATION"]["station"]["kind"]


@bp.app_template_global()
def fee_from(proc: Procedure) -> int:
    """What a procedure costs at this station before any answer (one copy, no reduction or exemption):
    kiosk.core.fees.fee_for with no answers, for the start page, the overview and the staff's home."""
    return fees.fee_for(proc, {}, _channel()).amount_vnd


def _fee_due(proc: Procedure, answers: dict) -> dict:
    """The fee the answers so far make due here, as the check and consent pages show it."""
    return fees.fee_for(proc, answers_mod.active_answers(proc, answers), _channel()).basis()


def _staff_skips(page: dict) -> bool:
    """A page staff do not see: the citizen's own question on how the result is delivered, asked instead
    on the counter's finish page (agent.views.finish), so delivery is asked once and stored once."""
    return bool(getattr(g, "staff", None)) and all(f["name"] in DELIVERY_FIELDS for f in page["fields"])


def _leave_to_counter(proc: Procedure, answers: dict) -> None:
    """For staff, the pages they skip count as answered (None, left out of the dossier at the counter)."""
    for page in answers_mod.active_pages(proc, answers):
        if _staff_skips(page):
            for field in page["fields"]:
                answers.setdefault(field["name"], None)


# --- helpers -------------------------------------------------------------------------------------------

def _error_text(error, field: dict) -> str:
    if isinstance(error, dict):
        return i18n.pick(error)
    key, params = error
    params = {name: i18n.pick(value) if isinstance(value, dict) else value for name, value in params.items()}
    return i18n.t(key, label=i18n.pick(field["label"]), **params)


def _see_other(endpoint: str, **values):
    return redirect(url_for(endpoint, **values), code=303)


# --- choosing a procedure ------------------------------------------------------------------------------

def _fold(text: str) -> str:
    """Lower case without tone marks, so "khai sinh" finds "Khai sinh" and "thuong tru" finds "thường trú"."""
    decomposed = unicodedata.normalize("NFD", text.casefold().replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Words that say how a citizen asks rather than what for: "làm giấy chứng tử", "xin cấp lý lịch tư pháp",
# "tôi muốn nhập hộ khẩu cho con". They are not required to match (no procedure has to list "làm …" beside
# each of its names) but a procedure whose words have them ranks higher; a query of nothing else ("xin",
# while typing) needs them all, as any other word.
_FILLER_WORDS = frozenset("""
    lam xin cap thu tuc toi minh em muon can cho de o dau the nao gi di giup voi a oi hoi ve mot cai
    bi duoc phai nhu sao nhe nha va cua nay do tim moi nop co roi vua la
""".split())


def _words(text: str) -> list[str]:
    """The folded words of ``text``; "y" read as "i", since both spellings are taught ("lý lịch", "lí lịch";
    "đăng ký", "đăng kí")."""
    return re.findall(r"\w+", _fold(text).replace("y", "i"))


def _search(query: str, category: str) -> list[Procedure]:
    """The procedures whose names, keywords or summary have every word of ``query`` (tone marks and case
    ignored; the last word may be the start of one, so a half-typed "thuong t" already finds), best first.

    Filler words (``_FILLER_WORDS``) may be missing. Best first: a name or keyword that holds the query's
    words in a row, then one that holds most of them, then the most words matched whole.
    """
    words = _words(answers_mod.normalise(query))
    needed = [w for w in words if w not in _FILLER_WORDS] or words
    ranked = []
    for order, proc in enumerate(web.catalog().values()):
        if category and proc.category != category:
            continue
        phrases = [_words(p) for p in (proc.name["vi"], proc.name["en"], proc.code, *proc.keywords)]
        tokens = {t for phrase in phrases for t in phrase} | set(_words(i18n.pick(proc.summary)))
        if not all(w in tokens or (w == words[-1] and any(t.startswith(w) for t in tokens)) for w in needed):
            continue
        in_a_row = any(_in_a_row(needed, phrase) for phrase in phrases)
        most_in_one = max((sum(w in phrase for w in words) for phrase in phrases), default=0)
        whole = sum(w in tokens for w in words)
        ranked.append(((in_a_row, most_in_one, whole, -order), proc))
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [proc for _, proc in ranked]


def _in_a_row(words: list[str], phrase: list[str]) -> bool:
    """Whether ``words`` stand next to each other in ``phrase``, the last one perhaps half typed."""
    n = len(words)
    return n > 0 and any(phrase[i:i + n - 1] == words[:-1] and phrase[i + n - 1].startswith(words[-1])
                         for i in range(len(phrase) - n + 1))


@bp.get("/")
def index():
    query = request.args.get("q", "")[:100]
    category = request.args.get("category", "")
    if category not in CATEGORIES:
        category = ""
    if current_app.extensions["health"].last.paused:
        return _paused()
    results = _search(query, category)
    context = {"procedures": results, "query": answers_mod.normalise(query), "category": category,
               "categories": CATEGORIES}
    if request.headers.get("HX-Trigger") == "search":
        return render_template("citizen/_procedure_list.html", **context)
    return render_template("citizen/index.html", **context)


def _paused():
    """The start page while the station is paused (kiosk/health.py): no tiles, where to go instead. A draft
    already begun still goes on to its submit; only new applications are refused."""
    return health.paused_page()


@bp.get("/p/<slug>")
def overview(slug):
    proc = web.procedure_or_404(slug)
    return render_template("citizen/overview.html", proc=proc)


@bp.post("/p/<slug>/start")
def start(slug):
    proc = web.procedure_or_404(slug)
    existing = web.current_draft(proc)
    if existing is None and current_app.extensions["health"].refresh().paused:
        return _paused()  # no application is begun that the station may not be able to save
    if existing is None:
        draft_id = drafts.create(get_db(), current_app.config["PAYLOAD_KEY"], proc.slug, proc.version,
                                 release=proc.release)
        session["draft"] = {"id": draft_id, "slug": proc.slug}
    capture.station_scanner().start()  # found (or not) long before the citizen reaches the papers
    return _see_other("citizen.question", slug=slug, page_id=proc.pages[0]["id"])


# --- one question per page -----------------------------------------------------------------------------

def card_value(answers: dict, field: dict):
    """What the CCCD chip read for this field, if the card was read in this draft (kept, sealed, under
    ``_card`` in the draft; never part of the submitted answers unless the citizen confirms it)."""
    source = field.get("prefill", "")
    card = answers.get(web.CARD_KEY) or {}
    if not source.startswith("card.") or source[5:] not in card:
        return None
    value = card[source[5:]]
    if field["type"] == "choice":  # the card says "Nam"/"Nữ"; the options have their own values
        folded = _fold(str(value))
        return next((o["value"] for o in field["options"] if _fold(o["vi"]) == folded), None)
    return value


def _asked_pages(proc: Procedure, answers: dict) -> list[dict]:
    """The question pages this person is asked, in order (staff skip the delivery question)."""
    return [p for p in answers_mod.active_pages(proc, answers) if not _staff_skips(p)]


def _steps_at_most(proc: Procedure, answers: dict) -> tuple[int, bool]:
    """(the most steps this person can still be given in all, whether that number is exact): the question
    pages that apply, the most that any one answer still open can switch on, and the paper steps.

    A page that depends on an unanswered question counts once per answer of that question: of the pages
    shown for each answer, the largest group. The number only falls as answers come in, so the count a
    citizen sees never goes backwards (issue 17)."""
    holder = {f["name"]: p for p in proc.pages for f in p["fields"]}
    status: dict[str, str] = {}

    def applies(page: dict) -> str:  # "yes", "no" or "open"
        if page["id"] not in status:
            status[page["id"]] = "open"  # a condition that leads back to itself stays open
            when = page.get("when")
            if when is None:
                status[page["id"]] = "yes"
            elif when["field"] in answers:
                status[page["id"]] = "yes" if answers[when["field"]] == when["equals"] else "no"
            else:
                parent = holder.get(when["field"])
                status[page["id"]] = "no" if parent is None or applies(parent) == "no" else "open"
        return status[page["id"]]

    asked = [p for p in proc.pages if not _staff_skips(p)]
    count = sum(1 for p in asked if applies(p) == "yes")
    groups: dict[str, dict] = {}
    for p in asked:
        if applies(p) == "open":
            by_value = groups.setdefault(p["when"]["field"], {})
            by_value[p["when"]["equals"]] = by_value.get(p["when"]["equals"], 0) + 1
    count += sum(max(by_value.values()) for by_value in groups.values())
    return count + len(capture.steps(proc)), not groups


@bp.app_template_global()
def steps_at_most(proc: Procedure) -> dict:
    """The most steps a procedure can take before any answer, for its overview."""
    count, exact = _steps_at_most(proc, {})
    return {"count": count, "exact": exact}


def _render_question(proc, page, shown, errors, status=200, change=False, answers=None, prefilled=()):
    active = _asked_pages(proc, answers or {})
    step = next((i for i, p in enumerate(active) if p["id"] == page["id"]), 0) + 1
    back = url_for("citizen.check", slug=proc.slug) if change else (
        url_for("citizen.question", slug=proc.slug, page_id=active[step - 2]["id"]) if step > 1
        else url_for("citizen.overview", slug=proc.slug))
    most, exact = _steps_at_most(proc, answers or {})  # the paper steps count too
    most = max(most, len(active) + len(capture.steps(proc)))
    return render_template("citizen/question.html", proc=proc, page=page, shown=shown, errors=errors,
                           step=step, total=most if exact else None, left=most - step, back=back, change=change,
                           prefilled=prefilled), status


@bp.route("/p/<slug>/q/<page_id>", methods=["GET", "POST"])
def question(slug, page_id):
    proc = web.procedure_or_404(slug)
    page = proc.page(page_id)
    if page is None:
        abort(404)
    draft = web.current_draft(proc)
    if draft is None:
        return _see_other("citizen.overview", slug=slug)
    draft_id, answers = draft
    change = request.values.get("change") == "1"
    if not answers_mod.is_active(page, answers):
        return _see_other("citizen.check", slug=slug)
    if _staff_skips(page):  # not asked of staff (a correction's draft may still lead here): straight on
        _leave_to_counter(proc, answers)
        drafts.save(get_db(), current_app.config["PAYLOAD_KEY"], draft_id, answers)
        return _go_on(proc, page, draft_id, answers, change)

    if request.method == "GET":
        shown, prefilled = {}, set()
        for field in page["fields"]:
            value = answers.get(field["name"])
            if value is None and field["name"] not in answers:
                value = card_value(answers, field)
                if value is not None:
                    prefilled.add(field["name"])
            shown[field["name"]] = answers_mod.shown_from_value(field, value)
        return _render_question(proc, page, shown, {}, change=change, answers=answers, prefilled=prefilled)

    pressed = address_answer.pressed(page["fields"], request.form)
    if pressed is not None:  # an address field's "Tìm" or "convert": the page again (200), nothing answered
        shown = {f["name"]: answers_mod.read_field(f, request.form).shown for f in page["fields"]}
        shown[pressed[0]] = pressed[1]
        return _render_question(proc, page, shown, {}, change=change, answers=answers)

    readings = {f["name"]: answers_mod.read_field(f, request.form) for f in page["fields"]}
    fields = {f["name"]: f for f in page["fields"]}
    errors = {name: _error_text(r.error, fields[name]) for name, r in readings.items() if r.error is not None}
    if not errors:  # each answer reads well: now they must agree with each other (ID number vs birth date)
        agreed = {**answers, **{name: r.value for name, r in readings.items()}}
        errors = {name: _error_text(error, fields[name])
                  for name, error in answers_mod.cross_check(proc, agreed, page).items()}
    if errors:
        shown = {name: r.shown for name, r in readings.items()}
        return _render_question(proc, page, shown, errors, status=422, change=change, answers=answers)

    answers.update({name: r.value for name, r in readings.items()})
    _leave_to_counter(proc, answers)
    if not drafts.save(get_db(), current_app.config["PAYLOAD_KEY"], draft_id, answers):
        session.pop("draft", None)
        return _see_other("citizen.overview", slug=slug)
    return _go_on(proc, page, draft_id, answers, change)


def _go_on(proc: Procedure, page: dict, draft_id: str, answers: dict, change: bool):
    """Where the wizard goes after ``page``: the next question (while changing an answer, the first one
    still unanswered), else the papers, else the check page."""
    missing = answers_mod.first_unanswered(proc, answers)
    if change:
        if missing is None:
            return _after_questions(proc, draft_id, answers, change)
        return redirect(url_for("citizen.question", slug=proc.slug, page_id=missing["id"], change=1), code=303)
    active = answers_mod.active_pages(proc, answers)
    ids = [p["id"] for p in active]
    later = [p for p in active[ids.index(page["id"]) + 1:] if not _staff_skips(p)] if page["id"] in ids else []
    if later:
        return _see_other("citizen.question", slug=proc.slug, page_id=later[0]["id"])
    return _after_questions(proc, draft_id, answers, change)


def _after_questions(proc: Procedure, draft_id: str, answers: dict, change: bool, after: str | None = None):
    """The questions are done (or the paper ``after`` is): the next paper's step in the order of the list
    (while changing, the first one not dealt with yet), else the check page."""
    if change:
        paper = capture.first_unanswered(get_db(), proc, draft_id, answers)
    else:
        ids = [d["id"] for d in capture.steps(proc)]
        later = ids[ids.index(after) + 1:] if after in ids else ([] if after else ids)
        paper = {"id": later[0]} if later else None
    if paper is None:
        return _see_other("citizen.check", slug=proc.slug)
    return redirect(url_for("citizen.document", slug=proc.slug, document_id=paper["id"],
                            **({"change": 1} if change else {})), code=303)


# --- one step per paper ----------------------------------------------------------------------------------

def _paper_step(view):
    """A view of one paper's step, called with (procedure, paper, draft id, answers, the URL's other
    values); the person is sent elsewhere instead: to the overview without a draft, to the check page for
    a paper this station does not capture."""
    @functools.wraps(view)
    def opened(slug: str, document_id: str, **values):
        proc = web.procedure_or_404(slug)
        if document_id not in {d["id"] for d in proc.documents}:
            abort(404)
        draft = web.current_draft(proc)
        if draft is None:
            return _see_other("citizen.overview", slug=slug)
        paper = next((d for d in capture.steps(proc) if d["id"] == document_id), None)
        if paper is None:
            return _see_other("citizen.check", slug=slug)
        return view(proc, paper, draft[0], draft[1], **values)
    return opened


def _back_to_step(proc: Procedure, paper: dict, change: bool):
    return redirect(url_for("citizen.document", slug=proc.slug, document_id=paper["id"],
                            **({"change": 1} if change else {})), code=303)


def _render_document(proc: Procedure, paper: dict, draft_id: str, answers: dict, errors: dict | None = None,
                     change: bool = False):
    conn = get_db()
    papers = capture.steps(proc)
    asked = _asked_pages(proc, answers)
    index = [d["id"] for d in papers].index(paper["id"])
    if change:
        back = url_for("citizen.check", slug=proc.slug)
    elif index:
        back = url_for("citizen.document", slug=proc.slug, document_id=papers[index - 1]["id"])
    elif asked:
        back = url_for("citizen.question", slug=proc.slug, page_id=asked[-1]["id"])
    else:
        back = url_for("citizen.overview", slug=proc.slug)
    page_list = documents.pages_of(conn, draft_id).get(paper["id"], [])
    return render_template(
        "citizen/document.html", proc=proc, paper=paper, pages=page_list, sources=capture.offered(),
        marked=paper["id"] in documents.not_applicable(answers), carried=paper["id"] in capture.carried(conn, answers),
        errors=errors or {}, step=len(asked) + index + 1, total=len(asked) + len(papers), back=back, change=change,
        full=len(page_list) >= documents.MAX_PAGES_PER_DOCUMENT), 422 if errors else 200


@bp.route("/p/<slug>/giay-to/<document_id>", methods=["GET", "POST"])
@_paper_step
def document(proc, paper, draft_id, answers):
    """One paper: its pages so far, and what can be done with them; "continue", and for a paper the
    citizen may not have, "I do not have this paper" (and its undo)."""
    change = request.values.get("change") == "1"
    if request.method == "GET":
        return _render_document(proc, paper, draft_id, answers, change=change)
    action = request.form.get("action")
    if action in ("not_applicable", "undo_not_applicable") and not paper["required"]:
        answers = documents.with_not_applicable(answers, paper["id"], action == "not_applicable")
        if not drafts.save(get_db(), current_app.config["PAYLOAD_KEY"], draft_id, answers):
            session.pop("draft", None)
            return _see_other("citizen.overview", slug=proc.slug)
        return _back_to_step(proc, paper, change)
    conn = get_db()
    if not documents.dealt_with(paper, answers, documents.pages_of(conn, draft_id), capture.carried(conn, answers)):
        key = "document_needs_page" if paper["required"] else "document_needs_page_or_none"
        return _render_document(proc, paper, draft_id, answers, {"add-page": i18n.t(key)}, change)
    return _after_questions(proc, draft_id, answers, change, after=paper["id"])


def _captured(source: str) -> pages_mod.Page:
    """One page from ``source`` (the scanner, or the file posted as ``page``). Raises ScanError or
    PageError; the scanner no longer offered (gone since the page was shown) is no scanner."""
    station = current_app.config["STATION"]
    if source not in capture.offered():
        if source != "scanner":  # a form this station never shows
            abort(400)
        raise ScanError("no_scanner", "not offered")
    if source == "scanner":
        return capture.scan(station)
    return capture.from_upload(request.files.get("page"), station, find_sheet=source == "camera")


def _capture_error(error: Exception) -> str:
    """The words of a refused page or a scanner's trouble (the code goes to the log, never the image)."""
    log.info("page not captured: %s %s", type(error).__name__, getattr(error, "code", ""))
    if isinstance(error, ScanError):
        return device_words.scanner_status(error)
    return i18n.t(f"page_error_{error.code}")


def _capture(proc: Procedure, paper: dict, draft_id: str, answers: dict, keep):
    """Capture one page from the posted source and ``keep(page, source)`` it; on a refused page or a
    scanner's trouble, the step again with its words (422), nothing kept."""
    change = request.values.get("change") == "1"
    source = request.form.get("source", "")
    if source not in documents.SOURCES:
        abort(400)
    if source != "scanner" and not getattr(request.files.get("page"), "filename", ""):
        return _render_document(proc, paper, draft_id, answers, {"add-page": i18n.t("document_no_file")}, change)
    try:
        page = _captured(source)
    except (ScanError, pages_mod.PageError) as error:
        return _render_document(proc, paper, draft_id, answers, {"add-page": _capture_error(error)}, change)
    try:
        kept = keep(page, source)
    except documents.TooManyPages:
        words = i18n.t("document_too_many_pages", n=documents.MAX_PAGES_PER_DOCUMENT,
                       total=documents.MAX_PAGES_PER_DRAFT)
        return _render_document(proc, paper, draft_id, answers, {"add-page": words}, change)
    if not kept:  # the draft is gone (ended, or idle too long)
        session.pop("draft", None)
        return _see_other("citizen.overview", slug=proc.slug)
    return _back_to_step(proc, paper, change)


@bp.post("/p/<slug>/giay-to/<document_id>/them")
@_paper_step
def document_add(proc, paper, draft_id, answers):
    """A page added after the paper's others: scanned, or a photo or a file posted (multipart)."""
    key = current_app.config["PAYLOAD_KEY"]

    def keep(page, source):
        added = documents.add_page(get_db(), key, draft_id, paper["id"], page, source)
        if added is not None and paper["id"] in documents.not_applicable(answers):  # the citizen has it after all
            drafts.save(get_db(), key, draft_id, documents.with_not_applicable(answers, paper["id"], False))
        return added is not None

    return _capture(proc, paper, draft_id, answers, keep)


@bp.post("/p/<slug>/giay-to/<document_id>/trang/<int:page_id>/lai")
@_paper_step
def document_retake(proc, paper, draft_id, answers, page_id):
    """A page scanned or photographed again: the new one takes its place."""

    def keep(page, source):
        # A page already removed (another tab) has nothing to replace: the step shows what there is.
        documents.replace_page(get_db(), current_app.config["PAYLOAD_KEY"], draft_id, page_id, page, source)
        return True

    return _capture(proc, paper, draft_id, answers, keep)


@bp.post("/p/<slug>/giay-to/<document_id>/trang/<int:page_id>")
@_paper_step
def document_page(proc, paper, draft_id, _answers, page_id):
    """Turn a page a quarter clockwise, or remove it."""
    action = request.form.get("action")
    if action == "turn":
        documents.turn_page(get_db(), draft_id, page_id, 1)
    elif action == "remove":
        documents.remove_page(get_db(), draft_id, page_id)
    else:
        abort(400)
    return _back_to_step(proc, paper, request.values.get("change") == "1")


@bp.get("/p/<slug>/giay-to/<document_id>/trang/<int:page_id>.jpg")
@web.passive
def page_thumbnail(slug, document_id, page_id):
    """A page of this session's own draft, small, turned as it will be sent; never kept by a browser."""
    ref = session.get("draft")
    if not ref or ref.get("slug") != slug:
        abort(404)
    found = documents.page_image(get_db(), current_app.config["PAYLOAD_KEY"], ref["id"], page_id)
    if found is None:
        abort(404)
    response = current_app.response_class(pages_mod.thumbnail(*found), mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-store"
    return response


# --- check, consent, submit ----------------------------------------------------------------------------

def _summary_rows(proc: Procedure, answers: dict) -> list[dict]:
    rows = []
    for page in answers_mod.active_pages(proc, answers):
        for field in page["fields"]:
            value = answers_mod.display(field, answers.get(field["name"]), i18n.current_language())
            rows.append({
                "label": i18n.pick(field["label"]),
                # A choice's words are the definition's ("Thông tin của bạn ..."), other answers the person's own.
                "value": i18n.for_reader(value) if field["type"] == "choice" else value,
                "change_url": url_for("citizen.question", slug=proc.slug, page_id=page["id"], change=1),
                "field": field["name"],
            })
    return rows


def _paper_rows(proc: Procedure, draft_id: str, answers: dict) -> list[dict]:
    """Each paper the wizard asked for: how many pages it has, or that the citizen does not have it."""
    conn = get_db()
    captured, marked, kept = documents.pages_of(conn, draft_id), documents.not_applicable(answers), \
        capture.carried(conn, answers)
    rows = []
    for paper in capture.steps(proc):
        count = len(captured.get(paper["id"], []))
        if count:
            value = i18n.t("document_pages", n=count)
        elif paper["id"] in kept:
            value = i18n.t("document_carried")
        elif paper["id"] in marked and not paper["required"]:
            value = i18n.t("document_not_applicable")
        else:
            value = i18n.t("document_none_yet")
        rows.append({"label": i18n.pick(paper), "value": value, "document": paper["id"],
                     "change_url": url_for("citizen.document", slug=proc.slug, document_id=paper["id"], change=1)})
    return rows


def _not_ready(proc: Procedure, draft_id: str, answers: dict):
    """Where the person goes first when something is not answered yet: a question, else a paper's step;
    None when everything is."""
    missing = answers_mod.first_unanswered(proc, answers)
    if missing is not None:
        return _see_other("citizen.question", slug=proc.slug, page_id=missing["id"])
    paper = capture.first_unanswered(get_db(), proc, draft_id, answers)
    if paper is not None:
        return _see_other("citizen.document", slug=proc.slug, document_id=paper["id"])
    return None


@bp.get("/p/<slug>/check")
def check(slug):
    proc = web.procedure_or_404(slug)
    draft = web.current_draft(proc)
    if draft is None:
        return _see_other("citizen.overview", slug=slug)
    elsewhere = _not_ready(proc, *draft)
    if elsewhere is not None:
        return elsewhere
    rows = [row for row in _summary_rows(proc, draft[1])
            if not (getattr(g, "staff", None) and row["field"] in DELIVERY_FIELDS)]  # asked on the finish page
    return render_template("citizen/check.html", proc=proc, rows=rows, papers=_paper_rows(proc, *draft),
                           fee=_fee_due(proc, draft[1]))


@bp.route("/p/<slug>/submit", methods=["GET", "POST"])
def consent(slug):
    proc = web.procedure_or_404(slug)
    draft = web.current_draft(proc)
    if draft is None:
        # A second press of "submit" after the first went through lands here: show what was submitted.
        if request.method == "POST" and session.get("submitted", {}).get("slug") == slug:
            return _see_other("citizen.done")
        return _see_other("citizen.overview", slug=slug)
    draft_id, answers = draft
    if request.method == "GET":
        elsewhere = _not_ready(proc, draft_id, answers)
        if elsewhere is not None:
            return elsewhere
        return render_template("citizen/consent.html", proc=proc, errors={}, fee=_fee_due(proc, answers))
    missing = answers_mod.first_unanswered(proc, answers)
    if missing is not None:
        return _see_other("citizen.question", slug=slug, page_id=missing["id"])
    # A required paper without a page (removed in another tab, or after the check page) blocks submit.
    lacking = capture.missing(get_db(), proc, draft_id, answers)
    if lacking:
        names = "; ".join(d[i18n.current_language()] for d in lacking)
        return render_template("citizen/consent.html", proc=proc, fee=_fee_due(proc, answers), lacking=lacking,
                               errors={"documents": i18n.t("documents_missing", documents=names)}), 422
    if request.form.get("consent") != "yes":
        return render_template("citizen/consent.html", proc=proc, fee=_fee_due(proc, answers),
                               errors={"consent": i18n.t("error_consent")}), 422

    station = current_app.config["STATION"]
    try:
        submitted = dossiers.submit(
            get_db(), key=current_app.config["PAYLOAD_KEY"], station=station["station"],
            channel=station["station"]["kind"], procedure=proc, answers=answers_mod.active_answers(proc, answers),
            draft_id=draft_id, not_applicable=documents.not_applicable(answers),
        )
    except (sqlite3.Error, OSError) as exc:
        # Nothing was committed (one transaction), and the draft is still the session's: the citizen is
        # told the application is not submitted yet, and may press submit again once staff freed space.
        cause = storage_problem(exc)
        if cause is None:
            raise
        log.error("dossier not saved, the draft kept: %s", cause)
        return render_template("citizen/consent.html", proc=proc, fee=_fee_due(proc, answers),
                               errors={"not_saved": i18n.t("submit_not_saved")}), 503
    session.pop("draft", None)
    if submitted is not None:
        session["submitted"] = {"slug": slug, "code": submitted.tracking_code, "id": submitted.submission_id,
                                "release": proc.release}
        # The dossier is committed: whatever the printer does now cannot lose it.
        web.print_receipt_for(proc, submitted.submission_id, submitted.tracking_code, actor="citizen")
    return _see_other("citizen.done")


def _just_submitted():
    """(procedure, submission) of what this session submitted last, or None."""
    submitted = session.get("submitted")
    proc = web.procedure_in(submitted.get("slug"), submitted.get("release")) if submitted else None
    if proc is None or "id" not in submitted:
        return None
    return proc, submitted


def _print_state(proc: Procedure, submitted: dict, receipt=None) -> dict:
    """How the receipt's printing went; once it is known that it will not be printed, with ``preview``:
    the size of its picture for the screen, so the page keeps its box before the picture loads (no
    layout shift)."""
    if not current_app.extensions["receipts"].enabled:
        state = {"state": "no_printer", "status": None}
    else:
        # The printer's own answer: it knows a job whose record waits for the disk (kiosk/receipts.py).
        state = dict(current_app.extensions["receipts"].latest(get_db(), submitted["id"])
                     or {"state": "no_printer", "status": None})
    if state["state"] not in ("pending", "printed"):
        receipt = receipt or web.receipt_of(proc, submitted["id"], submitted["code"])
        state["preview"] = receipts.compose(current_app.config["STATION"], receipt).image.size
    return state


def _payment_on_screen(receipt) -> dict | None:
    """How to pay what is left of the fee, as the receipt prints it: the amount, and the station's VietQR
    when it has a usable ``[payment]`` account (else where to pay); None when nothing is left to pay."""
    if receipt.fee_to_pay_vnd <= 0:
        return None
    station = current_app.config["STATION"]
    shown = {"amount_vnd": receipt.fee_to_pay_vnd,
             "where": station["station"].get("result_address") or station["station"]["agency"]}
    try:
        account = payment_account(station)
    except ValueError as exc:  # a wrong account must not hide the amount (start-up reports it too)
        log.error("payment account unusable, no payment QR on screen: %s", exc)
        account = None
    if account is not None:
        message = payment_message(receipt)
        shown.update(qr=web.qr_svg(account.payload(receipt.fee_to_pay_vnd, message)), content=message,
                     bank=account.bank_name or f"BIN {account.bank_bin}", account=account.account,
                     holder=account.account_name)
    return shown


@bp.get("/done")
def done():
    found = _just_submitted()
    if found is None:
        return _see_other("citizen.index")
    proc, submitted = found
    code = submitted["code"]
    received = dossiers.tracking_code_and_time(get_db(), submitted["id"])
    stored = dossiers.fee_of(get_db(), submitted["id"])  # the fee as the dossier keeps it, as on the receipt
    fee = (stored[1] or {"amount_vnd": stored[0], "lines": []}) if stored else None
    receipt = web.receipt_of(proc, submitted["id"], code)
    return render_template("citizen/done.html", proc=proc, code=code, qr=web.qr_svg(web.tracking_url(code)),
                           printing=_print_state(proc, submitted, receipt), payment=_payment_on_screen(receipt),
                           received_at=received["submitted_at"] if received else None, fee=fee)


@bp.get("/done/printing")
def done_printing():
    """How the receipt's printing went; the confirmation page asks every second while it is pending (once
    it failed, the receipt's picture comes with it, out of band, at the foot of the page)."""
    found = _just_submitted()
    if found is None:
        abort(404)
    return render_template("citizen/_printing.html", printing=_print_state(*found), oob=True)


@bp.get("/done/receipt.png")
@web.passive
def done_receipt():
    """The receipt as a picture, for the screen when it could not be printed (names and ID masked): the
    printer's picture, at the station's paper width, payment code included."""
    found = _just_submitted()
    if found is None:
        abort(404)
    proc, submitted = found
    png = receipts.on_screen_png(current_app.config["STATION"], web.receipt_of(proc, submitted["id"], submitted["code"]))
    return current_app.response_class(png, mimetype="image/png")


@bp.post("/end")
def end():
    """The citizen is finished, or walked away and the idle warning ran out."""
    web.wipe_session()
    response = _see_other("citizen.index")
    # Browser storage too (htmx keeps the current path there); page history holds only no-store pages.
    response.headers["Clear-Site-Data"] = '"storage"'
    return response


# --- satisfaction rating (kiosk/core/ratings.py, docs/ratings.md) -------------------------------------

RATING_OFFER = "rating_offer"  # set by the counter's hand-over (agent/views.py): the rating offered there
RATED = "rated"                # the tracking code this session rated after submitting (one rating each)
RATING_BACK = "rating_back"    # where the thank-you page goes back to


def _rating_offer() -> dict | None:
    """What this session may rate now: a result just handed over at the counter, or what it has just
    submitted (once). Only the procedure's code goes with it, never the dossier."""
    offer = session.get(RATING_OFFER)
    if offer:
        return offer
    found = _just_submitted()
    if found is None or session.get(RATED) == found[1]["code"]:
        return None
    return {"moment": "submitted", "procedure_code": found[0].code, "back": url_for("citizen.done")}


def _rating_back(offer: dict) -> str:
    return web.local_target(offer.get("back"), url_for("citizen.index"))


@bp.route("/danh-gia", methods=["GET", "POST"])
def rating():
    """The satisfaction rating: a few questions of three faces each (the national criteria), every one
    skippable, nothing asked about the person. "Send" stores what was chosen, in one transaction; "skip",
    or sending nothing chosen, stores nothing. Either way the citizen goes back to where they were, and an
    idle session ends here as anywhere (nothing of the dossier depends on the rating)."""
    offer = _rating_offer()
    if offer is None:  # rated already, or nothing to rate: back to the confirmation, or the start
        return _see_other("citizen.done" if _just_submitted() else "citizen.index")
    channel = _channel()
    asked = ratings.criteria_for(offer["moment"], channel)
    if request.method == "GET":
        return render_template("citizen/rating.html", asked=asked, moment=offer["moment"],
                               back=_rating_back(offer), rating_criteria=ratings.CRITERIA,
                               rating_levels=ratings.LEVELS, rating_words=ratings.level_words)
    chosen = {} if request.form.get("action") == "skip" else ratings.read_answers(offer["moment"], channel,
                                                                                  request.form)
    if chosen:
        station = current_app.config["STATION"]["station"]
        ratings.record(get_db(), station_id=station["id"], channel=channel, procedure_code=offer["procedure_code"],
                       local_day=datetime.now(ZoneInfo(station["timezone"])).date().isoformat(),
                       moment=offer["moment"], answers=chosen)
    if offer["moment"] == "handed_over":
        session.pop(RATING_OFFER, None)
    else:
        session[RATED] = session["submitted"]["code"]
    if not chosen:
        return redirect(_rating_back(offer), code=303)
    session[RATING_BACK] = _rating_back(offer)
    return _see_other("citizen.rating_thanks")


@bp.get("/danh-gia/cam-on")
def rating_thanks():
    return render_template("citizen/rating.html", thanks=True,
                           back=web.local_target(session.get(RATING_BACK), url_for("citizen.index")))


# --- spoken prompts ------------------------------------------------------------------------------------

def _prompt_url(lang: str, text: str) -> str | None:
    if not current_app.config["AUDIO_ON"]:
        return None
    return url_for("citizen.prompt_audio", name=audio.name_for(lang, text))


@bp.app_template_global()
def listen_url_for_page(page_name: str) -> str | None:
    lang = i18n.current_language()
    return _prompt_url(lang, audio.page_text(page_name, lang))


@bp.app_template_global()
def listen_url_for_question(page: dict) -> str | None:
    lang = i18n.current_language()
    return _prompt_url(lang, audio.question_text(page, lang))


@bp.get("/audio/<name>.wav")
@web.passive
def prompt_audio(name):
    prompt = current_app.config["AUDIO_PROMPTS"].get(name)
    if prompt is None:
        abort(404)
    folder = current_app.config["AUDIO_DIR"]
    path = folder / f"{name}.wav"
    if not path.exists():
        if not audio.available():
            abort(404)
        path = audio.synthesize(folder, name, *prompt)
    response = send_file(path, mimetype="audio/wav", max_age=86400)
    return response


# --- language, tracking --------------------------------------------------------------------------------

@bp.get("/lang/<code>")
def set_language(code):
    if code in i18n.LANGUAGES:
        session["lang"] = code
    return redirect(web.local_target(request.args.get("next"), "/"), code=303)


@bp.get("/text-size/<size>")
def set_text_size(size):
    if size == "large":
        session["large_text"] = True
    else:
        session.pop("large_text", None)
    return redirect(web.local_target(request.args.get("next"), "/"), code=303)


@bp.get("/-/patterns")
def patterns():
    """Every interface component on one page, for design review and the accessibility checks."""
    fields = [
        {"name": "ho_ten", "type": "text", "label": {"vi": "Họ, chữ đệm và tên", "en": "Full name"},
         "hint": {"vi": "Ghi như trên thẻ căn cước", "en": "As on the ID card"}},
        {"name": "so_dinh_danh", "type": "id_number", "label": {"vi": "Số định danh cá nhân", "en": "Personal ID number"}},
        {"name": "ngay_sinh", "type": "date", "label": {"vi": "Ngày sinh", "en": "Date of birth"},
         "hint": {"vi": "Ví dụ: 27 3 1990", "en": "For example: 27 3 1990"}},
        {"name": "nam_sinh", "type": "year", "label": {"vi": "Năm sinh", "en": "Year of birth"}},
        {"name": "so_ban", "type": "integer", "label": {"vi": "Số bản cần cấp", "en": "Number of copies"}},
        {"name": "gioi_tinh", "type": "choice", "label": {"vi": "Giới tính", "en": "Sex"},
         "options": [{"value": "nam", "vi": "Nam", "en": "Male"}, {"value": "nu", "vi": "Nữ", "en": "Female"}]},
        {"name": "dien_thoai", "type": "phone", "label": {"vi": "Số điện thoại", "en": "Phone number"}},
        {"name": "email", "type": "email", "required": False, "label": {"vi": "Email", "en": "Email"}},
        {"name": "dia_chi", "type": "textarea", "label": {"vi": "Nơi cư trú", "en": "Residence"}},
    ]
    errors = {"so_dinh_danh": i18n.t("error_id_number"), "ngay_sinh": i18n.t("error_date_invalid"),
              "gioi_tinh": i18n.t("error_required_choice")}
    shown = {"ho_ten": "Nguyễn Văn An", "so_dinh_danh": "0010990", "ngay_sinh": {"day": "31", "month": "2", "year": "1990"}}
    samples = list(web.catalog().values())[:3]
    return render_template("patterns.html", fields=fields, errors=errors, shown=shown, procedures=samples,
                           qr=web.qr_svg("http://127.0.0.1:8080/track/K01-261128-0042-1"))


def _central_tracking():
    """This app's way to ask the central about a dossier taken at another station (sync/tracking.py),
    made on first use and kept by the app."""
    from sync.tracking import CentralTracking

    tracking = current_app.extensions.get("central_tracking")
    if tracking is None:
        tracking = current_app.extensions["central_tracking"] = CentralTracking(current_app.config["STATION"])
    return tracking


@bp.get("/track")
def track():
    text = request.args.get("code")
    if text is None:
        return render_template("citizen/track.html", code="", dossier=None, errors={})
    text = answers_mod.normalise(text)[:40]
    error = None
    if not text:
        error = i18n.t("track_required")
    elif not tracking_code.is_valid(text):
        error = i18n.t("track_invalid")
    else:
        dossier = dossiers.find_by_tracking_code(get_db(), text)
        if dossier is not None:
            return _see_other("citizen.track_code", code=dossier["tracking_code"])
        if _central_tracking().connected():
            # Taken at another station, perhaps: the code's own page asks the central (once per lookup).
            return _see_other("citizen.track_code", code="-".join(text.upper().replace("-", " ").split()))
        error = i18n.t("track_not_found")
    return render_template("citizen/track.html", code=text, dossier=None, errors={"code": error}), 422


@bp.get("/track/<code>")
def track_code(code):
    """The dossier of a tracking code: this station's own, else what the central says of one taken at
    another station; when the central cannot be asked, a page that says so (never a guess)."""
    if not tracking_code.is_valid(code):
        abort(404)
    dossier = dossiers.find_by_tracking_code(get_db(), code)
    if dossier is not None:
        proc = web.catalog().get(dossier["procedure_slug"])
        return render_template("citizen/track.html", code=dossier["tracking_code"], dossier=dossier, proc=proc,
                               replaced_by=dossiers.replaced_by(get_db(), dossier["submission_id"]), errors={})
    answer = _central_tracking().lookup(code)
    if answer.kind == "not_connected":
        abort(404)
    if answer.kind == "found" and answer.dossier["status"] in dossiers.CENTRAL_STATUSES:
        remote = answer.dossier
        proc = next((p for p in web.catalog().values() if p.code == remote["procedure_code"]), None)
        return render_template("citizen/track.html", code=code, dossier=None, remote=remote, proc=proc, errors={})
    headers = {}
    if answer.kind == "not_found":
        status, error = 404, i18n.t("track_not_found_central")
    elif answer.kind == "busy":
        status, error = 503, i18n.t("track_central_busy")
        headers["Retry-After"] = str(int((answer.retry_after or 60) + 0.999))
    else:
        status, error = 503, i18n.t("track_central_unreachable")
    return render_template("citizen/track.html", code=code, dossier=None, errors={"code": error}), status, headers
