"""The testing kit a shop uses: README's examples run here as written, on the suite's shop."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.conf import settings
from django.test import TestCase, override_settings
from django.utils import timezone

from django_zinrelo.client import Outcome, ZinreloClient
from django_zinrelo.conf import get_settings
from django_zinrelo.models import Award, Status
from django_zinrelo.sandbox import DEFAULT_API_KEY, DEFAULT_PARTNER_ID, ZinreloSandbox
from django_zinrelo.testing import RecordedCall, ZinreloRecorder, ZinreloTestMixin
from tests.conftest import make_order
from tests.shop.models import Order
from tests.shop.zinrelo import ShopAdapter

# README, "Testing your integration", pytest (its conftest line is in tests/conftest.py): verbatim
# but for the Order import.


def test_a_paid_order_earns_points(zinrelo_awards):
    Order.objects.create(
        number="A-1",
        email="jane@example.com",
        status="paid",
        total=Decimal("27.50"),
        subtotal=Decimal("25.00"),
    )
    zinrelo_awards.deliver()  # the test's transaction never commits: deliver as a commit would

    [payload] = zinrelo_awards.for_order("A-1")
    assert payload["member_id"] == "jane@example.com"
    assert payload["transaction_attributes"]["order_subtotal"] == "25.00"
    award = Award.objects.get(order_id="A-1")
    assert (award.status, award.points) == ("awarded", 25)


def test_a_blocked_member_is_refused(zinrelo_awards):
    zinrelo_awards.respond_with("MEMBER_BLOCKED")
    Order.objects.create(
        number="A-2", email="jane@example.com", status="paid", total=10, subtotal=10
    )
    zinrelo_awards.deliver()

    award = Award.objects.get(order_id="A-2")
    assert (award.status, award.last_error_code) == ("refused", "MEMBER_BLOCKED")


# README, "Testing your integration", Django's TestCase.


class LoyaltyTests(ZinreloTestMixin, TestCase):
    def test_points_arrive_once_zinrelo_is_back(self):
        self.zinrelo.respond_with("SERVICE_UNAVAILABLE", status=503)
        Order.objects.create(
            number="A-3", email="jane@example.com", status="paid", total=10, subtotal=10
        )
        self.zinrelo.deliver()
        award = Award.objects.get(order_id="A-3")
        assert award.status == "retrying"

        self.zinrelo.deliver()  # as if the backoff had passed
        award.refresh_from_db()
        assert (award.status, award.attempts) == ("awarded", 2)
        assert self.zinrelo.order_ids == ["A-3", "A-3"]


# What the examples rely on.


def paid_order(number="B-1", email="jane@example.com"):
    return Order.objects.create(
        number=number, email=email, status="paid", total=Decimal("27.50"), subtotal=Decimal("25")
    )


def test_nothing_reaches_zinrelo_whatever_the_settings_say(zinrelo_awards):
    """Even with the API URL on a live server and the thread backend, the recorder answers."""
    with ZinreloSandbox() as server:
        live = {**settings.ZINRELO, "API_URL": server.url, "DELIVERY": "thread"}
        with override_settings(ZINRELO=live), ZinreloRecorder() as recorder:
            paid_order()
            recorder.deliver()
            assert Award.objects.get().status == Status.AWARDED
        assert server.requests == []
        assert recorder.order_ids == ["B-1"]


@pytest.mark.django_db
def test_no_credentials_and_a_disabled_app_still_record_awards(monkeypatch):
    monkeypatch.delenv("ZINRELO_PARTNER_ID", raising=False)
    monkeypatch.delenv("ZINRELO_API_KEY", raising=False)
    bare = {"ORDER_MODEL": "shop.Order", "ORDER_ADAPTER": "tests.shop.zinrelo.ShopAdapter"}
    with override_settings(ZINRELO={**bare, "ENABLED": False}):
        with ZinreloRecorder() as recorder:
            paid_order()
            recorder.deliver()
        assert Award.objects.get().status == Status.AWARDED
        conf = get_settings()
        assert (conf.enabled, conf.delivery, conf.has_credentials) == (False, "thread", False)


@pytest.mark.django_db(transaction=True)
def test_a_committed_save_is_delivered_without_asking(zinrelo_awards):
    paid_order()
    assert zinrelo_awards.order_ids == ["B-1"]
    assert Award.objects.get().status == Status.AWARDED


def test_an_order_id_zinrelo_already_holds_is_answered_as_a_duplicate(zinrelo_awards):
    order = paid_order()
    zinrelo_awards.deliver()
    Award.objects.all().delete()  # the shop lost its row; Zinrelo still has the award
    order.save()
    zinrelo_awards.deliver()
    assert Award.objects.get().status == Status.ALREADY_AWARDED
    assert zinrelo_awards.order_ids == ["B-1", "B-1"]


def test_planned_answers_are_used_in_turn_then_calls_are_awarded(zinrelo_awards):
    zinrelo_awards.respond_with("timeout", times=2)
    paid_order()
    zinrelo_awards.deliver()
    award = Award.objects.get()
    assert (award.status, award.last_error_code) == (Status.RETRYING, "timeout")
    zinrelo_awards.deliver()
    zinrelo_awards.deliver()
    award.refresh_from_db()
    assert (award.status, award.attempts, award.points) == (Status.AWARDED, 3, 25)


def test_a_pending_approval_is_reported_as_pending(zinrelo_awards, monkeypatch):
    monkeypatch.setattr(
        ShopAdapter, "approval_date", lambda self, order: timezone.now() + timedelta(days=30)
    )
    paid_order()
    zinrelo_awards.deliver()
    assert Award.objects.get().points_status == "pending"


def test_deliver_refuses_to_run_unless_active():
    with pytest.raises(RuntimeError, match="network"):
        ZinreloRecorder().deliver()


# The same rules as the sandbox, for every call


def test_points_follow_the_sandboxs_rule(zinrelo_awards):
    make_order("C-1", status="paid", lines=1)  # one product of 12.50 against a subtotal of 25.00
    zinrelo_awards.deliver()
    [body] = zinrelo_awards.for_order("C-1")

    with ZinreloSandbox() as server:
        answer = requests.post(
            server.url + "transactions/award",
            json=body,
            headers={"partner-id": DEFAULT_PARTNER_ID, "api-key": DEFAULT_API_KEY},
            timeout=5,
        ).json()

    assert Award.objects.get().points == answer["data"]["points"] == 12


@pytest.fixture
def zinrelo(zinrelo_awards):
    """The client as the app builds it, and the API base, while the recorder is active."""
    conf = get_settings()
    client = ZinreloClient(
        partner_id=str(conf.partner_id),
        api_key=str(conf.api_key),
        connect_timeout=1,
        read_timeout=1,
    )
    return client, conf.api_url.rstrip("/") + "/"


def give_back(order_id, **attributes):
    return {
        "member_id": "jane@example.com",
        "activity_id": "made_a_purchase",
        "transaction_attributes": {"order_id": order_id, **attributes},
    }


def awarded_order(recorder, number="C-2", **fields):
    make_order(number, status="paid", lines=2, **fields)  # 2 x 12.50: 25 points
    recorder.deliver()
    assert Award.objects.get(order_id=number).points == 25


def test_returns_are_answered_and_not_idempotent_and_for_order_shows_every_operation(
    zinrelo_awards, zinrelo
):
    client, base = zinrelo
    awarded_order(zinrelo_awards)
    body = give_back("C-2", returned_amount="5.00", tags=["refund:R-1"])

    first = client.post(base + "transactions/return", json.dumps(body))
    again = client.post(base + "transactions/return", json.dumps(body))
    reversed_ = client.request("POST", base + "transactions/C-2/reverse?idParam=order_id")

    assert first.outcome == again.outcome == Outcome.AWARDED
    assert (first.data["transaction_type"], first.data["points"]) == ("deduct", 5)
    assert again.data["points"] == 5
    assert reversed_.data["points"] == 15
    assert zinrelo_awards.order_points("C-2") == 0
    assert zinrelo_awards.actions("C-2") == ["award", "return", "return", "reverse"]
    assert zinrelo_awards.for_order("C-2")[1:] == [body, body, {"action": "reverse"}]
    assert zinrelo_awards.order_ids == ["C-2"]
    assert len(zinrelo_awards.payloads) == 1
    assert zinrelo_awards.calls[-1] == RecordedCall(
        "POST", "transactions/C-2/reverse", "idParam=order_id", None, "reverse", "C-2"
    )


def test_a_pending_award_is_rejected_by_order_id(zinrelo_awards, zinrelo, monkeypatch):
    client, base = zinrelo
    monkeypatch.setattr(
        ShopAdapter, "approval_date", lambda self, order: timezone.now() + timedelta(days=30)
    )
    awarded_order(zinrelo_awards)
    assert zinrelo_awards.balance("jane@example.com") == {"available": 0, "pending": 25}

    reply = client.request("POST", base + "transactions/C-2/reject?idParam=order_id")
    again = client.request("POST", base + "transactions/C-2/reject?idParam=order_id")

    assert (reply.outcome, reply.data["points_status"]) == (Outcome.AWARDED, "rejected")
    assert (again.outcome, again.status_code) == (Outcome.REFUSED, 400)
    assert "rejected" in again.reason
    assert zinrelo_awards.ledger("C-2")["rejected"] == 25
    assert zinrelo_awards.actions("C-2") == ["award", "reject", "reject"]
    assert zinrelo_awards.for_order("C-2")[1] == {"action": "reject"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "transactions/return", give_back("NOPE"), 200, "ORDER_NOT_EXIST"),
        (
            "POST",
            "transactions/return",
            give_back("C-2", returned_product_id="SKU-9", returned_product_quantity="1"),
            200,
            "INVALID_PRODUCT_ID",
        ),
        (
            "POST",
            "transactions/return",
            give_back("C-2", returned_product_id="SKU-0", returned_product_quantity="2"),
            200,
            "PRODUCT_QUANTITY_EXCEEDED",
        ),
        (
            "POST",
            "transactions/NOPE/approve?idParam=order_id",
            None,
            404,
            "TRANSACTION_DOES_NOT_EXIST",
        ),
        (
            "GET",
            "members/jane%40example.com/transactions?start_index=9",
            None,
            400,
            "INVALID_CURSOR",
        ),
    ],
    ids=["unknown-order", "unknown-product", "too-many", "unknown-transaction", "cursor"],
)
def test_refusals_carry_the_seeds_codes(zinrelo_awards, zinrelo, method, path, body, status, code):
    client, base = zinrelo
    awarded_order(zinrelo_awards)
    reply = client.request(method, base + path, None if body is None else json.dumps(body))

    assert (reply.outcome, reply.status_code, reply.error_code) == (Outcome.REFUSED, status, code)
    assert zinrelo_awards.order_points("C-2") == 25


def test_a_members_transactions_are_listed(zinrelo_awards, zinrelo):
    client, base = zinrelo
    awarded_order(zinrelo_awards, "C-2")
    awarded_order(zinrelo_awards, "C-3")
    client.post(base + "transactions/return", json.dumps(give_back("C-2", tags=["refund:R-9"])))

    reply = client.get(
        base + "members/jane%40example.com/transactions?idParam=member_id&transaction_type=deduct"
    )

    [deduct] = reply.data["transactions"]
    assert (deduct["returned_for_order_id"], deduct["points"]) == ("C-2", 25)
    assert deduct["transaction_attributes"]["tags"] == ["refund:R-9"]
    assert zinrelo_awards.calls[-1].action == "member_transactions"


def test_a_planned_answer_replaces_any_call_and_applies_nothing(zinrelo_awards, zinrelo):
    client, base = zinrelo
    awarded_order(zinrelo_awards)
    zinrelo_awards.respond_with("SERVICE_UNAVAILABLE", status=503)

    reply = client.post(base + "transactions/return", json.dumps(give_back("C-2")))

    assert (reply.outcome, reply.error_code) == (Outcome.RETRYABLE, "SERVICE_UNAVAILABLE")
    assert zinrelo_awards.order_points("C-2") == 25
    assert zinrelo_awards.actions("C-2") == ["award", "return"]


def test_an_answer_lost_after_zinrelo_applied_the_call(zinrelo_awards, zinrelo):
    client, base = zinrelo
    awarded_order(zinrelo_awards)
    zinrelo_awards.respond_with("timeout", applied=True)

    body = json.dumps(give_back("C-2", returned_amount="10.00"))
    lost = client.post(base + "transactions/return", body)
    again = client.post(base + "transactions/return", body)

    assert (lost.outcome, lost.error_code) == (Outcome.RETRYABLE, "timeout")
    assert again.data["points"] == 10
    assert zinrelo_awards.order_points("C-2") == 5  # deducted twice: the blind re-send


@pytest.mark.django_db
def test_the_recorder_answers_every_store_with_dummy_keys(django_capture_on_commit_callbacks):
    stores = {"eu": {"API_URL": "https://eu.zinrelo.test/v2/loyalty/"}, "us": {}}
    adapter = "tests.test_stores.StoreAdapter"
    with (
        override_settings(ZINRELO={**settings.ZINRELO, "STORES": stores, "ORDER_ADAPTER": adapter}),
        ZinreloRecorder() as recorder,
    ):
        for number in ("EU-1", "US-1", "1"):
            with django_capture_on_commit_callbacks(execute=True):
                make_order(number=number, status="paid")
    assert sorted(recorder.order_ids) == ["1", "EU-1", "US-1"]
    assert set(Award.objects.values_list("store", "status")) == {
        ("eu", "awarded"),
        ("us", "awarded"),
        ("", "awarded"),
    }
