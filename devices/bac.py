"""Basic Access Control (ICAO 9303 part 11, section 4.3) with 3DES: key derivation, the mutual
authentication of reader and chip, and the session keys it leaves. Both sides live here, because the
card simulator answers with the same arithmetic the reader checks."""
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from devices.card_errors import CardCommunicationError

ENC, MAC = 1, 2
_ZERO_IV = bytes(8)


def _with_parity(key: bytes) -> bytes:
    # DES keys carry odd parity in the low bit of each byte; ICAO derives keys with it adjusted.
    return bytes((b & 0xFE) | ((bin(b & 0xFE).count("1") + 1) % 2) for b in key)


def derive_key(seed: bytes, counter: int) -> bytes:
    """KDF of 9303-11 9.7.1 for 3DES: SHA-1(seed || counter), first 16 bytes, parity adjusted."""
    return _with_parity(hashlib.sha1(seed + counter.to_bytes(4, "big")).digest()[:16])


def key_seed(mrz_info: str) -> bytes:
    """Kseed: the first 16 bytes of SHA-1 over the MRZ information."""
    return hashlib.sha1(mrz_info.encode("ascii")).digest()[:16]


def pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 0x80 then zeros to a multiple of 8."""
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        raise CardCommunicationError("bad padding in a decrypted block")
    return stripped[:-1]


def _k24(key: bytes) -> bytes:
    # Spell out 1- and 2-key 3DES as 3 keys: K1 K1 K1 is single DES, K1 K2 K1 is two-key 3DES.
    return key * 3 if len(key) == 8 else key[:16] + key[:8]


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(_k24(key)), modes.CBC(_ZERO_IV)).encryptor()
    return enc.update(data) + enc.finalize()


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    if len(data) % 8:
        raise CardCommunicationError("encrypted data is not a whole number of blocks")
    dec = Cipher(TripleDES(_k24(key)), modes.CBC(_ZERO_IV)).decryptor()
    return dec.update(data) + dec.finalize()


def retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (retail MAC) with DES, over data padded by method 2."""
    msg = pad(data)
    ka, kb = key[:8], key[8:16]
    h = bytes(8)
    if len(msg) > 8:
        # Single DES CBC over all blocks but the last; TripleDES with an 8-byte key is single DES.
        h = tdes_encrypt(ka, msg[:-8])[-8:]
    last = bytes(x ^ y for x, y in zip(h, msg[-8:]))
    return tdes_encrypt(ka + kb, last)


def mac_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@dataclass
class SessionKeys:
    enc: bytes
    mac: bytes
    ssc: int
    cipher: str = "3des"  # "3des" after BAC; "aes" after PACE with AES


@dataclass(frozen=True)
class BacKeys:
    enc: bytes
    mac: bytes

    @classmethod
    def from_mrz_info(cls, mrz_info: str) -> "BacKeys":
        seed = key_seed(mrz_info)
        return cls(derive_key(seed, ENC), derive_key(seed, MAC))


def session_from(k_ifd: bytes, k_ic: bytes, rnd_ic: bytes, rnd_ifd: bytes) -> SessionKeys:
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_ic))
    return SessionKeys(derive_key(seed, ENC), derive_key(seed, MAC),
                       int.from_bytes(rnd_ic[-4:] + rnd_ifd[-4:], "big"))


def ifd_authenticate_data(keys: BacKeys, rnd_ic: bytes, rnd_ifd: bytes, k_ifd: bytes) -> bytes:
    """The 40 bytes the reader sends in EXTERNAL AUTHENTICATE: E_IFD || M_IFD."""
    e_ifd = tdes_encrypt(keys.enc, rnd_ifd + rnd_ic + k_ifd)
    return e_ifd + retail_mac(keys.mac, e_ifd)


def ifd_finish(keys: BacKeys, response: bytes, rnd_ic: bytes, rnd_ifd: bytes, k_ifd: bytes) -> SessionKeys:
    """Check the chip's answer (E_IC || M_IC) and derive the session keys."""
    if len(response) != 40:
        raise CardCommunicationError(f"mutual authentication answer of {len(response)} bytes")
    e_ic, m_ic = response[:32], response[32:]
    if not mac_equal(retail_mac(keys.mac, e_ic), m_ic):
        # A wrong key makes the chip answer 6300, never 9000: a bad MAC here is a broken answer.
        raise CardCommunicationError("chip's authentication MAC is wrong")
    r = tdes_decrypt(keys.enc, e_ic)
    if r[:8] != rnd_ic or r[8:16] != rnd_ifd:
        raise CardCommunicationError("chip's authentication nonces do not match")
    return session_from(k_ifd, r[16:32], rnd_ic, rnd_ifd)


def ic_answer(keys: BacKeys, command_data: bytes, rnd_ic: bytes, k_ic: bytes | None = None):
    """The chip's side: check E_IFD || M_IFD, return (answer bytes, session keys), or None when wrong."""
    if len(command_data) != 40:
        return None
    e_ifd, m_ifd = command_data[:32], command_data[32:]
    if not mac_equal(retail_mac(keys.mac, e_ifd), m_ifd):
        return None
    s = tdes_decrypt(keys.enc, e_ifd)
    rnd_ifd, got_ic, k_ifd = s[:8], s[8:16], s[16:32]
    if got_ic != rnd_ic:
        return None
    k_ic = k_ic or os.urandom(16)
    e_ic = tdes_encrypt(keys.enc, rnd_ic + rnd_ifd + k_ic)
    return e_ic + retail_mac(keys.mac, e_ic), session_from(k_ifd, k_ic, rnd_ic, rnd_ifd)
