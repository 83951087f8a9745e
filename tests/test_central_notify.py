"""The central tells citizens of status changes, only with their consent: a real SMTP server (aiosmtpd) in
the test receives exactly one email per change; a fake HTTP SMS gateway receives the text; a down SMTP
server loses nothing; nothing names the citizen."""
import email
import email.policy
import http.server
import json
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller

from kiosk.core import dossiers
from kiosk.core.catalog import Procedure
from kiosk.core.db import connect
from kiosk.core.sealing import load_or_create_key
from sync import notify
from sync.central import create_central_app
from sync.central_cli import notify_settings
from sync.keys import load_or_create_signing_key, public_b64
from sync.worker import station_paths, worker_from_config
from tests.support.harness import CentralThread, enrol, make_station

NAME, ID_NUMBER, PHONE, EMAIL = "Trần Thị Mai", "001190012345", "0912345678", "mai.tran@example.vn"


class Inbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content, policy=email.policy.default)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


class FakeSmsGateway:
    """A fake SMS gateway: an HTTP server that keeps what it is POSTed (and the token it came with)."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers.get("Authorization"), json.loads(body)))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sms_gateway():
    gateway = FakeSmsGateway()
    yield gateway
    gateway.stop()




@pytest.fixture
def database(central_database):
    """SQLite, then PostgreSQL (tests/conftest.py's ``central_database``)."""
    return central_database


def _central(tmp_path, database=None, **config):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central"), "DATABASE": database, "NOTIFY_INTERVAL": 0,
                              **config})
    central = app.extensions["dvc_central"]
    central.store.enrol("K01", public_b64(load_or_create_signing_key(tmp_path / "k01.ed25519")))
    return app, central


def _receive(central, notify_object=None, code="K01-261128-0042-7"):
    """One dossier received from K01, its document carrying ``notify_object``; returns the submission id."""
    sid = str(uuid.uuid4())
    document = {"submission_id": sid, "tracking_code": code, "station_id": "K01", "channel": "kiosk",
                "procedure": {"code": "1.004884", "slug": "x", "version": "1"}, "submitted_at": "2026-11-28T10:00:00+07:00",
                "answers": {"full_name": NAME, "id_number": ID_NUMBER, "phone": PHONE, "email": EMAIL}}
    if notify_object is not None:
        document["notify"] = notify_object
    status, _answer = central.receive("K01", sid, dossiers.canonical_json(document))
    assert status == 201
    return sid


CONSENT = {"email": EMAIL, "sms": PHONE, "consent": True}


def test_one_email_per_status_change_with_the_right_words(tmp_path, smtp, database):
    app, central = _central(tmp_path, database, NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port,
                            NOTIFY_EMAIL_FROM="thong-bao@dvc.example.vn")
    sender = app.extensions["central_notifications"]
    sid = _receive(central, CONSENT)
    assert sender.send_due()["sent"] == 1
    for status in ("processing", "needs_documents", "done", "returned_by_post"):
        assert central.store.set_status(sid, status, "staff")
    assert central.store.set_status(sid, "returned_by_post", "staff") is False  # no change, nothing to tell
    assert sender.send_due()["sent"] == 4
    assert sender.send_due()["sent"] == 0  # sent once: a later pass sends nothing again
    assert len(smtp.messages) == 5
    subjects = [message["Subject"] for _to, message in smtp.messages]
    assert subjects == [f"Hồ sơ K01-261128-0042-7: {notify.STATUS_WORDS[s]['vi']}" for s in
                        ("received", "processing", "needs_documents", "done", "returned_by_post")]
    to, done = smtp.messages[3]
    assert to == [EMAIL] and done["From"] == "thong-bao@dvc.example.vn"
    body = done.get_content()
    assert "K01-261128-0042-7" in body and "Đã có kết quả" in body and "đã đồng ý nhận thông báo" in body
    for _to, message in smtp.messages:  # nothing of the citizen but the address it went to
        text = message.as_string() + message.get_content()
        assert NAME not in text and ID_NUMBER not in text and PHONE not in text
        assert "Nguyễn" not in text and "Trần" not in text
    assert {row["state"] for row in central.store.notifications(sid)} == {"sent"}


def test_no_consent_no_message(tmp_path, smtp, sms_gateway):
    app, central = _central(tmp_path, NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port,
                            NOTIFY_SMS_URL=sms_gateway.url)
    sender = app.extensions["central_notifications"]
    without = [
        _receive(central, None, "K01-261128-0001-X"),                                   # no notify object
        _receive(central, {"email": EMAIL, "sms": PHONE}, "K01-261128-0002-X"),         # no consent
        _receive(central, {"email": EMAIL, "sms": PHONE, "consent": "yes"}, "K01-261128-0003-X"),  # not true
        _receive(central, {"email": EMAIL, "sms": PHONE, "consent": False}, "K01-261128-0004-X"),
    ]
    for sid in without:
        central.store.set_status(sid, "done", "staff")
    assert sender.send_due() == {"sent": 0, "retried": 0, "failed": 0, "dropped": 0}
    assert smtp.messages == [] and sms_gateway.received == []
    assert all(central.store.notifications(sid) == [] for sid in without)


def test_a_down_smtp_server_loses_nothing_and_sends_once_when_back(tmp_path, database):
    port = _free_port()  # nothing listens there yet
    app, central = _central(tmp_path, database, NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=port, NOTIFY_RETRY_BASE=60)
    sender = app.extensions["central_notifications"]
    sid = _receive(central, CONSENT)
    central.store.set_status(sid, "done", "staff")
    assert sender.send_due()["retried"] == 1  # "received" failed; "done" waits behind it, never before it
    rows = central.store.notifications(sid)
    assert [r["state"] for r in rows] == ["pending", "pending"] and [r["attempts"] for r in rows] == [1, 0]
    assert "ConnectionRefusedError" in rows[0]["last_error"]
    assert sender.send_due()["retried"] == 0  # not due yet: backing off
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        later = datetime.now(timezone.utc) + timedelta(minutes=2)
        assert sender.send_due(now=later)["sent"] == 2
        assert sender.send_due(now=later + timedelta(hours=1))["sent"] == 0
    finally:
        controller.stop()
    assert [m["Subject"].rsplit(": ", 1)[1] for _to, m in inbox.messages] == ["Cơ quan đã nhận hồ sơ", "Đã có kết quả"]


def test_the_background_sender_sends_soon_after_a_change(tmp_path, smtp):
    app, central = _central(tmp_path, NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port, NOTIFY_INTERVAL=30)
    try:
        sid = _receive(central, CONSENT)
        central.store.set_status(sid, "processing", "staff")
        deadline = time.monotonic() + 10
        while len(smtp.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # woken by the change, long before its 30 s interval
        assert len(smtp.messages) == 2
    finally:
        app.extensions["central_notifications"].stop()


def test_the_fake_sms_gateway_receives_a_short_text(tmp_path, sms_gateway):
    app, central = _central(tmp_path, NOTIFY_SMS_URL=sms_gateway.url, NOTIFY_SMS_TOKEN="bi-mat")
    sender = app.extensions["central_notifications"]
    sid = _receive(central, CONSENT)
    central.store.set_status(sid, "needs_documents", "staff")
    assert sender.send_due()["sent"] == 2
    assert len(sms_gateway.received) == 2
    token, last = sms_gateway.received[1]
    assert token == "Bearer bi-mat" and last["to"] == "+84912345678"
    assert last["text"].startswith("DVC: Ho so K01-261128-0042-7: Can bo sung giay to")
    for _token, sent in sms_gateway.received:
        assert notify.sms_units(sent["text"])[0] == "gsm7" and notify.fits_one_sms(sent["text"])
        assert "Mai" not in sent["text"] and ID_NUMBER not in sent["text"]
    # No email channel configured: the consented email address is not queued.
    assert {r["channel"] for r in central.store.notifications(sid)} == {"sms"}


def test_sms_texts_fit_one_message_for_every_status():
    longest = "ABCDEF-261128-ZZZ99999-X"
    for status in notify.STATUS_WORDS:
        text = notify.sms_text(longest, status)
        coding, units = notify.sms_units(text)
        assert coding == "gsm7" and units <= 160, (status, units)
    assert notify.sms_units("Đã có kết quả") == ("ucs2", 13)
    assert notify.fits_one_sms("x" * 160) and not notify.fits_one_sms("x" * 161)
    assert not notify.fits_one_sms("ạ" * 71) and notify.fits_one_sms("ạ" * 70)
    assert notify.without_tone_marks("Đã có kết quả") == "Da co ket qua"


def test_consent_is_explicit():
    assert notify.consented_contacts({"notify": CONSENT}) == {"email": EMAIL, "sms": "+84912345678"}
    assert notify.consented_contacts({"notify": {**CONSENT, "consent": 1}}) == {}
    assert notify.consented_contacts({"notify": {**CONSENT, "email": "not an address", "sms": "12"}}) == {}
    assert notify.consented_contacts({"notify": "yes"}) == {} and notify.consented_contacts({}) == {}


def test_a_dossier_is_found_by_its_tracking_code_as_typed(tmp_path, database):
    """The store's side of tracking at any station, on both dialects (an expression index there)."""
    _app, central = _central(tmp_path, database)
    sid = _receive(central, None, "K01-261128-A0042-X")
    found = central.store.tracked("k01261128a0042x")
    assert found["central_code"] == central.store.submission(sid)["central_code"]
    assert found["station_id"] == "K01" and found["status"] == "received" and "document" not in found
    assert central.store.tracked("K01-261128-A0043-X") is None


def test_the_address_goes_with_the_document(tmp_path, smtp):
    """Retention drops the document, and with it the only copy of the address: what was still queued is
    dropped, not sent, and nothing is queued after."""
    app, central = _central(tmp_path, NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port,
                            RETENTION_DAYS=0, RESTORE_WINDOW=0)
    sender = app.extensions["central_notifications"]
    sid = _receive(central, CONSENT)
    central.store.set_status(sid, "processing", "staff")
    assert central.purge(now=datetime.now(timezone.utc) + timedelta(seconds=5)) == 1
    assert [r["state"] for r in central.store.notifications(sid)] == ["dropped", "dropped"]
    central.store.set_status(sid, "done", "staff")
    assert sender.send_due()["sent"] == 0 and smtp.messages == []
    assert len(central.store.notifications(sid)) == 2
    # The queue never held the address, in any row.
    assert EMAIL not in json.dumps(central.store.notifications()) and "0912345678" not in json.dumps(
        central.store.notifications())


# --- the station side: the consent question becomes the document's notify object -------------------------

PROCEDURE = Procedure(
    slug="thong-bao-thu", code="1.004884", version="2026.1", category="ho-tich",
    name={"vi": "Thủ tục thử", "en": "Test procedure"}, summary={"vi": "", "en": ""},
    agency={"vi": "UBND", "en": "People's Committee"}, processing_days=1, documents=[],
    pages=[{"id": "p", "fields": [
        {"name": "full_name", "type": "text", "label": {"vi": "Họ và tên", "en": "Name"}},
        {"name": "relative_phone", "type": "phone", "label": {"vi": "SĐT người thân", "en": "Relative's phone"}},
        {"name": "applicant_phone", "type": "phone", "label": {"vi": "SĐT", "en": "Phone"}},
        {"name": "applicant_email", "type": "email", "label": {"vi": "Email", "en": "Email"}},
        {"name": "notify_consent", "type": "choice", "label": {"vi": "Nhận thông báo?", "en": "Get updates?"},
         "options": [{"value": "yes", "vi": "Có", "en": "Yes"}, {"value": "no", "vi": "Không", "en": "No"}]},
    ]}])


def test_notify_object_from_the_answers():
    answers = {"full_name": NAME, "relative_phone": "0987654321", "applicant_phone": PHONE,
               "applicant_email": EMAIL, "notify_consent": "yes"}
    assert dossiers.notify_contacts(PROCEDURE, answers) == {"email": EMAIL, "sms": PHONE, "consent": True}
    assert dossiers.notify_contacts(PROCEDURE, {**answers, "notify_consent": "no"}) is None
    assert dossiers.notify_contacts(PROCEDURE, {k: v for k, v in answers.items() if k != "notify_consent"}) is None
    no_question = Procedure(**{**PROCEDURE.__dict__, "pages": [{"id": "p", "fields": PROCEDURE.pages[0]["fields"][:4]}]})
    assert dossiers.notify_contacts(no_question, answers) is None  # no consent question asked: nothing


def test_from_the_station_to_the_citizens_inbox(tmp_path, smtp):
    with CentralThread(tmp_path / "central", NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port,
                       NOTIFY_INTERVAL=0) as central:
        config = make_station(tmp_path / "station", central.url, sync={"timeout": 5})
        enrol(central.central, config)
        paths = station_paths(config)
        conn = connect(paths["database"])
        submitted = dossiers.submit(conn, key=load_or_create_key(paths["payload_key"]), station=config["station"],
                                    channel="kiosk", procedure=PROCEDURE,
                                    answers={"full_name": NAME, "applicant_phone": PHONE, "applicant_email": EMAIL,
                                             "notify_consent": "yes"})
        conn.close()
        worker = worker_from_config(config)
        assert worker.run(until_empty=True, max_seconds=20)["acked"] == 1
        worker.close()
        central.central.store.set_status(submitted.submission_id, "done", "staff")
        assert central.app.extensions["central_notifications"].send_due()["sent"] == 2
    assert [m["Subject"] for _to, m in smtp.messages] == [
        f"Hồ sơ {submitted.tracking_code}: Cơ quan đã nhận hồ sơ", f"Hồ sơ {submitted.tracking_code}: Đã có kết quả"]
    assert all(NAME not in m.get_content() for _to, m in smtp.messages)


def test_the_serve_command_takes_the_channels_from_the_environment(tmp_path, smtp):
    """`kiosk central serve` reads the channels from DVC_CENTRAL_NOTIFY_* (no password on a command line)."""
    settings = notify_settings({"DVC_CENTRAL_NOTIFY_SMTP_HOST": "127.0.0.1",
                                "DVC_CENTRAL_NOTIFY_SMTP_PORT": str(smtp.port),
                                "DVC_CENTRAL_NOTIFY_SMTP_STARTTLS": "no", "DVC_CENTRAL_NOTIFY_SMS_URL": "",
                                "DVC_CENTRAL_SOMETHING_ELSE": "x"})
    assert settings == {"NOTIFY_SMTP_HOST": "127.0.0.1", "NOTIFY_SMTP_PORT": str(smtp.port)}
    assert notify_settings({"DVC_CENTRAL_NOTIFY_SMTP_STARTTLS": "true"}) == {"NOTIFY_SMTP_STARTTLS": True}
    app, central = _central(tmp_path, **settings)
    _receive(central, CONSENT)
    assert app.extensions["central_notifications"].send_due()["sent"] == 1 and len(smtp.messages) == 1


def test_every_shipped_procedure_asks_before_it_notifies(catalog):
    """Each procedure of the catalog asks the consent question after the applicant's phone (and email): yes
    puts the applicant's own contacts in the dossier's ``notify``; no, or no answer, puts nothing."""
    from kiosk.core.answers import read_field
    from tests.support.samples import form_for_page

    for proc in catalog.values():
        assert any(f["name"] == dossiers.NOTIFY_CONSENT for f in proc.fields()), proc.slug
        answers = {}
        for page in proc.pages:
            form = form_for_page(page)
            answers.update({f["name"]: read_field(f, form).value for f in page["fields"]})
        phones = [f["name"] for f in proc.fields() if f["type"] == "phone"]
        answers[dossiers.NOTIFY_CONSENT] = "co"
        notify_object = dossiers.notify_contacts(proc, answers)
        assert notify_object["consent"] is True and notify_object["sms"] == answers[phones[0]], proc.slug
        answers[dossiers.NOTIFY_CONSENT] = "khong"
        assert dossiers.notify_contacts(proc, answers) is None
