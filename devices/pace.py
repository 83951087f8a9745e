"""PACE (ICAO 9303 part 11, section 4.4) with Generic Mapping over elliptic curves and AES
(id-PACE-ECDH-GM-AES-CBC-CMAC-128/192/256). The password of a CCCD is its CAN: the last 6 digits of
the 12-digit number. The MRZ information works too (password reference 1).

Point arithmetic on the mapped generator (G' = s*G + H) needs curves with an arbitrary generator, which
the `cryptography` package does not offer; the `ecdsa` package (pure Python) does it. The chip's side
(used by the card simulator) lives here too.
"""
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices import card_tlv
from devices.bac import SessionKeys, mac_equal
from devices.card_errors import CardBlockedError, CardCommunicationError, CardDataError

PACE_OID_PREFIX = bytes.fromhex("04007F000702020402")  # id-PACE-ECDH-GM-AES-CBC-CMAC-
KEY_LENGTHS = {2: 16, 3: 24, 4: 32}  # ...-128, -192, -256
PASSWORD_MRZ, PASSWORD_CAN = 1, 2


def _curves():
    try:
        from ecdsa import curves
    except ImportError:  # without the ecdsa package there is no PACE; readers fall back to BAC
        raise PaceUnsupported("the ecdsa package is not installed") from None
    return {12: curves.NIST256p, 13: curves.BRAINPOOLP256r1, 14: curves.BRAINPOOLP320r1,
            15: curves.NIST384p, 16: curves.BRAINPOOLP384r1, 17: curves.BRAINPOOLP512r1, 18: curves.NIST521p}


class PaceUnsupported(CardCommunicationError):
    """The chip offers only PACE variants we do not speak; the reader falls back to BAC."""


@dataclass(frozen=True)
class PaceInfo:
    oid: bytes          # DER contents of the protocol OID
    version: int
    parameter_id: int

    @property
    def key_length(self) -> int:
        return KEY_LENGTHS[self.oid[-1]]


def parse_card_access(data: bytes) -> list[PaceInfo]:
    """EF.CardAccess (SecurityInfos) -> the PACE variants we support, best first. Others are ignored."""
    root = card_tlv.parse_file(data, 0x31)
    out = []
    for info in root.children:
        if info.tag != 0x30 or not info.children or info.children[0].tag != 0x06:
            continue
        oid = info.children[0].value
        ints = [int.from_bytes(c.value, "big") for c in info.children[1:] if c.tag == 0x02 and c.value]
        if oid[:-1] == PACE_OID_PREFIX and oid[-1] in KEY_LENGTHS and len(ints) >= 2 and ints[1] in _curves():
            out.append(PaceInfo(oid, ints[0], ints[1]))
    return out


def build_card_access(parameter_id: int = 13, key_bits: int = 128) -> bytes:
    oid = PACE_OID_PREFIX + bytes([{128: 2, 192: 3, 256: 4}[key_bits]])
    info = card_tlv.encode(0x06, oid) + card_tlv.encode(0x02, b"\x02") + card_tlv.encode(0x02, bytes([parameter_id]))
    return card_tlv.encode(0x31, card_tlv.encode(0x30, info))


def kdf(secret: bytes, counter: int, key_length: int) -> bytes:
    """9303-11 9.7.1 for AES: SHA-1 for 128-bit keys, SHA-256 for 192 and 256."""
    data = secret + counter.to_bytes(4, "big")
    if key_length == 16:
        return hashlib.sha1(data).digest()[:16]
    return hashlib.sha256(data).digest()[:key_length]


def password_key(password: bytes, key_length: int) -> bytes:
    """K_pi from f(pi): the CAN as bytes, or SHA-1 of the MRZ information."""
    return kdf(password, 3, key_length)


def mrz_password(mrz_info: str) -> bytes:
    return hashlib.sha1(mrz_info.encode("ascii")).digest()


def _aes(key: bytes, data: bytes, decrypt: bool = False) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


class Curve:
    def __init__(self, parameter_id: int):
        try:
            self.spec = _curves()[parameter_id]
        except KeyError:
            raise PaceUnsupported(f"domain parameter {parameter_id}") from None
        self.g = self.spec.generator
        self.n = self.spec.order
        self.size = (self.spec.curve.p().bit_length() + 7) // 8

    def random_scalar(self) -> int:
        return int.from_bytes(os.urandom(self.size + 8), "big") % (self.n - 1) + 1

    def encode(self, point) -> bytes:
        return b"\x04" + point.x().to_bytes(self.size, "big") + point.y().to_bytes(self.size, "big")

    def decode(self, data: bytes):
        from ecdsa.ellipticcurve import PointJacobi
        if len(data) != 1 + 2 * self.size or data[0] != 0x04:
            raise CardCommunicationError("bad public key encoding")
        x = int.from_bytes(data[1:1 + self.size], "big")
        y = int.from_bytes(data[1 + self.size:], "big")
        if not self.spec.curve.contains_point(x, y):
            raise CardCommunicationError("public key not on the curve")
        return PointJacobi(self.spec.curve, x, y, 1, self.n)

    def mapped_generator(self, nonce: int, shared):
        g = self.g * nonce + shared
        if g == 0 or g.x() is None:
            raise CardCommunicationError("mapped generator is the point at infinity")
        return g


def auth_token(mac_key: bytes, oid: bytes, public_key: bytes) -> bytes:
    """T = CMAC(KSmac, 7F49 {06 OID, 86 public point}), 8 bytes."""
    data = card_tlv.encode(0x7F49, card_tlv.encode(0x06, oid) + card_tlv.encode(0x86, public_key))
    c = cmac.CMAC(algorithms.AES(mac_key))
    c.update(data)
    return c.finalize()[:8]


def _dyn(tag: int, value: bytes) -> bytes:
    """A General Authenticate dynamic authentication data object: 7C { tag value }."""
    return card_tlv.encode(0x7C, card_tlv.encode(tag, value))


def _from_dyn(response: bytes, tag: int) -> bytes:
    try:
        root = card_tlv.parse_file(response, 0x7C)
    except CardDataError as exc:
        raise CardCommunicationError("bad General Authenticate answer") from exc
    for child in root.children:
        if child.tag == tag:
            return child.value
    raise CardCommunicationError(f"General Authenticate answer lacks tag {tag:02X}")


# --- the reader's side ------------------------------------------------------------------------------

def mse_set_at(info: PaceInfo, password_ref: int) -> bytes:
    data = (card_tlv.encode(0x80, info.oid) + card_tlv.encode(0x83, bytes([password_ref]))
            + card_tlv.encode(0x84, bytes([info.parameter_id])))
    return b"\x00\x22\xC1\xA4" + bytes([len(data)]) + data


def general_authenticate(data: bytes, last: bool) -> bytes:
    return bytes([0x00 if last else 0x10, 0x86, 0x00, 0x00, len(data)]) + data + b"\x00"


def run_pace(transmit, info: PaceInfo, password: bytes, password_ref: int, *, map_key: int | None = None,
             eph_key: int | None = None) -> SessionKeys:
    """Establish AES session keys. ``transmit(apdu) -> (data, sw)``. Raises PaceRefused on a wrong
    password, CardBlockedError when the chip says 69 83, CardCommunicationError otherwise. map_key/eph_key are for the ICAO worked example only."""
    curve = Curve(info.parameter_id)
    k_pi = password_key(password, info.key_length)
    plain_transmit = transmit

    def transmit(apdu: bytes) -> tuple[bytes, int]:
        data, sw = plain_transmit(apdu)
        if sw == 0x6983:  # the chip has counted too many wrong passwords and blocked PACE
            raise CardBlockedError("PACE: 6983")
        return data, sw

    data, sw = transmit(mse_set_at(info, password_ref))
    if sw != 0x9000:
        raise PaceUnsupported(f"MSE:Set AT {sw:04X}")
    data, sw = transmit(general_authenticate(b"\x7C\x00", last=False))
    if sw != 0x9000:
        raise CardCommunicationError(f"GA nonce {sw:04X}")
    encrypted_nonce = _from_dyn(data, 0x80)
    if not encrypted_nonce or len(encrypted_nonce) % 16:
        raise CardCommunicationError("bad encrypted nonce")
    nonce = int.from_bytes(_aes(k_pi, encrypted_nonce, decrypt=True), "big")

    sk_map = map_key or curve.random_scalar()
    data, sw = transmit(general_authenticate(_dyn(0x81, curve.encode(curve.g * sk_map)), last=False))
    if sw != 0x9000:
        raise CardCommunicationError(f"GA map {sw:04X}")
    pk_map_ic = curve.decode(_from_dyn(data, 0x82))
    g_mapped = curve.mapped_generator(nonce, pk_map_ic * sk_map)

    sk_eph = eph_key or curve.random_scalar()
    pk_eph_pcd = curve.encode(g_mapped * sk_eph)
    data, sw = transmit(general_authenticate(_dyn(0x83, pk_eph_pcd), last=False))
    if sw != 0x9000:
        raise CardCommunicationError(f"GA key agreement {sw:04X}")
    pk_eph_ic_bytes = _from_dyn(data, 0x84)
    if pk_eph_ic_bytes == pk_eph_pcd:
        raise CardCommunicationError("chip echoed our ephemeral key")
    shared = (curve.decode(pk_eph_ic_bytes) * sk_eph).x().to_bytes(curve.size, "big")
    ks_enc, ks_mac = kdf(shared, 1, info.key_length), kdf(shared, 2, info.key_length)

    data, sw = transmit(general_authenticate(_dyn(0x85, auth_token(ks_mac, info.oid, pk_eph_ic_bytes)), last=True))
    if sw == 0x6300 or (sw & 0xFFF0) == 0x63C0 or sw == 0x6982:
        raise PaceRefused(f"GA mutual authentication {sw:04X}")
    if sw != 0x9000:
        raise CardCommunicationError(f"GA mutual authentication {sw:04X}")
    if not mac_equal(_from_dyn(data, 0x86), auth_token(ks_mac, info.oid, pk_eph_pcd)):
        raise CardCommunicationError("chip's authentication token is wrong")
    return SessionKeys(ks_enc, ks_mac, 0, "aes")


class PaceRefused(CardCommunicationError):
    """The chip refused the password (wrong CAN or MRZ)."""


# --- the chip's side ------------------------------------------------------------------------------

class PaceChip:
    """The chip's half of PACE, fed one General Authenticate data field at a time."""

    def __init__(self, info: PaceInfo, password: bytes):
        self.info = info
        self.curve = Curve(info.parameter_id)
        self.k_pi = password_key(password, info.key_length)
        self.step = 0
        self.session: SessionKeys | None = None

    def answer(self, data: bytes) -> tuple[bytes, int]:
        """Return (response data, status word). Any mistake aborts the protocol (step back to 0)."""
        try:
            root = card_tlv.parse_file(data, 0x7C)
            items = {c.tag: c.value for c in root.children}
        except CardDataError:
            self.step = -1
            return b"", 0x6A80
        if self.step == 0 and not items:
            self.nonce_bytes = os.urandom(16)
            self.step = 1
            return _dyn(0x80, _aes(self.k_pi, self.nonce_bytes)), 0x9000
        try:
            if self.step == 1 and 0x81 in items:
                self.sk_map = self.curve.random_scalar()
                shared = self.curve.decode(items[0x81]) * self.sk_map
                self.g_mapped = self.curve.mapped_generator(int.from_bytes(self.nonce_bytes, "big"), shared)
                self.step = 2
                return _dyn(0x82, self.curve.encode(self.curve.g * self.sk_map)), 0x9000
            if self.step == 2 and 0x83 in items:
                self.pk_pcd = items[0x83]
                sk = self.curve.random_scalar()
                self.pk_ic = self.curve.encode(self.g_mapped * sk)
                shared = (self.curve.decode(self.pk_pcd) * sk).x().to_bytes(self.curve.size, "big")
                self.ks_enc = kdf(shared, 1, self.info.key_length)
                self.ks_mac = kdf(shared, 2, self.info.key_length)
                self.step = 3
                return _dyn(0x84, self.pk_ic), 0x9000
            if self.step == 3 and 0x85 in items:
                self.step = -1
                if not mac_equal(items[0x85], auth_token(self.ks_mac, self.info.oid, self.pk_ic)):
                    return b"", 0x6300  # a wrong password shows up here
                self.session = SessionKeys(self.ks_enc, self.ks_mac, 0, "aes")
                return _dyn(0x86, auth_token(self.ks_mac, self.info.oid, self.pk_pcd)), 0x9000
        except CardCommunicationError:
            pass
        self.step = -1
        return b"", 0x6A80
