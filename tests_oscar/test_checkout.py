"""A guest checks out through oscar's own views, and Zinrelo is told of the order.

Nothing but Django's test client: the basket's add and voucher views, then the checkout's
gateway (as a guest), shipping address, shipping method, payment details, preview and place
order, as a browser would post them. Oscar's default ``PaymentDetailsView`` takes no payment.
"""

from decimal import Decimal

import pytest
from django.urls import reverse
from oscar.apps.partner.strategy import UK, Selector
from oscar.apps.shipping.methods import FixedPrice
from oscar.apps.shipping.repository import Repository
from oscar.core.loading import get_model

from django_zinrelo.models import Award, Status
from tests_oscar.shop import product, voucher

pytestmark = pytest.mark.django_db

Country = get_model("address", "Country")
Order = get_model("order", "Order")


@pytest.fixture
def uk_shop(monkeypatch):
    """What a shop's forked partner and shipping apps would give: UK VAT (20%) on every price
    and one fixed-price shipping method (chosen by oscar without a page, as the only one)."""
    monkeypatch.setattr(Selector, "strategy", lambda self, *args, **kwargs: UK())
    method = FixedPrice(charge_excl_tax=Decimal("5.00"), charge_incl_tax=Decimal("6.00"))
    monkeypatch.setattr(Repository, "methods", (method,))
    Country.objects.create(
        iso_3166_1_a2="GB", iso_3166_1_a3="GBR", iso_3166_1_numeric="826",
        printable_name="United Kingdom", name="United Kingdom", is_shipping_country=True,
    )  # fmt: skip


def followed(answer, to):
    assert answer.status_code == 302, answer.content.decode()[:2000]
    assert answer["Location"] == reverse(to)


def test_a_guest_checkout_through_oscars_views_awards_the_guest(client, uk_shop, zinrelo_awards):
    mug, tee = product("MUG", "9.99", "Mug"), product("TEE", "4.00", "Tee")
    voucher("GUEST15", "15")
    basket = reverse("basket:summary")
    for item, quantity in ((mug, 3), (tee, 1)):
        answer = client.post(reverse("basket:add", kwargs={"pk": item.pk}), {"quantity": quantity})
        followed(answer, "basket:summary")
    followed(client.post(reverse("basket:vouchers-add"), {"code": "GUEST15"}), "basket:summary")
    assert "GUEST15" in client.get(basket).content.decode()

    assert client.get(reverse("checkout:index")).status_code == 200  # the gateway, not a redirect
    gateway = {"username": "Guest@Example.com", "options": "anonymous"}
    followed(client.post(reverse("checkout:index"), gateway), "checkout:shipping-address")
    address = {
        "first_name": "Ada", "last_name": "Guest", "line1": "1 High Street",
        "line4": "London", "postcode": "N1 9GU",
    }  # fmt: skip
    followed(client.post(reverse("checkout:shipping-address"), address), "checkout:shipping-method")
    followed(client.get(reverse("checkout:shipping-method")), "checkout:payment-method")
    followed(client.get(reverse("checkout:payment-method")), "checkout:payment-details")
    assert client.get(reverse("checkout:payment-details")).status_code == 200
    preview = client.post(reverse("checkout:preview"))
    assert preview.status_code == 200 and "place_order" in preview.content.decode()
    assert not Award.objects.exists()  # nothing before the order is placed
    placed = client.post(reverse("checkout:preview"), {"action": "place_order"})
    followed(placed, "checkout:thank-you")

    order = Order.objects.get()
    assert order.user is None
    assert order.guest_email == "Guest@example.com"  # oscar lower-cases the domain only
    assert order.shipping_excl_tax == Decimal("5.00") and order.total_tax > 0
    assert order.basket_total_excl_tax < order.basket_total_before_discounts_excl_tax
    assert order.discounts.get().voucher_code == "GUEST15"
    zinrelo_awards.deliver()

    [payload] = zinrelo_awards.for_order(order.number)
    attributes = payload["transaction_attributes"]
    assert payload["member_id"] == order.guest_email
    assert attributes["coupons"] == "GUEST15"
    assert Decimal(attributes["order_total"]) == order.total_incl_tax
    assert Decimal(attributes["order_subtotal"]) == order.basket_total_excl_tax
    products = attributes["products"]
    paid = sum(int(p["product_quantity"]) * Decimal(p["product_price"]) for p in products)
    assert paid == order.basket_total_excl_tax  # the discounted lines add up to the subtotal
    assert {p["product_id"].split("~")[0] for p in products} == {"MUG", "TEE"}
    assert Award.objects.get(order_id=order.number).status == Status.AWARDED
    assert client.get(reverse("checkout:thank-you")).status_code == 200
