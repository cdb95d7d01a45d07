"""Usage-plan quota periods: calendar DAY, WEEK and MONTH in UTC, shifted by ``offset``.

AWS counts a key's requests per calendar period in UTC (aws-apigw-spec.md §5.2):
``DAY`` starts at midnight (offset must be 0), ``WEEK`` on the weekday ``offset`` names
(0 = Sunday, 1 = Monday, ... 6 = Saturday) and ``MONTH`` on day ``offset + 1`` of the
month (offset 0 = the 1st).  A period is identified by its start, which is what the store
keys a counter's period by.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

__all__ = ["PERIODS", "MAX_OFFSET", "period_bounds", "iso"]

#: The quota periods AWS accepts.
PERIODS = ("DAY", "WEEK", "MONTH")
#: The largest ``offset`` per period (a MONTH offset stays inside February).
MAX_OFFSET = {"DAY": 0, "WEEK": 6, "MONTH": 27}

_DAY = 86400


def period_bounds(now: float, period: str, offset: int = 0) -> tuple[float, float]:
    """``(start, end)`` in epoch seconds of the quota period that contains ``now``."""
    day = int(now // _DAY)
    if period == "DAY":
        return float(day * _DAY), float((day + 1) * _DAY)
    if period == "WEEK":
        weekday = (day + 4) % 7  # 1970-01-01 was a Thursday; Sunday = 0
        start = day - (weekday - offset) % 7
        return float(start * _DAY), float((start + 7) * _DAY)
    if period == "MONTH":
        moment = datetime.fromtimestamp(now, UTC)
        start_dt = datetime(moment.year, moment.month, 1, tzinfo=UTC) + timedelta(days=offset)
        if moment < start_dt:
            year, month = (moment.year, moment.month - 1) if moment.month > 1 \
                else (moment.year - 1, 12)
            start_dt = datetime(year, month, 1, tzinfo=UTC) + timedelta(days=offset)
        days = calendar.monthrange(start_dt.year, start_dt.month)[1]
        end_dt = datetime(start_dt.year, start_dt.month, 1, tzinfo=UTC) + timedelta(
            days=days + offset)
        return start_dt.timestamp(), end_dt.timestamp()
    raise ValueError(f"unknown quota period {period!r}")


def iso(epoch: float) -> str:
    """``2026-11-27T00:00:00Z`` for operators' usage reports and log lines."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
