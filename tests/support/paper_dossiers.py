"""Dossiers with papers, made through the station's real core (a draft, pages added, submit), from pages as
the world makes them (tests/support/paper.py), each page different so every PDF is its own blob. A TEST AND
BENCHMARK HELPER, not used in service."""
import random

from PIL import ImageDraw, ImageFont

from kiosk.core.catalog import Procedure
from tests.support.harness import PROCEDURE, sample_answers
from tests.support.paper import FONT, page_png, text_page

# The harness's procedure with three papers to scan, all optional, so a dossier may carry one to three.
PAPERS = [{"id": "giay-khai-sinh", "kind": "scan", "required": False, "vi": "Giấy khai sinh",
           "en": "Birth certificate"},
          {"id": "so-ho-khau", "kind": "scan", "required": False, "vi": "Giấy xác nhận cư trú",
           "en": "Residence confirmation"},
          {"id": "uy-quyen", "kind": "scan", "required": False, "vi": "Văn bản ủy quyền",
           "en": "Letter of authorisation"}]
PAPERS_PROCEDURE = Procedure(**{**PROCEDURE.__dict__, "documents": PAPERS})


def distinct_page(n: int, mode: str = "gray"):
    """A clean page (kiosk.core.pages.clean_page of a 300 dpi scan) whose content is its own: the typeset
    text page with its number written on it and a few specks where a scanner's glass had dust."""
    from kiosk.core.pages import clean_page

    page = text_page()
    draw = ImageDraw.Draw(page)
    draw.text((1500, 250), f"Số: {n:04d}/XN", font=ImageFont.truetype(str(FONT), 60), fill=0)
    rng = random.Random(n)
    for _ in range(12):
        x, y = rng.randrange(150, 2300), rng.randrange(600, 3300)
        draw.ellipse((x, y, x + rng.randrange(3, 9), y + rng.randrange(3, 9)), fill=rng.randrange(0, 120))
    return clean_page(page_png(page), mode=mode)


def submit_with_papers(config: dict, pages: dict[str, list], seed: int = 0) -> str:
    """Submit one dossier of PAPERS_PROCEDURE carrying ``pages`` ({paper id: [clean pages]}) through the
    core: a draft, each page added as scanned, submit. Returns its submission id."""
    from kiosk.core import documents, drafts
    from kiosk.core.db import connect
    from kiosk.core.dossiers import submit
    from kiosk.core.sealing import load_or_create_key
    from sync.worker import station_paths

    paths = station_paths(config)
    key = load_or_create_key(paths["payload_key"])
    conn = connect(paths["database"])
    try:
        draft_id = drafts.create(conn, key, PAPERS_PROCEDURE.slug, PAPERS_PROCEDURE.version)
        for document_id, page_list in pages.items():
            for page in page_list:
                documents.add_page(conn, key, draft_id, document_id, page, "scanner")
        return submit(conn, key=key, station=config["station"], channel="kiosk", procedure=PAPERS_PROCEDURE,
                      answers=sample_answers(random.Random(seed)), draft_id=draft_id).submission_id
    finally:
        conn.close()
