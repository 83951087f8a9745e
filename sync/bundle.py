"""USB bundles for places with no link, and the ack files that come back.

A bundle (``<station>-<time>-<id>.dvcbundle``) is JSON: a header (format, station, bundle id, time, the
ephemeral X25519 public key, nonce), the ciphertext, and the station's Ed25519 signature over both. The
plaintext (zlib-compressed JSON of the canonical dossier documents) is encrypted with AES-256-GCM under a
key agreed by X25519 between a fresh ephemeral key and the central's bundle key (HKDF-SHA256), the header
bound as associated data. Only the central can read it; only the station can have made it.

The central imports a bundle through exactly the same receive rule as ``PUT /submissions``, so importing
twice changes nothing, and writes an *ack file*: the central's signed acknowledgements and refusals,
the same documents the online path returns. The station applies an ack file exactly as it applies online
answers. Until then bundled dossiers stay pending: the worker keeps offering them online, and the next
export includes them again, so a lost stick loses nothing.

This module owns the tables ``sync_bundles`` and ``sync_bundle_items`` (which dossiers went out in which
bundle); the dossiers and the outbox it reads through the core's functions.
"""
import base64
import json
import os
import sqlite3
import uuid
import zlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk.core import audit, dossiers, outbox
from kiosk.core.db import write_transaction
from kiosk.core.sealing import open_sealed

from . import protocol
from .keys import ed25519_public, public_b64
from .worker import iso, record_ack, record_rejection, utcnow

BUNDLE = "dvc-bundle/1"
ACK_FILE = "dvc-acks/1"


class BundleError(ValueError):
    """A bundle or ack file that cannot be used; the message says why (never what is inside)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _aead_key(shared: bytes, header: dict) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=f"{BUNDLE}:{header['bundle_id']}".encode()).derive(shared)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
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


def export_bundle(conn: sqlite3.Connection, folder: Path, *, station_id: str, station_key, payload_key: bytes,
                  central_bundle_key, limit: int = 5000) -> dict:
    """Write every pending dossier into a new bundle in ``folder``; record which dossiers it carries.
    Returns {"path", "bundle_id", "dossiers"} (path None when nothing is pending)."""
    rows = outbox.pending_payloads(conn, limit)
    bundle_id = str(uuid.uuid4())
    if not rows:
        return {"path": None, "bundle_id": None, "dossiers": 0}
    items = []
    for row in rows:
        document = open_sealed(payload_key, row["payload_sealed"], row["submission_id"])
        body = protocol.canonical_json(document)
        if protocol.sha256_hex(body) != row["payload_sha256"]:
            continue  # the worker quarantines it; a bundle carries only what the central will accept
        items.append({"submission_id": row["submission_id"], "body": body.decode()})
    created_at = iso(utcnow())
    ephemeral = X25519PrivateKey.generate()
    nonce = os.urandom(12)
    header = {"format": BUNDLE, "station_id": station_id, "bundle_id": bundle_id, "created_at": created_at,
              "ephemeral_key": public_b64(ephemeral), "nonce": _b64(nonce), "dossiers": len(items)}
    plaintext = zlib.compress(protocol.canonical_json({"items": items}), 9)
    ciphertext = AESGCM(_aead_key(ephemeral.exchange(central_bundle_key), header)).encrypt(
        nonce, plaintext, protocol.canonical_json(header))
    signed = {"header": header, "ciphertext": _b64(ciphertext)}
    bundle = {**signed, "signature": _b64(station_key.sign(protocol.canonical_json(signed)))}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{station_id}-{created_at[:19].replace(':', '').replace('-', '')}-{bundle_id[:8]}.dvcbundle"
    _write_atomically(path, protocol.canonical_json(bundle))
    with write_transaction(conn):
        conn.execute("INSERT INTO sync_bundles (bundle_id, created_at, file_name, dossiers) VALUES (?, ?, ?, ?)",
                     (bundle_id, created_at, path.name, len(items)))
        conn.executemany("INSERT INTO sync_bundle_items (bundle_id, submission_id) VALUES (?, ?)",
                         [(bundle_id, item["submission_id"]) for item in items])
        audit.append(conn, "sync", "bundle.exported", bundle_id, {"dossiers": len(items)})
    return {"path": path, "bundle_id": bundle_id, "dossiers": len(items)}


def read_bounded(path: str | Path, limit: int) -> bytes:
    """A file from a USB stick, refused (BundleError) before reading when it is larger than ``limit``."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"the file is larger than {limit >> 20} MiB: refused whole, nothing imported")
    return data


def open_bundle(central, data: bytes) -> tuple[dict, list[dict]]:
    """Check and decrypt a bundle at the central: (header, items). Refuses unknown or revoked stations,
    a bad signature, a ciphertext that does not open, and items claiming another station."""
    if len(data) > protocol.MAX_BUNDLE_BYTES:
        raise BundleError(f"the bundle is larger than {protocol.MAX_BUNDLE_BYTES >> 20} MiB: refused whole")
    try:
        bundle = json.loads(data)
        header, ciphertext = bundle["header"], _unb64(bundle["ciphertext"])
        signature = _unb64(bundle["signature"])
    except (ValueError, KeyError, TypeError):
        raise BundleError("not a dvc bundle") from None
    if header.get("format") != BUNDLE:
        raise BundleError(f"not a {BUNDLE} file")
    station = central.store.station(header.get("station_id", ""))
    if station is None:
        raise BundleError("the bundle's station is not enrolled")
    if station.revoked_at:
        raise BundleError("the bundle's station was revoked")
    try:
        ed25519_public(station.public_key).verify(
            signature, protocol.canonical_json({"header": header, "ciphertext": bundle["ciphertext"]}))
    except InvalidSignature:
        raise BundleError("the bundle is not signed by its station's key") from None
    try:
        from .keys import x25519_public

        shared = central.bundle_key.exchange(x25519_public(header["ephemeral_key"]))
        plaintext = AESGCM(_aead_key(shared, header)).decrypt(_unb64(header["nonce"]), ciphertext,
                                                              protocol.canonical_json(header))
        items = json.loads(protocol.inflate(plaintext, protocol.MAX_BUNDLE_INFLATED_BYTES, wbits=15))["items"]
    except protocol.TooLarge:
        raise BundleError(f"the bundle's dossiers inflate past {protocol.MAX_BUNDLE_INFLATED_BYTES >> 20} MiB: "
                          "refused whole, nothing imported") from None
    except (InvalidTag, ValueError, KeyError, TypeError, zlib.error):
        raise BundleError("the bundle does not open with this central's key") from None
    return header, items


def import_bundle(central, data: bytes) -> tuple[dict, dict]:
    """Receive every dossier of a bundle (idempotent); returns (ack file document, counts)."""
    header, items = open_bundle(central, data)
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
    return ack_file, counts


def apply_ack_file(conn: sqlite3.Connection, data: bytes, *, station_id: str, central_signing_key) -> dict:
    """Apply the central's answers brought back on a stick. Each answer is checked like an online one
    (signature, this station, this content); applying a file twice changes nothing."""
    try:
        ack_file = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BundleError("not an ack file") from None
    if not isinstance(ack_file, dict) or ack_file.get("format") != ACK_FILE:
        raise BundleError(f"not a {ACK_FILE} file")
    counts = {"acknowledged": 0, "rejected": 0, "already": 0, "ignored": 0}
    for kind, doc_type in (("acks", protocol.ACK), ("rejections", protocol.REJECT)):
        for envelope in ack_file.get(kind, []):
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
            else:
                changed = record_rejection(conn, doc["submission_id"], doc["code"], f"{doc['code']}: {doc['reason']}")
                counts["rejected" if changed else "already"] += 1
    return counts


def bundled_pending(conn: sqlite3.Connection) -> int:
    """How many pending dossiers are also on a USB bundle made here."""
    return conn.execute("SELECT COUNT(DISTINCT b.submission_id) FROM sync_bundle_items b JOIN outbox o "
                        "USING (submission_id) WHERE o.state = 'pending'").fetchone()[0]


def write_ack_file(path: Path, ack_file: dict) -> None:
    _write_atomically(Path(path), json.dumps(ack_file, ensure_ascii=False, indent=1).encode())


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
