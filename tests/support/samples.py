"""Valid example answers for each field type, as a citizen would type them into the form.

Used by the benchmarks and the tests to walk through any procedure in the catalog without knowing it.
"""
import re
from datetime import date, timedelta

_TEXT_CANDIDATES = ("Nguyễn Văn An", "08:15", "AB123456", "001090012345", "12")


def form_for_field(field: dict, today: date | None = None) -> dict[str, str]:
    today = today or date.today()
    name, kind = field["name"], field["type"]
    if kind == "date":
        day = today + timedelta(days=30) if field.get("date") == "future" else date(1990, 3, 15)
        return {f"{name}__day": str(day.day), f"{name}__month": str(day.month), f"{name}__year": str(day.year)}
    if kind == "choice":
        return {name: field["options"][0]["value"]}
    if kind == "year":
        return {name: str(today.year + 1 if field.get("date") == "future" else 1990)}
    if kind == "integer":
        return {name: str(max(field.get("min", 1), 1))}
    if kind == "phone":
        return {name: "0912 345 678"}
    if kind == "email":
        return {name: "an.nguyen@example.com"}
    if kind == "id_number":
        # 001: Hà Nội (Thông tư 07/2016/TT-BCA annex); 0: a man born 1900-1999; 90: in 1990, as the sample
        # date and year of birth above and the first option (nam) of a sex question say.
        return {name: "001090012345"}
    if kind == "name":
        return {name: "Nguyễn Văn An"}
    if kind == "time":
        return {name: "9h30"}
    if kind == "address":  # Thành phố Hà Nội (01), Phường Hoàn Kiếm (00070): kiosk/core/units.py
        return {f"{name}__province": "01", f"{name}__commune": "00070", f"{name}__street": "Số 1 Tràng Tiền"}
    if kind == "textarea":
        return {name: "Số 12, đường Lê Lợi, phường Bến Thành, Thành phố Hồ Chí Minh"}
    if "pattern" in field:
        for candidate in _TEXT_CANDIDATES:
            if re.fullmatch(field["pattern"], candidate):
                return {name: candidate}
        raise ValueError(f"no sample text fits the pattern of field {name!r}")
    return {name: _TEXT_CANDIDATES[0]}


def form_for_page(page: dict, today: date | None = None) -> dict[str, str]:
    form: dict[str, str] = {}
    for field in page["fields"]:
        form.update(form_for_field(field, today))
    return form


def fill_page_in_browser(page, proc) -> None:
    """Answer the question page a Playwright ``page`` shows, with the sample answers (benchmarks and
    browser tests): radios are checked, every other input typed."""
    page_id = page.url.split("?")[0].rsplit("/", 1)[1]
    for field in proc.page(page_id)["fields"]:
        if field["type"] == "address":  # the picker: province, search the commune, choose it, the street
            name = field["name"]
            page.locator(f"select[name='{name}__province']").select_option("01")
            page.locator(f"[name='{name}__q']").fill("hoan kiem")
            page.locator(f"button[name='address_search'][value='{name}']").click()
            page.locator(f"input[type=radio][name='{name}__commune'][value='00070']").check()
    for name, value in form_for_page(proc.page(page_id)).items():
        if name.endswith(("__province", "__commune")):
            continue
        radio = page.locator(f"input[type=radio][name='{name}'][value='{value}']")
        if radio.count():
            radio.check()
        else:
            page.locator(f"[name='{name}']").fill(value)
