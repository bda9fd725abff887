"""Orders placed by oscar's OrderCreator reach Zinrelo at their discounted prices, to the cent."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_zinrelo.contrib.oscar.prices import split, spread
from django_zinrelo.models import Award, Status
from tests_oscar.shop import place, product, voucher

pytestmark = pytest.mark.django_db


def sent(payload):
    attributes = payload["transaction_attributes"]
    return attributes, [
        (p["product_id"], int(p["product_quantity"]), Decimal(p["product_price"]))
        for p in attributes["products"]
    ]


@pytest.fixture
def jane(django_user_model):
    return django_user_model.objects.create_user("jane", "jane@example.com", "pw")


def test_a_voucher_order_is_sent_at_discounted_prices_that_add_up(zinrelo_awards, jane):
    awkward, plain = product("MUG", "9.99", "Mug"), product("TEE", "4.00", "Tee")
    order = place([(awkward, 7), (plain, 1)], user=jane, vouchers=(voucher("SPRING10", "10"),))
    zinrelo_awards.deliver()

    [payload] = zinrelo_awards.payloads
    attributes, products = sent(payload)
    assert payload["member_id"] == "jane@example.com"
    assert attributes["order_id"] == order.number
    assert attributes["coupons"] == "SPRING10"
    assert Decimal(attributes["order_total"]) == order.total_incl_tax  # with shipping and VAT
    # Zinrelo's subtotal: after discounts, without shipping and tax.
    assert Decimal(attributes["order_subtotal"]) == order.basket_total_excl_tax
    assert order.basket_total_excl_tax < order.basket_total_before_discounts_excl_tax
    assert sum(q * price for _, q, price in products) == order.basket_total_excl_tax
    mug = order.lines.get(partner_sku="MUG")
    assert mug.line_price_excl_tax % 7  # 7 mugs do not divide into cents...
    mugs = sorted(price for pid, _, price in products if pid.startswith("MUG"))
    assert mugs[1] - mugs[0] == Decimal("0.01")  # ...so two prices a cent apart,
    assert mugs[1] < mug.unit_price_excl_tax  # both after the discount
    assert {pid for pid, _, _ in products} == {"MUG", "MUG~1", "TEE"}
    assert sum(q * p for pid, q, p in products if pid.startswith("MUG")) == mug.line_price_excl_tax
    assert Award.objects.get(order_id=order.number).status == Status.AWARDED
    assert zinrelo_awards.order_points(order.number) == int(order.basket_total_excl_tax)


def test_order_without_voucher_sends_no_coupons_and_its_full_prices(zinrelo_awards, jane):
    order = place([(product("CAP", "12.50"), 2)], user=jane)
    zinrelo_awards.deliver()
    attributes, products = sent(zinrelo_awards.payloads[0])
    assert "coupons" not in attributes
    assert products == [("CAP", 2, Decimal("12.50"))]
    assert order.shipping_excl_tax == Decimal("5.00")
    assert Decimal(attributes["order_subtotal"]) == Decimal("25.00")


def test_a_guest_order_awards_the_guest_email(zinrelo_awards):
    order = place([(product("PEN", "3.00"), 1)], guest_email="guest@example.com")
    zinrelo_awards.deliver()
    assert zinrelo_awards.payloads[0]["member_id"] == "guest@example.com"
    assert order.user is None


def test_the_same_product_on_two_lines_gets_two_ids(zinrelo_awards, jane):
    """Line keys stay unique in the order, or a refund of one could not be told from the other."""
    from django_zinrelo.contrib.oscar.adapter import OscarOrderAdapter

    order = place([(product("INK", "2.00"), 1)], user=jane)
    line = order.lines.get()
    line.pk = None
    line.save()
    ids = [p.id for p in OscarOrderAdapter().products(order)]
    assert ids == ["INK", f"INK-{line.pk}"]


@given(
    total=st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False),
    quantity=st.integers(min_value=1, max_value=10**4),
)
def test_split_adds_up_to_the_line_total_exactly(total, quantity):
    parts = split(total, quantity)
    assert sum(part.quantity * part.price for part in parts) == total
    assert sum(part.quantity for part in parts) == quantity
    assert all(part.price == part.price.quantize(Decimal("0.01")) for part in parts)
    if len(parts) == 2:
        assert parts[1].price - parts[0].price == Decimal("0.01")


@given(
    total=st.decimals(min_value=0, max_value=10**5, places=2, allow_nan=False),
    quantity=st.integers(min_value=1, max_value=50),
    data=st.data(),
)
def test_refunded_units_spread_over_the_parts_as_they_were_bought(total, quantity, data):
    parts = split(total, quantity)
    start = data.draw(st.integers(min_value=0, max_value=quantity))
    count = data.draw(st.integers(min_value=0, max_value=quantity - start))
    taken = spread(parts, start, count)
    assert sum(taken) == count
    everything = spread(parts, 0, quantity)
    assert everything == [part.quantity for part in parts]


def test_a_line_of_zero_units_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="quantity 0"):
        split(Decimal("1.00"), 0)


def test_an_order_with_no_customer_email_is_placed_and_its_award_says_why(
    zinrelo_awards, django_user_model
):
    nobody = django_user_model.objects.create_user("nobody", "", "pw")
    order = place([(product("INK", "8.00"), 1)], user=nobody)
    zinrelo_awards.deliver()
    assert zinrelo_awards.payloads == []
    award = Award.objects.get(order_pk=str(order.pk))
    assert award.status == Status.INVALID
    assert "no customer identifier" in award.last_reason


def test_a_fully_discounted_order_is_placed_and_its_award_says_why(zinrelo_awards, jane):
    order = place([(product("GIFT", "20.00"), 2)], user=jane, vouchers=(voucher("FREE", "100"),))
    zinrelo_awards.deliver()
    assert order.basket_total_excl_tax == 0
    assert zinrelo_awards.payloads == []
    award = Award.objects.get(order_pk=str(order.pk))
    assert award.status == Status.INVALID
    assert "subtotal" in award.last_reason


def test_a_large_basket_sends_a_subtotal_its_products_add_up_to(zinrelo_awards, jane):
    """Oscar rounds each line's tax-exclusive price on its own: over hundreds of lines its
    ``basket_total_excl_tax`` drifts from the lines' sum, and the subtotal follows the lines."""
    lines = [(product(f"SKU{n}", f"{1 + n % 7}.{n % 100:02d}"), 1 + n % 3) for n in range(300)]
    order = place(lines, user=jane, vouchers=(voucher("BULK7", "7"),))
    zinrelo_awards.deliver()
    [payload] = zinrelo_awards.payloads
    attributes, products = sent(payload)
    paid = sum(line.line_price_excl_tax for line in order.lines.all())
    assert order.basket_total_excl_tax != paid  # the drift this test is about
    assert sum(q * price for _, q, price in products) == paid
    assert Decimal(attributes["order_subtotal"]) == paid
    assert zinrelo_awards.order_points(order.number) == int(paid)
