"""Staff screens (/agent): log in, submit on a citizen's behalf with the papers captured in the wizard and
the originals shown, fee and consent, find and reprint dossiers, the day's report and its sign-off, the rejected queue.

The questions themselves are the citizen's wizard (/p/...), the same pages and checks; after "check
answers" a logged-in staff member comes here to finish instead of to the citizen's consent page.
"""
import logging
import os
import re
import secrets
import sqlite3
from datetime import date, datetime, timedelta, timezone
from functools import wraps
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template, request, session,
                   url_for)

from devices.removable_media import MOUNTS, mounted_removable
from kiosk import capture, device_words, i18n, sync_words
from kiosk.core import audit, documents, dossiers, drafts, fees, outbox, ratings, tracking_code
from kiosk.core.answers import active_answers, first_unanswered, normalise
from kiosk.core.catalog import DELIVERY_FIELDS
from kiosk.core.db import storage_problem, write_transaction
from kiosk.receipts import on_screen_png, prints_of, record_request
from kiosk.web import (current_draft, get_db, idle_minutes, local_target, passive, print_receipt_for, procedure_in,
                       procedure_or_404, receipt_of, wipe_session)
from sync import notices

from . import report, staff

bp = Blueprint("agent", __name__, url_prefix="/agent")
SUPERSEDES_KEY = drafts.SUPERSEDES_KEY  # in a draft's answers: the dossier this correction replaces
# In a correction's draft: the counter's record of the dossier it replaces (the delivery chosen, the
# originals seen), which the finish page starts from (_delivery_default, _checked_before).
CORRECTED_COUNTER_KEY = "_counter"


def _today() -> str:
    zone = ZoneInfo(current_app.config["STATION"]["station"]["timezone"])
    return datetime.now(timezone.utc).astimezone(zone).date().isoformat()


STAFF_SESSION = "staff_session"  # the cookie's only staff key: the session's random id (agent/staff.py)


@bp.before_app_request
def load_staff():
    """Who is logged in: the session's row on the server, looked up on every request (static files
    aside), so a logout, an idle or too old session, a deactivated account or a changed role counts from
    the next request, whatever cookie the browser still has. An ended session is wiped and the person
    sent to the login page with a plain message; a picture beside a page (passive) only reads: it is not
    activity and never touches the cookie."""
    g.staff = None
    token = session.get(STAFF_SESSION)
    if token is None or request.endpoint == "static":
        return None
    passive_request = getattr(current_app.view_functions.get(request.endpoint), "passive", False)
    limits = current_app.config["STATION"]["session"]
    g.staff, ended = staff.session_of(get_db(), token, limits["staff_idle_minutes"] * 60,
                                      limits["staff_max_hours"] * 3600, touch=not passive_request)
    if g.staff is not None or passive_request:
        return None
    wipe_session()
    if request.endpoint == "agent.login":  # already where it would be sent: log in (again) on this request
        if request.method == "GET":
            flash(_ended_message(ended))
        return None
    flash(_ended_message(ended))
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("agent.login", next=target), code=303)


def _ended_message(reason: str | None) -> str:
    limits = current_app.config["STATION"]["session"]
    if reason == "idle":
        return i18n.t("session_ended_idle", minutes=limits["staff_idle_minutes"])
    if reason == "expired":
        return i18n.t("session_ended_expired", hours=limits["staff_max_hours"])
    if reason == "role_changed":
        return i18n.t("session_ended_role")
    return i18n.t("session_ended")  # logged out, deactivated, unknown: the login page says more after a PIN


@bp.app_context_processor
def staff_context():
    if not getattr(g, "staff", None):
        return {"staff": None}
    return {"staff": g.staff, "waiting": outbox.waiting(get_db()), "notices": notices.notices(get_db()),
            "papers_waiting_kb": -(-documents.pending_bytes(get_db()) // 1024),
            "refused_open": outbox.rejected_open_count(get_db())}


def login_required(role: str | None = None):
    def wrap(view):
        @wraps(view)
        def inner(*args, **kwargs):
            if not g.staff:
                return redirect(url_for("agent.login", next=request.full_path.rstrip("?")), code=303)
            if role and g.staff["role"] != role:
                abort(403)
            return view(*args, **kwargs)
        return inner
    return wrap


def _staff_row():
    return staff.by_id(get_db(), g.staff["id"])


# --- log in / out ------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    errors = {}
    username = ""
    if request.method == "POST":
        username = normalise(request.form.get("username", "")).lower()[:64]
        secret = request.form.get("secret", "")[:128]
        try:
            row = staff.login(get_db(), username, secret)
        except staff.LoginRefused as refused:
            # One answer for a wrong PIN, an unknown name, a locked and a deactivated account; only the
            # right PIN of a deactivated account is told why (staff.login).
            if refused.reason == "inactive":
                errors["secret"] = i18n.t("login_inactive")
            else:
                errors["secret"] = i18n.t("login_refused", tries=staff.MAX_FAILURES,
                                          minutes=int(staff.LOCKOUT.total_seconds() // 60))
        else:
            lang = session.get("lang")
            previous = session.get(STAFF_SESSION)
            if previous:  # someone else logging in on this browser: the last session ends, not just its cookie
                staff.end_session(get_db(), previous, "replaced")
            session.clear()  # a fresh session for the staff member, nothing carried over
            if lang:
                session["lang"] = lang
            session[STAFF_SESSION] = staff.start_session(get_db(), row)
            return redirect(local_target(request.args.get("next"), url_for("agent.home"), "/agent"), code=303)
    return render_template("agent/login.html", errors=errors, username=username), 422 if errors else 200


@bp.post("/logout")
def logout():
    token = session.get(STAFF_SESSION)
    if token:  # the row ends: a copy of the cookie opens nothing after this
        staff.end_session(get_db(), token, "logout")
    wipe_session()
    flash(i18n.t("logged_out"))
    return redirect(url_for("agent.login"), code=303)


# --- home, search, detail, reprint ------------------------------------------------------------------

WAITING_SHOWN = 200  # the home's "waiting to be sent" list: the oldest this many, then a count of the rest


@bp.get("/")
@login_required()
def home():
    """Search, a new application, export; then every dossier still waiting to be sent, whatever its day
    (a mobile team's week offline), oldest first, and today's dossiers."""
    conn = get_db()
    recent = dossiers.recent(conn, _today(), 20)
    waiting_rows = outbox.waiting_list(conn, WAITING_SHOWN)
    full = len(waiting_rows) == WAITING_SHOWN
    waiting_more = max(0, outbox.pending_count(conn) - WAITING_SHOWN) if full else 0
    return render_template("agent/home.html", recent=recent, procedures=current_app.config["CATALOG"].values(),
                           export_targets=export_targets(), waiting_rows=waiting_rows, waiting_more=waiting_more)


def export_targets() -> list[Path]:
    """Where a bundle may go: the station file's export folder (when it is there) and every USB stick or
    card the system has mounted. Staff choose one of these; a path typed into a form is never used."""
    configured = Path(current_app.config["STATION"]["sync"]["export_dir"])
    targets = [configured] if configured.is_dir() else []
    return targets + [m for m in mounted_removable(current_app.config.get("REMOVABLE_MOUNTS", MOUNTS))
                      if m not in targets]


@bp.post("/export")
@login_required()
def export_bundle():
    """Mobile teams with no link: every waiting dossier into a signed, encrypted bundle on a USB stick.
    Exported dossiers stay waiting until the central's acknowledgement comes back."""
    from sync.bundle import export_station_bundle

    targets = export_targets()
    chosen = request.form.get("target", "0")
    if not targets or not chosen.isdigit() or int(chosen) >= len(targets):
        flash(i18n.t("export_no_folder", folder=current_app.config["STATION"]["sync"]["export_dir"]))
        return redirect(url_for("agent.home"), code=303)
    folder = targets[int(chosen)]
    try:
        result = export_station_bundle(current_app.config["STATION"], get_db(), folder)
    except FileNotFoundError:
        flash(i18n.t("export_not_enrolled"))
        return redirect(url_for("agent.home"), code=303)
    except OSError:
        flash(i18n.t("export_failed", folder=str(folder)))
        return redirect(url_for("agent.home"), code=303)
    with write_transaction(get_db()):
        audit.append(get_db(), g.staff["username"], "bundle.exported", result["bundle_id"],
                     {"dossiers": result["dossiers"]})
    # What went where: how many, the file's name and the stick (or folder) it is on.
    if result["path"]:
        flash(i18n.t("usb_export_done", count=result["dossiers"], file=result["path"].name, folder=str(folder)))
    if result.get("left"):
        flash(i18n.t("usb_export_left", left=result["left"]))
    if not result["path"] and not result.get("left"):
        flash(i18n.t("export_nothing"))
    return redirect(url_for("agent.home"), code=303)


# --- the acknowledgements brought back on a stick (USB round trip) -----------------------------------

MAX_ACK_FILES = 20  # listed per page: the newest first


def _ack_files_in(folder: Path, suffix: str | None = None) -> list[tuple[str, float]]:
    """(name, modified time) of the ack files at the top of ``folder``, newest first: plain files whose
    name ends in .acks.json (or ``suffix``: catalog releases) (not hidden: a Mac leaves "._" copies on a
    stick); [] when it cannot be read."""
    from sync.bundle import ACK_SUFFIX

    suffix = suffix or ACK_SUFFIX
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.endswith(suffix) and not entry.name.startswith(".") and entry.is_file(
                        follow_symlinks=False):
                    found.append((entry.name, entry.stat(follow_symlinks=False).st_mtime))
    except OSError:
        return []
    return sorted(found, key=lambda item: (-item[1], item[0]))[:MAX_ACK_FILES]


@bp.app_template_filter("time_and_day")
def time_and_day(iso: str) -> tuple[str, str]:
    """A stored UTC time as a sentence says it here: ("14:05", "02/12/2026") in the station's time zone."""
    at = datetime.fromisoformat(iso).astimezone(ZoneInfo(current_app.config["STATION"]["station"]["timezone"]))
    return at.strftime("%H:%M"), at.strftime("%d/%m/%Y")


@bp.app_template_global()
def ack_files_found() -> list[dict]:
    """The ack files on the export targets, for the staff home: which target (its number in
    ``export_targets``), the folder, the name and the export of this station it answers (None when the
    name is not one of ours). Only names are read here; a file is opened when staff press its button."""
    from sync.bundle import ACK_SUFFIX, bundles_named

    found = [{"target": n, "folder": str(folder), "name": name}
             for n, folder in enumerate(export_targets()) for name, _mtime in _ack_files_in(folder)]
    ours = bundles_named(get_db(), [f["name"][:-len(ACK_SUFFIX)] for f in found])
    for f in found:
        f["answers"] = ours.get(f["name"][:-len(ACK_SUFFIX)])
    return found


def _acks_result(counts: dict) -> str:
    """The result of applying an ack file, in plain words: what the central received and refused, or that
    the file was applied before, or that nothing in it could be used."""
    used = counts["acknowledged"] + counts["rejected"]
    if not used and counts["already"] and not counts["ignored"]:
        return i18n.t("usb_acks_already", already=counts["already"])
    if not used and not counts["already"]:
        return i18n.t("usb_acks_forged") if counts["ignored"] else i18n.t("usb_acks_empty")
    words = [i18n.t("usb_acks_applied", acknowledged=counts["acknowledged"], rejected=counts["rejected"])]
    if counts["already"]:
        words.append(i18n.t("usb_acks_applied_before", already=counts["already"]))
    if counts["ignored"]:
        words.append(i18n.t("usb_acks_ignored", ignored=counts["ignored"]))
    return " ".join(words)


ACK_REFUSALS = {"other_station": "usb_acks_other_station", "too_large": "usb_acks_too_large",
                "unreadable": "usb_acks_unreadable"}  # any other BundleError: not an ack file


@bp.post("/acks")
@login_required()
def import_acks():
    """Apply an ack file found on a stick (``kiosk sync import-acks`` on the screen): staff press the button
    beside a file the home page listed; the form names the target's number and the file's name, and only a
    file listed now at the top of that target is read. Each answer is checked like an online one; a file for
    another station, not an ack file or altered is refused, and applying one twice changes nothing. The
    outcome is audited (the file's sha256 and the counts, nothing of its content)."""
    import hashlib

    from sync import protocol
    from sync.bundle import BundleError, apply_station_ack_file, read_bounded

    targets = export_targets()
    chosen, name = request.form.get("target", ""), request.form.get("name", "")
    folder = targets[int(chosen)] if chosen.isdigit() and int(chosen) < len(targets) else None
    if folder is None or name not in {found for found, _mtime in _ack_files_in(folder)}:
        flash(i18n.t("usb_acks_gone"))
        return redirect(url_for("agent.home"), code=303)
    conn = get_db()
    digest = None
    try:
        data = read_bounded(folder / name, protocol.MAX_BUNDLE_BYTES)
        digest = hashlib.sha256(data).hexdigest()
        counts = apply_station_ack_file(current_app.config["STATION"], conn, data)
    except FileNotFoundError:  # no central keys: the station was never enrolled
        flash(i18n.t("export_not_enrolled"))
        return redirect(url_for("agent.home"), code=303)
    except BundleError as refused:
        with write_transaction(conn):
            audit.append(conn, g.staff["username"], "acks.refused", digest, {"code": refused.code})
        flash(i18n.t(ACK_REFUSALS.get(refused.code, "usb_acks_not_ack_file"),
                     station=current_app.config["STATION"]["station"]["id"]))
        return redirect(url_for("agent.home"), code=303)
    # A file of which no answer could be used (all altered, or none for this station's dossiers) is refused.
    forged = counts["ignored"] and not (counts["acknowledged"] or counts["rejected"] or counts["already"])
    with write_transaction(conn):
        audit.append(conn, g.staff["username"], "acks.refused" if forged else "acks.imported", digest,
                     {"code": "not_genuine", **counts} if forged else counts)
    flash(_acks_result(counts))
    return redirect(url_for("agent.home"), code=303)


# --- catalog releases (issue 19): the live one, the last refusal, a release file from a stick -------------

def _catalog_reason(code: str, reason: str) -> str:
    """A refusal in the page's words; the definition's file and field (or the units) kept as said."""
    words = i18n.t(f"catalog_reason_{code}") if f"catalog_reason_{code}" in i18n.MESSAGES else code
    return f"{words} ({reason})" if code in ("bad_procedures", "units_mismatch") else words


@bp.app_template_global()
def catalog_release_state() -> dict:
    """For the staff home: the live catalog release (None: the catalog installed with the station), the last
    refusal after it, a stored release that cannot be used, and the release files at the top of the export
    targets (the same stick listing as the ack files)."""
    from sync.catalog_release import SUFFIX

    releases = current_app.extensions["catalog_releases"]
    refused = releases.store.refused()
    if refused:
        refused = {**refused, "words": _catalog_reason(str(refused.get("code")), str(refused.get("reason", "")))}
    files = [{"target": n, "folder": str(folder), "name": name}
             for n, folder in enumerate(export_targets()) for name, _mtime in _ack_files_in(folder, SUFFIX)]
    return {"live": releases.info, "refused": refused, "problem": releases.problem, "files": files}


@bp.post("/catalog")
@login_required()
def import_catalog():
    """Install a catalog release file found on a stick (``kiosk sync import-catalog`` on the screen), chosen
    as an ack file is (the target's number and a name listed there now). Checked as one fetched online;
    refused with the reason, the live release staying; audited (numbers and codes only)."""
    from sync.bundle import BundleError, read_bounded
    from sync.catalog_release import MAX_RELEASE_BYTES, SUFFIX, ReleaseRefused
    from sync.keys import load_catalog_key
    from sync.worker import station_paths

    targets = export_targets()
    chosen, name = request.form.get("target", ""), request.form.get("name", "")
    folder = targets[int(chosen)] if chosen.isdigit() and int(chosen) < len(targets) else None
    if folder is None or name not in {found for found, _mtime in _ack_files_in(folder, SUFFIX)}:
        flash(i18n.t("catalog_file_gone"))
        return redirect(url_for("agent.home"), code=303)
    releases = current_app.extensions["catalog_releases"]
    try:
        data = read_bounded(folder / name, MAX_RELEASE_BYTES)
        key = load_catalog_key(station_paths(current_app.config["STATION"])["central_keys"])
        installed = releases.store.install(data, key, "usb", get_db(), g.staff["username"])
    except (FileNotFoundError, ValueError):  # no central keys: the station was never enrolled
        flash(i18n.t("export_not_enrolled"))
    except BundleError as exc:
        flash(i18n.t("catalog_refused", reason=_catalog_reason(exc.code, str(exc))))
    except ReleaseRefused as refused:
        flash(i18n.t("catalog_refused", reason=_catalog_reason(refused.code, refused.reason)))
    else:
        releases.refresh(force=True)  # this request's next one serves it
        number = installed.release if installed else releases.info["release"]
        flash(i18n.t("catalog_installed" if installed else "catalog_already_live", release=number))
    return redirect(url_for("agent.home"), code=303)


@bp.get("/search")
@login_required()
def search():
    query = normalise(request.args.get("q", ""))[:80]
    conn = get_db()
    results = []
    if query and tracking_code.is_valid(query):
        found = dossiers.find_by_tracking_code(conn, query)
        results = [found] if found else []
    elif query:
        # Names are sealed: staff find a dossier by the masked form, typed whole or as its start.
        results = dossiers.search_masked_name(conn, query, 50)
    return render_template("agent/search.html", query=query, results=results)


def _dossier_or_404(code: str):
    row = dossiers.find_by_tracking_code(get_db(), code) if tracking_code.is_valid(code) else None
    if row is None:
        abort(404)
    return row


def _dossier_procedure(row):
    """The definition a dossier was made with: of its recorded catalog release (``procedure_in``, the same
    lookup a draft's pages use), so a dossier made on an older release keeps its name, fee and questions on
    the staff pages and its receipt after the station switched; the live one when that release is no
    longer kept; None when neither has it."""
    return procedure_in(row["procedure_slug"], row["catalog_release"])


def _dossier_receipt(code: str):
    """(dossier row, its receipt) for a dossier whose procedure this station still knows."""
    row = _dossier_or_404(code)
    proc = _dossier_procedure(row)
    if proc is None:
        abort(404)
    return row, receipt_of(proc, row["submission_id"], row["tracking_code"])


@bp.get("/d/<code>")
@login_required()
def dossier(code):
    conn = get_db()
    row = _dossier_or_404(code)
    proc = _dossier_procedure(row)
    document = dossiers.open_payload(conn, current_app.config["PAYLOAD_KEY"], row["submission_id"])
    sync = outbox.get(conn, row["submission_id"])
    prints = prints_of(conn, row["submission_id"])
    money = report.ledger_of(conn, row["submission_id"])
    answers, answers_hidden = [], None
    if document and proc:
        from kiosk.core.answers import display
        # Who saw a citizen's details is itself on record: when the record cannot be written (a full or
        # read-only disk), the details stay hidden and staff are told why.
        try:
            with write_transaction(conn):
                audit.append(conn, g.staff["username"], "dossier.viewed", row["submission_id"])
        except (sqlite3.Error, OSError) as exc:
            answers_hidden = storage_problem(exc)
            if answers_hidden is None:
                raise
        if answers_hidden is None:
            for field in proc.fields():
                if field["name"] in document["answers"]:
                    answers.append((i18n.pick(field["label"]),
                                    display(field, document["answers"][field["name"]], i18n.current_language())))
    corrected_by = dossiers.corrected_by(conn, row["submission_id"])
    supersedes = dossiers.tracking_code_of(conn, row["supersedes"]) if row["supersedes"] else None
    # A dossier is corrected once: once replaced, staff are offered the newest of its line instead.
    newest = dossiers.replaced_by(conn, row["submission_id"]) if corrected_by else None
    printer = current_app.extensions["receipts"]
    return render_template("agent/dossier.html", dossier=row, proc=proc, sync=sync, prints=prints, money=money,
                           answers=answers, answers_hidden=answers_hidden, counter=(document or {}).get("counter"),
                           can_correct=bool(document) and not corrected_by, newest=newest,
                           corrected_by=corrected_by, supersedes=supersedes,
                           sync_reason=sync_words.explain(sync["last_error"], sync["state"]) if sync else "",
                           printing=printer.enabled, printer_words=device_words.printer_status,
                           printer_recovering=printer.enabled and printer.needs_recovery)


@bp.post("/d/<code>/correct")
@login_required()
def correct(code):
    """A submitted dossier never changes: a correction is a new application that starts from the old
    answers (and, at the counter, the delivery chosen and the originals seen) and names the dossier it
    replaces. One correction per dossier: one already replaced sends staff to the newest of its line, and
    a correction already under way (not submitted, not idle) is resumed rather than started twice.

    Being a new application, a correction starts on the live catalog release (its questions and fee as
    they are today), not on the release the old dossier was made with; a procedure the live release no
    longer has cannot be corrected here (404)."""
    conn = get_db()
    row = _dossier_or_404(code)
    proc = current_app.config["CATALOG"].get(row["procedure_slug"])
    if proc is None:
        abort(404)
    newest = dossiers.replaced_by(conn, row["submission_id"])
    if newest is not None:
        flash(i18n.t("correction_exists", code=row["tracking_code"], newest=newest))
        return redirect(url_for("agent.dossier", code=newest), code=303)
    open_draft = drafts.correction_of(conn, row["submission_id"], idle_minutes())
    if open_draft is not None:  # resumed where it stands: its answers are on the check page
        session["draft"] = {"id": open_draft[0], "slug": open_draft[1]}
        return redirect(url_for("citizen.check", slug=open_draft[1]), code=303)
    document = dossiers.open_payload(conn, current_app.config["PAYLOAD_KEY"], row["submission_id"])
    if document is None:
        abort(404)
    # The papers the citizen said they do not have stay so; the pages captured stay with the old dossier,
    # carried into the new one unless captured again (kiosk.core.documents.assemble).
    answers = {**document["answers"], SUPERSEDES_KEY: row["submission_id"],
               documents.NOT_APPLICABLE_KEY: document.get("documents_not_applicable", [])}
    if document.get("counter"):  # what the finish page starts from: the delivery and the originals seen
        answers[CORRECTED_COUNTER_KEY] = {k: document["counter"][k] for k in ("delivery", "documents_checked")
                                          if k in document["counter"]}
    draft_id = drafts.create(conn, current_app.config["PAYLOAD_KEY"], proc.slug, proc.version, answers,
                             release=proc.release)
    session["draft"] = {"id": draft_id, "slug": proc.slug}
    with write_transaction(conn):
        audit.append(conn, g.staff["username"], "dossier.correction_started", row["submission_id"])
    return redirect(url_for("citizen.check", slug=proc.slug), code=303)


@bp.get("/d/<code>/receipt.png")
@passive
@login_required()
def receipt_png(code):
    _row, receipt = _dossier_receipt(code)
    png = on_screen_png(current_app.config["STATION"], receipt)  # the printer's picture, payment code included
    return current_app.response_class(png, mimetype="image/png")


REPRINT_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")


@bp.app_template_global()
def reprint_key() -> str:
    """A fresh idempotency key for a reprint form (a hidden field): the form posted twice is one reprint."""
    return secrets.token_urlsafe(16)


@bp.post("/d/<code>/reprint")
@login_required()
def reprint(code):
    """One reprint per form: the request, its ledger line and its audit record are written together under
    the form's key, and a replayed or double-clicked POST finds the key taken, writes and prints nothing
    more, and gets the same answer. A POST without a usable key (an old form) counts as a new request."""
    conn = get_db()
    row = _dossier_or_404(code)
    proc = _dossier_procedure(row)  # the receipt as first printed: the dossier's own release
    if proc is None:
        abort(404)
    key = request.form.get("reprint_key", "")
    if not REPRINT_KEY.fullmatch(key):
        key = secrets.token_urlsafe(16)
    printer = current_app.extensions["receipts"]
    receipt = receipt_of(proc, row["submission_id"], row["tracking_code"]) if printer.enabled else None
    try:
        with write_transaction(conn):
            job = record_request(conn, row["submission_id"], g.staff["username"], key, printing=printer.enabled)
            if job is not None:
                report.record_reprint(conn, datetime.now(timezone.utc).isoformat(), _today(), g.staff["id"],
                                      row["submission_id"])
                audit.append(conn, g.staff["username"], "receipt.reprint", row["submission_id"])
    except (sqlite3.Error, OSError) as exc:
        cause = storage_problem(exc)
        if cause is None:
            raise
        # Nothing written, nothing printed (a reprint is counted in the ledger): staff press it again later.
        logging.getLogger("agent").error("reprint not recorded, nothing printed: %s", cause)
        flash(i18n.t("reprint_not_saved", cause=cause))
        return redirect(url_for("agent.dossier", code=row["tracking_code"]), code=303)
    if job is not None and printer.enabled:
        printer.queue(job, receipt, row["submission_id"], g.staff["username"])
    # No printer here (an old form, a printer removed since): the receipt is on the page, nothing printed.
    flash(i18n.t("reprint_requested" if printer.enabled else "reprint_no_printer"))
    return redirect(url_for("agent.dossier", code=row["tracking_code"]), code=303)


RATING_OFFER = "rating_offer"  # the session's key read by the citizen's rating page (kiosk/citizen.py)


@bp.post("/d/<code>/hand-over")
@login_required()
def hand_over(code):
    """The result handed to the citizen at the counter: recorded (an audit event naming the dossier and who
    handed it over), then the screen turns to the citizen for the satisfaction rating, which they may skip
    (docs/ratings.md). The rating keeps nothing of the dossier but its procedure's code."""
    conn = get_db()
    row = _dossier_or_404(code)
    with write_transaction(conn):
        audit.append(conn, g.staff["username"], "result.handed_over", row["submission_id"])
    session[RATING_OFFER] = {"moment": "handed_over", "procedure_code": row["procedure_code"],
                             "back": url_for("agent.home")}
    flash(i18n.t("handed_over", code=row["tracking_code"]))
    return redirect(url_for("citizen.rating"), code=303)


# --- finishing an application at the counter -------------------------------------------------------

def _delivery_default(answers: dict) -> tuple[str, str]:
    """What the counter's delivery question starts from: for a correction of a counter dossier, the delivery
    staff recorded then; else the citizen's own answer when the draft has one (a correction of a kiosk
    dossier brings it along); else collection at the counter."""
    before = (answers.get(CORRECTED_COUNTER_KEY) or {}).get("delivery") or {}
    if before.get("method") in ("counter", "post"):
        return before["method"], before.get("address", "") if before["method"] == "post" else ""
    if answers.get("delivery") == "buu-chinh":
        address = answers.get("delivery_address") or ""
        return "post", address.get("text", "") if isinstance(address, dict) else address  # an address answer
    return "counter", ""


def _checked_before(proc, answers: dict, papers: dict) -> set[str]:
    """The originals to tick that a correction's finish page starts with ticked: those staff saw for the
    dossier it replaces (kept by their Vietnamese names, as the dossier records them), by id."""
    seen = set((answers.get(CORRECTED_COUNTER_KEY) or {}).get("documents_checked") or ())
    return {doc["id"] for doc in papers["to_tick"] if doc["vi"] in seen}


def _papers(proc, draft_id: str, answers: dict) -> dict:
    """What the finish page says of the procedure's papers. ``listed``: the declaration (the wizard's
    answers) and the papers captured in the wizard's steps, read-only, each with its words (pages, kept
    from the dossier a correction replaces, not held); ``to_tick``: what staff check by hand, the
    originals shown to them, and the paper copies handed in when this station captures no pages;
    ``missing``: the ids of required captured papers with no page."""
    conn = get_db()
    captured = {d["id"] for d in capture.steps(proc)}
    counts = {k: len(v) for k, v in documents.pages_of(conn, draft_id).items()}
    kept, marked = capture.carried(conn, answers), documents.not_applicable(answers)
    listed, to_tick, received = [], [], []
    for paper in proc.documents:
        if paper["kind"] == "form":
            listed.append((paper, i18n.t("documents_form_filled")))
            received.append(paper["id"])
        elif paper["id"] in captured:
            if counts.get(paper["id"]):
                words = i18n.t("document_pages", n=counts[paper["id"]])
            elif paper["id"] in kept:
                words = i18n.t("document_carried")
            else:
                words = i18n.t("document_not_applicable" if paper["id"] in marked else "document_none_yet")
            listed.append((paper, words))
            if counts.get(paper["id"]) or paper["id"] in kept:
                received.append(paper["id"])
        else:
            to_tick.append(paper)
    missing = {d["id"] for d in capture.missing(conn, proc, draft_id, answers)}
    return {"listed": listed, "to_tick": to_tick, "received": received, "missing": missing,
            "captures": bool(captured)}


def _read_fee_ground(proc, values: dict, full_vnd: int) -> tuple[fees.StaffGround | None, dict]:
    """The reduction or exemption staff chose (``values``: the form's), and the errors. ``full_vnd`` is
    the fee without any, the most an "other" amount may be."""
    errors = {}
    choice = values["fee_ground"]
    if full_vnd == 0:
        return None, errors
    if choice == fees.OTHER:
        reason = values["fee_other_reason"]
        amount = values["fee_other_amount"]
        if not 5 <= len(reason) <= 200:
            errors["fee_other_reason"] = i18n.t("fee_other_reason_needed")
        if not (amount.isascii() and amount.isdigit() and len(amount) <= 9 and int(amount) <= full_vnd):
            errors["fee_other_amount"] = i18n.t("fee_other_amount_invalid", amount=f"{full_vnd:,}".replace(",", "."))
        if errors:
            return None, errors
        return fees.StaffGround(fees.OTHER, reason, int(amount)), errors
    if choice != fees.NONE and choice not in {g["id"] for g in fees.grounds(proc)}:
        return None, {"fee_ground": i18n.t("fee_ground_invalid")}
    return fees.StaffGround(choice), errors


@bp.route("/p/<slug>/finish", methods=["GET", "POST"])
@login_required()
def finish(slug):
    """The counter's last page: the documents checked, how the result is delivered (asked here once: the
    wizard skips the citizen's own question for staff, and its answers are left out of the dossier), the
    fee with the reduction or exemption staff record after seeing the proof, the cash taken, consent. For a
    correction, what was paid for the dossier it replaces is said and carried: only a higher fee's
    difference is taken, a lower one's given back (agent/report.py, docs/counter-money.md)."""
    proc = procedure_or_404(slug)
    draft = current_draft(proc)
    if draft is None:
        return redirect(url_for("citizen.overview", slug=slug), code=303)
    draft_id, answers = draft
    missing = first_unanswered(proc, answers)
    if missing is not None:
        return redirect(url_for("citizen.question", slug=slug, page_id=missing["id"]), code=303)
    if request.method == "GET":
        paper = capture.first_unanswered(get_db(), proc, draft_id, answers)
        if paper is not None:  # a paper's step not dealt with yet: there first, as the check page does
            return redirect(url_for("citizen.document", slug=slug, document_id=paper["id"]), code=303)
    papers = _papers(proc, draft_id, answers)
    station = current_app.config["STATION"]
    channel = station["station"]["kind"]
    answered = {k: v for k, v in active_answers(proc, answers).items() if k not in DELIVERY_FIELDS}
    full_vnd = fees.fee_for(proc, answered, channel, fees.StaffGround()).amount_vnd
    declared = fees.declared_ground(proc, answered)
    delivery, address = _delivery_default(answers)
    form = request.form
    errors, values = {}, {"documents": _checked_before(proc, answers, papers), "delivery": delivery, "address": address,
                          "fee_ground": declared["id"] if declared else fees.NONE, "fee_other_reason": "",
                          "fee_other_amount": "", "fee": None, "consent": False}
    if request.method == "POST":
        values = {"documents": set(form.getlist("documents")) & {d["id"] for d in papers["to_tick"]},
                  "delivery": form.get("delivery", "counter"), "address": normalise(form.get("address", ""), True),
                  "fee_ground": form.get("fee_ground", values["fee_ground"])[:64],
                  "fee_other_reason": normalise(form.get("fee_other_reason", ""))[:300],
                  "fee_other_amount": "".join(c for c in form.get("fee_other_amount", "") if c not in "., ")[:12],
                  "fee": normalise(form.get("fee", "")), "consent": form.get("consent") == "yes"}
    ground, ground_errors = _read_fee_ground(proc, values, full_vnd)
    fee = fees.fee_for(proc, answered, channel, ground)
    # A correction inherits what was paid for the dossier it replaces: only a higher fee is taken.
    replaced_id = answers.get(SUPERSEDES_KEY)
    before = report.paid_before(get_db(), replaced_id) if replaced_id else None
    to_take = max(0, fee.amount_vnd - before["held_vnd"]) if before else fee.amount_vnd
    if values["fee"] is None:
        values["fee"] = str(to_take)  # the cash to take, unless staff say otherwise
    if request.method == "POST":
        errors.update(ground_errors)
        shown = form.get("fee_due_shown")
        if not ground_errors and (form.get("action") == "recalculate"
                                  or (shown is not None and shown != str(fee.amount_vnd))):
            # The amount due changed with the ground chosen: staff see it before anything is submitted.
            values["fee"] = str(to_take)
            if form.get("action") != "recalculate":
                errors["fee"] = i18n.t("fee_due_changed", amount=f"{fee.amount_vnd:,}".replace(",", "."))
            else:
                return _render_finish(proc, errors, values, fee, full_vnd, papers, before)
        held = str(before["held_vnd"]) if before else None
        if before and "fee" not in errors and form.get("paid_before_shown", held) != held:
            # The replaced dossier's money moved meanwhile (another correction of it): staff see it again.
            values["fee"] = str(to_take)
            errors["fee"] = i18n.t("correction_paid_changed")
        # The same words as the citizen's consent page: required papers with no page, and required
        # originals (or, with no capture here, paper copies) not ticked.
        lacking = [doc[i18n.current_language()] for doc in proc.documents if doc["required"] and (
            doc["id"] in papers["missing"] or (doc in papers["to_tick"] and doc["id"] not in values["documents"]))]
        if lacking:
            errors["documents"] = i18n.t("documents_missing", documents="; ".join(lacking))
        if values["delivery"] not in ("counter", "post"):
            errors["delivery"] = i18n.t("error_required_choice")
        elif values["delivery"] == "post" and not 10 <= len(values["address"]) <= 300:
            errors["address"] = i18n.t("delivery_address_needed")
        if "fee" not in errors and not (values["fee"].isascii() and values["fee"].isdigit()
                                        and int(values["fee"]) <= 100_000_000):
            errors["fee"] = i18n.t("fee_invalid")
        if not values["consent"]:
            errors["consent"] = i18n.t("consent_not_recorded")
        if not errors:
            counter = {
                "documents_checked": [doc["vi"] for doc in proc.documents
                                      if doc["id"] in papers["received"] or doc["id"] in values["documents"]],
                "delivery": {"method": values["delivery"],
                             **({"address": values["address"]} if values["delivery"] == "post" else {})},
                "consent_recorded_by": g.staff["username"],
            }
            taken = int(values["fee"])

            def take_fee(conn, submitted):  # the money goes into the ledger in the submit transaction
                if replaced_id:  # what was paid for the replaced dossier moves here, a lower fee given back
                    report.record_correction(conn, submitted, g.staff["id"], replaced_id, actor=g.staff["username"])
                if taken:
                    report.record_fee(conn, submitted, g.staff["id"], taken, actor=g.staff["username"])

            try:
                submitted = dossiers.submit(
                    get_db(), key=current_app.config["PAYLOAD_KEY"], station=station["station"],
                    channel=channel, procedure=proc, answers=answered, fee_ground=ground,
                    draft_id=draft_id, actor=g.staff["username"], staff_id=g.staff["id"], counter=counter,
                    also_write=take_fee if taken or replaced_id else None, supersedes=answers.get(SUPERSEDES_KEY),
                    not_applicable=documents.not_applicable(answers))
            except dossiers.AlreadyReplaced as replaced:
                # Corrected meanwhile (another counter, another tab): this correction is dropped, staff are
                # sent to the newest dossier of the line.
                drafts.delete(get_db(), draft_id)
                session.pop("draft", None)
                flash(i18n.t("correction_exists", code=dossiers.tracking_code_of(get_db(), answers[SUPERSEDES_KEY])[0],
                             newest=replaced.newest))
                return redirect(url_for("agent.dossier", code=replaced.newest), code=303)
            except (sqlite3.Error, OSError) as exc:
                # Nothing committed, the draft kept: staff are told, and submit again once space is freed.
                cause = storage_problem(exc)
                if cause is None:
                    raise
                logging.getLogger("agent").error("dossier not saved at the counter, the draft kept: %s", cause)
                errors["not_saved"] = i18n.t("submit_not_saved")
                return _render_finish(proc, errors, values, fee, full_vnd, papers, before)[0], 503
            session.pop("draft", None)
            if submitted is None:
                return redirect(url_for("agent.home"), code=303)
            print_receipt_for(proc, submitted.submission_id, submitted.tracking_code, actor=g.staff["username"])
            flash(i18n.t("submitted_for_citizen" if current_app.extensions["receipts"].enabled
                         else "submitted_for_citizen_no_printer"))
            return redirect(url_for("agent.dossier", code=submitted.tracking_code), code=303)
    return _render_finish(proc, errors, values, fee, full_vnd, papers, before)


def _render_finish(proc, errors: dict, values: dict, fee: fees.Fee, full_vnd: int, papers: dict,
                   before: dict | None = None):
    """The finish page. ``before``: for a correction, what was paid for the dossiers it replaces
    (report.paid_before), said with what is left to take or to give back."""
    money = None
    if before is not None:
        held = before["held_vnd"]
        money = {"held_vnd": held, "to_take_vnd": max(0, fee.amount_vnd - held),
                 "refund_vnd": max(0, held - fee.amount_vnd),
                 "replaced": before["chain"][0]["tracking_code"] if before["chain"] else None,
                 "paid": [{**link, "day": _day_text(link["submitted_at"])}
                          for link in reversed(before["chain"]) if link["paid_vnd"]]}
    return render_template("agent/finish.html", proc=proc, errors=errors, values=values, fee=fee.basis(),
                           papers=papers, fee_choices=fees.grounds(proc) if full_vnd else None, before=money,
                           day_signed=_signed_today()), 422 if errors else 200


# --- the day's report, the rejected queue ------------------------------------------------------------

def _day_text(iso_utc: str) -> str:
    """A stored UTC time's station day, as staff read it (dd/mm/yyyy)."""
    zone = ZoneInfo(current_app.config["STATION"]["station"]["timezone"])
    return datetime.fromisoformat(iso_utc).astimezone(zone).strftime("%d/%m/%Y")


def _signed_today() -> str | None:
    """Today as dd/mm when the day's report is already signed (what is submitted now goes to a later
    day's report), else None."""
    today = _today()
    return date.fromisoformat(today).strftime("%d/%m") if report.closing(get_db(), today) else None


@bp.app_template_global()
def day_signed_notice() -> str | None:
    """For a staff page: the warning that today is already signed off, or None."""
    signed = _signed_today() if getattr(g, "staff", None) else None
    return i18n.t("day_signed_home", day=signed) if signed else None


def _parse_day(text: str | None) -> date | None:
    """A day from the report's picker: YYYY-MM-DD (a date input) or dd/mm/yyyy (typed), else None."""
    text = (text or "").strip()[:10]
    for pattern in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            pass
    return None


@bp.get("/report")
@login_required()
def day_report():
    """The day's report, today's unless the picker chose another day. A signed day shows the report as
    signed (its hash checked), with what was written after the signature shown going to a later day."""
    return _render_report(request.args.get("day"))


def _render_report(day_text: str | None, errors: dict | None = None, reason: str = ""):
    errors = dict(errors or {})
    today = date.fromisoformat(_today())
    day = _parse_day(day_text) if day_text else today
    if day is None:
        errors["day"] = i18n.t("report_day_invalid")
        day = today
    conn = get_db()
    iso = day.isoformat()
    closed = report.closing(conn, iso)
    frozen = report.signed_report(closed) if closed else None
    data = frozen if frozen is not None else report.day_report(conn, iso)
    signer = staff.display_name_of(conn, closed["signed_by"]) if closed else None
    return render_template("agent/report.html", report=data, closed=closed, frozen=frozen is not None,
                           signer=signer, day_iso=iso, day_text=day.strftime("%d/%m/%Y"),
                           previous_day=(day - timedelta(days=1)).isoformat(),
                           next_day=(day + timedelta(days=1)).isoformat(), can_sign=day <= today,
                           history=[c for c in report.closings_of(conn, iso) if c["reopened_at"]],
                           moved=report.moved_out(conn, iso), errors=errors, reason=reason,
                           short_day=lambda d: date.fromisoformat(d).strftime("%d/%m"),
                           long_day=lambda d: date.fromisoformat(d).strftime("%d/%m/%Y"),
                           rating_criteria=ratings.CRITERIA, rating_levels=ratings.LEVELS,
                           rating_words=ratings.level_words,
                           catalog={p.code: p for p in current_app.config["CATALOG"].values()}), 422 if errors else 200


@bp.post("/report/sign")
@login_required(role="supervisor")
def sign_report():
    """Sign off a day (today or before): its report is stored with its hash and shown as signed."""
    day = _parse_day(request.form.get("day"))
    if day is None:
        abort(404)
    if day.isoformat() > _today():
        flash(i18n.t("report_sign_future"))
    else:
        try:
            report.sign_off(get_db(), day.isoformat(), _staff_row())
        except ValueError:
            flash(i18n.t("already_signed"))
    return redirect(url_for("agent.day_report", day=day.isoformat()), code=303)


@bp.post("/report/reopen")
@login_required(role="supervisor")
def reopen_report():
    """Reopen a signed day with a reason (audited, the closing kept in the day's history): its page is
    live again and it can be signed again."""
    day = _parse_day(request.form.get("day"))
    if day is None:
        abort(404)
    reason = normalise(request.form.get("reason", ""))[:400]
    low, high = report.REOPEN_REASON_LENGTH
    if not low <= len(" ".join(reason.split())) <= high:
        return _render_report(day.isoformat(), {"reason": i18n.t("reopen_reason_needed", low=low, high=high)}, reason)
    try:
        report.reopen(get_db(), day.isoformat(), _staff_row(), reason)
    except LookupError:
        flash(i18n.t("report_not_signed"))
    else:
        flash(i18n.t("report_reopened", day=day.strftime("%d/%m/%Y")))
    return redirect(url_for("agent.day_report", day=day.isoformat()), code=303)


@bp.get("/rejected")
@login_required()
def rejected():
    """The open refusals, each with its reason in words and what to do (kiosk/sync_words.py) and a way to
    correct it; below, the latest refusals closed by a correction or by sending again under a new code."""
    conn = get_db()
    return render_template("agent/rejected.html", rows=outbox.rejected(conn), closed=outbox.rejected_closed(conn),
                           reason=sync_words.explain, printing=current_app.extensions["receipts"].enabled)
