"""BER-TLV as ICAO 9303 files use it: multi-byte tags, definite lengths up to 4 bytes.

Strict: anything truncated or malformed raises CardDataError, so a parser over chip bytes never fails
with an IndexError or a silent wrong value."""
from dataclasses import dataclass, field

from devices.card_errors import CardDataError

MAX_DEPTH = 12


@dataclass
class Tlv:
    tag: int
    value: bytes
    constructed: bool
    children: list["Tlv"] = field(default_factory=list)


def read_header(data: bytes, i: int = 0) -> tuple[int, bool, int, int]:
    """Return (tag, constructed, length, offset of the value) of the TLV starting at i."""
    n = len(data)
    if i >= n:
        raise CardDataError("empty TLV")
    first = data[i]
    constructed = bool(first & 0x20)
    tag = first
    i += 1
    if first & 0x1F == 0x1F:
        for _ in range(3):
            if i >= n:
                raise CardDataError("truncated tag")
            tag = (tag << 8) | data[i]
            i += 1
            if not data[i - 1] & 0x80:
                break
        else:
            raise CardDataError("tag too long")
    if i >= n:
        raise CardDataError("truncated length")
    lb = data[i]
    i += 1
    if lb < 0x80:
        length = lb
    elif 0x81 <= lb <= 0x84:
        k = lb - 0x80
        if i + k > n:
            raise CardDataError("truncated length")
        length = int.from_bytes(data[i:i + k], "big")
        i += k
    else:
        raise CardDataError("indefinite or invalid length")
    return tag, constructed, length, i


def parse_one(data: bytes, i: int = 0, depth: int = 0) -> tuple[Tlv, int]:
    """Parse one TLV at i (children parsed when constructed); returns it and the offset after it."""
    if depth > MAX_DEPTH:
        raise CardDataError("TLV nested too deep")
    tag, constructed, length, j = read_header(data, i)
    end = j + length
    if end > len(data):
        raise CardDataError("TLV value runs past the end")
    value = data[j:end]
    node = Tlv(tag, value, constructed)
    if constructed:
        node.children = parse_all(value, depth + 1)
    return node, end


def parse_all(data: bytes, depth: int = 0) -> list[Tlv]:
    out, i = [], 0
    while i < len(data):
        node, i = parse_one(data, i, depth)
        out.append(node)
    return out


def parse_file(data: bytes, expected_tag: int) -> Tlv:
    """Parse a whole ICAO file: exactly one TLV with the expected outer tag (trailing bytes ignored)."""
    node, _ = parse_one(bytes(data))
    if node.tag != expected_tag:
        raise CardDataError(f"file tag {node.tag:X}, expected {expected_tag:X}")
    return node


def total_length(header: bytes) -> int | None:
    """The full length of a file from its first bytes, or None when more bytes are needed."""
    try:
        _, _, length, j = read_header(header)
    except CardDataError:
        if len(header) < 8:
            return None
        raise
    return j + length


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    return tag_bytes + encode_length(len(value)) + value
