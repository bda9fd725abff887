"""Guarantees for racing ``zinrelo_sync`` runs on PostgreSQL: no deadlock, no answer lost.

Several cron runs over the same due awards, each with a pool of sending threads, lock award rows
while claiming, storing payloads, recording answers and releasing claims. Were any two of those
paths to lock rows in different orders, PostgreSQL would sooner or later kill one of them with
``deadlock detected``, and the answers it was recording would be lost. The sandbox counts every
call it received, so a lost answer shows as a call without its attempt row.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass

import pytest

from django_zinrelo.models import DONE, Award, AwardAttempt, Status
from tests.sandboxed import award_calls, serving, shared_database, shop_process, unsaved_orders
from tests.shop.models import Order

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# PROCESSES,CONCURRENCY,AWARDS,ROUNDS: the size (4 processes of 8 threads over 2,000
# awards) is ZINRELO_STRESS="4,8,2000,20"; the default keeps the test under a minute on 2 cores.
PROCESSES, CONCURRENCY, AWARDS, ROUNDS = (
    int(n) for n in os.environ.get("ZINRELO_STRESS", "4,8,400,6").split(",")
)
FAULTS = {"503": 0.1, "429": 0.05, "reset": 0.05}

# A cron run exactly as the shop's crontab starts it: exit status and stderr are what it sees.
CRON_RUN = f"""
from django.core.management import execute_from_command_line
print("ready", flush=True)
sys.stdin.readline()
execute_from_command_line(["manage.py", "zinrelo_sync", "--concurrency", "{CONCURRENCY}"])
"""


@dataclass
class Runs:
    codes: list[int]
    outs: list[str]
    errs: list[str]


def racing_runs(database: str) -> Runs:
    """PROCESSES cron runs, started together once each has set Django up."""
    processes = [shop_process(CRON_RUN, database, stdin=subprocess.PIPE) for _ in range(PROCESSES)]
    for process in processes:
        assert process.stdout and process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin
        process.stdin.write("go\n")
        process.stdin.flush()
    finished = [process.communicate(timeout=120) for process in processes]
    return Runs(
        [process.returncode for process in processes],
        [out for out, _ in finished],
        [err for _, err in finished],
    )


def due_awards(prefix: str) -> None:
    Order.objects.bulk_create(unsaved_orders(prefix, AWARDS))
    Award.objects.bulk_create(
        Award(order_model="shop.order", order_pk=str(pk), activity_id="made_a_purchase")
        for pk in Order.objects.values_list("pk", flat=True)
    )


@pytest.mark.parametrize("faults", [{}, FAULTS], ids=["clean", "faults"])
def test_racing_sync_runs_never_deadlock_and_record_every_answer(tmp_path, faults):
    database = shared_database(tmp_path)
    with serving({"faults": faults, "seed": 10}, MAX_ATTEMPTS=50, READ_TIMEOUT=5) as sandbox:
        for round_ in range(ROUNDS):
            AwardAttempt.objects.all().delete()
            Award.objects.all().delete()
            Order.objects.all().delete()
            sandbox.reset()
            prefix = f"S{round_}-"
            due_awards(prefix)
            runs = racing_runs(database)
            calls = award_calls(sandbox)
            where = f"round {round_}"
            deadlocks = [err for err in runs.errs if "deadlock" in err]
            assert deadlocks == [], f"{where}: {deadlocks[0][-3000:]}"
            assert runs.codes == [0] * PROCESSES, (where, runs.errs)
            statuses = Counter(Award.objects.values_list("status", flat=True))
            assert set(statuses) <= DONE, (where, statuses)
            assert AwardAttempt.objects.count() == len(calls), where
            on_server = Counter(len(sandbox.awards_for(f"{prefix}{n}")) for n in range(AWARDS))
            assert on_server == {1: AWARDS}, where
            if not faults:
                assert statuses == {Status.AWARDED: AWARDS}, where
                assert len(calls) == AWARDS, where
