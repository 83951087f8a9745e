"""Untrusted bytes (issue 13): blobs bounded in size, per-station quota, ownership and expiry; JSON bounded in
depth and size wherever the central or the station reads it; USB bundles and ack files checked item by item.
The central is spoken to over HTTP (the reference central under waitress, signed requests)."""
import base64
import gzip
import hashlib
import http.server
import json
import os
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.core import tracking_code
from kiosk.core.db import connect
from sync import protocol
from sync.bundle import BundleError, apply_ack_file, import_bundle, open_bundle, seal_bundle
from sync.central import open_central
from sync.central_cli import central as central_group
from sync.client import BlobRefused, CentralClient, LinkError
from sync.keys import load_central_keys, public_b64
from sync.sync_cli import sync as sync_group
from sync.worker import station_paths
from tests.support.harness import CentralThread, submit_many

from .test_sync_bundle import setup  # noqa: F401 (the fixture)

DEEP = b"[" * 100_000 + b"]" * 100_000


def station(central, station_id: str) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    central.store.enrol(station_id, public_b64(key))
    return key


def client_for(server: CentralThread, station_id: str, key) -> CentralClient:
    return CentralClient(server.url, station_id, key, server.central.signing_key.public_key(), timeout=10)


def put_chunk(client: CentralClient, data: bytes, start: int, chunk: bytes, total: int | None = None):
    sha = hashlib.sha256(data).hexdigest()
    total = len(data) if total is None else total
    return client.request("PUT", f"/api/v1/blobs/{sha}", chunk,
                          {"Content-Type": "application/octet-stream",
                           "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}"})


def body(resp) -> dict:
    return json.loads(resp.body)


def partial_files(data_dir) -> list:
    return sorted(p for p in (data_dir / "blob-store" / "partial").rglob("*") if p.is_file())


# -- 1. blobs -------------------------------------------------------------------------------------------------

def test_a_declared_total_of_10_to_the_15_is_refused_before_a_byte_is_kept(tmp_path):
    with CentralThread(tmp_path / "central") as server:
        key = station(server.central, "K01")
        client = client_for(server, "K01", key)
        sha = hashlib.sha256(b"x").hexdigest()
        resp = client.request("PUT", f"/api/v1/blobs/{sha}", b"0123456789",
                              {"Content-Range": f"bytes 0-9/{10 ** 15}"})
        assert resp.status == 413
        answer = body(resp)
        assert answer["error"] == "blob_too_large" and answer["max_bytes"] == 25 << 20
        signed = protocol.open_document(server.central.signing_key.public_key(), resp.body, protocol.BLOB_REFUSAL)
        assert (signed["code"], signed["sha256"], signed["station_id"]) == ("blob_too_large", sha, "K01")
        assert partial_files(tmp_path / "central") == []
        assert client.request("HEAD", f"/api/v1/blobs/{sha}").headers["upload-offset"] == "0"
        # A number of more digits than any size is a malformed range, not a 500.
        assert client.request("PUT", f"/api/v1/blobs/{sha}", b"0", {"Content-Range": "bytes 0-0/" + "9" * 5000}
                              ).status == 400
        client.close()


def test_the_station_client_understands_a_refused_blob(tmp_path):
    with CentralThread(tmp_path / "central", BLOB_MAX_BYTES=100_000) as server:
        client = client_for(server, "K01", station(server.central, "K01"))
        with pytest.raises(BlobRefused) as refused:
            client.upload_blob(os.urandom(100_001), chunk_size=64 * 1024)
        assert refused.value.code == "blob_too_large" and isinstance(refused.value, LinkError)
        assert refused.value.document["max_bytes"] == 100_000
        data = os.urandom(100_000)
        assert client.upload_blob(data, chunk_size=64 * 1024) == hashlib.sha256(data).hexdigest()
        client.close()


def test_a_stations_blobs_and_unfinished_uploads_stay_within_its_quota(tmp_path):
    with CentralThread(tmp_path / "central", BLOB_QUOTA_BYTES=500_000) as server:
        k01 = client_for(server, "K01", station(server.central, "K01"))
        k02 = client_for(server, "K02", station(server.central, "K02"))
        first, second, third = os.urandom(200_000), os.urandom(200_000), os.urandom(200_000)
        assert k01.upload_blob(first, chunk_size=64 * 1024)
        # An unfinished upload counts at the total it declared, so it cannot grow past the quota later.
        assert put_chunk(k01, second, 0, second[:1000]).status == 202
        assert server.central.blobs.usage("K01") == 400_000
        refused = put_chunk(k01, third, 0, third[:1000])
        assert refused.status == 413 and body(refused)["error"] == "blob_quota_exceeded"
        assert body(refused)["quota_bytes"] == 500_000 and body(refused)["used_bytes"] == 400_000
        with pytest.raises(BlobRefused) as over:
            k01.upload_blob(third, chunk_size=64 * 1024)
        assert over.value.code == "blob_quota_exceeded"
        assert not server.central.blobs.exists(hashlib.sha256(third).hexdigest())
        # Another station has its own quota.
        assert k02.upload_blob(third, chunk_size=64 * 1024) == hashlib.sha256(third).hexdigest()
        # Finishing the upload that was started within the quota is still allowed.
        assert k01.upload_blob(second, chunk_size=64 * 1024) == hashlib.sha256(second).hexdigest()
        k01.close()
        k02.close()


@contextmanager
def two_stations(tmp_path):
    """A central and two enrolled stations' clients: (server, K01's client, K02's client)."""
    with CentralThread(tmp_path / "central") as server:
        k01 = client_for(server, "K01", station(server.central, "K01"))
        k02 = client_for(server, "K02", station(server.central, "K02"))
        try:
            yield server, k01, k02
        finally:
            k01.close()
            k02.close()


def test_too_many_unfinished_uploads_at_once_are_refused(tmp_path):
    with CentralThread(tmp_path / "central", BLOB_MAX_UPLOADS=2) as server:
        k01 = client_for(server, "K01", station(server.central, "K01"))
        blobs = [os.urandom(10_000) for _ in range(3)]
        assert put_chunk(k01, blobs[0], 0, blobs[0][:100]).status == 202
        assert put_chunk(k01, blobs[1], 0, blobs[1][:100]).status == 202
        refused = put_chunk(k01, blobs[2], 0, blobs[2][:100])
        assert refused.status == 413 and body(refused)["error"] == "too_many_uploads"
        k01.close()


def test_an_upload_belongs_to_the_station_that_started_it(tmp_path):
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    with two_stations(tmp_path) as (server, k01, k02):
        assert put_chunk(k01, data, 0, data[:100_000]).status == 202
        # K02 sees nothing of K01's upload ...
        assert k02.request("HEAD", f"/api/v1/blobs/{sha}").headers["upload-offset"] == "0"
        # ... cannot append to it ...
        appended = put_chunk(k02, data, 100_000, data[100_000:200_000])
        assert appended.status == 409 and body(appended)["offset"] == 0
        # ... nor complete it (even with the right bytes).
        completed = put_chunk(k02, data, 100_000, data[100_000:])
        assert completed.status == 409 and body(completed)["offset"] == 0
        assert server.central.blobs.offset(sha, "K01") == 100_000
        assert not server.central.blobs.exists(sha)
        # K01 goes on where it was; the blob is K01's.
        assert put_chunk(k01, data, 100_000, data[100_000:]).status == 201
        assert server.central.blobs.read(sha) == data
        assert server.central.blobs.owners(sha) == ["K01"]
        # Shared (content-addressed): K02 finds it there and sends nothing, and owns nothing for it ...
        assert k02.upload_blob(data) == sha
        assert server.central.blobs.owners(sha) == ["K01"] and server.central.blobs.usage("K02") == 0
        # ... a station that uploads it too owns it as well: counted in full against each one's quota.
        assert put_chunk(k02, data, 0, data[:1000]).status == 200
        assert server.central.blobs.owners(sha) == ["K01", "K02"]
        assert server.central.blobs.usage("K01") == server.central.blobs.usage("K02") == len(data)


def test_two_stations_uploading_the_same_blob_at_once_each_use_their_own_upload(tmp_path):
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    with two_stations(tmp_path) as (server, k01, k02):
        assert put_chunk(k01, data, 0, data[:50_000]).status == 202
        assert put_chunk(k02, data, 0, data[:80_000]).status == 202
        assert put_chunk(k02, data, 80_000, data[80_000:]).status == 201
        # K01's next chunk finds the blob complete: done, and its own unfinished upload is dropped.
        assert put_chunk(k01, data, 50_000, data[50_000:100_000]).status == 200
        assert partial_files(tmp_path / "central") == []
        assert server.central.blobs.owners(sha) == ["K01", "K02"]


def test_unfinished_uploads_expire_and_are_swept_at_start_and_while_serving(tmp_path):
    data_dir = tmp_path / "central"
    data = os.urandom(100_000)
    sha = hashlib.sha256(data).hexdigest()
    with CentralThread(data_dir) as server:
        k01 = station(server.central, "K01")
        k02 = station(server.central, "K02")
        client = client_for(server, "K01", k01)
        assert put_chunk(client, data, 0, data[:40_000]).status == 202
        client.close()
    (upload,) = partial_files(data_dir)
    assert upload.parent.name == "K01"  # the owner is kept in the blob folder
    two_days_ago = time.time() - 49 * 3600
    os.utime(upload, (two_days_ago, two_days_ago))
    with CentralThread(data_dir) as server:  # swept at start
        assert partial_files(data_dir) == []
        client = client_for(server, "K01", k01)
        assert client.request("HEAD", f"/api/v1/blobs/{sha}").headers["upload-offset"] == "0"
        client.close()
    # While serving: a configured age, and a sweep run by another station's request.
    with CentralThread(data_dir, BLOB_PARTIAL_TTL=3600, BLOB_SWEEP_INTERVAL=0) as server:
        client = client_for(server, "K01", k01)
        assert put_chunk(client, data, 0, data[:40_000]).status == 202
        client.close()
        (upload,) = partial_files(data_dir)
        os.utime(upload, (time.time() - 7200, time.time() - 7200))
        other = client_for(server, "K02", k02)
        assert other.request("HEAD", f"/api/v1/blobs/{'0' * 64}").status == 404
        other.close()
        assert partial_files(data_dir) == []
    # An upload still being added to within the age is kept.
    blobs = open_central(data_dir).blobs
    blobs.configure(partial_ttl=3600)
    assert blobs.append("K01", sha, 0, data[:1000], len(data)) == "partial"
    assert blobs.sweep() == 0 and blobs.offset(sha, "K01") == 1000


# -- 2. JSON depth and size -----------------------------------------------------------------------------------

def test_deep_json_is_400_on_every_endpoint_that_takes_json(tmp_path):
    with CentralThread(tmp_path / "central") as server:
        client = client_for(server, "K01", station(server.central, "K01"))
        for body_ in (DEEP, b'{"items": ' + DEEP + b"}"):
            resp = client.request("POST", "/api/v1/submissions/batch", body_)
            assert resp.status == 400 and body(resp)["error"] == "bad_json", resp.body[:200]
            assert "nested deeper than 64" in body(resp)["message"]
        resp = client.request("POST", "/api/v1/submissions/batch", gzip.compress(DEEP),
                              {"Content-Encoding": "gzip"})
        assert resp.status == 400 and "nested deeper than 64" in body(resp)["message"]
        resp = client.request("POST", "/api/v1/stations/K01/holds", b'{"submission_ids": ' + DEEP + b"}")
        assert resp.status == 400 and body(resp)["error"] == "bad_json"
        assert "nested deeper than 64" in body(resp)["message"]
        # Exactly at the limit is parsed (and then refused for what it is, not for its depth).
        at_limit = b'{"submission_ids": ' + b"[" * 63 + b"]" * 63 + b"}"
        resp = client.request("POST", "/api/v1/stations/K01/holds", at_limit)
        assert resp.status == 400 and body(resp)["error"] == "bad_holds"
        client.close()


def test_a_deep_submission_body_is_the_centrals_signed_refusal_never_a_500(tmp_path):
    """A dossier body is refused the documented way (422 + signed refusal, which the station quarantines
    instead of sending it again forever), in a PUT and in a batch item alike."""
    with CentralThread(tmp_path / "central") as server:
        client = client_for(server, "K01", station(server.central, "K01"))
        sid = str(uuid.uuid4())
        resp = client.request("PUT", f"/api/v1/submissions/{sid}", DEEP)
        assert resp.status == 422
        refusal = protocol.open_document(server.central.signing_key.public_key(), resp.body, protocol.REJECT)
        assert refusal["code"] == "too_deep" and "nested deeper than 64" in refusal["reason"]
        outcome = client.classify(resp, sid, protocol.sha256_hex(DEEP))
        assert outcome.kind == "rejected" and outcome.reason.startswith("too_deep")
        batch = json.dumps({"items": [{"submission_id": sid, "body": DEEP.decode()}]}).encode()
        resp = client.request("POST", "/api/v1/submissions/batch", gzip.compress(batch),
                              {"Content-Encoding": "gzip"})
        assert resp.status == 200
        (result,) = body(resp)["results"]
        assert result["status"] == 422 and result["answer"]["document"]["code"] == "too_deep"
        # A lone surrogate has no canonical form: refused, not a 500.
        resp = client.request("PUT", f"/api/v1/submissions/{sid}", b'{"a":"\\ud800"}')
        assert resp.status == 422
        resp = client.request("POST", "/api/v1/submissions/batch",
                              b'{"items": [{"submission_id": "\\ud800", "body": "{}"}]}')
        assert resp.status == 400 and body(resp)["error"] == "bad_batch"
        client.close()


def test_a_deep_prior_acknowledgement_header_is_ignored(tmp_path):
    with CentralThread(tmp_path / "central") as server:
        client = client_for(server, "K01", station(server.central, "K01"))
        doc = _document("K01")
        deep = base64.b64encode(b"[" * 3000 + b"]" * 3000).decode()
        resp = client.request("PUT", f"/api/v1/submissions/{doc['submission_id']}", protocol.canonical_json(doc),
                              {protocol.H_PRIOR_ACK: deep})
        assert resp.status == 201
        client.close()


class _DeepAnswers(http.server.BaseHTTPRequestHandler):
    """Not the central: answers every request with JSON nested 100,000 deep (a HEAD with 404, as for a blob
    it does not have, so an upload goes on to its PUT)."""

    status = 200
    payload = DEEP

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(404 if self.command == "HEAD" else self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.payload)

    do_GET = do_PUT = do_POST = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [200, 202, 409, 413])
def test_deep_json_answers_are_not_the_centrals_at_the_station(status):
    handler = type("Handler", (_DeepAnswers,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        central_key = Ed25519PrivateKey.generate().public_key()
        client = CentralClient(f"http://127.0.0.1:{server.server_port}", "K01", Ed25519PrivateKey.generate(),
                               central_key, timeout=5)
        sid = str(uuid.uuid4())
        assert client.put_submission(sid, b"{}", "00" * 32).kind == "transient"
        outcome = client.post_batch([(sid, b"{}", "00" * 32, None)])
        assert (outcome.kind if not isinstance(outcome, list) else outcome[0].kind) == "transient"
        for ask in (lambda: client.changes(0), lambda: client.holds([sid])):
            with pytest.raises((LinkError, protocol.NotGenuine)):
                ask()
        if status != 200:  # (a 200 to a blob PUT means the central has it: blob answers are not signed)
            with pytest.raises(LinkError) as cut:
                client.upload_blob(b"scan")  # 202/409 without an offset; 413 that is not the central's refusal
            assert not isinstance(cut.value, BlobRefused)
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(protocol.NotGenuine):
        protocol.open_document(central_key, DEEP, protocol.ACK)


@pytest.mark.parametrize("results", [[{"submission_id": "SID", "status": [201]}], [{"submission_id": "SID"}],
                                     [{"submission_id": ["SID"]}], {"SID": 1}, [["SID"]], "SID"])
def test_a_batch_answer_of_the_wrong_shape_is_transient(results):
    sid = str(uuid.uuid4())
    payload = json.dumps({"results": results}).replace("SID", sid).encode()
    handler = type("Handler", (_DeepAnswers,), {"payload": payload})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = CentralClient(f"http://127.0.0.1:{server.server_port}", "K01", Ed25519PrivateKey.generate(),
                               Ed25519PrivateKey.generate().public_key(), timeout=5)
        outcome = client.post_batch([(sid, b"{}", "00" * 32, None)])
        assert (outcome.kind if not isinstance(outcome, list) else outcome[0].kind) == "transient"
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_bounded_parser_refuses_depth_and_size_and_never_recurses():
    assert protocol.parse_json(b"[" * 64 + b"]" * 64) is not None
    for deep in (b"[" * 65 + b"]" * 65, b'{"a":' * 65 + b"1" + b"}" * 65, DEEP, b"[" * 100_000,
                 b'[{"a":' * 40 + b"1" + b"}]" * 40):
        with pytest.raises(protocol.TooDeep):
            protocol.parse_json(deep)
    # Brackets inside strings are not nesting; an unterminated string costs one pass.
    assert protocol.parse_json(b'["' + b"[" * 1000 + b'"]') == ["[" * 1000]
    with pytest.raises(protocol.BadJSON):
        protocol.parse_json(b'"' + b'\\"' * 100_000)
    with pytest.raises(protocol.TooLarge):
        protocol.parse_json(b"[1]", limit=2)
    with pytest.raises(protocol.BadJSON):
        protocol.parse_json("[\u2200]".encode("utf-16-le"))  # UTF-8 only


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(value=json_values, limit=st.integers(0, 8))
def test_the_depth_limit_is_exactly_the_parsers_depth(value, limit):
    text = json.dumps(value, ensure_ascii=False)
    if _depth(value) > limit:
        with pytest.raises(protocol.TooDeep):
            protocol.parse_json(text, max_depth=limit)
    else:
        assert protocol.parse_json(text, max_depth=limit) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text(alphabet='[]{}"\\,:01a \ud800', max_size=300).map(
    lambda t: t.encode("utf-8", "surrogatepass")))
def test_the_bounded_parser_raises_only_its_own_errors(data):
    try:
        protocol.parse_json(data, max_depth=4)
    except protocol.BadJSON:
        pass


# -- 3. bundles and ack files ---------------------------------------------------------------------------------

_codes = iter(range(1, 10 ** 6))


def _document(station_id: str, **changes) -> dict:
    doc = {"submission_id": str(uuid.uuid4()), "station_id": station_id, "channel": "counter",
           "tracking_code": tracking_code.make(station_id, "261128", next(_codes)),
           "procedure": {"code": "1.004884", "slug": "trich-luc", "version": "1"},
           "submitted_at": "2026-11-28T03:00:00+00:00", "answers": {"full_name": "Nguyễn Văn A"}}
    doc.update(changes)
    return doc


@pytest.fixture
def usb(setup, tmp_path):
    """An enrolled station with its keys, and the central's data folder, through the commands
    (tests/test_sync_bundle.py's setup), with the keys a test needs to seal bundles of its own."""
    central, central_dir, config, runner = setup
    from sync.keys import load_or_create_signing_key

    station_key = load_or_create_signing_key(station_paths(config)["station_key"])
    return {"central": central, "central_dir": central_dir, "config": config, "runner": runner,
            "station_key": station_key, "bundle_key": load_central_keys(tmp_path / "central-keys.json")[1],
            "tmp": tmp_path}


def _seal(usb, contents, dossiers=None) -> bytes:
    if dossiers is None:
        items = contents.get("items") if isinstance(contents, dict) else None
        dossiers = len(items) if isinstance(items, list) else 0
    if not isinstance(contents, bytes):
        contents = json.dumps(contents).encode()  # (ASCII escapes: a lone surrogate can be sent too)
    return seal_bundle(contents, station_id="K01", station_key=usb["station_key"],
                       central_bundle_key=usb["bundle_key"], dossiers=dossiers)[1]


def _import(usb, data: bytes):
    path = usb["tmp"] / f"{uuid.uuid4()}.dvcbundle"
    path.write_bytes(data)
    return usb["runner"].invoke(central_group, ["import", "--data", str(usb["central_dir"]), str(path)])


def _clear_refusal(result, *words):
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a ClickException, no traceback
    assert "Traceback" not in result.output and result.output.startswith("Error: ")
    for word in words:
        assert word in result.output, result.output


GOOD = str(uuid.uuid4())


def _nested(depth: int) -> list:
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("items, words", [
    ([{"submission_id": 5, "body": "{}"}], ["item 0", "items[0].submission_id must be a string"]),
    ([{"submission_id": "K01-1", "body": "{}"}], ["item 0", "must be a UUID"]),
    ([{"submission_id": GOOD, "body": "{}"}, {"submission_id": GOOD, "body": 7}],
     [f"item 1 (submission {GOOD})", "items[1].body must be a string"]),
    ([{"submission_id": GOOD}], ["item 0", "has no body"]),
    (["not an object"], ["item 0", "items[0] must be an object"]),
    ([{"submission_id": GOOD, "body": "{\"a\": \"\ud800\"}"}], ["item 0", "not UTF-8 text"]),
    ([{"submission_id": GOOD, "body": "x" * ((4 << 20) + 1)}], ["item 0", "must be a dossier's canonical JSON"]),
])
def test_a_bundle_with_a_malformed_item_is_refused_whole_naming_the_item(usb, items, words):
    result = _import(usb, _seal(usb, {"items": items}))
    _clear_refusal(result, "refused whole", *words)
    assert usb["central"].store.count() == 0


@pytest.mark.parametrize("contents, dossiers, words", [
    ({"items": "many"}, 0, ["items must be a list"]),
    ({"dossiers": []}, 0, ["has no items"]),
    ([1, 2], 0, ["must be an object"]),
    ({"items": []}, 3, ["says 3 dossiers but it holds 0"]),
    ({"items": [_nested(100)]}, 1, ["nested deeper than 64"]),
    (b"not json at all", 0, ["not JSON"]),
])
def test_a_bundle_whose_dossiers_are_not_a_list_of_items_is_refused(usb, contents, dossiers, words):
    _clear_refusal(_import(usb, _seal(usb, contents, dossiers)), *words)


def test_a_malformed_bundle_file_is_refused_naming_the_field(usb):
    good = json.loads(_seal(usb, {"items": []}))
    cases = [
        (DEEP, "nested deeper than 64"),
        (b"\xff\xfe", "not UTF-8"),
        (json.dumps({**good, "header": {**good["header"], "station_id": ["K01"]}}).encode(),
         "header.station_id must be a string"),
        (json.dumps({**good, "header": {**good["header"], "nonce": "AAAA"}}).encode(),
         "header.nonce must be 12 bytes in base64"),
        (json.dumps({**good, "header": {**good["header"], "dossiers": True}}).encode(),
         "header.dossiers must be a whole number"),
        (json.dumps({**good, "signature": 5}).encode(), "signature must be a string"),
        (json.dumps({k: v for k, v in good.items() if k != "ciphertext"}).encode(), "has no ciphertext"),
        (json.dumps({**good, "ciphertext": "!!"}).encode(), "not base64"),
    ]
    for data, words in cases:
        _clear_refusal(_import(usb, data), words)


def test_a_malformed_dossier_inside_a_good_item_gets_a_signed_refusal_not_a_traceback(usb):
    docs = [_document("K01", tracking_code=None), _document("K01", procedure={"code": 1.004884}),
            _document("K01", channel=["kiosk"]), _document("K01")]
    items = [{"submission_id": d["submission_id"], "body": protocol.canonical_json(d).decode()} for d in docs]
    result = _import(usb, _seal(usb, {"items": items}))
    assert result.exit_code == 0 and "1 new" in result.output and "3 refused" in result.output, result.output


def _ack_file(usb, n: int = 2) -> tuple[dict, list[str]]:
    ids = submit_many(usb["config"], n)
    out = usb["runner"].invoke(sync_group, ["--station", usb["config"]["source"], "export", str(usb["tmp"] / "stick")])
    assert out.exit_code == 0, out.output
    bundle = next((usb["tmp"] / "stick").glob("*.dvcbundle"))
    ack_file, counts = import_bundle(usb["central"], bundle.read_bytes())
    assert counts["created"] == n
    return ack_file, ids


def _apply_with_cli(usb, data: bytes):
    path = usb["tmp"] / f"{uuid.uuid4()}.acks.json"
    path.write_bytes(data)
    return usb["runner"].invoke(sync_group, ["--station", usb["config"]["source"], "import-acks", str(path)])


def test_a_malformed_ack_file_is_refused_naming_the_entry(usb):
    ack_file, ids = _ack_file(usb)
    first = ack_file["acks"][0]
    sid = first["document"]["submission_id"]
    cases = [
        ({**ack_file, "acks": 5}, ["acks must be a list"]),
        ({**ack_file, "acks": [first, "x"]}, ["acks entry 1", "acks[1] must be an object"]),
        ({**ack_file, "acks": [first, {"signature": first["signature"]}]}, ["acks entry 1", "has no document"]),
        ({**ack_file, "acks": [{**first, "document": {**first["document"], "payload_sha256": "ab"}}]},
         [f"acks entry 0 (submission {sid})", "payload_sha256 must be a sha256"]),
        ({**ack_file, "acks": [{**first, "signature": None}]}, ["acks entry 0", "signature must be a string"]),
        ({**ack_file, "rejections": {"a": 1}}, ["rejections must be a list"]),
        ({k: v for k, v in ack_file.items() if k != "acks"}, ["has no acks"]),
        ({**ack_file, "station_id": "K02"}, ["for station 'K02'", "nothing applied"]),
    ]
    for bad, words in cases:
        _clear_refusal(_apply_with_cli(usb, json.dumps(bad).encode()), *words)
    _clear_refusal(_apply_with_cli(usb, b'{"format": "dvc-acks/1", "acks": ' + DEEP + b"}"), "nested deeper than 64")
    _clear_refusal(_apply_with_cli(usb, b"\x00\xff"), "not an ack file")
    conn = connect(station_paths(usb["config"])["database"])
    assert dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()) == {"pending": 2}
    conn.close()
    # The same file, well formed, applies.
    applied = _apply_with_cli(usb, json.dumps(ack_file).encode())
    assert applied.exit_code == 0 and json.loads(applied.output)["acknowledged"] == 2


# -- hypothesis: the bundle reader and the ack file reader raise nothing but BundleError -------------------------

uuids = st.uuids().map(str)
texts = st.text(max_size=20)


def _documents():
    base = st.builds(lambda: _document("K01"))
    fields = st.sampled_from(["submission_id", "tracking_code", "station_id", "channel", "procedure",
                              "submitted_at", "answers", "attachments", "supersedes"])
    return st.tuples(base, st.lists(st.tuples(fields, json_values | uuids | texts), max_size=3),
                     st.lists(fields, max_size=2)).map(
        lambda t: {k: v for k, v in {**t[0], **dict(t[1])}.items() if k not in t[2]})


def _document_item(d: dict) -> dict:
    sid = d.get("submission_id")
    return {"submission_id": sid if isinstance(sid, str) and len(sid) == 36 else str(uuid.uuid4()),
            "body": json.dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"))}


def _item():
    loose = st.fixed_dictionaries({"submission_id": uuids | json_values, "body": texts | json_values},
                                  optional={"extra": json_values})
    return _documents().map(_document_item) | loose | json_values


_contents = st.one_of(
    # Well-formed items whose dossiers are anything: through the central's receive rule, as online.
    st.fixed_dictionaries({"items": st.lists(_documents().map(_document_item), max_size=4)}),
    st.fixed_dictionaries({"items": st.lists(_item(), max_size=4)}),
    st.fixed_dictionaries({"items": json_values}),
    json_values,
    st.integers(1, 300).map(lambda d: {"items": json.loads("[" * d + "]" * d)}),
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def test_fuzzed_bundles_raise_nothing_but_bundle_error(usb):
    @FUZZ
    @given(contents=_contents, dossiers=st.none() | st.integers(-2, 6))
    def check(contents, dossiers):
        try:
            data = _seal(usb, contents, dossiers if dossiers is None or dossiers >= 0 else None)
            import_bundle(usb["central"], data)
        except BundleError:
            pass

    check()


def test_fuzzed_bundle_files_raise_nothing_but_bundle_error(usb):
    good = json.loads(_seal(usb, {"items": []}))
    parts = st.fixed_dictionaries({}, optional={"header": st.fixed_dictionaries(
        {}, optional={k: st.just(v) | json_values | texts for k, v in good["header"].items()}) | json_values,
        "ciphertext": json_values | st.just(good["ciphertext"]), "signature": json_values | st.just(good["signature"])})

    @FUZZ
    @given(value=parts | json_values, raw=st.binary(max_size=64))
    def check(value, raw):
        for data in (json.dumps(value).encode(), raw):
            try:
                open_bundle(usb["central"], data)
            except BundleError:
                pass

    check()


def test_fuzzed_ack_files_raise_nothing_but_bundle_error(usb):
    ack_file, _ids = _ack_file(usb, 1)
    envelope = ack_file["acks"][0]
    envelopes = st.one_of(json_values, st.just(envelope), st.fixed_dictionaries(
        {}, optional={"document": st.just(envelope["document"]) | json_values
                      | st.fixed_dictionaries({}, optional={k: json_values | uuids for k in envelope["document"]}),
                      "signature": st.just(envelope["signature"]) | json_values}))
    files = st.fixed_dictionaries({}, optional={
        "format": st.just("dvc-acks/1") | json_values, "station_id": st.just("K01") | json_values,
        "bundle_id": uuids | json_values, "acks": st.lists(envelopes, max_size=3) | json_values,
        "rejections": st.lists(envelopes, max_size=3) | json_values})
    conn = connect(station_paths(usb["config"])["database"])
    signing, _ = load_central_keys(station_paths(usb["config"])["central_keys"])

    @FUZZ
    @given(value=files | json_values)
    def check(value):
        try:
            apply_ack_file(conn, json.dumps(value).encode(), station_id="K01", central_signing_key=signing)
        except BundleError:
            pass

    try:
        check()
    finally:
        conn.close()
