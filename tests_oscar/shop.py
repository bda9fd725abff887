"""Orders placed the way an oscar shop places them: a basket, offers and vouchers applied by
oscar's ``Applicator``, shipping, UK VAT, and ``OrderCreator.place_order``."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from oscar.apps.offer.applicator import Applicator
from oscar.apps.order.utils import OrderCreator
from oscar.apps.partner.strategy import UK
from oscar.apps.shipping.methods import FixedPrice
from oscar.core.loading import get_model
from oscar.test.factories import create_offer, create_product
from oscar.test.factories.voucher import VoucherFactory

Basket = get_model("basket", "Basket")
Benefit = get_model("offer", "Benefit")
Condition = get_model("offer", "Condition")
Range = get_model("offer", "Range")
OrderTotalCalculator = __import__(
    "oscar.apps.checkout.calculators", fromlist=["OrderTotalCalculator"]
).OrderTotalCalculator

numbers = itertools.count(100001)


def product(sku: str, price: str, title: str = "") -> Any:
    return create_product(
        title=title or f"Product {sku}", partner_sku=sku, price=Decimal(price), num_in_stock=1000
    )


def voucher(code: str, percent: str) -> Any:
    everything, _ = Range.objects.get_or_create(name="Everything", includes_all_products=True)
    offer = create_offer(
        name=f"Voucher {code}",
        offer_type="Voucher",
        product_range=everything,
        condition=Condition.objects.create(range=everything, type=Condition.COUNT, value=1),
        benefit=Benefit.objects.create(
            range=everything, type=Benefit.PERCENTAGE, value=Decimal(percent)
        ),
    )
    made = VoucherFactory(code=code, name=f"Voucher {code}")
    made.offers.add(offer)
    return made


def place(
    lines: list[tuple[Any, int]],
    *,
    user: Any = None,
    guest_email: str = "",
    vouchers: tuple[Any, ...] = (),
    shipping: tuple[str, str] = ("5.00", "6.00"),
) -> Any:
    """An order of ``(product, quantity)`` lines with UK VAT (20%), the vouchers, and fixed-price
    shipping ``(excl, incl)``, placed by oscar's ``OrderCreator``."""
    basket = Basket.objects.create(owner=user)
    basket.strategy = UK()
    for item, quantity in lines:
        basket.add_product(item, quantity)
    for code in vouchers:
        basket.vouchers.add(code)
    basket.reset_offer_applications()
    Applicator().apply(basket, user)
    method = FixedPrice(charge_excl_tax=Decimal(shipping[0]), charge_incl_tax=Decimal(shipping[1]))
    charge = method.calculate(basket)
    total = OrderTotalCalculator().calculate(basket, charge)
    extra = {"guest_email": guest_email} if guest_email else {}
    order = OrderCreator().place_order(
        basket=basket,
        total=total,
        shipping_method=method,
        shipping_charge=charge,
        user=user,
        order_number=str(next(numbers)),
        **extra,
    )
    basket.submit()
    return order
