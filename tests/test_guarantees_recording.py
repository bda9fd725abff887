"""Guarantees when the database fails while Zinrelo's answers are being recorded.

Zinrelo has already acted on each answer: an award it accepted must keep its points and
transaction id, and every call the sandbox received must leave its attempt row. The write of the
answers is made to fail (PostgreSQL's ``deadlock detected`` or a row the database refuses) by
wrapping the one statement that records them; the rest of the path is the real one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from itertools import count
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.utils import OperationalError
from django.utils import timezone

from django_zinrelo import delivery
from django_zinrelo.models import Award, AwardAttempt, Status
from django_zinrelo.models import update_each as update_each_in_models
from django_zinrelo.sync import record_missing
from tests.sandboxed import award_calls, new_order, serving, unsaved_orders
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = 40


@contextmanager
def failing_writes(
    monkeypatch: pytest.MonkeyPatch, fails: Callable[[int, set[int]], bool]
) -> Iterator[None]:
    """Make the statement that stores answers raise as a deadlock would, when ``fails(n,
    awards)`` says so for the ``n``-th write (from 0) and the primary keys of its awards."""
    real = update_each_in_models
    writes = count()

    def update_each(*args: Any) -> int:
        rows = next(arg for arg in args if isinstance(arg, list))
        if fails(next(writes), {row[len(delivery.STATE)] for row in rows}):
            raise OperationalError("deadlock detected")
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(delivery, "update_each", update_each)
        yield


def run(*args: str) -> tuple[str, CommandError | None]:
    """``zinrelo_sync``'s summary, and the error it exits with, if any."""
    out = StringIO()
    try:
        call_command("zinrelo_sync", *args, stdout=out)
    except CommandError as error:
        return out.getvalue(), error
    return out.getvalue(), None


def test_a_write_of_answers_that_fails_once_loses_nothing(monkeypatch):
    """The issue's deadlock: the first batch of answers fails to be stored, and is kept."""
    Order.objects.bulk_create(unsaved_orders("R", ORDERS))
    with serving() as sandbox, failing_writes(monkeypatch, lambda n, awards: n == 0):
        out, error = run("--missing", "--concurrency", "4")
        calls = award_calls(sandbox)
    assert error is None
    assert f"{ORDERS} awarded, 0 already awarded" in out, out
    assert len(calls) == ORDERS, "no award was sent twice"
    assert AwardAttempt.objects.count() == ORDERS
    awards = Award.objects.all()
    assert Counter(award.status for award in awards) == {Status.AWARDED: ORDERS}
    assert all(award.transaction_id and award.points is not None for award in awards)
    assert not awards.filter(claim__isnull=False).exists()


def test_the_checkout_path_keeps_its_answer_through_a_failed_write(monkeypatch):
    with serving() as sandbox, failing_writes(monkeypatch, lambda n, awards: n == 0):
        new_order("C1")
        calls = award_calls(sandbox)
    award = Award.objects.get()
    assert (award.status, award.attempts, award.claim) == (Status.AWARDED, 1, None)
    assert award.transaction_id
    assert len(calls) == AwardAttempt.objects.count() == 1


def test_an_answer_that_cannot_be_stored_is_released_reported_and_the_run_fails(
    monkeypatch, caplog
):
    """One award's answer never stores: the others are kept, it is released with its claim
    cleared, the summary says so and the command fails; the next run settles it."""
    caplog.set_level(logging.INFO, logger="django_zinrelo")
    Order.objects.bulk_create(unsaved_orders("U", ORDERS))
    record_missing()
    stuck = Award.objects.order_by("pk")[0]
    number = Order.objects.get(pk=stuck.order_pk).number
    with serving() as sandbox:
        with failing_writes(monkeypatch, lambda n, awards: stuck.pk in awards):
            out, error = run("--concurrency", "4")
        first = award_calls(sandbox)
        accepted = sandbox.awarded[number]
        assert error is not None and "for 1 award(s) could not be stored" in str(error)
        assert f"{ORDERS - 1} awarded" in out and "1 answer(s) NOT STORED" in out, out
        stuck.refresh_from_db()
        assert (stuck.status, stuck.attempts, stuck.claim, stuck.claimed_until) == (
            Status.PENDING,
            0,
            None,
            None,
        )
        assert stuck.next_attempt_at <= timezone.now(), "due again at once"
        # Sent, accepted, not stored; sent again in the same run, DUPLICATE_ORDER_ID, not stored.
        assert len(first) == AwardAttempt.objects.count() + 2 == ORDERS + 1
        assert accepted["id"] in caplog.text, "the accepted answer's evidence is in the log"

        out, error = run()
        assert error is None and "0 awarded, 1 already awarded" in out, out
        assert len(sandbox.awards_for(number)) == 1
        assert len(award_calls(sandbox)) == AwardAttempt.objects.count() + 2
    stuck.refresh_from_db()
    assert (stuck.status, stuck.attempts) == (Status.ALREADY_AWARDED, 1)
    assert not Award.objects.filter(status=Status.SENDING).exists()
    assert Award.objects.filter(status=Status.AWARDED).count() == ORDERS - 1
