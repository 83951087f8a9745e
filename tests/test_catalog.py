"""Procedure definitions are data, checked at start-up with a message naming the file and the field."""
import re
import shutil
import unicodedata
from pathlib import Path

import pytest

from kiosk.app import create_app
from kiosk.core import dossiers
from kiosk import i18n
from kiosk.core.catalog import PROCEDURES_DIR, CatalogError, load_catalog

ROOT = Path(__file__).resolve().parent.parent


def test_ships_at_least_six_real_procedures(catalog):
    assert len(catalog) >= 6
    for proc in catalog.values():
        assert re.fullmatch(r"\d\.\d{6}", proc.code)
        assert proc.name["vi"] != proc.name["en"]
        assert proc.documents and proc.pages
        assert unicodedata.normalize("NFC", proc.name["vi"]) == proc.name["vi"]


def _broken(tmp_path, transform) -> Path:
    folder = tmp_path / "procedures"
    shutil.copytree(PROCEDURES_DIR, folder)
    target = folder / "dang-ky-khai-tu.toml"
    target.write_text(transform(target.read_text("utf-8")), "utf-8")
    return folder


@pytest.mark.parametrize("transform,message", [
    (lambda s: s.replace('type = "date"', 'type = "dat"', 1), r"dang-ky-khai-tu\.toml: pages\[\d+\]\.fields\[0\]\.type: 'dat' is not one of"),
    (lambda s: re.sub(r"(?m)^amount_vnd = .*$", 'amount_vnd = "free"', s), r"dang-ky-khai-tu\.toml: fee\.amount_vnd: 'free' is not of type 'integer'"),
    (lambda s: re.sub(r"(?m)^code = .*$", "", s, count=1), r"dang-ky-khai-tu\.toml: \(top level\): 'code' is a required property"),
    (lambda s: s.replace("[[pages]]", "[[pages]]\nwhen = { field = \"nope\", equals = \"x\" }", 1), r"dang-ky-khai-tu\.toml: pages\[0\]\.when\.field: no earlier field is named 'nope'"),
    (lambda s: s + "\n[[pages]]\nid = 'x'\n[[pages.fields]]\nname = 'y'\ntype = 'text'\nlabel = {vi='a', en='b'}\npattern = '('\npattern_message = {vi='a', en='b'}\n", r"pattern: not a valid regular expression"),
    (lambda s: s + "\n[[pages]\n", r"dang-ky-khai-tu\.toml: not valid TOML"),
    (lambda s: s.replace("max_length = 200\nprefill = \"card.full_name\"", "max_length = 100\nprefill = \"card.full_name\"", 1),
     r"max_length: 100 is shorter than what the card can give \(card.full_name, up to 200"),
])
def test_malformed_definition_names_file_and_field(tmp_path, transform, message):
    with pytest.raises(CatalogError, match=message):
        load_catalog(_broken(tmp_path, transform))


_EXTRA_PAGE = ("\n[[pages]]\nid = 'zz'\n{title}[[pages.fields]]\nname = '{name}'\ntype = 'text'\n"
               "label = {{vi='{vi}', en='{en}'}}\nhint = {{vi='{hint}', en='Commune'}}\n")


@pytest.mark.parametrize("extra,message", [
    (dict(name="huyen", vi="Xã", en="Commune"), r"fields\[0\]\.name: 'huyen' asks for a district"),
    (dict(name="address_district", vi="Xã", en="Commune"), r"name: 'address_district' asks for a district"),
    (dict(name="dia_chi", vi="Quận/huyện", en="Commune"), r"label\.vi: asks for a district \('Quận/huyện'\)"),
    (dict(name="dia_chi", vi="Xã", en="District"), r"label\.en: asks for a district"),
    (dict(name="dia_chi", vi="Huyện nơi sinh", en="Place"), r"label\.vi: asks for a district"),
    (dict(name="dia_chi", vi="Xã", en="Commune", title="title = {vi='Quận, huyện', en='x'}\n"),
     r"title\.vi: asks for a district"),
])
def test_a_definition_that_asks_a_district_is_refused(tmp_path, extra, message):
    """Since 1 July 2025 there is no district level (NQ 202/2025/QH15): `kiosk check` refuses the question."""
    page = _EXTRA_PAGE.format(**{"title": "", "hint": "Xã", **extra})
    with pytest.raises(CatalogError, match=r"dang-ky-khai-tu\.toml: pages\[\d+\]\..*" + message):
        load_catalog(_broken(tmp_path, lambda s: s + page))


@pytest.mark.parametrize("extra", [
    dict(name="dia_chi", vi="Xã, phường hoặc đặc khu", en="Commune, ward or special zone",
         hint="Quận 1 cũ nay là phường Sài Gòn, phường Bến Thành…"),  # a hint may name an old district
    dict(name="quan_he", vi="Quan hệ với chủ hộ", en="Relationship"),  # "quan" (relation) is not "quận"
    dict(name="ten_truyen", vi="Tên huyền thoại", en="Legend"),  # "huyền" is not "huyện" (a slug has no
    # tone marks, so a field named "…_huyen_…" is refused whatever it means: choose another name)
])
def test_words_that_only_look_like_a_district_are_fine(tmp_path, extra):
    page = _EXTRA_PAGE.format(**{"title": "", "hint": "Xã", **extra})
    load_catalog(_broken(tmp_path, lambda s: s + page))


def test_duplicate_code_is_refused(tmp_path):
    folder = _broken(tmp_path, lambda s: s)
    shutil.copy(folder / "dang-ky-khai-tu.toml", folder / "zz-copy.toml")
    with pytest.raises(CatalogError, match=r"zz-copy\.toml: code: .* also used by dang-ky-khai-tu\.toml"):
        load_catalog(folder)


def test_a_broken_catalog_stops_start_up(tmp_path):
    folder = _broken(tmp_path, lambda s: s.replace('type = "date"', 'type = "dat"', 1))
    with pytest.raises(CatalogError, match="dang-ky-khai-tu.toml"):
        create_app({"paths": {"data": str(tmp_path / "var"), "procedures": str(folder)}})


def test_kiosk_check_reports_the_broken_file(tmp_path):
    from click.testing import CliRunner

    from kiosk.cli import main
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0 and "1.001193" in result.output
    folder = _broken(tmp_path, lambda s: s.replace('type = "date"', 'type = "dat"', 1))
    station = tmp_path / "station.toml"
    station.write_text(f'[paths]\nprocedures = "{folder}"\n')
    result = CliRunner().invoke(main, ["check", "--station", str(station)])
    assert result.exit_code == 1 and "dang-ky-khai-tu.toml: pages[" in result.output


def test_every_message_has_both_languages_and_every_used_key_exists():
    for key, text in i18n.MESSAGES.items():
        assert set(text) == {"vi", "en"}, key
        assert unicodedata.normalize("NFC", text["vi"]) == text["vi"], key
    used = set()
    for path in list((ROOT / "templates").rglob("*.html")) + list((ROOT / "kiosk").glob("*.py")):
        used |= set(re.findall(r"""\bt\(\s*['"]([a-z0-9_]+)['"]\s*[,)]""", path.read_text("utf-8")))
    assert used, "no message keys found"
    assert used - set(i18n.MESSAGES) == set()
    # Status labels are looked up by name on the tracking page.
    assert {f"status_{s}" for s in dossiers.STATUSES} <= set(i18n.MESSAGES)
    # Keys the services and commands name outside t(): the receipt's printed labels, the operator's lines.
    named = set()
    for path in (ROOT / "kiosk").glob("*.py"):
        named |= set(re.findall(r"""\b(?:say|_tell|bilingual|_vi|_en)\(\s*['"]([a-z0-9_]+)['"]\s*[,)]""",
                                path.read_text("utf-8")))
    assert {"receipt_title", "printer_test_printed", "simulated_card_ready", "test_page_time"} <= named
    assert named - set(i18n.MESSAGES) == set()


def test_every_code_the_devices_return_has_its_words():
    """devices/ returns codes; kiosk/device_words.py looks their words up by name (messages_devices.toml)."""
    import devices.secure_messaging  # noqa: F401  (its CardError subclass counts too)
    from devices import card_errors, passive_auth
    from devices.printer import Status
    from devices.scanner import CODES as SCANNER_CODES
    from kiosk.core.pages import CODES as PAGE_CODES
    expected = {f"card_error_{code}" for code in card_errors.all_codes()}
    expected |= {f"scanner_error_{code}" for code in SCANNER_CODES} | {f"page_error_{code}" for code in PAGE_CODES}
    expected |= {f"card_error_tampered_{reason}" for reason in card_errors.TAMPERED_REASONS}
    expected |= {f"card_pa_{code}" for code in (*passive_auth.REASONS, *passive_auth.FINDINGS, "signed_with_warning")}
    expected |= {f"printer_status_{status.code}" for status in Status}
    expected |= {"print_outcome_printed", "print_outcome_on_screen", "card_reader_ready", "card_reader_card_present"}
    expected |= {f"receipt_weekday_{day}" for day in range(7)}
    assert expected - set(i18n.MESSAGES) == set()
    # A message with a placeholder gets the parameter its code carries.
    assert "{dg}" in i18n.MESSAGES["card_error_tampered_dg_changed"]["en"]
    assert "{count}" in i18n.MESSAGES["card_pa_unreadable_items"]["vi"]


def test_devices_carry_codes_not_sentences():
    """No Vietnamese words in devices/ outside docstrings, but for the card's own data: the synthetic test
    person (card_profile.py), the values a card holds (cccd.py) and the words printed on a card. (A single
    letter is no word: VietQR's transliteration of "đ".)"""
    import ast
    card_terms = ("Không thời hạn",)
    vietnamese = set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")
    for path in (ROOT / "devices").glob("*.py"):
        if path.name in ("card_profile.py", "cccd.py"):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
                for term in card_terms:
                    text = text.replace(term, "")
                words = [w for w in re.findall(r"\w{2,}", text.lower()) if set(w) & vietnamese]
                assert not words, f"{path.name}:{node.lineno}: {node.value!r}"


def test_card_limits_of_the_catalog_are_those_of_the_card_path():
    from devices import cccd
    from kiosk.core.catalog import CARD_TEXT_MAX, PREFILL_SOURCES
    for source, limit in CARD_TEXT_MAX.items():
        assert source in PREFILL_SOURCES
        assert limit == (cccd.MAX_NAME if source.removeprefix("card.") in cccd.NAME_FIELDS else cccd.MAX_TEXT)
