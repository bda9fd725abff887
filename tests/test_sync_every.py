"""``zinrelo_sync --every SECONDS``: delivering without cron, in development.

The pause between runs is replaced by a step of the test: it may change the database, as the
shop would meanwhile, and ends the loop with the Ctrl-C a developer would press. The tests commit
for real, as the command does: it starts each run on a fresh connection when the last one broke.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from django_zinrelo.management.commands import zinrelo_sync
from django_zinrelo.models import Award, Status
from django_zinrelo.sync import send_due
from tests.sandboxed import award_calls, serving
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def waiting(number: str) -> None:
    """A paid order whose after-commit delivery was lost (a restarted process): its award waits."""
    order = Order.objects.create(
        number=number, email=f"{number}@example.com", status="new", total=10, subtotal=10
    )
    Order.objects.filter(pk=order.pk).update(status="paid")
    Award.objects.create(
        order_model=Order._meta.label_lower, order_pk=str(order.pk), activity_id="made_a_purchase"
    )


def every(monkeypatch, *pauses: Callable[[], None], args: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run ``zinrelo_sync --every 60``, doing ``pauses`` in turn between runs, then Ctrl-C."""
    steps = iter(pauses)
    slept: list[float] = []

    def pause(seconds: float) -> None:
        slept.append(seconds)
        step = next(steps, None)
        if step is None:
            raise KeyboardInterrupt
        step()

    monkeypatch.setattr(zinrelo_sync, "sleep", pause)
    out, err = StringIO(), StringIO()
    call_command("zinrelo_sync", "--every", "60", *args, stdout=out, stderr=err)
    assert set(slept) == {60.0}
    return out.getvalue(), err.getvalue()


def test_each_run_delivers_what_fell_due_since_the_last(monkeypatch):
    with serving() as sandbox:
        waiting("E-1")
        out, _ = every(monkeypatch, lambda: waiting("E-2"))
        assert [len(sandbox.awards_for(number)) for number in ("E-1", "E-2")] == [1, 1]
        assert len(award_calls(sandbox)) == 2
    lines = out.splitlines()
    assert (lines[0], lines[-1]) == ("Running every 60 s; quit with CONTROL-C.", "Stopped.")
    assert set(Award.objects.values_list("status", flat=True)) == {Status.AWARDED}


def test_a_run_that_fails_is_reported_and_the_next_one_goes_on(monkeypatch):
    outcomes: Iterator[Any] = iter([send_due, OperationalError("connection closed"), send_due])

    def breaking_once(*args, **kwargs):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome(*args, **kwargs)

    monkeypatch.setattr(zinrelo_sync, "send_due", breaking_once)
    with serving() as sandbox:
        waiting("E-3")
        _, err = every(monkeypatch, lambda: None, lambda: waiting("E-4"))
        assert [len(sandbox.awards_for(number)) for number in ("E-3", "E-4")] == [1, 1]
    assert "This run failed (OperationalError: connection closed)." in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--every", "0"), "--every must be above zero, not '0'."),
        (("--every", "soon"), "--every must be a number of seconds, not 'soon'."),
        (("--every", "60", "--dry-run"), "--every repeats a run that sends; it has no --dry-run."),
        (("--every", "60", "--concurrency", "99"), "--concurrency must be between 1 and 32."),
    ],
)
def test_a_usage_error_stops_before_any_repeat(args, message, monkeypatch):
    monkeypatch.setattr(zinrelo_sync, "sleep", pytest.fail)
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("zinrelo_sync", *args, stdout=StringIO(), stderr=StringIO())
