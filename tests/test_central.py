"""The reference central: enrolment and signed requests, idempotent submissions, the feed, blobs, staff."""
import hashlib
import itertools
import json
import os
import re
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.core import tracking_code
from sync import protocol
from sync.central import create_central_app
from sync.keys import public_b64

from .conftest import postgres_admin


@pytest.fixture
def central_app(tmp_path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central"), "TESTING": True})
    return app


@pytest.fixture
def central(central_app):
    return central_app.extensions["dvc_central"]


@pytest.fixture
def station_key(central):
    key = Ed25519PrivateKey.generate()
    central.store.enrol("K01", public_b64(key), "Bưu điện Bến Thành")
    return key


_codes = itertools.count(1)


def document(submission_id=None, station_id="K01", **changes):
    """A dossier document; each has its own tracking code, as a station makes them."""
    doc = {"submission_id": submission_id or str(uuid.uuid4()),
           "tracking_code": tracking_code.make(station_id, "261128", next(_codes)),
           "station_id": station_id, "channel": "counter",
           "procedure": {"code": "1.004884", "slug": "trich-luc", "version": "1"},
           "submitted_at": "2026-11-28T03:00:00+00:00", "answers": {"full_name": "Nguyễn Văn A"},
           "supersedes": None}
    doc.update(changes)
    return doc


def signed(client, key, method, path, body=b"", station_id="K01", now=None, headers=None):
    all_headers = {**protocol.sign_request(key, station_id, method, path, body, now), **(headers or {})}
    return client.open(path, method=method, data=body, headers=all_headers)


def put(client, key, doc, body=None):
    body = protocol.canonical_json(doc) if body is None else body
    return signed(client, key, "PUT", f"/api/v1/submissions/{doc['submission_id']}", body)


def test_first_receipt_is_201_and_the_same_again_is_200_with_the_same_signed_ack(central_app, central, station_key):
    client = central_app.test_client()
    doc = document()
    first = put(client, station_key, doc)
    assert first.status_code == 201
    ack = protocol.open_document(central.signing_key.public_key(), first.data, protocol.ACK)
    assert ack["submission_id"] == doc["submission_id"]
    assert ack["payload_sha256"] == hashlib.sha256(protocol.canonical_json(doc)).hexdigest()
    assert re.fullmatch(r"000\.00\.00\.H00-\d{6}-\d{5}", ack["central_code"])
    again = put(client, station_key, doc)
    assert again.status_code == 200
    assert again.data == first.data  # literally the same acknowledgement
    assert central.store.count() == 1


def test_same_id_with_other_content_is_a_signed_409(central_app, central, station_key):
    client = central_app.test_client()
    doc = document()
    assert put(client, station_key, doc).status_code == 201
    other = put(client, station_key, {**doc, "answers": {"full_name": "Trần Thị B"}})
    assert other.status_code == 409
    refusal = protocol.open_document(central.signing_key.public_key(), other.data, protocol.REJECT)
    assert refusal["code"] == "conflict"
    assert central.store.count() == 1


def test_official_codes_are_unique_and_sequential(central_app, central, station_key):
    client = central_app.test_client()
    codes = [json.loads(put(client, station_key, document()).data)["document"]["central_code"] for _ in range(5)]
    assert len(set(codes)) == 5
    assert [int(c.rsplit("-", 1)[1]) for c in codes] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("change, code", [
    ({"procedure": {"code": "not-a-code", "slug": "x", "version": "1"}}, "bad_procedure_code"),
    ({"station_id": "K02"}, "station_mismatch"),
    ({"answers": "text"}, "bad_answers"),
])
def test_business_rules_are_signed_422_refusals(central_app, central, station_key, change, code):
    resp = put(central_app.test_client(), station_key, document(**change))
    assert resp.status_code == 422
    assert protocol.open_document(central.signing_key.public_key(), resp.data, protocol.REJECT)["code"] == code
    assert central.store.count() == 0


def test_a_body_that_is_not_canonical_json_is_refused(central_app, station_key):
    doc = document()
    resp = put(central_app.test_client(), station_key, doc, json.dumps(doc, indent=2).encode())
    assert resp.status_code == 422
    assert json.loads(resp.data)["document"]["code"] == "not_canonical"


def test_unknown_revoked_and_badly_signed_requests_are_refused(central_app, central, station_key):
    client = central_app.test_client()
    doc = document()
    body = protocol.canonical_json(doc)
    path = f"/api/v1/submissions/{doc['submission_id']}"
    stranger = Ed25519PrivateKey.generate()
    assert signed(client, stranger, "PUT", path, body, station_id="K99").status_code == 403
    assert json.loads(signed(client, stranger, "PUT", path, body).data)["error"] == "bad_signature"
    stale = signed(client, station_key, "PUT", path, body, now=time.time() - 3600)
    assert (stale.status_code, json.loads(stale.data)["error"]) == (401, "stale_timestamp")
    # A body changed on the way (the signature covers its hash).
    headers = protocol.sign_request(station_key, "K01", "PUT", path, body)
    tampered = client.put(path, data=body.replace(b"Nguy", b"Ngux"), headers=headers)
    assert (tampered.status_code, json.loads(tampered.data)["error"]) == (401, "bad_body_hash")
    # Another path than the one signed.
    headers = protocol.sign_request(station_key, "K01", "PUT", path, body)
    assert client.put(f"/api/v1/submissions/{uuid.uuid4()}", data=body, headers=headers).status_code == 401
    central.store.revoke("K01")
    revoked = signed(client, station_key, "PUT", path, body)
    assert (revoked.status_code, json.loads(revoked.data)["error"]) == (403, "revoked_station")
    assert central.store.count() == 0


def test_changes_feed_is_signed_ordered_and_resumable(central_app, central, station_key):
    client = central_app.test_client()
    docs = [document() for _ in range(3)]
    for doc in docs:
        put(client, station_key, doc)
    central.store.set_status(docs[1]["submission_id"], "processing", "staff")
    central.store.set_status(docs[1]["submission_id"], "done", "staff")
    resp = signed(client, station_key, "GET", "/api/v1/stations/K01/changes?since=0&limit=2")
    feed = protocol.open_document(central.signing_key.public_key(), resp.data, protocol.CHANGES)
    assert [c["seq"] for c in feed["changes"]] == [1, 2] and feed["more"] and feed["cursor"] == 2
    rest = protocol.open_document(central.signing_key.public_key(), signed(
        client, station_key, "GET", "/api/v1/stations/K01/changes?since=2").data, protocol.CHANGES)
    assert [(c["seq"], c["status"]) for c in rest["changes"]] == [(3, "received"), (4, "processing"), (5, "done")]
    assert not rest["more"]
    other = Ed25519PrivateKey.generate()
    central.store.enrol("K02", public_b64(other))
    assert signed(client, other, "GET", "/api/v1/stations/K01/changes?since=0", station_id="K02").status_code == 403


def test_blobs_resume_from_where_the_central_stopped(central_app, central, station_key):
    client = central_app.test_client()
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    path = f"/api/v1/blobs/{sha}"
    head = signed(client, station_key, "HEAD", path)
    assert head.status_code == 404 and head.headers["Upload-Offset"] == "0"
    first = signed(client, station_key, "PUT", path, data[:100_000],
                   headers={"Content-Range": f"bytes 0-99999/{len(data)}"})
    assert first.status_code == 202
    assert signed(client, station_key, "HEAD", path).headers["Upload-Offset"] == "100000"
    wrong = signed(client, station_key, "PUT", path, data[50_000:60_000],
                   headers={"Content-Range": f"bytes 50000-59999/{len(data)}"})
    assert wrong.status_code == 409 and json.loads(wrong.data)["offset"] == 100_000
    last = signed(client, station_key, "PUT", path, data[100_000:],
                  headers={"Content-Range": f"bytes 100000-{len(data) - 1}/{len(data)}"})
    assert last.status_code == 201
    assert signed(client, station_key, "HEAD", path).status_code == 200
    assert central.blobs.read(sha) == data


def test_a_blob_whose_bytes_do_not_match_its_name_is_discarded(central_app, central, station_key):
    client = central_app.test_client()
    sha = hashlib.sha256(b"expected").hexdigest()
    resp = signed(client, station_key, "PUT", f"/api/v1/blobs/{sha}", b"tampered",
                  headers={"Content-Range": "bytes 0-7/8"})
    assert resp.status_code == 422
    assert not central.blobs.exists(sha) and central.blobs.offset(sha) == 0


def test_a_submission_naming_a_missing_blob_waits_for_it(central_app, central, station_key):
    client = central_app.test_client()
    data = b"scan of a birth certificate"
    sha = hashlib.sha256(data).hexdigest()
    doc = document(attachments=[{"sha256": sha, "name": "giay-khai-sinh.pdf"}])
    assert put(client, station_key, doc).status_code == 428
    signed(client, station_key, "PUT", f"/api/v1/blobs/{sha}", data,
           headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
    assert put(client, station_key, doc).status_code == 201


def logged_in(app, username="lan", password="mật-khẩu-cán-bộ"):
    """A test client logged in to the staff page with a new account (the page has no other way in)."""
    central = app.extensions["dvc_central"]
    if central.store.staff_account(username) is None:
        central.add_staff(username, password)
    client = app.test_client()
    form = client.get("/staff/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    resp = client.post("/staff/login", data={"username": username, "password": password, "csrf_token": token})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    return client


def test_staff_page_moves_a_dossier_through_its_states_in_vietnamese(central_app, central, station_key):
    client = logged_in(central_app)
    doc = document()
    put(client, station_key, doc)
    page = client.get("/staff/").get_data(as_text=True)
    assert "Đã tiếp nhận" in page and "Cần bổ sung giấy tờ" in page and doc["tracking_code"] in page
    assert "Nguyễn Văn A" not in page  # the list shows codes, not personal data
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post(f"/staff/{doc['submission_id']}/status", data={"status": "needs_documents",
                                                                       "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/")
    assert central.store.submission(doc["submission_id"])["status"] == "needs_documents"
    assert client.post(f"/staff/{doc['submission_id']}/status", data={"status": "done"}).status_code == 400
    assert "Cần bổ sung giấy tờ" in client.get("/staff/?status=needs_documents").get_data(as_text=True)


def test_a_single_staff_password_is_no_longer_taken(tmp_path):
    # Staff log in with their own accounts (tests/test_central_security.py); the old shared password is refused.
    with pytest.raises(ValueError, match="kiosk central staff add"):
        create_central_app({"DATA_DIR": str(tmp_path), "STAFF_PASSWORD": "mật-khẩu"})


@pytest.fixture
def empty_postgres(postgres_server):
    """The URL of a PostgreSQL database without the central's tables (see conftest.postgres_server)."""
    conn = postgres_admin(postgres_server)
    with conn:
        for table in ("changes", "submissions", "code_sequence", "stations", "store_meta", "schema_migrations",
                      "central_staff", "notifications", "received_rating_answers", "received_ratings",
                      "station_health", "station_health_history", "station_alerts"):
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    return postgres_server


def test_postgresql_store_behaves_like_sqlite(tmp_path, empty_postgres):
    url = empty_postgres
    app = create_central_app({"DATA_DIR": str(tmp_path), "DATABASE": url})
    central = app.extensions["dvc_central"]
    key = Ed25519PrivateKey.generate()
    central.store.enrol("K01", public_b64(key))
    client = app.test_client()
    doc = document()
    first = put(client, key, doc)
    assert first.status_code == 201
    assert put(client, key, doc).data == first.data
    assert put(client, key, {**doc, "answers": {}}).status_code == 409
    central.store.set_status(doc["submission_id"], "processing", "staff")
    assert [c["status"] for c in central.store.changes("K01", 0)] == ["received", "processing"]
    assert central.store.count() == 1


def _race(store, n_threads=8):
    """n threads receive the same new submission at once: exactly one first receipt, one code."""
    import threading

    sid, results, barrier = str(uuid.uuid4()), [], threading.Barrier(n_threads)
    code = tracking_code.make("K01", "261128", next(_codes))

    def receive():
        barrier.wait(timeout=10)
        results.append(store.receive("K01", sid, "ab" * 32, "{}", code, "1.004884"))

    threads = [threading.Thread(target=receive) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == n_threads
    assert sum(r.created for r in results) == 1
    assert len({r.central_code for r in results}) == 1
    assert [c["submission_id"] for c in store.changes("K01", 0)].count(sid) == 1


def test_concurrent_first_receipts_of_one_submission_make_one_record(central, station_key):
    _race(central.store)
    assert central.store.count() == 1


def test_postgresql_concurrent_first_receipts_make_one_record(tmp_path, empty_postgres):
    url = empty_postgres
    central = create_central_app({"DATA_DIR": str(tmp_path), "DATABASE": url}).extensions["dvc_central"]
    central.store.enrol("K01", public_b64(Ed25519PrivateKey.generate()))
    for _ in range(5):
        _race(central.store)
    assert central.store.count() == 5
