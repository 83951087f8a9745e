"""The reference central server: enrolment, signed requests, idempotent submissions, blobs, a status feed
and a small staff page. For tests, demos and pilots; a province plugs its own system in behind the same
protocol (see docs/sync.md).

    app = create_central_app({"DATA_DIR": "var/central"})        # SQLite in the data folder
    app = create_central_app({"DATA_DIR": "...", "DATABASE": "postgresql://..."})
"""
import base64
import binascii
import gzip
import json
import logging
import threading
import time
import zlib
from collections import OrderedDict, deque
from contextlib import nullcontext
from datetime import date, datetime, timedelta, timezone
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import (Blueprint, Flask, Response, abort, current_app, redirect, render_template_string, request, session,
                   url_for)
from flask_wtf.csrf import CSRFProtect

from kiosk.core import keyfile
from kiosk.core import ratings as rating_rules

from . import central_catalog, protocol
from .central_store import (BlobDamaged, BlobStore, CentralStore, Conflict, DocumentKeyError, Prior, Receipt,
                            TrackingCodeTaken, now_iso, open_store)
from .feed import KEY_TTL_S, ConditionalFeed, open_board
from .notify import sender_from_config
from . import station_health
from .keys import (central_keys_document, ed25519_public, load_or_create_bundle_key, load_or_create_documents_key,
                   load_or_create_signing_key)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
PROCEDURE_CODE = re.compile(r"^\d\.\d{6}$")
MAX_CHUNK = 4 << 20
RESTORE_WINDOW_S = 7 * 86400  # the oldest backup this central's operators may restore (docs/sync.md)
MAX_HOLDS = 500               # submission ids per holds question
RETENTION_DAYS = 30.0         # a handed-over dossier's document is dropped this long after the hand-over
PURGE_INTERVAL_S = 3600       # how often the serving process purges
DOCUMENTS_KEY = "central-documents.key"
MAX_FAILURES = 5              # wrong passwords in a row that lock a staff account ...
LOCKOUT = timedelta(minutes=15)  # ... for this long
LOGIN_ATTEMPTS = 10           # login attempts one client may make ...
LOGIN_WINDOW_S = 60           # ... in this many seconds
TRACK_RATE = 1.0              # tracking questions one station may ask per second, on average ...
TRACK_BURST = 30              # ... and at most this many at once (a token bucket per station)
NOTIFY_INTERVAL_S = 5.0       # how often the notification sender looks for due rows (0: no sender thread)
_hasher = PasswordHasher()
# Checking an unknown user name costs the same as a known one, so timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
STAFF_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
PDF = "application/pdf"
# What staff do with documents (a download), one line each: account, submission id, document id and hash,
# never a citizen's data. The serving process's log (kiosk central serve) is where operators read it.
log = logging.getLogger("sync.central")


class LoginRefused(Exception):
    def __init__(self, reason: str, until: str | None = None):
        super().__init__(reason)
        self.reason = reason  # wrong | locked
        self.until = until


class Central:
    """The central's state and its one rule for receiving a submission, shared by HTTP and USB import."""

    def __init__(self, data_dir: Path, store: CentralStore, max_skew: int = protocol.MAX_CLOCK_SKEW_S,
                 restore_window: int = RESTORE_WINDOW_S, retention_days: float = RETENTION_DAYS):
        self.data_dir = Path(data_dir)
        self.store = store
        self.restore_window = restore_window
        self.retention_days = retention_days
        # Complete blobs are sealed with a key derived from the documents key (docs/sync.md, "Documents at rest").
        self.blobs = BlobStore(self.data_dir / "blob-store", documents_key=getattr(store, "document_key", None))
        # Held (shared) while a receipt checks its blobs and records the document that names them, and
        # (exclusive) while the retention decides which blobs no held document names: a blob is never dropped
        # under a receipt, in this process or another (`kiosk central serve --workers N`, `kiosk central purge`).
        self._naming = self.blobs.naming
        self.last_purge = {"documents": 0, "blobs": 0}
        self.signing_key = load_or_create_signing_key(self.data_dir / "central.ed25519")
        self.bundle_key = load_or_create_bundle_key(self.data_dir / "central.x25519")
        self.catalog_key = central_catalog.catalog_key(self.data_dir)  # signs catalog releases only
        self.max_skew = max_skew

    def public_keys(self) -> dict:
        return central_keys_document(self.signing_key, self.bundle_key, self.catalog_key)

    def purge(self, now: datetime | None = None) -> int:
        """Drop the documents of dossiers handed over to the processing system (their status left
        'received') more than ``retention_days`` ago, and never of one received within the restore window;
        rows, hashes, codes and statuses stay (docs/sync.md). Returns how many were dropped."""
        now = now or datetime.now(timezone.utc)
        iso = lambda t: t.isoformat(timespec="milliseconds")  # noqa: E731
        with self._naming.exclusive():
            dropped = self.store.drop_documents(iso(now - timedelta(days=self.retention_days)),
                                                iso(now - timedelta(seconds=self.restore_window)))
            # The blobs those documents named go too, unless a document still held names one.
            candidates = {sha for named in dropped.values() for sha in named}
            gone = candidates - self.store.named_blobs(candidates)
            blobs = sum(self.blobs.delete(sha) for sha in sorted(gone))
        self.last_purge = {"documents": len(dropped), "blobs": blobs}
        return len(dropped)

    # -- staff accounts of the staff page ----------------------------------------------------------------
    def add_staff(self, username: str, password: str) -> None:
        """Add a staff account; ValueError with the reason when the name or password will not do."""
        if not STAFF_NAME.match(username):
            raise ValueError("user name: 2-32 lower-case letters, digits, '.', '_' or '-', starting with a letter")
        if len(password) < 10:
            raise ValueError("the password needs at least 10 characters")
        if not self.store.staff_add(username, _hasher.hash(password)):
            raise ValueError(f"user name '{username}' is taken")

    def login(self, username: str, password: str) -> str:
        """The account's user name for a right password; else LoginRefused, after counting the failure
        (the MAX_FAILURES-th in a row locks the account for LOCKOUT, counted in one transaction)."""
        now = datetime.now(timezone.utc)
        account = self.store.staff_account(username) if STAFF_NAME.match(username or "") else None
        if account is None or not account["active"]:
            try:
                _hasher.verify(_DUMMY_HASH, password)
            except VerificationError:
                pass
            raise LoginRefused("wrong")
        if account["locked_until"] and datetime.fromisoformat(account["locked_until"]) > now:
            raise LoginRefused("locked", account["locked_until"])
        try:
            _hasher.verify(account["secret_hash"], password)
        except (VerificationError, InvalidHashError):
            until = self.store.staff_failed(username, now, MAX_FAILURES, LOCKOUT)
            raise LoginRefused("locked", until) if until else LoginRefused("wrong") from None
        rehash = _hasher.hash(password) if _hasher.check_needs_rehash(account["secret_hash"]) else None
        if not self.store.staff_succeeded(username, now, rehash):
            fresh = self.store.staff_account(username) or {}
            raise LoginRefused("locked" if fresh.get("locked_until") else "wrong", fresh.get("locked_until"))
        return username

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
            document = protocol.parse_json(body)
        except protocol.TooDeep as exc:
            return rejected("too_deep", f"the body is {exc}")
        except ValueError:  # BadJSON, TooLarge
            return rejected("not_json", "the body is not JSON")
        try:
            canonical = isinstance(document, dict) and protocol.canonical_json(document) == body
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") in a string has no canonical (UTF-8) form
            canonical = False
        if not canonical:
            return rejected("not_canonical", "the body is not a canonical JSON object")
        problem = _document_problem(document, station_id, submission_id)
        if problem:
            return rejected(*problem)
        try:
            with self._naming.shared() if document.get("attachments") else nullcontext():
                missing = [a["sha256"] for a in document.get("attachments") or [] if not self.blobs.exists(a["sha256"])]
                if missing:
                    return 428, {"error": "missing_blobs", "missing": missing}
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
    for key in ("submission_id", "tracking_code", "station_id", "channel", "submitted_at"):
        if not isinstance(document[key], str):  # stored as text: anything else must not reach the database
            return "bad_field", f"the document's {key} is not a string"
    if document["submission_id"] != submission_id:
        return "id_mismatch", "the document's submission id is not the one in the address"
    if document["station_id"] != station_id:
        return "station_mismatch", "the document comes from another station than the one that signed it"
    procedure = document["procedure"]
    if not isinstance(procedure, dict) or not isinstance(procedure.get("code"), str) or not PROCEDURE_CODE.match(
            procedure["code"]):
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


# The latest catalog release, conditional (ETag: its number) and by range (docs/catalog-releases.md).
api.add_url_rule("/catalog", "catalog", central_catalog.serve_latest, methods=["GET"])


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
        return protocol.parse_json(base64.b64decode(value, validate=True), 8192)
    except (ValueError, binascii.Error):  # BadJSON, TooLarge: as if none was sent
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
    items, refused = _json_body(body, MAX_BATCH_BYTES, "the batch", "32 MiB")
    if refused is not None:
        return refused
    try:
        items = items["items"]
        pairs = [(str(item["submission_id"]), item["body"].encode(), item.get("prior_ack")) for item in items]
        for submission_id, _body, _prior in pairs:
            submission_id.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate: not an id to answer
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


def _json_body(body: bytes, limit: int, what: str, limit_words: str):
    """(the parsed JSON, None), or (None, the 400/413 answer) for a body too large, too deep or not JSON."""
    try:
        return protocol.parse_json(body, limit), None
    except protocol.BadJSON as exc:
        return None, _error(400, "bad_json", f"{what} is {exc}" if isinstance(exc, protocol.TooDeep) else str(exc))
    except protocol.TooLarge:
        return None, _error(413, "too_large", f"{what} is larger than {limit_words}")


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
    identity = central.store.identity()
    tag = request.headers.get("If-None-Match")
    if tag and head == int(since) and tag == protocol.feed_tag(identity, int(since)):
        # A conditional pull with nothing new (the fast path could not tell: sync/feed.py): no body to sign.
        return Response(status=304, headers={"ETag": tag})
    rows = central.store.changes(station_id, int(since), limit_n)
    cursor = rows[-1]["seq"] if rows else min(int(since), head)
    return _signed(200, central.sign({"type": protocol.CHANGES, "station_id": station_id, "since": int(since),
                                      "cursor": cursor, "changes": rows, "more": len(rows) == limit_n,
                                      "head": max(head, cursor), "store": identity}))


@api.post("/stations/<station_id>/holds")
def holds(station_id):
    """Which of the named submissions the central holds now (and with which content hash), signed with
    the central's time and restore window: a station drops a payload only once the central confirms it
    holds it and received it longer ago than any backup it may restore (docs/sync.md)."""
    if station_id != _station_id():
        return _error(403, "other_station", "a station asks only about its own submissions")
    ids, refused = _json_body(request.get_data(), protocol.MAX_ANSWER_BYTES, "the question", "4 MiB")
    if refused is not None:
        return refused
    try:
        ids = ids["submission_ids"]
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


class TrackLimiter:
    """A token bucket per station for tracking questions: ``burst`` at once, refilled at ``rate`` per
    second, in this process. A station whose tracking page is scripted cannot read the whole province's
    statuses at speed; each station's citizens are held back only by their own station's questions."""

    def __init__(self, rate: float = TRACK_RATE, burst: float = TRACK_BURST, stations: int = 100_000):
        self.rate, self.burst, self.stations = float(rate), float(burst), stations
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, station_id: str, now: float | None = None) -> float:
        """0 when the question may be answered (a token is taken), else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(station_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            self._buckets[station_id] = (tokens, now)
            while len(self._buckets) > self.stations:
                self._buckets.popitem(last=False)
            if tokens >= 1:
                self._buckets[station_id] = (tokens - 1, now)
                return 0.0
            return (1 - tokens) / self.rate if self.rate > 0 else 3600.0


TRACKING_CODE = re.compile(r"^[0-9A-Za-z-]{4,40}$")
NONCE = re.compile(r"^[0-9a-f]{0,64}$")


@api.get("/track/<tracking_code>")
def track(tracking_code):
    """What any enrolled station may tell a citizen about a dossier, found by its tracking code (dashes and
    case ignored): status, official code, procedure code, received and last-change times and the station
    that took it, never a name, a number or an answer. Signed (``dvc-central-track/1``, echoing the code,
    the asking station and its ``nonce``, so an answer cannot be replayed for another question); 404 with
    the same signed document saying ``found: false`` for an unknown code; 429 past the station's budget."""
    wait = current_app.extensions["central_track_limiter"].take(_station_id())
    if wait:
        return Response(json.dumps({"error": "too_many", "message": "too many tracking questions from this "
                                    "station; try again later", "retry_after": int(wait + 0.999)}), 429,
                        {"Retry-After": str(int(wait + 0.999))}, mimetype="application/json")
    nonce = request.args.get("nonce", "")
    if not TRACKING_CODE.match(tracking_code) or not NONCE.match(nonce):
        return _error(400, "bad_tracking_code", "a tracking code is letters, digits and dashes")
    central = _central()
    found = central.store.tracked(tracking_code)
    document = {"type": protocol.TRACK, "tracking_code": tracking_code, "asked_by": _station_id(), "nonce": nonce,
                "at": now_iso(), "found": found is not None}
    if found is None:
        return Response(json.dumps({"error": "not_found", **central.sign(document)}, ensure_ascii=False), 404,
                        mimetype="application/json")
    document["dossier"] = {key: found[key] for key in ("status", "central_code", "received_at", "procedure_code",
                                                        "status_at", "station_id", "station_name")}
    return _signed(200, central.sign(document))


MAX_RATINGS = 500  # ratings per request


@api.post("/ratings")
def post_ratings():
    """Satisfaction ratings of this station (docs/ratings.md), many in one request: ``{"ratings": [...]}``,
    each as kiosk.core.ratings.document makes it and checked field by field (ratings.problem: nothing more
    can ride along). Each is kept once by its random id. The answer, signed (``dvc-central-ratings/1``),
    names the ids held now and those refused for good with why, and the sha256 of the request's body, so it
    cannot be replayed for another batch; a station marks the first sent and never sends the second again."""
    body = request.get_data()
    batch, refused = _json_body(body, protocol.MAX_ANSWER_BYTES, "the batch", "4 MiB")
    if refused is not None:
        return refused
    items = batch.get("ratings") if isinstance(batch, dict) else None
    if not isinstance(items, list):
        return _error(400, "bad_ratings", 'send {"ratings": [{"rating_id": ..., ...}]}')
    if len(items) > MAX_RATINGS:
        return _error(413, "too_many", f"at most {MAX_RATINGS} ratings per request")
    station_id = _station_id()
    good, refusals = [], {}
    for item in items:
        rating_id = item.get("rating_id") if isinstance(item, dict) else None
        if not isinstance(rating_id, str) or not rating_rules.RATING_ID.match(rating_id):
            return _error(400, "bad_ratings", "every rating has a rating_id of 32 hexadecimal digits")
        why = rating_rules.problem(item)
        if why is None and item["station_id"] != station_id:
            why = "station_mismatch: the rating names another station than the one that signed it"
        if why is not None:
            refusals[rating_id] = why
        else:
            good.append(item)
    central = _central()
    held, clashes = central.store.receive_ratings(station_id, good)
    refusals.update(clashes)
    return _signed(200, central.sign({"type": protocol.RATINGS, "station_id": station_id,
                                      "batch_sha256": protocol.sha256_hex(body), "held": held,
                                      "refused": refusals}))


def _check_sha(sha256: str):
    if not SHA256.fullmatch(sha256):
        abort(_error(400, "bad_hash", "a blob is named by its lowercase hex sha256"))


# Blob limits (docs/sync.md, "Blobs"), from the app's config: BLOB_MAX_BYTES, BLOB_QUOTA_BYTES (per station),
# BLOB_PARTIAL_TTL (seconds), BLOB_MAX_UPLOADS (unfinished at once per station), BLOB_SWEEP_INTERVAL (seconds).
BLOB_CONFIG = {"BLOB_MAX_BYTES": "max_bytes", "BLOB_QUOTA_BYTES": "quota_bytes", "BLOB_PARTIAL_TTL": "partial_ttl",
               "BLOB_MAX_UPLOADS": "max_uploads", "BLOB_SWEEP_INTERVAL": "sweep_interval"}


def configure_blobs(central: "Central", config) -> int:
    """Give the blob folder the limits of the app's config and sweep expired uploads (at start)."""
    limits = {arg: config[key] for key, arg in BLOB_CONFIG.items() if config.get(key) is not None}
    return central.blobs.configure(**limits)


def _blob_refused(sha256: str, code: str, reason: str, **extra) -> Response:
    """413 for a blob refused for good (too large, over the station's quota): the error in plain JSON
    (``error``, ``message``, the limit) and, beside it, the same signed by the central (``document``,
    ``signature``, a dvc-central-blob-refusal/1), so a proxy's 413 is not taken for the central's."""
    envelope = _central().sign({"type": protocol.BLOB_REFUSAL, "sha256": sha256, "station_id": _station_id(),
                                "code": code, "reason": reason, **extra})
    return Response(json.dumps({"error": code, "message": reason, **extra, **envelope}), 413,
                    mimetype="application/json")


@api.route("/blobs/<sha256>", methods=["HEAD"])
def head_blob(sha256):
    """200 when the central has the blob (whoever uploaded it); else 404 with how much of this station's
    own unfinished upload it has (``Upload-Offset``)."""
    _check_sha(sha256)
    blobs = _central().blobs
    blobs.sweep_if_due()
    blobs.sweep_station(_station_id())
    if blobs.exists(sha256):
        return Response(status=200)
    return Response(status=404, headers={"Upload-Offset": str(blobs.offset(sha256, _station_id()))})


CONTENT_RANGE = re.compile(r"bytes (?:(\d{1,20})-(\d{1,20})|\*)/(\d{1,20})")


@api.put("/blobs/<sha256>")
def put_blob(sha256):
    """One chunk of this station's own upload, ``Content-Range: bytes START-END/TOTAL``: 202 with the new
    offset, 201 complete, 200 already there; 409 with the offset to resume from (a chunk at the wrong
    offset, or meant for another station's upload: each station appends only to its own), 413 signed
    when the blob is larger than allowed or the station's quota has no room for it."""
    _check_sha(sha256)
    blobs, station_id = _central().blobs, _station_id()
    blobs.sweep_if_due()
    if blobs.exists(sha256):
        blobs.claim(station_id, sha256)
        return {"complete": True}, 200
    match = CONTENT_RANGE.fullmatch(request.headers.get("Content-Range", ""))
    data = request.get_data()
    if not match or len(data) > MAX_CHUNK:
        return _error(400, "bad_range", "send Content-Range: bytes START-END/TOTAL, chunks up to 4 MiB")
    start = int(match.group(1) or 0)
    total = int(match.group(3))
    if match.group(1) is not None and int(match.group(2)) - start + 1 != len(data):
        return _error(400, "bad_range", "the chunk length does not match its Content-Range")
    # Refused on the declared total, before a byte is kept (the store checks it again).
    state = "too_large" if total > blobs.max_bytes else blobs.append(station_id, sha256, start, data, total)
    if state == "complete":
        return {"complete": True}, 201
    if state == "partial":
        return {"complete": False, "offset": blobs.offset(sha256, station_id)}, 202
    if state == "hash_mismatch":
        return _error(422, "hash_mismatch", "the uploaded bytes do not have this sha256")
    if state == "too_large":
        return _blob_refused(sha256, "blob_too_large", f"a blob may be at most {blobs.max_bytes} bytes",
                             max_bytes=blobs.max_bytes)
    if state == "over_quota":
        return _blob_refused(sha256, "blob_quota_exceeded", f"this station's blobs and unfinished uploads may "
                             f"take at most {blobs.quota_bytes} bytes", quota_bytes=blobs.quota_bytes,
                             used_bytes=blobs.usage(station_id))
    if state == "too_many_uploads":
        return _blob_refused(sha256, "too_many_uploads", f"at most {blobs.max_uploads} unfinished uploads at "
                             "once per station", max_uploads=blobs.max_uploads)
    if state == "total_mismatch":
        return _error(409, "total_mismatch", "the upload was started with another total",
                      offset=blobs.offset(sha256, station_id))
    return _error(409, "offset_mismatch", "resume from the offset given", offset=blobs.offset(sha256, station_id))


staff = Blueprint("central_staff", __name__, url_prefix="/staff")

STAFF_CSS = """body{font:18px/1.5 system-ui,sans-serif;margin:1rem 2rem;color:#0b0c0c}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #b1b4b6;padding:.5rem;text-align:left}
select,button,input{font-size:18px;min-height:48px}button{background:#00703c;color:#fff;border:0;padding:0 1rem}
nav a{margin-right:1rem;color:#1d70b8}.en{color:#505a5f;font-size:.85em}.code{white-space:nowrap;font-variant-numeric:tabular-nums}
header{display:flex;justify-content:space-between;align-items:center}header form button{background:#505a5f}
label{display:block;margin-top:1rem}.error{color:#d4351c;font-weight:bold}
"""

_HEAD = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{{ title }} — Central</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{{ url_for('central_staff.style') }}"></head>"""

LOGIN_PAGE = _HEAD + """
<body><h1>Đăng nhập <span class="en">Log in</span></h1>
{% if error %}<p class="error" role="alert">{{ error.vi }} <span class="en">{{ error.en }}</span></p>{% endif %}
<form method="post" action="{{ url_for('central_staff.login') }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<label for="username">Tên đăng nhập <span class="en">User name</span></label>
<input id="username" name="username" autocomplete="username" autocapitalize="none" required value="{{ username }}">
<label for="password">Mật khẩu <span class="en">Password</span></label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<p><button type="submit">Đăng nhập <span lang="en">Log in</span></button></p></form></body></html>"""

STAFF_PAGE = _HEAD + """
<body><header><h1>Hồ sơ tiếp nhận <span class="en">Received dossiers</span></h1>
<form method="post" action="{{ url_for('central_staff.logout') }}"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
{{ account }} <button type="submit">Đăng xuất <span lang="en">Log out</span></button></form></header>
<nav><a href="{{ url_for('central_staff.index') }}">Tất cả <span class="en">All</span></a>
{% for key, label in statuses.items() %}<a href="{{ url_for('central_staff.index', status=key) }}">{{ label.vi }}</a>{% endfor %}
<a href="{{ url_for('central_staff.ratings') }}">Đánh giá hài lòng <span class="en">Satisfaction</span></a>
<a href="{{ url_for('central_staff.stations') }}">Tình trạng các trạm <span class="en">Stations</span></a></nav>
<section aria-labelledby="import-title"><h2 id="import-title">Nhập gói hồ sơ từ USB <span class="en">Import a USB bundle</span></h2>
<p>Trạm lưu động không có mạng chép hồ sơ ra USB thành một tệp gói (.dvcbundle). Chọn tệp đó rồi bấm “Nhập gói”: trung tâm
tiếp nhận các hồ sơ và cho tải về tệp xác nhận để mang về trạm. Nhập lại cùng một gói không tạo hồ sơ trùng.
<span class="en">A mobile team with no link copies its dossiers to a stick as a bundle file (.dvcbundle). Choose it and press
“Import bundle”: the centre receives the dossiers and offers the acknowledgement file to take back to the station.
Importing a bundle again makes no duplicates.</span></p>
{% if import_error %}<p class="error" role="alert" data-import-error="{{ import_error.code }}">{{ import_error.vi }}
<span class="en">{{ import_error.en }}{% if import_error.detail %} ({{ import_error.detail }}){% endif %}</span></p>{% endif %}
<form method="post" action="{{ url_for('central_staff.import_bundle_upload') }}" enctype="multipart/form-data">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<label for="bundle">Tệp gói hồ sơ <span class="en">Bundle file</span></label>
<input id="bundle" name="bundle" type="file" accept=".dvcbundle">
<p><button type="submit">Nhập gói <span lang="en">Import bundle</span></button></p></form>
{% if imports %}<h3>Gói đã nhập gần đây <span class="en">Recently imported</span></h3>
<ul>{% for i in imports %}<li><a href="{{ url_for('central_staff.bundle_import', bundle_id=i.bundle_id) }}">{{ i.file_name }}</a>
— {{ i.station_id }}, {{ i.imported_at | local_time }}</li>{% endfor %}</ul>{% endif %}</section>
<h2>Hồ sơ <span class="en">Dossiers</span></h2>
<table><thead><tr><th>Mã hồ sơ <span class="en">Dossier code</span></th><th>Mã tra cứu <span class="en">Tracking code</span></th>
<th>Thủ tục <span class="en">Procedure</span></th><th>Trạm <span class="en">Station</span></th>
<th>Tiếp nhận <span class="en">Received</span></th><th>Trạng thái <span class="en">Status</span></th></tr></thead><tbody>
{% for s in rows %}<tr><td class="code"><a href="{{ url_for('central_staff.dossier', submission_id=s.submission_id) }}">{{ s.central_code }}</a></td><td class="code">{{ s.tracking_code }}</td>
<td>{{ s.procedure_code }}</td><td>{{ s.station_id }}</td><td class="code">{{ s.received_at | local_time }}</td><td>
<form method="post" action="{{ url_for('central_staff.set_status', submission_id=s.submission_id) }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<label for="st-{{ loop.index }}">{{ statuses[s.status].vi }} <span class="en">{{ statuses[s.status].en }}</span></label>
<select id="st-{{ loop.index }}" name="status">{% for key, label in statuses.items() %}
<option value="{{ key }}"{% if key == s.status %} selected{% endif %}>{{ label.vi }} / {{ label.en }}</option>{% endfor %}
</select> <button type="submit">Cập nhật <span lang="en">Update</span></button></form>
{% if s.document_purged_at %}<span class="en">Nội dung đã xóa theo thời hạn lưu / document dropped after the retention</span>{% endif %}</td></tr>
{% else %}<tr><td colspan="6">Chưa có hồ sơ. <span class="en">No dossiers yet.</span></td></tr>{% endfor %}
</tbody></table></body></html>"""

DOSSIER_PAGE = _HEAD + """
<body><header><h1>Hồ sơ {{ s.central_code }} <span class="en">Dossier</span></h1>
<form method="post" action="{{ url_for('central_staff.logout') }}"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
{{ account }} <button type="submit">Đăng xuất <span lang="en">Log out</span></button></form></header>
<nav><a href="{{ url_for('central_staff.index') }}">Danh sách hồ sơ <span class="en">All dossiers</span></a></nav>
<dl><dt>Mã tra cứu <span class="en">Tracking code</span></dt><dd class="code">{{ s.tracking_code }}</dd>
<dt>Thủ tục <span class="en">Procedure</span></dt><dd>{{ s.procedure_code }}</dd>
<dt>Trạm <span class="en">Station</span></dt><dd>{{ s.station_id }}</dd>
<dt>Tiếp nhận <span class="en">Received</span></dt><dd class="code">{{ s.received_at | local_time }}</dd>
<dt>Trạng thái <span class="en">Status</span></dt><dd>{{ statuses[s.status].vi }} <span class="en">{{ statuses[s.status].en }}</span></dd></dl>
<h2>Giấy tờ <span class="en">Documents</span></h2>
{% if s.document_purged_at %}<p>Nội dung và giấy tờ đã xóa theo thời hạn lưu. <span class="en">The document and its papers were dropped after the retention.</span></p>
{% else %}<table><thead><tr><th>Giấy tờ <span class="en">Document</span></th><th>Số trang <span class="en">Pages</span></th>
<th>Dung lượng <span class="en">Size</span></th><th>Trung tâm có tệp <span class="en">Held here</span></th><th></th></tr></thead><tbody>
{% for d in documents %}<tr><td>{{ d.name }}</td><td>{{ d.pages }}</td><td>{{ d.kb }} KB</td>
<td>{% if d.held %}Có <span class="en">Yes</span>{% else %}Không <span class="en">No</span>{% endif %}</td>
<td>{% if d.held %}<a href="{{ url_for('central_staff.download', submission_id=s.submission_id, sha256=d.sha256) }}" download>Tải về PDF <span class="en">Download PDF</span></a>{% endif %}</td></tr>
{% else %}<tr><td colspan="5">Hồ sơ không kèm giấy tờ. <span class="en">No documents attached.</span></td></tr>{% endfor %}
</tbody></table>{% endif %}</body></html>"""

BUNDLE_PAGE = _HEAD + """
<body><header><h1>Đã nhập gói hồ sơ <span class="en">Bundle imported</span></h1>
<form method="post" action="{{ url_for('central_staff.logout') }}"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
{{ account }} <button type="submit">Đăng xuất <span lang="en">Log out</span></button></form></header>
<nav><a href="{{ url_for('central_staff.index') }}">Danh sách hồ sơ <span class="en">All dossiers</span></a></nav>
<p role="status" data-imported="{{ s.bundle_id }}">Gói của trạm {{ s.station_id }}, chép lúc {{ made_at }}, nhập lúc
{{ s.imported_at | local_time }} bởi {{ s.imported_by }}.
<span class="en">Bundle of station {{ s.station_id }}, made at {{ made_at }}, imported at {{ s.imported_at | local_time }} by {{ s.imported_by }}.</span></p>
<table data-counts><tbody>
<tr><th>Hồ sơ mới tiếp nhận <span class="en">Received now</span></th><td data-k="created">{{ c.created }}</td></tr>
<tr><th>Đã tiếp nhận từ trước <span class="en">Received before</span></th><td data-k="duplicate">{{ c.duplicate }}</td></tr>
<tr><th>Bị từ chối <span class="en">Refused</span></th><td data-k="rejected">{{ c.rejected }}</td></tr>
<tr><th>Chưa tiếp nhận được (thiếu giấy tờ; trạm sẽ gửi lại) <span class="en">Deferred (documents missing; the station sends them again)</span></th><td data-k="deferred">{{ c.deferred }}</td></tr>
</tbody></table>
<h2>Tệp xác nhận cho trạm <span class="en">Acknowledgement file for the station</span></h2>
<p>Tải tệp này về và chép vào USB (cùng chỗ với tệp gói). Ở trạm, trang chính liệt kê tệp: bấm “Nhập xác nhận”.
<span class="en">Download this file and copy it to the stick (beside the bundle). At the station, the home page lists it: press “Import confirmation”.</span></p>
<p><a href="{{ url_for('central_staff.bundle_acks', bundle_id=s.bundle_id) }}" download data-ack-download>Tải tệp xác nhận {{ s.file_name }} <span class="en">Download the acknowledgement file</span></a></p>
{% if refusals %}<h2>Hồ sơ bị từ chối <span class="en">Refused dossiers</span></h2>
<p>Trạm sẽ thấy các hồ sơ này là bị từ chối, kèm lý do, khi nhập tệp xác nhận. <span class="en">The station sees these as refused, with the reason, once it imports the acknowledgement file.</span></p>
<table data-refusals><thead><tr><th>Mã hồ sơ của trạm <span class="en">Submission</span></th><th>Lý do <span class="en">Reason</span></th></tr></thead><tbody>
{% for r in refusals %}<tr><td class="code">{{ r.submission_id }}</td><td>{{ r.code }}<br><span class="en">{{ r.reason }}</span></td></tr>{% endfor %}
</tbody></table>{% endif %}
{% if received %}<h2>Hồ sơ đã tiếp nhận <span class="en">Received dossiers</span></h2>
<table data-received><thead><tr><th>Mã hồ sơ <span class="en">Dossier code</span></th><th>Mã tra cứu <span class="en">Tracking code</span></th>
<th>Thủ tục <span class="en">Procedure</span></th><th>Trạng thái <span class="en">Status</span></th></tr></thead><tbody>
{% for r in received %}<tr><td class="code"><a href="{{ url_for('central_staff.dossier', submission_id=r.submission_id) }}">{{ r.central_code }}</a></td>
<td class="code">{{ r.tracking_code }}</td><td>{{ r.procedure_code }}</td><td>{{ statuses[r.status].vi }}</td></tr>{% endfor %}
</tbody></table>{% endif %}</body></html>"""

RATINGS_PAGE = _HEAD + """
<body><header><h1>Đánh giá mức độ hài lòng <span class="en">Satisfaction ratings</span></h1>
<form method="post" action="{{ url_for('central_staff.logout') }}"><input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
{{ account }} <button type="submit">Đăng xuất <span lang="en">Log out</span></button></form></header>
<nav><a href="{{ url_for('central_staff.index') }}">Danh sách hồ sơ <span class="en">All dossiers</span></a></nav>
<form method="get" action="{{ url_for('central_staff.ratings') }}">
<label for="from">Từ ngày <span class="en">From</span></label> <input id="from" name="from" type="date" value="{{ first }}">
<label for="to">Đến ngày <span class="en">To</span></label> <input id="to" name="to" type="date" value="{{ last }}">
<label for="station">Trạm <span class="en">Station</span></label> <select id="station" name="station">
<option value="">Tất cả / All</option>{% for st in stations %}<option{% if st == station %} selected{% endif %}>{{ st }}</option>{% endfor %}</select>
<label for="procedure">Mã thủ tục <span class="en">Procedure code</span></label> <input id="procedure" name="procedure" value="{{ procedure or '' }}" size="10">
<button type="submit">Xem <span lang="en">Show</span></button></form>
<p data-ratings-total="{{ s.all.ratings }}">{{ s.all.ratings }} lượt đánh giá từ {{ first_text }} đến {{ last_text }}
(sau khi nộp: {{ s.all.by_moment.submitted }}; khi nhận kết quả: {{ s.all.by_moment.handed_over }}).
<span class="en">{{ s.all.ratings }} ratings ({{ s.all.by_moment.submitted }} after submitting, {{ s.all.by_moment.handed_over }} at hand-over).</span></p>
<h2>Theo tiêu chí <span class="en">By criterion</span></h2>
<table data-ratings="all"><thead><tr><th>Tiêu chí <span class="en">Criterion</span></th><th>Số trả lời <span class="en">Answers</span></th>
{% for level in levels %}<th>Mức {{ level }}</th>{% endfor %}</tr></thead><tbody>
{% for name, c in s.all.criteria.items() %}<tr data-criterion="{{ name }}"><td>{{ criteria[name].short.vi }} <span class="en">{{ criteria[name].short.en }}</span></td><td>{{ c.answered }}</td>
{% for level in levels %}<td data-level="{{ level }}">{{ c.levels[level] }} ({{ c.shares[level] }}%)<br><span class="en">{{ words(name, level).vi }}</span></td>{% endfor %}</tr>
{% else %}<tr><td colspan="5">Chưa có đánh giá trong thời gian này. <span class="en">No ratings in this period.</span></td></tr>{% endfor %}
</tbody></table>
{% for title, en, key, column, groups in [("Theo trạm", "By station", "station", "Trạm / Station", s.by_station), ("Theo thủ tục", "By procedure", "procedure", "Mã thủ tục / Procedure", s.by_procedure)] %}
<h2>{{ title }} <span class="en">{{ en }}</span></h2>
<p class="en">Tỉ lệ hài lòng (mức 3 và 2) trên số trả lời / share satisfied (levels 3 and 2) of answers</p>
<table data-ratings="{{ key }}"><thead><tr><th>{{ column }}</th><th>Lượt <span class="en">Ratings</span></th>
{% for name in criteria %}<th>{{ criteria[name].short.vi }}</th>{% endfor %}</tr></thead><tbody>
{% for group, g in groups.items() %}<tr data-group="{{ group }}"><td>{{ group or '—' }}</td><td data-k="ratings">{{ g.ratings }}</td>
{% for name in criteria %}<td data-criterion="{{ name }}">{% if name in g.criteria %}{{ g.criteria[name].shares[3] + g.criteria[name].shares[2] }}% ({{ g.criteria[name].answered }}){% else %}—{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endfor %}</body></html>"""

WRONG = {"vi": "Sai tên đăng nhập hoặc mật khẩu.", "en": "Wrong user name or password."}
SESSION_KEY = "central_staff"


class LoginLimiter:
    """At most ``attempts`` login attempts per client in ``window`` seconds (a sliding window), in this
    process; the lockout after MAX_FAILURES protects each account, this protects against one client trying
    many accounts. Owned by the app (app.extensions), so two apps never share one."""

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window: float = LOGIN_WINDOW_S, clients: int = 10_000):
        self.attempts, self.window, self.clients = attempts, window, clients
        self._seen: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str, now: float | None = None) -> float:
        """0 when the attempt may go on (and it is counted), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._seen.pop(client, None) or deque()
            while times and times[0] <= now - self.window:
                times.popleft()
            self._seen[client] = times  # most recent last; the oldest clients are forgotten first
            while len(self._seen) > self.clients:
                self._seen.popitem(last=False)
            if len(times) >= self.attempts:
                return max(times[0] + self.window - now, 1.0)
            times.append(now)
            return 0.0


def _same_origin() -> bool:
    """A browser's POST comes from this very site: its Origin (when sent) names this host, and its
    Sec-Fetch-Site (when sent) is same-origin. The CSRF token checks the rest."""
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    # Under Referrer-Policy: no-referrer (these pages' own) Chromium sends "Origin: null" with a form posted
    # on this very site: then only the browser's own Sec-Fetch-Site (no page can set it) says where it is from.
    if origin == "null" and fetch_site == "same-origin":
        return True
    if origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host):
        return False
    return (fetch_site or "same-origin") in ("same-origin", "none")


def _account() -> str | None:
    """The logged-in staff account of this request (still active), or None."""
    username = session.get(SESSION_KEY)
    if not username:
        return None
    account = _central().store.staff_account(username)
    if account is None or not account["active"]:
        session.clear()
        return None
    return username


@staff.before_request
def staff_login():
    """Every staff page but the login form and its style sheet needs a logged-in account; every POST must
    come from this site."""
    if request.method == "POST" and not _same_origin():
        abort(403)
    if request.endpoint in ("central_staff.login", "central_staff.style"):
        return None
    if _account() is None:
        return redirect(url_for("central_staff.login"), 303)
    return None


@staff.get("/central.css")
def style():
    return Response(STAFF_CSS, mimetype="text/css")


@staff.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if _account():
            return redirect(url_for("central_staff.index"), 303)
        return render_template_string(LOGIN_PAGE, title="Đăng nhập", error=None, username="")
    username = request.form.get("username", "").strip().lower()
    wait = current_app.extensions["central_login_limiter"].allow(request.remote_addr or "?")
    if wait:
        error = {"vi": f"Quá nhiều lần đăng nhập; thử lại sau {wait:.0f} giây.",
                 "en": f"Too many login attempts; try again in {wait:.0f} seconds."}
        return (render_template_string(LOGIN_PAGE, title="Đăng nhập", error=error, username=username), 429,
                {"Retry-After": str(int(wait + 0.999))})
    try:
        account = _central().login(username, request.form.get("password", ""))
    except LoginRefused as refused:
        error = WRONG
        if refused.reason == "locked":
            until = datetime.fromisoformat(refused.until).astimezone(_central().store.zone).strftime("%H:%M")
            error = {"vi": f"Tài khoản tạm khóa vì nhập sai mật khẩu nhiều lần, đến {until}.",
                     "en": f"The account is locked after too many wrong passwords, until {until}."}
        return render_template_string(LOGIN_PAGE, title="Đăng nhập", error=error, username=username), 401
    session.clear()  # a new session (and CSRF token) for the account: nothing from before carries over
    session.permanent = True
    session[SESSION_KEY] = account
    return redirect(url_for("central_staff.index"), 303)


@staff.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("central_staff.login"), 303)


@staff.get("/")
def index():
    return _index_page()


def _index_page(import_error: dict | None = None, status_code: int = 200):
    """The list of dossiers (of one status with ``?status=``) and the form that imports a USB bundle, with
    why the last one was refused (``import_error``)."""
    status = request.args.get("status")
    if status not in protocol.STATUSES:
        status = None
    rows = _central().store.submissions(status)
    return render_template_string(STAFF_PAGE, title="Hồ sơ tiếp nhận", rows=rows, statuses=protocol.STATUSES,
                                  account=session[SESSION_KEY], imports=_recent_imports(),
                                  import_error=import_error), status_code


# -- USB bundles imported on the staff page ---------------------------------------------------------------
# A mobile team's official brings the stick; staff upload the bundle here, see what was received and refused,
# and download the ack file for the station (the bytes `kiosk central import` writes). Each import leaves, in
# DATA_DIR/bundle-acks/, the ack file (<bundle id>.acks.json) and what the import found (<bundle id>.import.json),
# 0600 in a 0700 folder: codes and counts, nothing of a citizen.
BUNDLE_ACKS = "bundle-acks"
MAX_RECENT_IMPORTS = 10
BUNDLE_REFUSED = {
    "no_file": {"vi": "Hãy chọn tệp gói hồ sơ (.dvcbundle) trên USB trước khi bấm “Nhập gói”.",
                "en": "Choose the bundle file (.dvcbundle) on the stick before pressing “Import bundle”."},
    "too_large": {"vi": "Tệp quá lớn để là một gói hồ sơ của trạm (tối đa {mib} MiB). Không nhập gì.",
                  "en": "The file is too large to be a station's bundle (at most {mib} MiB). Nothing was imported."},
    "not_bundle": {"vi": "Tệp này không phải gói hồ sơ của trạm (.dvcbundle), hoặc đã hỏng khi chép. Không nhập gì; "
                         "chép lại gói từ trạm.",
                   "en": "This is not a station's bundle (.dvcbundle), or it was damaged in copying. Nothing was "
                         "imported; copy the bundle from the station again."},
    "unknown_station": {"vi": "Gói của một trạm chưa đăng ký với trung tâm này. Không nhập gì; đăng ký trạm "
                              "(kiosk central enrol) rồi nhập lại.",
                        "en": "The bundle comes from a station not enrolled here. Nothing was imported; enrol the "
                              "station (kiosk central enrol), then import it again."},
    "revoked_station": {"vi": "Gói của một trạm đã bị thu hồi khóa (máy bị mất hoặc đã thay). Không nhập gì; báo bộ "
                              "phận kỹ thuật.",
                        "en": "The bundle comes from a station whose key was revoked (lost or replaced). Nothing "
                              "was imported; tell the technical team."},
    "bad_signature": {"vi": "Gói không mang chữ ký đúng của trạm: có thể đã bị sửa. Không nhập gì; chép lại gói từ "
                            "trạm.",
                      "en": "The bundle does not carry its station's valid signature: it may have been altered. "
                            "Nothing was imported; copy the bundle from the station again."},
    "wrong_central": {"vi": "Gói không mở được bằng khóa của trung tâm này: trạm đang tin khóa của một trung tâm "
                            "khác. Không nhập gì; báo bộ phận kỹ thuật.",
                      "en": "The bundle does not open with this centre's key: the station trusts another centre's "
                            "keys. Nothing was imported; tell the technical team."},
    "bad_contents": {"vi": "Nội dung gói không đúng (hỏng hoặc bị sửa). Không nhập gì; chép lại gói từ trạm.",
                     "en": "The bundle's contents are not right (damaged or altered). Nothing was imported; copy "
                           "the bundle from the station again."},
}


def _bundle_refused(code: str, detail: str = "") -> dict:
    words = BUNDLE_REFUSED.get(code, BUNDLE_REFUSED["not_bundle"])
    mib = current_app.config["BUNDLE_UPLOAD_MAX"] >> 20
    return {"code": code, "vi": words["vi"].format(mib=mib), "en": words["en"].format(mib=mib), "detail": detail}


def _acks_folder() -> Path:
    return _central().data_dir / BUNDLE_ACKS


def _recent_imports() -> list[dict]:
    """What the staff page imported last (newest first): the summaries kept beside the ack files."""
    found = []
    for path in _acks_folder().glob("*.import.json"):
        try:
            found.append(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda item: item.get("imported_at", ""), reverse=True)[:MAX_RECENT_IMPORTS]


def _bundle_upload_limit():
    """A bundle may be larger than any other request (BUNDLE_UPLOAD_MAX, 64 MiB): for a logged-in account's
    upload only, set before the CSRF check reads the form."""
    if request.endpoint == "central_staff.import_bundle_upload" and request.method == "POST" and _account():
        request.max_content_length = current_app.config["BUNDLE_UPLOAD_MAX"] + (1 << 20)


@staff.errorhandler(413)
def upload_too_large(error):
    """A bundle past the limit: the staff page again, saying so (any other request: the plain 413)."""
    if request.endpoint != "central_staff.import_bundle_upload" or not _account():
        return error
    return _index_page(_bundle_refused("too_large"), 413)


@staff.post("/bundles")
def import_bundle_upload():
    """Import a USB bundle uploaded by staff, as `kiosk central import` does (the same checks, the same
    receive rule, idempotent); keep its ack file and show what was received, refused and deferred."""
    from .bundle import (BundleError, ack_file_bytes, ack_file_name, bundle_file_name, receive_bundle,
                         write_private_file)

    upload = request.files.get("bundle")
    if upload is None or not upload.filename:
        return _index_page(_bundle_refused("no_file"), 422)
    limit = current_app.config["BUNDLE_UPLOAD_MAX"]
    data = upload.stream.read(limit + 1)
    try:
        if len(data) > limit:
            raise BundleError(f"the file is larger than {limit >> 20} MiB", "too_large")
        header, ack_file, counts = receive_bundle(_central(), data)
    except BundleError as refused:
        log.warning("staff %s: a bundle was refused (%s)", session[SESSION_KEY], refused.code)
        return _index_page(_bundle_refused(refused.code, str(refused)), 422)
    bundle_id = header["bundle_id"]
    folder = _acks_folder()
    folder.mkdir(mode=0o700, exist_ok=True)
    write_private_file(folder / f"{bundle_id}.acks.json", ack_file_bytes(ack_file))
    summary = {"bundle_id": bundle_id, "station_id": header["station_id"], "created_at": header["created_at"],
               "file_name": ack_file_name(bundle_file_name(header["station_id"], header["created_at"], bundle_id)),
               "imported_at": now_iso(), "imported_by": session[SESSION_KEY], "counts": counts}
    write_private_file(folder / f"{bundle_id}.import.json", json.dumps(summary).encode())
    log.info("staff %s imported bundle %s of station %s: %s", session[SESSION_KEY], bundle_id,
             header["station_id"], json.dumps(counts, sort_keys=True))
    return redirect(url_for("central_staff.bundle_import", bundle_id=bundle_id), 303)


def _import_or_404(bundle_id: str) -> dict:
    """What the staff page's import of the bundle found (404 for an id never imported here)."""
    if not UUID.match(bundle_id):
        abort(404)
    try:
        return json.loads((_acks_folder() / f"{bundle_id}.import.json").read_text("utf-8"))
    except (OSError, ValueError):
        abort(404)


@staff.get("/bundles/<bundle_id>")
def bundle_import(bundle_id):
    """What importing a bundle did, the dossiers the central refused and why, and the ack file to download."""
    found = _import_or_404(bundle_id)
    try:
        ack_file = json.loads((_acks_folder() / f"{bundle_id}.acks.json").read_bytes())
    except (OSError, ValueError):
        abort(404)
    refusals = [{"submission_id": r["document"].get("submission_id"), "code": r["document"].get("code"),
                 "reason": r["document"].get("reason")} for r in ack_file.get("rejections") or []]
    received = []
    for a in ack_file.get("acks") or []:
        row = _central().store.submission(a["document"].get("submission_id", ""))
        if row is not None:
            received.append(row)
    return render_template_string(BUNDLE_PAGE, title=f"Gói {found['file_name']}", s=found, c=found["counts"],
                                  refusals=refusals, received=received, statuses=protocol.STATUSES,
                                  made_at=_safe_local_time(found.get("created_at")), account=session[SESSION_KEY])


@staff.get("/bundles/<bundle_id>/acks")
def bundle_acks(bundle_id):
    """The ack file of an imported bundle, byte for byte as `kiosk central import` writes it, named
    ``<bundle file name>.acks.json`` for the station's screen to find on the stick."""
    found = _import_or_404(bundle_id)
    try:
        data = (_acks_folder() / f"{bundle_id}.acks.json").read_bytes()
    except OSError:
        abort(404)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", found["file_name"]).strip("-.")[:160] or f"{bundle_id}.acks.json"
    log.info("staff %s downloaded the ack file of bundle %s", session[SESSION_KEY], bundle_id)
    return Response(data, 200, {"Content-Disposition": f'attachment; filename="{name}"'},
                    mimetype="application/json")


def _safe_local_time(value) -> str:
    """A time a station wrote (untrusted), as staff read it, or "?" when it is not a time."""
    try:
        return local_time(value)
    except (TypeError, ValueError):
        return "?"


def _documents(found: dict) -> list[dict]:
    """The papers a submission's document names, as staff see them (the station's words, checked: a field
    of the wrong type shows as '?'), and whether the central holds each one's bytes."""
    if not found["document"]:
        return []
    listed = json.loads(found["document"]).get("attachments") or []
    blobs = _central().blobs

    def whole(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    return [{"sha256": a["sha256"], "name": a["name"] if isinstance(a.get("name"), str) else a["sha256"][:12],
             "pages": a["pages"] if whole(a.get("pages")) else "?",
             "kb": -(-a["bytes"] // 1024) if whole(a.get("bytes")) else "?",  # rounded up: 1 byte is 1 KB
             "held": blobs.exists(a["sha256"])} for a in listed]


def _submission_or_404(submission_id: str) -> dict:
    found = _central().store.submission(submission_id) if UUID.match(submission_id) else None
    if found is None:
        abort(404)
    return found


@staff.get("/ratings")
def ratings():
    """The satisfaction ratings summary (docs/ratings.md): counts and shares per criterion, per station and
    per procedure, over a period of local days (the last 30 by default), optionally of one station or one
    procedure. Ratings are anonymous: nothing here leads to a dossier."""
    today = datetime.now(_central().store.zone).date()
    try:
        last = date.fromisoformat(request.args.get("to") or today.isoformat())
        first = date.fromisoformat(request.args.get("from") or (last - timedelta(days=29)).isoformat())
    except ValueError:
        abort(400)
    if first > last:
        first, last = last, first
    station = request.args.get("station") or None
    procedure = request.args.get("procedure", "").strip() or None
    if procedure is not None and not PROCEDURE_CODE.match(procedure):
        abort(400)
    store = _central().store
    summary = store.rating_summary(first.isoformat(), last.isoformat(), station, procedure)
    return render_template_string(RATINGS_PAGE, title="Đánh giá mức độ hài lòng", s=summary,
                                  first=first.isoformat(), last=last.isoformat(),
                                  first_text=first.strftime("%d/%m/%Y"), last_text=last.strftime("%d/%m/%Y"),
                                  station=station, procedure=procedure, stations=store.rating_stations(),
                                  criteria=rating_rules.CRITERIA, levels=rating_rules.LEVELS,
                                  words=rating_rules.level_words, account=session[SESSION_KEY])


@staff.get("/<submission_id>")
def dossier(submission_id):
    """One dossier: its codes and status, and its papers with a download link for each the central holds."""
    found = _submission_or_404(submission_id)
    return render_template_string(DOSSIER_PAGE, title=f"Hồ sơ {found['central_code']}", s=found,
                                  documents=_documents(found), statuses=protocol.STATUSES,
                                  account=session[SESSION_KEY])


@staff.get("/<submission_id>/documents/<sha256>.pdf")
def download(submission_id, sha256):
    """A paper of the dossier as its PDF, opened from its sealed blob and checked against its hash; only one
    the submission's document names (404 otherwise, and once the retention dropped it)."""
    found = _submission_or_404(submission_id)
    named = {a["sha256"]: a for a in (json.loads(found["document"]).get("attachments") or [])} \
        if found["document"] and SHA256.match(sha256) else {}
    if sha256 not in named:
        abort(404)
    try:
        data = _central().blobs.read(sha256)
    except FileNotFoundError:
        abort(404)
    except BlobDamaged:
        log.error("staff %s: blob %s of submission %s is damaged", session[SESSION_KEY], sha256, submission_id)
        abort(500)
    document_id = str(named[sha256].get("document") or sha256[:12])
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{found['tracking_code']}-{document_id}").strip("-")[:120] or sha256[:12]
    log.info("staff %s downloaded document %s (sha256 %s) of submission %s", session[SESSION_KEY],
             re.sub(r"[^A-Za-z0-9_-]+", "-", document_id)[:64], sha256, submission_id)
    media_type = PDF if named[sha256].get("media_type", PDF) == PDF else "application/octet-stream"
    return Response(data, 200, {"Content-Disposition": f'attachment; filename="{name}.pdf"'}, mimetype=media_type)


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
    # The actor is the logged-in account, never a name the request carries.
    _central().store.set_status(submission_id, status, session[SESSION_KEY])
    return redirect(url_for("central_staff.index"), 303)


# The fleet's health: the heartbeat endpoint and /staff/stations (sync/station_health.py, docs/fleet.md).
station_health.add_routes(api, staff)


def open_central(data_dir, database: str | None = None, agency_code: str = "000.00.00.H00",
                 max_skew: int = protocol.MAX_CLOCK_SKEW_S, restore_window: int = RESTORE_WINDOW_S,
                 retention_days: float = RETENTION_DAYS) -> Central:
    """The central without its web app (for enrolment and USB import from the command line). Opening it
    seals any document still in plain text (docs/sync.md, "Documents at rest")."""
    data_dir = Path(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = data_dir / DOCUMENTS_KEY
    key_existed = key_path.exists()
    document_key = load_or_create_documents_key(key_path)
    try:
        store = open_store(database or str(data_dir / "central.sqlite3"), agency_code=agency_code,
                           watermark=data_dir / "code-watermark.json", document_key=document_key)
    except DocumentKeyError:
        if not key_existed:  # a key made just now opens nothing: do not leave it where the right one goes
            key_path.unlink(missing_ok=True)
        raise
    # Every process of this central (server workers, CLI, USB import) keeps the shared feed board current.
    store.feed = open_board(data_dir, store)
    return Central(data_dir, store, max_skew, restore_window, retention_days)


def create_central_app(config: dict | None = None) -> Flask:
    """The central's Flask app. Config: DATA_DIR (keys, blobs, default SQLite file), DATABASE (a SQLite path
    or a postgresql:// URL), AGENCY_CODE (starts each mã hồ sơ), MAX_CLOCK_SKEW, RESTORE_WINDOW (seconds: the
    oldest backup its operators may restore; stations keep payloads that long), RETENTION_DAYS (a handed-over
    dossier's document is dropped this long after), SESSION_COOKIE_SECURE (behind TLS), the BLOB_* limits,
    TRACK_RATE/TRACK_BURST (tracking questions per station), FEED_FAST_PATH/FEED_KEY_TTL (idle conditional pulls
    answered before Flask, sync/feed.py) and the NOTIFY_* settings (docs/sync.md). The staff page needs
    an account (``kiosk central staff add``); the session key is ``DATA_DIR/central-session.key``."""
    app = Flask(__name__)
    data_dir = Path((config or {}).get("DATA_DIR", "var/central"))
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    app.config.update(DATA_DIR="var/central", DATABASE=None, AGENCY_CODE="000.00.00.H00",
                      MAX_CLOCK_SKEW=protocol.MAX_CLOCK_SKEW_S, RESTORE_WINDOW=RESTORE_WINDOW_S,
                      RETENTION_DAYS=RETENTION_DAYS, MAX_CONTENT_LENGTH=MAX_CHUNK + 65536,
                      SECRET_KEY=keyfile.load_or_create(data_dir / "central-session.key", lambda: secrets.token_bytes(32)),
                      SESSION_COOKIE_NAME="dvc_central_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=timedelta(minutes=30),
                      WTF_CSRF_TIME_LIMIT=None,  # the session's own 30 idle minutes end old forms
                      BUNDLE_UPLOAD_MAX=protocol.MAX_BUNDLE_BYTES)  # a bundle uploaded on the staff page
    app.config.update(config or {})
    if app.config.get("STAFF_PASSWORD"):
        raise ValueError("STAFF_PASSWORD is no longer used: the staff page takes accounts (kiosk central staff add)")
    app.extensions["dvc_central"] = open_central(app.config["DATA_DIR"], app.config["DATABASE"],
                                                 app.config["AGENCY_CODE"], app.config["MAX_CLOCK_SKEW"],
                                                 int(app.config["RESTORE_WINDOW"]),
                                                 float(app.config["RETENTION_DAYS"]))
    configure_blobs(app.extensions["dvc_central"], app.config)  # blob limits; expired uploads swept at start
    # Blobs stored before they were sealed (a central upgraded in place, or put back from such a backup). It
    # reads every blob's first bytes: `serve --workers N` does it once before forking (SEAL_BLOBS_AT_START
    # false in the workers), so a worker started again after a crash serves at once.
    app.extensions["dvc_central"].blobs_sealed_at_start = (
        app.extensions["dvc_central"].blobs.seal_plain() if app.config.get("SEAL_BLOBS_AT_START", True) else 0)
    app.extensions["central_login_limiter"] = LoginLimiter()
    app.extensions["central_track_limiter"] = TrackLimiter(float(app.config.get("TRACK_RATE", TRACK_RATE)),
                                                           float(app.config.get("TRACK_BURST", TRACK_BURST)))
    configure_notifications(app)
    station_health.configure(app)  # heartbeats kept, ALERT_* emails (docs/fleet.md)
    app.before_request(_bundle_upload_limit)  # before the CSRF check, which reads the form
    csrf = CSRFProtect(app)
    csrf.exempt(api)  # signed by station keys, not a browser session
    app.register_blueprint(api)
    app.register_blueprint(staff)
    app.after_request(_security_headers)
    if app.config.get("FEED_FAST_PATH", True):  # idle conditional pulls answered before Flask (sync/feed.py)
        own = [(k, v) for k, v in _security_headers(Response()).headers.items()
               if k not in ("Content-Type", "Content-Length")]
        app.wsgi_app = app.extensions["central_feed"] = ConditionalFeed(
            app.wsgi_app, app.extensions["dvc_central"], own, float(app.config.get("FEED_KEY_TTL", KEY_TTL_S)))
    return app


def configure_notifications(app: Flask) -> None:
    """Citizens told of status changes (sync/notify.py) when the config names a channel (NOTIFY_SMTP_HOST,
    NOTIFY_SMS_URL or NOTIFY_SMS_GATEWAY): from then on a status change queues a row per consented channel,
    and a sender thread sends them every NOTIFY_INTERVAL seconds (at once after a change; 0: no thread,
    ``app.extensions["central_notifications"].send_due()`` does one pass)."""
    central = app.extensions["dvc_central"]
    sender = sender_from_config(central.store, app.config)
    app.extensions["central_notifications"] = sender
    if sender is None:
        return
    central.store.notify_channels = frozenset(sender.channels)
    central.store.on_queued = sender.wake.set
    interval = float(app.config.get("NOTIFY_INTERVAL", NOTIFY_INTERVAL_S))
    if interval > 0:
        sender.start(interval)


def _security_headers(response: Response) -> Response:
    """As the station's pages (kiosk/app.py): never cached, never framed, no inline script or style."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


def start_purging(central: Central, interval: float = PURGE_INTERVAL_S, announce=print) -> threading.Event:
    """Purge now and then every ``interval`` seconds in a daemon thread, until the event returned is set."""
    stop = threading.Event()

    def run():
        while True:
            try:
                dropped = central.purge()
                if dropped:
                    announce(f"retention: dropped the documents of {dropped} handed-over dossiers and "
                             f"{central.last_purge['blobs']} blobs no other held dossier names")
            except Exception as exc:  # noqa: BLE001  (the next round tries again; the API keeps serving)
                announce(f"retention: purge failed: {exc}")
            if stop.wait(interval):
                return

    threading.Thread(target=run, name="central-purge", daemon=True).start()
    return stop


def serve(app: Flask, host: str = "127.0.0.1", port: int = 8090, announce=print) -> None:
    """Serve with waitress; port 0 takes a free port, and the address is announced once listening."""
    import waitress

    server = waitress.create_server(app, host=host, port=port, threads=8, ident="dvc-central")
    stop_purging = start_purging(app.extensions["dvc_central"], announce=announce)
    announce(f"central listening on http://{host}:{server.effective_port}")
    try:
        server.run()
    finally:
        stop_purging.set()
        server.close()
