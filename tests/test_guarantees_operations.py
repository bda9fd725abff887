"""Guarantees for cancellations and refunds, against the sandbox's ledger: each applied once.

Zinrelo's Return API does not de-duplicate, so these tests count deductions at the stand-in: every
refund's tag must be there exactly once, whatever the faults, crashes and races in between.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections import Counter
from decimal import ROUND_FLOOR, Decimal

import pytest
from django.core import serializers
from django.db import connection, transaction
from django.urls import reverse

import django_zinrelo
from django_zinrelo.adapters import RefundLine
from django_zinrelo.client import Outcome, get_client
from django_zinrelo.conf import get_settings
from django_zinrelo.models import (
    DONE,
    OPERATION_WAITING,
    Action,
    Award,
    AwardAttempt,
    Call,
    Operation,
    OperationStatus,
)
from django_zinrelo.sync import deliver_due
from tests.sandboxed import run_shop, serving, shared_database, shop_process, sync
from tests.shop.models import Order, OrderLine
from tests.test_guarantees_concurrency import RACING_CRON, race

pytestmark = pytest.mark.django_db(transaction=True)

FAULTS = {"503": 0.08, "429": 0.05, "reset": 0.05, "slow_accept": 0.04, "lost": 0.08}
ORDERS = 1000  # in the PostgreSQL pass; the SQLite pass runs a fifth of it, to stay quick
MAX_ATTEMPTS = 40


def place_orders(prefix: str, count: int) -> list[Order]:
    """Paid orders of 50.00: two units of SKU-A at 10.00 and one SKU-B at 30.00; written in bulk
    and recorded by ``zinrelo_sync --missing``, as a back-fill would."""
    Order.objects.bulk_create(
        Order(
            number=f"{prefix}{n}",
            email=f"{prefix.lower()}{n}@example.com",
            status="paid",
            total=Decimal("55.00"),
            subtotal=Decimal("50.00"),
        )
        for n in range(count)
    )
    orders = list(Order.objects.filter(number__startswith=prefix).order_by("pk"))
    OrderLine.objects.bulk_create(
        line
        for order in orders
        for line in (
            OrderLine(order=order, sku="SKU-A", title="Mug", quantity=2, unit_price=Decimal(10)),
            OrderLine(order=order, sku="SKU-B", title="Tee", quantity=1, unit_price=Decimal(30)),
        )
    )
    return orders


def settle() -> None:
    """What cron does: run zinrelo_sync until nothing waits (backoff is zero here; an operation
    whose answer was lost waits LOOKUP_AFTER before it is looked up)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        deliver_due()
        waiting = Operation.objects.filter(status__in=OPERATION_WAITING).exists()
        if not (waiting or Award.objects.due().exists()):
            return
        time.sleep(0.2)
    raise AssertionError("still waiting after 3 minutes")


def returns_received(sandbox) -> int:
    return sum(1 for r in sandbox.requests if r.path.endswith("/transactions/return"))


def share(points: int, value: Decimal, basis: Decimal = Decimal(50)) -> int:
    """The sandbox's rule: a return takes the points in proportion to its value, rounded down."""
    return int((Decimal(points) * value / basis).to_integral_value(ROUND_FLOOR))


def test_1000_orders_with_cancellations_and_refunds_under_faults_deduct_each_refund_once():
    options = {"faults": FAULTS, "seed": 9, "slow_seconds": 0.15}
    size = ORDERS if connection.vendor == "postgresql" else ORDERS // 5
    with serving(options, READ_TIMEOUT=0.05, MAX_ATTEMPTS=MAX_ATTEMPTS) as sandbox:
        orders = place_orders("G", size)
        sync("--missing")
        settle()
        # A lost or late answer to an award comes back DUPLICATE_ORDER_ID: already awarded.
        assert set(Award.objects.values_list("status", flat=True)) <= DONE
        assert Award.objects.count() == size

        expected: dict[str, int] = {}
        recorded = 0
        for n, order in enumerate(orders):
            awarded = sandbox.ledger(order.number)["awarded"]
            kind = n % 9
            with transaction.atomic():
                if kind == 0:
                    order.status = "cancelled"
                    order.save()
                elif kind == 1:
                    django_zinrelo.record_refund(order, f"F{n}")
                elif kind == 2:
                    django_zinrelo.record_refund(order, f"P{n}a", amount=Decimal("7.50"))
                    django_zinrelo.record_refund(order, f"P{n}b", lines=[RefundLine("SKU-A", 1)])
                    django_zinrelo.record_refund(order, f"P{n}c", amount=Decimal("5.00"))
            recorded += {0: 1, 1: 1, 2: 3}.get(kind, 0)
            if kind in (0, 1):
                expected[order.number] = 0
            elif kind == 2:
                taken = share(awarded, Decimal("7.50"))
                taken += share(awarded, Decimal("10"))
                taken += share(awarded, Decimal("5.00"))
                expected[order.number] = awarded - taken
            else:
                expected[order.number] = awarded
        settle()

        operations = Operation.objects.all()
        assert Counter(operations.values_list("status", flat=True)) == {
            OperationStatus.DONE: recorded
        }
        at_sandbox = {order.number: sandbox.order_points(order.number) for order in orders}
        wrong = {k: (at_sandbox[k], v) for k, v in expected.items() if at_sandbox[k] != v}
        assert wrong == {}, f"{len(wrong)} orders' points differ (sandbox, expected)"

        tags: Counter[tuple[str, str]] = Counter()
        for order in orders:
            for deduction in sandbox.deductions(order.number):
                attributes = deduction.get("transaction_attributes") or {}
                tags.update((order.number, tag) for tag in attributes.get("tags") or [])
        applied_twice = {tag: count for tag, count in tags.items() if count > 1}
        assert applied_twice == {}
        returned = set(operations.filter(call=Call.RETURN).values_list("award__order_id", "key"))
        assert set(tags) == returned, "every return applied, none missing"

        # Every call is in the attempt log; the faults really lost answers and were looked up.
        assert AwardAttempt.objects.filter(kind=Call.RETURN).count() == returns_received(sandbox)
        found = operations.filter(last_reason__startswith="Found at Zinrelo").count()
        lookups = AwardAttempt.objects.filter(kind=Call.LOOKUP).count()
        assert found > 0 and lookups >= found
        assert not operations.filter(attempts=0, call__in=[Call.RETURN, Call.REJECT]).exists()

        # The control: the same calls, re-sent blindly after a lost answer, deduct twice.
        doubled = blind_resends(sandbox)
    assert doubled > 0, "the blind control never double-deducted"
    print(
        f"\n{size} orders: {operations.count()} operations, {returns_received(sandbox)} return "
        f"calls, {lookups} look-ups, {found} found after a lost answer; control doubled {doubled}"
    )


def blind_resends(sandbox) -> int:
    """A naive integration: post the return again whenever its answer did not come back."""
    conf = get_settings()
    client = get_client(
        str(conf.partner_id), str(conf.api_key), conf.connect_timeout, conf.read_timeout
    )
    doubled = 0
    for award in Award.objects.order_by("pk").filter(operations__isnull=True)[:60]:
        tag = f"blind:{award.order_id}"
        body = {
            "member_id": award.member_id,
            "activity_id": "made_a_purchase",
            "transaction_attributes": {
                "order_id": award.order_id,
                "returned_amount": "1.00",
                "tags": [tag],
            },
        }
        for _ in range(10):
            reply = client.post(conf.url(conf.return_path), json.dumps(body))
            if reply.outcome is not Outcome.RETRYABLE:
                break
        found = [
            d
            for d in sandbox.deductions(award.order_id)
            if tag in ((d.get("transaction_attributes") or {}).get("tags") or [])
        ]
        doubled += len(found) > 1
    return doubled


@pytest.mark.postgres
def test_16_threads_recording_the_same_refund_make_one_row_and_one_call():
    with serving() as sandbox:
        [order] = place_orders("T", 1)
        sync("--missing")

        def refund() -> None:
            with transaction.atomic():
                django_zinrelo.record_refund(Order.objects.get(pk=order.pk), "R-1")

        assert race(refund) == []
        assert Operation.objects.count() == 1
        assert returns_received(sandbox) == 1
        assert sandbox.order_points(order.number) == 0
        assert Operation.objects.get().status == OperationStatus.DONE


@pytest.mark.postgres
def test_two_zinrelo_sync_processes_at_once_send_each_operation_once(tmp_path):
    due = 300
    with serving({"latency": 0.002}) as sandbox:
        orders = place_orders("S", due)
        sync("--missing")
        Operation.objects.bulk_create(
            Operation(
                award=award,
                order_model=award.order_model,
                order_pk=award.order_pk,
                action=Action.RETURN,
                key=f"refund:S-{award.pk}",
                refund_id=f"S-{award.pk}",
                amount=Decimal("5.00"),
            )
            for award in Award.objects.all()
        )
        database = shared_database(tmp_path)
        processes = [shop_process(RACING_CRON, database, stdin=subprocess.PIPE) for _ in range(2)]
        for process in processes:
            assert process.stdout and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0, 0], outputs
        assert returns_received(sandbox) == due
        assert all(len(sandbox.deductions(order.number)) == 1 for order in orders)
    assert Counter(Operation.objects.values_list("status", flat=True)) == {
        OperationStatus.DONE: due
    }
    assert AwardAttempt.objects.filter(kind=Call.RETURN).count() == due
    assert connection.vendor == "postgresql"


PLACE = """
from decimal import Decimal
from tests.shop.models import Order
Order.objects.create(number="C1", email="c1@example.com", status="paid",
                     total=Decimal("55.00"), subtotal=Decimal("50.00"))
"""

# Zinrelo applies the return; the process dies before the answer is stored anywhere.
REFUND_THEN_CRASH = """
from decimal import Decimal
from django.db import transaction
import django_zinrelo
from django_zinrelo import operations
from tests.shop.models import Order
operations.Settle.attempt = lambda *args, **kwargs: os._exit(17)
with transaction.atomic():
    django_zinrelo.record_refund(Order.objects.get(number="C1"), "R-1", amount=Decimal("5.00"))
sys.exit(0)
"""

RECOVER = """
from io import StringIO
from django.core.management import call_command
from django.utils import timezone
from django_zinrelo.models import Operation
def state():
    return list(Operation.objects.values_list("status", "check_first", "last_reason"))
print(json.dumps(state()))
Operation.objects.update(claimed_until=timezone.now())  # the lease ran out, as time would do
call_command("zinrelo_sync", stdout=StringIO())
print(json.dumps(state()))
"""


def test_a_crash_after_zinrelo_applied_a_return_is_found_and_not_sent_again(tmp_path):
    database = shared_database(tmp_path)
    with serving() as sandbox:
        assert run_shop(PLACE, database)[0] == 0
        assert sandbox.ledger("C1")["awarded"] > 0
        code, _ = run_shop(REFUND_THEN_CRASH, database)
        assert code == 17
        assert len(sandbox.deductions("C1")) == 1, "Zinrelo applied the return"
        code, output = run_shop(RECOVER, database)
        assert code == 0
        assert len(sandbox.deductions("C1")) == 1, "and it was not applied again"
        assert returns_received(sandbox) == 1
    crashed, recovered = (json.loads(line) for line in output.splitlines())
    assert crashed == [["sending", True, ""]]
    assert recovered == [
        ["done", False, "Found at Zinrelo after its answer was lost; not sent again."]
    ]


def test_the_api_key_appears_nowhere_in_the_operations_log_tables_or_pages(caplog, admin_client):
    caplog.set_level(logging.DEBUG)
    options = {"faults": {"lost": 0.3, "503": 0.2, "reset": 0.1}, "seed": 3}
    with serving(options, LOOKUP_AFTER=0) as sandbox:
        orders = place_orders("K", 12)
        sync("--missing")
        settle()
        for n, order in enumerate(orders):
            django_zinrelo.record_refund(order, f"K-{n}", amount=Decimal("5.00"))
        settle()
        key = sandbox.api_key
    assert AwardAttempt.objects.filter(kind=Call.LOOKUP).exists(), "faults made look-ups"
    tables = serializers.serialize("json", [*Operation.objects.all(), *AwardAttempt.objects.all()])
    pages = [
        admin_client.get(reverse("admin:django_zinrelo_operation_changelist")).content.decode(),
        *(
            admin_client.get(
                reverse("admin:django_zinrelo_operation_change", args=[pk])
            ).content.decode()
            for pk in Operation.objects.values_list("pk", flat=True)
        ),
    ]
    shown = [caplog.text, tables, *pages, *(repr(o) for o in Operation.objects.all())]
    assert [text for text in shown if key in text] == []
