"""Refunds read from oscar's own objects: payment events of a refund type and their line quantities.

Oscar's ``EventHandler.create_payment_event`` saves the event, then one ``PaymentEventQuantity``
per refunded line. Both saves are hooked, in the shop's transaction like any refund:

- the event records a refund ``oscar-event-<pk>`` by amount: the event's amount (money, with tax
  and shipping) scaled to the goods (``order_subtotal / total_incl_tax``); the event that brings the
  refunded money to the order's total refunds the whole order;
- a line quantity replaces that amount, while it is still unsent, with the exact products:
  ``oscar-event-<pk>-line-<line pk>``, the units spread over the line's parts as the award sent
  them (``prices``). An event whose amount already left, or that refunded the whole order, keeps it.
"""

from __future__ import annotations

import logging
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django.db import transaction
from django.db.models import Model, Sum
from django.db.models.signals import post_save

from django_zinrelo.adapters import RefundLine
from django_zinrelo.contrib.oscar.adapter import OscarOrderAdapter
from django_zinrelo.contrib.oscar.conf import get_oscar_settings, oscar_model
from django_zinrelo.contrib.oscar.prices import spread
from django_zinrelo.delivery import get_adapter
from django_zinrelo.models import Action, Operation, OperationStatus
from django_zinrelo.operations import REFUND_PREFIX, order_label, record_refund

logger = logging.getLogger("django_zinrelo")
CENT = Decimal("0.01")


def is_refund(event: Any) -> bool:
    return event.event_type.code in get_oscar_settings().refund_event_types


def refund_id(event: Any) -> str:
    return f"oscar-event-{event.pk}"


def oscar_adapter() -> OscarOrderAdapter:
    adapter = get_adapter()
    return adapter if isinstance(adapter, OscarOrderAdapter) else OscarOrderAdapter()


def goods_amount(event: Any, using: str) -> Decimal | None:
    """The goods' share of the event's money; None when it completes a full refund."""
    order = event.order
    earlier = refunded_before(event, "amount", using, "event_type", order=order) or Decimal(0)
    total = order.total_incl_tax
    if not total or earlier + event.amount >= total:
        return None
    share: Decimal = event.amount * get_adapter().order_subtotal(order) / total
    return share.quantize(CENT, rounding=ROUND_DOWN)


def refunded_before(row: Any, field: str, using: str, event_type: str, **same: Any) -> Any:
    """The sum of ``field`` over the refund rows of ``row``'s kind saved before it (``same``
    picks the order's or the line's); None when there are none."""
    return (
        type(row)
        ._default_manager.using(using)
        .filter(
            **same,
            **{f"{event_type}__code__in": list(get_oscar_settings().refund_event_types)},
            pk__lt=row.pk,
        )
        .aggregate(total=Sum(field))["total"]
    )


def payment_event_saved(
    sender: type[Model], instance: Any, created: bool = False, raw: bool = False, **kwargs: Any
) -> None:
    if raw or not created:
        return
    using = kwargs.get("using") or "default"
    try:
        if is_refund(instance):
            amount = goods_amount(instance, using)
            record_refund(instance.order, refund_id(instance), amount=amount, using=using)
    except Exception:
        logger.exception(
            "Could not record the Zinrelo refund of oscar payment event %s", instance.pk
        )


def refunded_lines(quantity: Any, using: str) -> list[RefundLine]:
    """The products of the award a refunded line quantity gives back, counted after the units
    earlier refund events of the line took."""
    line = quantity.line
    ids_and_parts = next(
        (parts for each, parts in oscar_adapter().line_parts(line.order) if each.pk == line.pk), []
    )
    earlier = refunded_before(quantity, "quantity", using, "event__event_type", line=line) or 0
    counts = spread([part for _, part in ids_and_parts], earlier, quantity.quantity)
    if ids_and_parts:  # units beyond the line's: left on its last part for the refund to refuse
        counts[-1] += quantity.quantity - sum(counts)
    return [
        RefundLine(product_id, count)
        for (product_id, _), count in zip(ids_and_parts, counts, strict=True)
        if count
    ]


def line_quantity_saved(
    sender: type[Model], instance: Any, created: bool = False, raw: bool = False, **kwargs: Any
) -> None:
    if raw or not created:
        return
    using = kwargs.get("using") or "default"
    try:
        event = instance.event
        if not is_refund(event):
            return
        order = event.order
        with transaction.atomic(using=using):
            recorded = Operation.objects.using(using).filter(
                order_model=order_label(order),
                order_pk=str(order.pk),
                key=REFUND_PREFIX + refund_id(event),
            )
            unsent = recorded.filter(
                action=Action.RETURN,
                amount__isnull=False,
                status=OperationStatus.PENDING,
                attempts=0,
                check_first=False,
            )
            if recorded.exists() and not unsent.delete()[0]:
                return  # the event's amount has gone, or it refunded everything: it stands
            record_refund(
                order,
                f"{refund_id(event)}-line-{instance.line_id}",
                lines=refunded_lines(instance, using),
                using=using,
            )
    except Exception:
        logger.exception(
            "Could not record the Zinrelo refund of oscar payment event line %s", instance.pk
        )


def connect() -> None:
    post_save.connect(
        payment_event_saved,
        sender=oscar_model("PaymentEvent"),
        dispatch_uid="django_zinrelo.oscar.payment_event_saved",
    )
    post_save.connect(
        line_quantity_saved,
        sender=oscar_model("PaymentEventQuantity"),
        dispatch_uid="django_zinrelo.oscar.line_quantity_saved",
    )
