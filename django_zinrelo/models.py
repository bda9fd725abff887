"""The award log: what each order is owed, and the evidence of every call made for it.

No foreign key points into the shop's tables: the order is kept as its model label and primary key
as text, so the app never constrains or migrates with the shop's models.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

from django.db import connection, models, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.backends.ddl_references import Statement
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Upper
from django.utils import timezone

from django_zinrelo.client import Outcome


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Retrying"
    AWARDED = "awarded", "Awarded"
    ALREADY_AWARDED = "already_awarded", "Already awarded"
    INVALID = "invalid", "Invalid order"
    REFUSED = "refused", "Refused by Zinrelo"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled before sending"


DONE = frozenset({Status.AWARDED, Status.ALREADY_AWARDED})
FINAL_FAILURES = frozenset({Status.INVALID, Status.REFUSED, Status.FAILED})
WAITING = frozenset({Status.PENDING, Status.RETRYING})


class Trigger(models.TextChoices):
    ORDER_SAVE = "order_save", "Order save"
    RETRY = "retry", "Retry"
    ADMIN = "admin", "Admin action"
    COMMAND = "command", "Sync command"
    REFUND = "refund", "Refund"


class Call(models.TextChoices):
    """Which call to Zinrelo an attempt was: the attempt log holds every call, whatever its job."""

    AWARD = "award", "Award"
    REJECT = "reject", "Reject"
    APPROVE = "approve", "Approve"
    RETURN = "return", "Return"
    LOOKUP = "lookup", "Look-up"


class Outbox(models.Model):
    """What every row sent to Zinrelo keeps: its schedule, its claim, and Zinrelo's last answer.

    Awards and the operations that follow them (cancellations, refunds, approvals) share it, so one
    claim, one record and one retry policy serve every call the app makes.

    A value every new row starts with is the database's default too (``db_default``), so that the
    checkout's insert names only the columns that vary (``inserts``): a shorter statement costs the
    shop's transaction less to send and parse.
    """

    # Each model gives its choices.
    status = models.CharField(max_length=20, default="pending", db_default="pending")
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    retrying_since = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When its current run of failures began (see RETRY_FOR).",
    )
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    claim = models.UUIDField(null=True, blank=True, editable=False)
    payload = models.JSONField(null=True, blank=True, editable=False)
    points = models.IntegerField(null=True, blank=True)
    points_status = models.CharField(max_length=32, blank=True, db_default="")
    transaction_id = models.CharField(
        "Zinrelo transaction id", max_length=64, blank=True, db_default=""
    )
    last_status_code = models.PositiveSmallIntegerField("last HTTP status", null=True, blank=True)
    last_error_code = models.CharField("last error code", max_length=64, blank=True, db_default="")
    last_reason = models.TextField("last reason", blank=True, db_default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class AwardQuerySet(QuerySet["Award"]):
    def due(self, now: datetime | None = None) -> AwardQuerySet:
        """Awards to send now: waiting ones whose time has come, and claims abandoned by a crash."""
        now = now or timezone.now()
        return self.filter(
            Q(status__in=WAITING, next_attempt_at__lte=now)
            | Q(status=Status.SENDING, claimed_until__lt=now)
        )


class PrefixIndex(models.Index):
    """An index on ``UPPER(column)`` that serves a case-insensitive prefix search
    (``istartswith``, ``UPPER(column) LIKE 'TERM%'``) on millions of rows.

    PostgreSQL uses a b-tree for ``LIKE`` only in the ``C`` collation or with a pattern operator
    class, which it alone knows; elsewhere the index is a plain one on the same expression.
    """

    def __init__(self, field: str, name: str) -> None:
        super().__init__(Upper(field), name=name)
        self.field = field

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        path, _, kwargs = super().deconstruct()
        return path, (self.field,), {"name": kwargs["name"]}

    def create_sql(
        self,
        model: type[models.Model],
        schema_editor: BaseDatabaseSchemaEditor,
        using: str = "",
        **kwargs: Any,
    ) -> Statement:
        statement = super().create_sql(model, schema_editor, using, **kwargs)
        if schema_editor.connection.vendor == "postgresql":
            # Django's own ``OpClass`` needs django.contrib.postgres installed; a shop may not.
            columns = f"{statement.parts['columns']} text_pattern_ops"
            statement.parts["columns"] = columns  # type: ignore[assignment]
        return statement


class Award(Outbox):
    order_model = models.CharField(max_length=100, help_text="The shop's order model label.")
    order_pk = models.CharField("order primary key", max_length=255)
    activity_id = models.CharField(max_length=64)
    order_id = models.CharField("order id", max_length=128, blank=True, db_default="")
    member_id = models.CharField("member", max_length=254, blank=True, db_default="")
    store = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="Its Zinrelo store, named in ZINRELO['STORES']; empty: the default.",
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING, db_default=Status.PENDING
    )

    objects = AwardQuerySet.as_manager()

    class Meta:
        verbose_name = "Zinrelo award"
        constraints = [
            models.UniqueConstraint(
                fields=["order_model", "order_pk", "activity_id"], name="zinrelo_award_once"
            )
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="zinrelo_award_due"),
            models.Index(fields=["activity_id"], name="zinrelo_award_activity"),
            models.Index(fields=["order_id"], name="zinrelo_award_order_id"),
            models.Index(fields=["member_id"], name="zinrelo_award_member"),
            PrefixIndex("order_id", name="zinrelo_award_order_prefix"),
            PrefixIndex("member_id", name="zinrelo_award_member_prefix"),
            models.Index(fields=["store"], name="zinrelo_award_store"),
            models.Index(fields=["last_error_code"], name="zinrelo_award_error"),
            models.Index(fields=["last_status_code"], name="zinrelo_award_http"),
            # With the status, so that the health view's counts per day read only the index.
            models.Index(fields=["-created_at", "status"], name="zinrelo_award_created"),
            models.Index(fields=["-updated_at"], name="zinrelo_award_updated"),
        ]
        permissions = [("resync_award", "Can re-send awards to Zinrelo")]

    def __str__(self) -> str:
        return f"{self.activity_id} for order {self.order_id or self.order_pk} ({self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in DONE


class Action(models.TextChoices):
    """What the shop asked for; the call that does it is chosen when it is sent."""

    TAKE_BACK = "take_back", "Take back all points"
    RETURN = "return", "Partial return"
    APPROVE = "approve", "Approve pending points"


class OperationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Retrying"
    CHECKING = "checking", "Answer lost: checking at Zinrelo"
    DONE = "done", "Done"
    INVALID = "invalid", "Invalid"
    REFUSED = "refused", "Refused by Zinrelo"
    FAILED = "failed", "Failed"


OPERATION_FINAL_FAILURES = frozenset(
    {OperationStatus.INVALID, OperationStatus.REFUSED, OperationStatus.FAILED}
)
OPERATION_WAITING = frozenset(
    {OperationStatus.PENDING, OperationStatus.RETRYING, OperationStatus.CHECKING}
)
UNSETTLED = OPERATION_WAITING | {OperationStatus.SENDING}


class OperationQuerySet(QuerySet["Operation"]):
    def due(self, now: datetime | None = None) -> OperationQuerySet:
        """Operations to send now, each after every earlier one of its order has settled.

        One at a time per order keeps "what is left" exact: a refund is checked against what the
        refunds before it took. Taking everything back may go as soon as its award is not in
        flight (it stops an award that has not left); the others wait until Zinrelo holds the
        award, or settle at once when it was cancelled before sending.
        """
        now = now or timezone.now()
        earlier = Operation.objects.filter(
            award=OuterRef("award"), pk__lt=OuterRef("pk"), status__in=UNSETTLED
        )
        return self.filter(
            Q(status__in=OPERATION_WAITING, next_attempt_at__lte=now)
            | Q(status=OperationStatus.SENDING, claimed_until__lt=now),
            Q(award__status__in=DONE | {Status.CANCELLED})
            | Q(action=Action.TAKE_BACK, award__status__in=WAITING | FINAL_FAILURES),
            ~Exists(earlier),
        )


class Operation(Outbox):
    """A cancellation, refund or approval that follows an award, recorded in the shop's own
    transaction and keyed so that recording it twice keeps one row (``key``)."""

    award = models.ForeignKey(
        Award, on_delete=models.CASCADE, related_name="operations", null=True, blank=True
    )
    order_model = models.CharField(max_length=100)
    order_pk = models.CharField("order primary key", max_length=255)
    action = models.CharField(max_length=16, choices=Action.choices)
    key = models.CharField(
        max_length=255, help_text="Unique per order: the refund id (and product), or the action."
    )
    refund_id = models.CharField("refund id", max_length=128, blank=True)
    product_id = models.CharField("product id", max_length=128, blank=True)
    quantity = models.DecimalField(max_digits=27, decimal_places=12, null=True, blank=True)
    amount = models.DecimalField(max_digits=27, decimal_places=12, null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=OperationStatus.choices, default=OperationStatus.PENDING
    )
    call = models.CharField(
        "call made", max_length=16, choices=Call.choices, blank=True, help_text="Blank: no call."
    )
    check_first = models.BooleanField(
        default=False,
        editable=False,
        help_text="A call's answer was lost: it is looked up before any new call.",
    )

    objects = OperationQuerySet.as_manager()

    class Meta:
        verbose_name = "Zinrelo operation"
        constraints = [
            models.UniqueConstraint(
                fields=["order_model", "order_pk", "key"], name="zinrelo_operation_once"
            )
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="zinrelo_operation_due"),
            models.Index(fields=["refund_id"], name="zinrelo_operation_refund"),
            models.Index(fields=["-created_at"], name="zinrelo_operation_created"),
        ]

    def __str__(self) -> str:
        what = f"refund {self.refund_id}" if self.refund_id else self.get_action_display()
        return f"{what} of order {self.order_pk} ({self.status})"


class AwardAttempt(models.Model):
    award = models.ForeignKey(Award, on_delete=models.CASCADE, related_name="attempts_log")
    operation = models.ForeignKey(
        Operation, on_delete=models.CASCADE, related_name="attempts_log", null=True, blank=True
    )
    kind = models.CharField("call", max_length=16, choices=Call.choices, default=Call.AWARD)
    created_at = models.DateTimeField(default=timezone.now)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    outcome = models.CharField(
        max_length=16, choices=[(o.value, o.value.replace("_", " ").capitalize()) for o in Outcome]
    )
    status_code = models.PositiveSmallIntegerField("HTTP status", null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField("duration (ms)", default=0)
    request_body = models.TextField(help_text="The JSON sent; headers are never stored.")
    response_body = models.TextField(blank=True, help_text="The first 4 KB of the answer.")

    class Meta:
        verbose_name = "Zinrelo award attempt"
        indexes = [
            models.Index(fields=["award", "-created_at"], name="zinrelo_attempt_award"),
            models.Index(fields=["-created_at"], name="zinrelo_attempt_created"),
            models.Index(fields=["outcome"], name="zinrelo_attempt_outcome"),
            models.Index(fields=["status_code"], name="zinrelo_attempt_http"),
            models.Index(fields=["error_code"], name="zinrelo_attempt_error"),
            models.Index(fields=["trigger"], name="zinrelo_attempt_trigger"),
            models.Index(fields=["kind"], name="zinrelo_attempt_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} {self.status_code or '-'} {self.error_code}".strip()


class SyncRun(models.Model):
    """When ``zinrelo_sync`` last ran: one row, written as each run starts and ends.

    Without a scheduled run, retries wait forever; the admin's health view warns when this row
    is older than a few minutes.
    """

    name = models.CharField(max_length=32, unique=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "zinrelo_sync run"

    def __str__(self) -> str:
        return f"{self.name} started {self.started_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def started(cls, name: str = "zinrelo_sync") -> None:
        cls.objects.update_or_create(
            name=name, defaults={"started_at": timezone.now(), "finished_at": None}
        )

    @classmethod
    def finished(cls, name: str = "zinrelo_sync") -> None:
        cls.objects.filter(name=name).update(finished_at=timezone.now())


def update_each(
    model: type[models.Model],
    fields: Sequence[str],
    keys: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """One parameterised ``UPDATE`` of ``model`` for many rows, each with its own values;
    returns the rows changed.

    Each row holds the values of ``fields`` then of ``keys``, which must all match. The ORM's
    ways, an ``update()`` per row or ``bulk_update``'s ``CASE`` of one branch per row, spend more
    time compiling than a chunk's calls to Zinrelo take.

    On PostgreSQL the rows are locked in primary key order, then changed by one statement (put
    the primary key first among ``keys``): every path that locks several rows locks them in that
    order, so that no two can wait on each other, and a join locks in whatever order its plan
    reads. Elsewhere (SQLite, which locks the whole database) it is the same ``UPDATE`` run once
    per row (``executemany``).
    """
    ordered = sorted(rows, key=lambda row: row[len(fields)])
    if not ordered:
        return 0
    if on_psycopg3():
        return update_from_json(model, tuple(fields), tuple(keys), ordered)
    meta = model._meta
    names = [*fields, *keys]
    prepared = [meta.get_field(name) for name in names]
    values = [
        [
            field.get_db_prep_save(value, connection)  # type: ignore[union-attr]
            for field, value in zip(prepared, row, strict=True)
        ]
        for row in ordered
    ]
    quote = connection.ops.quote_name
    column = {field.name: quote(str(field.column)) for field in meta.concrete_fields}
    assignments = ", ".join(f"{column[name]} = %s" for name in fields)
    matches = " AND ".join(f"{column[name]} = %s" for name in keys)
    # Names come from the model's own metadata, quoted; every value is a parameter.
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {matches}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)
        return int(cursor.rowcount)


def on_psycopg3() -> bool:
    """Whether the database is PostgreSQL through psycopg 3, whose ``COPY`` and result sets
    the bulk writes use (through psycopg2 they take the portable way)."""
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def update_from_json(
    model: type[models.Model],
    fields: tuple[str, ...],
    keys: tuple[str, ...],
    rows: list[Sequence[Any]],
) -> int:
    """``update_each`` on PostgreSQL: the rows it changes locked in key order, then one
    ``UPDATE`` joining them to their new values.

    The values travel as one JSON document, read by ``jsonb_to_recordset`` into the columns'
    own types: encoding it is one call into C, where preparing each value for the driver, and
    the driver quoting arrays of them (every quote of every stored payload escaped in Python),
    had been a large part of a bulk sync's own thread. Both statements go in one round trip
    where the driver binds on the client (Django's default), and PostgreSQL runs them as one
    transaction: that thread waits for the interpreter lock after every trip.
    """
    lock, update = update_statements(model, fields, keys)
    width = len(fields) + len(keys)
    aliases = [f"v{n}" for n in range(width)]
    given = to_json([dict(zip(aliases, row, strict=True)) for row in rows])
    keyed = aliases[len(fields) :]
    locked = to_json([dict(zip(keyed, row[len(fields) :], strict=True)) for row in rows])
    options = connection.settings_dict.get("OPTIONS") or {}
    with connection.cursor() as cursor:
        if options.get("server_side_binding"):
            with transaction.atomic(savepoint=False):
                cursor.execute(lock, [locked])
                cursor.execute(update, [given])
                return int(cursor.rowcount)
        cursor.execute(f"{lock}; {update}", [locked, given])
        cursor.nextset()
        return int(cursor.rowcount)


@lru_cache(maxsize=16)
def update_statements(
    model: type[models.Model], fields: tuple[str, ...], keys: tuple[str, ...]
) -> tuple[str, str]:
    """``update_from_json``'s lock and update, each reading one JSON parameter."""
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    fields_of = {field.name: field for field in meta.concrete_fields}
    column = {name: quote(str(field.column)) for name, field in fields_of.items()}

    def given(names: Sequence[str], start: int) -> str:
        # A column may be both set and matched (a claim given up where it still holds): the
        # values are named by position. Types come from the model's own fields.
        types = ", ".join(
            f"v{n} {fields_of[name].cast_db_type(connection)}"
            for n, name in enumerate(names, start=start)
        )
        return f"jsonb_to_recordset(%s::jsonb) AS v ({types})"

    matches = " AND ".join(
        f"{table}.{column[name]} = v.v{n}" for n, name in enumerate(keys, start=len(fields))
    )
    assignments = ", ".join(f"{column[name]} = v.v{n}" for n, name in enumerate(fields))
    # Names come from the model's own metadata, quoted; the values are one parameter. The lock
    # takes only the rows the update will change, as the update itself would.
    lock = (
        f"SELECT 1 FROM {table} JOIN {given(keys, len(fields))} ON {matches} "  # noqa: S608
        f"ORDER BY {table}.{column[keys[0]]} FOR NO KEY UPDATE OF {table}"
    )
    update = (
        f"UPDATE {table} SET {assignments} "  # noqa: S608
        f"FROM {given([*fields, *keys], 0)} WHERE {matches}"
    )
    return lock, update


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=json_scalar)


def json_scalar(value: Any) -> str:
    """The text PostgreSQL reads back into a time or UUID column."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a value update_each writes")
