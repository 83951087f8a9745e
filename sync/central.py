"""The reference central server: enrolment, signed requests, idempotent submissions, blobs, a status feed
and a small staff page. For tests, demos and pilots; a province plugs its own system in behind the same
protocol (see docs/sync.md).

    app = create_central_app({"DATA_DIR": "var/central"})        # SQLite in the data folder
    app = create_central_app({"DATA_DIR": "...", "DATABASE": "postgresql://..."})
"""
import base64
import binascii
import gzip
import hmac
import json
import zlib
from datetime import datetime
import re
import secrets
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template_string, request, url_for
from flask_wtf.csrf import CSRFProtect

from . import protocol
from .central_store import BlobStore, CentralStore, Conflict, Prior, Receipt, TrackingCodeTaken, now_iso, open_store
from .keys import central_keys_document, ed25519_public, load_or_create_bundle_key, load_or_create_signing_key

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
PROCEDURE_CODE = re.compile(r"^\d\.\d{6}$")
MAX_CHUNK = 4 << 20
RESTORE_WINDOW_S = 7 * 86400  # the oldest backup this central's operators may restore (docs/sync.md)
MAX_HOLDS = 500               # submission ids per holds question


class Central:
    """The central's state and its one rule for receiving a submission, shared by HTTP and USB import."""

    def __init__(self, data_dir: Path, store: CentralStore, max_skew: int = protocol.MAX_CLOCK_SKEW_S,
                 restore_window: int = RESTORE_WINDOW_S):
        self.data_dir = Path(data_dir)
        self.store = store
        self.restore_window = restore_window
        self.blobs = BlobStore(self.data_dir / "blob-store")
        self.signing_key = load_or_create_signing_key(self.data_dir / "central.ed25519")
        self.bundle_key = load_or_create_bundle_key(self.data_dir / "central.x25519")
        self.max_skew = max_skew

    def public_keys(self) -> dict:
        return central_keys_document(self.signing_key, self.bundle_key)

    def sign(self, document: dict) -> dict:
        return protocol.sign_document(self.signing_key, document)

    def ack(self, receipt: Receipt) -> dict:
        # Built only from what is stored, so asking again gives the same bytes (Ed25519 is deterministic)
        # as long as the store is not restored; the store's identity tells a station when it was.
        return self.sign({"type": protocol.ACK, "submission_id": receipt.submission_id,
                          "station_id": receipt.station_id, "payload_sha256": receipt.payload_sha256,
                          "central_code": receipt.central_code, "received_at": receipt.received_at,
                          "store": self.store.identity()})

    def prior(self, station_id: str, submission_id: str, payload_sha256: str, envelope) -> Prior | None:
        """The code and time an earlier acknowledgement of ours gave this very submission, or None when the
        envelope is missing, not ours, or about something else."""
        if not envelope:
            return None
        try:
            doc = protocol.open_document(self.signing_key.public_key(), envelope, protocol.ACK)
        except (protocol.NotGenuine, KeyError, ValueError, TypeError):
            return None
        if (doc.get("submission_id"), doc.get("station_id"), doc.get("payload_sha256")) != (
                submission_id, station_id, payload_sha256):
            return None
        if not isinstance(doc.get("central_code"), str) or not isinstance(doc.get("received_at"), str):
            return None
        return Prior(doc["central_code"], doc["received_at"])

    def reject(self, station_id: str, submission_id: str, payload_sha256: str, code: str, reason: str) -> dict:
        return self.sign({"type": protocol.REJECT, "submission_id": submission_id, "station_id": station_id,
                          "payload_sha256": payload_sha256, "code": code, "reason": reason})

    def receive(self, station_id: str, submission_id: str, body: bytes, prior_ack=None) -> tuple[int, dict]:
        """(HTTP status, signed answer) for one submission body: 201 first receipt, 200 the same again,
        409 same id with other content (code ``conflict``) or a tracking code the station already used for
        another dossier (``tracking_code_taken``), 422 a business rule refused, 428 named blobs not
        uploaded yet. ``prior_ack`` is the central's own earlier acknowledgement, sent again by a station
        after a restore: the submission keeps the code and receipt time it had."""
        payload_sha256 = protocol.sha256_hex(body)

        def rejected(code, reason, status=422):
            return status, self.reject(station_id, submission_id, payload_sha256, code, reason)

        if not UUID.match(submission_id):
            return rejected("bad_submission_id", "the submission id is not a UUID")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return rejected("not_json", "the body is not JSON")
        if not isinstance(document, dict) or protocol.canonical_json(document) != body:
            return rejected("not_canonical", "the body is not a canonical JSON object")
        problem = _document_problem(document, station_id, submission_id)
        if problem:
            return rejected(*problem)
        missing = [a["sha256"] for a in document.get("attachments") or [] if not self.blobs.exists(a["sha256"])]
        if missing:
            return 428, {"error": "missing_blobs", "missing": missing}
        try:
            receipt = self.store.receive(station_id, submission_id, payload_sha256, body.decode(),
                                         document["tracking_code"], document["procedure"]["code"],
                                         self.prior(station_id, submission_id, payload_sha256, prior_ack))
        except Conflict:
            return rejected("conflict", "this submission id was received with other content", 409)
        except TrackingCodeTaken:
            return rejected("tracking_code_taken",
                            "this station already sent another dossier with this tracking code", 409)
        return (201 if receipt.created else 200), self.ack(receipt)


def _document_problem(document: dict, station_id: str, submission_id: str) -> tuple[str, str] | None:
    """What is wrong with a dossier document, as (code, reason) without personal data, or None."""
    for key in ("submission_id", "tracking_code", "station_id", "channel", "procedure", "submitted_at", "answers"):
        if key not in document:
            return "missing_field", f"the document has no {key}"
    if document["submission_id"] != submission_id:
        return "id_mismatch", "the document's submission id is not the one in the address"
    if document["station_id"] != station_id:
        return "station_mismatch", "the document comes from another station than the one that signed it"
    procedure = document["procedure"]
    if not isinstance(procedure, dict) or not PROCEDURE_CODE.match(str(procedure.get("code", ""))):
        return "bad_procedure_code", "the procedure code is not a national procedure code (d.dddddd)"
    if not isinstance(document["answers"], dict):
        return "bad_answers", "the answers are not an object"
    attachments = document.get("attachments") or []
    if not isinstance(attachments, list) or not all(
            isinstance(a, dict) and SHA256.match(str(a.get("sha256", ""))) for a in attachments):
        return "bad_attachments", "attachments must name blobs by sha256"
    return None


def _central() -> Central:
    return current_app.extensions["dvc_central"]


def _error(status: int, code: str, message: str, **extra) -> Response:
    return Response(json.dumps({"error": code, "message": message, **extra}), status,
                    mimetype="application/json")


def _signed(status: int, envelope: dict) -> Response:
    return Response(json.dumps(envelope, ensure_ascii=False), status, mimetype="application/json")


api = Blueprint("central_api", __name__, url_prefix="/api/v1")


@api.before_request
def authenticate():
    """Every API request but /health is signed by an enrolled, unrevoked station."""
    if request.endpoint == "central_api.health":
        return None
    central = _central()
    station_id = request.headers.get(protocol.H_STATION, "")
    station = central.store.station(station_id) if station_id else None
    if station is None:
        return _error(403, "unknown_station", "this station is not enrolled")
    if station.revoked_at:
        return _error(403, "revoked_station", "this station's key was revoked")
    path = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    try:
        protocol.verify_request(ed25519_public(station.public_key), request.headers, request.method, path,
                                request.get_data(cache=True), max_skew=central.max_skew)
    except protocol.AuthError as exc:
        return _error(exc.status, exc.code, str(exc))
    request.environ["dvc.station_id"] = station_id
    return None


def _station_id() -> str:
    return request.environ["dvc.station_id"]


@api.get("/health")
def health():
    return {"ok": True, "protocol": protocol.PROTOCOL}


@api.put("/submissions/<submission_id>")
def put_submission(submission_id):
    status, envelope = _central().receive(_station_id(), submission_id, request.get_data(), _prior_header())
    return _signed(status, envelope)


def _prior_header():
    """The earlier acknowledgement a station sends again after a restore (base64 JSON), or None."""
    value = request.headers.get(protocol.H_PRIOR_ACK)
    if not value or len(value) > 8192:
        return None
    try:
        return json.loads(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error):
        return None


MAX_BATCH_ITEMS = 200
MAX_BATCH_BYTES = protocol.MAX_INFLATED_BYTES


@api.post("/submissions/batch")
def post_batch():
    """Many submissions in one request (gzip welcome), for weak links where each round trip costs most.
    Each item gets exactly the answer ``PUT /submissions/{id}`` would give, signed on its own, so the
    batch itself needs no signature: a station checks every answer separately."""
    body = request.get_data()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            body = protocol.inflate(body, MAX_BATCH_BYTES)
        except protocol.TooLarge:
            return _error(413, "too_large", "the batch inflates past 32 MiB")
        except zlib.error:
            return _error(400, "bad_gzip", "the body is not gzip")
    try:
        items = json.loads(body)["items"]
        pairs = [(str(item["submission_id"]), item["body"].encode(), item.get("prior_ack")) for item in items]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return _error(400, "bad_batch", 'send {"items": [{"submission_id": ..., "body": "<canonical JSON>"}]}')
    if len(pairs) > MAX_BATCH_ITEMS:
        return _error(413, "too_many", f"at most {MAX_BATCH_ITEMS} submissions per batch")
    results = []
    for submission_id, item_body, prior_ack in pairs:
        status, answer = _central().receive(_station_id(), submission_id, item_body, prior_ack)
        results.append({"submission_id": submission_id, "status": status, "answer": answer})
    data = json.dumps({"results": results}, ensure_ascii=False).encode()
    headers = {}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        data, headers = gzip.compress(data, 6), {"Content-Encoding": "gzip"}
    return Response(data, 200, headers, mimetype="application/json")


@api.get("/stations/<station_id>/changes")
def changes(station_id):
    if station_id != _station_id():
        return _error(403, "other_station", "a station reads only its own changes")
    since = request.args.get("since", "0")
    limit = request.args.get("limit", "500")
    if not since.isdigit() or not limit.isdigit():
        return _error(400, "bad_cursor", "since and limit are whole numbers")
    limit_n = max(1, min(int(limit), 1000))
    central = _central()
    head = central.store.head(station_id)  # read first: changes after it only make the feed say "more"
    rows = central.store.changes(station_id, int(since), limit_n)
    cursor = rows[-1]["seq"] if rows else min(int(since), head)
    return _signed(200, central.sign({"type": protocol.CHANGES, "station_id": station_id, "since": int(since),
                                      "cursor": cursor, "changes": rows, "more": len(rows) == limit_n,
                                      "head": max(head, cursor), "store": central.store.identity()}))


@api.post("/stations/<station_id>/holds")
def holds(station_id):
    """Which of the named submissions the central holds now (and with which content hash), signed with
    the central's time and restore window: a station drops a payload only once the central confirms it
    holds it and received it longer ago than any backup it may restore (docs/sync.md)."""
    if station_id != _station_id():
        return _error(403, "other_station", "a station asks only about its own submissions")
    try:
        ids = json.loads(request.get_data())["submission_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) and UUID.match(i) for i in ids):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return _error(400, "bad_holds", 'send {"submission_ids": [uuid, ...]}')
    if len(ids) > MAX_HOLDS:
        return _error(413, "too_many", f"at most {MAX_HOLDS} submission ids per question")
    central = _central()
    return _signed(200, central.sign({"type": protocol.HOLDS, "station_id": station_id,
                                      "store": central.store.identity(), "at": now_iso(),
                                      "restore_window_s": central.restore_window,
                                      "held": central.store.holds(station_id, ids)}))


def _check_sha(sha256: str):
    if not SHA256.match(sha256):
        abort(_error(400, "bad_hash", "a blob is named by its lowercase hex sha256"))


@api.route("/blobs/<sha256>", methods=["HEAD"])
def head_blob(sha256):
    _check_sha(sha256)
    blobs = _central().blobs
    if blobs.exists(sha256):
        return Response(status=200)
    return Response(status=404, headers={"Upload-Offset": str(blobs.offset(sha256))})


CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+)$")


@api.put("/blobs/<sha256>")
def put_blob(sha256):
    """One chunk, ``Content-Range: bytes START-END/TOTAL``; a chunk at the wrong offset gets 409 with the
    offset to resume from."""
    _check_sha(sha256)
    blobs = _central().blobs
    if blobs.exists(sha256):
        return {"complete": True}, 200
    match = CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
    data = request.get_data()
    if not match or len(data) > MAX_CHUNK:
        return _error(400, "bad_range", "send Content-Range: bytes START-END/TOTAL, chunks up to 4 MiB")
    start = int(match.group(1) or 0)
    total = int(match.group(3))
    if match.group(1) is not None and int(match.group(2)) - start + 1 != len(data):
        return _error(400, "bad_range", "the chunk length does not match its Content-Range")
    state = blobs.append(sha256, start, data, total)
    if state == "complete":
        return {"complete": True}, 201
    if state == "partial":
        return {"complete": False, "offset": blobs.offset(sha256)}, 202
    if state == "hash_mismatch":
        return _error(422, "hash_mismatch", "the uploaded bytes do not have this sha256")
    return _error(409, "offset_mismatch", "resume from the offset given", offset=blobs.offset(sha256))


staff = Blueprint("central_staff", __name__, url_prefix="/staff")

STAFF_PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>Hồ sơ tiếp nhận — Central</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:18px/1.5 system-ui,sans-serif;margin:1rem 2rem;color:#0b0c0c}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #b1b4b6;padding:.5rem;text-align:left}
select,button{font-size:18px;min-height:48px}button{background:#00703c;color:#fff;border:0;padding:0 1rem}
nav a{margin-right:1rem;color:#1d70b8}.en{color:#505a5f;font-size:.85em}.code{white-space:nowrap;font-variant-numeric:tabular-nums}
</style></head>
<body><h1>Hồ sơ tiếp nhận <span class="en">Received dossiers</span></h1>
<nav><a href="{{ url_for('central_staff.index') }}">Tất cả <span class="en">All</span></a>
{% for key, label in statuses.items() %}<a href="{{ url_for('central_staff.index', status=key) }}">{{ label.vi }}</a>{% endfor %}</nav>
<table><thead><tr><th>Mã hồ sơ <span class="en">Dossier code</span></th><th>Mã tra cứu <span class="en">Tracking code</span></th>
<th>Thủ tục <span class="en">Procedure</span></th><th>Trạm <span class="en">Station</span></th>
<th>Tiếp nhận <span class="en">Received</span></th><th>Trạng thái <span class="en">Status</span></th></tr></thead><tbody>
{% for s in rows %}<tr><td class="code">{{ s.central_code }}</td><td class="code">{{ s.tracking_code }}</td>
<td>{{ s.procedure_code }}</td><td>{{ s.station_id }}</td><td class="code">{{ s.received_at | local_time }}</td><td>
<form method="post" action="{{ url_for('central_staff.set_status', submission_id=s.submission_id) }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<label for="st-{{ loop.index }}">{{ statuses[s.status].vi }} <span class="en">{{ statuses[s.status].en }}</span></label><br>
<select id="st-{{ loop.index }}" name="status">{% for key, label in statuses.items() %}
<option value="{{ key }}"{% if key == s.status %} selected{% endif %}>{{ label.vi }} / {{ label.en }}</option>{% endfor %}
</select> <button type="submit">Cập nhật <span lang="en">Update</span></button></form></td></tr>
{% else %}<tr><td colspan="6">Chưa có hồ sơ. <span class="en">No dossiers yet.</span></td></tr>{% endfor %}
</tbody></table></body></html>"""


@staff.before_request
def staff_login():
    """HTTP basic auth when the central is given a staff password; a demo central on loopback has none."""
    password = current_app.config.get("STAFF_PASSWORD")
    if not password:
        return None
    auth = request.authorization
    if auth is None or not hmac.compare_digest((auth.password or "").encode(), password.encode()):
        return Response("Cần đăng nhập / Login required", 401, {"WWW-Authenticate": 'Basic realm="central staff"'})
    return None


@staff.get("/")
def index():
    status = request.args.get("status")
    if status not in protocol.STATUSES:
        status = None
    rows = _central().store.submissions(status)
    return render_template_string(STAFF_PAGE, rows=rows, statuses=protocol.STATUSES)


@staff.app_template_filter("local_time")
def local_time(value: str) -> str:
    """A stored UTC time as staff read it: the central's time zone, to the minute."""
    return datetime.fromisoformat(value).astimezone(_central().store.zone).strftime("%d/%m/%Y %H:%M")


@staff.post("/<submission_id>/status")
def set_status(submission_id):
    status = request.form.get("status", "")
    if status not in protocol.STATUSES:
        abort(400)
    if _central().store.submission(submission_id) is None:
        abort(404)
    actor = request.authorization.username if request.authorization else "staff"
    _central().store.set_status(submission_id, status, actor or "staff")
    return redirect(url_for("central_staff.index"), 303)


def open_central(data_dir, database: str | None = None, agency_code: str = "000.00.00.H00",
                 max_skew: int = protocol.MAX_CLOCK_SKEW_S, restore_window: int = RESTORE_WINDOW_S) -> Central:
    """The central without its web app (for enrolment and USB import from the command line)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(database or str(data_dir / "central.sqlite3"), agency_code=agency_code,
                       watermark=data_dir / "code-watermark.json")
    return Central(data_dir, store, max_skew, restore_window)


def create_central_app(config: dict | None = None) -> Flask:
    """The central's Flask app. Config: DATA_DIR (keys, blobs, default SQLite file), DATABASE (a SQLite path
    or a postgresql:// URL), AGENCY_CODE (starts each mã hồ sơ), MAX_CLOCK_SKEW, STAFF_PASSWORD,
    RESTORE_WINDOW (seconds: the oldest backup its operators may restore; stations keep payloads that long)."""
    app = Flask(__name__)
    app.config.update(DATA_DIR="var/central", DATABASE=None, AGENCY_CODE="000.00.00.H00",
                      MAX_CLOCK_SKEW=protocol.MAX_CLOCK_SKEW_S, STAFF_PASSWORD=None, RESTORE_WINDOW=RESTORE_WINDOW_S,
                      MAX_CONTENT_LENGTH=MAX_CHUNK + 65536, SECRET_KEY=secrets.token_hex(32))
    app.config.update(config or {})
    app.extensions["dvc_central"] = open_central(app.config["DATA_DIR"], app.config["DATABASE"],
                                                 app.config["AGENCY_CODE"], app.config["MAX_CLOCK_SKEW"],
                                                 int(app.config["RESTORE_WINDOW"]))
    csrf = CSRFProtect(app)
    csrf.exempt(api)  # signed by station keys, not a browser session
    app.register_blueprint(api)
    app.register_blueprint(staff)
    return app


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8090, announce=print) -> None:
    """Serve with waitress; port 0 takes a free port, and the address is announced once listening."""
    import waitress

    server = waitress.create_server(app, host=host, port=port, threads=8, ident="dvc-central")
    announce(f"central listening on http://{host}:{server.effective_port}")
    try:
        server.run()
    finally:
        server.close()
