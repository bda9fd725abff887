"""How the app reads a shop's order: the one class a shop subclasses.

The app never guesses at a shop's models beyond these methods. Each has a default that fits a
plain order model (``status``, ``email``, ``total``, ``subtotal``); a shop overrides what
differs and names its subclass in ``ZINRELO["ORDER_ADAPTER"]``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model, QuerySet
from django.utils import timezone


@dataclass(frozen=True)
class Product:
    """One order line as Zinrelo counts it.

    ``price`` is the unit price after discounts: Zinrelo computes points from product prices when
    they are present and ignores the subtotal. A shop that cannot discount its lines gives full
    prices and a discounted subtotal, and Zinrelo prorates the prices down to it. ``url`` is the
    product's page, absolute; ``category`` and ``tags`` are one string or several.
    """

    id: Any
    quantity: Any
    price: Any
    title: Any
    category: Any = None
    image_url: Any = None
    url: Any = None
    tags: Any = None


class OrderAdapter:
    """Tells the app when an order earns its award and what to send. Subclass and override.

    ``qualifies`` runs inside the order's ``save()``: keep it to attribute reads, no queries.
    Everything else runs after commit, off the checkout path, so it may read lines and relations.
    """

    status_field: str = "status"
    qualifying_statuses: Collection[str] = ("paid", "completed")
    cancelled_statuses: Collection[str] = ()
    approving_statuses: Collection[str] = ()
    date_fields: tuple[str, ...] = ("date_placed", "placed_at", "created_at", "created")
    # Zinrelo's parameter reference types product_quantity as an integer, so whole numbers are
    # what every store accepts; a shop selling by weight opts in to decimal quantities.
    fractional_quantities: bool = False
    # Both of Zinrelo's coupon examples separate codes with commas (its prose says spaces).
    coupon_separator: str = ","

    def qualifies(self, order: Any) -> bool:
        """Whether the order has reached the state that earns points (checked on every save)."""
        return getattr(order, self.status_field, None) in self.qualifying_statuses

    def cancelled(self, order: Any) -> bool:
        """Whether the order is cancelled: its points are taken back, or its award never sent.

        Checked on every save, like ``qualifies``; none by default (``cancelled_statuses``).
        """
        return getattr(order, self.status_field, None) in self.cancelled_statuses

    def approves(self, order: Any) -> bool:
        """Whether the order reached the state that approves points held pending (for example
        shipped, with ``approval_date`` holding them until then); none by default."""
        return getattr(order, self.status_field, None) in self.approving_statuses

    def qualifying(self, orders: QuerySet[Model]) -> QuerySet[Model]:
        """The same rule as ``qualifies`` as a query, for sweeps that find orders with no award."""
        return orders.filter(**{f"{self.status_field}__in": list(self.qualifying_statuses)})

    def prefetch(self, orders: QuerySet[Model]) -> QuerySet[Model]:
        """Load, for a chunk of orders at once, what the other methods read on each order.

        Bulk syncs read orders a thousand at a time through this. Without it, ``products`` reading
        ``order.lines.all()`` costs one query per order; with ``prefetch_related("lines")`` here it
        costs one per thousand.
        """
        return orders

    def placed_between(
        self, orders: QuerySet[Model], since: datetime | None, until: datetime | None
    ) -> QuerySet[Model]:
        """The orders placed in ``[since, until)``: ``transaction_date`` as a query.

        Filters on the first of ``date_fields`` the model has; override when the date lives
        elsewhere. ``zinrelo_sync --since/--until`` selects orders with it.
        """
        names = {field.name for field in orders.model._meta.concrete_fields}
        name = next((name for name in self.date_fields if name in names), None)
        if name is None:
            raise ImproperlyConfigured(
                f"{orders.model._meta.label} has none of the date fields "
                f"{', '.join(self.date_fields)}: set date_fields or override placed_between() "
                "in the order adapter."
            )
        if since is not None:
            orders = orders.filter(**{f"{name}__gte": since})
        if until is not None:
            orders = orders.filter(**{f"{name}__lt": until})
        return orders

    def store(self, order: Any) -> str:
        """The Zinrelo store the order belongs to: a name in ``ZINRELO["STORES"]``, or ``""``
        (the default) for the store of the top-level settings. Asked after commit, with the
        other methods, when the body is built; the award keeps the answer."""
        return ""

    def order_id(self, order: Any) -> str:
        """The id Zinrelo de-duplicates on: keep it stable for the life of the order."""
        return str(order.pk)

    def member_id(self, order: Any) -> str | None:
        """Whom to award: the identifier the Zinrelo store uses for members (email by default)."""
        email = getattr(order, "email", None)
        if not email:
            email = getattr(getattr(order, "user", None), "email", None)
        return email or None

    def order_total(self, order: Any) -> Decimal:
        return order.total  # type: ignore[no-any-return]

    def order_subtotal(self, order: Any) -> Decimal:
        """The order value after discounts, without shipping and taxes: what earns points."""
        return order.subtotal  # type: ignore[no-any-return]

    def currency(self, order: Any) -> str | None:
        """The ISO 4217 code of the order's amounts; None sends none (the store's own)."""
        return None

    def coupons(self, order: Any) -> Iterable[str]:
        return ()

    def tags(self, order: Any) -> Iterable[str]:
        return ()

    def reason(self, order: Any) -> str | None:
        return None

    def products(self, order: Any) -> Iterable[Product]:
        """The lines; none means Zinrelo awards on the subtotal."""
        return ()

    def transaction_date(self, order: Any) -> datetime:
        """When the purchase happened: back-filled orders keep their own date, not today's."""
        for name in self.date_fields:
            value = getattr(order, name, None)
            if isinstance(value, datetime):
                return value
        return timezone.now()

    def approval_date(self, order: Any) -> datetime | None:
        """When pending points auto-approve; return one to hold points through a return window."""
        return None


@dataclass(frozen=True)
class RefundLine:
    """Units of one product given back: Zinrelo deducts that product's share of the points."""

    product_id: Any
    quantity: Any


class RefundAdapter:
    """Reads the shop's refund model (``ZINRELO["REFUND_MODEL"]``), as ``OrderAdapter`` reads
    orders. Subclass, override what differs, and name it in ``ZINRELO["REFUND_ADAPTER"]``.

    A refund gives back an ``amount``, or ``lines``, or neither: the whole order. It is recorded
    once per ``refund_id`` when a save of it first ``applies``.
    """

    order_field: str = "order"
    status_field: str | None = "status"
    applying_statuses: Collection[str] = ("completed", "refunded")

    def applies(self, refund: Any) -> bool:
        """Whether the money has gone back (checked on every save; keep it to attribute reads)."""
        if self.status_field is None:
            return True
        return getattr(refund, self.status_field, None) in self.applying_statuses

    def order(self, refund: Any) -> Any:
        return getattr(refund, self.order_field)

    def refund_id(self, refund: Any) -> str:
        """Unique per refund and stable: it keys the refund, so saving it again sends nothing."""
        return str(refund.pk)

    def amount(self, refund: Any) -> Decimal | None:
        """The refunded value of goods, on the basis the award was computed on (products after
        discounts, without shipping and tax); None with ``lines``, or for the whole order."""
        return getattr(refund, "amount", None)

    def lines(self, refund: Any) -> Iterable[RefundLine]:
        """The refunded products and quantities, when the refund is by product."""
        return ()
