"""Turns an ESC/POS byte stream back into its commands, for tests to assert on what a printer would do.

Written from the ESC/POS command reference, independently of python-escpos (which encodes what we
send), so that a test reading the decoded stream checks the bytes rather than the encoder's intent.
Unknown control bytes raise ``DecodeError``: a test should fail on bytes nobody expected.
"""
from dataclasses import dataclass

from PIL import Image

DLE, EOT, ESC, GS, LF, FS = 0x10, 0x04, 0x1B, 0x1D, 0x0A, 0x1C

# ESC commands with a fixed number of parameter bytes.
ESC_FIXED = {
    b"@": ("init", 0),
    b"d": ("feed_lines", 1),
    b"J": ("feed_dots", 1),
    b"a": ("align", 1),
    b"E": ("bold", 1),
    b"!": ("print_mode", 1),
    b"-": ("underline", 1),
    b"t": ("code_page", 1),
    b"M": ("font", 1),
    b"2": ("line_spacing_default", 0),
    b"3": ("line_spacing", 1),
    b"G": ("double_strike", 1),
    b"p": ("cash_drawer", 3),
}
GS_FIXED = {
    b"!": ("char_size", 1),
    b"B": ("reverse", 1),
    b"h": ("barcode_height", 1),
    b"w": ("barcode_width", 1),
    b"H": ("hri_position", 1),
    b"f": ("hri_font", 1),
}


class DecodeError(ValueError):
    pass


@dataclass
class Command:
    name: str
    args: tuple = ()
    data: bytes = b""
    image: Image.Image | None = None  # for bit images: black is 0, as in a PIL "1" image


def raster_to_image(width_bytes: int, height: int, data: bytes) -> Image.Image:
    """ESC/POS raster data (1 = a printed dot, MSB first) as a PIL 1-bit image (0 = black)."""
    inverted = bytes(b ^ 0xFF for b in data)
    return Image.frombytes("1", (width_bytes * 8, height), inverted)


def decode(stream: bytes) -> list[Command]:
    commands: list[Command] = []
    text = bytearray()
    i, size = 0, len(stream)

    def need(count: int) -> None:
        if i + count > size:
            raise DecodeError(f"command at byte {i} is cut short")

    def flush_text() -> None:
        if text:
            commands.append(Command("text", data=bytes(text)))
            text.clear()

    while i < size:
        byte = stream[i]
        if byte >= 0x20 and byte != 0x7F:
            text.append(byte)
            i += 1
            continue
        flush_text()
        if byte == LF:
            commands.append(Command("line_feed"))
            i += 1
        elif byte == DLE:
            need(3)
            if stream[i + 1] != EOT:
                raise DecodeError(f"unknown DLE command 0x{stream[i + 1]:02x} at byte {i}")
            commands.append(Command("status_query", (stream[i + 2],)))
            i += 3
        elif byte == ESC:
            need(2)
            key = stream[i + 1 : i + 2]
            if key in ESC_FIXED:
                name, count = ESC_FIXED[key]
                need(2 + count)
                commands.append(Command(name, tuple(stream[i + 2 : i + 2 + count])))
                i += 2 + count
            elif key == b"*":  # ESC * m nL nH d1..dk: column bit image
                need(5)
                m, columns = stream[i + 2], stream[i + 3] + 256 * stream[i + 4]
                length = columns * (3 if m in (32, 33) else 1)
                need(5 + length)
                commands.append(Command("column_image", (m, columns), stream[i + 5 : i + 5 + length]))
                i += 5 + length
            else:
                raise DecodeError(f"unknown ESC command {key!r} at byte {i}")
        elif byte == GS:
            need(2)
            key = stream[i + 1 : i + 2]
            if key == b"v":  # GS v 0 m xL xH yL yH d1..dk: raster bit image
                need(8)
                if stream[i + 2] != 0x30:
                    raise DecodeError(f"GS v {stream[i + 2]} is not GS v 0, at byte {i}")
                mode = stream[i + 3]
                width_bytes = stream[i + 4] + 256 * stream[i + 5]
                height = stream[i + 6] + 256 * stream[i + 7]
                length = width_bytes * height
                need(8 + length)
                data = stream[i + 8 : i + 8 + length]
                commands.append(
                    Command("raster", (mode, width_bytes, height), data, raster_to_image(width_bytes, height, data))
                )
                i += 8 + length
            elif key == b"V":  # GS V m, or GS V m n for the feed-and-cut forms
                need(3)
                m = stream[i + 2]
                if m in (0, 1, 48, 49):
                    commands.append(Command("cut", ("full" if m in (0, 48) else "partial",)))
                    i += 3
                else:
                    need(4)
                    commands.append(Command("cut", ("full" if m in (65, 97, 103) else "partial", stream[i + 3])))
                    i += 4
            elif key == b"(":  # GS ( fn pL pH ...: 2D codes (k), graphics (L) and other functions
                need(5)
                fn, length = stream[i + 2 : i + 3].decode("latin-1"), stream[i + 3] + 256 * stream[i + 4]
                need(5 + length)
                commands.append(Command(f"gs({fn}", (), stream[i + 5 : i + 5 + length]))
                i += 5 + length
            elif key in GS_FIXED:
                name, count = GS_FIXED[key]
                need(2 + count)
                commands.append(Command(name, tuple(stream[i + 2 : i + 2 + count])))
                i += 2 + count
            else:
                raise DecodeError(f"unknown GS command {key!r} at byte {i}")
        else:
            raise DecodeError(f"unexpected control byte 0x{byte:02x} at byte {i}")
    flush_text()
    return commands


def printed_image(commands: list[Command]) -> Image.Image:
    """The raster images stacked as they come out of the printer, one under the other."""
    images = [c.image for c in commands if c.name == "raster"]
    if not images:
        raise DecodeError("no raster image in the stream")
    width = max(image.width for image in images)
    page = Image.new("1", (width, sum(image.height for image in images)), 1)
    y = 0
    for image in images:
        page.paste(image, (0, y))
        y += image.height
    return page


def names(commands: list[Command]) -> list[str]:
    return [c.name for c in commands]
