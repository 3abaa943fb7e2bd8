"""Maintenance windows: weekly UTC intervals in which a migration policy lets fragments move.

Dependency-free, so the models can validate a window when a policy is written and the policy
module can test one when it gates a plan.
"""

import re
from dataclasses import dataclass
from datetime import datetime

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z]+(?:\s*[-,]\s*[A-Za-z]+)*)\s+(?P<start>\d{1,2}:\d{2})\s*[-\u2013]\s*(?P<end>\d{1,2}:\d{2})"
    r"(?:\s*UTC)?\s*$"
)

_DAY = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_SPAN = f"{_DAY}(-{_DAY})?"
_HHMM = "([01][0-9]|2[0-3]):[0-5][0-9]"
WINDOW_PATTERN = f"^(daily|{_SPAN}(,{_SPAN})*) {_HHMM}-{_HHMM}( UTC)?$"
"""The canonical spelling, as the API documents it: every text it matches parses; the parser also
reads full day names, other case and spacing, and 24:00."""


@dataclass(frozen=True)
class Window:
    """A weekly maintenance window in UTC: on `days` (Monday = 0), from `start_min` to `end_min`
    minutes after midnight; an end at or before the start runs into the next day (an end equal to
    the start: 24 hours)."""

    days: frozenset[int]
    start_min: int
    end_min: int
    text: str

    def contains(self, at: datetime) -> bool:
        minute = at.hour * 60 + at.minute
        if self.end_min > self.start_min:
            return at.weekday() in self.days and self.start_min <= minute < self.end_min
        # Wraps past midnight: the evening of a listed day, or the early hours of the day after one.
        return (at.weekday() in self.days and minute >= self.start_min) or (
            (at.weekday() - 1) % 7 in self.days and minute < self.end_min)


def parse_window(text: str) -> Window:
    """A window from text such as "Sat 02:00-04:00 UTC", "Mon-Fri 22:00-02:00", "Sat,Sun 00:00-24:00"
    or "daily 03:00-04:00"; ValueError says what is wrong."""
    match = _WINDOW.match(text or "")
    if not match:
        raise ValueError(f"maintenance window {text!r} is not like 'Sat 02:00-04:00 UTC' (days, start-end in UTC)")
    days = _days(match["days"], text)
    start, end = (_minutes(match[k], text) for k in ("start", "end"))
    if start >= 24 * 60:
        raise ValueError(f"maintenance window {text!r} starts after 23:59")
    return Window(frozenset(days), start, end % (24 * 60) if end > 24 * 60 else end, text.strip())


def _days(spec: str, text: str) -> set[int]:
    spec = spec.lower().replace(" ", "")
    if spec in ("daily", "everyday"):
        return set(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        ends = [_day(e, text) for e in part.split("-")]
        if len(ends) > 2:
            raise ValueError(f"maintenance window {text!r}: {part!r} is not a day or a range of days")
        day = ends[0]
        days.add(day)
        while day != ends[-1]:  # a range may wrap: Fri-Mon
            day = (day + 1) % 7
            days.add(day)
    return days


def _day(name: str, text: str) -> int:
    for index, day in enumerate(DAYS):
        if len(name) >= 3 and day.startswith(name):
            return index
    raise ValueError(f"maintenance window {text!r}: {name!r} is not a day (Mon, Tue, ... Sun)")


def _minutes(hhmm: str, text: str) -> int:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"maintenance window {text!r}: {hhmm} is not a time of day")
    return hours * 60 + minutes
