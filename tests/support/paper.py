"""Paper as the world makes it, for the document tests and benchmarks: an A4 text page typeset at 300 dpi
with the DejaVu font, and the photograph a phone stores of it (grey uneven paper, sensor noise, lens blur,
JPEG, the picture stored sideways with EXIF orientation 6, GPS tags, an XMP packet and a comment)."""
import io
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
A4_300 = (2480, 3508)
TEXT = ("Ủy ban nhân dân xã Phú Lộc xác nhận ông Nguyễn Văn An, sinh ngày 12/03/1961, "
        "thường trú tại thôn Đông, đã nộp đủ hồ sơ đăng ký khai tử cho người thân theo quy định. "
        "Số định danh cá nhân 001061012345; ngày cấp 05/07/2021; nơi cấp Cục Cảnh sát QLHC về TTXH.")


def text_page() -> Image.Image:
    """A4 at 300 dpi: a black block in the top-left corner (to tell up from down and left from right), a
    title, and 11-point body text in lines, as a printed form is."""
    page = Image.new("L", A4_300, 255)
    draw = ImageDraw.Draw(page)
    draw.rectangle((150, 150, 450, 450), fill=0)
    title = ImageFont.truetype(str(FONT), 70)
    body = ImageFont.truetype(str(FONT), 46)          # 11 pt at 300 dpi
    draw.text((600, 250), "GIẤY XÁC NHẬN", font=title, fill=0)
    words, y = (TEXT * 6).split(), 600
    line = ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=body) > A4_300[0] - 300:
            draw.text((150, y), line, font=body, fill=0)
            line, y = word, y + 70
            if y > A4_300[1] - 400:
                break
        else:
            line = trial
    return page


def phone_photo(upright: Image.Image) -> bytes:
    """What a phone stores: colour, grey paper lit unevenly, noise and blur, sideways with orientation 6."""
    width, height = upright.size
    light = Image.linear_gradient("L").resize((width, height)).point(lambda v: 200 + v * 30 // 255)
    paper = Image.composite(Image.new("L", upright.size, 35), light, ImageOps.invert(upright))
    noisy = Image.blend(paper, Image.effect_noise(upright.size, 24), 0.12)
    photo = Image.merge("RGB", (noisy.point(lambda v: min(255, v + 6)), noisy, noisy.point(lambda v: v * 92 // 100)))
    photo = photo.filter(ImageFilter.GaussianBlur(1.2))
    sideways = photo.transpose(Image.Transpose.ROTATE_90)   # orientation 6: turn 90° clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6                                      # Orientation
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Phone 12"
    gps = exif.get_ifd(0x8825)                             # the GPS IFD
    gps[1], gps[2] = "N", (21.0, 1.0, 42.5)
    gps[3], gps[4] = "E", (105.0, 50.0, 3.2)
    gps[18] = "WGS-84"
    gps[27] = b"ASCII\x00\x00\x00GPS"                       # GPSProcessingMethod
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="21,1.7N"/>'
           b"</rdf:RDF></x:xmpmeta>")
    out = io.BytesIO()
    sideways.save(out, "JPEG", quality=92, exif=exif.tobytes(), xmp=xmp, comment=b"taken at home",
                  dpi=(72, 72))
    return out.getvalue()




def small_page() -> bytes:
    """A small page as a PNG (a form's block and lines): quick to clean, enough to be a page."""
    page = Image.new("L", (700, 990), 255)
    draw = ImageDraw.Draw(page)
    draw.rectangle((40, 40, 160, 160), fill=0)
    for y in range(220, 940, 30):
        draw.line((40, y, 640, y), fill=0, width=3)
    out = io.BytesIO()
    page.save(out, "PNG")
    return out.getvalue()


def page_png(page: Image.Image, dpi: int = 300) -> bytes:
    """The page as a scanner's PNG at ``dpi``."""
    out = io.BytesIO()
    page.save(out, "PNG", dpi=(dpi, dpi))
    return out.getvalue()


def _perspective_coefficients(out_points, in_points) -> tuple:
    """PIL's PERSPECTIVE data: the 8 coefficients that map each output pixel to the input pixel it shows
    (solved with numpy's least squares, not with the code under test)."""
    import numpy as np
    rows, rhs = [], []
    for (x, y), (u, v) in zip(out_points, in_points):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    solution, *_ = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)
    return tuple(float(c) for c in solution)


def photo_on_a_table(page: Image.Image, size=(3000, 4000), corners=((620, 540), (2480, 700), (2600, 3420),
                                                                       (380, 3300))) -> bytes:
    """A phone photo of ``page`` lying on a dark wooden table, taken at an angle: the sheet is a
    four-sided shape (``corners``: top-left, top-right, bottom-right, bottom-left) smaller than the
    picture, lit unevenly, with grain and JPEG; no EXIF orientation."""
    width, height = size
    grain = Image.effect_noise((width // 8, height // 8), 40).resize(size, Image.Resampling.BILINEAR)
    table = Image.blend(Image.new("L", size, 70), grain, 0.35)
    stripes = Image.linear_gradient("L").rotate(90, expand=True).resize((width, 64)).resize(size)
    table = Image.blend(table, stripes.point(lambda v: 40 + v // 6), 0.2)
    src = [(0, 0), (page.width, 0), (page.width, page.height), (0, page.height)]
    paper = page.convert("L").point(lambda v: 45 + v * 175 // 255)     # ink dark grey, paper light grey
    data = _perspective_coefficients(corners, src)
    warped = paper.transform(size, Image.Transform.PERSPECTIVE, data, Image.Resampling.BICUBIC)
    mask = Image.new("L", page.size, 255).transform(size, Image.Transform.PERSPECTIVE, data,
                                                    Image.Resampling.BILINEAR)
    photo = Image.composite(warped, table, mask)
    light = Image.linear_gradient("L").resize(size).point(lambda v: 215 + v * 40 // 255)
    photo = ImageChops.multiply(photo, light)
    photo = Image.blend(photo, Image.effect_noise(size, 20), 0.08).filter(ImageFilter.GaussianBlur(1.0))
    out = io.BytesIO()
    photo.convert("RGB").save(out, "JPEG", quality=88)
    return out.getvalue()

