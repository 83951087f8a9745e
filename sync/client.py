"""The station's HTTP client for the central (standard library http.client, one kept-alive connection).

Every answer is sorted into an ``Outcome``: ``acked`` (a genuine signed acknowledgement for exactly this
submission and content), ``rejected`` (a genuine signed refusal: quarantine), ``transient`` (anything else:
network errors, timeouts, 5xx, 429, a portal's 200, a truncated body: try again later) or ``refused``
(the central does not accept this station at all: stop and tell staff; no dossier is blamed).
"""
import base64
import email.utils
import gzip
import hashlib
import http.client
import secrets
import time
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from . import protocol

MAX_RETRY_AFTER_S = 3600


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes


@dataclass
class Outcome:
    kind: str                      # acked | rejected | transient | refused
    reason: str = ""
    document: dict = field(default_factory=dict)
    envelope: dict | None = None
    retry_after: float | None = None
    created: bool = False
    missing: tuple[str, ...] = ()  # transient 428 missing_blobs: the attachments the central says it lacks


class LinkError(Exception):
    """The request did not produce a complete HTTP answer (refused, reset, timed out, cut short)."""


class BlobRefused(LinkError):
    """The central refused a blob for good, in a signed dvc-central-blob-refusal/1 (413): ``code`` is
    ``blob_too_large`` (past its ``max_bytes``), ``blob_quota_exceeded`` (the station's blobs and unfinished
    uploads would pass its ``quota_bytes``) or ``too_many_uploads``; sending it again changes nothing until
    the blob or the quota changes. A LinkError, so a caller that only retries later still works."""

    def __init__(self, code: str, reason: str, document: dict):
        super().__init__(f"blob refused: {code}: {reason}"[:300])
        self.code, self.reason, self.document = code, reason, document


class TrackBusy(LinkError):
    """The central has answered this station's tracking questions as fast as it will (429): ask again after
    ``retry_after`` seconds (None when it did not say)."""

    def __init__(self, retry_after: float | None):
        super().__init__(f"tracking: HTTP 429, retry after {retry_after}")
        self.retry_after = retry_after


TRACK_FIELDS = ("status", "central_code", "received_at", "procedure_code", "status_at", "station_id", "station_name")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped at an hour."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


class CentralClient:
    def __init__(self, url: str, station_id: str, station_key, central_signing_key, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"central url must be http(s): {url}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base_path = parts.path.rstrip("/")
        self.station_id, self.key, self.central_key = station_id, station_key, central_signing_key
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self.bytes_sent = self.bytes_received = 0
        self.clock_offset = 0.0  # seconds to add to our clock, learnt from the central when we were off
        self._central_told: tuple[float, float] | None = None  # (the central's Date, time.monotonic() then)

    def central_time(self) -> float | None:
        """The central's clock now (epoch seconds), from its last answer's Date and monotonic time since."""
        if self._central_told is None:
            return None
        told, at = self._central_told
        return told + (time.monotonic() - at)

    def abort(self) -> None:
        """From a signal handler: cut the exchange under way (its request is idempotent and is sent again
        later), so a stop does not wait for a slow link."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)  # socket.SHUT_RDWR: the blocked read returns at once
            except OSError:
                pass

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> Response:
        """One signed request. A broken or timed-out exchange raises LinkError and drops the connection.

        Two retries are built in, both safe because every request is idempotent: once on a fresh connection
        when a kept-alive one turns out closed by the server while idle, and once with a corrected clock
        when the central says our timestamp is stale (an offline station's clock drifts; the central's
        Date header tells by how much)."""
        for attempt in range(3):
            reused = self._conn is not None
            try:
                result = self._exchange(method, path, body, headers)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 0:
                    continue
                raise LinkError(f"{type(exc).__name__}: {exc}"[:200]) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise LinkError(f"{type(exc).__name__}: {exc}"[:200]) from None
            except LinkError:
                self.close()  # an answer given up on half-read: the connection cannot be reused
                raise
            if result.status == 401 and _error_code(result.body) == "stale_timestamp" and attempt < 2:
                central_now = _http_date(result.headers.get("date"))
                if central_now is not None:
                    self.clock_offset = central_now - time.time()
                    continue
            return result
        return result

    def _exchange(self, method: str, path: str, body: bytes, headers: dict | None) -> Response:
        full_path = self.base_path + path
        signature = protocol.sign_request(self.key, self.station_id, method, full_path, body,
                                          now=time.time() + self.clock_offset)
        all_headers = {"Content-Type": "application/json", "Accept": "application/json", **signature,
                       **(headers or {})}
        conn = self._connection()
        conn.request(method, full_path, body=body if body or method in ("PUT", "POST") else None,
                     headers=all_headers)
        resp = conn.getresponse()
        data = _read_bounded(resp, protocol.MAX_ANSWER_BYTES, time.monotonic() + self.timeout)
        result = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        told = _http_date(result.headers.get("date"))
        if told is not None:
            self._central_told = (told, time.monotonic())
        if resp.will_close:
            self.close()
        self.bytes_sent += (len(method) + len(full_path) + 12 + len(body)
                            + sum(len(k) + len(str(v)) + 4 for k, v in all_headers.items()))
        self.bytes_received += (17 + len(data) + sum(len(k) + len(v) + 4 for k, v in result.headers.items()))
        return result

    def put_submission(self, submission_id: str, body: bytes, payload_sha256: str,
                       prior_ack: dict | None = None) -> Outcome:
        """PUT one submission; ``prior_ack`` (the central's earlier acknowledgement, resent after the central
        went back in time) lets the central give it back the code it had."""
        headers = None
        if prior_ack is not None:
            headers = {protocol.H_PRIOR_ACK: base64.b64encode(protocol.canonical_json(prior_ack)).decode()}
        try:
            resp = self.request("PUT", f"/api/v1/submissions/{submission_id}", body, headers)
        except LinkError as exc:
            return Outcome("transient", str(exc))
        return self.classify(resp, submission_id, payload_sha256)

    def answer(self, status: int, answer, submission_id: str, payload_sha256: str) -> Outcome | None:
        """An ack (200/201) or a refusal (409/422) checked as the central's own, or None for other statuses."""
        kind = {200: protocol.ACK, 201: protocol.ACK, 409: protocol.REJECT, 422: protocol.REJECT}.get(status) \
            if type(status) is int else None  # a batch item's status is whatever the answer's JSON holds
        if kind is None:
            return None
        what = "acknowledgement" if kind == protocol.ACK else "refusal"
        try:
            doc = protocol.open_document(self.central_key, answer, kind)
        except protocol.NotGenuine as exc:
            return Outcome("transient", f"HTTP {status} that is not the central's {what} ({exc})")
        if not self._about(doc, submission_id, payload_sha256):
            return Outcome("transient", f"a {what} for another submission or content")
        envelope = answer if isinstance(answer, dict) else protocol.parse_json(answer, protocol.MAX_ANSWER_BYTES)
        if kind == protocol.ACK:
            return Outcome("acked", document=doc, envelope=envelope, created=status == 201)
        return Outcome("rejected", f"{doc['code']}: {doc['reason']}", document=doc, envelope=envelope)

    def classify(self, resp: Response, submission_id: str, payload_sha256: str) -> Outcome:
        checked = self.answer(resp.status, resp.body, submission_id, payload_sha256)
        if checked is not None:
            return checked
        return self.failure(resp)

    def failure(self, resp: Response) -> Outcome:
        """What a non-answer means for the whole request: refused (401/403) or transient."""
        if resp.status in (401, 403):
            return Outcome("refused", f"HTTP {resp.status} {_error_code(resp.body)}")
        if resp.status == 428:
            return _missing_blobs(resp.body)
        reason = f"HTTP {resp.status}" + (f" {_error_code(resp.body)}" if resp.status < 500 else "")
        return Outcome("transient", reason, retry_after=parse_retry_after(resp.headers.get("retry-after")))

    def post_batch(self, items: list[tuple[str, bytes, str, dict | None]]) -> list[Outcome] | Outcome:
        """Send (submission_id, body, payload_sha256, prior_ack) items in one gzip request. Returns one
        Outcome per item, or a single Outcome for the whole request when it failed (kind 'unsupported' on
        404/405: the central has only the one-by-one PUT)."""
        payload = {"items": [{"submission_id": sid, "body": body.decode(),
                              **({"prior_ack": prior} if prior is not None else {})}
                             for sid, body, _sha, prior in items]}
        body = gzip.compress(protocol.canonical_json(payload), 6)
        try:
            resp = self.request("POST", "/api/v1/submissions/batch", body,
                                {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
        except LinkError as exc:
            return Outcome("transient", str(exc))
        if resp.status in (404, 405):
            return Outcome("unsupported", f"HTTP {resp.status}")
        if resp.status != 200:
            return self.failure(resp)
        try:
            data = resp.body
            if resp.headers.get("content-encoding", "").lower() == "gzip":
                data = protocol.inflate(data, protocol.MAX_INFLATED_BYTES)
            results = {r["submission_id"]: r for r in protocol.parse_json(data, protocol.MAX_INFLATED_BYTES)["results"]}
        except protocol.TooLarge:
            return Outcome("transient", f"the answer inflates past {protocol.MAX_INFLATED_BYTES >> 20} MiB")
        except (ValueError, KeyError, TypeError, OSError, EOFError, zlib.error):
            return Outcome("transient", "HTTP 200 that is not the central's batch answer")
        outcomes = []
        for sid, _body, sha, _prior in items:
            result = results.get(sid)
            checked = None if result is None else self.answer(result.get("status"), result.get("answer"), sid, sha)
            if checked is None and result is not None and result.get("status") == 428:
                checked = _missing_blobs(result.get("answer"))
            if checked is None:
                status = result.get("status") if result else None
                checked = Outcome("transient", f"batch item: HTTP {status}" if status else "batch item missing")
            outcomes.append(checked)
        return outcomes

    def _about(self, doc: dict, submission_id: str, payload_sha256: str) -> bool:
        return (doc.get("submission_id"), doc.get("payload_sha256"), doc.get("station_id")) == (
            submission_id, payload_sha256, self.station_id)

    def changes(self, since: int, limit: int = 500, store: dict | None = None) -> dict | None:
        """The signed status feed after ``since``; raises LinkError or NotGenuine. With ``store`` (the central
        store this station last saw, {"store_id", "generation"}) the pull is conditional: None when the
        central answers 304, nothing after ``since`` in that store (an older central answers 200 as ever)."""
        tag = protocol.feed_tag(store, since) if store is not None else None
        resp = self.request("GET", f"/api/v1/stations/{self.station_id}/changes?since={since}&limit={limit}",
                            headers={protocol.H_IF_NONE_MATCH: tag} if tag else None)
        if resp.status == 304 and tag is not None:
            if resp.headers.get("etag") != tag:
                raise LinkError("changes: HTTP 304 for another store or cursor")
            return None
        if resp.status != 200:
            raise LinkError(f"changes: HTTP {resp.status}")
        doc = protocol.open_document(self.central_key, resp.body, protocol.CHANGES)
        if doc.get("station_id") != self.station_id or doc.get("since") != since:
            raise protocol.NotGenuine("a feed for another station or cursor")
        return doc

    def holds(self, submission_ids: list[str]) -> dict:
        """The central's signed answer to "do you hold these?" (held ids with their content hash, its
        time and restore window); raises LinkError or NotGenuine."""
        resp = self.request("POST", f"/api/v1/stations/{self.station_id}/holds",
                            protocol.canonical_json({"submission_ids": submission_ids}))
        if resp.status != 200:
            raise LinkError(f"holds: HTTP {resp.status} {_error_code(resp.body)}")
        doc = protocol.open_document(self.central_key, resp.body, protocol.HOLDS)
        if doc.get("station_id") != self.station_id or not isinstance(doc.get("held"), dict):
            raise protocol.NotGenuine("a holds answer for another station")
        return doc

    def track(self, tracking_code: str) -> dict | None:
        """What the central says of the dossier with this tracking code, taken by any station: a dict of
        TRACK_FIELDS, or None when it knows no such code. Only a signed dvc-central-track/1 answering this
        very question (the code, this station, a fresh nonce) is believed: anything else raises
        protocol.NotGenuine; network trouble raises LinkError, a 429 TrackBusy."""
        nonce = secrets.token_hex(16)
        resp = self.request("GET", f"/api/v1/track/{quote(tracking_code, safe='')}?nonce={nonce}")
        if resp.status == 429:
            raise TrackBusy(parse_retry_after(resp.headers.get("retry-after")))
        if resp.status not in (200, 404):
            raise LinkError(f"tracking: HTTP {resp.status} {_error_code(resp.body)}")
        doc = protocol.open_document(self.central_key, resp.body, protocol.TRACK)
        if (doc.get("tracking_code"), doc.get("asked_by"), doc.get("nonce")) != (tracking_code, self.station_id, nonce):
            raise protocol.NotGenuine("a tracking answer to another question")
        if resp.status == 404 or doc.get("found") is not True:
            if resp.status == 200 or doc.get("found") is not False:
                raise protocol.NotGenuine("a tracking answer whose status and content disagree")
            return None
        dossier = doc.get("dossier")
        if not isinstance(dossier, dict) or not all(isinstance(dossier.get(k), str) for k in TRACK_FIELDS):
            raise protocol.NotGenuine("a tracking answer without the dossier's fields")
        return {k: dossier[k] for k in TRACK_FIELDS}

    def post_ratings(self, documents: list[dict]) -> tuple[list[str], dict[str, str]] | None:
        """Send satisfaction ratings (docs/ratings.md); returns (ids the central holds, {id: why refused for
        good}), or None when the central has no ratings endpoint (404/405: an older central; they wait).
        Only the central's signed answer to this very body counts; anything else raises protocol.NotGenuine,
        network trouble and other statuses LinkError (sent again later: the central keeps each id once)."""
        body = protocol.canonical_json({"ratings": documents})
        resp = self.request("POST", "/api/v1/ratings", body)
        if resp.status in (404, 405):
            return None
        if resp.status != 200:
            raise LinkError(f"ratings: HTTP {resp.status} {_error_code(resp.body)}")
        doc = protocol.open_document(self.central_key, resp.body, protocol.RATINGS)
        if doc.get("station_id") != self.station_id or doc.get("batch_sha256") != protocol.sha256_hex(body):
            raise protocol.NotGenuine("a ratings answer to another batch")
        sent = {d["rating_id"] for d in documents}
        held, refused = doc.get("held"), doc.get("refused")
        if not isinstance(held, list) or not isinstance(refused, dict):
            raise protocol.NotGenuine("a ratings answer without held and refused")
        return ([i for i in held if i in sent],
                {i: str(why) for i, why in refused.items() if i in sent and i not in held})

    def upload_blob(self, data: bytes, chunk_size: int = 256 * 1024) -> str:
        """Send a blob (content-addressed, resumable): HEAD first to skip what the central has or to resume
        a partial upload, then PUT chunks. Returns the sha256; raises LinkError on any failure, so the caller
        retries later and resumes where the central stopped."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = f"/api/v1/blobs/{sha256}"
        resp = self.request("HEAD", path)
        if resp.status == 200:
            return sha256
        if resp.status != 404:
            raise LinkError(f"blob HEAD: HTTP {resp.status}")
        total = len(data)
        told = resp.headers.get("upload-offset", "0")
        offset = int(told) if told.isdigit() and int(told) <= total else 0  # else start over: the central says
        for _ in range(total // max(chunk_size, 1) + 3):  # bounded: one pass plus a couple of resyncs
            chunk = data[offset:offset + chunk_size]
            content_range = f"bytes {offset}-{offset + len(chunk) - 1}/{total}" if chunk else f"bytes */{total}"
            resp = self.request("PUT", path, chunk, {"Content-Type": "application/octet-stream",
                                                     "Content-Range": content_range})
            if resp.status in (200, 201):
                return sha256
            if resp.status in (202, 409):  # where the central stopped (409: not where we sent this chunk)
                offset = _blob_offset(resp.body, total)
            elif resp.status == 413:
                raise self._blob_refusal(resp, sha256)
            else:
                raise LinkError(f"blob PUT: HTTP {resp.status} {_error_code(resp.body)}")
        raise LinkError("blob upload did not finish")

    def _blob_refusal(self, resp: Response, sha256: str) -> LinkError:
        """BlobRefused for the central's own signed refusal of this blob for this station; a 413 that is not
        (a proxy's body limit, a forgery) is only a LinkError: tried again later."""
        try:
            doc = protocol.open_document(self.central_key, resp.body, protocol.BLOB_REFUSAL)
        except protocol.NotGenuine:
            return LinkError(f"blob PUT: HTTP 413 {_error_code(resp.body)} (not the central's signed refusal)")
        if doc.get("sha256") != sha256 or doc.get("station_id") != self.station_id:
            return LinkError("blob PUT: HTTP 413 with a refusal of another blob or station")
        return BlobRefused(str(doc.get("code", "")), str(doc.get("reason", "")), doc)


def _read_bounded(resp, limit: int, deadline: float) -> bytes:
    """The body, read in pieces: LinkError past ``limit`` bytes (a portal or a stranger at the central's
    address, not the central) or past ``deadline`` (a link that trickles: one exchange is bounded as a
    whole, not only each socket read). Raises IncompleteRead when the body is cut short."""
    length = resp.getheader("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise LinkError(f"an answer of {length} bytes, more than the {limit >> 20} MiB an answer may be")
    parts, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise LinkError("the answer took longer than the exchange timeout")
        part = resp.read(64 * 1024)
        if not part:
            break
        size += len(part)
        if size > limit:
            raise LinkError(f"an answer of more than {limit >> 20} MiB")
        parts.append(part)
    return b"".join(parts)


def _missing_blobs(answer) -> Outcome:
    """A 428: transient, with the blobs the central says it lacks when it is its ``missing_blobs`` answer.
    Not signed, and it need not be: believing a forged one costs a HEAD per document (the central says it
    has them) and one more try."""
    try:
        told = answer if isinstance(answer, dict) else protocol.parse_json(answer, protocol.MAX_ANSWER_BYTES)
        missing = told["missing"] if told.get("error") == "missing_blobs" else []
    except (ValueError, KeyError, TypeError, AttributeError):
        missing = []
    hashes = tuple(sha for sha in missing if isinstance(sha, str) and len(sha) == 64)[:1000] \
        if isinstance(missing, list) else ()
    return Outcome("transient", f"HTTP 428 missing_blobs ({len(hashes)})" if hashes else "HTTP 428",
                   missing=hashes)


def _blob_offset(body: bytes, total: int) -> int:
    """The ``offset`` of a blob PUT answer (202, 409); LinkError when it has none within the blob."""
    try:
        offset = protocol.parse_json(body, protocol.MAX_ANSWER_BYTES)["offset"]
    except (ValueError, KeyError, TypeError, IndexError):
        offset = None
    if type(offset) is not int or not 0 <= offset <= total:
        raise LinkError("blob PUT: an answer without an offset within the blob")
    return offset


def _http_date(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def _error_code(body: bytes) -> str:
    try:
        return str(protocol.parse_json(body, protocol.MAX_ANSWER_BYTES).get("error", ""))[:60]
    except (ValueError, AttributeError):  # BadJSON, TooLarge, not an object
        return ""
