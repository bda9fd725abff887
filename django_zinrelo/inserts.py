"""The award row, written inside the shop's transaction at the cost of one statement.

This runs in every qualifying ``save()``, so it is built to cost the least the database allows:
the ``INSERT ... ON CONFLICT DO NOTHING`` is compiled once per database and names only the
columns whose values vary (the shop's three and the row's times); every other column starts as
the database's default, which the model declares the same as its own (``db_default``). No model
instance is made.

On PostgreSQL a failed statement aborts the whole transaction, and a savepoint around the insert,
which would confine it, costs about as much as the insert. So the savepoint is paid only until the
insert is proven on the database in this process: the first award insert runs in it (the table
may be missing or different: migrations not run yet); once one has succeeded, later inserts go
alone, as long as their values are checked here to fit (lengths, no NUL, ASCII or a UTF8
database). A value that does not fit takes the savepoint; any failure forgets the proof. What
else can fail the insert (a lost connection, a timeout, a deadlock, a full disk) would fail the
shop's own statements in the same transaction as well. Not covered: the award table dropped or
changed under a running process after the proof (a migration of it run while old processes still
serve) aborts the one transaction that meets it; the process then proves again. SQLite undoes a
failed statement alone: it never needs the savepoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, cast

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django.utils import timezone

from django_zinrelo.models import Award

SAVEPOINT: Final = "zinrelo_award"
INERROR: Final = 3  # libpq's PQTRANS_INERROR: the transaction is aborted
# The award's values that come from the shop; every other one is a default of the model's.
GIVEN: Final = ("order_model", "order_pk", "activity_id")

# The longest order primary key an award row can hold (text, as ``str(pk)``).
LONGEST_KEY: Final = cast(int, Award._meta.get_field("order_pk").max_length)

# Database aliases on which an award insert has succeeded in this process, each with whether the
# server stores any text (a UTF8 database) or only ASCII is known to be safe.
PROVEN: dict[str, bool] = {}


@dataclass(frozen=True)
class Statement:
    """The insert's SQL, and the field whose value fills each of its placeholders, in order."""

    sql: str
    slots: tuple[Field[Any, Any], ...]


@lru_cache(maxsize=8)
def statement(alias: str) -> Statement:
    """``bulk_create(ignore_conflicts=True)`` of one award, compiled once per database, of the
    columns that vary only: Django's compiler writes each backend's own "ignore conflicts" form."""
    fields = sent()
    query = InsertQuery(Award, on_conflict=OnConflict.IGNORE)
    query.insert_values(fields, [Award()])
    [(sql, _)] = query.get_compiler(alias).as_sql()
    return Statement(sql, fields)


@lru_cache(maxsize=8)
def page_statement(alias: str) -> str:
    """Awards for a page of orders in one ``INSERT ... SELECT`` on PostgreSQL: the orders' keys
    travel as one array; placeholders, by name: the order model, the activity, the time, the keys.

    Of the same columns as :func:`statement`, so that both write the same row; Django's
    ``bulk_create`` of a page turned 21 values a row into text on the client, which cost more
    than the database's whole insert.
    """
    quote = connections[alias].ops.quote_name
    columns = sent()
    selected = [
        "given.order_pk"
        if field.name == "order_pk"
        else f"%({field.name})s"
        if field.name in GIVEN
        else "%(now)s"
        for field in columns
    ]
    names = ", ".join(quote(str(field.column)) for field in columns)
    # Names come from the model's own metadata, quoted; every value is a parameter.
    return (
        f"INSERT INTO {quote(Award._meta.db_table)} ({names}) "  # noqa: S608
        f"SELECT {', '.join(selected)} FROM unnest(%(order_pks)s::varchar[]) AS given(order_pk) "
        "ON CONFLICT DO NOTHING"
    )


def record_page(label: str, pks: list[str], activity_id: str) -> int:
    """Awards for orders that have none, outside the shop's transactions (a bulk sync); returns
    how many were inserted (an order given an award meanwhile keeps it)."""
    connection = connections["default"]
    given = {"order_model": label, "activity_id": activity_id}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = page_statement(connection.alias)
            cursor.execute(sql, {**given, "now": timezone.now(), "order_pks": pks})
        else:
            insert = statement(connection.alias)
            rows = [parameters(insert, {**given, "order_pk": pk}, connection) for pk in pks]
            cursor.executemany(insert.sql, rows)
        return int(cursor.rowcount)


def keep_statistics(recorded: int) -> None:
    """Have PostgreSQL count the award table again once a back-fill has more than doubled what
    its planner believes the table holds.

    Which orders still lack an award is an anti-join on the award table, planned from its
    statistics. A new table (a first back-fill after install) looks empty to the planner until
    autovacuum's next pass, and an empty table is scanned whole for each order, so every page cost
    more than the one before: 26 s for 30,000 orders, quadratic in their number. A few
    ``ANALYZE`` runs (doubling, so logarithmic in the back-fill's size) keep each page's cost
    flat. A database user that does not own the table gets a warning from the server, no error.
    """
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    table = connection.ops.quote_name(Award._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        [(believed,)] = cursor.fetchall()
        if recorded > 2 * max(believed, 0):
            cursor.execute(f"ANALYZE {table}")


def sent() -> tuple[Field[Any, Any], ...]:
    """The columns an award's insert names: the shop's values and the row's times (one clock
    reading for all, as the model takes them)."""
    return tuple(
        field
        for field in Award._meta.concrete_fields
        if field.name in GIVEN
        or getattr(field, "auto_now", False)
        or getattr(field, "auto_now_add", False)
        or field.default is timezone.now
    )


def record(label: str, order_pk: str, activity_id: str, using: str) -> None:
    """Insert the award row in the shop's transaction, never breaking it for the app's sake."""
    if len(order_pk) > LONGEST_KEY:
        raise ValueError(
            f"The order's primary key is {len(order_pk)} characters long; an award records at "
            f"most {LONGEST_KEY}."
        )
    insert = statement(using)
    connection = connections[using]
    given = {"order_model": label, "order_pk": order_pk, "activity_id": activity_id}
    params = parameters(insert, given, connection)
    # SQLite undoes a failed statement alone and the transaction goes on; outside a transaction
    # there is nothing to break.
    if connection.vendor == "sqlite" or not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(insert.sql, params)
        return
    try:
        if storable(given, PROVEN.get(using)):
            with connection.cursor() as cursor:
                cursor.execute(insert.sql, params)
            return
        confined(connection, insert.sql, params)
    except Exception:
        PROVEN.pop(using, None)
        raise
    PROVEN[using] = connection.vendor == "postgresql" and server_encoding(connection) == "UTF8"


def parameters(
    insert: Statement, given: dict[str, str], connection: BaseDatabaseWrapper
) -> list[Any]:
    """The values of ``insert``'s placeholders for an award of the ``given`` values (text, as
    the database takes it) and one clock reading, adapted for the database once for every time
    column (``DateTimeField.get_db_prep_save`` per column cost more than the rest of this)."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    return [given.get(slot.name, now) for slot in insert.slots]


def storable(given: dict[str, str], any_text: bool | None) -> bool:
    """Whether the proven table takes the shop's values, as far as Python can tell: within their
    columns' lengths, no NUL, and ASCII unless the server stores any text (then encodable: no lone
    surrogate). ``any_text`` is None before the proof."""
    if any_text is None:
        return False
    for name, most in limits():
        text = given[name]
        if len(text) > most or "\x00" in text:
            return False
        if not text.isascii() and not (any_text and encodable(text)):
            return False
    return True


@lru_cache(maxsize=1)
def limits() -> tuple[tuple[str, int], ...]:
    fields = Award._meta.concrete_fields
    return tuple(
        (field.name, cast(int, field.max_length)) for field in fields if field.name in GIVEN
    )


def encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def confined(connection: BaseDatabaseWrapper, sql: str, params: list[Any]) -> None:
    """The insert inside a savepoint: sent in the same trip as the insert when the driver binds
    parameters itself (psycopg's default in Django, and psycopg2), one more trip only after a
    failure; with server-side binding, and on other databases, Django's own savepoint."""
    options = connection.settings_dict.get("OPTIONS") or {}
    if connection.vendor != "postgresql" or options.get("server_side_binding"):
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


def server_encoding(connection: BaseDatabaseWrapper) -> str | None:
    """The database's encoding as the server reported it at connect (psycopg 3 and 2), no query."""
    raw = connection.connection
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
