"""What staff should know now: the award log summed up, and the store-wide problems holding it back.

Every figure is read through an index and bounded, so the page costs the same at a million
awards: counts per status as ``listing.count`` makes them (exact up to a thousand, then the
planner's estimate), the days' counts from the (created, status) index alone, the most overdue
award from the (status, next attempt) index, and the last ``zinrelo_sync`` run from its row.

Store-wide problems are derived from the awards themselves, so every process, the admin and a
health check agree without state of their own: an award that got a store-wide answer waits with that
answer as its ``last_error_code`` (an indexed column), and a problem is over once Zinrelo awards
anything after the last such answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final

from django.db.models import Count as Rows
from django.db.models import Max
from django.db.models.functions import TruncDate
from django.utils import timezone

from django_zinrelo.client import STORE_WIDE
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
    Status.CANCELLED: "#bdbdbd",
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
    # Store-wide problems (an inactive store, a paused activity...), one sentence each.
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
        problems=[problem.message for problem in store_problems()],
    )


@dataclass(frozen=True)
class Problem:
    code: str
    """The error code awards were answered with (Zinrelo's, or ``path_not_found``)."""
    advice: str
    """What to fix, in a shop owner's words."""
    reason: str
    """What Zinrelo said the last time."""
    waiting: int
    """How many awards wait for it to be fixed."""
    latest: datetime
    """When Zinrelo last answered so."""
    store: str = ""
    """The Zinrelo store (``ZINRELO["STORES"]``) it is about; empty: the default store."""

    @property
    def message(self) -> str:
        where = f"Store {self.store!r}: " if self.store else ""
        return (
            f"{where}{self.advice} {self.waiting} Zinrelo award(s) are waiting; they are sent "
            f"again at their next attempt once it is fixed. Last answer: {self.code}, "
            f"{self.reason}"
        )


def store_problems() -> list[Problem]:
    """The unresolved store-wide problems, the most widespread first; empty when all is well.

    A few indexed queries whatever the number of awards: one grouped count, then two small
    look-ups per problem found.
    """
    waiting = Award.objects.filter(status__in=WAITING, last_error_code__in=STORE_WIDE)
    groups = (
        waiting.values("last_error_code", "store")
        .annotate(count=Rows("pk"), latest=Max("updated_at"))
        .order_by()
    )
    problems = []
    for group in groups:
        code, store, latest = group["last_error_code"], group["store"], group["latest"]
        awarded = Award.objects.filter(status=Status.AWARDED, store=store, updated_at__gt=latest)
        if awarded.exists():
            continue  # that store has awarded since: fixed; the rest go at their next attempt
        reason = (
            waiting.filter(last_error_code=code, store=store)
            .order_by("-updated_at")
            .values_list("last_reason", flat=True)
            .first()
        )
        problems.append(
            Problem(code, STORE_WIDE[code], reason or "", group["count"], latest, store)
        )
    return sorted(problems, key=lambda problem: (-problem.waiting, problem.code))
