"""A process that ends while delivery is in hand: what it has claimed is sent, or given back.

The thread backend's drainer may hold a batch when the shop's process exits (a management
command, a script). The exit waits for it, but by then thread pools refuse new work, and a run
interrupted at any point must not leave awards claimed ('sending') until their lease runs out.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from django_zinrelo import sync
from django_zinrelo.models import Award, Status
from tests.conftest import AWARD_URL, make_order
from tests.sandboxed import award_calls, run_shop, serving, shared_database


def recorded(*numbers: str) -> None:
    """Qualifying orders with their awards recorded and not sent (the after-commit delivery
    does not run inside a test's transaction)."""
    for number in numbers:
        make_order(number=number, status="paid")


def statuses() -> dict[str, str]:
    return dict(Award.objects.values_list("order_pk", "status"))


def answering(zinrelo, threads: list[str]) -> None:
    """Zinrelo awards every call, noting the thread each was made from."""

    def award(request):
        threads.append(threading.current_thread().name)
        return 200, {}, json.dumps({"success": True, "data": {"points": 10}})

    zinrelo.add_callback("POST", AWARD_URL, callback=award)


class Exiting(ThreadPoolExecutor):
    """A pool as it is once the interpreter has begun to exit."""

    def submit(self, *args, **kwargs):
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


class InterruptedOnSecond(ThreadPoolExecutor):
    """A pool whose second hand-over is interrupted (Ctrl-C, the process told to stop)."""

    handed = 0

    def submit(self, *args, **kwargs):
        InterruptedOnSecond.handed += 1
        if InterruptedOnSecond.handed == 2:
            raise KeyboardInterrupt
        return super().submit(*args, **kwargs)


@pytest.mark.django_db
def test_a_pool_refusing_work_at_exit_has_the_calls_made_in_this_thread(zinrelo, monkeypatch):
    recorded("E1", "E2", "E3")
    threads: list[str] = []
    answering(zinrelo, threads)
    monkeypatch.setattr(sync, "ThreadPoolExecutor", Exiting)
    run = sync.send_due(Award.objects.all(), concurrency=2)
    assert set(statuses().values()) == {Status.AWARDED}
    assert run.counts == {Status.AWARDED: 3}
    assert threads == [threading.current_thread().name] * 3


@pytest.mark.django_db
def test_an_interrupted_run_gives_back_the_claims_it_had_not_handed_over(zinrelo, monkeypatch):
    recorded("I1", "I2", "I3")
    threads: list[str] = []
    answering(zinrelo, threads)
    monkeypatch.setattr(InterruptedOnSecond, "handed", 0)
    monkeypatch.setattr(sync, "ThreadPoolExecutor", InterruptedOnSecond)
    with pytest.raises(KeyboardInterrupt):
        sync.send_due(Award.objects.all(), concurrency=2)
    assert Status.SENDING not in statuses().values(), "no claim is left to its lease"
    assert Award.objects.filter(status=Status.PENDING, attempts=0).count() == 2
    monkeypatch.undo()
    # Due again at once: the next run sends them, without waiting for a lease or a backoff.
    run = sync.send_due(Award.objects.all(), concurrency=2)
    assert run.counts == {Status.AWARDED: 2}
    assert set(statuses().values()) == {Status.AWARDED}
    assert len(threads) == 3


# A script that saves an order and ends at once, its delivery left to the thread backend.
CHECKOUT = """
from decimal import Decimal
from django.db import transaction
from tests.shop.models import Order
with transaction.atomic():
    Order.objects.create(number="QUICK", email="quick@example.com", status="paid",
                         total=Decimal("30.00"), subtotal=Decimal("25.00"))
"""
STATE = """
from django_zinrelo.models import Award
print(json.dumps(list(Award.objects.values_list("order_id", "status", "attempts"))))
"""


@pytest.mark.django_db(transaction=True)
def test_a_script_that_exits_right_after_saving_an_order_delivers_its_award(tmp_path):
    database = shared_database(tmp_path)
    with serving(DELIVERY="thread") as sandbox:
        code, _ = run_shop(CHECKOUT, database)
        assert code == 0
        assert len(sandbox.awards_for("QUICK")) == 1
        assert len(award_calls(sandbox)) == 1
    code, output = run_shop(STATE, database)
    assert json.loads(output) == [["QUICK", "awarded", 1]]
