"""USB bundles for places with no link, and the ack files that come back.

A bundle (``<station>-<time>-<id>.dvcbundle``) is JSON: a header (format, station, bundle id, time, the
ephemeral X25519 public key, nonce), the ciphertext, and the station's Ed25519 signature over both. The
plaintext (zlib-compressed JSON of the canonical dossier documents) is encrypted with AES-256-GCM under a
key agreed by X25519 between a fresh ephemeral key and the central's bundle key (HKDF-SHA256), the header
bound as associated data. Only the central can read it; only the station can have made it.

The central imports a bundle through exactly the same receive rule as ``PUT /submissions``, so importing
twice changes nothing, and writes an *ack file* (``<bundle file name>.acks.json``): the central's signed
acknowledgements and refusals, the same documents the online path returns. The station applies an ack
file exactly as it applies online answers. Until then bundled dossiers stay pending: the worker keeps
offering them online, and the next export includes them again, so a lost stick loses nothing.

A bundle carries the dossiers' documents too: the PDFs not yet confirmed by the central, each under
``blobs`` (its sha256 and its bytes in base64), checked against its hash and stored in the central's blob
store before any dossier is received, so a dossier finds its attachments there. One bundle carries at most
``MAX_BUNDLE_DOCUMENT_BYTES`` of them, so the file stays within what the central reads (64 MiB, and 256 MiB
inflated); the dossiers whose documents do not fit wait for the next export (``left``). When the ack file
comes back, the documents of every acknowledged dossier are marked uploaded. A bundle without ``blobs``
(older stations) reads as before.

Both files are written whole (``.part``, fsync, rename) and readable by their owner only (0600); a folder
made for them is 0700.

This module owns the tables ``sync_bundles`` and ``sync_bundle_items`` (which dossiers went out in which
bundle); the dossiers and the outbox it reads through the core's functions.
"""
import base64
import binascii
import json
import logging
import os
import sqlite3
import uuid
import zlib
from pathlib import Path

import jsonschema
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk.core import audit, documents, dossiers, outbox
from kiosk.core.db import write_transaction
from kiosk.core.sealing import open_sealed

from . import protocol
from .keys import ed25519_public, public_b64
from .worker import iso, mark_documents_sent, record_ack, record_rejection, utcnow

log = logging.getLogger("dvc.sync")
BUNDLE = "dvc-bundle/1"
ACK_FILE = "dvc-acks/1"
MAX_BUNDLE_ITEMS = 5000           # dossiers in one bundle (an export takes at most this many)
MAX_BUNDLE_ITEM_BYTES = 4 << 20   # one dossier's canonical JSON, as a PUT may be
# The documents (PDF bytes) one bundle carries: base64 inside, compressed, encrypted and base64 again, they
# take about 1.36 times as much in the file, which the central reads whole (protocol.MAX_BUNDLE_BYTES, 64 MiB).
MAX_BUNDLE_DOCUMENT_BYTES = 40 << 20
MAX_BLOB_BYTES = 25 << 20         # one document, as the central's blob store takes (BLOB_MAX_BYTES)


class BundleError(ValueError):
    """A bundle or ack file that cannot be used; the message says why (never what is inside), ``code`` what
    kind of problem it is, for a screen to say in plain words (``BUNDLE_ERROR_CODES``)."""

    def __init__(self, message: str, code: str = "not_bundle"):
        super().__init__(message)
        self.code = code


# What BundleError.code may be: a file too large, unreadable or not what it should be; a bundle from a
# station not enrolled or revoked, not signed by its station, made for another central, with contents that
# are not right; an ack file that is not one, or is for another station.
BUNDLE_ERROR_CODES = ("too_large", "unreadable", "not_bundle", "unknown_station", "revoked_station",
                      "bad_signature", "wrong_central", "bad_contents", "not_ack_file", "other_station")
BUNDLE_SUFFIX = ".dvcbundle"
# An ack file is named after its bundle: ``<bundle file name>.acks.json`` beside it (the CLI) or as the
# central's staff page offers it for download; the staff screen of the station lists ``*.acks.json``.
ACK_SUFFIX = ".acks.json"


# What a bundle, its dossiers and an ack file must look like, checked before anything in them is used. A
# problem is reported by where it is and what was expected (``_problem``), never by the value found.
_UUID = {"type": "string", "minLength": 36, "maxLength": 36,
         "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
         "description": "a UUID (lowercase hex 8-4-4-4-12)"}
_SHA256 = {"type": "string", "minLength": 64, "maxLength": 64, "pattern": "^[0-9a-f]{64}$",
           "description": "a sha256 (64 lowercase hex characters)"}
_STATION = {"type": "string", "minLength": 1, "maxLength": 64, "description": "a station id (1-64 characters)"}


def _b64_of(n_bytes: int) -> dict:
    length = (n_bytes + 2) // 3 * 4
    return {"type": "string", "minLength": length, "maxLength": length, "pattern": "^[A-Za-z0-9+/]*={0,2}$",
            "description": f"{n_bytes} bytes in base64 ({length} characters)"}


BUNDLE_SCHEMA = {
    "type": "object", "required": ["header", "ciphertext", "signature"],
    "properties": {
        "header": {
            "type": "object",
            "required": ["format", "station_id", "bundle_id", "created_at", "ephemeral_key", "nonce", "dossiers"],
            "properties": {
                "format": {"const": BUNDLE},
                "station_id": _STATION,
                "bundle_id": _UUID,
                "created_at": {"type": "string", "maxLength": 64, "description": "a time (at most 64 characters)"},
                "ephemeral_key": _b64_of(32),
                "nonce": _b64_of(12),
                "dossiers": {"type": "integer", "minimum": 0, "maximum": MAX_BUNDLE_ITEMS,
                             "description": f"a count from 0 to {MAX_BUNDLE_ITEMS}"}}},
        "ciphertext": {"type": "string"},
        "signature": _b64_of(64)}}
BUNDLE_ITEMS_SCHEMA = {
    "type": "object", "required": ["items"],
    "properties": {
        "items": {
            "type": "array", "maxItems": MAX_BUNDLE_ITEMS,
            "items": {"type": "object", "required": ["submission_id", "body"],
                      "properties": {"submission_id": _UUID,
                                     "body": {"type": "string", "minLength": 2, "maxLength": MAX_BUNDLE_ITEM_BYTES,
                                              "description": "a dossier's canonical JSON (at most 4 MiB)"}}}},
        "blobs": {  # optional: the dossiers' documents (bundles made before documents have none)
            "type": "array", "maxItems": MAX_BUNDLE_ITEMS,
            "items": {"type": "object", "required": ["sha256", "data"],
                      "properties": {"sha256": _SHA256,
                                     "data": {"type": "string", "minLength": 4,
                                              "maxLength": (MAX_BLOB_BYTES + 2) // 3 * 4,
                                              "description": "a document's bytes in base64 (at most 25 MiB)"}}}}}}


def _envelope(required: list[str]) -> dict:
    return {"type": "object", "required": ["document", "signature"],
            "properties": {"document": {"type": "object", "required": ["type", *required],
                                        "properties": {"type": {"type": "string"}, "submission_id": _UUID,
                                                       "station_id": _STATION, "payload_sha256": _SHA256}},
                           "signature": _b64_of(64)}}


ACK_FILE_SCHEMA = {
    "type": "object", "required": ["format", "station_id", "acks", "rejections"],
    "properties": {
        "format": {"const": ACK_FILE},
        "station_id": _STATION,
        "bundle_id": _UUID,
        "acks": {"type": "array", "maxItems": MAX_BUNDLE_ITEMS,
                 "items": _envelope(["submission_id", "station_id", "payload_sha256"])},
        "rejections": {"type": "array", "maxItems": MAX_BUNDLE_ITEMS,
                       "items": _envelope(["submission_id", "station_id", "payload_sha256"])}}}
_VALIDATORS = {id(schema): jsonschema.Draft202012Validator(schema)
               for schema in (BUNDLE_SCHEMA, BUNDLE_ITEMS_SCHEMA, ACK_FILE_SCHEMA)}
_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _where(path) -> str:
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "the whole"


def _problem(error: jsonschema.ValidationError) -> str:
    """What is wrong, said from the schema alone (the value found is never repeated: it may be personal)."""
    kind, expected, schema = error.validator, error.validator_value, error.schema
    if kind == "required":
        return "has no " + ", ".join(k for k in expected if k not in error.instance)
    if kind == "type":
        return "must be " + _TYPE_WORDS.get(expected, str(expected))
    if kind == "const":
        return f"must be {expected!r}"
    if kind == "maxItems":
        return f"has more than {expected} items"
    if kind in ("pattern", "minLength", "maxLength", "minimum", "maximum") and schema.get("description"):
        return "must be " + schema["description"]
    return f"fails the {kind} rule"


def _check(schema: dict, instance, what: str, code: str) -> None:
    """BundleError naming the first item that does not fit the schema, and why."""
    error = next(iter(_VALIDATORS[id(schema)].iter_errors(instance)), None)
    if error is None:
        return
    path = list(error.absolute_path)
    item = ""
    if len(path) >= 2 and isinstance(path[1], int):  # items[3] / blobs[3] / acks[3]: name the entry
        entry = instance[path[0]][path[1]]
        item = f"{'item' if path[0] == 'items' else path[0] + ' entry'} {path[1]}"
        sid = entry.get("submission_id") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("document"), dict):
            sid = entry["document"].get("submission_id")
        if isinstance(sid, str) and jsonschema.Draft202012Validator(_UUID).is_valid(sid):
            item += f" (submission {sid})"
        item += ": "
    raise BundleError(f"{what}: {item}{_where(path)} {_problem(error)}", code)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _aead_key(shared: bytes, header: dict) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=f"{BUNDLE}:{header['bundle_id']}".encode()).derive(shared)


def bundle_file_name(station_id: str, created_at: str, bundle_id: str) -> str:
    """The name of a bundle's file: ``<station>-<time, UTC, to the second>-<id's first 8>.dvcbundle``."""
    return f"{station_id}-{created_at[:19].replace(':', '').replace('-', '')}-{bundle_id[:8]}{BUNDLE_SUFFIX}"


def ack_file_name(bundle_name: str) -> str:
    """The name of the ack file that answers the bundle named ``bundle_name``: that name + ``.acks.json``."""
    return bundle_name + ACK_SUFFIX


def write_private_file(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (``.part``, fsync, rename), readable by this user only (0600: a
    bundle and an ack file say which dossiers a station took and when)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        try:
            os.fchmod(f.fileno(), 0o600)  # a .part left from before may have had another mode
        except OSError:
            pass  # a stick's FAT has no modes
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # the rename itself must survive a pulled stick or power cut
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass



def seal_bundle(contents, *, station_id: str, station_key, central_bundle_key, dossiers: int,
                bundle_id: str | None = None, created_at: str | None = None) -> tuple[dict, bytes]:
    """(header, the bundle file's bytes) for ``contents`` ({"items": [...]}; bytes are taken as the JSON
    text itself): compressed, encrypted for the central, signed by the station."""
    header = {"format": BUNDLE, "station_id": station_id, "bundle_id": bundle_id or str(uuid.uuid4()),
              "created_at": created_at or iso(utcnow()), "dossiers": dossiers}
    ephemeral = X25519PrivateKey.generate()
    nonce = os.urandom(12)
    header.update(ephemeral_key=public_b64(ephemeral), nonce=_b64(nonce))
    text = contents if isinstance(contents, bytes) else protocol.canonical_json(contents)
    ciphertext = AESGCM(_aead_key(ephemeral.exchange(central_bundle_key), header)).encrypt(
        nonce, zlib.compress(text, 9), protocol.canonical_json(header))
    signed = {"header": header, "ciphertext": _b64(ciphertext)}
    bundle = {**signed, "signature": _b64(station_key.sign(protocol.canonical_json(signed)))}
    return header, protocol.canonical_json(bundle)


def _unsent_documents(conn: sqlite3.Connection, payload_key: bytes, submission_id: str,
                      carried: dict[str, bytes]) -> dict[str, bytes] | None:
    """{sha256: PDF} of the dossier's documents the central has not confirmed and the bundle does not carry
    yet; None when one is not here as its dossier names it (the worker quarantines that dossier)."""
    found = {}
    for row in documents.unsent(conn, submission_id):
        if row["sha256"] in carried or row["sha256"] in found:
            continue
        try:
            pdf = documents.pdf_of(conn, payload_key, submission_id, row["document_id"])
        except ValueError:
            return None
        if pdf is None:
            return None
        found[row["sha256"]] = pdf
    return found


def export_bundle(conn: sqlite3.Connection, folder: Path, *, station_id: str, station_key, payload_key: bytes,
                  central_bundle_key, limit: int = MAX_BUNDLE_ITEMS,
                  document_bytes: int = MAX_BUNDLE_DOCUMENT_BYTES) -> dict:
    """Write every pending dossier, with its documents not yet confirmed by the central (at most
    ``document_bytes`` of them: a dossier whose documents do not fit waits for the next bundle), into a new
    bundle in ``folder``; record which dossiers it carries. Returns {"path", "bundle_id", "dossiers",
    "documents", "left"} (path None when nothing is pending; ``left``: dossiers for the next bundle)."""
    rows = outbox.pending_payloads(conn, limit)
    bundle_id = str(uuid.uuid4())
    items, blobs, left = [], {}, 0
    for row in rows:
        document = open_sealed(payload_key, row["payload_sealed"], row["submission_id"])
        body = protocol.canonical_json(document)
        if protocol.sha256_hex(body) != row["payload_sha256"]:
            continue  # the worker quarantines it; a bundle carries only what the central will accept
        wanted = _unsent_documents(conn, payload_key, row["submission_id"], blobs)
        if wanted is None:
            continue  # as above
        if sum(map(len, blobs.values())) + sum(map(len, wanted.values())) > document_bytes:
            left += 1
            continue
        blobs.update(wanted)
        items.append({"submission_id": row["submission_id"], "body": body.decode()})
    if not items:
        return {"path": None, "bundle_id": None, "dossiers": 0, "documents": 0, "left": left}
    contents = {"items": items}
    if blobs:  # a bundle without documents stays as bundles were before
        contents["blobs"] = [{"sha256": sha, "data": _b64(pdf)} for sha, pdf in blobs.items()]
    created_at = iso(utcnow())
    _header, data = seal_bundle(contents, station_id=station_id, station_key=station_key,
                                central_bundle_key=central_bundle_key, dossiers=len(items), bundle_id=bundle_id,
                                created_at=created_at)
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # a folder made here is this user's only
    path = folder / bundle_file_name(station_id, created_at, bundle_id)
    write_private_file(path, data)
    with write_transaction(conn):
        conn.execute("INSERT INTO sync_bundles (bundle_id, created_at, file_name, dossiers) VALUES (?, ?, ?, ?)",
                     (bundle_id, created_at, path.name, len(items)))
        conn.executemany("INSERT INTO sync_bundle_items (bundle_id, submission_id) VALUES (?, ?)",
                         [(bundle_id, item["submission_id"]) for item in items])
        audit.append(conn, "sync", "bundle.exported", bundle_id, {"dossiers": len(items), "documents": len(blobs)})
    return {"path": path, "bundle_id": bundle_id, "dossiers": len(items), "documents": len(blobs), "left": left}


def read_bounded(path: str | Path, limit: int) -> bytes:
    """A file from a USB stick, refused (BundleError) before reading when it is larger than ``limit``."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"cannot read the file ({exc.strerror or type(exc).__name__})", "unreadable") from None
    if len(data) > limit:
        raise BundleError(f"the file is larger than {limit >> 20} MiB: refused whole, nothing imported", "too_large")
    return data


def _parsed(data: bytes, what: str, not_one: str, code: str):
    """The JSON of a file from a stick, within the bundle limits, or a BundleError saying what is wrong."""
    if len(data) > protocol.MAX_BUNDLE_BYTES:
        raise BundleError(f"{what} is larger than {protocol.MAX_BUNDLE_BYTES >> 20} MiB: refused whole", "too_large")
    try:
        return protocol.parse_json(data, protocol.MAX_BUNDLE_BYTES)
    except ValueError as exc:  # BadJSON, TooLarge
        raise BundleError(f"{not_one}: {exc}", code) from None


def open_bundle(central, data: bytes) -> tuple[dict, list[dict]]:
    """Check and decrypt a bundle at the central: (header, items). Refuses, with a BundleError saying why
    and naming the item, anything that is not a well-formed bundle of well-formed dossier items and
    documents, unknown or revoked stations, a bad signature, a ciphertext that does not open. Nothing else
    is raised."""
    header, items, _blobs = _opened(central, data)
    return header, items


def _opened(central, data: bytes) -> tuple[dict, list[dict], list[tuple[str, bytes]]]:
    """``open_bundle`` with the bundle's documents: (header, items, [(sha256, bytes)]), each checked."""
    bundle = _parsed(data, "the bundle", "not a dvc bundle", "not_bundle")
    if isinstance(bundle, dict) and isinstance(bundle.get("header"), dict) and bundle["header"].get("format") != BUNDLE:
        raise BundleError(f"not a {BUNDLE} file", "not_bundle")
    _check(BUNDLE_SCHEMA, bundle, "not a dvc bundle", "not_bundle")
    header = bundle["header"]
    try:
        ciphertext, signature = _unb64(bundle["ciphertext"]), _unb64(bundle["signature"])
    except (ValueError, binascii.Error):
        raise BundleError("not a dvc bundle: the ciphertext or the signature is not base64", "not_bundle") from None
    station = central.store.station(header["station_id"])
    if station is None:
        raise BundleError("the bundle's station is not enrolled", "unknown_station")
    if station.revoked_at:
        raise BundleError("the bundle's station was revoked", "revoked_station")
    try:
        ed25519_public(station.public_key).verify(
            signature, protocol.canonical_json({"header": header, "ciphertext": bundle["ciphertext"]}))
    except InvalidSignature:
        raise BundleError("the bundle is not signed by its station's key", "bad_signature") from None
    try:
        from .keys import x25519_public

        shared = central.bundle_key.exchange(x25519_public(header["ephemeral_key"]))
        plaintext = AESGCM(_aead_key(shared, header)).decrypt(_unb64(header["nonce"]), ciphertext,
                                                              protocol.canonical_json(header))
        text = protocol.inflate(plaintext, protocol.MAX_BUNDLE_INFLATED_BYTES, wbits=15)
    except protocol.TooLarge:
        raise BundleError(f"the bundle's dossiers inflate past {protocol.MAX_BUNDLE_INFLATED_BYTES >> 20} MiB: "
                          "refused whole, nothing imported", "too_large") from None
    except (InvalidTag, ValueError, TypeError, binascii.Error, zlib.error):
        raise BundleError("the bundle does not open with this central's key", "wrong_central") from None
    return _bundle_contents(text, header)


def _bundle_contents(text: bytes, header: dict) -> tuple[dict, list[dict], list[tuple[str, bytes]]]:
    """(header, the dossier items, the documents as (sha256, bytes)) of a decrypted bundle, every one
    checked (BundleError naming the first that is wrong, a document that does not hash to its name too):
    refused whole, so nothing of a bundle that is not right is imported."""
    try:
        contents = protocol.parse_json(text, protocol.MAX_BUNDLE_INFLATED_BYTES)
    except ValueError as exc:  # BadJSON, TooLarge
        raise BundleError(f"the bundle's dossiers are {exc}: refused whole, nothing imported", "bad_contents") from None
    _check(BUNDLE_ITEMS_SCHEMA, contents, "the bundle's dossiers (refused whole, nothing imported)", "bad_contents")
    items = contents["items"]
    if len(items) != header["dossiers"]:
        raise BundleError(f"the bundle's header says {header['dossiers']} dossiers but it holds {len(items)}: "
                          "refused whole, nothing imported", "bad_contents")
    for n, item in enumerate(items):
        try:
            size = len(item["body"].encode())
        except UnicodeEncodeError:
            size = None
        if size is None or size > MAX_BUNDLE_ITEM_BYTES:
            why = "is not UTF-8 text" if size is None else f"is larger than {MAX_BUNDLE_ITEM_BYTES >> 20} MiB"
            raise BundleError(f"the bundle's dossiers (refused whole, nothing imported): item {n} (submission "
                              f"{item['submission_id']}): items[{n}].body {why}", "bad_contents")
    blobs = []
    for n, blob in enumerate(contents.get("blobs") or []):
        try:
            pdf = _unb64(blob["data"])
        except (ValueError, binascii.Error):
            pdf = None
        if pdf is None or protocol.sha256_hex(pdf) != blob["sha256"]:
            why = "is not base64" if pdf is None else "does not hash to its sha256"
            raise BundleError(f"the bundle's documents (refused whole, nothing imported): blobs entry {n}: "
                              f"blobs[{n}].data {why}", "bad_contents")
        blobs.append((blob["sha256"], pdf))
    return header, items, blobs


def _keep_blob(blobs, station_id: str, sha256: str, data: bytes) -> str:
    """Store a whole document from a bundle for its station; 'complete' or why not (as the blob store says:
    too large, over the station's quota...). With a store that takes whole blobs (``store_state``) in one
    call; else as the last chunk of the station's own upload (from where an online upload of it stopped)."""
    if hasattr(blobs, "store_state"):
        return blobs.store_state(station_id, sha256, data)
    start = blobs.offset(sha256, station_id)
    state = blobs.append(station_id, sha256, start, data[start:], len(data))
    if state in ("offset_mismatch", "total_mismatch", "hash_mismatch") and start:
        state = blobs.append(station_id, sha256, 0, data, len(data))  # its upload was dropped meanwhile
    return state


def import_bundle(central, data: bytes) -> tuple[dict, dict]:
    """Receive every dossier of a bundle (idempotent); returns (ack file document, counts). BundleError
    (and nothing else) for a bundle that cannot be imported; each dossier refused gets the central's signed
    refusal in the ack file, as online."""
    _header, ack_file, counts = receive_bundle(central, data)
    return ack_file, counts


def receive_bundle(central, data: bytes) -> tuple[dict, dict, dict]:
    """``import_bundle`` with the bundle's checked header first: (header, ack file document, counts)."""
    header, items, blobs = _opened(central, data)
    for sha256, pdf in blobs:  # before the dossiers, which the central receives only with their documents
        state = _keep_blob(central.blobs, header["station_id"], sha256, pdf)
        if state != "complete":  # its dossier is deferred (428) and stays pending at the station
            log.warning("bundle %s: a document was not stored (%s)", header["bundle_id"], state)
    acks, refusals = [], []
    counts = {"created": 0, "duplicate": 0, "rejected": 0, "deferred": 0}
    for item in items:
        status, envelope = central.receive(header["station_id"], item["submission_id"], item["body"].encode())
        if status in (200, 201):
            acks.append(envelope)
            counts["created" if status == 201 else "duplicate"] += 1
        elif status in (409, 422):
            refusals.append(envelope)
            counts["rejected"] += 1
        else:  # e.g. blobs not there yet: stays pending at the station
            counts["deferred"] += 1
    ack_file = {"format": ACK_FILE, "station_id": header["station_id"], "bundle_id": header["bundle_id"],
                "acks": acks, "rejections": refusals}
    return header, ack_file, counts


def apply_ack_file(conn: sqlite3.Connection, data: bytes, *, station_id: str, central_signing_key) -> dict:
    """Apply the central's answers brought back on a stick. Each answer is checked like an online one
    (signature, this station, this content); applying a file twice changes nothing. A file that is not a
    well-formed ack file (every entry checked) is refused whole with a BundleError naming the entry."""
    ack_file = _parsed(data, "the ack file", "not an ack file", "not_ack_file")
    if not isinstance(ack_file, dict) or ack_file.get("format") != ACK_FILE:
        raise BundleError(f"not a {ACK_FILE} file", "not_ack_file")
    _check(ACK_FILE_SCHEMA, ack_file, "not a well-formed ack file (nothing applied)", "not_ack_file")
    if ack_file["station_id"] != station_id:
        raise BundleError(f"the ack file is for station {ack_file['station_id']!r}, not this one ({station_id}): "
                          "nothing applied", "other_station")
    counts = {"acknowledged": 0, "rejected": 0, "already": 0, "ignored": 0}
    for kind, doc_type in (("acks", protocol.ACK), ("rejections", protocol.REJECT)):
        for envelope in ack_file[kind]:
            try:
                doc = protocol.open_document(central_signing_key, envelope, doc_type)
            except protocol.NotGenuine:
                counts["ignored"] += 1
                continue
            held = dossiers.payload_sha256(conn, doc.get("submission_id"))
            if doc.get("station_id") != station_id or held is None or held != doc.get("payload_sha256"):
                counts["ignored"] += 1
            elif kind == "acks":
                counts["acknowledged" if record_ack(conn, doc, envelope, "bundle") else "already"] += 1
                mark_documents_sent(conn, doc["submission_id"])  # the central held them when it received it
            else:
                changed = record_rejection(conn, doc["submission_id"], doc["code"], f"{doc['code']}: {doc['reason']}")
                counts["rejected" if changed else "already"] += 1
    return counts


def bundles_named(conn: sqlite3.Connection, file_names: list[str]) -> dict[str, sqlite3.Row]:
    """{file name: its row (bundle_id, created_at, file_name, dossiers)} of the bundles made here that bear
    one of these names: which export an ack file found on a stick answers."""
    if not file_names:
        return {}
    marks = ", ".join("?" * len(file_names))
    return {row["file_name"]: row for row in conn.execute(
        f"SELECT bundle_id, created_at, file_name, dossiers FROM sync_bundles WHERE file_name IN ({marks})",
        list(file_names))}


def bundled_pending(conn: sqlite3.Connection) -> int:
    """How many pending dossiers are also on a USB bundle made here."""
    return conn.execute("SELECT COUNT(DISTINCT b.submission_id) FROM sync_bundle_items b JOIN outbox o "
                        "USING (submission_id) WHERE o.state = 'pending'").fetchone()[0]


def ack_file_bytes(ack_file: dict) -> bytes:
    """The ack file as it is written to a stick (the CLI) and downloaded from the central's staff page."""
    return json.dumps(ack_file, ensure_ascii=False, indent=1).encode()


def write_ack_file(path: Path, ack_file: dict) -> None:
    write_private_file(Path(path), ack_file_bytes(ack_file))


def export_station_bundle(config: dict, conn: sqlite3.Connection, folder: Path) -> dict:
    """``export_bundle`` with the station's own keys, for the CLI and the staff screen alike.
    Raises FileNotFoundError when the station has not been enrolled (no central keys yet)."""
    from kiosk.core.sealing import load_or_create_key

    from .keys import load_central_keys, load_or_create_signing_key
    from .worker import station_paths

    paths = station_paths(config)
    _signing, bundle_key = load_central_keys(paths["central_keys"])
    return export_bundle(conn, Path(folder), station_id=config["station"]["id"],
                         station_key=load_or_create_signing_key(paths["station_key"]),
                         payload_key=load_or_create_key(paths["payload_key"]), central_bundle_key=bundle_key)


def apply_station_ack_file(config: dict, conn: sqlite3.Connection, data: bytes) -> dict:
    """``apply_ack_file`` with the station's own id and trust in the central, for the staff screen as for
    ``kiosk sync import-acks``. Raises FileNotFoundError when the station has not been enrolled (no central
    keys yet), BundleError for a file that cannot be applied."""
    from .keys import load_central_keys
    from .worker import station_paths

    signing, _bundle_key = load_central_keys(station_paths(config)["central_keys"])
    return apply_ack_file(conn, data, station_id=config["station"]["id"], central_signing_key=signing)
