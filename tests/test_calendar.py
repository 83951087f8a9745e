"""Working days and due dates (kiosk/core/calendar.py). The expected days are published facts, written out
here by hand, not computed by the code under test: the holidays of Labour Code 2019 art. 112 as announced
(ONE-STOP.md, "Dates": Tết 2026 is 16–20 February), the lunar new year of 2027 (Saturday 6 February 2027),
and the weekday of each date."""
import re
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

import kiosk.web
import kiosk.core.dossiers
from kiosk import i18n
from kiosk.app import create_app
from kiosk.core import calendar as workdays
from kiosk.core.calendar import WorkCalendar, processing_time_message, result_due
from kiosk.core.config import DEFAULTS, ConfigError, load_station
from kiosk.receipt_document import appointment_date, format_day
from tests.wizard import answer_all, submit

VN = ZoneInfo("Asia/Ho_Chi_Minh")
STATION = WorkCalendar()  # the defaults: closes 17:00, same-day cut-off 15:00, no station days


def at(year, month, day, hour=10, minute=0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN)


def due_day(received: datetime, days: int, calendar: WorkCalendar = STATION) -> date:
    return result_due(received, days, calendar).date()


# -- public holidays -----------------------------------------------------------------------------------

def test_tet_2026_is_16_to_20_february():
    assert [STATION.is_working_day(date(2026, 2, d)) for d in range(13, 24)] == [
        True,                                # Fri 13
        False, False,                        # the weekend
        False, False, False, False, False,   # Mon 16 – Fri 20: Tết
        False, False,                        # the weekend (14–22 off in all)
        True,                                # Mon 23
    ]


def test_tet_2027_the_package_days_around_saturday_6_february():
    # Mùng 1 Tết Đinh Mùi is Saturday 6 February 2027; the package gives five working days off around it:
    # Thu 4 (29 Tết), Fri 5 (giao thừa), Mon 8 (mùng 3, where an appointment fell), Tue 9, Wed 10.
    assert STATION.holiday(date(2027, 2, 6)) is not None
    off = [d for d in range(1, 15) if not STATION.is_working_day(date(2027, 2, d))]
    assert off == [4, 5, 6, 7, 8, 9, 10, 13, 14]
    assert not STATION.is_working_day(date(2027, 2, 8))  # the third day of Tết, a Monday


def test_30_april_and_1_may_2026():
    assert not STATION.is_working_day(date(2026, 4, 30))  # Thursday
    assert not STATION.is_working_day(date(2026, 5, 1))   # Friday
    assert STATION.is_working_day(date(2026, 4, 29)) and STATION.is_working_day(date(2026, 5, 4))


def test_2_september_2026_and_the_day_beside_it():
    assert not STATION.is_working_day(date(2026, 9, 2))  # Wednesday
    assert not STATION.is_working_day(date(2026, 9, 1))  # Tuesday, the day beside it
    assert STATION.is_working_day(date(2026, 9, 3))
    # The 2026 swap the package knows: Monday 31 August off, Saturday 22 August worked for it.
    assert not STATION.is_working_day(date(2026, 8, 31))
    assert STATION.is_working_day(date(2026, 8, 22))


def test_a_holiday_on_a_sunday_or_saturday_moves_to_the_next_working_day():
    # Giỗ Tổ Hùng Vương (10/3 lunar) 2026 is Sunday 26 April: Monday 27 April is off.
    assert not STATION.is_working_day(date(2026, 4, 27))
    assert STATION.is_working_day(date(2026, 4, 28))
    # 1 May 2027 is a Saturday: Monday 3 May 2027 is off.
    assert not STATION.is_working_day(date(2027, 5, 3))


def test_new_year_and_culture_day():
    assert not STATION.is_working_day(date(2027, 1, 1))    # Friday
    assert not STATION.is_working_day(date(2026, 11, 24))  # Tuesday, Ngày Văn hóa Việt Nam from 2026
    assert STATION.is_working_day(date(2025, 11, 24))      # Monday, before it was a holiday


@pytest.fixture
def package_without_culture_day(monkeypatch):
    """The holidays package as it was before it had 24 November."""
    real = workdays.holidays.country_holidays

    def older(*args, **kwargs):
        found = real(*args, **kwargs)
        for day in [d for d in found if d.month == 11]:
            found.pop(day)
        return found

    monkeypatch.setattr(workdays.holidays, "country_holidays", older)
    workdays._public_holidays.cache_clear()
    yield
    workdays._public_holidays.cache_clear()


def test_culture_day_follows_the_setting_where_the_package_lacks_it(package_without_culture_day):
    assert not WorkCalendar(culture_day=True).is_working_day(date(2026, 11, 24))
    assert WorkCalendar(culture_day=False).is_working_day(date(2026, 11, 24))
    # 24 November 2029 is a Saturday: the day off is Monday 26 November.
    assert not WorkCalendar(culture_day=True).is_working_day(date(2029, 11, 26))


# -- when a dossier counts as received ---------------------------------------------------------------

def test_received_at_23_48_on_a_friday_counts_from_monday():
    friday_night = at(2026, 11, 27, 23, 48)
    assert STATION.counted_from(friday_night) == date(2026, 11, 30)
    assert due_day(friday_night, 1) == date(2026, 12, 1)      # Tuesday, not Monday
    assert due_day(at(2026, 11, 27, 10), 1) == date(2026, 11, 30)  # in office hours: Monday
    assert due_day(at(2026, 11, 27, 17, 0), 1) == date(2026, 12, 1)  # at closing time: after hours


def test_received_on_a_saturday_counts_from_monday():
    saturday = at(2026, 11, 28, 9, 30)
    assert due_day(saturday, 0) == date(2026, 11, 30)
    assert due_day(saturday, 1) == date(2026, 12, 1)
    assert due_day(saturday, 3) == date(2026, 12, 3)


def test_same_day_procedure_received_after_15_00_is_due_the_next_working_day():
    assert due_day(at(2026, 11, 26, 14, 59), 0) == date(2026, 11, 26)
    assert due_day(at(2026, 11, 26, 15, 30), 0) == date(2026, 11, 27)
    assert due_day(at(2026, 11, 27, 15, 30), 0) == date(2026, 11, 30)  # a Friday: Monday
    assert due_day(at(2026, 11, 26, 15, 30), 1) == date(2026, 11, 27)  # not a same-day procedure: no cut-off


def test_the_due_time_is_closing_time_in_the_station_zone():
    due = result_due(datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc), 0, STATION)  # 10:00 in Hà Nội
    assert due == datetime(2026, 11, 26, 17, 0, tzinfo=VN)
    late = WorkCalendar(office_closes=datetime.strptime("16:30", "%H:%M").time())
    assert result_due(at(2026, 11, 26, 16, 45), 1, late) == datetime(2026, 11, 30, 16, 30, tzinfo=VN)


def test_a_naive_time_and_negative_days_are_refused():
    with pytest.raises(ValueError):
        result_due(datetime(2026, 11, 26, 10, 0), 1, STATION)
    with pytest.raises(ValueError):
        result_due(at(2026, 11, 26), -1, STATION)


# -- the station's own days --------------------------------------------------------------------------

def _station(tmp_path, **calendar) -> WorkCalendar:
    return WorkCalendar.from_station(load_station(overrides={"paths": {"data": str(tmp_path)}, "calendar": calendar}))


def test_a_working_saturday_from_the_station_list(tmp_path):
    station = _station(tmp_path, working_days=["2026-12-05"])
    saturday = at(2026, 12, 5, 9, 0)
    assert station.counted_from(saturday) == date(2026, 12, 5)
    assert due_day(saturday, 1, station) == date(2026, 12, 7)
    assert due_day(saturday, 0, station) == date(2026, 12, 5)
    assert due_day(at(2026, 12, 4), 1, station) == date(2026, 12, 5)  # Friday + 1: that Saturday
    assert due_day(at(2026, 12, 4), 1) == date(2026, 12, 7)          # without the list: Monday


def test_a_compensatory_day_off_from_the_station_list(tmp_path):
    station = _station(tmp_path, days_off=["2026-12-07"])
    assert due_day(at(2026, 12, 4), 1, station) == date(2026, 12, 8)
    assert station.counted_from(at(2026, 12, 7)) == date(2026, 12, 8)
    # A day in both lists is worked.
    assert _station(tmp_path, days_off=["2026-12-07"], working_days=["2026-12-07"]).is_working_day(date(2026, 12, 7))


def test_the_station_settings_and_their_defaults(tmp_path):
    assert _station(tmp_path) == WorkCalendar()
    assert set(DEFAULTS["calendar"]) == {"office_closes", "same_day_until", "days_off", "working_days", "culture_day"}
    station = _station(tmp_path, office_closes="16:30", same_day_until="11:00")
    assert due_day(at(2026, 11, 26, 11, 0), 0, station) == date(2026, 11, 27)
    assert due_day(at(2026, 11, 26, 16, 30), 1, station) == date(2026, 11, 30)


@pytest.mark.parametrize("calendar, words", [
    ({"days_off": ["2026-02-30"]}, 'calendar.days_off.0 = "2026-02-30": '),
    ({"days_off": ["2027-02-29"]}, "yyyy-mm-dd"),
    ({"working_days": ["22/08/2026"]}, "calendar.working_days.0"),
    ({"days_off": [date(2026, 8, 31)]}, "text in quotes"),
    ({"office_closes": "5pm"}, 'calendar.office_closes = "5pm": '),
    ({"same_day_until": "24:00"}, "hh:mm"),
    ({"culture_day": "yes"}, "must be true or false"),
    ({"holidays": []}, "calendar.holidays: "),
])
def test_wrong_calendar_settings_are_refused_with_the_key(tmp_path, calendar, words):
    with pytest.raises(ConfigError) as refused:
        load_station(overrides={"paths": {"data": str(tmp_path)}, "calendar": calendar})
    assert words in str(refused.value)


def test_a_real_29_february_is_accepted(tmp_path):
    assert date(2028, 2, 29) in _station(tmp_path, days_off=["2028-02-29"]).days_off


# -- processing over Tết and other holidays ------------------------------------------------------------

def test_processing_over_tet_2026_spans_weeks():
    # 10 working days from Wednesday 11 February 2026: Thu 12, Fri 13, then Tết and two weekends (14–22),
    # then 23, 24, 25, 26, 27 February, 2, 3, 4 March.
    assert due_day(at(2026, 2, 11), 10) == date(2026, 3, 4)
    assert due_day(at(2026, 2, 13), 3) == date(2026, 2, 25)   # the example in docs/procedures.md
    assert due_day(at(2026, 2, 17), 1) == date(2026, 2, 24)   # received during Tết: counts from 23 February


def test_appointments_no_longer_fall_on_holidays():
    assert due_day(at(2026, 8, 28), 1) == date(2026, 9, 3)    # not 31/8, 1/9 or 2/9
    assert due_day(at(2026, 4, 29), 1) == date(2026, 5, 4)    # not 30/4 or 1/5
    assert due_day(at(2027, 2, 5), 1) == date(2027, 2, 12)    # received on giao thừa: counts from Thu 11
    assert due_day(at(2027, 2, 3), 1) == date(2027, 2, 11)    # not the third day of Tết


def test_the_receipt_delegates_to_the_calendar():
    # Friday night before 31/8, 1/9 and 2/9: counts from Thursday 3 September, due Friday 4.
    assert appointment_date(at(2026, 8, 28, 23, 48), 1) == date(2026, 9, 4)
    assert appointment_date(date(2026, 4, 29), 1) == date(2026, 5, 4)
    assert appointment_date(date(2026, 4, 29), 1, holidays=[date(2026, 5, 4)]) == date(2026, 5, 5)


# -- the words ---------------------------------------------------------------------------------------

def test_the_words_of_a_processing_time():
    assert processing_time_message(0) == ("processing_time_same_day", {})
    assert processing_time_message(0, STATION) == ("processing_time_same_day_detail", {"time": "15:00"})
    assert processing_time_message(1) == ("processing_time_one_day", {})
    assert processing_time_message(7) == ("processing_time_days", {"days": 7})
    with pytest.raises(ValueError):
        processing_time_message(-1)
    words = {days: {lang: i18n.say(processing_time_message(days, STATION)[0], lang,
                                   **processing_time_message(days, STATION)[1]) for lang in i18n.LANGUAGES}
             for days in (0, 1, 7)}
    assert words[0]["vi"] == "Trả kết quả trong ngày (nộp sau 15:00 thì trả vào ngày làm việc tiếp theo)"
    assert words[1] == {"vi": "1 ngày làm việc", "en": "1 working day"}
    assert words[7] == {"vi": "7 ngày làm việc", "en": "7 working days"}
    assert i18n.MESSAGES["processing_time_same_day"]["vi"] == "Trả kết quả trong ngày"


# -- through the app: the overview, the confirmation and the receipt agree ------------------------------

class _Frozen(datetime):
    moment = at(2026, 4, 29, 17, 30)  # Wednesday after closing time, before 30/4, 1/5 and a weekend

    @classmethod
    def now(cls, tz=None):
        return cls.moment.astimezone(tz) if tz else cls.moment.replace(tzinfo=None)


def _text(html: str, marker: str) -> str:
    match = re.search(rf"<[^>]*{marker}[^>]*>(.*?)</", html, re.S)
    assert match, marker
    return " ".join(match.group(1).split())


def test_the_overview_and_the_receipt_say_the_same(tmp_path, monkeypatch, catalog):
    monkeypatch.setattr(kiosk.web, "datetime", _Frozen)
    monkeypatch.setattr(kiosk.core.dossiers, "datetime", _Frozen)
    # The station's own list: Tuesday 5 May 2026 closed too.
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "calendar": {"days_off": ["2026-05-05"]}})
    client = app.test_client()
    proc = catalog["dang-ky-thuong-tru"]  # 7 working days

    overview = client.get(f"/p/{proc.slug}").text
    assert _text(overview, "data-processing-time") == "7 ngày làm việc"
    # Counted from Monday 4 May (after closing on the 29th, then 30/4, 1/5, the weekend); 5 May is the
    # station's day off: 6, 7, 8, 11, 12, 13, 14 May.
    assert _text(overview, "data-result-due") == "Thứ Năm, 14/05/2026"
    tiles = client.get("/").text
    assert "7 ngày làm việc" in tiles and "Giải quyết trong ngày" not in tiles

    answer_all(client, proc)
    assert submit(client, proc).status_code == 303
    done = client.get("/done").text
    assert "Thời hạn giải quyết: 7 ngày làm việc. Hẹn trả kết quả: Thứ Năm, 14/05/2026." in " ".join(done.split())

    with app.test_request_context():
        from kiosk import web
        row = web.get_db().execute("SELECT submission_id, tracking_code FROM dossiers").fetchone()
        receipt = web.receipt_of(proc, row["submission_id"], row["tracking_code"])
    assert receipt.processing_days == 7
    assert format_day(receipt.appointment) == "Thứ Năm, 14/05/2026"
    assert receipt.calendar == app.extensions["calendar"]  # the pages' calendar is the receipt's
