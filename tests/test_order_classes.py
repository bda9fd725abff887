"""Which saves count as orders: the order model's own, and saves through a proxy of it or a
subclass with its own table (multi-table inheritance), all recorded under the order model."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
from django.db.models.signals import post_save

from django_zinrelo import inserts
from django_zinrelo.adapters import Product
from django_zinrelo.models import Award, Status
from django_zinrelo.sync import EVERYTHING, failed_awards, missing_orders
from tests.sandboxed import award_calls, serving, sync
from tests.shop.models import GiftOrder, KeyedOrder, Order, OrderLine, ProxyOrder, UUIDOrder
from tests.shop.zinrelo import ShopAdapter

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


class LinelessAdapter(ShopAdapter):
    """For order models without lines: each order is one product."""

    def prefetch(self, orders: Any) -> Any:
        return orders

    def products(self, order: Any) -> list[Product]:
        return [Product(id="SKU-1", quantity=1, price=Decimal("25.00"), title="Mug")]


def keyed_shop(model: type[Any]) -> Any:
    return serving(ORDER_MODEL=f"shop.{model.__name__}", ORDER_ADAPTER=LinelessAdapter)


def test_an_order_key_too_long_for_an_award_is_left_out_and_the_others_are_recorded(caplog):
    longest = inserts.LONGEST_KEY
    with keyed_shop(KeyedOrder) as sandbox:
        KeyedOrder.objects.create(key="k" * (longest + 1), number="LONG", status="paid", **FIELDS)
        fits = KeyedOrder.objects.create(key="k" * longest, number="FITS", status="paid", **FIELDS)
        with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
            sync("--missing")
        assert list(Award.objects.values_list("order_pk", "status")) == [(fits.pk, Status.AWARDED)]
        assert len(award_calls(sandbox)) == 1
    assert f"1 order(s) have a primary key longer than {longest} characters" in caplog.text
    with pytest.raises(ValueError, match=f"an award records at most {longest}"):
        inserts.record("shop.keyedorder", "k" * (longest + 1), "made_a_purchase", "default")


def test_awards_of_orders_keyed_by_uuid_are_found_by_every_join():
    with keyed_shop(UUIDOrder):
        order = UUIDOrder.objects.create(number="1001", status="paid", **FIELDS)
        sync("--missing")
        assert Award.objects.get().order_pk == str(order.pk)
        assert not missing_orders(EVERYTHING).exists(), "its award is found"
        Award.objects.update(status=Status.FAILED)
        assert failed_awards(EVERYTHING).count() == 1
        assert "Re-sending 1 failed award(s)" in sync("--failed")
