"""Which saves count as orders: the order model's own, and saves through a proxy of it or a
subclass with its own table (multi-table inheritance), all recorded under the order model."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models.signals import post_save

from django_zinrelo.models import Award, Status
from tests.sandboxed import award_calls, serving, sync
from tests.shop.models import GiftOrder, Order, OrderLine, ProxyOrder

pytestmark = pytest.mark.django_db

FIELDS = {"email": "jane@example.com", "total": Decimal("27.50"), "subtotal": Decimal("25.00")}


@pytest.mark.parametrize("model", [ProxyOrder, GiftOrder])
def test_a_save_through_a_proxy_or_a_subclass_is_awarded_once_as_an_order(
    model, django_capture_on_commit_callbacks
):
    with serving() as sandbox:
        with django_capture_on_commit_callbacks(execute=True):
            order = model.objects.create(number="1001", status="new", **FIELDS)
            order.status = "paid"
            order.save()
        award = Award.objects.get()
        assert (award.order_model, award.order_pk, award.status) == (
            "shop.order",
            str(order.pk),
            Status.AWARDED,
        )
        assert award.order_id == "1001"
        with django_capture_on_commit_callbacks(execute=True):
            Order.objects.get(pk=order.pk).save()  # the same order, saved through the model
            model.objects.get(pk=order.pk).save()
        assert "Recorded 0 missing award(s)." in sync("--missing")
        assert len(award_calls(sandbox)) == 1
        assert len(sandbox.awards_for("1001")) == 1
    assert Award.objects.count() == 1


def test_saves_of_other_models_never_reach_the_receiver():
    assert post_save.has_listeners(ProxyOrder)
    assert post_save.has_listeners(GiftOrder)
    assert not post_save.has_listeners(OrderLine)
