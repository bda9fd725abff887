"""Status changes and refunds made with oscar's own objects take points back at Zinrelo."""

from decimal import Decimal

import pytest
from oscar.apps.order.processing import EventHandler
from oscar.core.loading import get_model

from django_zinrelo.models import Operation, OperationStatus
from tests_oscar.shop import place, product, voucher

pytestmark = pytest.mark.django_db
PaymentEventType = get_model("order", "PaymentEventType")


@pytest.fixture
def order(zinrelo_awards, django_user_model):
    jane = django_user_model.objects.create_user("jane", "jane@example.com", "pw")
    placed = place(
        [(product("MUG", "9.99"), 3), (product("TEE", "20.00"), 1)],
        user=jane,
        vouchers=(voucher("SPRING10", "10"),),
    )
    zinrelo_awards.deliver()
    assert zinrelo_awards.order_points(placed.number) > 0
    return placed


def refund(order, amount, lines=None, quantities=None, name="Refunded"):
    event_type, _ = PaymentEventType.objects.get_or_create(name=name)
    return EventHandler().handle_payment_event(order, event_type, amount, lines, quantities)


def test_cancelling_the_order_takes_every_point_back(zinrelo_awards, order):
    order.set_status("Cancelled")
    zinrelo_awards.deliver()
    assert zinrelo_awards.actions(order.number)[-1] == "return"
    assert zinrelo_awards.order_points(order.number) == 0


def test_moving_through_the_pipeline_keeps_the_points(zinrelo_awards, order):
    points = zinrelo_awards.order_points(order.number)
    order.set_status("Being processed")
    order.set_status("Complete")  # approves: nothing was pending
    zinrelo_awards.deliver()
    assert zinrelo_awards.actions(order.number) == ["award"]
    assert zinrelo_awards.order_points(order.number) == points


def test_a_refund_of_lines_returns_those_products(zinrelo_awards, order):
    mug = order.lines.get(partner_sku="MUG")
    event = refund(order, Decimal("10.00"), [mug], [2])
    zinrelo_awards.deliver()
    [sent] = [body for body in zinrelo_awards.for_order(order.number)[1:]]
    # 3 mugs for 26.97 after the voucher: 8.99 each, no split; the event's amount was replaced
    assert sent["transaction_attributes"]["returned_product_id"] == "MUG"
    assert sent["transaction_attributes"]["returned_product_quantity"] in (2, "2")
    assert not Operation.objects.filter(refund_id=f"oscar-event-{event.pk}").exists()
    line_refund = Operation.objects.get(refund_id=f"oscar-event-{event.pk}-line-{mug.pk}")
    assert line_refund.product_id == "MUG"


def test_a_refund_of_a_split_line_returns_each_part_in_turn(zinrelo_awards, django_user_model):
    joe = django_user_model.objects.create_user("joe", "joe@example.com", "pw")
    order = place([(product("PEN", "9.99"), 7)], user=joe, vouchers=(voucher("TEN", "10"),))
    zinrelo_awards.deliver()
    pen = order.lines.get()
    assert pen.line_price_excl_tax % 7  # 7 pens do not divide into cents: two parts
    bought = {
        p["product_id"]: int(p["product_quantity"])
        for p in zinrelo_awards.payloads[0]["transaction_attributes"]["products"]
    }
    assert set(bought) == {"PEN", "PEN~1"}
    for units in (2, 3, 2):
        refund(order, Decimal("1.00"), [pen], [units])
    zinrelo_awards.deliver()
    returned = []
    for body in zinrelo_awards.for_order(order.number)[1:]:
        attributes = body["transaction_attributes"]
        returned += [attributes["returned_product_id"]] * int(
            attributes["returned_product_quantity"]
        )
    # The units are given back in the order they were bought: the lower price first.
    assert returned == ["PEN"] * bought["PEN"] + ["PEN~1"] * bought["PEN~1"]
    assert zinrelo_awards.order_points(order.number) == 0


def test_a_refund_of_an_amount_returns_the_goods_share(zinrelo_awards, order):
    event = refund(order, order.total_incl_tax / 2)
    zinrelo_awards.deliver()
    [operation] = Operation.objects.filter(refund_id=f"oscar-event-{event.pk}")
    assert operation.status == OperationStatus.DONE
    share = order.basket_total_excl_tax / 2
    assert share - Decimal("0.01") <= operation.amount <= share  # VAT and shipping left out


def test_refunds_reaching_the_total_take_everything_back(zinrelo_awards, order):
    refund(order, Decimal("5.00"))
    refund(order, order.total_incl_tax - Decimal("5.00"))
    zinrelo_awards.deliver()
    assert zinrelo_awards.order_points(order.number) == 0


def test_payment_events_of_other_types_take_nothing(zinrelo_awards, order):
    refund(order, order.total_incl_tax, name="Paid")
    zinrelo_awards.deliver()
    assert zinrelo_awards.actions(order.number) == ["award"]
    assert not Operation.objects.exists()
