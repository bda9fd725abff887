"""The award log summed up for staff: what is done, what waits, and whether anything sends it.

Every figure is read through an index and bounded, so the page costs the same at a million
awards: counts per status as ``listing.count`` makes them (exact up to a thousand, then the
planner's estimate), the days' counts from the (created, status) index alone, the most overdue
award from the (status, next attempt) index, and the last ``zinrelo_sync`` run from its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final

from django.db.models import Count as Rows
from django.db.models.functions import TruncDate
from django.utils import timezone

from django_zinrelo.display import ago
from django_zinrelo.listing import EXACT_UP_TO, Count, count
from django_zinrelo.models import WAITING, Award, Status, SyncRun

DAYS: Final = 14
STALE_AFTER: Final = timedelta(minutes=5)

# A colour per status for the chart and its legend, the done ones green, the final failures red.
COLOURS: Final = {
    Status.AWARDED: "#2e7d32",
    Status.ALREADY_AWARDED: "#81c784",
    Status.PENDING: "#90a4ae",
    Status.SENDING: "#42a5f5",
    Status.RETRYING: "#ffa726",
    Status.INVALID: "#8e24aa",
    Status.REFUSED: "#e53935",
    Status.FAILED: "#8b0000",
}


@dataclass(frozen=True)
class Segment:
    status: Status
    rows: int
    percent: float  # of the chart's height

    @property
    def colour(self) -> str:
        return COLOURS[self.status]


@dataclass(frozen=True)
class Day:
    day: date
    total: int
    segments: list[Segment]


@dataclass(frozen=True)
class Health:
    now: datetime
    statuses: list[tuple[Status, str, Count]]  # with the status's colour
    days: list[Day]
    busiest: int
    waiting: Count
    due: Count
    most_overdue: Award | None
    last_run: SyncRun | None
    # Store-wide problems (bad credentials, an inactive store...), one sentence each. Filled by
    # whoever can tell; empty until then.
    problems: list[str] = field(default_factory=list)

    @property
    def sync_stale(self) -> bool:
        """Whether ``zinrelo_sync`` has not started for longer than ``STALE_AFTER`` (or ever)."""
        return self.last_run is None or self.now - self.last_run.started_at > STALE_AFTER

    exact_up_to: int = EXACT_UP_TO
    stale_minutes: int = int(STALE_AFTER.total_seconds() // 60)

    @property
    def last_run_ago(self) -> str:
        return ago(self.last_run.started_at, self.now) if self.last_run else "never"

    @property
    def overdue_ago(self) -> str:
        award = self.most_overdue
        return ago(award.next_attempt_at, self.now) if award else ""

    @property
    def legend(self) -> list[tuple[Status, str]]:
        return [(status, COLOURS[status]) for status in Status]


def per_day(now: datetime) -> tuple[list[Day], int]:
    """Awards recorded each day of the last ``DAYS`` days, by status; and the busiest day's."""
    today = timezone.localdate(now)
    first = today - timedelta(days=DAYS - 1)
    start = timezone.make_aware(datetime.combine(first, datetime.min.time()))
    rows = (
        Award.objects.filter(created_at__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values_list("day", "status")
        .annotate(rows=Rows("*"))
        .order_by()
    )
    counts: dict[date, dict[str, int]] = {}
    for day, status, number in rows:
        counts.setdefault(day, {})[status] = number
    busiest = max((sum(c.values()) for c in counts.values()), default=0)
    days = []
    for offset in range(DAYS):
        day = first + timedelta(days=offset)
        found = counts.get(day, {})
        segments = [
            Segment(status, found[status], 100 * found[status] / busiest)
            for status in Status
            if found.get(status)
        ]
        days.append(Day(day, sum(found.values()), segments))
    return days, busiest


def gather() -> Health:
    now = timezone.now()
    days, busiest = per_day(now)
    overdue = [
        Award.objects.filter(status=status, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .first()
        for status in WAITING
    ]
    found = [award for award in overdue if award is not None]
    waiting = Award.objects.filter(status__in=WAITING)
    return Health(
        now=now,
        statuses=[
            (status, COLOURS[status], count(Award.objects.filter(status=status)))
            for status in Status
        ],
        days=days,
        busiest=busiest,
        waiting=count(waiting),
        due=count(waiting.filter(next_attempt_at__lte=now)),
        most_overdue=min(found, key=lambda award: award.next_attempt_at) if found else None,
        last_run=SyncRun.objects.filter(name="zinrelo_sync").first(),
    )
