"""Scenario 14: bad input, generated. Whatever a shop's order holds and whatever Zinrelo answers,
the shop's ``save()`` returns, and the award ends either sent with a body of the documented v2
shape or in a final status with a reason a person can read.

Hypothesis runs derandomized (the same examples on every run), with a moderate number of examples.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from django_zinrelo.adapters import OrderAdapter, Product
from django_zinrelo.client import Outcome, classify
from django_zinrelo.delivery import deliver
from django_zinrelo.models import FINAL_FAILURES, Award, Status, Trigger
from django_zinrelo.payloads import InvalidOrder, build_payload
from django_zinrelo.sandbox import ZinreloSandbox
from tests.conftest import AWARD_URL
from tests.shop.models import Order, OrderLine
from tests.shop.zinrelo import ShopAdapter

GENERATED = hypothesis_settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# The documented v2 Award body (the project's API reference, "Awarding a purchase").
DATE = re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d")
AMOUNT = re.compile(r"\d+(\.\d+)?")
WHOLE = re.compile(r"[1-9]\d*")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TOP_LEVEL = {
    "member_id",
    "activity_id",
    "transaction_date",
    "approval_date",
    "transaction_attributes",
}
ATTRIBUTES = {
    "order_id",
    "order_total",
    "order_subtotal",
    "currency",
    "coupons",
    "tags",
    "reason",
    "products",
}
PRODUCT = {
    "product_id",
    "product_quantity",
    "product_price",
    "product_title",
    "product_category",
    "product_image_url",
    "product_url",
    "product_tags",
}


def clean_text(value, *, required=True):
    assert isinstance(value, str), value
    assert not CONTROL.search(value), value
    value.encode("utf-8")  # no lone surrogates
    if required:
        assert value.strip(), "a mandatory field is blank"


def date(value):
    assert DATE.fullmatch(value), value
    datetime.strptime(value, "%m/%d/%Y %H:%M:%S")


def amount(value):
    assert isinstance(value, str) and AMOUNT.fullmatch(value), value


def assert_documented_shape(body):
    """A validator for the v2 award body, written from the API reference, not from the code."""
    assert set(body) <= TOP_LEVEL and {"member_id", "activity_id", "transaction_attributes"} <= set(
        body
    )
    clean_text(body["member_id"])
    assert body["activity_id"] == "made_a_purchase"
    date(body["transaction_date"])
    if "approval_date" in body:
        date(body["approval_date"])
    attributes = body["transaction_attributes"]
    assert set(attributes) <= ATTRIBUTES
    clean_text(attributes["order_id"])
    amount(attributes["order_total"])
    amount(attributes["order_subtotal"])
    assert Decimal(attributes["order_subtotal"]) > Decimal("0.01")
    if "coupons" in attributes:
        clean_text(attributes["coupons"])
    for tag in attributes.get("tags", []):
        clean_text(tag)
    if "reason" in attributes:
        clean_text(attributes["reason"])
    products = attributes.get("products", [])
    assert isinstance(products, list)
    assert products or "products" not in attributes, "an empty list is left out"
    for product in products:
        assert set(product) <= PRODUCT and set(product) >= PRODUCT - {
            "product_category",
            "product_image_url",
            "product_url",
            "product_tags",
        }
        clean_text(product["product_id"])
        clean_text(product["product_title"])
        assert WHOLE.fullmatch(product["product_quantity"]), product
        amount(product["product_price"])
        for optional in ("product_image_url", "product_url"):
            if optional in product:
                clean_text(product[optional], required=False)
        for listed in ("product_category", "product_tags"):  # "list" in the reference's table
            for item in product.get(listed, ["-"]):
                clean_text(item)
    assert json.loads(json.dumps(body)) == body


def assert_readable(reason):
    assert isinstance(reason, str) and reason.strip(), repr(reason)
    assert not CONTROL.search(reason), repr(reason)
    assert len(reason) <= 1000, len(reason)


# Strategies

texts = st.text(max_size=30) | st.text(
    alphabet=st.sampled_from("\x00\x01\x1f\x7f\t\n\r \u200b\u202e\ufeffé€😀"), max_size=8
)
decimals = st.decimals() | st.decimals(min_value=-(10**16), max_value=10**16, places=3)
amounts = st.none() | decimals | st.integers() | st.floats() | texts | st.booleans()
zones: Any = st.sampled_from([None, UTC, ZoneInfo("Pacific/Kiritimati")])
moments = st.datetimes(min_value=datetime(1970, 1, 1), timezones=zones)
any_moment = st.datetimes(timezones=zones)


class Raises:
    """Marks an adapter method that raises, as a shop's code sometimes does."""


RAISES = Raises()


def mostly(plausible, wild):
    """Mostly what a working shop has, once in 20 anything at all: a body is only built when
    every value is sensible, so wild ones must stay rare for the sent path to be explored."""
    return st.sampled_from([True] * 19 + [False]).flatmap(
        lambda sensible: plausible if sensible else wild
    )


def answer(plausible, wild):
    """An adapter method's answer: mostly plausible, else anything, or the method raises."""
    return mostly(plausible, wild | st.just(RAISES))


def product(plausible):
    wild = plausible is None
    return st.builds(
        Product,
        id=mostly(st.text(min_size=1) | st.integers(), st.none() | texts | st.integers()),
        quantity=mostly(st.integers(1, 10**6), st.none() | decimals | st.floats() | texts)
        if wild
        else st.integers(1, 10**6),
        price=mostly(st.decimals(min_value=0, max_value=10**6, places=2), amounts),
        title=mostly(st.text(min_size=1), st.none() | texts),
        category=st.none() | texts | st.lists(texts, max_size=3),
        image_url=st.none() | texts,
    )


one_line = Product(id="sku", quantity=1, price=Decimal("1.50"), title="Mug")
lines = mostly(
    st.lists(product(plausible=True), max_size=6)
    | st.integers(0, 3000).map(lambda n: [one_line] * n),
    st.none() | st.lists(product(plausible=None) | texts, max_size=6),
)
answers = st.fixed_dictionaries(
    {
        "member_id": answer(st.emails() | st.text(min_size=1), st.none() | texts | st.integers()),
        "order_id": answer(st.text(min_size=1) | st.integers(0), st.none() | texts),
        "order_total": answer(st.decimals(min_value=0, max_value=10**12, places=2), amounts),
        "order_subtotal": answer(
            st.decimals(min_value=Decimal("0.02"), max_value=10**12, places=2), amounts
        ),
        "coupons": st.none() | texts | st.lists(texts, max_size=3),
        "tags": st.none() | texts | st.lists(texts, max_size=3),
        "reason": st.none() | texts,
        "products": lines,
        "transaction_date": answer(moments, any_moment | st.none() | texts | st.integers()),
        "approval_date": answer(st.none() | moments, any_moment | texts | st.integers()),
    }
)


class Scripted(OrderAdapter):
    """An adapter answering whatever it is told, or raising."""

    def __init__(self, values):
        self.values = values

    def __getattribute__(self, name):
        values = object.__getattribute__(self, "values")
        if name not in values:
            return object.__getattribute__(self, name)
        value = values[name]

        def method(order):
            if value is RAISES:
                raise KeyError(f"{name} \x00 broke")
            return value

        return method


@contextmanager
def rolled_back():
    """Each example leaves the database as it found it."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@pytest.fixture(scope="module")
def zinrelo_stand_in():
    with ZinreloSandbox(seed=14) as sandbox:
        yield sandbox


SENSIBLE = {
    "member_id": "jane@example.com",
    "order_id": "A-1",
    "order_total": Decimal("12.50"),
    "order_subtotal": Decimal("10.00"),
    "coupons": None,
    "tags": None,
    "reason": None,
    "products": [one_line],
    "transaction_date": datetime(2024, 5, 1, tzinfo=UTC),
    "approval_date": None,
}


@GENERATED
@given(values=answers)
@example(values={**SENSIBLE, "transaction_date": datetime(999, 12, 31, 23, 0)})
@example(values={**SENSIBLE, "approval_date": datetime.min})
@example(values={**SENSIBLE, "reason": " \x00 "})
def test_any_adapter_answer_builds_a_documented_body_or_says_why_not(values, zinrelo_stand_in):
    try:
        body = build_payload(Scripted(values), object(), "made_a_purchase")
    except InvalidOrder as invalid:
        assert_readable(invalid.reason)
        event(invalid.reason[:35])
        return
    event("built")
    assert_documented_shape(body)
    # An independent reading of the same rules: the sandbox must not call the body malformed.
    answer = requests.post(
        zinrelo_stand_in.url + "transactions/award",
        json=body,
        headers={"partner-id": "sandbox-partner", "api-key": "sandbox-key"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text


# The shop's own orders, saved for real

WEIRD: dict[str, object] = {}


class SometimesWeird(ShopAdapter):
    """The test shop's adapter, except that its subtotal may be NaN, None or not a number."""

    def order_subtotal(self, order):
        return WEIRD.get(order.number, order.subtotal)


money = st.none() | st.decimals(
    min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"), places=2
)
# What a database column can hold at all: no NUL (PostgreSQL) and no lone surrogates (UTF-8).
storable = st.characters(codec="utf-8", exclude_characters="\x00")
shop_text = st.text(storable, max_size=40)
wild_line = st.fixed_dictionaries(
    {
        "sku": shop_text.map(lambda text: text[:64]),
        "title": shop_text,
        "quantity": st.integers(-(2**31), 2**31 - 1),
        "unit_price": st.none()
        | st.decimals(
            min_value=Decimal("-999999999.999"), max_value=Decimal("999999999.999"), places=3
        ),
        "category": shop_text,
    }
)
sold_line = st.fixed_dictionaries(
    {
        "sku": st.text(storable, min_size=1, max_size=64).filter(str.strip),
        "title": st.text(storable, min_size=1, max_size=200).filter(str.strip),
        "quantity": st.integers(1, 1000),
        "unit_price": st.decimals(min_value=0, max_value=Decimal("99999.999"), places=3),
        "category": shop_text,
    }
)
order_lines = mostly(
    st.lists(sold_line, max_size=5)
    | st.integers(0, 1000).map(
        lambda n: [{"sku": "s", "title": "t", "quantity": 1, "unit_price": Decimal("1.5")}] * n
    ),
    st.lists(mostly(sold_line, wild_line), max_size=5),
)
shop_orders = st.fixed_dictionaries(
    {
        "email": mostly(st.emails(), shop_text),
        "status": st.sampled_from(["paid", "completed", "new"]),
        "total": mostly(
            st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2), money
        ),
        "subtotal": mostly(
            st.decimals(min_value=Decimal("0.02"), max_value=Decimal("9999999999.99"), places=2),
            money,
        ),
        "coupon_codes": shop_text,
        "created_at": st.none() | st.datetimes(timezones=st.just(UTC)),
        "lines": order_lines,
        "weird_subtotal": mostly(
            st.none(),
            st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), 1.5, "ten"]),
        ),
    }
)


@pytest.fixture
def zinrelo_accepts(zinrelo):
    sent = []

    def accept(request):
        sent.append(json.loads(request.body))
        return 200, {}, json.dumps({"success": True, "data": {"points": 1, "id": "tx"}})

    zinrelo.add_callback("POST", AWARD_URL, callback=accept)
    return sent


@pytest.mark.django_db
@GENERATED
@given(fields=shop_orders)
def test_any_shop_order_saves_and_its_award_ends_sent_valid_or_final_with_a_reason(
    fields, zinrelo_accepts, django_capture_on_commit_callbacks
):
    fields = dict(fields)
    lines, weird, status = fields.pop("lines"), fields.pop("weird_subtotal"), fields.pop("status")
    sent_before = len(zinrelo_accepts)
    with (
        override_settings(ZINRELO={**settings.ZINRELO, "ORDER_ADAPTER": SometimesWeird}),
        rolled_back(),
    ):
        order = Order.objects.create(number="H", status="new", **fields)
        OrderLine.objects.bulk_create(OrderLine(order=order, **line) for line in lines)
        if weird is not None:
            WEIRD["H"] = weird
        try:
            with django_capture_on_commit_callbacks(execute=True):
                order.status = status
                order.save()  # must return, whatever the order holds
        finally:
            WEIRD.clear()
        award = Award.objects.filter(order_pk=str(order.pk)).first()
        event(f"award {award.status if award else 'none'}")
        if status == "new":
            assert award is None
            return
        assert award is not None, "a qualifying order always gets its award"
        if award.status == Status.AWARDED:
            assert_documented_shape(award.payload)
            assert zinrelo_accepts[sent_before:] == [award.payload]
        else:
            assert award.status in FINAL_FAILURES, award.status
            assert_readable(award.last_reason)
            assert len(zinrelo_accepts) == sent_before, "nothing sent for an invalid order"


# Zinrelo's answers, arbitrary

json_answers = st.fixed_dictionaries(
    {},
    optional={
        "success": st.none() | st.booleans() | texts,
        "error_code": st.none()
        | texts
        | st.sampled_from(["DUPLICATE_ORDER_ID", "MEMBER_BLOCKED", "RATE_LIMIT_EXCEEDED"])
        | st.text(min_size=60, max_size=200),
        "reason": st.none() | texts | st.integers() | st.text(min_size=2000, max_size=3000),
        "data": st.none()
        | texts
        | st.fixed_dictionaries(
            {},
            optional={
                "points": st.none() | st.integers() | st.floats() | texts | st.just(10**30),
                "points_status": texts | st.text(min_size=40, max_size=60),
                "id": texts | st.integers() | st.text(min_size=70, max_size=80),
            },
        ),
    },
).map(lambda answer: json.dumps(answer).encode())
bodies = st.binary(max_size=200) | json_answers
statuses = st.integers(100, 599) | st.sampled_from([200, 400, 401, 429, 500, 503])
retry_afters = (
    st.none() | st.text(max_size=40) | st.sampled_from(["120", "Wed, 21 Oct 2015 07:28:00 GMT"])
)

header_values = st.none() | st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40
)


@GENERATED
@given(status=statuses, body=bodies, retry_after=retry_afters)
def test_any_answer_is_classified_without_raising(status, body, retry_after):
    reply = classify(status, body.decode("utf-8", errors="replace"), retry_after)
    assert reply.outcome in set(Outcome)
    assert reply.retry_after is None or reply.retry_after >= 0
    if reply.outcome in (Outcome.REFUSED, Outcome.RETRYABLE, Outcome.STORE_PROBLEM):
        assert_readable(reply.reason)
    assert "\x00" not in reply.body
    assert not CONTROL.search(reply.reason + reply.error_code)


@pytest.mark.django_db
@GENERATED
@example(status=200, body=b'{"success": true, "data": {"points": 1e30, "id": 7}}', retry_after=None)
@example(status=200, body=b'{"error_code": "' + b"X" * 100 + b'"}', retry_after=None)
@example(status=429, body=b"\x00", retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
# 204 and 304 cannot carry a body in HTTP: urllib3 reads one there as a broken connection.
@given(
    status=st.integers(200, 599).filter(lambda s: s not in (204, 304)),
    body=bodies,
    retry_after=header_values,
)
def test_any_answer_through_delivery_ends_in_a_state_with_its_evidence(
    status, body, retry_after, zinrelo
):
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    zinrelo.upsert("POST", AWARD_URL, status=status, body=body, headers=headers)
    with rolled_back():
        order = Order.objects.create(
            number="Z", email="z@example.com", status="paid", subtotal=Decimal(5), total=Decimal(5)
        )
        award = Award.objects.get(order_pk=str(order.pk))
        deliver(award.pk, Trigger.COMMAND)
        award.refresh_from_db()
        attempt = award.attempts_log.get()
        assert award.status != Status.SENDING
        # A store-wide problem waits without spending one of the award's attempts.
        assert award.attempts == (0 if attempt.outcome == Outcome.STORE_PROBLEM else 1)
        if award.status not in (Status.AWARDED, Status.ALREADY_AWARDED):
            assert_readable(award.last_reason)
        assert attempt.status_code == status
