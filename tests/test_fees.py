"""Fees are rules over the answers (kiosk/core/fees.py): per copy, reductions and exemptions with their
legal reason, the online rate where the station kind makes a submission online; computed once and the
same on the check page, in the dossier, on the receipt and its VietQR, in the ledger and the day's report.
At a counter staff record a reduction or exemption (audited), and delivery is asked and stored once."""
import json
import re
import shutil
import sqlite3

import pytest
import zxingcpp

from agent import report, staff
from kiosk.app import create_app
from kiosk.core import dossiers, fees
from kiosk.core.catalog import PROCEDURES_DIR, CatalogError, load_catalog
from kiosk.core.db import connect
from tests.support.fake_printer import FakeNetworkPrinter

from .conftest import csrf_token
from .escpos_decoder import decode, printed_image
from .test_vietqr import parse_tlv
from .wizard import answer_all, submit

PIN = "246810"
PAYMENT = {"bank_bin": "970436", "account": "0071000123456"}
JUDICIAL = "cap-phieu-ly-lich-tu-phap"


def amounts(fee: fees.Fee) -> int:
    assert sum(line.amount_vnd for line in fee.lines) == fee.amount_vnd  # the lines add up
    return fee.amount_vnd


# --- the computation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("channel", ["kiosk", "counter", "mobile"])
@pytest.mark.parametrize("copies, due", [(1, 200000), (2, 200000), (3, 205000), (5, 215000), (10, 240000)])
def test_judicial_record_copies_from_the_third(catalog, channel, copies, due):
    fee = fees.fee_for(catalog[JUDICIAL], {"copies": copies, "fee_ground": "khong"}, channel)
    assert amounts(fee) == due and fee.standard_vnd == due and fee.kind is None
    if copies > 2:
        extra = next(line for line in fee.lines if line.code == "copies")
        assert (extra.count, extra.first, extra.each_vnd) == (copies - 2, 3, 5000)


@pytest.mark.parametrize("ground", ["sinh-vien", "nguoi-co-cong"])
def test_students_and_people_with_meritorious_service_pay_100000_plus_extra_copies(catalog, ground):
    proc = catalog[JUDICIAL]
    one = fees.fee_for(proc, {"copies": 1, "fee_ground": ground}, "kiosk")
    assert amounts(one) == 100000 and one.standard_vnd == 200000
    assert (one.ground, one.kind, one.decided_by) == (ground, fees.REDUCED, "rules")
    assert "100.000" in one.reason["vi"] and "244/2016/TT-BTC" in one.reason["vi"] and one.reason["en"]
    assert amounts(fees.fee_for(proc, {"copies": 5, "fee_ground": ground}, "counter")) == 115000


@pytest.mark.parametrize("ground", ["tre-em", "nguoi-cao-tuoi", "khuyet-tat", "ho-ngheo", "xa-kho-khan"])
def test_exempt_people_pay_nothing_whatever_the_copies(catalog, ground):
    fee = fees.fee_for(catalog[JUDICIAL], {"copies": 5, "fee_ground": ground}, "counter")
    assert amounts(fee) == 0 and fee.standard_vnd == 215000
    assert (fee.ground, fee.kind) == (ground, fees.EXEMPT) and "244/2016/TT-BTC" in fee.reason["vi"]


@pytest.mark.parametrize("slug, online, in_person", [("dang-ky-thuong-tru", 10000, 20000),
                                                     ("doi-giay-phep-lai-xe", 115000, 135000)])
def test_the_station_kind_decides_the_online_or_the_in_person_rate(catalog, slug, online, in_person):
    proc = catalog[slug]
    at_kiosk = fees.fee_for(proc, {}, "kiosk")
    assert amounts(at_kiosk) == online and at_kiosk.rate == fees.ONLINE and at_kiosk.lines[0].code == "online"
    for channel in ("counter", "mobile"):
        at_counter = fees.fee_for(proc, {}, channel)
        assert amounts(at_counter) == in_person and at_counter.lines[0].code == "in_person"
    # A procedure with one rate charges it everywhere.
    assert {fees.fee_for(catalog[JUDICIAL], {}, c).amount_vnd for c in ("kiosk", "counter")} == {200000}


def test_permanent_residence_exemptions_apply_at_either_rate(catalog):
    proc = catalog["dang-ky-thuong-tru"]
    for channel in ("kiosk", "counter"):
        fee = fees.fee_for(proc, {"fee_ground": "ho-ngheo"}, channel)
        assert amounts(fee) == 0 and fee.kind == fees.EXEMPT


def test_staff_grounds_replace_the_declared_one(catalog):
    proc = catalog[JUDICIAL]
    declared = {"copies": 3, "fee_ground": "sinh-vien"}
    assert amounts(fees.fee_for(proc, declared, "counter", fees.StaffGround())) == 205000  # no proof: full fee
    exempt = fees.fee_for(proc, declared, "counter", fees.StaffGround("ho-ngheo"))
    assert amounts(exempt) == 0 and exempt.decided_by == "staff"
    other = fees.fee_for(proc, declared, "counter", fees.StaffGround(fees.OTHER, "Theo công văn số 12/CV", 50000))
    assert amounts(other) == 50000 and (other.ground, other.kind) == (fees.OTHER, fees.REDUCED)
    assert other.basis()["reason"]["vi"] == "Theo công văn số 12/CV"
    assert other.basis(sealed=False)["reason"] is None  # the staff's own words stay in the sealed payload
    with pytest.raises(ValueError):
        fees.fee_for(proc, declared, "counter", fees.StaffGround(fees.OTHER, "quá", 300000))
    with pytest.raises(ValueError):
        fees.fee_for(proc, declared, "counter", fees.StaffGround("khong-co"))


def test_every_ground_question_option_has_its_rule(catalog):
    """The shipped questions and rules agree: each option but "no" is a reduction or an exemption."""
    for proc in catalog.values():
        rules = {g["when"]["equals"] for g in fees.grounds(proc)}
        for field in proc.fields():
            if field["name"] == "fee_ground":
                values = [o["value"] for o in field["options"]]
                assert values[0] == "khong" and set(values[1:]) == rules, proc.slug
        assert not rules or any(f["name"] == "fee_ground" for f in proc.fields())


def test_the_driving_licence_has_the_police_procedure_code(catalog):
    assert catalog["doi-giay-phep-lai-xe"].code == "3.000347"


def _with_fee(tmp_path, transform) -> str:
    folder = tmp_path / "procedures"
    shutil.copytree(PROCEDURES_DIR, folder)
    target = folder / f"{JUDICIAL}.toml"
    target.write_text(transform(target.read_text("utf-8")), "utf-8")
    return folder


@pytest.mark.parametrize("transform, message", [
    (lambda s: s.replace('field = "copies", included', 'field = "so-ban", included'),
     r"fee\.copies\.field: no integer field is named 'so-ban'"),
    (lambda s: s.replace('equals = "ho-ngheo"', 'equals = "ngheo"'),
     r"fee\.exemptions\[3\]\.when\.equals: 'ngheo' is not an option of 'fee_ground'"),
    (lambda s: s.replace("amount_vnd = 100000", "amount_vnd = 250000", 1),
     r"fee\.reductions\[0\]\.amount_vnd: 250000 does not reduce the fee"),
    (lambda s: s.replace('id = "tre-em"', 'id = "other"'), r"fee\.exemptions\[0\]\.id"),
    (lambda s: s.replace('id = "tre-em"', 'id = "sinh-vien"'), r"fee\.exemptions\[0\]\.id: 'sinh-vien' is used by another"),
])
def test_fee_rules_that_cannot_work_stop_start_up(tmp_path, transform, message):
    with pytest.raises(CatalogError, match=rf"{JUDICIAL}\.toml: " + message):
        load_catalog(_with_fee(tmp_path, transform))


# --- through the app ----------------------------------------------------------------------------------

def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def _document(app, sid):
    conn = connect(app.config["DATABASE"])
    try:
        return dossiers.open_payload(conn, app.config["PAYLOAD_KEY"], sid)
    finally:
        conn.close()


def _counter(tmp_path, username="minh", **extra):
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")},
                      **extra})
    conn = connect(app.config["DATABASE"])
    try:
        staff.add(conn, username, username.title(), "agent", PIN)
    finally:
        conn.close()
    client = app.test_client()
    page = client.get("/agent/login")
    client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": username, "secret": PIN})
    return app, client


def _finish(client, proc, **overrides):
    page = client.get(f"/agent/p/{proc.slug}/finish")
    assert page.status_code == 200, page.text[:500]
    shown = re.search(r'name="fee_due_shown" value="(\d+)"', page.text).group(1)
    form = {"csrf_token": csrf_token(page.text), "delivery": "counter", "consent": "yes", "fee_due_shown": shown,
            "fee": re.search(r'id="fee" name="fee" [^>]*value="(\d*)"', page.text).group(1),
            "documents": [d["id"] for d in proc.documents if d["required"] and d["kind"] == "show"]}
    form.update(overrides)
    return page, client.post(f"/agent/p/{proc.slug}/finish", data=form)


def _shown_due(html: str) -> int:
    return int(re.search(r'data-fee-due="(\d+)"', html).group(1))


def _vietqr_amounts(image) -> list[str]:
    texts = [b.text for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
    return [parse_tlv(t).get("54") for t in texts if t.startswith("000201")]


def test_a_kiosk_dossier_carries_one_amount_from_the_check_page_to_the_vietqr(tmp_path, catalog):
    proc = catalog[JUDICIAL]
    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config(), "payment": PAYMENT})
        client = app.test_client()
        answer_all(client, proc, {"copies": {"copies": "5"}})
        check = client.get(f"/p/{proc.slug}/check")
        assert _shown_due(check.text) == 215000 and "215.000 đồng" in check.text
        assert "Thêm 3 bản từ bản thứ 3, mỗi bản 5.000 đồng" in check.text
        assert 'data-fee-due="215000"' in client.get(f"/p/{proc.slug}/submit").text  # the consent page
        assert submit(client, proc).status_code == 303
        app.extensions["receipts"].wait()
        printed = printed_image(decode(printer.data))
    [(sid, due, basis)] = _rows(app, "SELECT submission_id, fee_due_vnd, fee_basis FROM dossiers")
    assert due == 215000 and json.loads(basis)["amount_vnd"] == 215000 and json.loads(basis)["rate"] == "online"
    assert _document(app, sid)["fee"]["amount_vnd"] == 215000
    assert _shown_due(client.get("/done").text) == 215000
    assert _vietqr_amounts(printed) == ["215000"]


def test_a_kiosk_dossier_with_a_declared_exemption_is_free_and_has_no_payment_code(tmp_path, catalog):
    proc = catalog[JUDICIAL]
    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config(), "payment": PAYMENT})
        client = app.test_client()
        answer_all(client, proc, {"copies": {"copies": "5"}, "fee_ground": {"fee_ground": "tre-em"}})
        check = client.get(f"/p/{proc.slug}/check")
        assert _shown_due(check.text) == 0 and "Miễn: Trẻ em" in check.text
        submit(client, proc)
        app.extensions["receipts"].wait()
        printed = printed_image(decode(printer.data))
    assert _rows(app, "SELECT fee_due_vnd FROM dossiers") == [(0,)]
    assert _vietqr_amounts(printed) == []


def test_the_same_procedure_costs_the_online_rate_at_a_kiosk_and_the_in_person_rate_at_a_counter(tmp_path, catalog):
    proc = catalog["dang-ky-thuong-tru"]
    kiosk = create_app({"paths": {"data": str(tmp_path / "kiosk")}})
    client = kiosk.test_client()
    assert 'data-fee-from="10000"' in client.get(f"/p/{proc.slug}").text
    answer_all(client, proc)
    assert _shown_due(client.get(f"/p/{proc.slug}/check").text) == 10000
    submit(client, proc)
    assert _rows(kiosk, "SELECT channel, fee_due_vnd FROM dossiers") == [("kiosk", 10000)]

    app, counter = _counter(tmp_path / "counter")
    answer_all(counter, proc)
    assert _shown_due(counter.get(f"/p/{proc.slug}/check").text) == 20000
    page, done = _finish(counter, proc)
    assert _shown_due(page.text) == 20000 and done.status_code == 303
    assert _rows(app, "SELECT channel, fee_due_vnd FROM dossiers") == [("counter", 20000)]
    assert _rows(app, "SELECT amount_vnd FROM ledger WHERE kind = 'fee'") == [(20000,)]


def test_a_counter_dossier_carries_one_amount_into_the_ledger_and_the_days_report(tmp_path, catalog):
    proc = catalog[JUDICIAL]
    app, client = _counter(tmp_path, payment=PAYMENT)
    answer_all(client, proc, {"copies": {"copies": "5"}, "fee_ground": {"fee_ground": "sinh-vien"}})
    assert _shown_due(client.get(f"/p/{proc.slug}/check").text) == 115000
    page, done = _finish(client, proc)  # staff keep the ground the citizen declared, having seen the card
    assert 'value="sinh-vien" checked' in page.text and _shown_due(page.text) == 115000
    assert done.status_code == 303, done.text[:2000]
    code = done.headers["Location"].rsplit("/", 1)[1]
    [(sid, due)] = _rows(app, "SELECT submission_id, fee_due_vnd FROM dossiers")
    assert due == 115000
    assert _rows(app, "SELECT kind, amount_vnd FROM ledger") == [("fee", 115000)]
    conn = connect(app.config["DATABASE"])
    try:
        day = report.day_report(conn, conn.execute("SELECT local_day FROM dossiers").fetchone()[0])
    finally:
        conn.close()
    assert (day["station"]["fees_expected_vnd"], day["station"]["fees_taken_vnd"],
            day["station"]["fee_difference_vnd"]) == (115000, 115000, 0)
    [(detail,)] = _rows(app, "SELECT detail FROM audit_events WHERE action = 'fee.reduced' AND actor = 'minh'")
    assert json.loads(detail) == {"ground": "sinh-vien", "standard_vnd": 215000, "amount_vnd": 115000}
    assert "115.000 đ · minh" in client.get(f"/agent/d/{code}").text


def test_staff_record_an_exemption_the_fee_follows_and_it_is_audited(tmp_path, catalog):
    proc = catalog[JUDICIAL]
    app, client = _counter(tmp_path)
    answer_all(client, proc, {"copies": {"copies": "5"}})  # the citizen declared nothing
    page = client.get(f"/agent/p/{proc.slug}/finish")
    assert 'value="none" checked' in page.text and _shown_due(page.text) == 215000
    # Choosing a ground shows the new amount before anything is submitted.
    _page, changed = _finish(client, proc, fee_ground="ho-ngheo")
    assert changed.status_code == 422 and "đã được tính lại" in changed.text
    assert _shown_due(changed.text) == 0 and re.search(r'id="fee" name="fee" [^>]*value="0"', changed.text)
    assert _rows(app, "SELECT COUNT(*) FROM dossiers") == [(0,)]
    recalculated = client.post(f"/agent/p/{proc.slug}/finish", data={
        "csrf_token": csrf_token(page.text), "fee_ground": "xa-kho-khan", "action": "recalculate"})
    assert recalculated.status_code == 200 and _shown_due(recalculated.text) == 0
    _page, done = _finish(client, proc, fee_ground="ho-ngheo", fee_due_shown="0", fee="0")
    assert done.status_code == 303, done.text[:2000]
    [(sid, due, basis)] = _rows(app, "SELECT submission_id, fee_due_vnd, fee_basis FROM dossiers")
    basis = json.loads(basis)
    assert due == 0 and (basis["ground"], basis["kind"], basis["decided_by"]) == ("ho-ngheo", "exempt", "staff")
    assert "hộ nghèo" in basis["reason"]["vi"]
    assert _rows(app, "SELECT COUNT(*) FROM ledger") == [(0,)]  # nothing taken, nothing due
    [(actor, detail)] = _rows(app, "SELECT actor, detail FROM audit_events WHERE action = 'fee.exempt'")
    assert actor == "minh" and json.loads(detail) == {"ground": "ho-ngheo", "standard_vnd": 215000, "amount_vnd": 0}


def test_staff_record_another_reason_with_the_amount_due(tmp_path, catalog):
    proc = catalog[JUDICIAL]
    app, client = _counter(tmp_path)
    answer_all(client, proc)
    _page, refused = _finish(client, proc, fee_ground="other", fee_other_reason="", fee_other_amount="900000")
    assert refused.status_code == 422
    assert "Hãy ghi lý do miễn, giảm" in refused.text and "không quá 200.000 đồng" in refused.text
    _page, done = _finish(client, proc, fee_ground="other", fee_other_reason="Theo công văn số 12/CV-CA",
                          fee_other_amount="50.000", fee_due_shown="50000", fee="50000")
    assert done.status_code == 303, done.text[:2000]
    [(sid, due, basis)] = _rows(app, "SELECT submission_id, fee_due_vnd, fee_basis FROM dossiers")
    assert due == 50000 and json.loads(basis)["ground"] == "other" and json.loads(basis)["reason"] is None
    assert _document(app, sid)["fee"]["reason"]["vi"] == "Theo công văn số 12/CV-CA"
    assert _rows(app, "SELECT amount_vnd FROM ledger") == [(50000,)]
    [(detail,)] = _rows(app, "SELECT detail FROM audit_events WHERE action = 'fee.reduced'")
    assert json.loads(detail)["ground"] == "other" and "12/CV" not in detail


def test_at_a_counter_delivery_is_asked_once_and_stored_once(tmp_path, catalog):
    proc = catalog["doi-giay-phep-lai-xe"]
    app, client = _counter(tmp_path)
    visited = answer_all(client, proc)
    assert not any(path.endswith(("/q/cach-nhan", "/q/dia-chi-nhan")) for path in visited)  # the finish page asks
    check = client.get(f"/p/{proc.slug}/check").text
    assert 'data-field="delivery' not in check
    address = "Số 5 ngõ 12 phố Huế, Hà Nội"
    _page, done = _finish(client, proc, delivery="post", address=address)
    assert done.status_code == 303, done.text[:2000]
    [(sid,)] = _rows(app, "SELECT submission_id FROM dossiers")
    document = _document(app, sid)
    assert "delivery" not in document["answers"] and "delivery_address" not in document["answers"]
    assert document["counter"]["delivery"] == {"method": "post", "address": address}
    assert json.dumps(document, ensure_ascii=False).count("buu-chinh") == 0  # no second, contrary value


def test_a_kiosk_keeps_the_citizens_own_delivery_answer(tmp_path, catalog):
    proc = catalog["doi-giay-phep-lai-xe"]
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    client = app.test_client()
    visited = answer_all(client, proc, {"delivery": {"delivery": "buu-chinh"}})
    assert any(path.endswith("/q/cach-nhan") for path in visited)
    submit(client, proc)
    [(sid,)] = _rows(app, "SELECT submission_id FROM dossiers")
    document = _document(app, sid)
    assert document["answers"]["delivery"] == "buu-chinh" and "counter" not in document


def test_a_correction_at_the_counter_starts_from_the_citizens_delivery_answer(tmp_path, catalog):
    proc = catalog["doi-giay-phep-lai-xe"]
    app, client = _counter(tmp_path)
    citizen = app.test_client()  # the citizen's own pages on this station, nobody logged in
    answer_all(citizen, proc, {"delivery": {"delivery": "buu-chinh"}})
    submit(citizen, proc)
    [(code, first)] = _rows(app, "SELECT tracking_code, submission_id FROM dossiers")
    assert _document(app, first)["answers"]["delivery"] == "buu-chinh"
    page = client.get(f"/agent/d/{code}")
    client.post(f"/agent/d/{code}/correct", data={"csrf_token": csrf_token(page.text)})
    finish = client.get(f"/agent/p/{proc.slug}/finish").text
    # The citizen's address answer (tests/support/samples.py), as its one line of text.
    assert 'value="post" checked' in finish and "Số 1 Tràng Tiền, Phường Hoàn Kiếm, Thành phố Hà Nội" in finish
    _page, done = _finish(client, proc, delivery="post", address="Số 12, đường Lê Lợi, Thành phố Hồ Chí Minh")
    assert done.status_code == 303, done.text[:2000]
    [(second,)] = _rows(app, "SELECT submission_id FROM dossiers WHERE supersedes = ?", first)
    document = _document(app, second)
    assert "delivery" not in document["answers"] and document["counter"]["delivery"]["method"] == "post"
    assert document["fee"]["amount_vnd"] == 135000  # in person at the counter
