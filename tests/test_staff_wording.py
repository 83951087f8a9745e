"""Staff filling in the wizard for a citizen read about the citizen, in the third person ("Họ và tên của công
dân", "The citizen's full name"), where the citizen reads "Họ và tên của bạn" (issue 20). Every page of every
procedure is walked both ways, in both languages: its heading, labels, hints, options and error messages,
then the check-answers page."""
import html
import re

import pytest

from agent import staff
from kiosk import i18n
from kiosk.app import create_app
from kiosk.core import db
from kiosk.core.catalog import DELIVERY_FIELDS, load_catalog

from .conftest import csrf_token
from .wizard import answer_all, start
from tests.support.samples import form_for_page

PIN = "246810"
CATALOG = load_catalog()
SECOND_PERSON = {"vi": re.compile(r"\bbạn\b", re.IGNORECASE),
                 "en": re.compile(r"\byou(?:r|rs|rself)?\b", re.IGNORECASE)}


def _main(page: str) -> str:
    """What <main> says, tags and all (an attribute's words count too)."""
    found = re.search(r"<main[^>]*>(.*)</main>", page, re.S)
    assert found, page[:500]
    return html.unescape(found.group(1))


def _second_person(page: str, lang: str) -> list[str]:
    text = _main(page)
    return [text[max(0, m.start() - 60):m.end() + 30].replace("\n", " ") for m in SECOND_PERSON[lang].finditer(text)]


def _texts(field: dict) -> list[dict]:
    """A field's words on its page: its label, hint and options."""
    return [t for t in (field.get("label"), field.get("hint"), *field.get("options", [])) if t]


def _every_text(value):
    """Every {vi, en} text of a procedure's definition, wherever it is."""
    if isinstance(value, dict):
        if isinstance(value.get("vi"), str) and isinstance(value.get("en"), str):
            yield value
        for inner in value.values():
            yield from _every_text(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _every_text(inner)


@pytest.fixture
def counter(tmp_path):
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")}})
    conn = db.connect(app.config["DATABASE"])
    try:
        staff.add(conn, "lan", "Nguyễn Thị Lan", "agent", PIN)
    finally:
        conn.close()
    return app


def _staff_client(app, lang):
    client = app.test_client()
    page = client.get("/agent/login")
    assert client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": "lan",
                                              "secret": PIN}).status_code == 303
    client.get(f"/lang/{lang}")
    return client


def _citizen_client(app, lang):
    client = app.test_client()
    client.get(f"/lang/{lang}")
    return client


def _pages_of(client, proc):
    """Every question page of ``proc`` as the client sees it, each made to apply first (the answer its
    condition asks for given on the page that holds it), with the page after posting it empty (the error
    messages): yields (page, the page's HTML, the HTML with errors or None)."""
    start(client, proc.slug)
    for page in proc.pages:
        when = page.get("when")
        if when:
            holder = next(p for p in proc.pages if any(f["name"] == when["field"] for f in p["fields"]))
            path = f"/p/{proc.slug}/q/{holder['id']}"
            form = {**form_for_page(holder), when["field"]: when["equals"]}
            shown = client.get(path)
            if shown.status_code == 303:  # a delivery question (below): so is the page it opens
                assert all(f["name"] in DELIVERY_FIELDS for f in page["fields"] + holder["fields"])
                yield page, None, None
                continue
            posted = client.post(path, data={"csrf_token": csrf_token(shown.text), **form})
            assert posted.status_code == 303, (path, posted.text[:1000])
        path = f"/p/{proc.slug}/q/{page['id']}"
        shown = client.get(path)
        if shown.status_code == 303:  # the delivery question: staff answer it on the finish page
            assert all(f["name"] in DELIVERY_FIELDS for f in page["fields"])
            yield page, None, None
            continue
        assert shown.status_code == 200, (path, shown.status_code)
        empty = client.post(path, data={"csrf_token": csrf_token(shown.text)})
        yield page, shown.text, empty.text if empty.status_code == 422 else None


@pytest.mark.parametrize("lang", ["vi", "en"])
@pytest.mark.parametrize("slug", sorted(CATALOG))
def test_staff_read_every_question_about_the_citizen(counter, slug, lang):
    proc = CATALOG[slug]
    client = _staff_client(counter, lang)
    left, visited = [], 0
    for page, shown, with_errors in _pages_of(client, proc):
        if shown is None:
            continue
        visited += 1
        for where, text in (("page", shown), ("errors", with_errors)):
            if text is not None:
                left += [(page["id"], where, found) for found in _second_person(text, lang)]
        main = _main(shown)
        for field in page["fields"]:
            for words in _texts(field):
                assert i18n.addressed(words[lang], lang) in main, (page["id"], words[lang])
        if page.get("title"):
            assert i18n.addressed(page["title"][lang], lang) in main
    assert visited == sum(1 for p in proc.pages if not all(f["name"] in DELIVERY_FIELDS for f in p["fields"]))
    assert left == [], "\n".join(map(str, left))


@pytest.mark.parametrize("lang", ["vi", "en"])
@pytest.mark.parametrize("slug", sorted(CATALOG))
def test_citizens_read_every_question_as_written(tmp_path, slug, lang):
    """The same pages for the citizen: the definition's own words, "bạn" and "you" included."""
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    proc = CATALOG[slug]
    client = _citizen_client(app, lang)
    addressed = 0
    for page, shown, _errors in _pages_of(client, proc):
        main = _main(shown)
        for field in page["fields"]:
            for words in _texts(field):
                assert words[lang] in main, (page["id"], words[lang])
                addressed += bool(SECOND_PERSON[lang].search(words[lang]))
    assert addressed > 0, "no question of this procedure says bạn/you: the walk proves nothing"


@pytest.mark.parametrize("lang", ["vi", "en"])
@pytest.mark.parametrize("slug", sorted(CATALOG))
def test_the_check_answers_page_for_staff_names_the_citizen(counter, tmp_path, slug, lang):
    proc = CATALOG[slug]
    client = _staff_client(counter, lang)
    answer_all(client, proc)
    check = client.get(f"/p/{proc.slug}/check")
    assert check.status_code == 200
    assert _second_person(check.text, lang) == []
    if lang == "en":
        assert "Check the citizen's answers before submitting" in _main(check.text)

    # The citizen's own check page keeps the definition's words.
    citizen = _citizen_client(create_app({"paths": {"data": str(tmp_path / "kiosk")}}), lang)
    asked = [proc.page(path.rsplit("/", 1)[1]) for path in answer_all(citizen, proc)]
    mine = _main(citizen.get(f"/p/{proc.slug}/check").text)
    labels = [f["label"][lang] for p in asked for f in p["fields"]]
    assert [label for label in labels if label not in mine] == []
    assert any(SECOND_PERSON[lang].search(label) for label in labels)


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_staff_read_every_paper_step_about_the_citizen(counter, lang):
    """The paper steps between the questions and the check page: the paper's name, "Nộp nếu bạn có giấy tờ
    này", "Đã ghi nhận: bạn không có giấy tờ này"."""
    client = _staff_client(counter, lang)
    left, steps = [], 0
    for proc in CATALOG.values():
        answer_all(client, proc, papers=False)
        for paper in proc.documents:
            path = f"/p/{proc.slug}/giay-to/{paper['id']}"
            shown = client.get(path)
            if shown.status_code != 200:  # not a step here (shown at the counter, or the form itself)
                continue
            steps += 1
            left += [(path, found) for found in _second_person(shown.text, lang)]
            assert i18n.addressed(paper[lang], lang) in _main(shown.text)
            if not paper["required"]:
                marked = client.post(path, data={"csrf_token": csrf_token(shown.text), "action": "not_applicable"})
                assert marked.status_code == 303
                left += [(path, found) for found in _second_person(client.get(path).text, lang)]
    assert steps >= len(CATALOG)
    assert left == [], "\n".join(map(str, left))


@pytest.mark.parametrize("lang", ["vi", "en"])
def test_every_text_of_every_procedure_reads_in_the_third_person_for_staff(counter, lang):
    """What no page walk reaches by an empty form too (a pattern's message, a fee ground's reason, the
    summary): every {vi, en} text of every definition, as ``pick`` gives it to staff and to the citizen."""
    from flask import g, session

    left, turned = [], 0
    for proc in CATALOG.values():
        texts = list(_every_text([proc.name, proc.summary, proc.agency, proc.pages, proc.documents, proc.fee]))
        assert texts
        with counter.test_request_context(f"/p/{proc.slug}/check"):
            session["lang"] = lang
            g.staff = None
            assert [i18n.pick(t) for t in texts] == [t[lang] for t in texts]  # the citizen: as written
            g.staff = {"id": 1}
            for text in texts:
                shown = i18n.pick(text)
                turned += shown != text[lang]
                if SECOND_PERSON[lang].search(shown):
                    left.append((proc.slug, shown))
    assert left == [], "\n".join(map(str, left))
    assert turned > 50


@pytest.mark.parametrize("text, lang, expected", [
    ("Họ và tên của bạn", "vi", "Họ và tên của công dân"),
    ("Số căn cước của bạn (12 số)", "vi", "Số căn cước của công dân (12 số)"),
    ("Bạn sinh ra ở đâu?", "vi", "Công dân sinh ra ở đâu?"),
    ("Họ và tên của người bạn sắp kết hôn", "vi", "Họ và tên của người mà công dân sắp kết hôn"),
    ("Không, tôi nộp đủ phí", "vi", "Không, tôi nộp đủ phí"),  # the citizen's own declaration stays
    ("Your full name", "en", "The citizen's full name"),
    ("Where do you live?", "en", "Where does the citizen live?"),
    ("Are you a man or a woman?", "en", "Is the citizen a man or a woman?"),
    ("Leave blank if you do not know it.", "en", "Leave blank if the citizen does not know it."),
    ("Do you want messages telling you how your application is going?", "en",
     "Does the citizen want messages telling them how their application is going?"),
    ("Full name of the person you plan to marry", "en", "Full name of the person the citizen plans to marry"),
    ("Check it before you continue.", "en", "Check it before continuing."),
    ("No, I pay the full fee", "en", "No, I pay the full fee"),
])
def test_the_third_person_rule(text, lang, expected):
    assert i18n.addressed(text, lang) == expected


def test_words_for_whoever_is_at_the_screen_are_not_turned(counter):
    """The idle warning speaks to the staff member at the screen; a citizen's typed answer is never changed;
    the rating is read and answered by the citizen on the staff member's screen."""
    client = _staff_client(counter, "vi")
    proc = CATALOG["dang-ky-khai-tu"]
    path = start(client, proc.slug)
    page = client.get(path)
    assert i18n.MESSAGES["idle_title"]["vi"] in page.text  # "Bạn vẫn đang dùng máy chứ?"
    for key in ("rating_title", "idle_text", "not_found_text"):
        assert key not in i18n.CITIZEN_KEYS
    with counter.test_request_context(f"/p/{proc.slug}/check"):
        from flask import g
        g.staff = {"id": 1}
        assert i18n.staff_reading()
        assert i18n.t("address_ambiguous", old="Nhà bạn Lan") == \
            "Nơi ở cũ “Nhà bạn Lan” nay thuộc một trong các xã, phường dưới đây. Hãy chọn nơi công dân ở."
    with counter.test_request_context("/danh-gia"):
        from flask import g
        g.staff = {"id": 1}
        assert not i18n.staff_reading()
        assert i18n.t("rating_title") == "Bạn có hài lòng không?"
