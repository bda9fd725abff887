"""Guarantees across a crash: a process that dies at the worst moment loses and doubles nothing.

Each crash happens in a real second process (``os._exit``: no cleanup, no ``finally``, no
after-commit hook), at a point chosen in code rather than by timing, so it is the same on every
run. The recovery is what a shop runs from cron: ``zinrelo_sync`` in yet another process.
"""

from __future__ import annotations

import json

import pytest

from tests.sandboxed import award_calls, run_shop, serving, shared_database

CRASHED = 17

# The order a checkout commits, exactly as the shop's code does it.
CHECKOUT = """
from decimal import Decimal
from django.db import transaction
from tests.shop.models import Order
with transaction.atomic():
    {before_commit}
    Order.objects.create(number="CRASH", email="crash@example.com", status="paid",
                         total=Decimal("30.00"), subtotal=Decimal("25.00"))
sys.exit(0)
"""

# cron's zinrelo_sync; prints the award as the database holds it after each run.
CRON = """
from io import StringIO
from django.core.management import call_command
from django_zinrelo.models import Award
def state():
    return list(Award.objects.values_list("order_id", "status", "attempts"))
print(json.dumps(state()))
{runs}
"""
SYNC = 'call_command("zinrelo_sync", stdout=StringIO()); print(json.dumps(state()))'


def cron(*steps: str) -> str:
    return CRON.format(runs="\n".join(steps))


def states(output: str) -> list[list[list[object]]]:
    return [json.loads(line) for line in output.splitlines()]


@pytest.mark.django_db(transaction=True)
def test_crash_after_commit_before_the_call_is_delivered_by_zinrelo_sync(tmp_path):
    """Scenario 8: committed, then killed before the after-commit delivery could start."""
    database = shared_database(tmp_path)
    with serving(DELIVERY="thread") as sandbox:
        # Registered before the save, so it runs first after commit: the order and its award
        # are committed, and the process dies before the app's own after-commit hook runs.
        code, _ = run_shop(
            CHECKOUT.format(before_commit="transaction.on_commit(lambda: os._exit(17))"), database
        )
        assert code == CRASHED
        assert award_calls(sandbox) == [], "the crash happened before any call"
        code, output = run_shop(cron(SYNC), database)
        assert code == 0
        assert len(sandbox.awards_for("CRASH")) == 1
        assert len(award_calls(sandbox)) == 1
    before, after = states(output)
    assert before == [["", "pending", 0]], "the award survived the crash"
    assert after == [["CRASH", "awarded", 1]]


@pytest.mark.django_db(transaction=True)
def test_crash_after_zinrelo_accepted_is_confirmed_by_duplicate_order_id(tmp_path):
    """Scenario 9: Zinrelo recorded the award; the process died before storing the answer."""
    database = shared_database(tmp_path)
    die_on_answer = (
        "from django_zinrelo import delivery\n"
        "    delivery.record = lambda *args, **kwargs: os._exit(17)"
    )
    with serving() as sandbox:
        code, _ = run_shop(CHECKOUT.format(before_commit=die_on_answer), database)
        assert code == CRASHED
        assert len(sandbox.awards_for("CRASH")) == 1, "Zinrelo holds the award"
        # The first run finds the claim's lease still running: the award may be in flight, so
        # it is not sent. Once the lease has run out (moved back here, as time would), the next
        # run sends it, and Zinrelo's DUPLICATE_ORDER_ID confirms it.
        expire = (
            "from django.utils import timezone\nAward.objects.update(claimed_until=timezone.now())"
        )
        code, output = run_shop(cron(SYNC, expire, SYNC), database)
        assert code == 0
        answers = [(call.status, call.error_code) for call in award_calls(sandbox)]
        assert len(sandbox.awards_for("CRASH")) == 1
    assert answers == [(200, None), (200, "DUPLICATE_ORDER_ID")]
    crashed, lease_running, recovered = states(output)
    assert crashed == [["CRASH", "sending", 0]]
    assert lease_running == crashed
    assert recovered == [["CRASH", "already_awarded", 1]]
