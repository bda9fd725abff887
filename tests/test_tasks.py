"""Delivery on Django's Tasks framework (DELIVERY = "tasks"); the award row stays the record."""

import importlib.util
import json
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from django_zinrelo.models import Award, AwardAttempt, Status, Trigger
from django_zinrelo.sync import resend
from tests.conftest import AWARD_URL, awarded, make_order, refused

pytestmark = pytest.mark.django_db

if importlib.util.find_spec("django.tasks"):  # Django 6
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend

    BACKENDS = "django.tasks.backends"
else:  # Django 5.2 and the backport
    django_tasks = pytest.importorskip("django_tasks")
    from django_tasks import task_backends  # type: ignore[assignment, unused-ignore]
    from django_tasks.backends.base import (  # type: ignore[assignment, unused-ignore]
        BaseTaskBackend,
    )

    BACKENDS = "django_tasks.backends"

DUMMY = f"{BACKENDS}.dummy.DummyBackend"
IMMEDIATE = f"{BACKENDS}.immediate.ImmediateBackend"


class BrokenBackend(BaseTaskBackend):
    """A queue that is down: every enqueue fails, as a broker outage would."""

    supports_defer = True

    def enqueue(self, task, args, kwargs):
        raise ConnectionError("the broker is down")


@contextmanager
def tasks_delivery(backend):
    with override_settings(
        TASKS={"default": {"BACKEND": backend}},
        ZINRELO={**settings.ZINRELO, "DELIVERY": "tasks"},
    ):
        yield task_backends["default"]


def run(result):
    """What a worker does with an enqueued task."""
    return result.task.call(*result.args, **result.kwargs)


def test_an_order_save_is_enqueued_after_commit_and_its_task_sends_it_once(
    zinrelo, django_capture_on_commit_callbacks
):
    awarded(zinrelo)
    with tasks_delivery(DUMMY) as backend:
        with django_capture_on_commit_callbacks(execute=True):
            order = make_order(status="paid")
            assert backend.results == [], "nothing is enqueued before the order commits"
        (enqueued,) = backend.results
        assert enqueued.task.name == "deliver_order_award"
        assert json.loads(json.dumps(enqueued.args)) == [
            "shop.order",
            str(order.pk),
            "made_a_purchase",
        ]
        assert (len(zinrelo.calls), Award.objects.get().status) == (0, Status.PENDING)

        assert run(enqueued) == Status.AWARDED
        assert run(enqueued) is None, "a task that runs twice finds the award claimed and done"
    assert len(zinrelo.calls) == 1
    assert AwardAttempt.objects.get().trigger == Trigger.ORDER_SAVE


def test_on_the_immediate_backend_the_award_is_sent_on_commit(
    zinrelo, django_capture_on_commit_callbacks
):
    awarded(zinrelo)
    with tasks_delivery(IMMEDIATE), django_capture_on_commit_callbacks(execute=True):
        make_order(status="paid")
    assert (len(zinrelo.calls), Award.objects.get().status) == (1, Status.AWARDED)


def test_a_retry_is_enqueued_for_its_due_time_where_the_backend_defers(
    zinrelo, django_capture_on_commit_callbacks
):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    with tasks_delivery(DUMMY) as backend:
        with django_capture_on_commit_callbacks(execute=True):
            make_order(status="paid")
        assert run(backend.results[0]) == Status.RETRYING
        award = Award.objects.get()
        retry = backend.results[1]
        assert retry.task.name == "deliver_award"
        assert retry.task.run_after == award.next_attempt_at > timezone.now()
        assert list(retry.args) == [award.pk, Trigger.RETRY]

        assert run(retry) is None, "run early (a backend that ignores run_after), it waits"
        assert len(zinrelo.calls) == 1

        Award.objects.update(next_attempt_at=timezone.now())
        zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 3}})
        assert run(retry) == Status.AWARDED
    assert len(backend.results) == 2, "an award that succeeds enqueues nothing more"
    assert list(AwardAttempt.objects.values_list("trigger", flat=True).order_by("pk")) == [
        Trigger.ORDER_SAVE,
        Trigger.RETRY,
    ]


def test_without_deferred_tasks_a_retry_waits_for_zinrelo_sync(
    zinrelo, django_capture_on_commit_callbacks
):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    with tasks_delivery(IMMEDIATE), django_capture_on_commit_callbacks(execute=True):
        make_order(status="paid")
    award = Award.objects.get()
    assert (award.status, len(zinrelo.calls)) == (Status.RETRYING, 1)

    Award.objects.update(next_attempt_at=timezone.now())
    zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 3}})
    call_command("zinrelo_sync", stdout=None)
    award.refresh_from_db()
    assert (award.status, len(zinrelo.calls)) == (Status.AWARDED, 2)


def test_a_queue_that_is_down_loses_no_award(zinrelo, django_capture_on_commit_callbacks, caplog):
    awarded(zinrelo)
    with (
        tasks_delivery(f"{__name__}.BrokenBackend"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        order = make_order(status="paid")
    order.refresh_from_db()
    assert order.status == "paid", "the checkout's transaction committed"
    assert "Could not start Zinrelo delivery" in caplog.text
    assert (Award.objects.get().status, len(zinrelo.calls)) == (Status.PENDING, 0)

    call_command("zinrelo_sync", stdout=None)
    assert (Award.objects.get().status, len(zinrelo.calls)) == (Status.AWARDED, 1)


def test_a_resend_from_the_admin_is_a_task(zinrelo, django_capture_on_commit_callbacks):
    refused(zinrelo, "MEMBER_BLOCKED")
    with django_capture_on_commit_callbacks(execute=True):
        make_order(status="paid")
    award = Award.objects.get(status=Status.REFUSED)
    with tasks_delivery(DUMMY) as backend:
        with django_capture_on_commit_callbacks(execute=True):
            assert resend(Award.objects.all(), Trigger.ADMIN) == 1
        (enqueued,) = backend.results
        assert (enqueued.task.name, list(enqueued.args)) == ("deliver_award", [award.pk, "admin"])
