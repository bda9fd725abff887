"""Delivery as tasks of Django's Tasks framework, run by the backend the shop's ``TASKS`` names.

With ``ZINRELO["DELIVERY"] = "tasks"`` an award is enqueued after commit instead of being sent from
a thread of the web process: ``django-tasks-db``'s ``db_worker``, an RQ worker or a Celery worker
sends it. The award row stays the record. A task that is lost, or a worker that dies mid-call,
leaves the award due for ``zinrelo_sync``; a task that runs twice sends once, because delivery
claims the row first. The framework has no retries, so the app's own policy applies: an award that
ends ``retrying`` is enqueued again for its due time where the backend can hold a task until then
(``supports_defer``), and is otherwise left to ``zinrelo_sync``. Nothing relies on a task's
exception reaching anyone: ``ImmediateBackend`` swallows them, so failures are logged here. A task
enqueued before the app was switched off (``ENABLED = False``) does nothing when a worker runs it:
each task starts in ``dispatch.run``, which asks the switch first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

try:
    from django.tasks import task
    from django.tasks.base import Task
except ImportError:  # Django 5.2: the django-tasks backport, pip install "django-zinrelo[tasks]"
    from django_tasks import task  # type: ignore[assignment, no-redef, unused-ignore]
    from django_tasks.base import Task  # type: ignore[assignment, no-redef, unused-ignore]

from django_zinrelo.delivery import deliver, deliver_order
from django_zinrelo.dispatch import run
from django_zinrelo.models import Award, Status, Trigger
from django_zinrelo.operations import deliver_for_order

logger = logging.getLogger("django_zinrelo")


@task
def deliver_award(award_id: int, trigger: str) -> str | None:
    """Send one award: a re-send from the admin or a retry come due."""
    return follow_up(run(deliver, award_id, trigger))


@task
def deliver_order_award(order_model: str, order_pk: str, activity_id: str) -> str | None:
    """Send the award of an order whose qualifying save has just committed."""
    return follow_up(run(deliver_order, order_model, order_pk, activity_id))


@task
def deliver_order_operations(order_model: str, order_pk: str, trigger: str) -> dict[str, int]:
    """Send an order's cancellations, refunds and approvals once recorded; their retries are
    left to ``zinrelo_sync``."""
    return dict(run(deliver_for_order, order_model, order_pk, trigger) or {})


TASKS: dict[Callable[..., Any], Task[Any, Any]] = {
    deliver: deliver_award,
    deliver_order: deliver_order_award,
    deliver_for_order: deliver_order_operations,
}


def enqueue(func: Callable[..., Any], *args: Any) -> None:
    """Enqueue the task that runs ``func(*args)``; the arguments are ids and labels (JSON)."""
    TASKS[func].enqueue(*args)


def follow_up(award: Award | None) -> str | None:
    """Schedule the retry of an award that must wait; returns its status for the task result."""
    if award is None:
        return None
    if award.status == Status.RETRYING:
        try:
            if deliver_award.get_backend().supports_defer:
                deliver_award.using(run_after=award.next_attempt_at).enqueue(
                    award.pk, Trigger.RETRY.value
                )
        except Exception:
            logger.exception(
                "Could not enqueue the retry of Zinrelo award %s; zinrelo_sync will send it",
                award.pk,
            )
    return str(award.status)
