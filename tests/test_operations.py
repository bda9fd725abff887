"""Cancellations, refunds and approvals: the decision table, each call, and bad input."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.db import connection, transaction
from django.utils import timezone
from responses import matchers

from django_zinrelo import record_refund
from django_zinrelo.adapters import RefundLine
from django_zinrelo.models import (
    Action,
    Award,
    AwardAttempt,
    Call,
    Operation,
    OperationStatus,
    Status,
)
from django_zinrelo.operations import ledger
from django_zinrelo.signals import operation_failed
from django_zinrelo.sync import deliver_due
from tests.conftest import AWARD_URL, make_order, refused
from tests.shop.models import Refund, RefundedLine
from tests.test_tasks import DUMMY, run, tasks_delivery

pytestmark = pytest.mark.django_db

BASE = "https://api.zinrelo.test/v2/loyalty/"
RETURN_URL = BASE + "transactions/return"
LIST_URL = BASE + "members/jane%40example.com/transactions"


class Unprintable:
    def __str__(self):
        raise RuntimeError("no text")


def reject_url(order_id="1001", action="reject"):
    return f"{BASE}transactions/{order_id}/{action}"


def award_answer(points=25, status="auto_approved"):
    return {
        "success": True,
        "data": {"id": "tx-award", "points": points, "points_status": status},
    }


def deduct_answer(points, status="deducted", tx_id="tx-deduct"):
    return {
        "success": True,
        "data": {
            "id": tx_id,
            "transaction_type": "deduct",
            "points": points,
            "points_status": status,
        },
    }


def committed(callbacks, action):
    with callbacks(execute=True):
        return action()


def sent_bodies(zinrelo, url):
    return [json.loads(call.request.body) for call in zinrelo.calls if call.request.url == url]


def test_cancelling_before_the_award_was_sent_stops_it_for_every_path(
    zinrelo, django_capture_on_commit_callbacks
):
    order = make_order(status="paid")  # committed without its after-commit delivery: still due
    with django_capture_on_commit_callbacks(execute=True):
        order.status = "cancelled"
        order.save()

    award = Award.objects.get()
    assert award.status == Status.CANCELLED
    assert "never be sent" in award.last_reason
    operation = Operation.objects.get()
    assert (operation.action, operation.status, operation.call) == (
        Action.TAKE_BACK,
        OperationStatus.DONE,
        "",
    )
    deliver_due()
    assert len(zinrelo.calls) == 0  # nor does zinrelo_sync, which deliver_due runs
    assert not Award.objects.due().exists()


def test_cancelling_while_points_are_pending_rejects_them(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place(approval=timezone.now() + timedelta(days=30))
    zinrelo.post(
        reject_url(),
        match=[matchers.query_param_matcher({"idParam": "order_id"})],
        json={
            "success": True,
            "data": {"id": "tx-award", "points": 25, "points_status": "rejected"},
        },
    )
    with django_capture_on_commit_callbacks(execute=True):
        order.status = "cancelled"
        order.save()

    operation = Operation.objects.get()
    assert (operation.status, operation.call, operation.points) == (
        OperationStatus.DONE,
        Call.REJECT,
        25,
    )
    attempt = AwardAttempt.objects.get(operation=operation)
    assert attempt.kind == Call.REJECT
    assert ledger(Award.objects.get()).left == 0


def test_a_full_refund_after_approval_returns_the_whole_order_marked_with_its_key(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, json=deduct_answer(25))
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))

    [body] = sent_bodies(zinrelo, RETURN_URL)
    assert body["member_id"] == "jane@example.com"
    assert body["activity_id"] == "made_a_purchase"
    attributes = body["transaction_attributes"]
    assert attributes["order_id"] == "1001"
    assert "returned_amount" not in attributes and "returned_product_id" not in attributes
    assert attributes["tags"] == ["refund:R-1"]
    operation = Operation.objects.get()
    assert (operation.status, operation.call, operation.points) == (
        OperationStatus.DONE,
        Call.RETURN,
        25,
    )
    assert ledger(Award.objects.get()).left == 0


def test_partial_refunds_by_amount_and_by_product_each_go_once(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, json=deduct_answer(5))
    committed(
        django_capture_on_commit_callbacks,
        lambda: record_refund(order, "R-1", amount=Decimal("5.00")),
    )
    committed(
        django_capture_on_commit_callbacks,
        lambda: record_refund(order, "R-2", lines=[RefundLine("SKU-1", 1)]),
    )
    committed(  # recorded again, as a refund model saved twice would: nothing more is sent
        django_capture_on_commit_callbacks,
        lambda: record_refund(order, "R-1", amount=Decimal("5.00")),
    )

    first, second = (body["transaction_attributes"] for body in sent_bodies(zinrelo, RETURN_URL))
    assert first["returned_amount"] == "5"
    assert (second["returned_product_id"], second["returned_product_quantity"]) == ("SKU-1", "1")
    assert second["tags"] == ["refund:R-2:SKU-1"]
    assert Operation.objects.filter(status=OperationStatus.DONE).count() == 2
    book = ledger(Award.objects.get())
    assert (book.returned, book.left, book.value_left) == (10, 15, Decimal("7.5"))


def test_refunds_recorded_before_the_award_is_sent_wait_for_it(
    zinrelo, django_capture_on_commit_callbacks
):
    order = make_order(status="paid", lines=2)  # its award has not left yet
    committed(
        django_capture_on_commit_callbacks,
        lambda: record_refund(order, "R-1", amount=Decimal("2.50")),
    )
    assert Operation.objects.get().status == OperationStatus.PENDING
    assert len(zinrelo.calls) == 0

    zinrelo.post(AWARD_URL, json=award_answer())
    zinrelo.post(RETURN_URL, json=deduct_answer(2))
    deliver_due()

    assert [call.request.url for call in zinrelo.calls] == [AWARD_URL, RETURN_URL]
    assert Operation.objects.get().status == OperationStatus.DONE


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"amount": Decimal("-1")}, "negative"),
        ({"amount": Decimal("0")}, "zero"),
        ({"amount": 2.5}, "float"),
        ({"amount": Decimal("NaN")}, "not a finite number"),
        ({"amount": "many"}, "not a number"),
        ({"amount": Decimal("25.01")}, "more than what is left"),
        ({"amount": Decimal("1"), "lines": [("SKU-0", 1)]}, "not both"),
        ({"lines": [("SKU-9", 1)]}, "not in the order"),
        ({"lines": [("SKU-0", 2)]}, "only 1 of 1 bought are left"),
        ({"lines": [("SKU-0", -1)]}, "negative"),
        ({"lines": [("", 1)]}, "product id of refund line 1 is missing"),
        ({"lines": [("SKU-0",)]}, "Refund line 1 is neither a RefundLine nor a (product id"),
        ({"lines": 5}, "Reading the refund's lines raised TypeError"),
        ({"lines": [(Unprintable(), 1)]}, "could not be read as text"),
    ],
)
def test_bad_refunds_end_invalid_with_a_reason_and_send_nothing(
    place, zinrelo, django_capture_on_commit_callbacks, kwargs, reason
):
    order = place()
    failed = []
    operation_failed.connect(lambda operation, **_: failed.append(operation), weak=False)
    try:
        committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1", **kwargs))
    finally:
        operation_failed.receivers.clear()
    operation = Operation.objects.get()
    assert operation.status == OperationStatus.INVALID
    assert reason in operation.last_reason
    assert [call.request.url for call in zinrelo.calls] == [AWARD_URL]


def test_a_refund_of_an_order_that_never_qualified_is_invalid_and_the_save_goes_on(zinrelo):
    order = make_order(status="new")
    with transaction.atomic():
        [row] = record_refund(order, "R-1", amount=Decimal("1"))
        order.save()  # the shop's transaction goes on
    assert row.status == OperationStatus.INVALID
    assert "never qualified" in Operation.objects.get().last_reason
    assert len(zinrelo.calls) == 0


def test_a_return_refused_because_the_points_were_spent_is_final_visible_and_signalled(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(
        RETURN_URL,
        json={
            "success": False,
            "error_code": "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE",
            "reason": "Returned order value exceeds user's points balance.",
        },
    )
    failed = []
    operation_failed.connect(lambda operation, **_: failed.append(operation), weak=False)
    try:
        committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
        deliver_due()
    finally:
        operation_failed.receivers.clear()

    operation = Operation.objects.get()
    assert operation.status == OperationStatus.REFUSED
    assert operation.last_error_code == "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE"
    assert "points balance" in operation.last_reason
    assert failed == [operation]
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1  # never retried in a loop


def test_a_return_whose_answer_was_lost_is_looked_up_and_never_sent_twice(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, body=requests.ReadTimeout("answer lost"))
    committed(
        django_capture_on_commit_callbacks,
        lambda: record_refund(order, "R-1", amount=Decimal("5")),
    )
    operation = Operation.objects.get()
    assert operation.status == OperationStatus.CHECKING

    applied = {
        "id": "tx-9",
        "transaction_type": "deduct",
        "points": -5,
        "points_status": "deducted",
        "returned_for_order_id": "1001",
        "transaction_attributes": {"order_id": "1001", "tags": ["refund:R-1"]},
    }
    other = {**applied, "id": "tx-8", "transaction_attributes": {"tags": ["refund:R-0"]}}
    zinrelo.get(
        LIST_URL,
        json={"success": True, "data": {"transactions": [other, applied], "more": False}},
    )
    Operation.objects.update(next_attempt_at=timezone.now())
    deliver_due()

    operation.refresh_from_db()
    assert (operation.status, operation.points, operation.transaction_id) == (
        OperationStatus.DONE,
        5,
        "tx-9",
    )
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1
    kinds = list(AwardAttempt.objects.filter(operation=operation).values_list("kind", flat=True))
    assert kinds == [Call.RETURN, Call.LOOKUP]


def test_a_return_proven_absent_is_sent_again(place, zinrelo, django_capture_on_commit_callbacks):
    order = place()
    zinrelo.post(RETURN_URL, body=requests.ConnectionError("reset"))
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
    zinrelo.get(LIST_URL, json={"success": True, "data": {"transactions": [], "more": False}})
    zinrelo.replace("POST", RETURN_URL, json=deduct_answer(25))
    Operation.objects.update(next_attempt_at=timezone.now())
    deliver_due()

    assert Operation.objects.get().status == OperationStatus.DONE
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 2
    [lookup] = [call for call in zinrelo.calls if call.request.method == "GET"]
    assert "idParam=member_id" in lookup.request.url
    assert "transaction_type=deduct" in lookup.request.url


def test_a_failed_look_up_waits_and_sends_nothing(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, body=requests.ReadTimeout("answer lost"))
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
    zinrelo.get(LIST_URL, status=503, json={"success": False, "error_code": "SERVICE_UNAVAILABLE"})
    Operation.objects.update(next_attempt_at=timezone.now())
    deliver_due()

    operation = Operation.objects.get()
    assert operation.status == OperationStatus.CHECKING
    assert operation.check_first
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1


@pytest.mark.parametrize(
    "data",
    [{}, {"transactions": None}, {"transactions": {"tx-9": {}}}],
    ids=["nothing", "null", "not-a-list"],
)
def test_a_look_up_answer_without_a_list_proves_nothing_and_sends_nothing(
    place, zinrelo, django_capture_on_commit_callbacks, data
):
    order = place()
    zinrelo.post(RETURN_URL, body=requests.ReadTimeout("answer lost"))
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
    zinrelo.get(LIST_URL, json={"success": True, "data": data})
    Operation.objects.update(next_attempt_at=timezone.now())
    deliver_due()

    operation = Operation.objects.get()
    assert operation.status == OperationStatus.CHECKING
    assert operation.last_reason.endswith("the answer lists no transactions.")
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1


def award_answer_lost(zinrelo, django_capture_on_commit_callbacks):
    """An order placed whose award reached Zinrelo, the answer lost: the award is retrying."""
    zinrelo.post(AWARD_URL, body=requests.ReadTimeout("applied, answer lost"))
    with django_capture_on_commit_callbacks(execute=True):
        order = make_order(status="paid", lines=2)
    assert Award.objects.get().status == Status.RETRYING
    return order


def cancel(order, callbacks):
    with callbacks(execute=True):
        order.status = "cancelled"
        order.save()


def test_cancelling_an_award_whose_answer_was_lost_sends_it_again_then_takes_it_back(
    zinrelo, django_capture_on_commit_callbacks
):
    order = award_answer_lost(zinrelo, django_capture_on_commit_callbacks)
    cancel(order, django_capture_on_commit_callbacks)
    assert Award.objects.get().status == Status.RETRYING, "never stopped as unsent"
    assert Operation.objects.get().status != OperationStatus.DONE

    refused(zinrelo, "TRANSACTION_ATTRIBUTE_NOT_UNIQUE", reason="Not unique.")
    zinrelo.post(RETURN_URL, json=deduct_answer(25))
    Award.objects.update(next_attempt_at=timezone.now())
    Operation.objects.update(next_attempt_at=timezone.now())
    deliver_due()

    assert Award.objects.get().status == Status.ALREADY_AWARDED
    operation = Operation.objects.get()
    assert (operation.status, operation.call) == (OperationStatus.DONE, Call.RETURN)
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1


def test_cancelling_an_award_that_failed_after_a_lost_answer_fails_for_staff_to_see(
    zinrelo, django_capture_on_commit_callbacks
):
    order = award_answer_lost(zinrelo, django_capture_on_commit_callbacks)
    Award.objects.update(status=Status.FAILED)  # its retries ran out
    cancel(order, django_capture_on_commit_callbacks)

    assert Award.objects.get().status == Status.FAILED
    operation = Operation.objects.get()
    assert operation.status == OperationStatus.FAILED
    assert "may hold its points. Re-send the award" in operation.last_reason
    assert [call.request.url for call in zinrelo.calls] == [AWARD_URL]


def test_a_crash_after_sending_leaves_the_operation_to_be_looked_up(place, zinrelo):
    order = place()
    # A process that claimed the operation and wrote its intent, then died before recording.
    record_refund(order, "R-1")
    Operation.objects.filter(key="refund:R-1").update(
        status=OperationStatus.SENDING,
        check_first=True,
        call=Call.RETURN,
        claimed_until=timezone.now() - timedelta(seconds=1),
    )
    applied = {
        "id": "tx-9",
        "transaction_type": "deduct",
        "points": 25,
        "returned_for_order_id": "1001",
        "transaction_attributes": {"order_id": "1001", "tags": ["refund:R-1"]},
    }
    zinrelo.get(LIST_URL, json={"success": True, "data": {"transactions": [applied]}})
    deliver_due()

    assert Operation.objects.get().status == OperationStatus.DONE
    assert sent_bodies(zinrelo, RETURN_URL) == []


def test_a_reject_answered_not_pending_returns_what_is_left_instead(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place(approval=timezone.now() + timedelta(days=30))
    zinrelo.post(
        reject_url(),
        status=400,
        json={"success": False, "error_code": "INVALID_REQUEST_PARAMETER_VALUES", "reason": "x"},
    )
    zinrelo.post(RETURN_URL, json=deduct_answer(25))
    with django_capture_on_commit_callbacks(execute=True):
        order.status = "cancelled"
        order.save()
    deliver_due()

    operation = Operation.objects.get()
    assert (operation.status, operation.call) == (OperationStatus.DONE, Call.RETURN)


def test_shipping_approves_pending_points(place, zinrelo, django_capture_on_commit_callbacks):
    order = place(approval=timezone.now() + timedelta(days=30))
    zinrelo.post(
        reject_url(action="approve"),
        json={
            "success": True,
            "data": {"id": "tx-award", "points": 25, "points_status": "approved"},
        },
    )
    with django_capture_on_commit_callbacks(execute=True):
        order.status = "shipped"
        order.save()

    operation = Operation.objects.get()
    assert (operation.action, operation.status, operation.call) == (
        Action.APPROVE,
        OperationStatus.DONE,
        Call.APPROVE,
    )
    assert ledger(Award.objects.get()).pending is False


def test_approving_points_already_approved_sends_nothing(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    with django_capture_on_commit_callbacks(execute=True):
        order.status = "shipped"
        order.save()
    assert Operation.objects.get().status == OperationStatus.DONE
    assert [call.request.url for call in zinrelo.calls] == [AWARD_URL]


def test_a_refund_model_saved_into_its_applying_status_records_the_refund_once(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, json=deduct_answer(12))
    refund = Refund.objects.create(order=order, number="RF-7")  # requested: not yet
    RefundedLine.objects.create(refund=refund, sku="SKU-1", quantity=1)
    assert not Operation.objects.exists()
    for _ in range(2):  # completed, then saved again by an unrelated edit
        with django_capture_on_commit_callbacks(execute=True):
            refund.status = "completed"
            refund.save()

    operation = Operation.objects.get()
    assert (operation.refund_id, operation.product_id, operation.status) == (
        "RF-7",
        "SKU-1",
        OperationStatus.DONE,
    )
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1


def lines_then_failure(refund):
    yield RefundLine("SKU-0", 1)
    raise KeyError("line 2")


@pytest.mark.parametrize(
    ("method", "broken", "reason"),
    [
        ("lines", lambda self, refund: 1 / 0, "The refund adapter's lines() raised Zero"),
        ("lines", lambda self, refund: lines_then_failure(refund), "lines() raised KeyError"),
        ("amount", lambda self, refund: 1 / 0, "The refund adapter's amount() raised Zero"),
        ("refund_id", lambda self, refund: 1 / 0, "The refund adapter's refund_id() raised"),
    ],
)
def test_a_refund_adapter_that_raises_records_the_refund_invalid_and_the_save_goes_on(
    place, zinrelo, monkeypatch, method, broken, reason
):
    order = place()
    monkeypatch.setattr(f"tests.shop.zinrelo.ShopRefundAdapter.{method}", broken)
    with transaction.atomic():
        Refund.objects.create(order=order, number="RF-1", status="completed")
        make_order(number="1002")  # the shop's transaction goes on
    operation = Operation.objects.get()
    assert operation.status == OperationStatus.INVALID
    assert reason in operation.last_reason
    assert [call.request.url for call in zinrelo.calls] == [AWARD_URL]


@pytest.mark.postgres
def test_a_refund_adapter_whose_query_fails_never_aborts_the_shops_transaction(
    place, zinrelo, monkeypatch
):
    """On PostgreSQL a failed statement aborts the transaction it runs in: the adapter's reading
    runs in a savepoint of its own."""

    def failing_query(self, refund):
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM shop_no_such_table")
        return []

    order = place()
    monkeypatch.setattr("tests.shop.zinrelo.ShopRefundAdapter.lines", failing_query)
    with transaction.atomic():
        Refund.objects.create(order=order, number="RF-1", status="completed")
        make_order(number="1002")  # the shop's transaction goes on
    assert "lines() raised" in Operation.objects.get().last_reason


def test_a_refund_model_without_lines_or_amount_takes_back_the_whole_order(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, json=deduct_answer(25))
    with django_capture_on_commit_callbacks(execute=True):
        Refund.objects.create(order=order, number="RF-8", status="completed")
    operation = Operation.objects.get()
    assert (operation.action, operation.status) == (Action.TAKE_BACK, OperationStatus.DONE)
    assert sent_bodies(zinrelo, RETURN_URL)[0]["transaction_attributes"]["tags"] == ["refund:RF-8"]


def test_operations_go_through_the_task_queue_when_delivery_uses_tasks(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, json=deduct_answer(25))
    with tasks_delivery(DUMMY) as backend:
        committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
        (enqueued,) = backend.results
        assert enqueued.task.name == "deliver_order_operations"
        assert Operation.objects.get().status == OperationStatus.PENDING
        assert run(enqueued) == {"done": 1}
        assert run(enqueued) == {}, "a task that runs twice finds nothing due"
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1


def test_a_failing_receiver_or_bad_refund_id_never_breaks_the_shops_transaction(place):
    order = place()
    with transaction.atomic():
        [row] = record_refund(order, "")
        order.save()
    assert row.status == OperationStatus.INVALID
    assert "refund id is missing" in row.last_reason


@pytest.mark.parametrize(
    ("status", "code", "ends"),
    [
        (200, "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE", OperationStatus.REFUSED),
        (200, "ORDER_NOT_EXIST", OperationStatus.REFUSED),
        (200, "INVALID_PRODUCT_ID", OperationStatus.REFUSED),
        (200, "PRODUCT_QUANTITY_EXCEEDED", OperationStatus.REFUSED),
        (200, "PRODUCT_ID_AND_RETURN_AMOUNT_PASSED", OperationStatus.REFUSED),
        (200, "INVALID_AMOUNT_TO_DEDUCT", OperationStatus.REFUSED),
        (200, "TRANSACTION_ATTRIBUTE_NOT_UNIQUE", OperationStatus.DONE),
        (401, "ERROR_UNAUTHORIZED", OperationStatus.REFUSED),
        (503, "SERVICE_UNAVAILABLE", OperationStatus.CHECKING),
        (429, "RATE_LIMIT_EXCEEDED", OperationStatus.CHECKING),
    ],
)
def test_each_answer_to_a_return_ends_in_its_status(
    place, zinrelo, django_capture_on_commit_callbacks, status, code, ends
):
    order = place()
    zinrelo.post(
        RETURN_URL, status=status, json={"success": False, "error_code": code, "reason": "r"}
    )
    committed(
        django_capture_on_commit_callbacks,
        lambda: record_refund(order, "R-1", amount=Decimal("5")),
    )
    operation = Operation.objects.get()
    assert (operation.status, operation.last_error_code) == (ends, code)
    assert operation.check_first is (ends == OperationStatus.CHECKING)


@pytest.mark.parametrize(
    ("status", "code", "ends", "then"),
    [
        (404, "TRANSACTION_DOES_NOT_EXIST", OperationStatus.REFUSED, None),
        (400, "ID_PARAM_NAME_NOT_FOUND", OperationStatus.DONE, Call.RETURN),
        (503, "SERVICE_UNAVAILABLE", OperationStatus.CHECKING, None),
    ],
)
def test_each_answer_to_a_reject_ends_in_its_status(
    place, zinrelo, django_capture_on_commit_callbacks, status, code, ends, then
):
    order = place(approval=timezone.now() + timedelta(days=30))
    zinrelo.post(reject_url(), status=status, json={"success": False, "error_code": code})
    zinrelo.post(RETURN_URL, json=deduct_answer(25))
    with django_capture_on_commit_callbacks(execute=True):
        order.status = "cancelled"
        order.save()
    if then:  # the return that follows waits for the next zinrelo_sync
        deliver_due()
    operation = Operation.objects.get()
    assert operation.status == ends
    if then:
        assert operation.call == then


def test_a_look_up_answered_invalid_cursor_waits_and_looks_again(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, body=requests.ReadTimeout("answer lost"))
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
    zinrelo.get(
        LIST_URL,
        status=400,
        json={"success": False, "error_code": "INVALID_CURSOR", "reason": "Invalid start cursor"},
    )
    Operation.objects.update(next_attempt_at=timezone.now())
    deliver_due()
    operation = Operation.objects.get()
    assert (operation.status, operation.last_error_code) == (
        OperationStatus.CHECKING,
        "INVALID_CURSOR",
    )
    assert len(sent_bodies(zinrelo, RETURN_URL)) == 1


def test_a_lost_answer_is_looked_up_only_after_zinrelo_had_time_to_apply_the_call(
    place, zinrelo, django_capture_on_commit_callbacks, settings
):
    settings.ZINRELO = {**settings.ZINRELO, "LOOKUP_AFTER": 300}
    order = place()
    zinrelo.post(RETURN_URL, body=requests.ReadTimeout("answer lost"))
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
    deliver_due()  # a cron run right after: too early to tell, so nothing is looked up or sent

    operation = Operation.objects.get()
    assert operation.status == OperationStatus.CHECKING
    assert operation.next_attempt_at >= timezone.now() + timedelta(seconds=299)
    assert [call.request.method for call in zinrelo.calls] == ["POST", "POST"]


def test_a_return_answered_by_a_proxys_html_page_is_looked_up_before_any_new_call(
    place, zinrelo, django_capture_on_commit_callbacks
):
    order = place()
    zinrelo.post(RETURN_URL, status=502, body="<html><body>Bad Gateway</body></html>")
    committed(django_capture_on_commit_callbacks, lambda: record_refund(order, "R-1"))
    operation = Operation.objects.get()
    assert (operation.status, operation.last_error_code, operation.check_first) == (
        OperationStatus.CHECKING,
        "bad_response",
        True,
    )
