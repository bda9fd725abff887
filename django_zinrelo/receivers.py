"""The hook into the shop's order saves: record the award in the order's own transaction.

Only the award row is written here; the order's lines are read after commit, when they exist (an
order saved before its lines, as django-oscar does, would otherwise be awarded without them). Any
failure is logged and swallowed, confined so that the shop's ``save()`` and transaction go on.

The insert itself, and how it costs one statement without ever breaking the shop's transaction,
is ``inserts``'s.

A save is looked at only for what it changes. Each order loaded from the database keeps the values
it was loaded with (``order_loaded``, a tuple, no query, no code of the shop's); a save of it that
changes none of them, or that leaves the adapter's verdict as it was when loaded (an order paid
before and completed now), records nothing: the save that made it qualify did, or
``zinrelo_sync --missing`` will. Changed fields of a qualifying order still send its award after
commit, so that an award found invalid is rebuilt once the shop fixes the order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache, partial, reduce
from operator import itemgetter, or_
from typing import Any, Final

from django.db import transaction
from django.db.models import Model, Q

from django_zinrelo import inserts
from django_zinrelo.adapters import OrderAdapter, RefundAdapter
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import (
    deliver_order,
    enabled,
    get_adapter,
    load_adapter,
    revive_invalid,
)
from django_zinrelo.dispatch import submit
from django_zinrelo.models import Award, Trigger
from django_zinrelo.operations import (
    order_label,
    record_approval,
    record_cancellation,
    record_refund_of,
)
from django_zinrelo.sync import send_due

logger = logging.getLogger("django_zinrelo")

# Where an order keeps the values it was loaded with; "_zinrelo" keeps clear of the shop's names.
LOADED: Final = "_zinrelo_loaded"

# What the adapter says of an order, in the order the hook asks.
CANCELLED: Final = "cancelled"
APPROVES: Final = "approves"
QUALIFIES: Final = "qualifies"
AWARDED: Final = (APPROVES, QUALIFIES)


@lru_cache(maxsize=64)
def watched(model: type[Model]) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], Any]]:
    """The fields of an order a save may change, and how to read their values in one call.

    Fields set on every save (``auto_now``) are left out: they change whatever the shop does.
    """
    names = tuple(
        field.attname
        for field in model._meta.concrete_fields
        if not getattr(field, "auto_now", False)
    )
    if len(names) == 1:
        return names, lambda values: (values[names[0]],)
    return names, itemgetter(*names)


def order_loaded(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """``post_init`` of every order: note its values, before the shop changes them.

    Runs for every order the shop loads, so it only copies references; an order loaded with
    deferred fields (``only()``, ``defer()``) notes nothing, and its saves are looked at in full.
    """
    try:
        instance.__dict__[LOADED] = watched(type(instance))[1](instance.__dict__)
    except Exception:
        instance.__dict__.pop(LOADED, None)


def order_saving(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """``pre_save``: an order built in code, not loaded, says nothing of what the row holds."""
    if instance._state.adding:
        instance.__dict__.pop(LOADED, None)


def verdict(adapter: OrderAdapter, order: Model) -> str:
    if adapter.cancelled(order):
        return CANCELLED
    if adapter.approves(order):
        return APPROVES
    if adapter.qualifies(order):
        return QUALIFIES
    return ""


def as_loaded(order: Model, loaded: Any) -> Model:
    """The order as it was loaded, for the adapter: a shallow copy with the loaded values."""
    old = type(order).__new__(type(order))
    old.__dict__.update(order.__dict__)
    old.__dict__.update(zip(watched(type(order))[0], loaded, strict=True))
    return old


def as_stored(order: Model, loaded: Any, update_fields: frozenset[str] | None) -> Model:
    """The order as its row now holds it: a save limited to ``update_fields`` wrote only those,
    and the row keeps the loaded values of the others, whatever the instance holds (a status set
    in memory by a payment whose savepoint rolled back, then a save of another field)."""
    if update_fields is None or loaded is None:
        return order
    stored = as_loaded(order, loaded)
    # Django has checked that each names a concrete field, by its name or its attname.
    attnames = {field.name: field.attname for field in order._meta.concrete_fields}
    for name in update_fields:
        attname = attnames.get(name, name)
        stored.__dict__[attname] = order.__dict__[attname]
    return stored


def order_saved(
    sender: type[Model],
    instance: Model,
    raw: bool = False,
    using: str = "default",
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    if raw:
        return
    conf = get_settings()
    if not enabled(conf):
        return
    try:
        adapter = get_adapter(conf)
        loaded = instance.__dict__.get(LOADED)
        before = None
        if loaded is not None:
            if watched(type(instance))[1](instance.__dict__) == loaded:
                return  # nothing changed since the order was loaded
            before = verdict(adapter, as_loaded(instance, loaded))
        now = verdict(adapter, as_stored(instance, loaded, update_fields))
        if now == CANCELLED:
            if before != CANCELLED:
                record_cancellation(instance, using)
            return
        if now not in AWARDED:
            return
        # A save through a proxy or a subclass of the order model is recorded under the model.
        label = order_label(instance, conf)
        order_pk = str(instance.pk)
        if before not in AWARDED:
            inserts.record(label, order_pk, conf.activity_id, using)
        transaction.on_commit(
            partial(submit, deliver_order, label, order_pk, conf.activity_id, batch=deliver_orders),
            using=using,
        )
        if now == APPROVES and before != APPROVES:
            record_approval(instance, using)
    except Exception:
        instance.__dict__.pop(LOADED, None)
        logger.exception(
            "Could not record the Zinrelo award for %s %s; zinrelo_sync --missing will find it",
            sender._meta.label,
            instance.pk,
        )


def deliver_orders(keys: Sequence[tuple[Any, ...]]) -> None:
    """After commit, the awards of orders just saved, together (``deliver_order`` for many):
    claimed, built, sent and recorded by ``zinrelo_sync``'s own loop, in batches."""
    wanted = reduce(
        or_,
        (
            Q(order_model=label, activity_id=activity_id, order_pk__in=pks)
            for (label, activity_id), pks in by_model(keys).items()
        ),
    )
    awards = Award.objects.filter(wanted)
    revive_invalid(awards)
    send_due(awards, concurrency=get_settings().threads, trigger=Trigger.ORDER_SAVE)


def by_model(keys: Sequence[tuple[Any, ...]]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for label, order_pk, activity_id in keys:
        grouped.setdefault((label, activity_id), []).append(order_pk)
    return grouped


def refund_saved(
    sender: type[Model], instance: Model, raw: bool = False, using: str = "default", **kwargs: Any
) -> None:
    """A save of the shop's refund model: record the refund once it applies."""
    if raw:
        return
    conf = get_settings()
    if not enabled(conf):
        return
    try:
        adapter: RefundAdapter = load_adapter(conf.refund_adapter)
        if not adapter.applies(instance):
            return
        record_refund_of(adapter, instance, using)
    except Exception:
        logger.exception(
            "Could not record the Zinrelo refund %s %s", sender._meta.label, instance.pk
        )
