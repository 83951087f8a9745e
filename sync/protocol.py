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


class TooLarge(ValueError):
    """A body past its limit: refused whole, nothing of it used."""


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

ACK = "dvc-central-ack/1"
REJECT = "dvc-central-reject/1"
CHANGES = "dvc-central-changes/1"
HOLDS = "dvc-central-holds/1"

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
            envelope = json.loads(envelope)
        except (ValueError, UnicodeDecodeError):
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
