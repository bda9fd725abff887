"""``ZINRELO["ENABLED"] = False`` switches off every path, and each path says so.

A shop turns the app off exactly when it must not talk to Zinrelo (a staging copy of production
data, an incident, a migration). "Nothing sent" is counted at a real server, the sandbox on
loopback; "nothing recorded" compares every award row and the attempt log before and after. Each
test then turns the app back on and runs the same path, to show it had something to do.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from django_zinrelo import record_refund
from django_zinrelo.delivery import DISABLED
from django_zinrelo.management.commands import zinrelo_sync
from django_zinrelo.models import (
    Action,
    Award,
    AwardAttempt,
    Operation,
    OperationStatus,
    Status,
    Trigger,
)
from django_zinrelo.operations import deliver_for_order
from django_zinrelo.sync import deliver_due, record_missing, resend, reset, resync_orders
from django_zinrelo.tasks import deliver_award
from tests.sandboxed import award_calls, new_order, serving
from tests.shop.models import Order, Refund
from tests.test_tasks import DUMMY, run, tasks_delivery

pytestmark = pytest.mark.django_db

AWARDS = reverse("admin:django_zinrelo_award_changelist")
ORDERS = reverse("admin:shop_order_changelist")
ACTIVITY = "made_a_purchase"


@contextmanager
def switched_off() -> Iterator[None]:
    """The current settings (the sandbox's, inside ``serving``) with the app switched off."""
    with override_settings(ZINRELO={**settings.ZINRELO, "ENABLED": False}):
        yield


def rows() -> tuple[list[Any], int]:
    """Every award as stored, and the number of attempts logged."""
    return list(Award.objects.order_by("pk").values()), AwardAttempt.objects.count()


def backlog() -> dict[str, Order]:
    """Work for every path: an order with no award (written by ``bulk_create``, which sends no
    signal), an award due to be sent, and an award Zinrelo refused."""
    placed = timezone.now() - timedelta(hours=1)
    Order.objects.bulk_create(
        Order(
            number=number,
            email=f"{number.lower()}@example.com",
            status="paid",
            total=Decimal("27.50"),
            subtotal=Decimal("25.00"),
            created_at=placed,
        )
        for number in ("MISSING", "DUE", "REFUSED")
    )
    orders = {order.number: order for order in Order.objects.all()}
    label = Order._meta.label_lower
    Award.objects.create(order_model=label, order_pk=str(orders["DUE"].pk), activity_id=ACTIVITY)
    Award.objects.create(
        order_model=label,
        order_pk=str(orders["REFUSED"].pk),
        activity_id=ACTIVITY,
        order_id="REFUSED",
        status=Status.REFUSED,
        attempts=1,
        last_status_code=200,
        last_error_code="MEMBER_BLOCKED",
    )
    return orders


class Said(logging.Handler):
    """Set once the app logs that it is switched off, from whichever thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == DISABLED:
            self.event.set()


@contextmanager
def listening() -> Iterator[threading.Event]:
    logger = logging.getLogger("django_zinrelo")
    handler, level = Said(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.event
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_save_hook_records_nothing_and_says_so(django_capture_on_commit_callbacks):
    with serving() as sandbox:
        with switched_off(), listening() as said:
            with django_capture_on_commit_callbacks(execute=True) as queued:
                new_order("OFF-1")
            assert said.is_set()
        assert (queued, rows(), award_calls(sandbox)) == ([], ([], 0), [])

        with django_capture_on_commit_callbacks(execute=True):
            new_order("ON-1")
        assert len(sandbox.awards_for("ON-1")) == 1


@pytest.mark.parametrize("backend", ["immediate", "thread"])
def test_a_delivery_queued_before_the_switch_sends_nothing(
    backend, django_capture_on_commit_callbacks
):
    """Committed while on, delivered after the switch: a pending commit, a thread's queue."""
    with serving(DELIVERY=backend) as sandbox:
        with django_capture_on_commit_callbacks() as queued:
            new_order("OFF-Q")
        before = rows()
        assert [award["status"] for award in before[0]] == [Status.PENDING]
        with switched_off(), listening() as said:
            for callback in queued:
                callback()
            # The thread backend runs later: wait until the delivery has asked the switch.
            assert said.wait(10)
        assert rows() == before
        assert award_calls(sandbox) == []

        if backend == "immediate":  # a thread's answer would land after the test's end
            for callback in queued:
                callback()
            assert len(sandbox.awards_for("OFF-Q")) == 1


def test_a_task_enqueued_before_the_switch_sends_nothing(django_capture_on_commit_callbacks):
    """Tasks waiting in a broker when the workers restart with the app off."""
    with serving() as sandbox, tasks_delivery(DUMMY) as backend:
        with django_capture_on_commit_callbacks(execute=True):
            new_order("OFF-T")
        (enqueued,) = backend.results
        award = Award.objects.get()
        before = rows()
        with switched_off(), listening() as said:
            assert run(enqueued) is None
            assert deliver_award.call(award.pk, "retry") is None
            assert said.is_set()
        assert rows() == before
        assert award_calls(sandbox) == []

        assert run(enqueued) == Status.AWARDED
        assert len(sandbox.awards_for("OFF-T")) == 1


def sync(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("zinrelo_sync", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stop_after_one_run(seconds: float) -> None:
    raise KeyboardInterrupt


SYNC_OPTIONS = {
    "no option": lambda orders: [],
    "--missing": lambda orders: ["--missing"],
    "--failed": lambda orders: ["--failed"],
    "--orders": lambda orders: ["--orders", ",".join(str(o.pk) for o in orders.values())],
    "--since/--until": lambda orders: [
        "--since",
        (timezone.localdate() - timedelta(days=1)).isoformat(),
        "--until",
        timezone.localdate().isoformat(),
    ],
    "--every": lambda orders: ["--every", "60"],
}


@pytest.mark.parametrize("option", SYNC_OPTIONS)
@pytest.mark.django_db(transaction=True)  # --every starts each run on a fresh connection
def test_zinrelo_sync_says_it_is_off_and_touches_nothing(option, monkeypatch):
    orders = backlog()
    args = SYNC_OPTIONS[option](orders)
    monkeypatch.setattr(zinrelo_sync, "sleep", stop_after_one_run)
    before = rows()
    with serving() as sandbox:
        with switched_off():
            out, err = sync(*args)  # returns: the command exits 0
        assert (out, err) == (DISABLED + "\n", "")
        assert rows() == before
        assert award_calls(sandbox) == []

        sync(*args)
        assert award_calls(sandbox), "with the app on, the same run calls Zinrelo"


def test_a_dry_run_says_it_is_off_and_still_previews(monkeypatch):
    """A dry run sends and writes nothing anyway: while off it shows what turning the app on
    would send, after saying that it is off."""
    backlog()
    before = rows()
    with serving() as sandbox, switched_off():
        out, err = sync("--dry-run", "--missing")
    assert err.splitlines()[0] == DISABLED
    assert [line for line in out.splitlines() if '"DUE"' in line or '"MISSING"' in line]
    assert rows() == before
    assert award_calls(sandbox) == []


def run_action(client, url, action, objects):
    data = {"action": action, "index": 0, "_selected_action": [o.pk for o in objects]}
    response = client.post(url, data)
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_admins_resend_says_it_is_off_and_sends_nothing(
    admin_client, django_capture_on_commit_callbacks
):
    backlog()
    refused = Award.objects.get(status=Status.REFUSED)
    before = rows()
    with serving() as sandbox:
        with switched_off(), django_capture_on_commit_callbacks(execute=True):
            notes = run_action(admin_client, AWARDS, "resend_to_zinrelo", [refused])
        assert notes == [DISABLED]
        assert rows() == before
        assert award_calls(sandbox) == []

        with django_capture_on_commit_callbacks(execute=True):
            run_action(admin_client, AWARDS, "resend_to_zinrelo", [refused])
        assert len(sandbox.awards_for("REFUSED")) == 1


def test_the_order_admins_resync_says_it_is_off_and_records_nothing(
    admin_client, django_capture_on_commit_callbacks
):
    orders = backlog()
    before = rows()
    with serving() as sandbox:
        with switched_off(), django_capture_on_commit_callbacks(execute=True):
            notes = run_action(admin_client, ORDERS, "resync_to_zinrelo", orders.values())
        assert notes == [DISABLED]
        assert rows() == before
        assert award_calls(sandbox) == []

        with django_capture_on_commit_callbacks(execute=True):
            run_action(admin_client, ORDERS, "resync_to_zinrelo", orders.values())
        assert len(sandbox.awards_for("MISSING")) == len(sandbox.awards_for("REFUSED")) == 1


def test_the_sync_functions_a_shop_may_call_directly_do_nothing(django_capture_on_commit_callbacks):
    """The building blocks of ``zinrelo_sync`` and the admin, as a shop's own script calls them."""
    orders = backlog()
    before = rows()
    with serving() as sandbox:
        with switched_off(), django_capture_on_commit_callbacks(execute=True):
            assert record_missing() == 0
            assert reset(Award.objects.all()) == 0
            assert resend(Award.objects.all(), Trigger.ADMIN) == 0
            assert resync_orders([order.pk for order in orders.values()], Trigger.ADMIN) == {}
            assert deliver_due() == {}
        assert rows() == before
        assert award_calls(sandbox) == []

        assert record_missing() == 1


def operation_rows() -> list[Any]:
    return list(Operation.objects.order_by("pk").values())


def returns(sandbox) -> list[Any]:
    return [r for r in sandbox.requests if not r.path.endswith("/transactions/award")]


def awarded_order(number: str) -> Order:
    """An order whose award Zinrelo holds, so that cancelling or refunding it has work to do."""
    order = new_order(number, email=f"{number.lower()}@example.com")
    deliver_due()
    assert Award.objects.get(order_pk=str(order.pk)).status == Status.AWARDED
    return order


@pytest.mark.django_db(transaction=True)
def test_cancellations_and_refunds_record_and_send_nothing_while_switched_off():
    with serving() as sandbox:
        order = awarded_order("OFF-1")
        before = rows(), operation_rows()
        with switched_off():
            assert record_refund(order, "R-1", amount=Decimal("5")) == []
            Refund.objects.create(order=order, number="RF-1", status="completed")
            order.status = "cancelled"
            order.save()
            assert "switched off" in sync()[0]
        assert (rows(), operation_rows()) == before
        assert returns(sandbox) == []

        # Switched on again, the same paths do their work.
        order.refresh_from_db()
        record_refund(order, "R-2", amount=Decimal("5"))
        assert len(returns(sandbox)) == 1


@pytest.mark.django_db(transaction=True)
def test_operations_recorded_before_the_switch_are_not_sent_by_any_path(admin_client):
    with serving() as sandbox:
        order = awarded_order("OFF-2")
        Operation.objects.create(
            award=Award.objects.get(),
            order_model=Order._meta.label_lower,
            order_pk=str(order.pk),
            action=Action.RETURN,
            key="refund:R-3",
            refund_id="R-3",
            amount=Decimal("5"),
        )
        failed = Operation.objects.create(
            award=Award.objects.get(),
            order_model=Order._meta.label_lower,
            order_pk=str(order.pk),
            action=Action.RETURN,
            key="refund:R-4",
            refund_id="R-4",
            amount=Decimal("5"),
            status=OperationStatus.FAILED,
        )
        before = operation_rows()
        with switched_off():
            deliver_for_order(Order._meta.label_lower, str(order.pk), Trigger.REFUND)
            deliver_due()
            assert "switched off" in sync("--failed")[0]
            response = admin_client.post(
                reverse("admin:django_zinrelo_operation_changelist"),
                {
                    "action": "resend_operations_to_zinrelo",
                    "index": 0,
                    "_selected_action": [failed.pk],
                },
            )
            assert [str(m) for m in get_messages(response.wsgi_request)] == [DISABLED]
        assert operation_rows() == before
        assert returns(sandbox) == []

        deliver_due()
        assert len(returns(sandbox)) == 1
