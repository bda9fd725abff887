"""An order adapter for django-oscar's ``Order`` (oscar's own or a forked order app's).

Name it in ``ZINRELO["ORDER_ADAPTER"]``; the statuses come from ``ZINRELO["OSCAR"]`` (see ``conf``).
Amounts are tax-exclusive, as Zinrelo defines its subtotal (without shipping and taxes), and the
products are the lines at their discounted prices, split where a line's total does not divide into
its units (``prices``), so that they add up to the subtotal exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.db.models import Model, QuerySet

from django_zinrelo.adapters import OrderAdapter, Product
from django_zinrelo.contrib.oscar.conf import get_oscar_settings
from django_zinrelo.contrib.oscar.prices import Part, split


class OscarOrderAdapter(OrderAdapter):
    """Reads oscar's ``Order``: ``number``, ``email`` (the user's, or the guest's), the totals,
    the vouchers of its discounts and its lines. Subclass to change what a method sends."""

    date_fields = ("date_placed",)
    # True sends tax-inclusive prices and subtotal (what the customer paid for the goods).
    tax_inclusive: bool = False

    # When an order earns points, loses them, or approves them

    def qualifies(self, order: Any) -> bool:
        status = order.status or ""
        qualifying = get_oscar_settings().qualifying_statuses
        if qualifying is None:
            return not self.cancelled(order)
        return status in qualifying

    def cancelled(self, order: Any) -> bool:
        return (order.status or "") in get_oscar_settings().cancelled_statuses

    def approves(self, order: Any) -> bool:
        return (order.status or "") in get_oscar_settings().approving_statuses

    def qualifying(self, orders: QuerySet[Model]) -> QuerySet[Model]:
        conf = get_oscar_settings()
        if conf.qualifying_statuses is None:
            return orders.exclude(status__in=list(conf.cancelled_statuses))
        return orders.filter(status__in=list(conf.qualifying_statuses))

    def prefetch(self, orders: QuerySet[Model]) -> QuerySet[Model]:
        return orders.select_related("user").prefetch_related("lines", "discounts")

    # What is sent

    def order_id(self, order: Any) -> str:
        return str(order.number)

    def member_id(self, order: Any) -> str | None:
        user = order.user
        return (user.email if user is not None else "") or order.guest_email or None

    def order_total(self, order: Any) -> Decimal:
        return order.total_incl_tax  # type: ignore[no-any-return]

    def order_subtotal(self, order: Any) -> Decimal:
        """The basket after discounts, without shipping, surcharges and (by default) tax: the sum
        of the lines' totals, which the products add up to. Oscar rounds each line's tax-exclusive
        price on its own, so on a large basket ``basket_total_excl_tax`` can differ from that sum
        by a few cents, and Zinrelo counts the lower of the products and the subtotal."""
        return sum((self.line_total(line) for line in order.lines.all()), Decimal(0))

    def currency(self, order: Any) -> str | None:
        return order.currency or None

    def coupons(self, order: Any) -> Iterable[str]:
        """The voucher codes of the order's discounts (offers without a voucher have none)."""
        codes = (discount.voucher_code for discount in order.discounts.all())
        return list(dict.fromkeys(code for code in codes if code))

    def line_total(self, line: Any) -> Decimal:
        """What the line cost after discounts, on the subtotal's basis."""
        if self.tax_inclusive:
            return line.line_price_incl_tax  # type: ignore[no-any-return]
        return line.line_price_excl_tax  # type: ignore[no-any-return]

    def line_key(self, line: Any) -> str:
        """The product id of a line: its SKU (else UPC, else the line's pk); read from the line,
        which keeps it after the product is deleted."""
        return str(line.partner_sku or line.upc or f"line-{line.pk}")

    def line_parts(self, order: Any) -> Iterator[tuple[Any, list[tuple[str, Part]]]]:
        """Each line with its parts and their product ids, unique in the order: a SKU on a second
        line gets that line's pk, a line's second part a ``~1``."""
        seen: set[str] = set()
        for line in sorted(order.lines.all(), key=lambda line: line.pk):
            key = self.line_key(line)
            if key in seen:
                key = f"{key}-{line.pk}"
            seen.add(key)
            parts = split(self.line_total(line), line.quantity)
            yield line, [(key if n == 0 else f"{key}~{n}", part) for n, part in enumerate(parts)]

    def products(self, order: Any) -> Iterable[Product]:
        for line, parts in self.line_parts(order):
            for product_id, part in parts:
                yield Product(
                    id=product_id, quantity=part.quantity, price=part.price, title=line.title
                )
