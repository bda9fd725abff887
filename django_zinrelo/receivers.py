"""The hook into the shop's order saves: record the award in the order's own transaction.

Only the award row is written here; the order's lines are read after commit, when they exist (an
order saved before its lines, as django-oscar does, would otherwise be awarded without them). Any
failure is logged and swallowed inside a savepoint, so the shop's ``save()`` and transaction go on.
"""

from __future__ import annotations

import logging
from functools import lru_cache, partial
from typing import Any

from django.db import connections, transaction
from django.db.models import Field, Model
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from django_zinrelo.adapters import RefundAdapter
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import deliver_order, enabled, get_adapter, load_adapter
from django_zinrelo.dispatch import submit
from django_zinrelo.models import Award
from django_zinrelo.operations import (
    order_label,
    record_approval,
    record_cancellation,
    record_refund,
)

logger = logging.getLogger("django_zinrelo")


@lru_cache(maxsize=8)
def insert_statement(alias: str) -> tuple[str, tuple[Field[Any, Any], ...]]:
    """``bulk_create(ignore_conflicts=True)`` of one award, compiled once per database.

    This runs inside every qualifying ``save()``; compiling the query each time cost more than
    executing it. Django's compiler still writes each backend's own "ignore conflicts" form.
    """
    fields = tuple(field for field in Award._meta.concrete_fields if not field.primary_key)
    query = InsertQuery(Award, on_conflict=OnConflict.IGNORE)
    query.insert_values(fields, [Award()])
    [(sql, _)] = query.get_compiler(alias).as_sql()
    return sql, fields


def record(label: str, order_pk: str, activity_id: str, using: str) -> None:
    sql, fields = insert_statement(using)
    award = Award(order_model=label, order_pk=order_pk, activity_id=activity_id)
    connection = connections[using]
    params = [field.get_db_prep_save(field.pre_save(award, True), connection) for field in fields]
    if not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    # A failed statement would abort the shop's whole transaction on PostgreSQL: a savepoint
    # confines it, at the price of two more statements.
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(sql, params)


def order_saved(
    sender: type[Model], instance: Model, raw: bool = False, using: str = "default", **kwargs: Any
) -> None:
    if raw:
        return
    conf = get_settings()
    if not enabled(conf):
        return
    try:
        adapter = get_adapter(conf)
        if adapter.cancelled(instance):
            record_cancellation(instance, using)
            return
        approves = adapter.approves(instance)
        if not (approves or adapter.qualifies(instance)):
            return
        # A save through a proxy or a subclass of the order model is recorded under the model.
        label = order_label(instance)
        order_pk = str(instance.pk)
        record(label, order_pk, conf.activity_id, using)
        transaction.on_commit(
            partial(submit, deliver_order, label, order_pk, conf.activity_id), using=using
        )
        if approves:
            record_approval(instance, using)
    except Exception:
        logger.exception(
            "Could not record the Zinrelo award for %s %s; zinrelo_sync --missing will find it",
            sender._meta.label,
            instance.pk,
        )


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
        amount = adapter.amount(instance)
        lines = list(adapter.lines(instance))
        record_refund(
            adapter.order(instance),
            adapter.refund_id(instance),
            amount=None if lines else amount,
            lines=lines,
            using=using,
        )
    except Exception:
        logger.exception(
            "Could not record the Zinrelo refund %s %s", sender._meta.label, instance.pk
        )
