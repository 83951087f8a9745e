"""Refusals and corrections (docs/sync.md, "Refusals and corrections"): every reason sync can store is said
in plain words with what to do, the staff bar counts the open refusals, a correction closes its refusal
and the old code points to the new one, one correction per dossier, the correction starts from the
counter's delivery and checklist, and a station without a printer never speaks of printing."""
import ast
import re
import sqlite3
from pathlib import Path

import pytest

from agent import staff
from kiosk import i18n, sync_words
from kiosk.app import create_app
from kiosk.core import documents, dossiers, drafts, fees
from kiosk.core.db import connect
from sync.central import open_central
from sync.protocol import canonical_json
from sync.worker import record_rejection, worker_from_config
from tests.support.fake_printer import unused_port
from tests.support.harness import enrol, make_station, submit_many

from .conftest import csrf_token
from .wizard import answer_all, submit

ROOT = Path(__file__).resolve().parent.parent
PIN = "246810"
# What a page must never show staff: a Python exception's name, an errno, a traceback.
RAW = re.compile(r"\b[A-Za-z]*(?:Error|Exception)\b|Errno|Traceback|\bgaierror\b")


# --- every code, in words ----------------------------------------------------------------------------

def _literal_args(path: Path, function: str, position: int) -> set[tuple]:
    """(the first int literal argument or None, the string literal at ``position``) of every call of
    ``function`` (a name or an attribute) in the module at ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == function:
            args = node.args
            if len(args) > position and isinstance(args[position], ast.Constant) and isinstance(
                    args[position].value, str):
                status = next((a.value for a in args if isinstance(a, ast.Constant) and type(a.value) is int), None)
                found.add((status, args[position].value))
    return found


def _returned_pairs(path: Path, function: str) -> set[str]:
    """The first string of every ``return "code", "reason"`` (or assigned ``("code", ...)`` tuple) in
    ``function`` of the module at ``path``, or in the whole module when ``function`` is None."""
    tree = ast.parse(path.read_text("utf-8"))
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function] if function \
        else [tree]
    codes = set()
    for scope in scopes:
        for node in ast.walk(scope):
            if isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(
                    isinstance(e, (ast.Constant, ast.JoinedStr)) for e in node.elts) and isinstance(
                    node.elts[0], ast.Constant) and isinstance(node.elts[0].value, str) and re.fullmatch(
                    r"[a-z_]+", node.elts[0].value):
                codes.add(node.elts[0].value)
    return codes


def _error_dict_codes(path: Path) -> set[str]:
    """Every ``{"error": "code", ...}`` written literally in the module at ``path``."""
    codes = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "error" and isinstance(value, ast.Constant):
                    codes.add(value.value)
    return codes


def refusal_codes_in_the_source() -> set[str]:
    """The codes a refused dossier can be stored with, read from the source: the central's signed
    refusals and the worker's own quarantines."""
    central, worker = ROOT / "sync/central.py", ROOT / "sync/worker.py"
    return ({code for _, code in _literal_args(central, "rejected", 0)} | _returned_pairs(central, "_document_problem")
            | {code for _, code in _literal_args(worker, "record_rejection", 2)}
            | _returned_pairs(worker, "upload_documents"))


def error_codes_in_the_source() -> set[tuple]:
    """(HTTP status or None, code) of every error the central answers outside a signed refusal."""
    central = ROOT / "sync/central.py"
    return (_literal_args(central, "_error", 1) | _literal_args(ROOT / "sync/protocol.py", "AuthError", 1)
            | {(413, code) for _, code in _literal_args(central, "_blob_refused", 1)}
            | {(None, code) for code in _error_dict_codes(central)})


def _vietnamese(text: str) -> bool:
    return bool(re.search(r"[ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ]", text))


def test_every_code_the_central_and_the_worker_can_store_has_words_in_both_languages():
    refusals = refusal_codes_in_the_source()
    # The list is read from the source: a code added there without words here fails this test.
    assert {"station_mismatch", "bad_procedure_code", "conflict", "tracking_code_taken", "not_canonical",
            "local_payload", "local_documents", "blob_too_large"} <= refusals
    assert refusals <= set(sync_words.REFUSAL_CODES), refusals - set(sync_words.REFUSAL_CODES)
    general = {lang: i18n.say("refusal_unknown", lang) for lang in i18n.LANGUAGES}
    for code in refusals:
        stored = f"{code}: the document comes from somewhere else"  # as sync stores it: code, English reason
        words = {lang: sync_words.explain(stored, "rejected", lang) for lang in i18n.LANGUAGES}
        for lang, text in words.items():
            assert text and text != general[lang] and code not in text and "somewhere" not in text, (code, lang)
        assert _vietnamese(words["vi"]) and words["vi"] != words["en"], code

    errors = error_codes_in_the_source()
    assert {code for _, code in errors} >= {"unknown_station", "revoked_station", "stale_timestamp", "bad_signature",
                                             "bad_batch", "offset_mismatch", "blob_quota_exceeded", "missing_blobs"}
    unknown = {lang: i18n.say("sync_error_unknown", lang) for lang in i18n.LANGUAGES}
    for status, code in errors:
        stored = f"blob refused: {code}: too much" if status == 413 and code.startswith(("blob", "too_many_up")) \
            else f"HTTP {status or 400} {code}"
        if code in sync_words.REFUSAL_CODES:
            continue  # refused for good by the worker (blob_too_large): said as a refusal, above
        assert code in sync_words.ERROR_KINDS, code
        for lang in i18n.LANGUAGES:
            text = sync_words.explain(stored, "pending", lang)
            assert text and text != unknown[lang] and code not in text, (stored, lang)
    for kind in sync_words.KINDS:  # every sentence, in both languages
        vi, en = (i18n.say(f"sync_error_{kind}", lang) for lang in i18n.LANGUAGES)
        assert _vietnamese(vi) and en and vi != en


@pytest.mark.parametrize("stored, words", [
    ("ConnectionRefusedError: [Errno 111] Connection refused", "Chưa kết nối được trung tâm; máy sẽ tự gửi lại."),
    ("TimeoutError: timed out", "Chưa kết nối được trung tâm"),
    ("gaierror: [Errno -2] Name or service not known", "Chưa kết nối được trung tâm"),
    ("document upload: RemoteDisconnected: Remote end closed connection without response", "Chưa kết nối được"),
    ("the answer took longer than the exchange timeout", "Chưa kết nối được trung tâm"),
    ("HTTP 503", "Trung tâm đang gặp sự cố"),
    ("HTTP 429 too_many", "Trung tâm đang bận"),
    ("HTTP 401 stale_timestamp", "Đồng hồ của trạm lệch"),
    ("HTTP 403 revoked_station", "thu hồi khoá của trạm"),
    ("HTTP 403 unknown_station", "chưa được đăng ký với trung tâm"),
    ("HTTP 200 that is not the central's acknowledgement (no signature)", "không phải của trung tâm"),
    ("HTTP 428 missing_blobs (2)", "Trung tâm thiếu giấy tờ"),
    ("blob refused: blob_quota_exceeded: this station's blobs may be at most 1 bytes", "hết hạn mức"),
    ("the payload key does not open the sealed payload", "Khoá dữ liệu của trạm"),
    ("central_restored: restored", "khôi phục từ bản sao lưu"),
    ("something nobody foresaw", "Chưa gửi được; máy sẽ tự thử lại"),
])
def test_a_waiting_dossier_s_reason_is_said_in_words(stored, words):
    said = sync_words.explain(stored, "pending", "vi")
    assert words in said and not RAW.search(said) and stored not in said
    assert sync_words.explain(stored, "pending", "en") != said


def test_an_unknown_refusal_gets_general_words_never_the_raw_text():
    said = sync_words.explain("Thiếu chữ ký số", "rejected", "vi")
    assert said == i18n.say("refusal_unknown", "vi") and "Thiếu" not in said
    assert sync_words.explain(None) == sync_words.explain("") == ""


# --- a counter station, a refusal from the central, its correction -------------------------------------

def _counter(tmp_path, **extra):
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")},
                      **extra})
    conn = connect(app.config["DATABASE"])
    try:
        for name in ("minh", "lan"):
            staff.add(conn, name, name.title(), "agent", PIN)
    finally:
        conn.close()
    return app


def _login(app, username="minh"):
    client = app.test_client()
    page = client.get("/agent/login")
    assert client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": username,
                                             "secret": PIN}).status_code == 303
    return client


def _finish(client, proc, **overrides):
    """The counter's finish page posted as it stands (what it starts from), with ``overrides``."""
    page = client.get(f"/agent/p/{proc.slug}/finish")
    assert page.status_code == 200, page.text[:500]
    form = {"csrf_token": csrf_token(page.text), "consent": "yes",
            "fee": re.search(r'name="fee" [^>]*value="(\d*)"', page.text).group(1),
            "delivery": "post" if 'value="post" checked' in page.text else "counter",
            "address": re.search(r'<textarea[^>]*name="address"[^>]*>([^<]*)<', page.text).group(1),
            "documents": re.findall(r'name="documents" value="([^"]+)" checked', page.text)}
    form.update(overrides)
    response = client.post(f"/agent/p/{proc.slug}/finish", data=form)
    assert response.status_code == 303, re.sub(r"\s+", " ", response.text)[:2000]
    return response.headers["Location"]


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


def _refuse_at_the_central(app, tmp_path, code: str) -> str:
    """The reference central refuses the dossier (signed by another station than the one it names:
    ``station_mismatch``), and the station records the refusal as the worker and the USB import do.
    Returns the stored reason."""
    conn = connect(app.config["DATABASE"])
    try:
        row = dossiers.find_by_tracking_code(conn, code)
        body = canonical_json(dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], row["submission_id"]))
        status, envelope = open_central(tmp_path / "central").receive("BD02", row["submission_id"], body)
        refusal = envelope["document"]
        assert status == 422 and refusal["code"] == "station_mismatch"
        reason = f"{refusal['code']}: {refusal['reason']}"
        assert record_rejection(conn, row["submission_id"], refusal["code"], reason)
        return reason
    finally:
        conn.close()


def test_a_refusal_is_counted_explained_and_closed_by_one_correction(tmp_path, catalog):
    app = _counter(tmp_path)
    client = _login(app)
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    address = "Số 5 ngõ 12 phố Huế, Hà Nội"
    old = _finish(client, proc, delivery="post", address=address, documents=["giay-to-tuy-than"]).rsplit("/", 1)[1]
    reason = _refuse_at_the_central(app, tmp_path, old)

    # The staff bar counts it, links to the queue, and no longer says everything was sent.
    home = client.get("/agent/").text
    assert 'data-refused="1"' in home and "1 hồ sơ bị trung tâm từ chối — cần sửa và nộp lại" in home
    assert 'href="/agent/rejected"' in home and "Mọi hồ sơ đã được gửi đi" not in home
    # The queue and the dossier say why in words, with what to do, never the code or the English reason.
    queue = client.get("/agent/rejected").text
    assert f'data-refused-dossier="{old}"' in queue and "Hồ sơ mang mã trạm khác với trạm đã gửi nó" in queue
    assert "station_mismatch" not in queue and reason.split(": ", 1)[1] not in queue
    assert f'action="/agent/d/{old}/correct"' in queue
    page = client.get(f"/agent/d/{old}").text
    assert "Bị từ chối, cần xử lý — " in page and "kiểm tra mã trạm trong tệp cấu hình" in page
    assert "station_mismatch" not in page
    english = _login(app, "lan")
    english.get("/lang/en")
    assert "Have the technician check the station id" in english.get(f"/agent/d/{old}").text

    # The correction starts from the counter's delivery and the originals ticked for the old one.
    started = client.post(f"/agent/d/{old}/correct", data={"csrf_token": csrf_token(page)})
    assert started.headers["Location"].endswith(f"/p/{proc.slug}/check")
    finish = client.get(f"/agent/p/{proc.slug}/finish").text
    assert 'value="post" checked' in finish and f">{address}</textarea>" in finish
    assert re.search(r'id="doc-giay-to-tuy-than" name="documents" value="giay-to-tuy-than" checked', finish)
    # Starting it again (another press, another tab) resumes the same draft instead of making a second.
    with client.session_transaction() as session:
        first_draft = session["draft"]["id"]
    again = client.post(f"/agent/d/{old}/correct", data={"csrf_token": csrf_token(page)})
    assert again.headers["Location"].endswith(f"/p/{proc.slug}/check")
    with client.session_transaction() as session:
        assert session["draft"]["id"] == first_draft
    assert _rows(app, "SELECT count(*) FROM drafts WHERE supersedes IS NOT NULL")[0][0] == 1

    new = _finish(client, proc).rsplit("/", 1)[1]
    assert new != old
    # The refusal is closed, its history kept: still refused in the outbox with its reason, the dossier
    # 'replaced', and the event on record.
    [closed] = _rows(app, "SELECT d.status, o.state, o.last_error FROM dossiers d JOIN outbox o USING "
                          "(submission_id) WHERE d.tracking_code = ?", old)
    assert tuple(closed) == ("replaced", "rejected", reason)
    assert _rows(app, "SELECT count(*) FROM audit_events WHERE action = 'dossier.replaced'")[0][0] == 1
    conn = connect(app.config["DATABASE"])
    try:
        sid = dossiers.find_by_tracking_code(conn, new)["submission_id"]
        document = dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], sid)
    finally:
        conn.close()
    assert document["counter"]["delivery"] == {"method": "post", "address": address}
    shown = next(d["vi"] for d in proc.documents if d["id"] == "giay-to-tuy-than")
    assert shown in document["counter"]["documents_checked"]
    home = client.get("/agent/").text
    assert "data-refused=" not in home
    queue = client.get("/agent/rejected").text
    assert f'data-refused-dossier="{old}"' not in queue and "Không có hồ sơ bị từ chối" in queue
    assert f'data-closed="{old}"' in queue and f"Đã sửa bằng hồ sơ {new}" in queue

    # The old code's pages point to the new one: the citizen's tracking page and the staff's.
    track = app.test_client().get(f"/track/{old}").text
    assert f'data-replaced-by="{new}"' in track and "Đã được thay bằng hồ sơ khác" in track
    page = client.get(f"/agent/d/{old}").text
    assert f'href="/agent/d/{new}"' in page and f'data-newest="{new}"' in page
    assert f"Đã sửa bằng hồ sơ {new}" in page
    assert f'action="/agent/d/{old}/correct"' not in page  # one correction per dossier: no second offered

    # Asked anyway (an old form): no draft, sent to the newest with why.
    before = _rows(app, "SELECT count(*) FROM drafts")[0][0]
    refused = client.post(f"/agent/d/{old}/correct", data={"csrf_token": csrf_token(page)})
    assert refused.status_code == 303 and refused.headers["Location"].endswith(f"/agent/d/{new}")
    told = client.get(refused.headers["Location"]).text
    assert f"Hồ sơ {old} đã được sửa, hồ sơ mới nhất là {new}" in told
    assert _rows(app, "SELECT count(*) FROM drafts")[0][0] == before


def test_the_core_refuses_a_second_dossier_superseding_the_same_one(tmp_path, catalog):
    app = _counter(tmp_path)
    client = _login(app)
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    old = _finish(client, proc, documents=["giay-to-tuy-than"]).rsplit("/", 1)[1]
    page = client.get(f"/agent/d/{old}").text
    client.post(f"/agent/d/{old}/correct", data={"csrf_token": csrf_token(page)})
    # A second correction under way elsewhere (another counter's session, made before this rule, or a
    # replayed form): a draft of its own.
    conn = connect(app.config["DATABASE"])
    try:
        old_id = dossiers.find_by_tracking_code(conn, old)["submission_id"]
        answers = dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], old_id)["answers"]
        not_held = dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], old_id).get("documents_not_applicable", [])
        other_draft = drafts.create(conn, app.config["PAYLOAD_KEY"], proc.slug, proc.version,
                                    {**answers, drafts.SUPERSEDES_KEY: old_id, documents.NOT_APPLICABLE_KEY: not_held})
    finally:
        conn.close()
    new = _finish(client, proc).rsplit("/", 1)[1]

    other = _login(app, "lan")
    with other.session_transaction() as session:
        session["draft"] = {"id": other_draft, "slug": proc.slug}
    page = other.get(f"/agent/p/{proc.slug}/finish")
    response = other.post(f"/agent/p/{proc.slug}/finish", data={
        "csrf_token": csrf_token(page.text), "consent": "yes", "delivery": "counter", "fee": "0",
        "documents": ["giay-to-tuy-than"]})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/agent/d/{new}")
    assert f"hồ sơ mới nhất là {new}" in other.get(response.headers["Location"]).text
    assert _rows(app, "SELECT count(*) FROM dossiers WHERE supersedes = ?", old_id)[0][0] == 1
    assert _rows(app, "SELECT count(*) FROM drafts WHERE id = ?", other_draft)[0][0] == 0

    conn = connect(app.config["DATABASE"])
    try:
        with pytest.raises(dossiers.AlreadyReplaced) as raised:
            dossiers.submit(conn, key=app.config["PAYLOAD_KEY"], station=app.config["STATION"]["station"],
                            channel="counter", procedure=proc, answers=answers, supersedes=old_id)
        assert raised.value.newest == new
        # Below the function too: the database refuses a second dossier naming the same one.
        row = dict(dossiers.find_by_tracking_code(conn, new))
        with pytest.raises(sqlite3.IntegrityError, match="already superseded"), \
                sqlite3.connect(app.config["DATABASE"]) as raw:
            raw.execute("INSERT INTO dossiers (submission_id, tracking_code, station_id, channel, procedure_code, "
                         "procedure_slug, procedure_version, submitted_at, payload_sha256, supersedes, local_day) "
                         "VALUES ('x', 'BD01-000000-9999-X', 'BD01', 'counter', ?, ?, ?, ?, 'h', ?, ?)",
                         (row["procedure_code"], row["procedure_slug"], row["procedure_version"],
                          row["submitted_at"], old_id, row["local_day"]))
        # A refusal for a dossier already corrected sends nothing again: the correction carries it on.
        assert dossiers.reissue_with_new_code(conn, app.config["PAYLOAD_KEY"], old_id) is None
        assert dossiers.count(conn) == 2
        assert conn.execute("SELECT status FROM dossiers WHERE submission_id = ?", (old_id,)).fetchone()[0] == \
            "replaced"
    finally:
        conn.close()


def test_no_staff_page_shows_an_exception_name(tmp_path):
    """A dossier that waits because the central cannot be reached (the real worker, a port nobody listens
    on), one refused for a reason sync does not know: every staff page says them in words."""
    config = make_station(tmp_path / "station", f"http://127.0.0.1:{unused_port()}", station_id="K01",
                          sync={"timeout": 2, "base_delay": 0.01, "max_delay": 0.02})
    waiting, refused = submit_many(config, 2)
    enrol(open_central(tmp_path / "central"), config)
    worker = worker_from_config(config)
    try:
        record_rejection(worker.conn, refused, "quota", "OSError: [Errno 28] No space left on device")
        worker.cycle()
        [(stored,)] = worker.conn.execute("SELECT last_error FROM outbox WHERE submission_id = ?",
                                          (waiting,)).fetchall()
        codes = dict(worker.conn.execute("SELECT submission_id, tracking_code FROM dossiers").fetchall())
    finally:
        worker.close()
    assert RAW.search(stored)  # what sync keeps, for `kiosk sync status`: the exception as it was

    app = create_app({"station": {"kind": "counter", "id": "K01"}}, station_file=config["source"])
    conn = connect(app.config["DATABASE"])
    try:
        staff.add(conn, "minh", "Minh", "agent", PIN)
    finally:
        conn.close()
    client = _login(app)
    pages = {path: client.get(path) for path in (
        "/agent/", "/agent/rejected", "/agent/report", f"/agent/d/{codes[waiting]}", f"/agent/d/{codes[refused]}",
        f"/agent/search?q={codes[waiting]}")}
    for path, page in pages.items():
        assert page.status_code == 200, path
        assert not RAW.search(page.text), (path, RAW.search(page.text).group(0))
    assert "Chưa kết nối được trung tâm; máy sẽ tự gửi lại." in pages[f"/agent/d/{codes[waiting]}"].text
    assert "Trung tâm từ chối hồ sơ vì một lý do trạm chưa biết" in pages["/agent/rejected"].text


# --- no printer, no word of printing ---------------------------------------------------------------------

def test_a_station_without_a_printer_never_says_it_prints(tmp_path, catalog):
    app = _counter(tmp_path)  # no printer configured, none found: printing is off
    assert not app.extensions["receipts"].enabled
    client = _login(app)
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    location = _finish(client, proc, documents=["giay-to-tuy-than"])
    code = location.rsplit("/", 1)[1]
    page = client.get(location).text
    printing_words = re.compile(r"đang in|in lại|lệnh in|printing|reprint", re.IGNORECASE)
    assert "Trạm này không có máy in" in page and not printing_words.search(page), printing_words.search(page)
    assert f'action="/agent/d/{code}/reprint"' not in page
    assert f'href="/agent/d/{code}/receipt.png" download=' in page and "Tải giấy tiếp nhận" in page
    # An old form posted anyway: nothing is said to print.
    told = client.post(f"/agent/d/{code}/reprint", data={"csrf_token": csrf_token(page)}, follow_redirects=True)
    assert "Trạm này không có máy in" in told.text and "Đã gửi lệnh in lại" not in told.text
    # The citizen's confirmation at a kiosk without a printer: the receipt on screen, no printing.
    kiosk = create_app({"station": {"kind": "kiosk", "id": "K09"}, "paths": {"data": str(tmp_path / "kiosk")}})
    citizen = kiosk.test_client()
    answer_all(citizen, catalog["dang-ky-khai-tu"])
    done = citizen.get(submit(citizen, catalog["dang-ky-khai-tu"]).headers["Location"]).text
    assert "Đây là giấy tiếp nhận hồ sơ của bạn" in done and not re.search(r"Đang in|in lại|máy in", done)


def test_the_finish_page_starts_from_the_counter_s_record_only_for_a_correction(tmp_path, catalog):
    app = _counter(tmp_path)
    client = _login(app)
    proc = catalog["xac-nhan-tinh-trang-hon-nhan"]
    answer_all(client, proc)
    fresh = client.get(f"/agent/p/{proc.slug}/finish").text  # a new application: nothing ticked, at the counter
    assert 'value="counter" checked' in fresh and not re.search(r'name="documents" value="[^"]+" checked', fresh)
    code = _finish(client, proc, delivery="counter", documents=["giay-to-tuy-than"],
                   fee=str(fees.fee_for(proc, {}, "counter").amount_vnd)).rsplit("/", 1)[1]
    page = client.get(f"/agent/d/{code}").text
    client.post(f"/agent/d/{code}/correct", data={"csrf_token": csrf_token(page)})
    again = client.get(f"/agent/p/{proc.slug}/finish").text
    assert 'value="counter" checked' in again
    assert re.search(r'name="documents" value="giay-to-tuy-than" checked', again)


def test_a_database_with_two_corrections_of_one_dossier_still_migrates(tmp_path):
    """Made before the rule: both corrections stay; from the migration on, a third is refused."""
    import sqlite_utils

    from kiosk.core.db import migrate
    from kiosk.core.migrations import migrations

    path = tmp_path / "station.db"
    conn = connect(path)
    try:
        migrations.apply(sqlite_utils.Database(conn), stop_before="m014_one_correction_each")
        conn.commit()
    finally:
        conn.close()

    def add(raw, sid, supersedes=None):
        raw.execute("INSERT INTO dossiers (submission_id, tracking_code, station_id, channel, procedure_code, "
                    "procedure_slug, procedure_version, submitted_at, payload_sha256, supersedes) "
                    "VALUES (?, ?, 'K01', 'counter', '1.000001', 'thu', '1', '2026-01-01T00:00:00', 'h', ?)",
                    (sid, f"K01-260101-000{sid}-X", supersedes))

    with sqlite3.connect(path) as raw:
        for sid, supersedes in (("1", None), ("2", "1"), ("3", "1")):
            add(raw, sid, supersedes)
    migrate(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM dossiers WHERE supersedes = '1'").fetchone()[0] == 2
        with pytest.raises(sqlite3.IntegrityError, match="already superseded"):
            add(raw, "4", "1")
        add(raw, "5", "2")  # the newest of the line may still be corrected
