"""Cancellations, refunds and approvals: what follows an award, carried to Zinrelo exactly once.

Each is an :class:`~django_zinrelo.models.Operation` row written in the shop's own transaction
(``record_refund``, a save of the refund model, an order saved into a cancelled or approving
status), keyed so that recording it again keeps one row, and delivered after commit through the
claim, record and retry path awards use (``delivery``); ``zinrelo_sync`` sweeps what is left.

Which call to make is decided when the operation is sent, from the award as Zinrelo holds it then:
points still pending are rejected, approved points are returned. Zinrelo's Return API does not
de-duplicate, so a call whose answer was lost is never sent again blindly: it is first looked up
among the member's transactions (each return carries its key as a tag), and only a call proven
absent is made again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any, Final
from urllib.parse import quote, urlencode

from django.apps import apps
from django.db import transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from django_zinrelo.adapters import RefundAdapter, RefundLine
from django_zinrelo.client import Outcome, Reply
from django_zinrelo.conf import UnknownStore, ZinreloSettings, get_settings
from django_zinrelo.delivery import (
    POINTS_RANGE,
    answer_was_lost,
    answered,
    award_figure,
    claim,
    client,
    deliver,
    enabled,
    finish,
    forget_locals,
    lease,
    may_claim,
    points,
    ready,
    release,
    retry_fields,
    settle,
)
from django_zinrelo.dispatch import submit
from django_zinrelo.models import (
    DONE,
    FINAL_FAILURES,
    OPERATION_FINAL_FAILURES,
    WAITING,
    Action,
    Award,
    AwardAttempt,
    Call,
    Operation,
    OperationQuerySet,
    OperationStatus,
    Status,
    Trigger,
)
from django_zinrelo.payloads import (
    DATE_FORMAT,
    InvalidOrder,
    money,
    required_text,
    shop_code,
    text,
)
from django_zinrelo.signals import operation_delivered, operation_failed

logger = logging.getLogger("django_zinrelo")

CANCEL_KEY: Final = "cancel"
APPROVE_KEY: Final = "approve"
REFUND_PREFIX: Final = "refund:"
# A look-up reads the member's transactions from a day before the operation was recorded: Zinrelo
# dates them when it received them, and clocks differ.
LOOKUP_MARGIN: Final = timedelta(days=1)
LOOKUP_PAGE: Final = 1000
LOOKUP_PAGES: Final = 20
# Points whose approval date is this close are treated as approved already: a reject sent now
# could arrive after Zinrelo approved them.
APPROVAL_MARGIN: Final = timedelta(minutes=5)
STOPPED: Final = "The award had not been sent: it is cancelled and will never be sent."
UNCONFIRMED: Final = (
    "An earlier call of the award may have reached Zinrelo without an answer, and the award "
    "ended {status}: Zinrelo may hold its points. Re-send the award, then this operation."
)
INVALID_REFUND: Final = "invalid_refund"


def order_label(order: Model, conf: ZinreloSettings | None = None) -> str:
    """The label awards are recorded under: ``ORDER_MODEL``'s, also for an order saved through
    a proxy or a subclass of it (see ``receivers``)."""
    label = (conf or get_settings()).order_model
    return model_label(label) if label else order._meta.label_lower


@lru_cache(maxsize=8)
def model_label(label: str) -> str:
    """``ORDER_MODEL`` as Django writes a model's label (any case in, lower case out); asked on
    every qualifying save."""
    return str(apps.get_model(label)._meta.label_lower)


def award_of(label: str, order_pk: str, conf: ZinreloSettings, using: str) -> Award | None:
    return (
        Award.objects.using(using)
        .filter(order_model=label, order_pk=order_pk, activity_id=conf.activity_id)
        .first()
    )


# Recording, in the shop's transaction


def record_refund(
    order: Model,
    refund_id: Any,
    *,
    amount: Any = None,
    lines: Iterable[RefundLine | tuple[Any, Any]] | None = None,
    using: str | None = None,
) -> list[Operation]:
    """Record a refund of ``order`` inside the caller's transaction; it is sent after commit.

    ``amount`` is the refunded value of goods (a ``Decimal``, on the basis the award was computed
    on); ``lines`` the refunded products as :class:`RefundLine` or ``(product_id, quantity)``;
    neither refunds the whole order. Recording the same ``refund_id`` again changes nothing.
    Never raises for bad input: such a refund is recorded ``invalid`` with the reason, and
    nothing is sent. Returns the rows as recorded (empty when the app is disabled).
    """
    return recorded(order, refund_id, amount, lines, using or order._state.db or "default")


def record_refund_of(adapter: RefundAdapter, refund: Model, using: str) -> list[Operation]:
    """Record a save of the shop's refund model that applies, read through its adapter: what
    the adapter raises while reading it makes that refund ``invalid`` with the reason, where staff
    see it, rather than a log line alone. Only an ``order()`` that raises leaves nothing to
    record the refund against; that is logged.

    The adapter runs in a savepoint: its queries (``lines()`` reads the refund's lines) may fail,
    and on PostgreSQL a failed statement would abort the shop's transaction.
    """
    with transaction.atomic(using=using):
        order = adapter.order(refund)
    refund_id: Any = None
    amount: Any = None
    lines: list[Any] = []
    problem = None
    try:
        with transaction.atomic(using=using):
            with shop_code("The refund adapter's refund_id()"):
                refund_id = adapter.refund_id(refund)
            with shop_code("The refund adapter's lines()"):
                lines = list(adapter.lines(refund))
            if not lines:
                with shop_code("The refund adapter's amount()"):
                    amount = adapter.amount(refund)
    except InvalidOrder as invalid:
        problem = invalid.reason
    return recorded(order, refund_id, amount, lines, using, problem)


def recorded(
    order: Model,
    refund_id: Any,
    amount: Any,
    lines: Iterable[RefundLine | tuple[Any, Any]] | None,
    using: str,
    problem: str | None = None,
) -> list[Operation]:
    """The rows of a refund, saved in a savepoint of the caller's transaction; ``problem``, why
    the shop's code could not say what was refunded."""
    conf = get_settings()
    if not enabled(conf):
        return []
    label, order_pk = order_label(order), str(order.pk)
    try:
        with transaction.atomic(using=using):
            award = award_of(label, order_pk, conf, using)
            rows = refund_rows(award, label, order_pk, refund_id, amount, lines, problem)
            save(rows, using, Trigger.REFUND)
    except Exception:
        logger.exception("Could not record refund %r of order %s for Zinrelo", refund_id, order_pk)
        return []
    return rows


def record_cancellation(order: Model, using: str) -> None:
    """The order is cancelled: take all its points back, or stop its award if it has not left."""
    take_back_or_approve(order, Action.TAKE_BACK, CANCEL_KEY, using)


def record_approval(order: Model, using: str) -> None:
    """The order reached the status that approves its pending points."""
    take_back_or_approve(order, Action.APPROVE, APPROVE_KEY, using)


def take_back_or_approve(order: Model, action: str, key: str, using: str) -> None:
    conf = get_settings()
    label, order_pk = order_label(order), str(order.pk)
    with transaction.atomic(using=using):  # a failure here must not abort the shop's transaction
        award = award_of(label, order_pk, conf, using)
        if award is None:  # never qualified, or not yet: nothing to take back or approve
            return
        base = {"award": award, "order_model": label, "order_pk": order_pk}
        save([Operation(**base, action=action, key=key)], using, Trigger.ORDER_SAVE)


def refund_rows(
    award: Award | None,
    label: str,
    order_pk: str,
    refund_id: Any,
    amount: Any,
    lines: Iterable[RefundLine | tuple[Any, Any]] | None,
    problem: str | None = None,
) -> list[Operation]:
    """The rows of one refund: one for an amount or the whole order, one per refunded product,
    or a single invalid row saying why nothing will be sent (``problem``, when it is known)."""
    base: dict[str, Any] = {"award": award, "order_model": label, "order_pk": order_pk}
    try:
        rid = required_text(refund_id, "refund id")
    except InvalidOrder as invalid:
        return [invalid_row(base, f"invalid:{uuid.uuid4()}", "", problem or invalid.reason)]
    key = REFUND_PREFIX + rid
    if len(rid) > 128:
        return [invalid_row(base, key[:255], rid[:128], "The refund id is over 128 characters.")]
    try:
        if problem is not None:
            raise InvalidOrder(problem)
        refunded = refund_lines(lines)
        if award is None:
            raise InvalidOrder(
                "The order has no Zinrelo award (it never qualified), so there are no points "
                "to take back."
            )
        if amount is not None and refunded:
            raise InvalidOrder("A refund gives an amount or lines, not both (Zinrelo takes one).")
        if refunded:
            return [
                Operation(
                    **base,
                    action=Action.RETURN,
                    key=f"{key}:{product_id}"[:255],
                    refund_id=rid,
                    product_id=product_id,
                    quantity=quantity,
                )
                for product_id, quantity in refunded.items()
            ]
        if amount is not None:
            return [
                Operation(
                    **base, action=Action.RETURN, key=key, refund_id=rid, amount=positive(amount)
                )
            ]
    except InvalidOrder as invalid:
        return [invalid_row(base, key, rid, invalid.reason)]
    return [Operation(**base, action=Action.TAKE_BACK, key=key, refund_id=rid)]


def invalid_row(base: dict[str, Any], key: str, refund_id: str, reason: str) -> Operation:
    return Operation(
        **base,
        action=Action.RETURN,
        key=key,
        refund_id=refund_id,
        status=OperationStatus.INVALID,
        last_error_code=INVALID_REFUND,
        last_reason=reason,
    )


def positive(value: Any, label: str = "refund amount") -> Decimal:
    amount = Decimal(money(value, label))
    if amount.is_zero():
        raise InvalidOrder(f"The {label} is zero: there is nothing to take back.")
    return amount


def refund_lines(lines: Iterable[RefundLine | tuple[Any, Any]] | None) -> dict[str, Decimal]:
    """Refunded quantity by product id; a product named twice counts once with both quantities."""
    refunded: dict[str, Decimal] = {}
    with shop_code("Reading the refund's lines"):
        given = list(lines or ())
    for number, line in enumerate(given, start=1):
        if isinstance(line, RefundLine):
            product_id, quantity = line.product_id, line.quantity
        elif isinstance(line, tuple | list) and len(line) == 2:
            product_id, quantity = line
        else:
            raise InvalidOrder(
                f"Refund line {number} is neither a RefundLine nor a (product id, quantity) pair: "
                f"{text(line)[:60]!r}."
            )
        pid = required_text(product_id, f"product id of refund line {number}")[:128]
        refunded[pid] = refunded.get(pid, Decimal(0)) + positive(
            quantity, f"quantity of refund line {number}"
        )
    return refunded


def maybe_sent(award: Award) -> bool:
    """Whether an award waiting or failed may be at Zinrelo all the same (an earlier call of it
    got no answer): it is then never stopped as unsent, or its points would stay there."""
    return award.status in WAITING | FINAL_FAILURES and answer_was_lost(award)


def save(rows: list[Operation], using: str, trigger: str) -> None:
    """Insert the rows (keeping any already recorded under the same key) and stop an award that
    has not left yet when everything is taken back; deliver after commit. Runs inside the
    caller's savepoint."""
    if not rows:
        return
    for row in rows:
        if row.action == Action.TAKE_BACK and row.award is not None and not maybe_sent(row.award):
            stopped = (
                Award.objects.using(using)
                .filter(pk=row.award.pk, status__in=WAITING | FINAL_FAILURES)
                .update(status=Status.CANCELLED, last_reason=STOPPED, claimed_until=None)
            )
            if stopped:
                row.status, row.last_reason = OperationStatus.DONE, STOPPED
    Operation.objects.using(using).bulk_create(rows, ignore_conflicts=True)
    transaction.on_commit(
        partial(submit, deliver_for_order, rows[0].order_model, rows[0].order_pk, trigger),
        using=using,
    )


# Delivering


def deliver_for_order(order_model: str, order_pk: str, trigger: str) -> Counter[str]:
    """After commit: settle the order's due operations, one after another, in their order."""
    return send_due_operations(
        Operation.objects.filter(order_model=order_model, order_pk=order_pk), trigger
    )


def send_due_operations(operations: OperationQuerySet, trigger: str) -> Counter[str]:
    """Deliver every due operation among ``operations`` until none is left due; returns how many
    ended in each status. Each settled operation may make the next of its order due."""
    counts: Counter[str] = Counter()
    tried: set[int] = set()
    while True:
        due = [
            pk
            for pk in operations.due()
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[:1000]
            if pk not in tried
        ]
        if not due:
            return counts
        for pk in due:
            tried.add(pk)
            operation = deliver_operation(pk, trigger)
            if operation is not None:
                counts[str(operation.status)] += 1


def deliver_operation(operation_id: int, trigger: str) -> Operation | None:
    """Send one operation if it is due and nobody else holds it; returns it in its new state."""
    conf = get_settings()
    if not may_claim(conf):
        return None
    claimed: list[Operation] = claim([operation_id], lease(conf, LOOKUP_PAGES + 2), Operation)
    if not claimed:
        return None
    operation = claimed[0]
    try:
        Settle(operation, trigger, conf).run()
    except Exception as error:
        forget_locals(error)
        logger.error(
            "Delivering Zinrelo operation %s failed unexpectedly; will try again",
            operation.pk,
            exc_info=error,
        )
        release([operation], conf, model=Operation)
        return None
    return operation


@dataclass
class Ledger:
    """An order's points as the app knows them: awarded, and what its operations took back."""

    awarded: int | None
    pending: bool
    rejected: int = 0
    returned: int = 0
    taken_back: bool = False
    value: Decimal = Decimal(0)
    value_returned: Decimal = Decimal(0)
    bought: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    units_returned: dict[str, Decimal] = field(default_factory=dict)

    @property
    def left(self) -> int | None:
        if self.taken_back:
            return 0
        return None if self.awarded is None else self.awarded - self.rejected - self.returned

    @property
    def value_left(self) -> Decimal:
        return Decimal(0) if self.taken_back else self.value - self.value_returned


def ledger(award: Award, now: datetime | None = None) -> Ledger:
    """What the award earned and what its settled operations took back."""
    payload = award.payload or {}
    attributes = payload.get("transaction_attributes") or {}
    products = attributes.get("products") or []
    bought = {
        str(line["product_id"]): (Decimal(line["product_quantity"]), Decimal(line["product_price"]))
        for line in products
    }
    value = (
        sum((quantity * price for quantity, price in bought.values()), Decimal(0))
        if bought
        else Decimal(attributes.get("order_subtotal") or 0)
    )
    book = Ledger(award.points, pending(award, now), value=value, bought=bought)
    settled = award.operations.filter(status=OperationStatus.DONE).exclude(call="")
    for operation in settled.order_by("pk"):
        if operation.call == Call.APPROVE:
            book.pending = False
        elif operation.action == Action.TAKE_BACK or is_full_return(operation):
            book.taken_back = True
            book.rejected += abs(operation.points or 0) if operation.call == Call.REJECT else 0
            book.returned += abs(operation.points or 0) if operation.call == Call.RETURN else 0
        else:
            book.returned += abs(operation.points or 0)
            book.value_returned += returned_value(operation, bought)
            if operation.product_id:
                book.units_returned[operation.product_id] = book.units_returned.get(
                    operation.product_id, Decimal(0)
                ) + (operation.quantity or 0)
    return book


def is_full_return(operation: Operation) -> bool:
    """A return sent with the order id alone takes everything that was left."""
    sent = (operation.payload or {}).get("transaction_attributes") or {}
    return operation.call == Call.RETURN and not (
        "returned_amount" in sent or "returned_product_id" in sent
    )


def returned_value(operation: Operation, bought: dict[str, tuple[Decimal, Decimal]]) -> Decimal:
    if operation.product_id:
        _, price = bought.get(operation.product_id, (Decimal(0), Decimal(0)))
        return price * (operation.quantity or 0)
    return operation.amount or Decimal(0)


def pending(award: Award, now: datetime | None = None) -> bool:
    """Whether the award's points are still pending at Zinrelo (they can be rejected)."""
    if award.points_status and award.points_status != "pending":
        return False
    approval = (award.payload or {}).get("approval_date")
    if not approval:
        return False
    try:
        when = datetime.strptime(approval, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return False
    return when > (now or timezone.now()) + APPROVAL_MARGIN


@dataclass(frozen=True)
class Local:
    """Settled without a call: ``status`` and why."""

    status: str
    reason: str


@dataclass(frozen=True)
class Request:
    call: str
    method: str
    url: str
    body: str | None


class Settle:
    """One claimed operation, from its award's state to the call it needs and its answer."""

    def __init__(self, operation: Operation, trigger: str, conf: ZinreloSettings) -> None:
        self.operation = operation
        self.trigger = trigger
        self.conf = conf

    def run(self) -> None:
        operation = self.operation
        award = operation.award
        if award is None:
            self.local(Local(OperationStatus.INVALID, "The order has no Zinrelo award."))
            return
        if maybe_sent(award):
            award = self.confirm(award)
            if award is None:
                return
        if award.status not in DONE:
            outcome = self.before_award(award)
            if outcome is None:  # the award was claimed meanwhile: try again once it is settled
                release([operation], self.conf, retry=False, model=Operation)
            else:
                self.local(outcome)
            return
        try:  # the award's store: its calls go with its credentials, to its API URL
            self.conf = self.conf.for_store(award.store)
        except UnknownStore as unknown:
            self.local(Local(OperationStatus.INVALID, str(unknown)))
            return
        if not ready(self.conf):  # reported once; due again when the store has its credentials
            release([operation], self.conf, retry=False, model=Operation)
            return
        if operation.check_first and not self.absent(award):
            return
        plan = self.plan(award)
        if isinstance(plan, Local):
            self.local(plan)
        else:
            self.send(plan)

    # Deciding

    def confirm(self, award: Award) -> Award | None:
        """An award whose earlier call may have reached Zinrelo unanswered is sent again when
        due, and Zinrelo's duplicate check says whether it holds it; once awarded, it is taken
        back like any other. Until then the operation waits; an award that ended without an
        answer saying so fails the operation, for staff to re-send the award first."""
        if award.status in FINAL_FAILURES:
            self.local(Local(OperationStatus.FAILED, UNCONFIRMED.format(status=award.status)))
            return None
        sent = deliver(award.pk, self.trigger)
        if sent is None or sent.status not in DONE:
            release([self.operation], self.conf, model=Operation)
            return None
        return sent

    def before_award(self, award: Award) -> Local | None:
        """The award never reached Zinrelo: taking back stops it for good; the rest has nothing
        to do (``due`` brings returns and approvals here only once it is cancelled)."""
        if award.status != Status.CANCELLED:
            stopped = Award.objects.filter(pk=award.pk, status__in=WAITING | FINAL_FAILURES).update(
                status=Status.CANCELLED, last_reason=STOPPED, claimed_until=None
            )
            return Local(OperationStatus.DONE, STOPPED) if stopped else None
        return Local(
            OperationStatus.DONE,
            "Nothing to do: the award was cancelled before it was sent, so no points were given.",
        )

    def plan(self, award: Award) -> Local | Request:
        operation = self.operation
        book = ledger(award)
        if operation.action == Action.APPROVE:
            if not book.pending:
                return Local(OperationStatus.DONE, "Nothing to do: the points are not pending.")
            return self.transaction_call(award, Call.APPROVE)
        if book.taken_back:
            if operation.action == Action.TAKE_BACK:
                return Local(OperationStatus.DONE, "Nothing to do: the points were taken back.")
            return Local(
                OperationStatus.INVALID,
                "Nothing is left to return: the order's points were already taken back.",
            )
        if operation.action == Action.TAKE_BACK:
            if operation.call == Call.RETURN or not book.pending:
                return self.return_call(award, {})
            return self.transaction_call(award, Call.REJECT)
        return self.partial_return(award, book)

    def partial_return(self, award: Award, book: Ledger) -> Local | Request:
        operation = self.operation
        if operation.product_id:
            if operation.product_id not in book.bought:
                return Local(
                    OperationStatus.INVALID,
                    f"Product {operation.product_id!r} is not in the order sent to Zinrelo.",
                )
            bought, _ = book.bought[operation.product_id]
            left = bought - book.units_returned.get(operation.product_id, Decimal(0))
            quantity = operation.quantity or Decimal(0)
            if quantity > left:
                return Local(
                    OperationStatus.INVALID,
                    f"The refund returns {quantity.normalize():f} of product "
                    f"{operation.product_id!r}, but only {left.normalize():f} of "
                    f"{bought.normalize():f} bought are left.",
                )
            return self.return_call(
                award,
                {
                    "returned_product_id": operation.product_id,
                    "returned_product_quantity": format(quantity.normalize(), "f"),
                },
            )
        amount = operation.amount or Decimal(0)
        left_value = book.value_left
        if amount > left_value:
            return Local(
                OperationStatus.INVALID,
                f"The refund amount {amount.normalize():f} is more than what is left of the "
                f"order ({left_value.normalize():f} of {book.value.normalize():f}).",
            )
        if amount == left_value:  # everything left: a full return leaves no rounding behind
            return self.return_call(award, {})
        return self.return_call(award, {"returned_amount": format(amount.normalize(), "f")})

    def return_call(self, award: Award, attributes: dict[str, str]) -> Request:
        operation = self.operation
        payload = award.payload or {}
        tag = operation.key
        body = {
            "member_id": award.member_id or payload.get("member_id"),
            "activity_id": payload.get("activity_id") or award.activity_id,  # the store's
            "transaction_attributes": {
                "order_id": award.order_id,
                **attributes,
                "tags": [tag],
                "reason": f"Refund {operation.refund_id}"
                if operation.refund_id
                else "Order cancelled",
            },
        }
        return Request(
            Call.RETURN,
            "POST",
            self.conf.url(self.conf.return_path),
            json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        )

    def transaction_call(self, award: Award, call: str) -> Request:
        path = self.conf.transaction_path.format(id=quote(award.order_id, safe=""), action=call)
        return Request(call, "POST", self.conf.url(path) + "?idParam=order_id", "")

    # Looking up a call whose answer was lost

    def absent(self, award: Award) -> bool:
        """Whether the call whose answer was lost is proven absent at Zinrelo; when it is there,
        the operation is recorded as done with what Zinrelo holds, and False is returned."""
        operation = self.operation
        call = operation.call
        if call not in (Call.RETURN, Call.REJECT, Call.APPROVE):
            return True
        kind = "deduct" if call == Call.RETURN else "award"
        since = (operation.created_at if call == Call.RETURN else award.created_at) - LOOKUP_MARGIN
        query: dict[str, Any] = {
            "idParam": "member_id",
            "count": LOOKUP_PAGE,
            "transaction_type": kind,
            "created_date": json.dumps({"gte": since.astimezone(UTC).strftime("%m/%d/%Y")}),
        }
        path = self.conf.member_transactions_path.format(member_id=quote(award.member_id, safe=""))
        start: int = 0
        for _ in range(LOOKUP_PAGES):
            url = self.conf.url(path) + "?" + urlencode({**query, "start_index": start})
            if not self.in_time():
                release([operation], self.conf, retry=False, model=Operation)
                return False
            reply = client(self.conf).get(url)
            self.attempt(Call.LOOKUP, f"GET {url.split('://', 1)[-1]}", reply)
            if reply.outcome is not Outcome.AWARDED:
                self.retry(reply, f"Looking up the earlier call failed: {reply.reason}")
                return False
            transactions = reply.data.get("transactions")
            if not isinstance(transactions, list):  # no list is no proof of absence
                self.retry(
                    None, "Looking up the earlier call failed: the answer lists no transactions."
                )
                return False
            for found in transactions:
                if isinstance(found, dict) and self.matches(found, call, award):
                    self.found(found, call)
                    return False
            following = reply.data.get("next_start_index")
            if not reply.data.get("more") or not isinstance(following, int) or following <= start:
                return True
            start = following
        self.retry(None, f"Looking up the earlier call read {LOOKUP_PAGES} pages without an end.")
        return False

    def matches(self, found: dict[str, Any], call: str, award: Award) -> bool:
        attributes = found.get("transaction_attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        if call == Call.RETURN:
            tags = attributes.get("tags")
            tags = [tags] if isinstance(tags, str) else tags if isinstance(tags, list) else []
            order = found.get("returned_for_order_id") or attributes.get("order_id")
            return self.operation.key in tags and str(order) == award.order_id
        if str(attributes.get("order_id")) != award.order_id:
            return False
        wanted = {"rejected"} if call == Call.REJECT else {"approved", "auto_approved"}
        return str(found.get("points_status")) in wanted

    def found(
        self,
        transaction: dict[str, Any],
        call: str,
        reason: str = "Found at Zinrelo after its answer was lost; not sent again.",
    ) -> None:
        self.finish(
            {
                "status": OperationStatus.DONE,
                "call": call,
                "check_first": False,
                "points": points_of(transaction),
                "points_status": str(award_figure(transaction, "points_status") or "")[:32],
                "transaction_id": str(transaction.get("id") or "")[:64],
                "last_reason": reason,
                "last_error_code": "",
            }
        )

    # Calling and recording

    def in_time(self) -> bool:
        """Whether a call made now ends before the claim does (see ``delivery.call``)."""
        budget = timedelta(seconds=self.conf.connect_timeout + self.conf.read_timeout)
        until = self.operation.claimed_until
        return until is not None and timezone.now() + budget < until

    def send(self, request: Request) -> None:
        operation = self.operation
        if not self.in_time():
            release([operation], self.conf, retry=False, model=Operation)
            return
        # Written before the call: a crash after it leaves the operation to be looked up first.
        sent = json.loads(request.body) if request.body else None
        Operation.objects.filter(pk=operation.pk, claim=operation.claim).update(
            check_first=True, call=request.call, payload=sent
        )
        operation.check_first, operation.call, operation.payload = True, request.call, sent
        reply = client(self.conf).request(request.method, request.url, request.body)
        body = request.body or f"{request.method} {request.url.split('://', 1)[-1]}"
        self.attempt(request.call, body, reply)
        if reply.outcome is Outcome.AWARDED:
            self.found(reply.data, request.call, reason="")
        elif reply.outcome in (Outcome.RETRYABLE, Outcome.STORE_PROBLEM):
            self.retry(reply, reply.reason)
        elif request.call == Call.REJECT and reply.status_code == 400:
            # Not pending any more (approved meanwhile): what is left is returned instead.
            self.finish(
                {
                    "status": OperationStatus.RETRYING,
                    "call": Call.RETURN,
                    "check_first": False,
                    **answer_fields(reply),
                }
            )
        elif reply.error_code == "TRANSACTION_ATTRIBUTE_NOT_UNIQUE" and request.call == Call.RETURN:
            self.finish(
                {
                    "status": OperationStatus.DONE,
                    "check_first": False,
                    **answer_fields(reply),
                    "last_reason": "Zinrelo already holds this return (its tag is unique there).",
                }
            )
        else:
            self.finish(
                {"status": OperationStatus.REFUSED, "check_first": False, **answer_fields(reply)}
            )

    def attempt(self, call: str, body: str, reply: Reply) -> None:
        """The attempt log's row for one call, written on its own: evidence outlives a failure
        to record the operation's new state."""
        operation = self.operation
        assert operation.award_id is not None, "only operations of an award make calls"
        AwardAttempt.objects.create(
            award_id=operation.award_id,
            operation=operation,
            kind=call,
            trigger=self.trigger,
            outcome=reply.outcome.value,
            status_code=reply.status_code,
            error_code=reply.error_code[:64],
            reason=reply.reason,
            duration_ms=reply.duration_ms,
            request_body=body,
            response_body=reply.body,
        )
        operation.attempts += 1

    def retry(self, reply: Reply | None, reason: str) -> None:
        """Try again later, with the awards' backoff and retry budget; an operation whose call
        may have arrived waits as ``checking``, to be looked up first."""
        operation = self.operation
        failure = reply or Reply(Outcome.RETRYABLE, None, reason=reason)
        fields = {
            **answer_fields(failure),
            "last_reason": reason,
            **retry_fields(operation, operation.attempts, failure, self.conf),
        }
        if fields["status"] == Status.RETRYING and operation.check_first:
            # A call whose answer was lost may still be running at Zinrelo: a look-up made
            # before it lands would find nothing, and the call would be made twice.
            fields["status"] = OperationStatus.CHECKING
            settled = timezone.now() + timedelta(seconds=self.conf.lookup_after)
            fields["next_attempt_at"] = max(fields["next_attempt_at"], settled)
        self.finish(fields)

    def local(self, outcome: Local) -> None:
        error_code = INVALID_REFUND if outcome.status == OperationStatus.INVALID else ""
        self.finish(
            {"status": outcome.status, "last_reason": outcome.reason, "last_error_code": error_code}
        )
        if outcome.status == OperationStatus.INVALID:
            logger.error(
                "Zinrelo operation %s (order %s) will not be sent: %s",
                self.operation.pk,
                self.operation.order_pk,
                outcome.reason,
            )

    def finish(self, fields: dict[str, Any]) -> None:
        operation = self.operation
        change = (operation, answered({**fields, "attempts": operation.attempts}))
        finish([change], model=Operation)
        settle([change])
        announce(operation)


def answer_fields(reply: Reply) -> dict[str, Any]:
    return {
        "last_status_code": reply.status_code,
        "last_error_code": reply.error_code,
        "last_reason": reply.reason,
    }


def points_of(transaction: dict[str, Any]) -> int | None:
    """Points a transaction moved, as a positive figure (deductions may be signed), read as an
    award's are (``delivery.points``)."""
    number = points(award_figure(transaction, "points"))
    return None if number is None or number == POINTS_RANGE.start else abs(number)


def announce(operation: Operation) -> None:
    if operation.status == OperationStatus.DONE:
        signal = operation_delivered
    elif operation.status in OPERATION_FINAL_FAILURES:
        signal = operation_failed
        logger.error(
            "Zinrelo operation %s (order %s) ended %s: %s",
            operation.pk,
            operation.order_pk,
            operation.status,
            operation.last_reason,
        )
    else:
        return
    for _receiver, result in signal.send_robust(sender=Operation, operation=operation):
        if isinstance(result, Exception):
            logger.error("A receiver of %s raised %s: %s", signal, type(result).__name__, result)


# Re-sending from the admin or zinrelo_sync --failed


def reset_operations(operations: QuerySet[Operation]) -> list[int]:
    """Give final failures a fresh start; one whose call may have arrived is looked up first.
    None while the app is switched off.

    Invalid refunds recorded without an award stay as they are: nothing can send them.
    """
    if not enabled(get_settings()):
        return []
    ids = list(
        operations.filter(status__in=OPERATION_FINAL_FAILURES, award__isnull=False).values_list(
            "pk", flat=True
        )
    )
    Operation.objects.filter(pk__in=ids).update(
        status=OperationStatus.PENDING, attempts=0, next_attempt_at=timezone.now()
    )
    return ids


def resend_operations(operations: QuerySet[Operation], trigger: str) -> int:
    """Reset final failures among ``operations`` and deliver them after commit."""
    ids = reset_operations(operations)
    orders = set(Operation.objects.filter(pk__in=ids).values_list("order_model", "order_pk"))

    def send() -> None:
        for order_model, order_pk in orders:
            submit(deliver_for_order, order_model, order_pk, trigger)

    if orders:
        transaction.on_commit(send)
    return len(ids)
