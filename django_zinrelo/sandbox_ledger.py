"""Zinrelo's rules without HTTP: the ledger both stand-ins answer from.

The sandbox (:mod:`django_zinrelo.sandbox`) puts HTTP, credentials and faults around it; the testing
kit (:mod:`django_zinrelo.testing`) calls it in the test's process. One set of rules, so a test on
either answers alike. Standard library only and no Django import, for the sandbox's sake.

**Points.** A purchase earns one point per whole unit of its *basis*, floored: the sum of its
products' ``product_price * product_quantity``, or ``order_subtotal`` when no products are sent, or
the subtotal when it is lower than the products' sum (the discount is missing from the prices and
Zinrelo prorates down, seeds/004). An award whose basis floors to zero is recorded with 0 points:
Zinrelo publishes no code for it.

**Returns** deduct points in proportion to the value returned:
``floor(award points * returned value / basis)``, where the value is ``returned_amount``, or the
returned units' ``product_price * quantity`` (prorated like the award when the subtotal was lower).
A return with neither takes everything left, and so does a return of all the value left, so no point
is stranded by rounding. Returns are **not** idempotent: the same body twice deducts twice. A
return from a pending award is ``pending_deduction`` and comes out of the pending points; from an
approved one it is ``deducted`` from the available balance, and is refused with
``RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE`` when the member has spent them. A rejected award, or one
with no value left, answers ``INVALID_AMOUNT_TO_DEDUCT`` (nothing left to deduct).

**Approval.** An award sent with ``approval_date`` is ``pending`` until that date (UTC) has passed,
then ``approved``; the change is made lazily, whenever the ledger is read or written, so the award's
own answer still says ``pending``. Without ``approval_date`` it is ``auto_approved``. ``reject``
ends a pending award (its pending points are gone, the balance is untouched), ``approve`` moves it
into the available balance, ``reverse`` deducts all that is left of an approved award.

Every answer uses the codes and wording of the seed's table (seeds/000); a wrong state, for which
Zinrelo publishes no code, is ``INVALID_REQUEST_PARAMETER_VALUES`` with a reason naming the state.
"""

from __future__ import annotations

import copy
import heapq
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import unquote

PURCHASE: Final = "made_a_purchase"

# Zinrelo's own wording (seeds/000), so a shop's admin shows what production would show.
REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "MEMBER_BLOCKED": "Member has been blocked.",
        "MEMBER_DELETED": "Member record has been deleted.",
        "EXCLUDED_TRANSACTION": "Points could not be awarded because exclusion rule was applied.",
        "PAUSED_ACTIVITY": "Activity is in paused state.",
        "MAX_AWARDS_EXCEEDED": "Maximum award limit exceeded.",
        "INVALID_MEMBER_STATUS": "Invalid member status.",
        "INCORRECT_MEMBER_ID_PASSED": "Incorrect Member ID passed.",
        "INVALID_MEMBER": "Member does not exist.",
        "STORE_INACTIVE": "Store is not active.",
        "TRANSACTION_ATTRIBUTE_NOT_UNIQUE": (
            "Unique transaction attribute for given activity is not unique."
        ),
        "DUPLICATE_ORDER_ID": "Loyalty Points already awarded for the Order ID.",
        "MEMBER_ID_ALREADY_IN_USE": "Member ID already in use.",
        "ORDER_NOT_EXIST": "Order with this id does not exist.",
        "PRODUCT_QUANTITY_EXCEEDED": "Returned product quantity exceeds order quantity.",
        "INVALID_PRODUCT_ID": "Incorrect product id passed.",
        "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE": (
            "Returned order value exceeds user's points balance."
        ),
        "PRODUCT_ID_AND_RETURN_AMOUNT_PASSED": (
            "Please pass either returned product id or returned amount."
        ),
        "INVALID_AMOUNT_TO_DEDUCT": "Not enough points to deduct.",
        "TRANSACTION_DOES_NOT_EXIST": "Transaction does not exist.",
        "ID_PARAM_NAME_NOT_FOUND": "IdParams name passed does not exist.",
        "INVALID_CURSOR": "Invalid start cursor provided",
    }
)

DATE_FIELDS: Final = ("transaction_date", "approval_date", "expiration_date")
DATE_FORMAT: Final = "%m/%d/%Y %H:%M:%S"
DAY_FORMAT: Final = "%m/%d/%Y"
# strptime alone would also take "1/5/2019 1:2:3"; Zinrelo documents two digits everywhere.
DATE_SHAPE: Final = re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d")
DAY_SHAPE: Final = re.compile(r"\d\d/\d\d/\d{4}")
MIN_SUBTOTAL: Final = Decimal("0.01")
PRODUCT_FIELDS: Final = ("product_id", "product_quantity", "product_price", "product_title")
APPROVED: Final = frozenset({"approved", "auto_approved"})
ACTIONS: Final = ("reject", "approve", "reverse")
DONE: Final = {"reject": "rejected", "approve": "approved", "reverse": "reversed"}
DEFAULT_COUNT: Final = 100
MAX_COUNT: Final = 1000


class ZinreloError(Exception):
    """An answer in Zinrelo's error shape, raised from deep in the rules."""

    def __init__(self, status: int, error_code: str | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error_code = error_code
        self.reason = reason

    def payload(self) -> dict[str, Any]:
        if self.error_code is None:  # a plain HTTP error: Zinrelo's table has no code for it
            return {"success": False, "reason": self.reason}
        return {"success": False, "error_code": self.error_code, "reason": self.reason}


def invalid(detail: str) -> ZinreloError:
    return ZinreloError(
        400, "INVALID_REQUEST_PARAMETER_VALUES", f"Invalid request parameter value: {detail}"
    )


def refused(error_code: str, reason: str | None = None, status: int = 200) -> ZinreloError:
    text = reason or REASONS.get(error_code, f"Refused by the sandbox's rules ({error_code}).")
    return ZinreloError(status, error_code, text)


def not_found() -> ZinreloError:
    """An unknown path: HTTP's own 404 (seeds/000's standard codes), with no Zinrelo code."""
    return ZinreloError(404, None, "The resource does not exist.")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes | str | None) -> dict[str, Any]:
    """A request's JSON object, numbers as Decimal (never float, never NaN)."""
    if body is None:
        raise ZinreloError(
            400, "INVALID_REQUEST", "Invalid request: the body needs a Content-Length."
        )
    try:
        parsed = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        parsed = None
    if not isinstance(parsed, dict):
        raise ZinreloError(400, "INVALID_JSON", "Invalid JSON format.")
    return parsed


def encode(payload: Mapping[str, Any]) -> str:
    # Numbers in a request are parsed as Decimal; echoed back, they go out as strings.
    return json.dumps(payload, default=str)


def _text(container: Mapping[str, Any], name: str) -> str:
    """A mandatory identifier: a non-empty string (an integer is accepted as its decimal form)."""
    value = container.get(name)
    if value is None or value == "":
        raise invalid(f"{name} is mandatory.")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise invalid(f"{name} must be a string.")
    return str(value)


def _number(value: Any) -> Decimal | None:
    """Money and quantities, exact and finite; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _decimal(value: Any, name: str) -> Decimal:
    number = _number(value)
    if number is None:
        raise invalid(f"{name} must be a finite number, not {value!r}.")
    return number


def _quantity(value: Any, name: str) -> Decimal:
    """Units above zero: whole ones, or parts of one for goods sold by weight (Zinrelo's guides
    accept decimals)."""
    number = _number(value)
    if number is None or number <= 0:
        raise invalid(f"{name} must be a number above zero, not {value!r}.")
    return number


def _date(body: Mapping[str, Any], name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and DATE_SHAPE.fullmatch(value):
        try:
            return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise invalid(f"{name} must be a date in the format MM/DD/YYYY HH:MM:SS (UTC), not {value!r}.")


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


@dataclass(slots=True)
class _Line:
    """One product line of an award, with the units not yet returned."""

    product_id: str
    left: Decimal
    value: Decimal  # one unit's share of the basis


def _purchase(attributes: Mapping[str, Any]) -> tuple[Decimal, list[_Line]]:
    """The basis points are computed on, and the product lines, checking the attributes."""
    for name in ("order_id", "order_total", "order_subtotal"):
        if attributes.get(name) in (None, ""):
            raise invalid(f"{name} is mandatory in transaction_attributes for {PURCHASE}.")
    _decimal(attributes["order_total"], "order_total")
    subtotal = _decimal(attributes["order_subtotal"], "order_subtotal")
    if subtotal <= MIN_SUBTOTAL:
        raise invalid(f"order_subtotal should be greater than {MIN_SUBTOTAL}.")
    products = attributes.get("products")
    if products is None or products == []:
        return subtotal, []
    if not isinstance(products, list):
        raise invalid("products must be a list.")
    bought: list[tuple[str, Decimal, Decimal]] = []
    for number, product in enumerate(products, start=1):
        where = f" of product {number}"
        if not isinstance(product, dict):
            raise invalid(f"product {number} must be an object.")
        for name in PRODUCT_FIELDS:
            if product.get(name) in (None, ""):
                raise invalid(f"{name} is mandatory for each product; missing{where}.")
        price = _decimal(product["product_price"], f"product_price{where}")
        if price < 0:
            raise invalid(f"product_price{where} must not be negative.")
        quantity = _quantity(product["product_quantity"], f"product_quantity{where}")
        bought.append((str(product["product_id"]), quantity, price))
    total = sum((price * quantity for _, quantity, price in bought), Decimal(0))
    basis = min(total, subtotal)
    scale = basis / total if total else Decimal(0)
    return basis, [_Line(pid, quantity, price * scale) for pid, quantity, price in bought]


def purchase_points(attributes: Mapping[str, Any]) -> int:
    """The points a made_a_purchase earns (see the module's docstring); checks the attributes."""
    return _floor(_purchase(attributes)[0])


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(DATE_FORMAT)


@dataclass(slots=True)
class _Award:
    transaction: dict[str, Any]  # as listed and answered; its points_status changes
    request: dict[str, Any]
    points: int
    basis: Decimal
    lines: list[_Line]
    approval: datetime | None
    value_left: Decimal
    returned: int = 0
    rejected: int = 0
    deductions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return str(self.transaction["order_id"])

    @property
    def member_id(self) -> str:
        return str(self.transaction["member_id"])

    @property
    def status(self) -> str:
        return str(self.transaction["points_status"])

    @property
    def left(self) -> int:
        return 0 if self.status == "rejected" else self.points - self.returned


@dataclass(frozen=True, slots=True)
class Call:
    """Which operation a request is: from its method and its path below ``/v2/loyalty/``."""

    action: str
    target: str | None = None  # the transaction, order or member id in the path
    writes: bool = False
    has_body: bool = False

    @property
    def lists(self) -> bool:
        return self.action in ("transactions", "member_transactions")


def route(method: str, path: str) -> Call | None:
    """The operation at ``path`` (still URL-encoded, relative to the API base), or None."""
    parts = [unquote(part) for part in path.split("/")]
    if method == "POST" and parts == ["transactions", "award"]:
        return Call("award", writes=True, has_body=True)
    if method == "POST" and parts == ["transactions", "return"]:
        return Call("return", writes=True, has_body=True)
    if method == "POST" and len(parts) == 3 and parts[0] == "transactions" and parts[2] in ACTIONS:
        return Call(parts[2], parts[1], writes=True)
    if method == "GET" and parts == ["transactions"]:
        return Call("transactions")
    if method == "POST" and parts == ["members"]:
        return Call("create_member", has_body=True)
    if method == "GET" and len(parts) == 2 and parts[0] == "members":
        return Call("member", parts[1])
    if method == "GET" and len(parts) == 3 and parts[0] == "members" and parts[2] == "transactions":
        return Call("member_transactions", parts[1])
    return None


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _id_param(query: Mapping[str, list[str]], allowed: str, default: str) -> str:
    value = _one(query, "idParam") or default
    if value not in (allowed, default):
        raise refused("ID_PARAM_NAME_NOT_FOUND", status=400)
    return value


def _bound(text: Any, *, end_of_day: bool) -> datetime:
    """One date of a filter: a whole day (its start, or the start of the next) or a moment."""
    if isinstance(text, str) and DAY_SHAPE.fullmatch(text):
        try:
            day = datetime.strptime(text, DAY_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
        else:
            return day + timedelta(days=1) if end_of_day else day
    if isinstance(text, str) and DATE_SHAPE.fullmatch(text):
        try:
            return datetime.strptime(text, DATE_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            pass
    raise invalid(f"{text!r} is not a date MM/DD/YYYY (or MM/DD/YYYY HH:MM:SS), UTC.")


def _date_filter(name: str, raw: str) -> Callable[[datetime | None], bool]:
    """``{"gte": "12/01/2026"}`` and its kin (gt, lte, lt, between: ``"a-b"``, both days in)."""
    try:
        spec = json.loads(raw)
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or len(spec) != 1:
        raise invalid(f'{name} must be one JSON operator such as {{"gte": "12/01/2026"}}.')
    [(operator, value)] = spec.items()
    if operator == "between":
        first, dash, last = str(value).partition("-")
        if not dash:
            raise invalid(f'{name} between takes "MM/DD/YYYY-MM/DD/YYYY".')
        low, high = _bound(first, end_of_day=False), _bound(last, end_of_day=True)
        return lambda when: when is not None and low <= when < high
    tests: dict[str, tuple[bool, Callable[[datetime, datetime], bool]]] = {
        "gte": (False, lambda when, bound: when >= bound),
        "gt": (True, lambda when, bound: when >= bound),
        "lte": (True, lambda when, bound: when < bound),
        "lt": (False, lambda when, bound: when < bound),
    }
    if operator not in tests:
        raise invalid(f"{name} operator {operator!r} is not one of gte, gt, lte, lt, between.")
    end_of_day, test = tests[operator]
    bound = _bound(value, end_of_day=end_of_day)
    return lambda when: when is not None and test(when, bound)


Check = Callable[[Mapping[str, Any]], bool]


def _equals(name: str, wanted: str | None) -> Check:
    return lambda transaction: not wanted or transaction.get(name) == wanted


def _dated(name: str, raw: str | None) -> Check:
    if not raw:
        return lambda transaction: True
    within = _date_filter(name, raw)

    def check(transaction: Mapping[str, Any]) -> bool:
        text = transaction.get(name)
        return within(datetime.strptime(text, DATE_FORMAT).replace(tzinfo=UTC) if text else None)

    return check


class ZinreloLedger:
    """Awards, returns, members and their balances, behind one lock.

    ``handle`` answers a request as Zinrelo would (an HTTP status and a JSON payload, or a raised
    :class:`ZinreloError`); the other public methods are the inspection API of the two stand-ins.
    Everything they return is a copy.
    """

    def __init__(
        self,
        *,
        refusals: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        unique_attributes: Iterable[str] = (),
    ) -> None:
        self.refusals: Mapping[str, str] = MappingProxyType(dict(refusals or {}))
        # A store can make transaction attributes unique for an activity: a second award with
        # the same value is then refused TRANSACTION_ATTRIBUTE_NOT_UNIQUE, before the duplicate
        # order id check (which is what a re-sent award meets at such a store).
        self.unique_attributes = tuple(unique_attributes)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._empty()

    def reset(self) -> None:
        with self._lock:
            self._empty()

    def _empty(self) -> None:
        self._awards: dict[str, _Award] = {}
        self._accepted: dict[str, list[dict[str, Any]]] = {}  # order id -> each accepted body
        self._transactions: list[dict[str, Any]] = []  # every transaction, oldest first
        self._by_id: dict[str, dict[str, Any]] = {}
        self._awards_by_id: dict[str, _Award] = {}
        self._members: dict[str, dict[str, Any]] = {}
        self._by_member: dict[str, list[_Award]] = {}
        self._spent: dict[str, int] = {}
        self._used: set[tuple[str, str]] = set()  # (name, value) of the unique attributes
        # (approval date, sequence, award): the next award to approve by date on top.
        self._due: list[tuple[datetime, int, _Award]] = []

    # Requests

    def handle(
        self, call: Call, query: Mapping[str, list[str]], body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        """Answer one request: ``(HTTP status, payload)``; a refusal raises ZinreloError."""
        with self._lock:
            self._settle()
            if call.action == "award":
                data = self._award(body or {})
            elif call.action == "return":
                data = self._return(body or {})
            elif call.action in ACTIONS:
                data = self._act(call.action, str(call.target), query)
            elif call.action == "create_member":
                data = self._create_member(body or {})
            elif call.action == "member":
                _id_param(query, "member_id", "member_id")
                member_id = str(call.target)
                if member_id not in self._members:
                    raise refused("INVALID_MEMBER")
                data = self._member_view(member_id)
            else:
                member_id = None
                if call.action == "member_transactions":
                    _id_param(query, "member_id", "member_id")
                    member_id = str(call.target)
                data = self._list(member_id, query)
            return 200, {"success": True, "data": copy.deepcopy(data)}

    def _award(self, request: dict[str, Any]) -> dict[str, Any]:
        member_id = _text(request, "member_id")
        activity_id = _text(request, "activity_id")
        attributes = self._attributes(request, activity_id)
        if "points_passed" in request:
            raise invalid(f"points_passed is not allowed for {PURCHASE}.")
        for name in DATE_FIELDS:
            _date(request, name)
        approval = _date(request, "approval_date")
        basis, lines = _purchase(attributes)
        order_id = _text(attributes, "order_id")
        refusal = self.refusals.get(member_id)
        if refusal is not None:
            raise refused(refusal)
        unique = {
            (name, str(attributes[name]))
            for name in self.unique_attributes
            if attributes.get(name) not in (None, "")
        }
        if unique & self._used:
            raise refused("TRANSACTION_ATTRIBUTE_NOT_UNIQUE")
        if order_id in self._awards:
            raise refused("DUPLICATE_ORDER_ID")
        self._used |= unique
        now = self._clock()
        transaction: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "transaction_type": "award",
            "member_id": member_id,
            "activity_id": activity_id,
            "order_id": order_id,
            "points": _floor(basis),
            "points_status": "pending" if approval else "auto_approved",
            "created_date": _stamp(now),
            "approved_date": None if approval else _stamp(now),
            "transaction_attributes": attributes,
        }
        award = _Award(transaction, request, _floor(basis), basis, lines, approval, basis)
        self._awards[order_id] = self._awards_by_id[transaction["id"]] = award
        self._accepted.setdefault(order_id, []).append(request)
        self._by_member.setdefault(member_id, []).append(award)
        if approval:
            heapq.heappush(self._due, (approval, len(self._transactions), award))
        self._record(transaction)
        self._members.setdefault(member_id, {"member_id": member_id})
        return transaction

    @staticmethod
    def _attributes(request: Mapping[str, Any], activity_id: str) -> dict[str, Any]:
        attributes = request.get("transaction_attributes")
        if attributes is None:
            raise invalid("transaction_attributes is mandatory.")
        if not isinstance(attributes, dict):
            raise invalid("transaction_attributes must be an object.")
        if activity_id != PURCHASE:
            raise invalid(
                f"activity_id {activity_id!r} is not an activity of the sandbox store, which has "
                f"only {PURCHASE}."
            )
        return attributes

    def _return(self, request: dict[str, Any]) -> dict[str, Any]:
        member_id = _text(request, "member_id")
        attributes = self._attributes(request, _text(request, "activity_id"))
        order_id = _text(attributes, "order_id")
        amount = attributes.get("returned_amount")
        product_id = attributes.get("returned_product_id")
        quantity = attributes.get("returned_product_quantity")
        if amount not in (None, "") and product_id not in (None, ""):
            raise refused("PRODUCT_ID_AND_RETURN_AMOUNT_PASSED")
        if quantity not in (None, "") and product_id in (None, ""):
            raise invalid("returned_product_quantity needs a returned_product_id.")
        award = self._awards.get(order_id)
        if award is None:
            raise refused("ORDER_NOT_EXIST")
        if member_id != award.member_id:
            raise refused("INVALID_MEMBER")
        if award.status == "rejected" or award.value_left <= 0:
            raise refused("INVALID_AMOUNT_TO_DEDUCT")
        taken: list[tuple[_Line, Decimal]] = []
        if amount not in (None, ""):
            value = _number(amount)
            if value is None or value <= 0 or value > award.value_left:
                raise refused("INVALID_AMOUNT_TO_DEDUCT")
        elif product_id not in (None, ""):
            taken = self._units(
                award, str(product_id), _quantity(quantity, "returned_product_quantity")
            )
            value = min(award.value_left, sum((line.value * n for line, n in taken), Decimal(0)))
        else:
            value = award.value_left
        full = value >= award.value_left
        points = (
            award.left if full or not award.basis else _floor(award.points * value / award.basis)
        )
        points = min(points, award.left)
        if award.status in APPROVED and self._available(member_id) < points:
            raise refused("RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE")
        for line, units in taken:
            line.left -= units
        if full:
            for line in award.lines:
                line.left = Decimal(0)
        award.value_left = Decimal(0) if full else award.value_left - value
        return self._deduct(award, points, attributes)

    @staticmethod
    def _units(award: _Award, product_id: str, quantity: Decimal) -> list[tuple[_Line, Decimal]]:
        """The units a product return takes, line by line (a product may span several lines)."""
        lines = [line for line in award.lines if line.product_id == product_id]
        if not lines:
            raise refused("INVALID_PRODUCT_ID")
        if quantity > sum(line.left for line in lines):
            raise refused("PRODUCT_QUANTITY_EXCEEDED")
        taken = []
        for line in lines:
            units = min(line.left, quantity)
            if units:
                taken.append((line, units))
                quantity -= units
        return taken

    def _deduct(self, award: _Award, points: int, attributes: Mapping[str, Any]) -> dict[str, Any]:
        award.returned += points
        transaction: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "transaction_type": "deduct",
            "member_id": award.member_id,
            "activity_id": award.transaction["activity_id"],
            "points": points,
            "points_status": "deducted" if award.status in APPROVED else "pending_deduction",
            "created_date": _stamp(self._clock()),
            "returned_for_order_id": award.order_id,
            "transaction_attributes": dict(attributes),
        }
        award.deductions.append(transaction)
        self._record(transaction)
        return transaction

    def _act(self, action: str, target: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        by_order = _id_param(query, "order_id", "id") == "order_id"
        award = self._awards.get(target) if by_order else self._awards_by_id.get(target)
        if award is None:
            if not by_order and target in self._by_id:
                raise invalid(
                    f"transaction {target} is not an award; only an award can be {DONE[action]}."
                )
            raise refused("TRANSACTION_DOES_NOT_EXIST", status=404)
        if action == "reverse":
            if award.status not in APPROVED or award.left == 0:
                state = "fully deducted" if award.status in APPROVED else award.status
                raise invalid(
                    f"only an approved award with points left can be reversed; this one is {state}."
                )
            if self._available(award.member_id) < award.left:
                raise refused("INVALID_AMOUNT_TO_DEDUCT")
            for line in award.lines:
                line.left = Decimal(0)
            award.value_left = Decimal(0)
            return self._deduct(award, award.left, {})
        if award.status != "pending":
            raise invalid(
                f"only a pending award can be {DONE[action]}; this one is {award.status}."
            )
        if action == "reject":
            award.rejected = award.left
            award.transaction["points_status"] = "rejected"
        else:
            self._approve(award)
        return award.transaction

    def _approve(self, award: _Award) -> None:
        award.transaction["points_status"] = "approved"
        award.transaction["approved_date"] = _stamp(self._clock())
        for deduction in award.deductions:
            deduction["points_status"] = "deducted"

    def _settle(self) -> None:
        """Approve the pending awards whose approval date has passed (call with the lock held)."""
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            award = heapq.heappop(self._due)[2]
            if award.status == "pending":  # not rejected or approved by hand meanwhile
                self._approve(award)

    def _record(self, transaction: dict[str, Any]) -> None:
        self._transactions.append(transaction)
        self._by_id[transaction["id"]] = transaction

    def _create_member(self, profile: dict[str, Any]) -> dict[str, Any]:
        member_id = _text(profile, "member_id")
        if member_id in self._members:
            raise refused("MEMBER_ID_ALREADY_IN_USE")
        self._members[member_id] = {**profile, "member_id": member_id}
        return self._member_view(member_id)

    def _member_awards(self, member_id: str) -> list[_Award]:
        return self._by_member.get(member_id, [])

    def _available(self, member_id: str) -> int:
        earned = sum(a.left for a in self._member_awards(member_id) if a.status in APPROVED)
        return earned - self._spent.get(member_id, 0)

    def _balance(self, member_id: str) -> dict[str, int]:
        pending = sum(a.left for a in self._member_awards(member_id) if a.status == "pending")
        return {"available": self._available(member_id), "pending": pending}

    def _member_view(self, member_id: str) -> dict[str, Any]:
        balance = self._balance(member_id)
        return {
            **self._members[member_id],
            "available_points": balance["available"],
            "pending_points": balance["pending"],
        }

    def _list(self, member_id: str | None, query: Mapping[str, list[str]]) -> dict[str, Any]:
        count_text = _one(query, "count") or str(DEFAULT_COUNT)
        if not count_text.isdigit() or not 1 <= int(count_text) <= MAX_COUNT:
            raise invalid(
                f"count must be a whole number from 1 to {MAX_COUNT}, not {count_text!r}."
            )
        start_text = _one(query, "start_index") or "0"
        checks = [
            _equals(name, _one(query, name)) for name in ("transaction_type", "points_status")
        ]
        checks += [_dated(name, _one(query, name)) for name in ("created_date", "approved_date")]
        found = [
            transaction
            for transaction in reversed(self._transactions)
            if (member_id is None or transaction["member_id"] == member_id)
            and all(check(transaction) for check in checks)
        ]
        if not start_text.isdigit() or int(start_text) > len(found):
            raise refused("INVALID_CURSOR", status=400)
        start, count = int(start_text), int(count_text)
        more = start + count < len(found)
        return {
            "transactions": found[start : start + count],
            "total": len(found),
            "next_start_index": start + count if more else None,
            "more": more,
        }

    # Inspection, for the stand-ins' own Python API

    def awarded(self) -> dict[str, dict[str, Any]]:
        """Order id -> the award transaction as answered, plus the ``request`` body."""
        with self._lock:
            self._settle()
            return copy.deepcopy(
                {oid: {**a.transaction, "request": a.request} for oid, a in self._awards.items()}
            )

    def awards_for(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._accepted.get(order_id, []))

    def order_points(self, order_id: str) -> int:
        with self._lock:
            self._settle()
            award = self._awards.get(order_id)
            return 0 if award is None else award.left

    def ledger(self, order_id: str) -> dict[str, Any]:
        with self._lock:
            self._settle()
            award = self._awards.get(order_id)
            if award is None:
                raise KeyError(f"No award for order {order_id!r}.")
            left = award.left
            return {
                "transaction_id": award.transaction["id"],
                "member_id": award.member_id,
                "status": award.status,
                "awarded": award.points,
                "pending": left if award.status == "pending" else 0,
                "approved": left if award.status in APPROVED else 0,
                "rejected": award.rejected,
                "returned": award.returned,
                "left": left,
            }

    def deductions(self, order_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._settle()
            award = self._awards.get(order_id)
            return copy.deepcopy(award.deductions if award else [])

    def balance(self, member_id: str) -> dict[str, int]:
        with self._lock:
            self._settle()
            return self._balance(member_id)

    def spend(self, member_id: str, points: int) -> dict[str, Any]:
        """The member redeems ``points`` of its available balance (a ``redeem`` transaction)."""
        with self._lock:
            self._settle()
            if not 0 < points <= self._available(member_id):
                raise ValueError(
                    f"{member_id!r} has {self._available(member_id)} points available, cannot "
                    f"spend {points}."
                )
            self._spent[member_id] = self._spent.get(member_id, 0) + points
            transaction: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                "transaction_type": "redeem",
                "member_id": member_id,
                "activity_id": "redeem",
                "points": points,
                "points_status": "redeemed",
                "created_date": _stamp(self._clock()),
                "transaction_attributes": {},
            }
            self._record(transaction)
            return copy.deepcopy(transaction)


class LedgerInspection:
    """What Zinrelo holds, read from a test; the same on the sandbox and the testing recorder."""

    _ledger: ZinreloLedger

    @property
    def awarded(self) -> dict[str, dict[str, Any]]:
        """Order id -> the award transaction as it stands, with its ``request`` body."""
        return self._ledger.awarded()

    def awards_for(self, order_id: str) -> list[dict[str, Any]]:
        """The body of each award accepted for the order (more than one: awarded twice)."""
        return self._ledger.awards_for(order_id)

    def order_points(self, order_id: str) -> int:
        """Points the member keeps for the order: awarded minus deducted, 0 if rejected."""
        return self._ledger.order_points(order_id)

    def ledger(self, order_id: str) -> dict[str, Any]:
        """awarded, pending, approved, rejected, returned, left and status of the order's award."""
        return self._ledger.ledger(order_id)

    def deductions(self, order_id: str) -> list[dict[str, Any]]:
        """The order's returns and reversal, oldest first."""
        return self._ledger.deductions(order_id)

    def balance(self, member_id: str) -> dict[str, int]:
        """The member's ``available`` and ``pending`` points."""
        return self._ledger.balance(member_id)

    def spend(self, member_id: str, points: int) -> dict[str, Any]:
        """The customer redeems points of its available balance."""
        return self._ledger.spend(member_id, points)
