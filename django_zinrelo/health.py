"""What staff should know now: the store-wide problems holding every award back.

Derived from the awards themselves, so every process, the admin and a health view agree without
state of their own: an award that got a store-wide answer waits with that answer as its
``last_error_code`` (an indexed column), and a problem is over once Zinrelo awards anything after
the last such answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max

from django_zinrelo.client import STORE_WIDE
from django_zinrelo.models import WAITING, Award, Status


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

    @property
    def message(self) -> str:
        return (
            f"{self.advice} {self.waiting} Zinrelo award(s) are waiting; they are sent again at "
            f"their next attempt once it is fixed. Last answer: {self.code}, {self.reason}"
        )


def store_problems() -> list[Problem]:
    """The unresolved store-wide problems, the most widespread first; empty when all is well.

    A few indexed queries whatever the number of awards: one grouped count, then two small
    look-ups per problem found.
    """
    waiting = Award.objects.filter(status__in=WAITING, last_error_code__in=STORE_WIDE)
    groups = (
        waiting.values("last_error_code")
        .annotate(count=Count("pk"), latest=Max("updated_at"))
        .order_by()
    )
    problems = []
    for group in groups:
        code, latest = group["last_error_code"], group["latest"]
        if Award.objects.filter(status=Status.AWARDED, updated_at__gt=latest).exists():
            continue  # Zinrelo has awarded since: fixed, and the rest go at their next attempt
        reason = (
            waiting.filter(last_error_code=code)
            .order_by("-updated_at")
            .values_list("last_reason", flat=True)
            .first()
        )
        problems.append(Problem(code, STORE_WIDE[code], reason or "", group["count"], latest))
    return sorted(problems, key=lambda problem: (-problem.waiting, problem.code))
