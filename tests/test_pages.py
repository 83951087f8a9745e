"""Pages of a document (kiosk/core/pages.py): untrusted images in, clean, small, upright pages out.

The inputs are made as the world makes them: an A4 text page typeset at 300 dpi with the DejaVu font,
then photographed the way a phone stores it (grey uneven paper, sensor noise, lens blur, JPEG, the
picture stored sideways with EXIF orientation 6, GPS tags, an XMP packet and a comment); a PNG header
declaring 50,000 × 50,000 pixels; a text file; a JPEG cut short."""
import hashlib
import io
import re
import struct
import zlib

import pytest
from PIL import Image, ImageFilter

from kiosk import i18n
from kiosk.core import pages
from kiosk.core.pages import BUDGET_BYTES, PageError, clean_page, pages_to_pdf
from tests.support.paper import A4_300, page_png, phone_photo, photo_on_a_table, text_page

@pytest.fixture(scope="module")
def upright() -> Image.Image:
    return text_page()


@pytest.fixture(scope="module")
def photo(upright) -> bytes:
    data = phone_photo(upright)
    # The fixture carries what the station must drop.
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif()[0x0112] == 6 and image.getexif().get_ifd(0x8825)
        assert image.size == (A4_300[1], A4_300[0])        # stored sideways
    assert b"GPS" in data and b"taken at home" in data and b"xmpmeta" in data
    return data


def _dark_mask(image: Image.Image, size) -> Image.Image:
    return image.convert("L").resize(size, Image.Resampling.BOX).point(lambda v: 255 if v < 160 else 0)


def _ratio(mask: Image.Image) -> float:
    return mask.histogram()[255] / (mask.width * mask.height)


def _agreement(original: Image.Image, cleaned: Image.Image) -> tuple[float, float, float]:
    """Dark-pixel ratio of the text area in each, and how much of the original's ink the cleaned page
    keeps in the same place (both brought to 100 dpi, where an 11-point stroke is still a pixel wide)."""
    size = (827, 1169)
    box = (50, 200, 777, 1000)
    a = _dark_mask(original, size).crop(box)
    b = _dark_mask(cleaned, size).crop(box)
    a_ink = a.histogram()[255]
    kept = sum(1 for x, y in zip(a.tobytes(), b.tobytes()) if x and y)
    return _ratio(a), _ratio(b), kept / a_ink


def test_a_phone_photo_of_a_text_page_comes_out_upright_clean_small_and_readable(photo, upright):
    page = clean_page(photo, mode="gray")
    assert page.media_type == "image/jpeg" and page.mode == "gray"
    assert page.size_bytes <= BUDGET_BYTES, f"gray page is {page.size_bytes} bytes, over {BUDGET_BYTES}"
    print(f"\ngray A4 text page from a phone photo: {page.size_bytes} bytes, {page.width}×{page.height} at {page.dpi} dpi")
    with Image.open(io.BytesIO(page.data)) as image:
        assert image.format == "JPEG" and image.mode == "L"
        assert (image.width, image.height) == (page.width, page.height)
        assert image.height > image.width                                # portrait: the orientation applied
        assert page.dpi == 200 and abs(image.width - 1654) <= 2
        exif = image.getexif()
        assert len(exif) == 0 and not exif.get_ifd(0x8825)
        assert "exif" not in image.info and "icc_profile" not in image.info and "xmp" not in image.info
        assert "comment" not in image.info
        # Upright and not mirrored: the black block is in the top-left corner only.
        small = image.resize((image.width // 10, image.height // 10), Image.Resampling.BOX)
        w, h = small.size
        corners = {name: small.crop(box).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
                   for name, box in {"top_left": (12, 12, 28, 28), "top_right": (w - 28, 12, w - 12, 28),
                                     "bottom_left": (12, h - 28, 28, h - 12),
                                     "bottom_right": (w - 28, h - 28, w - 12, h - 12)}.items()}
        assert corners["top_left"] < 60, corners
        assert min(corners["top_right"], corners["bottom_left"], corners["bottom_right"]) > 200, corners
        # Paper is white, not the photo's grey.
        assert image.crop((w * 10 - 200, h * 10 - 200, w * 10 - 100, h * 10 - 100)).getextrema()[0] > 230
        before, after, kept = _agreement(upright, image)
    assert b"GPS" not in page.data and b"taken at home" not in page.data and b"xmpmeta" not in page.data
    assert b"PhoneMaker" not in page.data and b"Exif" not in page.data
    assert 0.7 < after / before < 1.4, f"dark-pixel ratio {before:.4f} before, {after:.4f} after"
    assert kept > 0.85, f"only {kept:.0%} of the text's dark pixels survive"
    assert page.sha256 == hashlib.sha256(page.data).hexdigest()


def test_bilevel_keeps_the_strokes_in_one_bit_per_pixel(photo, upright):
    page = clean_page(photo, mode="bilevel")
    assert page.size_bytes <= BUDGET_BYTES, f"bilevel page is {page.size_bytes} bytes, over {BUDGET_BYTES}"
    print(f"\nbilevel A4 text page from a phone photo: {page.size_bytes} bytes, {page.width}×{page.height} at {page.dpi} dpi")
    assert page.media_type == "image/tiff" and page.dpi == 300
    with Image.open(io.BytesIO(page.data)) as image:
        assert image.mode == "1" and image.height > image.width and abs(image.width - 2480) <= 2
        assert image.info["compression"] == "group4"
        assert 0x8825 not in image.getexif() and 0x0112 not in image.getexif() and 700 not in image.tag_v2
        (offset,), (length,) = image.tag_v2[273], image.tag_v2[279]      # one strip
        before, after, kept = _agreement(upright, image)
    assert b"GPS" not in page.data and b"PhoneMaker" not in page.data
    # In a PDF the Group 4 strip is copied as it is.
    assert page.data[offset:offset + length] in pages_to_pdf([page])
    assert 0.7 < after / before < 1.4, f"dark-pixel ratio {before:.4f} before, {after:.4f} after"
    assert kept > 0.85, f"only {kept:.0%} of the text's dark pixels survive"


def test_a_scan_that_states_its_resolution_is_scaled_by_it(upright):
    out = io.BytesIO()
    upright.save(out, "PNG", dpi=(300, 300))
    page = clean_page(out.getvalue())
    # A dense page of 11-point text does not fit the budget at 200 dpi: the encoder steps down.
    assert 150 <= page.dpi <= 200 and page.width == round(2480 * page.dpi / 300), page
    assert page.size_bytes <= BUDGET_BYTES, page.size_bytes
    print(f"\ngray A4 text page from a 300 dpi scan: {page.size_bytes} bytes at {page.dpi} dpi")
    # A scan of a receipt (3 inches long at 300 dpi) stays its own size, not blown up to A4.
    small = io.BytesIO()
    upright.crop((0, 0, 700, 900)).save(small, "PNG", dpi=(300, 300))
    receipt = clean_page(small.getvalue())
    assert receipt.dpi == 200 and (receipt.width, receipt.height) == (467, 600)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(PageError) as refused:
        clean_page(_png_header(50_000, 50_000))
    assert refused.value.code == "too_many_pixels"
    # Between PIL's warning and error thresholds too, where PIL only warns.
    with pytest.raises(PageError) as refused:
        clean_page(_png_header(9000, 9000))
    assert refused.value.code == "too_many_pixels"


def test_what_is_no_page_is_refused_with_its_code(photo):
    cases = {
        "not_an_image": [b"", b"Hello, this is a letter.\n" * 100, b"PK\x03\x04" + b"\x00" * 100],
        "corrupt": [photo[: len(photo) // 3], b"\x89PNG\r\n\x1a\n" + b"\x00" * 200],
        "unsupported": [b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100, b"GIF89a" + b"\x00" * 100,
                        b"%PDF-1.7\n", b'<svg xmlns="http://www.w3.org/2000/svg"/>'],
        "too_small": [_tiny_png()],
    }
    for code, inputs in cases.items():
        for data in inputs:
            with pytest.raises(PageError) as refused:
                clean_page(data)
            assert refused.value.code == code, (data[:20], refused.value)


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (200, 100), 255).save(out, "PNG")
    return out.getvalue()


def test_a_30_mb_file_is_refused_before_it_is_decoded(monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file that was too large")
    monkeypatch.setattr(pages.Image, "open", no_decoding)
    with pytest.raises(PageError) as refused:
        clean_page(b"\xff\xd8\xff\xe0" + b"\x00" * (30 * 1024 * 1024))
    assert refused.value.code == "too_large"


def test_the_pdf_holds_three_a4_pages_with_the_jpeg_bytes_unchanged(photo, upright):
    sideways = clean_page(photo)
    out = io.BytesIO()
    upright.save(out, "PNG", dpi=(300, 300))
    scanned = clean_page(out.getvalue())
    landscape = io.BytesIO()
    upright.rotate(90, expand=True).save(landscape, "JPEG", quality=90)
    third = clean_page(landscape.getvalue())
    pdf = pages_to_pdf([sideways, scanned, third])
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 3
    for page in (sideways, scanned, third):
        assert page.data in pdf                             # embedded losslessly, byte for byte
    boxes = [tuple(round(float(v)) for v in box.split()) for box in re.findall(rb"/MediaBox\s*\[([^\]]*)\]", pdf)]
    assert sorted(boxes) == sorted([(0, 0, 595, 842), (0, 0, 595, 842), (0, 0, 842, 595)]), boxes
    print(f"\nPDF of 3 pages: {len(pdf)} bytes; pages {[p.size_bytes for p in (sideways, scanned, third)]}")
    with pytest.raises(ValueError):
        pages_to_pdf([])


def test_every_refusal_has_words_in_both_languages():
    for code in pages.CODES:
        words = i18n.MESSAGES[f"page_error_{code}"]
        assert words["vi"] and words["en"] and words["vi"] != words["en"]


def _kept_near(original: Image.Image, cleaned: Image.Image) -> float:
    """How much of the original's ink the cleaned page has within a pixel of the same place at 100 dpi
    (a photo's sheet is found to a few pixels, not exactly)."""
    size, box = (827, 1169), (50, 200, 777, 1000)
    a = _dark_mask(original, size).crop(box)
    b = _dark_mask(cleaned, size).crop(box).filter(ImageFilter.MaxFilter(3))
    return sum(1 for x, y in zip(a.tobytes(), b.tobytes()) if x and y) / max(1, a.histogram()[255])


@pytest.mark.parametrize("corners", [
    ((620, 540), (2480, 700), (2600, 3420), (380, 3300)),    # from above and in front, the far edge shorter
    ((900, 300), (2750, 750), (2250, 3600), (330, 3120)),    # turned about 14° on the table as well
], ids=["tilted", "turned"])
def test_a_photo_of_a_sheet_on_a_table_is_cut_out_and_straightened(upright, corners):
    """A page photographed at an angle on a dark table: the sheet is found, its perspective undone, and
    the page comes out A4-shaped with its text where it was; without finding the sheet it would not."""
    photo = photo_on_a_table(upright, corners=corners)
    page = clean_page(photo, find_sheet=True)
    with Image.open(io.BytesIO(page.data)) as image:
        assert abs(image.height / image.width - 297 / 210) < 0.02, image.size
        before, after, _ = _agreement(upright, image)
        kept = _kept_near(upright, image)
        # The black block is in the top-left corner, the table is gone from the edges.
        small = image.resize((100, 141), Image.Resampling.BOX)
        assert small.crop((8, 6, 14, 12)).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)) < 90
        assert small.crop((90, 130, 98, 139)).resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)) > 200
    assert page.size_bytes <= BUDGET_BYTES
    assert 0.7 < after / before < 1.4, f"dark-pixel ratio {before:.4f} before, {after:.4f} after"
    assert kept > 0.85, f"only {kept:.0%} of the text's dark pixels are where they were"
    with Image.open(io.BytesIO(clean_page(photo).data)) as as_it_is:
        assert _kept_near(upright, as_it_is) < 0.5  # the table and the angle: the text is elsewhere
    # A scan (nothing around the page) is kept whole: the sheet found, if any, is the whole picture.
    scan, plain = clean_page(page_png(upright), find_sheet=True), clean_page(page_png(upright))
    assert abs(scan.width - plain.width) <= plain.width // 100 and abs(scan.height - plain.height) <= plain.height // 100
