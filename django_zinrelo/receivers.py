"""The hook into the shop's order saves: record the award in the order's own transaction.

Only the award row is written here; the order's lines are read after commit, when they exist (an
order saved before its lines, as django-oscar does, would otherwise be awarded without them). Any
failure is logged and swallowed, confined so that the shop's ``save()`` and transaction go on.

On PostgreSQL a failed statement aborts the whole transaction, and a savepoint around the insert,
which would confine it, costs about as much as the insert. So the savepoint is paid only until the
insert is proven on the connection: the first award insert on each database connection runs in it
(the table may be missing or different: migrations not run yet); once one has succeeded, later
inserts on that connection go alone, one statement, as long as their values are checked here to
fit (lengths, no NUL, ASCII or a UTF8 database). A value that does not fit, or any failure, takes
the savepoint again; a new connection proves itself again. What else can fail the insert (a lost
connection, a timeout, a deadlock, a full disk) would fail the shop's own statements as well. Not
covered: the award table dropped or changed under a running process after the proof (a migration
of it run before the old processes stop) aborts the one transaction that meets it; the connection
then proves again. SQLite undoes a failed statement alone: it never needs the savepoint.

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
from contextlib import suppress
from functools import lru_cache, partial, reduce
from operator import itemgetter, or_
from typing import Any, Final, cast
from weakref import WeakKeyDictionary

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, Q
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

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
    record_refund,
)
from django_zinrelo.sync import send_due

logger = logging.getLogger("django_zinrelo")

# Where an order keeps the values it was loaded with; "_zinrelo" keeps clear of the shop's names.
LOADED: Final = "_zinrelo_loaded"
SAVEPOINT: Final = "zinrelo_award"
INERROR: Final = 3

# What the adapter says of an order, in the order the hook asks.
CANCELLED: Final = "cancelled"
APPROVES: Final = "approves"
QUALIFIES: Final = "qualifies"
AWARDED: Final = (APPROVES, QUALIFIES)


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


@lru_cache(maxsize=8)
def template(
    fields: tuple[Field[Any, Any], ...], alias: str
) -> tuple[tuple[Any, ...], tuple[int, ...]]:
    """The insert's parameters that are the same for every award, prepared once per database, and
    the positions of those that are not (the shop's values, timestamps, callable defaults):
    preparing all twenty for each save cost a third of the insert's own time."""
    award = Award()
    connection = connections[alias]
    varying = tuple(
        index
        for index, field in enumerate(fields)
        if field.name in GIVEN
        or (field.has_default() and callable(field.default))
        or getattr(field, "auto_now", False)
        or getattr(field, "auto_now_add", False)
    )
    params = tuple(
        None
        if index in varying
        else field.get_db_prep_save(field.pre_save(award, True), connection)
        for index, field in enumerate(fields)
    )
    return params, varying


def confinement(connection: BaseDatabaseWrapper) -> str:
    """How an insert not yet known to be safe is kept from breaking the shop's transaction.

    PostgreSQL aborts the whole transaction on a failed statement, so the insert runs inside a
    savepoint, sent in the same trip as the insert when the driver binds parameters itself
    (psycopg's default in Django, and psycopg2): one round trip, and one more only after a
    failure. Server-side binding, and any other database, take Django's own savepoint.
    """
    options = connection.settings_dict.get("OPTIONS") or {}
    if connection.vendor == "postgresql" and not options.get("server_side_binding"):
        return "inline"
    return "atomic"


# Raw connections whose last award insert succeeded, each with whether its server stores any text
# (a UTF8 database) or only ASCII is known to be safe. Keyed by the driver's connection object, so
# a reconnect, or a pooled connection replaced, proves itself again; gone with its connection.
PROVEN: WeakKeyDictionary[Any, bool] = WeakKeyDictionary()
# The award's values that come from the shop; every other one is a default of the model's.
GIVEN: Final = ("order_model", "order_pk", "activity_id")


def record(label: str, order_pk: str, activity_id: str, using: str) -> None:
    """Insert the award row in the shop's transaction, never breaking it for the app's sake.

    A savepoint costs PostgreSQL about as much as the insert itself, so it is paid only until the
    insert is known to succeed: on a connection whose last award insert succeeded (the table is
    there, as this process's model has it), with values checked here against what their columns
    hold, the insert goes alone. What else can fail it (a lost connection, a timeout, a full disk,
    a deadlock) fails the shop's own statements as well. A failure forgets the proof.
    """
    sql, fields = insert_statement(using)
    award = Award(order_model=label, order_pk=order_pk, activity_id=activity_id)
    connection = connections[using]
    fixed, varying = template(fields, using)
    params = list(fixed)
    for index in varying:
        field = fields[index]
        params[index] = field.get_db_prep_save(field.pre_save(award, True), connection)
    # SQLite undoes a failed statement alone and the transaction goes on; outside a transaction
    # there is nothing to break.
    if connection.vendor == "sqlite" or not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    raw = connection.connection
    try:
        if storable(award, proof(raw)):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
            return
        confined(connection, sql, params)
    except Exception:
        forget(raw)
        raise
    prove(connection, raw)


def storable(award: Award, any_text: bool | None) -> bool:
    """Whether the proven table takes the award's given values, as far as Python can tell: within
    their columns' lengths, no NUL, and ASCII unless the server stores any text (then encodable:
    no lone surrogate). ``any_text`` is None on a connection not proven."""
    if any_text is None:
        return False
    for name, most in limits():
        value = getattr(award, name)
        if len(value) > most or "\x00" in value:
            return False
        if not value.isascii() and not (any_text and encodable(value)):
            return False
    return True


@lru_cache(maxsize=1)
def limits() -> tuple[tuple[str, int], ...]:
    fields = Award._meta.concrete_fields
    return tuple(
        (field.name, cast(int, field.max_length)) for field in fields if field.name in GIVEN
    )


def encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def confined(connection: BaseDatabaseWrapper, sql: str, params: list[Any]) -> None:
    if confinement(connection) == "atomic":
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    with connection.cursor() as cursor:
        try:
            cursor.execute(f"SAVEPOINT {SAVEPOINT}; {sql}; RELEASE SAVEPOINT {SAVEPOINT}", params)
        except Exception:
            # Only a statement the server ran can have aborted the transaction; an error raised
            # before sending (binding the parameters) left it as it was, with no savepoint.
            if aborted(connection):
                cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
            raise


def proof(raw: Any) -> bool | None:
    """What ``PROVEN`` holds for this connection; None when not proven, or when the driver's
    connections take no weak reference (then every insert is confined)."""
    try:
        return PROVEN.get(raw)
    except TypeError:
        return None


def prove(connection: BaseDatabaseWrapper, raw: Any) -> None:
    with suppress(TypeError):
        PROVEN[raw] = connection.vendor == "postgresql" and server_encoding(raw) == "UTF8"


def forget(raw: Any) -> None:
    with suppress(TypeError):
        PROVEN.pop(raw, None)


def server_encoding(raw: Any) -> str | None:
    """The database's encoding as the server reported it at connect (psycopg 3 and 2), no query."""
    info = getattr(raw, "info", None)
    if info is not None:
        return cast(str | None, info.parameter_status("server_encoding"))
    return cast(str | None, raw.get_parameter_status("server_encoding"))


def aborted(connection: BaseDatabaseWrapper) -> bool:
    """Whether PostgreSQL holds the transaction as failed (libpq's INERROR, for psycopg 3 and 2)."""
    raw = connection.connection
    info = getattr(raw, "info", None)
    status = info.transaction_status if info is not None else raw.get_transaction_status()
    return int(status) == INERROR


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
        loaded = instance.__dict__.get(LOADED)
        before = None
        if loaded is not None:
            if watched(type(instance))[1](instance.__dict__) == loaded:
                return  # nothing changed since the order was loaded
            before = verdict(adapter, as_loaded(instance, loaded))
        now = verdict(adapter, instance)
        if now == CANCELLED:
            if before != CANCELLED:
                record_cancellation(instance, using)
            return
        if now not in AWARDED:
            return
        # A save through a proxy or a subclass of the order model is recorded under the model.
        label = order_label(instance)
        order_pk = str(instance.pk)
        if before not in AWARDED:
            record(label, order_pk, conf.activity_id, using)
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
