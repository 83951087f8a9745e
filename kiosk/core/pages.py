"""The pages of a document: untrusted images in, what a dossier keeps out.

A page reaches the station from a scanner, a phone camera or a file on a USB stick; none of them is
trusted. `clean_page` refuses what it cannot use with a `PageError` carrying a stable `code` (its words
are `page_error_<code>` in kiosk/messages.toml), never a traceback; otherwise it applies the EXIF
orientation, keeps the pixels and nothing else (no EXIF, GPS, XMP, ICC profile or comment survives:
the page is re-encoded from a fresh image built from the pixels alone), turns them grey or black and
white, scales them to a document resolution and encodes them within a per-page budget.
`pages_to_pdf` wraps the pages of one document in one PDF without re-encoding them (img2pdf).

docs/documents.md describes the processing and the bytes measured per page.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import img2pdf
from PIL import Image, ImageChops, ImageFilter, ImageOps

# -- limits -------------------------------------------------------------------------------------------

MAX_BYTES = 25 * 1024 * 1024
"""A file larger than this is refused before it is decoded (a 50-megapixel phone JPEG is under 20 MB)."""

MAX_PIXELS = 64_000_000
"""More pixels than this is refused (a 48-megapixel phone photo and a 600 dpi A3 scan fit). PIL's own
decompression-bomb limit is set to it as well, so PIL refuses a bomb's header before allocating."""

MIN_LONG_SIDE = 600
"""Fewer pixels than this along the longer side cannot hold a readable page (under 52 dpi on A4)."""

BUDGET_BYTES = 150 * 1024
"""Target bytes for one A4 text page; the encoder lowers quality, then resolution, to stay under it."""

DEFAULT_DPI = {"gray": 200, "bilevel": 300}
MIN_DPI = {"gray": 150, "bilevel": 200}
"""The encoder never goes below this resolution to meet the budget (text stays readable)."""

JPEG_QUALITIES = (70, 60, 50, 42, 35)

A4_MM = (210, 297)
A4_LONG_INCHES = A4_MM[1] / 25.4

# Decoders tried, by the file's own signature (never by its name). Anything else PIL could read
# (EPS runs Ghostscript, for one) is never handed to it.
ACCEPTED = {"JPEG", "PNG", "TIFF", "WEBP", "BMP"}

CODES = ("not_an_image", "too_large", "too_many_pixels", "too_small", "corrupt", "unsupported")


class PageError(ValueError):
    """A page refused; `code` is stable (its words: `page_error_<code>` in kiosk/messages.toml)."""

    def __init__(self, code: str, detail: str = ""):
        assert code in CODES, code
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)


@dataclass(frozen=True)
class Page:
    data: bytes
    media_type: str          # image/jpeg (gray) or image/tiff (bilevel: 1 bit per pixel, CCITT Group 4)
    width: int
    height: int
    dpi: int
    sha256: str
    mode: str                # "gray" or "bilevel"

    @property
    def size_bytes(self) -> int:
        return len(self.data)


# -- recognising the file -----------------------------------------------------------------------------

def _sniff(data: bytes) -> str:
    """The format from the first bytes: an accepted one, "unsupported" for another image, or "" for
    anything that is not an image at all."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    unsupported = (
        b"GIF87a", b"GIF89a",                       # GIF
        b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51",  # JPEG 2000
        b"%PDF", b"%!PS", b"\xc5\xd0\xd3\xc6",      # PDF, PostScript / EPS
        b"8BPS", b"\x00\x00\x01\x00", b"II\xbc",     # Photoshop, ICO, JPEG XR
        b"\xff\x0a", b"\x00\x00\x00\x0cJXL ",        # JPEG XL
    )
    if head.startswith(unsupported) or head[4:8] == b"ftyp":  # HEIC/HEIF/AVIF (an iPhone's default)
        return "unsupported"
    text = head.lstrip().lower()
    if text.startswith((b"<svg", b"<?xml")):
        return "unsupported"
    return ""


def _decode(data: bytes) -> Image.Image:
    if len(data) > MAX_BYTES:
        raise PageError("too_large", f"{len(data)} bytes, at most {MAX_BYTES}")
    kind = _sniff(data)
    if not kind:
        raise PageError("not_an_image")
    if kind == "unsupported":
        raise PageError("unsupported", "an image format the station does not read")
    try:
        # The size is read from the header and checked before a pixel is decoded. (PIL's own bomb check
        # is process-wide state; under MAX_PIXELS it never fires, above it this check refuses first.)
        image = Image.open(io.BytesIO(data), formats=[kind])
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise PageError("too_many_pixels", f"{width}×{height}")
        image.load()
    except PageError:
        raise
    except Image.DecompressionBombError as error:
        raise PageError("too_many_pixels", str(error)) from None
    except Image.UnidentifiedImageError:
        raise PageError("corrupt", f"not a readable {kind}") from None
    except MemoryError:
        raise PageError("too_many_pixels", "out of memory decoding") from None
    except Exception as error:  # a decoder's own complaint about a damaged file: truncated, bad tables...
        raise PageError("corrupt", f"{kind}: {type(error).__name__}: {error}") from None
    if max(image.size) < MIN_LONG_SIDE:
        raise PageError("too_small", f"{width}×{height}")
    return image


def _declared_dpi(image: Image.Image) -> float | None:
    """The resolution the file states, if it is a scanner's: 75 to 1200 dpi, and a paper size between
    a receipt and A3 at that resolution. A phone's 72 ppi (a 50-inch 'page') is no resolution at all."""
    value = image.info.get("dpi")
    try:
        dpi = float(value[0] if isinstance(value, (tuple, list)) else value)
    except (TypeError, ValueError, IndexError):
        return None
    if not 75 <= dpi <= 1200:
        return None
    long_inches = max(image.size) / dpi
    return dpi if 3 <= long_inches <= 17.5 else None


# -- pixels -------------------------------------------------------------------------------------------

def _upright_gray(image: Image.Image) -> Image.Image:
    """Orientation applied, transparency on white paper, one 8-bit grey channel, and no metadata."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block: keep the pixels as they are
        upright = image
    try:
        if upright.mode in ("RGBA", "LA", "PA", "P") and (upright.mode != "P" or "transparency" in upright.info):
            rgba = upright.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, "white")
            paper.alpha_composite(rgba)
            upright = paper
        if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
            upright = upright.convert("I").point(lambda v: v / 256)
        elif upright.mode == "F":
            upright = upright.point(lambda v: v * 255 if 0 <= v <= 1 else v)
        gray = upright.convert("L")
    except Exception as error:
        raise PageError("unsupported", f"pixel mode {image.mode}: {error}") from None
    # A new image from the pixels alone: nothing of the file's info (exif, icc_profile, xmp, comment,
    # dpi) can follow it into the encoder.
    return Image.frombytes("L", gray.size, gray.tobytes())


def _levels(gray: Image.Image) -> Image.Image:
    """Stretch ink to black and paper to white. Paper is the brightest well-filled peak of the
    histogram; every tone near it becomes 255, so a phone photo's grey, noisy paper costs no bytes."""
    hist = gray.histogram()
    total = sum(hist)
    # The darkest 0.5 % is the ink's black.
    seen, black = 0, 0
    for value, count in enumerate(hist):
        seen += count
        if seen >= total * 0.005:
            black = value
            break
    paper = max(range(96, 256), key=lambda v: hist[v])
    window = sum(hist[max(0, paper - 12):paper + 13])
    if window >= total * 0.2 and paper - black >= 48:
        # Below the paper peak by about two spreads of its noise, at least 8 levels.
        white = paper - max(8, (paper - black) // 8)
    else:  # no clear paper (a photo, a dark page): a gentle stretch only
        seen, white = 0, 255
        for value in range(255, -1, -1):
            seen += hist[value]
            if seen >= total * 0.005:
                white = value
                break
    if white - black < 16:
        return gray
    scale = 255 / (white - black)
    return gray.point([min(255, max(0, round((v - black) * scale))) for v in range(256)])


def _bilevel(gray: Image.Image, dpi: int) -> Image.Image:
    """Black where a pixel is dark outright, or clearly darker than its neighbourhood (a local
    threshold keeps thin strokes under uneven light, where one global threshold loses them)."""
    radius = max(4, round(dpi / 20))                 # about 1.3 mm: wider than a stroke, narrower than a word
    local = gray.filter(ImageFilter.BoxBlur(radius))
    darker = ImageChops.subtract(local, gray)         # local mean minus pixel, 0 where the pixel is lighter
    by_contrast = darker.point(lambda v: 255 if v > 24 else 0)
    outright = gray.point(lambda v: 255 if v < 96 else 0)
    not_paper = gray.point(lambda v: 255 if v < 200 else 0)
    ink = ImageChops.logical_and(
        ImageChops.logical_or(by_contrast.convert("1"), outright.convert("1")), not_paper.convert("1"))
    return ImageOps.invert(ink.convert("L")).convert("1", dither=Image.Dither.NONE)


def _scaled(gray: Image.Image, source_dpi: float, dpi: int) -> Image.Image:
    if source_dpi <= dpi:
        return gray
    factor = dpi / source_dpi
    size = (max(1, round(gray.width * factor)), max(1, round(gray.height * factor)))
    return gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


# -- encoding -----------------------------------------------------------------------------------------

def _encode(image: Image.Image, mode: str, dpi: int, quality: int = 0) -> tuple[bytes, str]:
    out = io.BytesIO()
    if mode == "gray":
        image.save(out, "JPEG", quality=quality, optimize=True, progressive=False, dpi=(dpi, dpi))
        return out.getvalue(), "image/jpeg"
    # CCITT Group 4 in one strip: a third of a 1-bit PNG for text, and img2pdf copies the strip into the
    # PDF as it is (CCITTFaxDecode).
    image.save(out, "TIFF", compression="group4", dpi=(dpi, dpi), strip_size=2**30)
    return out.getvalue(), "image/tiff"


# -- a photographed sheet -------------------------------------------------------------------------------

SHEET_MIN_SHARE = 0.2
"""A sheet found in a photo covers at least this share of the picture (else it is not the page)."""


def _ordered(corners):
    """Four points as top-left, top-right, bottom-right, bottom-left."""
    import numpy as np
    points = np.asarray(corners, dtype="float32").reshape(4, 2)
    by_sum, by_diff = points.sum(axis=1), np.diff(points, axis=1).ravel()
    return np.array([points[by_sum.argmin()], points[by_diff.argmin()], points[by_sum.argmax()],
                     points[by_diff.argmax()]], dtype="float32")


def sheet_corners(gray: Image.Image):
    """The corners of the sheet of paper in a photo (top-left, top-right, bottom-right, bottom-left, in
    the picture's pixels), or None when no four-sided bright sheet covers enough of it. OpenCV finds the
    outline: the bright paper against what it lies on (Otsu's threshold), else its edges (Canny)."""
    import cv2
    import numpy as np
    scale = 800 / max(gray.size)
    small = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                        Image.Resampling.BILINEAR) if scale < 1 else gray
    scale = min(scale, 1.0)
    pixels = cv2.GaussianBlur(np.asarray(small, dtype=np.uint8), (5, 5), 0)
    _, bright = cv2.threshold(pixels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))  # text is not a hole
    edges = cv2.dilate(cv2.Canny(pixels, 50, 150), np.ones((3, 3), np.uint8))
    area = small.width * small.height
    for outline in (bright, edges):
        contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in sorted(contours, key=cv2.contourArea, reverse=True)[:5]:
            if cv2.contourArea(contour) < SHEET_MIN_SHARE * area:
                break
            hull = cv2.convexHull(contour)
            approx = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
            if len(approx) == 4:
                return _ordered(approx / scale)
    return None


def straightened(gray: Image.Image) -> Image.Image:
    """The sheet of paper in a photo cut out and seen from straight above (its perspective undone), at
    the resolution the photo gives it; the photo as it is when no sheet is found (a scan, a close-up)."""
    import cv2
    import numpy as np
    corners = sheet_corners(gray)
    if corners is None:
        return gray
    top_left, top_right, bottom_right, bottom_left = corners
    tops = (np.linalg.norm(top_right - top_left), np.linalg.norm(bottom_right - bottom_left))
    sides = (np.linalg.norm(bottom_left - top_left), np.linalg.norm(bottom_right - top_right))
    # The nearer edge looks longer: the proportions come from the mean of opposite edges, the
    # resolution from the longer ones. A sheet within 15 % of A4's proportions is A4 (the usual paper).
    ratio = (sum(sides) / 2) / max(1.0, sum(tops) / 2)
    a4 = A4_MM[1] / A4_MM[0]
    if abs(ratio - a4) < 0.15 * a4:
        ratio = a4
    elif abs(1 / ratio - a4) < 0.15 * a4:
        ratio = 1 / a4
    width = max(max(tops), max(sides) / ratio)
    height = width * ratio
    size = (max(1, round(width)), max(1, round(height)))
    target = np.array([[0, 0], [size[0] - 1, 0], [size[0] - 1, size[1] - 1], [0, size[1] - 1]], dtype="float32")
    matrix = cv2.getPerspectiveTransform(corners, target)
    flat = cv2.warpPerspective(np.asarray(gray, dtype=np.uint8), matrix, size, flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(flat, "L")


def clean_page(data: bytes, mode: str = "gray", dpi: int | None = None,
               budget: int = BUDGET_BYTES, find_sheet: bool = False) -> Page:
    """One untrusted page image in; a clean page out, or a PageError with a stable code. With
    ``find_sheet`` (a photo from a camera), the sheet is first found and its perspective undone."""
    if mode not in DEFAULT_DPI:
        raise ValueError(f"mode must be one of {sorted(DEFAULT_DPI)}, not {mode!r}")
    target = int(dpi or DEFAULT_DPI[mode])
    if not 100 <= target <= 600:
        raise ValueError(f"dpi must be between 100 and 600, not {target}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PageError("not_an_image", type(data).__name__)
    image = _decode(bytes(data))
    declared = _declared_dpi(image)
    upright = _upright_gray(image)
    image.close()
    if find_sheet:
        upright = straightened(upright)
        declared = None  # the sheet's own pixels now: it spans A4 along its longer side
    gray = _levels(upright)
    # Without a scanner's stated resolution the picture is taken to span an A4 page along its longer side.
    source_dpi = declared or max(gray.size) / A4_LONG_INCHES

    floor = min(target, MIN_DPI[mode])
    attempt = target
    best: tuple[bytes, str, Image.Image, int] | None = None
    while True:
        scaled = _scaled(gray, source_dpi, attempt)
        page_dpi = round(min(attempt, source_dpi)) or 1
        if mode == "gray":
            for quality in JPEG_QUALITIES:
                encoded, media = _encode(scaled, mode, page_dpi, quality)
                if best is None or len(encoded) < len(best[0]):
                    best = (encoded, media, scaled, page_dpi)
                if len(encoded) <= budget:
                    break
        else:
            encoded, media = _encode(_bilevel(scaled, page_dpi), mode, page_dpi)
            if best is None or len(encoded) < len(best[0]):
                best = (encoded, media, scaled, page_dpi)
        if len(best[0]) <= budget or attempt <= floor or source_dpi <= floor:
            break
        attempt = max(floor, round(attempt * 0.85))
    # Over budget at the lowest readable resolution (a dense photo page) the smallest encoding is kept:
    # a citizen's page is not refused for its content.
    encoded, media, scaled, page_dpi = best
    return Page(data=encoded, media_type=media, width=scaled.width, height=scaled.height, dpi=page_dpi,
                sha256=hashlib.sha256(encoded).hexdigest(), mode=mode)


# -- one PDF per document -----------------------------------------------------------------------------

def pages_to_pdf(pages) -> bytes:
    """The pages of one document in one PDF, each image embedded as it is (img2pdf copies a JPEG's
    bytes and a Group 4 TIFF's strip without decoding them), each on an A4 page turned to match it,
    the image at its own resolution, shrunk only if it would not fit."""
    pages = list(pages)
    if not pages:
        raise ValueError("a document has at least one page")
    a4 = (img2pdf.mm_to_pt(A4_MM[0]), img2pdf.mm_to_pt(A4_MM[1]))
    layout = img2pdf.get_layout_fun(a4, fit=img2pdf.FitMode.shrink, auto_orient=True)
    return img2pdf.convert([page.data for page in pages], layout_fun=layout)


# -- turning and thumbnails (pages the station made itself) ------------------------------------------------

def turned(page: Page, quarter_turns: int) -> Page:
    """The page turned clockwise by ``quarter_turns`` × 90°, encoded once from the page as captured (a
    turn is kept beside the page until submit, so turning back and forth costs no generations)."""
    quarter_turns %= 4
    if quarter_turns == 0:
        return page
    with Image.open(io.BytesIO(page.data)) as image:
        image.load()
        upright = image.transpose(_TURNS[quarter_turns])
    if page.mode == "gray":
        encoded, media = _encode(upright, "gray", page.dpi, JPEG_QUALITIES[0])
    else:
        encoded, media = _encode(upright.convert("1", dither=Image.Dither.NONE), "bilevel", page.dpi)
    return Page(data=encoded, media_type=media, width=upright.width, height=upright.height, dpi=page.dpi,
                sha256=hashlib.sha256(encoded).hexdigest(), mode=page.mode)


_TURNS = {1: Image.Transpose.ROTATE_270, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_90}


def thumbnail(data: bytes, quarter_turns: int = 0, long_side: int = 480) -> bytes:
    """A JPEG of a page the station stored, ``long_side`` pixels along its longer side, turned as the
    page will be: large enough on a kiosk screen to see that the page is the right one and readable."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (long_side, long_side))  # a JPEG decodes at 1/2, 1/4 or 1/8 size: fast
        small = image.convert("L")
    small.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    if quarter_turns % 4:
        small = small.transpose(_TURNS[quarter_turns % 4])
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return out.getvalue()


def stored_page(data: bytes, media_type: str, mode: str, dpi: int) -> Page:
    """A page the station cleaned before, read back from its storage."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return Page(data=data, media_type=media_type, width=width, height=height, dpi=dpi,
                sha256=hashlib.sha256(data).hexdigest(), mode=mode)
