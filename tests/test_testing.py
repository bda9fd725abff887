"""The testing kit a shop uses: README's examples run here as written, on the suite's shop."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import TestCase, override_settings
from django.utils import timezone

from django_zinrelo.conf import get_settings
from django_zinrelo.models import Award, Status
from django_zinrelo.sandbox import ZinreloSandbox
from django_zinrelo.testing import ZinreloRecorder, ZinreloTestMixin
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
