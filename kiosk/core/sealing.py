"""Personal data at rest: answers are sealed with AES-256-GCM under a key kept in the station's data folder.

The sealed form is ``b"S1" + nonce(12) + ciphertext``; the associated data binds a blob to its row (a
draft id or a submission id), so a blob copied onto another row does not open.
"""
import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import keyfile

_MAGIC = b"S1"
_MAGIC_BYTES = b"B1"  # raw bytes, not JSON


def load_or_create_key(path: Path) -> bytes:
    """The station's payload key; made on first start, readable by the station user only."""
    key = keyfile.load_or_create(path, lambda: secrets.token_bytes(32))
    if len(key) != 32:
        raise ValueError(f"{path}: the payload key must be 32 bytes")
    return key


def seal(key: bytes, data: dict, bound_to: str) -> bytes:
    nonce = secrets.token_bytes(12)
    plaintext = json.dumps(data, ensure_ascii=False, sort_keys=True).encode()
    return _MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, bound_to.encode())


def seal_bytes(key: bytes, data: bytes, bound_to: str) -> bytes:
    """Bytes (a document's page or PDF) sealed like answers, bound to their row."""
    nonce = secrets.token_bytes(12)
    return _MAGIC_BYTES + nonce + AESGCM(key).encrypt(nonce, bytes(data), bound_to.encode())


def open_bytes(key: bytes, blob: bytes, bound_to: str) -> bytes:
    if blob[:2] != _MAGIC_BYTES:
        raise ValueError("not sealed bytes")
    return AESGCM(key).decrypt(blob[2:14], blob[14:], bound_to.encode())


def open_sealed(key: bytes, blob: bytes, bound_to: str) -> dict:
    if blob[:2] != _MAGIC:
        raise ValueError("not a sealed payload")
    return json.loads(AESGCM(key).decrypt(blob[2:14], blob[14:], bound_to.encode()))
