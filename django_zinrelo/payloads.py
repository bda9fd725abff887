"""The v2 Award API body for ``made_a_purchase``, built from an adapter and checked before sending.

An order that Zinrelo would refuse for its shape (no member, subtotal not above 0.01, a line missing
a mandatory field, a negative amount) is stopped here with a reason a shop owner can act on, so it
never costs a call. Money stays ``Decimal`` and leaves as a decimal string; floats are refused
rather than rounded, because a float amount is already inexact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar

from django.utils import timezone

from django_zinrelo.adapters import OrderAdapter, Product
from django_zinrelo.conf import UnknownStore, ZinreloSettings

MIN_SUBTOTAL: Final = Decimal("0.01")
MAX_INTEGER_DIGITS: Final = 15
MAX_DECIMAL_PLACES: Final = 12
DATE_FORMAT: Final = "%m/%d/%Y %H:%M:%S"
# The longest ids the award log stores (its order_id and member_id columns): a longer one would be
# sent whole but kept cut, and staff could not find the award by what Zinrelo shows.
MAX_ORDER_ID: Final = 128
MAX_MEMBER_ID: Final = 254  # the longest email address
# Control characters mean nothing to Zinrelo and PostgreSQL refuses NUL in text and JSON columns.
CONTROL_CHARACTERS: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ISO_CURRENCY: Final = re.compile("[A-Z]{3}")

T = TypeVar("T")


class InvalidOrder(Exception):
    """The order cannot be sent as it is; ``reason`` says why in words a shop owner understands."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def text(value: Any) -> str:
    """Safe for JSON, the database and Zinrelo: no control characters or lone surrogates.

    A value whose ``str()`` raises is the shop's: :class:`InvalidOrder`, as for any value unfit to
    send.
    """
    try:
        raw = str(value)
    except Exception as error:
        raise InvalidOrder(
            f"A {type(value).__name__} from the shop could not be read as text "
            f"(its str() raised {type(error).__name__})."
        ) from None
    cleaned = CONTROL_CHARACTERS.sub("", raw)
    return cleaned.encode("utf-8", "replace").decode("utf-8").strip()


def money(value: Any, label: str) -> str:
    """A non-negative amount as the exact decimal string the shop stores (never through float)."""
    if value is None:
        raise InvalidOrder(f"The {label} is missing.")
    if isinstance(value, float):
        raise InvalidOrder(
            f"The {label} is a float ({value!r}); the adapter must return a Decimal so the amount "
            "is exact."
        )
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidOrder(f"The {label} is not an amount ({type(value).__name__}).")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise InvalidOrder(f"The {label} is not a number ({text(value)[:40]!r}).") from None
    if not amount.is_finite():
        raise InvalidOrder(f"The {label} is not a finite number ({amount}).")
    if amount < 0:
        raise InvalidOrder(f"The {label} is negative ({amount}).")
    if amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise InvalidOrder(f"The {label} is implausibly large ({amount:.3e}).")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise InvalidOrder(
            f"The {label} has more than {MAX_DECIMAL_PLACES} decimal places ({amount}); round it "
            "in the adapter."
        )
    return format(abs(amount) if amount.is_zero() else amount, "f")


def quantity(value: Any, label: str, *, fractional: bool = False) -> str:
    """A quantity above zero: a whole number, or with ``fractional`` an exact decimal string."""
    if fractional:
        amount = money(value, label)
        if Decimal(amount).is_zero():
            raise InvalidOrder(f"The {label} must be above zero, not {amount}.")
        return amount
    hint = " (a shop selling by weight sets fractional_quantities = True on its order adapter)"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise InvalidOrder(f"The {label} must be a whole number, not {value!r}{hint}.")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidOrder(f"The {label} is not a number ({text(value)[:40]!r}).") from None
    if not number.is_finite() or number != number.to_integral_value() or number <= 0:
        raise InvalidOrder(
            f"The {label} must be a whole number above zero, not {number}"
            + (hint if number.is_finite() and number > 0 else "")
            + "."
        )
    if number.adjusted() >= MAX_INTEGER_DIGITS:
        raise InvalidOrder(f"The {label} is implausibly large ({number:.3e}).")
    return str(int(number))


def required_text(value: Any, label: str) -> str:
    cleaned = "" if value is None else text(value)
    if not cleaned:
        raise InvalidOrder(f"The {label} is missing.")
    return cleaned


def zinrelo_date(value: Any, label: str) -> str:
    """UTC ``MM/DD/YYYY HH:MM:SS``; naive datetimes are taken in the project's time zone."""
    if not isinstance(value, datetime):
        raise InvalidOrder(f"The {label} must be a datetime, not {type(value).__name__}.")
    moment: datetime = timezone.make_aware(value) if timezone.is_naive(value) else value
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # the first or last day Python knows, moved past it by the time zone
        utc = None
    # Zinrelo's format has four-digit years; strftime would write year 999 as "999".
    if utc is None or utc.year < 1000:
        raise InvalidOrder(f"The {label} ({value.isoformat()}) is not a plausible date.")
    return utc.strftime(DATE_FORMAT)


def items(value: Any) -> list[Any]:
    """One item or several: None is none, and a lone string, or any value that is not a
    collection (a category's id), is one item, never its characters."""
    if value is None:
        return []
    return [value] if isinstance(value, str) or not isinstance(value, Iterable) else list(value)


def text_list(value: Any) -> list[str]:
    return [cleaned for cleaned in (text(item) for item in items(value)) if cleaned]


@contextmanager
def shop_code(what: str) -> Iterator[None]:
    """Run the shop's own code (an adapter method, its order model's manager): whatever it raises
    is that one order's problem, said as ``what`` and the exception's type and message.

    Only the type and message are kept, never the exception: its traceback's frames hold the
    shop's data as local variables, which error reporters capture.
    """
    try:
        yield
    except InvalidOrder:
        raise
    except Exception as error:
        raise InvalidOrder(f"{what} raised {type(error).__name__}: {text(error)[:300]}") from None


def ask(name: str, method: Callable[[Any], T], order: Any) -> T:
    """Call one adapter method, turning a crash in the shop's code into a readable reason."""
    with shop_code(f"The order adapter's {name}()"):
        return method(order)


def ask_all(name: str, method: Callable[[Any], Any], order: Any) -> list[Any]:
    """Call an adapter method that returns several items, and read them all while still in the
    shop's code: a generator (the usual way to write ``products``) raises as it is iterated,
    after the call has returned."""
    with shop_code(f"The order adapter's {name}()"):
        return items(method(order))


def currency_code(value: Any) -> str:
    code = text(value).upper()
    if not ISO_CURRENCY.fullmatch(code):
        raise InvalidOrder(
            f"The currency must be a three-letter ISO 4217 code such as 'USD', not "
            f"{text(value)[:40]!r}."
        )
    return code


def product_line(product: Any, number: int, *, fractional: bool = False) -> dict[str, Any]:
    """One entry of ``products``. The v2 names are the v1 sample's with a ``product_`` prefix
    (``url``, ``tags``, ``category``; ``img_url`` became ``product_image_url``)."""
    if not isinstance(product, Product):
        raise InvalidOrder(
            f"Line {number} is a {type(product).__name__}; the adapter's products() must yield "
            "django_zinrelo.adapters.Product."
        )
    line: dict[str, Any] = {
        "product_id": required_text(product.id, f"product id of line {number}"),
        "product_quantity": quantity(
            product.quantity, f"quantity of line {number}", fractional=fractional
        ),
        "product_price": money(product.price, f"price of line {number}"),
        "product_title": required_text(product.title, f"title of line {number}"),
    }
    optional = {
        "product_url": text(product.url or ""),
        "product_image_url": text(product.image_url or ""),
        "product_category": text_list(product.category),
        "product_tags": text_list(product.tags),
    }
    line.update((name, value) for name, value in optional.items() if value)
    return line


def build_payload(adapter: OrderAdapter, order: Any, activity_id: str) -> dict[str, Any]:
    """The request body for one order, or :class:`InvalidOrder` saying why it cannot be sent."""
    member_id = ask("member_id", adapter.member_id, order)
    member = "" if member_id is None else text(member_id)
    if not member:
        raise InvalidOrder(
            "The order has no customer identifier (member id, usually the customer's email), so "
            "Zinrelo cannot know whom to award."
        )
    order_id = required_text(ask("order_id", adapter.order_id, order), "order id")
    for label, value, limit in (
        ("member id", member, MAX_MEMBER_ID),
        ("order id", order_id, MAX_ORDER_ID),
    ):
        if len(value) > limit:
            raise InvalidOrder(
                f"The {label} is {len(value)} characters long ({value[:40]!r}…); at most {limit} "
                "can be sent and recorded."
            )
    subtotal = money(ask("order_subtotal", adapter.order_subtotal, order), "order subtotal")
    if Decimal(subtotal) <= MIN_SUBTOTAL:
        raise InvalidOrder(
            f"Zinrelo only awards orders whose subtotal is greater than {MIN_SUBTOTAL}; this "
            f"order's subtotal is {subtotal}."
        )
    attributes: dict[str, Any] = {
        "order_id": order_id,
        "order_total": money(ask("order_total", adapter.order_total, order), "order total"),
        "order_subtotal": subtotal,
    }
    currency = ask("currency", adapter.currency, order)
    if currency is not None:
        attributes["currency"] = currency_code(currency)
    products = ask_all("products", adapter.products, order)
    with shop_code("The order adapter's fractional_quantities"):
        fractional = bool(adapter.fractional_quantities)
    lines = [
        product_line(product, number, fractional=fractional)
        for number, product in enumerate(products, start=1)
    ]
    if lines:
        attributes["products"] = lines
    coupons = text_list(ask_all("coupons", adapter.coupons, order))
    if coupons:
        with shop_code("The order adapter's coupon_separator"):
            separator = adapter.coupon_separator
        if not isinstance(separator, str):
            raise InvalidOrder(
                "The order adapter's coupon_separator must be text, not "
                f"{type(separator).__name__}."
            )
        attributes["coupons"] = separator.join(coupons)
    tags = text_list(ask_all("tags", adapter.tags, order))
    if tags:
        attributes["tags"] = tags
    reason = text(ask("reason", adapter.reason, order) or "")
    if reason:  # a reason of only spaces or control characters is left out, not sent blank
        attributes["reason"] = reason
    payload: dict[str, Any] = {
        "member_id": member,
        "activity_id": activity_id,
        "transaction_date": zinrelo_date(
            ask("transaction_date", adapter.transaction_date, order), "transaction date"
        ),
        "transaction_attributes": attributes,
    }
    approval = ask("approval_date", adapter.approval_date, order)
    if approval is not None:
        payload["approval_date"] = zinrelo_date(approval, "approval date")
    return payload


def build_for_store(
    adapter: OrderAdapter, order: Any, activity_id: str, conf: ZinreloSettings
) -> tuple[str, dict[str, Any]]:
    """The order's store (the adapter's ``store()``) and its body, which carries that store's
    ``ACTIVITY_ID``; the default store (``""``) sends ``activity_id``, the award's own.

    A store ``ZINRELO["STORES"]`` does not define makes the order :class:`InvalidOrder`: sent
    anywhere else, it would earn points in the wrong store.
    """
    store = text(ask("store", adapter.store, order) or "")
    try:
        settings = conf.for_store(store)
    except UnknownStore as unknown:
        raise InvalidOrder(str(unknown)) from None
    return store, build_payload(adapter, order, settings.activity_id if store else activity_id)
