"""The station's working-day calendar, and when a dossier's result is due.

Processing times are in working days from the receipt of a complete dossier (docs/procedures.md, "Dates").
A working day is a Monday to Friday that is not a public holiday, with the days the government swaps
each year:

- Public holidays come from the maintained ``holidays`` package (Vietnam: Labour Code 2019 art. 112),
  lunar ones included: 1 January, Tết (5 days, weekend days moved as the government does), Giỗ Tổ Hùng
  Vương (10/3 lunar), 30 April, 1 May, 2 September and the day beside it, 24 November from 2026; a
  holiday on a Saturday or Sunday moves to the next working day. The package also knows the swaps the
  government has announced (a Saturday worked for a day off), so those count too.
- The station adds what is announced after the package was released: ``calendar.days_off`` (compensatory
  days off, a closure) and ``calendar.working_days`` (a Saturday worked in exchange); a day in
  ``working_days`` is worked whatever else says. ``calendar.culture_day`` adds 24 November (Ngày Văn hóa
  Việt Nam, from 2026; secondary source) when the package does not have it.
- Office hours: a dossier received at or after ``calendar.office_closes``, on a Saturday, a Sunday or a
  holiday counts as received on the next working day. A same-day procedure (0 days) received at or
  after ``calendar.same_day_until`` (15:00) is due the next working day.

The day of receipt itself is not counted (Civil Code 2015 art. 147: a period in days starts the day after
the event): 1 working day from a Friday in office hours is the Monday. Results are due by closing time.

``result_due`` is the one rule for "when is the result due"; ``processing_time_message`` the one rule for
the words of a processing time (a message key and its values: the core has no words, kiosk/i18n.py does).
The app keeps its station's calendar (``app.extensions["calendar"]``); a receipt carries it, since the
printing thread composes receipts outside any request.
"""
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

import holidays

# 24 November, Ngày Văn hóa Việt Nam, a paid holiday from 1 July 2026 (secondary source: ONE-STOP.md).
CULTURE_DAY_FROM = 2026
# Keys of the words (kiosk/messages.toml).
SAME_DAY = "processing_time_same_day"
SAME_DAY_DETAIL = "processing_time_same_day_detail"
ONE_DAY = "processing_time_one_day"
WORKING_DAYS = "processing_time_days"


@dataclass(frozen=True)
class WorkCalendar:
    """One station's working days and office hours (the ``[calendar]`` of the station file)."""

    timezone: str = "Asia/Ho_Chi_Minh"
    office_closes: time = time(17, 0)
    same_day_until: time = time(15, 0)
    days_off: frozenset[date] = field(default_factory=frozenset)
    working_days: frozenset[date] = field(default_factory=frozenset)
    culture_day: bool = True

    @classmethod
    def from_station(cls, config: Mapping) -> "WorkCalendar":
        """The calendar of a station (its file laid over DEFAULTS and checked: the schema allows only
        real dates and hh:mm times)."""
        settings = config["calendar"]
        return cls(
            timezone=config["station"]["timezone"],
            office_closes=time.fromisoformat(settings["office_closes"]),
            same_day_until=time.fromisoformat(settings["same_day_until"]),
            days_off=frozenset(date.fromisoformat(d) for d in settings["days_off"]),
            working_days=frozenset(date.fromisoformat(d) for d in settings["working_days"]),
            culture_day=settings["culture_day"],
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def with_days_off(self, days: Iterable[date]) -> "WorkCalendar":
        return replace(self, days_off=self.days_off | frozenset(days))

    def holiday(self, day: date) -> str | None:
        """The public holiday on ``day`` (its Vietnamese name), or None."""
        return _public_holidays(day.year, self.culture_day)[0].get(day)

    def is_working_day(self, day: date) -> bool:
        if day in self.working_days:
            return True
        if day in self.days_off:
            return False
        names, swapped_in = _public_holidays(day.year, self.culture_day)
        if day in swapped_in:
            return True
        return day.weekday() < 5 and day not in names

    def next_working_day(self, day: date) -> date:
        """The first working day after ``day``."""
        day += timedelta(days=1)
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def add_working_days(self, day: date, count: int) -> date:
        for _ in range(count):
            day = self.next_working_day(day)
        return day

    def counted_from(self, received_at: datetime) -> date:
        """The day a dossier counts as received: its own day in office hours, else the next working day."""
        local = _local(received_at, self)
        day = local.date()
        if self.is_working_day(day) and local.time() < self.office_closes:
            return day
        return self.next_working_day(day)


def _local(received_at: datetime, calendar: WorkCalendar) -> datetime:
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    return received_at.astimezone(calendar.zone)


def result_due(received_at: datetime, processing_days: int, calendar: WorkCalendar) -> datetime:
    """When the result of a dossier received at ``received_at`` is due: closing time of the day that is
    ``processing_days`` working days after the day it counts as received (``counted_from``); for 0 days
    that day itself if it came in office hours before ``same_day_until``, else the next working day."""
    if processing_days < 0:
        raise ValueError("processing_days cannot be negative")
    local = _local(received_at, calendar)
    start = calendar.counted_from(local)
    if processing_days == 0:
        due = start if start == local.date() and local.time() < calendar.same_day_until \
            else calendar.next_working_day(local.date())
    else:
        due = calendar.add_working_days(start, processing_days)
    return datetime.combine(due, calendar.office_closes, tzinfo=calendar.zone)


def processing_time_message(processing_days: int, calendar: WorkCalendar | None = None) -> tuple[str, dict]:
    """The words of a processing time, as a message key and its values: 0 days is "Trả kết quả trong ngày"
    (with a calendar: and the hour after which it is the next working day), else "N ngày làm việc"."""
    if processing_days < 0:
        raise ValueError("processing_days cannot be negative")
    if processing_days == 0:
        if calendar is None:
            return SAME_DAY, {}
        return SAME_DAY_DETAIL, {"time": f"{min(calendar.same_day_until, calendar.office_closes):%H:%M}"}
    return (ONE_DAY, {}) if processing_days == 1 else (WORKING_DAYS, {"days": processing_days})


# -- public holidays from the package ---------------------------------------------------------------------

@lru_cache(maxsize=64)
def _public_holidays(year: int, culture_day: bool) -> tuple[dict[date, str], frozenset[date]]:
    """({day: name} of the public days off in ``year``, the weekend days worked in exchange for one)."""
    # The years around it too: a swap announced in one year may fall in the next (31/12/2018 for 5/1/2019).
    found = holidays.country_holidays("VN", years=(year - 1, year, year + 1), language="vi")
    names = {day: name for day, name in found.items() if day.year == year}
    swapped_in = frozenset(day for day in found.weekend_workdays if day.year == year)
    if culture_day and year >= CULTURE_DAY_FROM and not any(day.month == 11 for day in names):
        day = date(year, 11, 24)  # the package is older than the holiday: add it, moved off a weekend
        while day.weekday() >= 5 or day in names:
            day += timedelta(days=1)
        names[day] = "Ngày Văn hóa Việt Nam"
    return names, swapped_in


DEFAULT = WorkCalendar()  # the defaults' calendar (a receipt made by a command without a station)
