"""Secure messaging (ICAO 9303 part 11, section 9.8): protect a command APDU, check and open the
protected response. 3DES (after BAC: retail MAC, zero IV, 8-byte counter) and AES (after PACE: CMAC
truncated to 8 bytes, IV = E(KSenc, SSC), 16-byte counter). The chip's mirror image (open a command,
protect a response) is here too, for the card simulator."""
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.bac import SessionKeys, mac_equal, pad, retail_mac, tdes_decrypt, tdes_encrypt, unpad
from devices.card_errors import CardCommunicationError


def _pad16(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 16)


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _block_pad(keys: SessionKeys, data: bytes) -> bytes:
    return _pad16(data) if keys.cipher == "aes" else pad(data)


def _encrypt(keys: SessionKeys, data: bytes) -> bytes:
    if keys.cipher == "aes":
        iv = _aes_ecb(keys.enc, _ssc_bytes(keys))
        enc = Cipher(algorithms.AES(keys.enc), modes.CBC(iv)).encryptor()
        return enc.update(_pad16(data)) + enc.finalize()
    return tdes_encrypt(keys.enc, pad(data))


def _decrypt(keys: SessionKeys, data: bytes) -> bytes:
    if keys.cipher == "aes":
        if not data or len(data) % 16:
            raise SecureMessagingError("encrypted data is not a whole number of AES blocks")
        iv = _aes_ecb(keys.enc, _ssc_bytes(keys))
        dec = Cipher(algorithms.AES(keys.enc), modes.CBC(iv)).decryptor()
        return unpad(dec.update(data) + dec.finalize())
    return unpad(tdes_decrypt(keys.enc, data))


def _mac(keys: SessionKeys, data: bytes) -> bytes:
    """MAC over SSC || data (padded); 8 bytes."""
    if keys.cipher == "aes":
        c = cmac.CMAC(algorithms.AES(keys.mac))
        c.update(_pad16(_ssc_bytes(keys) + data))
        return c.finalize()[:8]
    return retail_mac(keys.mac, _ssc_bytes(keys) + data)


class SecureMessagingError(CardCommunicationError):
    """A protected answer whose MAC or structure is wrong; the session is dead and BAC must start again."""


def _len_bytes(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + n.to_bytes(2, "big")


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _len_bytes(len(value)) + value


def _read_dos(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split simple BER data objects (one-byte tags): [(tag, value, raw encoding)]."""
    out, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise SecureMessagingError("truncated data object")
        tag, first = data[i], data[i + 1]
        j = i + 2
        if first < 0x80:
            length = first
        elif first in (0x81, 0x82):
            n = first - 0x80
            if j + n > len(data):
                raise SecureMessagingError("truncated length")
            length = int.from_bytes(data[j:j + n], "big")
            j += n
        else:
            raise SecureMessagingError("bad length byte")
        if j + length > len(data):
            raise SecureMessagingError("truncated data object")
        out.append((tag, data[j:j + length], data[i:j + length]))
        i = j + length
    return out


def _ssc_bytes(keys: SessionKeys) -> bytes:
    width = 16 if keys.cipher == "aes" else 8
    return (keys.ssc % (1 << (8 * width))).to_bytes(width, "big")


def protect_command(keys: SessionKeys, cla: int, ins: int, p1: int, p2: int, data: bytes = b"",
                    le: int | None = None) -> bytes:
    """Wrap one command APDU; advances the send sequence counter."""
    header = bytes([cla | 0x0C, ins, p1, p2])
    body = b""
    keys.ssc += 1
    if data:
        body += _tlv(0x87, b"\x01" + _encrypt(keys, data))
    if le is not None:
        body += _tlv(0x97, bytes([le & 0xFF]))
    cc = _mac(keys, _block_pad(keys, header) + body)
    body += _tlv(0x8E, cc)
    return header + bytes([len(body)]) + body + b"\x00"


def unprotect_response(keys: SessionKeys, response: bytes) -> tuple[bytes, int]:
    """Check and open a protected response APDU; returns (data, status word). Advances the counter."""
    if len(response) < 2:
        raise SecureMessagingError("response shorter than a status word")
    body, sw = response[:-2], int.from_bytes(response[-2:], "big")
    if not body:
        # The chip answers in plain only when it has dropped secure messaging (6987/6988) or failed hard.
        raise SecureMessagingError(f"unprotected status {sw:04X}")
    dos = _read_dos(body)
    by_tag = {tag: (value, raw) for tag, value, raw in dos}
    if 0x8E not in by_tag or 0x99 not in by_tag or dos[-1][0] != 0x8E:
        raise SecureMessagingError("protected response lacks its status or MAC")
    keys.ssc += 1
    signed = b"".join(raw for tag, _, raw in dos if tag in (0x87, 0x99))
    if not mac_equal(_mac(keys, signed), by_tag[0x8E][0]):
        raise SecureMessagingError("response MAC is wrong")
    inner_sw = by_tag[0x99][0]
    if len(inner_sw) != 2:
        raise SecureMessagingError("bad protected status")
    data = b""
    if 0x87 in by_tag:
        value = by_tag[0x87][0]
        if not value or value[0] != 0x01:
            raise SecureMessagingError("bad padding indicator")
        data = _decrypt(keys, value[1:])
    return data, int.from_bytes(inner_sw, "big")


# --- the chip's side ---------------------------------------------------------------------------------

def unprotect_command(keys: SessionKeys, apdu: bytes) -> tuple[int, int, int, int, bytes, int | None]:
    """Open a protected command on the chip; returns (cla, ins, p1, p2, data, le). Advances the counter."""
    if len(apdu) < 5 or apdu[0] & 0x0C != 0x0C:
        raise SecureMessagingError("command is not protected")
    header = apdu[:4]
    lc = apdu[4]
    body = apdu[5:5 + lc]
    if len(body) != lc:
        raise SecureMessagingError("command length mismatch")
    dos = _read_dos(body)
    by_tag = {tag: (value, raw) for tag, value, raw in dos}
    if 0x8E not in by_tag:
        raise SecureMessagingError("command without MAC")
    keys.ssc += 1
    signed = b"".join(raw for tag, _, raw in dos if tag in (0x87, 0x97))
    if not mac_equal(_mac(keys, _block_pad(keys, header) + signed), by_tag[0x8E][0]):
        raise SecureMessagingError("command MAC is wrong")
    data = b""
    if 0x87 in by_tag:
        data = _decrypt(keys, by_tag[0x87][0][1:])
    le = None
    if 0x97 in by_tag:
        le = by_tag[0x97][0][0] or 256
    return header[0] & ~0x0C & 0xFF, header[1], header[2], header[3], data, le


def protect_response(keys: SessionKeys, data: bytes, sw: int) -> bytes:
    """Wrap a response on the chip. Advances the counter."""
    body = b""
    keys.ssc += 1
    if data:
        body += _tlv(0x87, b"\x01" + _encrypt(keys, data))
    body += _tlv(0x99, sw.to_bytes(2, "big"))
    cc = _mac(keys, body)
    return body + _tlv(0x8E, cc) + sw.to_bytes(2, "big")
