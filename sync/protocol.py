"""The wire protocol between a station and the central, shared by both sides.

Requests: the station signs ``DVC-SYNC-1 / method / path?query / timestamp / sha256(body) / station id``
with its Ed25519 key and sends the parts in headers; the central refuses an unknown or revoked station,
a bad signature, a body that does not match its hash, and a timestamp more than a few minutes off.

Answers that change what the station believes (an acknowledgement, a rejection, the status feed) are
*signed documents*: ``{"document": {...}, "signature": base64(Ed25519(canonical_json(document)))}`` made
with the central's key. A captive portal, a proxy or a half-written response cannot forge one, so only
the central can mark a dossier sent or quarantined. Ed25519 is deterministic: the same acknowledgement
asked for twice is the same bytes.
"""
import base64
import hashlib
import json
import re
import time
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kiosk.core.dossiers import CENTRAL_STATUSES as STATUSES  # noqa: F401  (the feed's states)
from kiosk.core.dossiers import canonical_json  # the bytes signed, sent and hashed

PROTOCOL = "DVC-SYNC-1"
MAX_CLOCK_SKEW_S = 300

# Every body read from the network or a bundle is bounded, on the wire and once inflated (docs/sync.md):
MAX_ANSWER_BYTES = 4 << 20      # an answer from the central, as received (a batch answer is ~1 KB per item)
MAX_INFLATED_BYTES = 32 << 20   # any gzip/zlib body once inflated (a batch of 200 dossiers or its answer)
MAX_BUNDLE_BYTES = 64 << 20     # a USB bundle file
MAX_BUNDLE_INFLATED_BYTES = 256 << 20  # the dossiers inside one bundle, inflated
MAX_JSON_DEPTH = 64             # arrays and objects inside one another, in any JSON read from outside


class TooLarge(ValueError):
    """A body past its limit: refused whole, nothing of it used."""


class BadJSON(ValueError):
    """Bytes that are not JSON, or JSON nested deeper than its limit; the message says which (never what is
    inside), for a 400 answer or a refused file."""


class TooDeep(BadJSON):
    """JSON nested deeper than its limit (refused before parsing: no RecursionError, no stack spent)."""


# A JSON string as the parser reads it: to its closing quote, or to the end of the data when it has none
# (possessive, so an unterminated string costs one pass, never a rescan from each later quote).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+\\?(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def json_depth_exceeds(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` opens more than ``max_depth`` arrays/objects inside one another (outside strings),
    found without recursion and in C-speed passes: the strings are cut out, only the brackets kept, and
    innermost pairs removed one level per pass. Exact for balanced brackets (all JSON); for unbalanced ones
    (never JSON) it may answer either way, but the parser then refuses them having gone at most
    2 × ``max_depth`` deep (``max_depth`` passes, then at most ``max_depth`` openers left in a row)."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False  # the parser can never go deeper than the brackets there are
    brackets = _JSON_STRING.sub(b"", data).translate(_ONE_KIND, _NOT_BRACKETS)
    too_deep = b"[" * (max_depth + 1)
    for _ in range(max_depth):
        if too_deep in brackets:
            return True
        fewer = brackets.replace(b"[]", b"")
        if fewer == brackets:  # nothing left to remove: what remains is unbalanced, and shallow enough
            return False
        brackets = fewer
    return b"[" in brackets  # after max_depth levels removed, an opening bracket left is one level too deep


def parse_json(data: bytes | str, limit: int = MAX_INFLATED_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """The one parser for JSON from outside (request bodies, answers, bundles, ack files): TooLarge past
    ``limit`` bytes, BadJSON when it is not JSON (UTF-8) or is nested deeper than ``max_depth``; never a
    RecursionError, whatever the bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadJSON("not JSON text")
    data = bytes(data)
    if len(data) > limit:
        raise TooLarge(f"JSON of more than {limit} bytes")
    if json_depth_exceeds(data, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        # As UTF-8 text only: bytes given to json.loads may be taken for UTF-16 or UTF-32, whose bracket
        # bytes the depth count above would not see as the parser does.
        return json.loads(data.decode("utf-8"))
    except RecursionError:  # not reachable after the depth check; kept so no caller ever sees one
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise BadJSON("not JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadJSON(f"not JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError:  # e.g. an integer of more digits than Python converts
        raise BadJSON("not JSON: a number out of range") from None


def inflate(data: bytes, limit: int, wbits: int = 31) -> bytes:
    """gzip (wbits 31) or zlib (15) data inflated to at most ``limit`` bytes; TooLarge past it, so a small
    bomb never grows into memory. Raises zlib.error on data that is not compressed that way."""
    inflater = zlib.decompressobj(wbits=wbits)
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail or (not inflater.eof and inflater.decompress(b"", 1)):
        raise TooLarge(f"inflates past {limit} bytes")
    if not inflater.eof:
        raise zlib.error("truncated compressed data")
    return out

H_STATION = "X-DVC-Station"
H_TIMESTAMP = "X-DVC-Timestamp"
H_CONTENT = "X-DVC-Content-SHA256"
H_SIGNATURE = "X-DVC-Signature"
H_PRIOR_ACK = "X-DVC-Prior-Ack"  # base64 of the central's earlier acknowledgement, resent after a restore
H_IF_NONE_MATCH = "If-None-Match"  # a conditional status pull: feed_tag() of the store and cursor the station holds
_TAG_PART = re.compile(r"[A-Za-z0-9_.-]{1,64}")

ACK = "dvc-central-ack/1"
REJECT = "dvc-central-reject/1"
CHANGES = "dvc-central-changes/1"
HOLDS = "dvc-central-holds/1"
BLOB_REFUSAL = "dvc-central-blob-refusal/1"  # a blob refused for good: too large, over the quota (413)
TRACK = "dvc-central-track/1"  # what any station may tell a citizen of a dossier, by its tracking code
RATINGS = "dvc-central-ratings/1"  # which ratings of a batch the central holds now, and which it refuses


def feed_tag(store, since: int) -> str | None:
    """The entity tag of a conditional status pull, ``"<store_id>/<generation>/<since>"``: what a station
    sends as If-None-Match when it holds every change up to ``since`` of that store; the central answers 304
    (and this tag as ETag) when that is all there is. None for a store it cannot be made of."""
    if not isinstance(store, dict):
        return None
    store_id, generation = store.get("store_id"), store.get("generation")
    if not isinstance(store_id, str) or not _TAG_PART.fullmatch(store_id) or type(generation) is not int \
            or generation < 0 or type(since) is not int or since < 0:
        return None
    return f'"{store_id}/{generation}/{since}"'


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signing_string(method: str, path: str, timestamp: str, body_sha256: str, station_id: str) -> bytes:
    return "\n".join([PROTOCOL, method.upper(), path, timestamp, body_sha256, station_id]).encode()


def sign_request(key: Ed25519PrivateKey, station_id: str, method: str, path: str, body: bytes,
                 now: float | None = None) -> dict:
    """The headers that carry the station's signature of one request."""
    timestamp = str(int(time.time() if now is None else now))
    body_sha256 = sha256_hex(body)
    signature = key.sign(signing_string(method, path, timestamp, body_sha256, station_id))
    return {H_STATION: station_id, H_TIMESTAMP: timestamp, H_CONTENT: body_sha256,
            H_SIGNATURE: base64.b64encode(signature).decode()}


class AuthError(Exception):
    """A request the central refuses before reading it (401/403)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def verify_request(public_key: Ed25519PublicKey, headers, method: str, path: str, body: bytes,
                   now: float | None = None, max_skew: int = MAX_CLOCK_SKEW_S) -> None:
    station_id = headers.get(H_STATION, "")
    timestamp, body_sha256 = headers.get(H_TIMESTAMP, ""), headers.get(H_CONTENT, "")
    if sha256_hex(body) != body_sha256:
        raise AuthError(401, "bad_body_hash", "the body does not match its hash")
    try:
        skew = abs(int(timestamp) - (time.time() if now is None else now))
        signature = base64.b64decode(headers.get(H_SIGNATURE, ""), validate=True)
    except ValueError:
        raise AuthError(401, "bad_signature", "malformed timestamp or signature") from None
    if skew > max_skew:
        raise AuthError(401, "stale_timestamp", f"timestamp is {int(skew)} s off the central's clock")
    try:
        public_key.verify(signature, signing_string(method, path, timestamp, body_sha256, station_id))
    except InvalidSignature:
        raise AuthError(401, "bad_signature", "the signature does not verify") from None


def sign_document(key: Ed25519PrivateKey, document: dict) -> dict:
    return {"document": document, "signature": base64.b64encode(key.sign(canonical_json(document))).decode()}


class NotGenuine(Exception):
    """An answer that is not a signed document of the central (a portal, a proxy, a truncated body)."""


def open_document(public_key: Ed25519PublicKey, envelope, expected_type: str) -> dict:
    """The document inside a signed envelope, or NotGenuine."""
    if isinstance(envelope, (bytes, str)):
        try:
            envelope = parse_json(envelope, MAX_ANSWER_BYTES)
        except ValueError:  # BadJSON, TooLarge
            raise NotGenuine("not JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("document"), dict):
        raise NotGenuine("not a signed envelope")
    document = envelope["document"]
    try:
        public_key.verify(base64.b64decode(envelope.get("signature", ""), validate=True), canonical_json(document))
    except (InvalidSignature, ValueError, TypeError):
        raise NotGenuine("the signature is not the central's") from None
    if document.get("type") != expected_type:
        raise NotGenuine(f"expected a {expected_type} document, got {document.get('type')!r}")
    return document
