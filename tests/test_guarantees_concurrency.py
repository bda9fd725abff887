"""Guarantees under concurrency, on PostgreSQL: racing saves and racing cron runs award once.

SQLite serialises writers, so races need a server database; these run in the PostgreSQL pass.
The sandbox counts what matters: how many award calls reached Zinrelo and what each was answered.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection, transaction

from django_zinrelo.client import get_client
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import build
from django_zinrelo.models import DONE, Award, AwardAttempt, Status
from tests.sandboxed import award_calls, new_order, serving, shared_database, shop_process
from tests.shop.models import Order

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 16
TRIALS = 30
CONTROL_TRIALS = 5


def race(work, *args) -> list[BaseException]:
    """Run ``work(*args)`` in THREADS threads released together; the errors they raised."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            work(*args)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def save_as_paid(order_pk: int) -> None:
    """What each racing request does: load the order, mark it paid, save it in a transaction."""
    order = Order.objects.get(pk=order_pk)
    order.status = "paid"
    with transaction.atomic():
        order.save()


def check_then_send(award_pk: int, body: str) -> None:
    """The naive control: no claim, only a look at the status before sending."""
    if Award.objects.get(pk=award_pk).status in DONE:
        return
    conf = get_settings()
    client = get_client(
        str(conf.partner_id), str(conf.api_key), conf.connect_timeout, conf.read_timeout
    )
    client.post(conf.award_url, body)
    Award.objects.filter(pk=award_pk).update(status=Status.AWARDED)


def answers(calls) -> Counter[str]:
    return Counter("success" if call.error_code is None else call.error_code for call in calls)


def test_16_threads_saving_one_order_award_it_with_exactly_one_call_in_30_trials(caplog):
    """Scenario 1, with a naive check-then-send control that must produce duplicates."""
    caplog.set_level(logging.WARNING, logger="django_zinrelo")
    calls_per_trial = []
    with serving() as sandbox:
        for trial in range(TRIALS):
            sandbox.reset()
            order = new_order(f"T{trial}", status="new")
            assert race(save_as_paid, order.pk) == []
            calls = award_calls(sandbox)
            calls_per_trial.append(len(calls))
            assert answers(calls) == {"success": 1}, f"trial {trial}: {answers(calls)}"
            assert len(sandbox.awards_for(f"T{trial}")) == 1
        awards = Counter(Award.objects.values_list("status", "attempts"))
        assert awards == {(Status.AWARDED, 1): TRIALS}
        assert AwardAttempt.objects.count() == TRIALS

        control_calls = []
        for trial in range(CONTROL_TRIALS):
            sandbox.reset()
            order = new_order(f"N{trial}", status="new")
            award = Award.objects.create(
                order_model="shop.order", order_pk=str(order.pk), activity_id="made_a_purchase"
            )
            assert race(check_then_send, award.pk, json.dumps(build(award))) == []
            control_calls.append(len(award_calls(sandbox)))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], "no unhandled error in the app"
    assert calls_per_trial == [1] * TRIALS
    assert max(control_calls) > 1, f"the naive control never doubled a call: {control_calls}"
    print(f"\nscenario 1: app calls per trial {calls_per_trial}; naive control {control_calls}")


RACING_CRON = """
from io import StringIO
from django.core.management import call_command
print("ready", flush=True)
sys.stdin.readline()
out = StringIO()
call_command("zinrelo_sync", stdout=out)
print(out.getvalue(), flush=True)
"""

DUE = 500


def test_two_zinrelo_sync_processes_at_once_send_each_of_500_awards_once(tmp_path):
    """Scenario 10: two cron runs released together over 500 due awards."""
    Order.objects.bulk_create(
        Order(
            number=f"D{n}",
            email=f"d{n}@example.com",
            status="paid",
            total=Decimal("9.99"),
            subtotal=Decimal("9.99"),
        )
        for n in range(DUE)
    )
    Award.objects.bulk_create(
        Award(order_model="shop.order", order_pk=str(pk), activity_id="made_a_purchase")
        for pk in Order.objects.values_list("pk", flat=True)
    )
    database = shared_database(tmp_path)
    with serving({"latency": 0.002}) as sandbox:
        processes = [shop_process(RACING_CRON, database, stdin=subprocess.PIPE) for _ in range(2)]
        for process in processes:
            assert process.stdout and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120)[0] for process in processes]
        calls = award_calls(sandbox)
        on_server = Counter(len(sandbox.awards_for(f"D{n}")) for n in range(DUE))
    assert [process.returncode for process in processes] == [0, 0]
    assert on_server == {1: DUE}
    assert answers(calls) == {"success": DUE}, "no award was even sent a second time"
    assert Counter(Award.objects.values_list("status", "attempts")) == {(Status.AWARDED, 1): DUE}
    assert AwardAttempt.objects.count() == DUE
    shares = [int(match[1]) for out in outputs if (match := re.search(r"(\d+) awarded", out))]
    assert len(shares) == 2 and sum(shares) == DUE, outputs
    assert min(shares) > 0, f"the two runs did not overlap: {shares}"
    print(f"\nscenario 10: {DUE} awards, each process sent {shares}, {len(calls)} calls in all")
