"""Calendar helpers: Brussels time, calendar quarters and months.

Every rule of the quota speaks of Belgian calendar days (a declaration is late when it
arrives after the first day of work *in Belgium*), so instants are converted to the
Europe/Brussels date before any comparison.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

BRUSSELS = ZoneInfo("Europe/Brussels")


def brussels_date(moment: datetime) -> date:
    """The calendar date in Brussels at an aware instant."""
    if moment.tzinfo is None:
        raise ValueError("an instant must carry a time zone")
    return moment.astimezone(BRUSSELS).date()


def quarter_of(day: date) -> int:
    """The calendar quarter (1-4) a date falls in."""
    return (day.month - 1) // 3 + 1


def quarter_start(year: int, quarter: int) -> date:
    return date(year, 3 * (quarter - 1) + 1, 1)


def quarter_end(year: int, quarter: int) -> date:
    if quarter == 4:
        return date(year, 12, 31)
    nxt = quarter_start(year, quarter + 1)
    return date.fromordinal(nxt.toordinal() - 1)


def same_quarter(first: date, second: date) -> bool:
    return first.year == second.year and quarter_of(first) == quarter_of(second)
