"""Key files: the station's Ed25519 signing key, the central's Ed25519 signing key and X25519 bundle key, and
the central's key for the dossier documents it keeps (central-documents.key).

Private keys are PEM (PKCS#8) files readable by their owner only, made on first use. Public keys travel
as standard base64 of the 32 raw bytes, short enough to read out over the phone.
"""
import base64
import json
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from kiosk.core import keyfile


def _load_or_create(path: Path, generate):
    pem = keyfile.load_or_create(path, lambda: generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return serialization.load_pem_private_key(pem, password=None)


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    key = _load_or_create(path, Ed25519PrivateKey.generate)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_or_create_bundle_key(path: Path) -> X25519PrivateKey:
    key = _load_or_create(path, X25519PrivateKey.generate)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{path}: not an X25519 private key")
    return key


def load_or_create_documents_key(path: Path) -> bytes:
    """The central's key for dossier documents at rest (AES-256-GCM): 32 random bytes, made on first use."""
    key = keyfile.load_or_create(path, lambda: secrets.token_bytes(32))
    if len(key) != 32:
        raise ValueError(f"{path}: the documents key must be 32 bytes")
    return key


def public_b64(key) -> str:
    """The raw public key of a private or public Ed25519/X25519 key, base64."""
    public = key.public_key() if hasattr(key, "public_key") else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _raw(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, AttributeError):
        raise ValueError("a public key must be base64") from None
    if len(raw) != 32:
        raise ValueError("a public key must be 32 bytes")
    return raw


def ed25519_public(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_raw(text))


def x25519_public(text: str) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(_raw(text))


CENTRAL_KEYS_FORMAT = "dvc-central-keys/1"


def central_keys_document(signing_key: Ed25519PrivateKey, bundle_key: X25519PrivateKey,
                          catalog_key: Ed25519PrivateKey | None = None) -> dict:
    """What a station needs to trust the central: given to the station at enrolment (central-keys.json).
    ``catalog_key`` signs the catalog releases (sync/catalog_release.py)."""
    document = {"format": CENTRAL_KEYS_FORMAT, "signing_key": public_b64(signing_key),
                "bundle_key": public_b64(bundle_key)}
    if catalog_key is not None:
        document["catalog_key"] = public_b64(catalog_key)
    return document


def load_central_keys(path: Path) -> tuple[Ed25519PublicKey, X25519PublicKey]:
    """The central's public keys, from the file written by ``kiosk central enrol``."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != CENTRAL_KEYS_FORMAT:
        raise ValueError(f"{path}: not a central keys file ({CENTRAL_KEYS_FORMAT})")
    return ed25519_public(data["signing_key"]), x25519_public(data["bundle_key"])


def load_catalog_key(path: Path) -> Ed25519PublicKey | None:
    """The central's catalog public key from the same file, or None when the file has none (a keys file
    given out before catalog releases: get it again, ``kiosk central keys``). FileNotFoundError, ValueError
    as ``load_central_keys``."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != CENTRAL_KEYS_FORMAT:
        raise ValueError(f"{path}: not a central keys file ({CENTRAL_KEYS_FORMAT})")
    return ed25519_public(data["catalog_key"]) if data.get("catalog_key") else None
