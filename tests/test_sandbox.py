"""The local Zinrelo stand-in answers as the API reference says, faults included."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from io import StringIO
from typing import Any
from unittest.mock import ANY
from urllib.parse import quote

import pytest
import requests
from django.core.management import CommandError, call_command

from django_zinrelo.management.commands import zinrelo_sandbox as sandbox_command
from django_zinrelo.sandbox import DEFAULT_REFUSALS, ZinreloSandbox, parse_fault

AUTH = {"partner-id": "sandbox-partner", "api-key": "sandbox-key"}
TIMEOUT = (2, 5)
INVALID = "INVALID_REQUEST_PARAMETER_VALUES"
DATE = re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d")
FUTURE = "12/31/2099 00:00:00"


def purchase(order_id="1001", member_id="jane@example.com", **attributes):
    return {
        "member_id": member_id,
        "activity_id": "made_a_purchase",
        "transaction_date": "10/05/2019 23:10:55",
        "transaction_attributes": {
            "order_id": order_id,
            "order_total": "1000",
            "order_subtotal": "1000",
            **attributes,
        },
    }


def post_award(base_url, body, *, headers=AUTH, timeout=TIMEOUT, session=requests):
    return session.post(
        base_url + "transactions/award", json=body, headers=headers, timeout=timeout
    )


def award(box, body, **options):
    return post_award(box.url, body, **options)


@pytest.fixture
def sandbox():
    with ZinreloSandbox() as box:
        yield box


@pytest.fixture
def make_sandbox():
    """Start sandboxes with custom options; every one is stopped at teardown."""
    started = []

    def make(**options):
        box = ZinreloSandbox(**options).start()
        started.append(box)
        return box

    yield make
    for box in started:
        box.stop()


# Awarding


def test_award_answers_zinrelo_success_shape_and_records_it(sandbox):
    products = [
        {
            "product_id": "112",
            "product_quantity": "1",
            "product_price": "15",
            "product_title": "Sweatshirt",
        },
        {
            "product_id": "980",
            "product_quantity": "2",
            "product_price": "10.017",
            "product_title": "Pant",
        },
    ]
    response = award(sandbox, purchase("75", products=products))

    assert response.status_code == 200
    payload = response.json()
    assert payload["success"] is True
    data = payload["data"]
    assert set(data) == {
        "id",
        "transaction_type",
        "member_id",
        "activity_id",
        "order_id",
        "points",
        "points_status",
        "created_date",
        "approved_date",
        "transaction_attributes",
    }
    assert data["transaction_type"] == "award"
    assert data["transaction_attributes"]["products"] == products
    assert data["points"] == 35  # 15 + 2 * 10.017 = 35.034, floored
    assert data["member_id"] == "jane@example.com"
    assert data["activity_id"] == "made_a_purchase"
    assert data["order_id"] == "75"
    assert data["points_status"] == "auto_approved"
    assert isinstance(data["id"], str)
    assert data["id"]
    assert DATE.fullmatch(data["created_date"])
    assert data["approved_date"] == data["created_date"]
    assert sandbox.awards_for("75") == [purchase("75", products=products)]
    recorded = sandbox.awarded["75"]
    assert recorded["id"] == data["id"]
    assert recorded["request"]["transaction_attributes"]["products"] == products


def test_transaction_ids_are_unique(sandbox):
    ids = {award(sandbox, purchase(str(number))).json()["data"]["id"] for number in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("as_json_number", [False, True], ids=["strings", "json-numbers"])
def test_points_are_computed_in_decimal_not_float(sandbox, as_json_number):
    # In float, 0.1 + 0.2 + 0.7 is 0.9999999999999999 and would floor to zero points.
    def price(text):
        return float(text) if as_json_number else text

    products = [
        {
            "product_id": str(number),
            "product_quantity": 1,
            "product_price": price(text),
            "product_title": "Thing",
        }
        for number, text in enumerate(["0.1", "0.2", "0.7"])
    ]
    response = award(sandbox, purchase(products=products))

    assert response.json()["data"]["points"] == 1


def test_products_price_times_quantity(sandbox):
    products = [
        {
            "product_id": "980",
            "product_quantity": "2",
            "product_price": "10.017",
            "product_title": "Pant",
        }
    ]
    assert award(sandbox, purchase(products=products)).json()["data"]["points"] == 20


def test_points_come_from_the_subtotal_without_products(sandbox):
    body = purchase(order_subtotal="49.99", order_total="59.99")
    assert award(sandbox, body).json()["data"]["points"] == 49


def test_products_are_prorated_down_to_a_lower_subtotal(sandbox):
    products = [
        {"product_id": "1", "product_quantity": "4", "product_price": "25", "product_title": "Mug"}
    ]
    body = purchase(order_subtotal="60.00", products=products)
    assert award(sandbox, body).json()["data"]["points"] == 60


@pytest.mark.parametrize(
    ("approval_date", "status"),
    [("10/15/2019 16:10:50", "pending"), (None, "auto_approved")],
)
def test_points_status_pending_only_with_an_approval_date(sandbox, approval_date, status):
    body = purchase()
    if approval_date:
        body["approval_date"] = approval_date
    assert award(sandbox, body).json()["data"]["points_status"] == status


def test_an_order_worth_less_than_a_point_is_awarded_zero_points(sandbox):
    # Zinrelo publishes no code for it: the sandbox invents none.
    response = award(sandbox, purchase(order_subtotal="0.50", order_total="0.50"))

    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"]["points"] == 0
    assert sandbox.order_points("1001") == 0


def test_duplicate_order_id_is_refused_and_recorded_once(sandbox):
    first = award(sandbox, purchase("75"))
    second = award(sandbox, purchase("75", order_subtotal="500"))

    assert first.json()["success"] is True
    assert second.status_code == 200
    assert second.json() == {
        "success": False,
        "error_code": "DUPLICATE_ORDER_ID",
        "reason": "Loyalty Points already awarded for the Order ID.",
    }
    assert sandbox.awards_for("75") == [ANY]
    assert sandbox.awarded["75"]["id"] == first.json()["data"]["id"]
    assert sandbox.awarded["75"]["points"] == 1000


@pytest.mark.parametrize(("member_id", "error_code"), sorted(DEFAULT_REFUSALS.items()))
def test_default_refusal_members(sandbox, member_id, error_code):
    reasons = {
        "MEMBER_BLOCKED": "Member has been blocked.",
        "MEMBER_DELETED": "Member record has been deleted.",
        "EXCLUDED_TRANSACTION": "Points could not be awarded because exclusion rule was applied.",
        "PAUSED_ACTIVITY": "Activity is in paused state.",
        "MAX_AWARDS_EXCEEDED": "Maximum award limit exceeded.",
    }
    response = award(sandbox, purchase(member_id=member_id))

    assert response.status_code == 200
    assert response.json() == {
        "success": False,
        "error_code": error_code,
        "reason": reasons[error_code],
    }
    assert sandbox.awards_for("1001") == []


def test_custom_refusals_replace_the_defaults(make_sandbox):
    box = make_sandbox(refusals={"closed@example.com": "STORE_INACTIVE"})

    refused = award(box, purchase("1", member_id="closed@example.com")).json()
    blocked_default = award(box, purchase("2", member_id="blocked@example.com")).json()

    assert refused["error_code"] == "STORE_INACTIVE"
    assert refused["reason"] == "Store is not active."
    assert blocked_default["success"] is True


# Refused requests


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"partner-id": "sandbox-partner"},
        {"api-key": "sandbox-key"},
        {"partner-id": "sandbox-partner", "api-key": "wrong"},
        {"partner-id": "wrong", "api-key": "sandbox-key"},
    ],
    ids=["none", "no-key", "no-partner", "wrong-key", "wrong-partner"],
)
def test_bad_credentials_get_401(sandbox, headers):
    response = award(sandbox, purchase(), headers=headers)

    assert response.status_code == 401
    assert response.json()["success"] is False
    assert response.json()["error_code"] == "ERROR_UNAUTHORIZED"
    assert response.json()["reason"]
    assert sandbox.awards_for("1001") == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_content_type_must_be_json(sandbox, content_type):
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    response = requests.post(
        sandbox.url + "transactions/award",
        data=b'{"member_id": "x"}',
        headers=headers,
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_REQUEST"
    assert response.json()["reason"].startswith("Invalid request: unsupported Content-Type")


def test_json_content_type_may_carry_a_charset(sandbox):
    response = requests.post(
        sandbox.url + "transactions/award",
        data=json.dumps(purchase()).encode(),
        headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
        timeout=TIMEOUT,
    )
    assert response.json()["success"] is True


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b"", b'{"order_total": NaN}', b"\xff\xfe{"]
)
def test_invalid_json_is_refused(sandbox, body):
    response = requests.post(
        sandbox.url + "transactions/award",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_JSON"


def test_a_chunked_body_is_refused_and_the_connection_closed(sandbox):
    response = requests.post(
        sandbox.url + "transactions/award",
        data=iter([b'{"a": 1}']),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_REQUEST"
    assert response.headers.get("Connection") == "close"


@pytest.mark.parametrize("field", ["member_id", "activity_id", "transaction_attributes"])
def test_each_mandatory_request_field(sandbox, field):
    body = purchase()
    del body[field]
    response = award(sandbox, body)

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert field in response.json()["reason"]


@pytest.mark.parametrize("field", ["order_id", "order_total", "order_subtotal"])
def test_each_mandatory_purchase_attribute(sandbox, field):
    body = purchase()
    del body["transaction_attributes"][field]
    response = award(sandbox, body)

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert field in response.json()["reason"]


@pytest.mark.parametrize("subtotal", ["0.01", "0.00", "-5", "abc"])
def test_subtotal_must_be_a_number_above_one_cent(sandbox, subtotal):
    response = award(sandbox, purchase(order_subtotal=subtotal))

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert "order_subtotal" in response.json()["reason"]


def test_a_subtotal_of_two_cents_passes_validation(sandbox):
    # It passes the 0.01 rule and reaches the points rule, where 0.02 floors to zero points.
    response = award(sandbox, purchase(order_subtotal="0.02"))

    assert response.status_code == 200
    assert response.json()["data"]["points"] == 0


@pytest.mark.parametrize(
    "field", ["product_id", "product_quantity", "product_price", "product_title"]
)
def test_each_product_field_is_mandatory(sandbox, field):
    product = {
        "product_id": "1",
        "product_quantity": "1",
        "product_price": "15",
        "product_title": "Sweatshirt",
    }
    del product[field]
    response = award(sandbox, purchase(products=[product]))

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert field in response.json()["reason"]


@pytest.mark.parametrize(
    ("quantity", "price"), [("-1.5", "10"), ("0", "10"), ("1", "-3"), ("one", "10")]
)
def test_product_quantity_and_price_must_make_sense(sandbox, quantity, price):
    product = {
        "product_id": "1",
        "product_quantity": quantity,
        "product_price": price,
        "product_title": "Sweatshirt",
    }
    response = award(sandbox, purchase(products=[product]))

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID


def test_points_passed_is_not_allowed_for_purchases(sandbox):
    body = {**purchase(), "points_passed": 100}
    response = award(sandbox, body)

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert "points_passed" in response.json()["reason"]


def test_other_activities_are_refused(sandbox):
    body = {**purchase(), "activity_id": "write_a_review"}
    response = award(sandbox, body)

    assert response.status_code == 400
    assert "write_a_review" in response.json()["reason"]


@pytest.mark.parametrize("field", ["transaction_date", "approval_date"])
@pytest.mark.parametrize(
    "value", ["2019-10-05 23:10:55", "10/5/2019 23:10:55", "13/05/2019 23:10:55", "10/05/2019"]
)
def test_dates_must_be_mm_dd_yyyy_hh_mm_ss(sandbox, field, value):
    body = {**purchase(), field: value}
    response = award(sandbox, body)

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert field in response.json()["reason"]


# Members


def test_member_points_are_the_sum_of_its_awards(sandbox):
    award(sandbox, purchase("1", order_subtotal="10"))
    award(sandbox, purchase("2", order_subtotal="32.50"))
    award(sandbox, {**purchase("3", order_subtotal="7"), "approval_date": FUTURE})
    award(sandbox, purchase("4", member_id="other@example.com", order_subtotal="99"))

    response = requests.get(
        sandbox.url + "members/jane%40example.com",
        params={"idParam": "member_id"},
        headers=AUTH,
        timeout=TIMEOUT,
    )

    assert response.status_code == 200
    assert response.json()["success"] is True
    data = response.json()["data"]
    assert data["member_id"] == "jane@example.com"
    assert data["available_points"] == 42
    assert data["pending_points"] == 7


def test_unknown_member(sandbox):
    response = requests.get(
        sandbox.url + "members/nobody@example.com?idParam=member_id",
        headers=AUTH,
        timeout=TIMEOUT,
    )

    assert response.status_code == 200
    assert response.json() == {
        "success": False,
        "error_code": "INVALID_MEMBER",
        "reason": "Member does not exist.",
    }


def test_create_member_then_again(sandbox):
    url = sandbox.url + "members"
    body = {"member_id": "new@example.com", "first_name": "New"}
    created = requests.post(url, json=body, headers=AUTH, timeout=TIMEOUT)
    again = requests.post(url, json=body, headers=AUTH, timeout=TIMEOUT)
    fetched = requests.get(
        sandbox.url + "members/new@example.com?idParam=member_id", headers=AUTH, timeout=TIMEOUT
    )

    assert created.json()["success"] is True
    assert created.json()["data"]["member_id"] == "new@example.com"
    assert again.status_code == 200
    assert again.json()["error_code"] == "MEMBER_ID_ALREADY_IN_USE"
    assert fetched.json()["data"]["first_name"] == "New"
    assert fetched.json()["data"]["available_points"] == 0


def test_an_awarded_member_already_exists(sandbox):
    award(sandbox, purchase())
    response = requests.post(
        sandbox.url + "members",
        json={"member_id": "jane@example.com"},
        headers=AUTH,
        timeout=TIMEOUT,
    )
    assert response.json()["error_code"] == "MEMBER_ID_ALREADY_IN_USE"


def test_create_member_needs_a_member_id(sandbox):
    response = requests.post(
        sandbox.url + "members", json={"first_name": "Anon"}, headers=AUTH, timeout=TIMEOUT
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert "member_id" in response.json()["reason"]


def test_members_need_credentials(sandbox):
    bad = {"partner-id": "sandbox-partner", "api-key": "nope"}
    got = requests.get(sandbox.url + "members/x?idParam=member_id", headers=bad, timeout=TIMEOUT)
    made = requests.post(
        sandbox.url + "members", json={"member_id": "x"}, headers=bad, timeout=TIMEOUT
    )

    assert got.status_code == made.status_code == 401
    assert got.json()["error_code"] == made.json()["error_code"] == "ERROR_UNAUTHORIZED"


def test_unknown_id_param(sandbox):
    response = requests.get(sandbox.url + "members/x?idParam=email", headers=AUTH, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error_code"] == "ID_PARAM_NAME_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/loyalty/transactions/award"),
        ("POST", "/v1/loyalty/purchase"),
        ("GET", "/v2/loyalty/nothing"),
        ("DELETE", "/v2/loyalty/members/x"),
        ("GET", "/v2/loyalty/transactions/75/approve"),
        ("POST", "/v2/loyalty/transactions/75/cancel"),
        ("POST", "/v2/loyalty/transactions"),
        ("GET", "/"),
    ],
)
def test_anything_else_is_a_plain_404(sandbox, method, path):
    origin = sandbox.url.removesuffix("/v2/loyalty/")
    response = requests.request(method, origin + path, headers=AUTH, json={}, timeout=TIMEOUT)

    assert response.status_code == 404
    # HTTP's own "Not Found" (seeds/000's standard codes): Zinrelo's table has no code for it.
    assert response.json() == {"success": False, "reason": "The resource does not exist."}


# Returns, cancellations, approval

RETURN_FIELDS = {
    "id",
    "transaction_type",
    "member_id",
    "activity_id",
    "points",
    "points_status",
    "created_date",
    "returned_for_order_id",
    "transaction_attributes",
}


def product(product_id, quantity, price):
    return {
        "product_id": product_id,
        "product_quantity": quantity,
        "product_price": price,
        "product_title": f"Thing {product_id}",
    }


# 2 x 10.00 + 1 x 29.99 = 49.99: 49 points, so a return's share of them is visibly floored.
PRODUCTS = [product("SKU-1", "2", "10.00"), product("SKU-2", "1", "29.99")]


def shop_order(box, order_id="1001", member_id="jane@example.com", **body):
    answer = award(
        box, {**purchase(order_id, member_id, order_subtotal="49.99", products=PRODUCTS), **body}
    )
    assert answer.json()["data"]["points"] == 49
    return answer.json()["data"]


def give_back(order_id="1001", member_id="jane@example.com", **attributes):
    return {
        "member_id": member_id,
        "activity_id": "made_a_purchase",
        "transaction_attributes": {"order_id": order_id, **attributes},
    }


def send_return(box, body, *, timeout=TIMEOUT):
    return requests.post(box.url + "transactions/return", json=body, headers=AUTH, timeout=timeout)


def act(box, target, action, query="?idParam=order_id", *, timeout=TIMEOUT):
    url = f"{box.url}transactions/{quote(target, safe='')}/{action}{query}"
    return requests.post(url, headers=AUTH, timeout=timeout)


def refusal(code, reason):
    return {"success": False, "error_code": code, "reason": reason}


def test_a_full_return_deducts_everything_left(sandbox):
    shop_order(sandbox)
    tags = ["refund:R-1"]
    response = send_return(sandbox, give_back(reason="Refunded", tags=tags))

    assert response.status_code == 200
    assert response.json()["success"] is True
    deduct = response.json()["data"]
    assert set(deduct) == RETURN_FIELDS
    assert deduct["transaction_type"] == "deduct"
    assert deduct["points"] == 49
    assert deduct["points_status"] == "deducted"
    assert deduct["returned_for_order_id"] == "1001"
    assert deduct["member_id"] == "jane@example.com"
    assert deduct["transaction_attributes"] == {
        "order_id": "1001",
        "reason": "Refunded",
        "tags": tags,
    }
    assert DATE.fullmatch(deduct["created_date"])
    assert sandbox.order_points("1001") == 0
    assert sandbox.balance("jane@example.com") == {"available": 0, "pending": 0}
    assert sandbox.deductions("1001") == [deduct]


def test_a_return_by_amount_deducts_its_share_floored(sandbox):
    shop_order(sandbox)
    response = send_return(sandbox, give_back(returned_amount="10.00"))

    assert response.json()["data"]["points"] == 9  # 49 * 10 / 49.99 = 9.80
    assert sandbox.order_points("1001") == 40
    assert sandbox.balance("jane@example.com")["available"] == 40


def test_a_return_by_product_deducts_its_units_share(sandbox):
    shop_order(sandbox)
    first = send_return(
        sandbox, give_back(returned_product_id="SKU-1", returned_product_quantity="1")
    )
    too_many = send_return(
        sandbox, give_back(returned_product_id="SKU-1", returned_product_quantity=2)
    )
    second = send_return(
        sandbox, give_back(returned_product_id="SKU-1", returned_product_quantity=1)
    )

    assert first.json()["data"]["points"] == 9
    assert too_many.json() == refusal(
        "PRODUCT_QUANTITY_EXCEEDED", "Returned product quantity exceeds order quantity."
    )
    assert second.json()["data"]["points"] == 9
    assert sandbox.order_points("1001") == 31


def test_a_product_split_over_lines_returns_from_each(sandbox):
    # A line that does not divide to the cent is sent as two lines of one product id.
    products = [product("SKU-1", "2", "3.33"), product("SKU-1", "1", "3.34")]
    award(sandbox, purchase(order_subtotal="10.00", products=products))
    response = send_return(
        sandbox, give_back(returned_product_id="SKU-1", returned_product_quantity="3")
    )

    assert response.json()["data"]["points"] == 10
    assert sandbox.order_points("1001") == 0


def test_a_product_return_of_a_prorated_award_is_prorated_too(sandbox):
    products = [product("SKU-1", "4", "25")]  # 100 in prices, 60 after the discount
    award(sandbox, purchase(order_subtotal="60.00", products=products))
    response = send_return(
        sandbox, give_back(returned_product_id="SKU-1", returned_product_quantity="1")
    )

    assert response.json()["data"]["points"] == 15


def test_returns_are_not_idempotent(sandbox):
    shop_order(sandbox)
    body = give_back(returned_amount="10.00", tags=["refund:R-7"])
    first = send_return(sandbox, body)
    again = send_return(sandbox, body)

    assert first.json()["success"] is again.json()["success"] is True
    assert first.json()["data"]["id"] != again.json()["data"]["id"]
    assert sandbox.order_points("1001") == 49 - 9 - 9
    assert [d["points"] for d in sandbox.deductions("1001")] == [9, 9]


def test_returning_all_the_value_left_takes_every_point_left(sandbox):
    shop_order(sandbox)
    first = send_return(sandbox, give_back(returned_amount="25.00"))
    rest = send_return(sandbox, give_back(returned_amount="24.99"))

    assert first.json()["data"]["points"] == 24  # 24.5 floored
    assert rest.json()["data"]["points"] == 25  # the rest: no point stranded by rounding
    assert sandbox.order_points("1001") == 0


@pytest.mark.parametrize("amount", ["0", "-1", "abc", "NaN", "50.00", 0, True, [], ""])
def test_an_amount_that_is_not_there_to_deduct(sandbox, amount):
    shop_order(sandbox)
    response = send_return(sandbox, give_back(returned_amount=amount))

    if amount == "":  # an empty amount is no amount: a full return
        assert response.json()["data"]["points"] == 49
        return
    assert response.status_code == 200
    assert response.json() == refusal("INVALID_AMOUNT_TO_DEDUCT", "Not enough points to deduct.")
    assert sandbox.order_points("1001") == 49


def test_nothing_left_to_deduct(sandbox):
    shop_order(sandbox)
    send_return(sandbox, give_back())
    for body in (
        give_back(),
        give_back(returned_amount="1"),
        give_back(returned_product_id="SKU-2", returned_product_quantity="1"),
    ):
        response = send_return(sandbox, body)
        assert response.json()["error_code"] == "INVALID_AMOUNT_TO_DEDUCT"
    assert len(sandbox.deductions("1001")) == 1


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        (give_back("404"), "ORDER_NOT_EXIST", "Order with this id does not exist."),
        (
            give_back(returned_amount="5", returned_product_id="SKU-1"),
            "PRODUCT_ID_AND_RETURN_AMOUNT_PASSED",
            "Please pass either returned product id or returned amount.",
        ),
        (
            give_back(returned_product_id="SKU-9", returned_product_quantity="1"),
            "INVALID_PRODUCT_ID",
            "Incorrect product id passed.",
        ),
        (
            give_back(returned_product_id="SKU-2", returned_product_quantity="2"),
            "PRODUCT_QUANTITY_EXCEEDED",
            "Returned product quantity exceeds order quantity.",
        ),
        (give_back(member_id="joe@example.com"), "INVALID_MEMBER", "Member does not exist."),
    ],
    ids=["unknown-order", "both", "unknown-product", "too-many", "other-member"],
)
def test_return_refusals_change_nothing(sandbox, body, code, reason):
    shop_order(sandbox)
    response = send_return(sandbox, body)

    assert response.status_code == 200
    assert response.json() == refusal(code, reason)
    assert sandbox.order_points("1001") == 49
    assert sandbox.deductions("1001") == []


@pytest.mark.parametrize(
    "attributes",
    [
        {"returned_product_id": "SKU-1"},
        {"returned_product_id": "SKU-1", "returned_product_quantity": "0"},
        {"returned_product_id": "SKU-1", "returned_product_quantity": "-1"},
        {"returned_product_quantity": "1"},
    ],
)
def test_a_product_return_needs_a_quantity_above_zero_and_a_product(sandbox, attributes):
    shop_order(sandbox)
    response = send_return(sandbox, give_back(**attributes))

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert sandbox.order_points("1001") == 49


@pytest.mark.parametrize("field", ["member_id", "activity_id", "transaction_attributes"])
def test_each_mandatory_return_field(sandbox, field):
    shop_order(sandbox)
    body = give_back()
    del body[field]
    response = send_return(sandbox, body)

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert field in response.json()["reason"]


def test_points_already_spent_cannot_be_returned(sandbox):
    shop_order(sandbox)
    sandbox.spend("jane@example.com", 45)
    response = send_return(sandbox, give_back(returned_amount="10.00"))
    small = send_return(sandbox, give_back(returned_amount="2.00"))

    assert response.status_code == 200
    assert response.json() == refusal(
        "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE",
        "Returned order value exceeds user's points balance.",
    )
    assert small.json()["data"]["points"] == 1
    assert sandbox.balance("jane@example.com")["available"] == 3


def test_a_return_from_a_pending_award_is_a_pending_deduction(sandbox):
    shop_order(sandbox, approval_date=FUTURE)
    response = send_return(sandbox, give_back(returned_amount="10.00"))

    assert response.json()["data"]["points_status"] == "pending_deduction"
    assert sandbox.balance("jane@example.com") == {"available": 0, "pending": 40}

    approved = act(sandbox, "1001", "approve")

    assert approved.json()["data"]["points_status"] == "approved"
    assert sandbox.balance("jane@example.com") == {"available": 40, "pending": 0}
    assert [d["points_status"] for d in sandbox.deductions("1001")] == ["deducted"]


def test_reject_a_pending_award_by_order_id(sandbox):
    shop_order(sandbox, "kept")
    shop_order(sandbox, approval_date=FUTURE)
    response = act(sandbox, "1001", "reject")

    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"]["points_status"] == "rejected"
    assert response.json()["data"]["order_id"] == "1001"
    assert sandbox.order_points("1001") == 0
    assert sandbox.balance("jane@example.com") == {"available": 49, "pending": 0}
    assert sandbox.ledger("1001") == {
        "transaction_id": response.json()["data"]["id"],
        "member_id": "jane@example.com",
        "status": "rejected",
        "awarded": 49,
        "pending": 0,
        "approved": 0,
        "rejected": 49,
        "returned": 0,
        "left": 0,
    }
    returned = send_return(sandbox, give_back())
    assert returned.json()["error_code"] == "INVALID_AMOUNT_TO_DEDUCT"


def test_approve_by_transaction_id(sandbox):
    transaction_id = shop_order(sandbox, approval_date=FUTURE)["id"]
    assert sandbox.balance("jane@example.com") == {"available": 0, "pending": 49}

    response = act(sandbox, transaction_id, "approve", query="")

    assert response.status_code == 200
    assert response.json()["data"]["id"] == transaction_id
    assert response.json()["data"]["points_status"] == "approved"
    assert DATE.fullmatch(response.json()["data"]["approved_date"])
    assert sandbox.balance("jane@example.com") == {"available": 49, "pending": 0}
    assert sandbox.ledger("1001")["approved"] == 49


@pytest.mark.parametrize(
    ("first", "then", "state"),
    [
        ("reject", "reject", "rejected"),
        ("reject", "approve", "rejected"),
        ("approve", "approve", "approved"),
        ("approve", "reject", "approved"),
        ("reject", "reverse", "rejected"),
        (None, "reverse", "pending"),
    ],
)
def test_a_wrong_state_is_an_invalid_request_naming_it(sandbox, first, then, state):
    shop_order(sandbox, approval_date=FUTURE)
    if first:
        assert act(sandbox, "1001", first).json()["success"] is True
    before = sandbox.ledger("1001")
    response = act(sandbox, "1001", then)

    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID
    assert state in response.json()["reason"]
    assert sandbox.ledger("1001") == before


def test_an_auto_approved_award_is_not_pending(sandbox):
    shop_order(sandbox)
    response = act(sandbox, "1001", "approve")
    assert response.status_code == 400
    assert response.json()["reason"] == (
        "Invalid request parameter value: only a pending award can be approved; "
        "this one is auto_approved."
    )


def test_reverse_deducts_what_is_left_once(sandbox):
    shop_order(sandbox)
    send_return(sandbox, give_back(returned_amount="10.00"))
    response = act(sandbox, "1001", "reverse")
    again = act(sandbox, "1001", "reverse")

    assert response.status_code == 200
    deduct = response.json()["data"]
    assert set(deduct) == RETURN_FIELDS
    assert (deduct["transaction_type"], deduct["points"]) == ("deduct", 40)
    assert deduct["returned_for_order_id"] == "1001"
    assert sandbox.order_points("1001") == 0
    assert again.status_code == 400
    assert "fully deducted" in again.json()["reason"]
    assert [d["points"] for d in sandbox.deductions("1001")] == [9, 40]


def test_reverse_needs_the_points_still_available(sandbox):
    shop_order(sandbox)
    sandbox.spend("jane@example.com", 1)
    response = act(sandbox, "1001", "reverse")

    assert response.status_code == 200
    assert response.json() == refusal("INVALID_AMOUNT_TO_DEDUCT", "Not enough points to deduct.")
    assert sandbox.order_points("1001") == 49


@pytest.mark.parametrize("action", ["reject", "approve", "reverse"])
@pytest.mark.parametrize("query", ["?idParam=order_id", ""], ids=["by-order", "by-id"])
def test_an_unknown_transaction_is_404(sandbox, action, query):
    response = act(sandbox, "nope", action, query)

    assert response.status_code == 404
    assert response.json() == refusal("TRANSACTION_DOES_NOT_EXIST", "Transaction does not exist.")


def test_a_deduct_transaction_cannot_be_rejected(sandbox):
    shop_order(sandbox)
    deduct_id = send_return(sandbox, give_back(returned_amount="1")).json()["data"]["id"]
    response = act(sandbox, deduct_id, "reject", query="")
    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID


def test_an_unknown_id_param_on_an_action(sandbox):
    shop_order(sandbox, approval_date=FUTURE)
    response = act(sandbox, "1001", "reject", query="?idParam=order_number")

    assert response.status_code == 400
    assert response.json()["error_code"] == "ID_PARAM_NAME_NOT_FOUND"
    assert sandbox.ledger("1001")["status"] == "pending"


def test_an_order_id_with_a_slash_is_found_by_order(sandbox):
    award(sandbox, {**purchase("A/7"), "approval_date": FUTURE})
    assert act(sandbox, "A/7", "reject").json()["data"]["points_status"] == "rejected"


def test_actions_and_returns_need_credentials(sandbox):
    shop_order(sandbox, approval_date=FUTURE)
    bad = {"partner-id": "sandbox-partner", "api-key": "nope"}
    rejected = requests.post(
        sandbox.url + "transactions/1001/reject?idParam=order_id", headers=bad, timeout=TIMEOUT
    )
    returned = requests.post(
        sandbox.url + "transactions/return", json=give_back(), headers=bad, timeout=TIMEOUT
    )

    assert rejected.status_code == returned.status_code == 401
    assert sandbox.ledger("1001")["left"] == 49


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_a_pending_award_approves_itself_once_its_date_has_passed(make_sandbox):
    clock = Clock(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    box = make_sandbox(clock=clock)
    answer = shop_order(box, approval_date="12/15/2026 12:00:00")

    assert answer["points_status"] == "pending"
    clock.now = datetime(2026, 12, 15, 11, 59, 59, tzinfo=UTC)
    assert box.ledger("1001")["status"] == "pending"
    assert box.balance("jane@example.com") == {"available": 0, "pending": 49}

    clock.now = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
    member = get(box, "members/jane%40example.com?idParam=member_id").json()["data"]
    assert (member["available_points"], member["pending_points"]) == (49, 0)
    assert box.ledger("1001")["status"] == "approved"
    [listed] = get(box, "transactions").json()["data"]["transactions"]
    assert (listed["points_status"], listed["approved_date"]) == ("approved", "12/15/2026 12:00:00")
    assert act(box, "1001", "reject").status_code == 400


def test_an_approval_date_already_past_approves_at_the_next_call(sandbox):
    answer = shop_order(sandbox, approval_date="10/15/2019 16:10:50")
    assert answer["points_status"] == "pending"  # the award's own answer

    assert sandbox.ledger("1001")["status"] == "approved"
    assert send_return(sandbox, give_back()).json()["data"]["points_status"] == "deducted"


def test_a_rejected_award_stays_rejected_after_its_date(make_sandbox):
    clock = Clock(datetime(2026, 12, 1, tzinfo=UTC))
    box = make_sandbox(clock=clock)
    shop_order(box, approval_date="12/15/2026 00:00:00")
    act(box, "1001", "reject")
    clock.now = datetime(2027, 1, 1, tzinfo=UTC)

    assert box.ledger("1001")["status"] == "rejected"
    assert box.balance("jane@example.com") == {"available": 0, "pending": 0}


def test_member_view_shows_available_and_pending_points(sandbox):
    shop_order(sandbox, "1")
    shop_order(sandbox, "2", approval_date=FUTURE)
    send_return(sandbox, give_back("1", returned_amount="10.00"))
    send_return(sandbox, give_back("2", returned_amount="25.00"))

    data = get(sandbox, "members/jane@example.com?idParam=member_id").json()["data"]
    assert (data["available_points"], data["pending_points"]) == (40, 25)


def test_concurrent_full_returns_deduct_once(sandbox):
    shop_order(sandbox)
    barrier = threading.Barrier(16)
    codes: Counter[object] = Counter()
    lock = threading.Lock()

    def client():
        barrier.wait()
        answer = send_return(sandbox, give_back()).json()
        with lock:
            codes[answer.get("error_code", "deducted")] += 1

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert codes == {"deducted": 1, "INVALID_AMOUNT_TO_DEDUCT": 15}
    assert sandbox.order_points("1001") == 0


def test_ledger_of_an_order_never_awarded(sandbox):
    with pytest.raises(KeyError):
        sandbox.ledger("nope")
    assert sandbox.order_points("nope") == 0
    assert sandbox.deductions("nope") == []
    assert sandbox.balance("nobody@example.com") == {"available": 0, "pending": 0}


def test_spend_only_what_is_available(sandbox):
    shop_order(sandbox)
    with pytest.raises(ValueError, match="49 points available"):
        sandbox.spend("jane@example.com", 50)
    redeemed = sandbox.spend("jane@example.com", 49)
    assert (redeemed["transaction_type"], redeemed["points"]) == ("redeem", 49)
    assert sandbox.balance("jane@example.com")["available"] == 0


def test_a_store_with_a_unique_attribute_refuses_its_second_use(make_sandbox):
    box = make_sandbox(unique_attributes=["order_id", "invoice"])
    first = award(box, purchase("75"))
    again = award(box, purchase("75"))
    invoice = award(box, purchase("76", invoice="F-1"))
    same_invoice = award(box, purchase("77", invoice="F-1"))

    assert first.json()["success"] is invoice.json()["success"] is True
    assert again.json() == refusal(
        "TRANSACTION_ATTRIBUTE_NOT_UNIQUE",
        "Unique transaction attribute for given activity is not unique.",
    )
    assert same_invoice.json()["error_code"] == "TRANSACTION_ATTRIBUTE_NOT_UNIQUE"
    assert len(box.awards_for("75")) == 1
    assert box.awards_for("77") == []


# Listing transactions


def get(box, path, **params):
    return requests.get(box.url + path, params=params, headers=AUTH, timeout=TIMEOUT)


def member_list(box, member_id="jane@example.com", **params):
    path = f"members/{quote(member_id, safe='')}/transactions"
    return get(box, path, idParam="member_id", **params)


def test_a_members_transactions_newest_first(sandbox):
    shop_order(sandbox, "1")
    shop_order(sandbox, "2")
    shop_order(sandbox, "3", member_id="joe@example.com")
    deduct = send_return(sandbox, give_back("1", tags=["refund:R-1"])).json()["data"]

    response = member_list(sandbox)

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["total"] == 3
    assert (data["next_start_index"], data["more"]) == (None, False)
    listed = data["transactions"]
    assert [(t["transaction_type"], t.get("order_id")) for t in listed] == [
        ("deduct", None),
        ("award", "2"),
        ("award", "1"),
    ]
    assert listed[0] == deduct
    assert listed[0]["transaction_attributes"]["tags"] == ["refund:R-1"]


def test_paging_by_start_index_and_count(sandbox):
    for number in range(5):
        shop_order(sandbox, str(number))

    pages, start = [], 0
    while start is not None:
        data = member_list(sandbox, start_index=start, count=2).json()["data"]
        pages.append([t["order_id"] for t in data["transactions"]])
        assert data["more"] is (data["next_start_index"] is not None)
        assert data["total"] == 5
        start = data["next_start_index"]

    assert pages == [["4", "3"], ["2", "1"], ["0"]]


def test_filters_by_type_and_status(sandbox):
    shop_order(sandbox, "1")
    shop_order(sandbox, "2", approval_date=FUTURE)
    send_return(sandbox, give_back("1", returned_amount="1"))
    send_return(sandbox, give_back("2", returned_amount="1"))

    deducts = member_list(sandbox, transaction_type="deduct").json()["data"]["transactions"]
    pending = member_list(sandbox, points_status="pending").json()["data"]["transactions"]
    both = member_list(sandbox, transaction_type="deduct", points_status="pending_deduction")

    assert [t["returned_for_order_id"] for t in deducts] == ["2", "1"]
    assert [t["order_id"] for t in pending] == ["2"]
    assert [t["returned_for_order_id"] for t in both.json()["data"]["transactions"]] == ["2"]


def test_filter_by_created_date(make_sandbox):
    clock = Clock(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    box = make_sandbox(clock=clock)
    shop_order(box, "nov30")
    for day in (1, 2, 3):
        clock.now = datetime(2026, 12, day, 8, 0, tzinfo=UTC)
        shop_order(box, f"dec{day}")

    def created(spec):
        answer = member_list(box, created_date=json.dumps(spec))
        return [t["order_id"] for t in answer.json()["data"]["transactions"]]

    assert created({"gte": "12/02/2026"}) == ["dec3", "dec2"]
    assert created({"lt": "12/01/2026"}) == ["nov30"]
    assert created({"between": "12/01/2026-12/02/2026"}) == ["dec2", "dec1"]
    assert created({"gte": "12/01/2026 08:00:01"}) == ["dec3", "dec2"]
    assert created({"lte": "12/01/2026"}) == ["dec1", "nov30"]
    assert created({"gt": "12/02/2026"}) == ["dec3"]


@pytest.mark.parametrize(
    "spec", ["not json", '{"gte": "2026-12-01"}', '{"after": "12/01/2026"}', '{"between": "x"}']
)
def test_a_bad_date_filter_is_an_invalid_request(sandbox, spec):
    response = member_list(sandbox, created_date=spec)
    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID


@pytest.mark.parametrize("count", ["0", "1001", "abc", "-1"])
def test_count_must_be_from_1_to_1000(sandbox, count):
    response = member_list(sandbox, count=count)
    assert response.status_code == 400
    assert response.json()["error_code"] == INVALID


@pytest.mark.parametrize("start", ["-1", "abc", "4"])
def test_a_start_index_beyond_the_list_is_an_invalid_cursor(sandbox, start):
    for number in range(3):
        shop_order(sandbox, str(number))
    response = member_list(sandbox, start_index=start)

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error_code": "INVALID_CURSOR",
        "reason": "Invalid start cursor provided",
    }


def test_a_start_index_at_the_end_is_an_empty_page(sandbox):
    shop_order(sandbox)
    data = member_list(sandbox, start_index=1).json()["data"]
    assert (data["transactions"], data["total"], data["more"]) == ([], 1, False)


def test_an_unknown_member_has_no_transactions(sandbox):
    response = member_list(sandbox, "nobody@example.com")
    assert response.status_code == 200
    assert response.json()["data"] == {
        "transactions": [],
        "total": 0,
        "next_start_index": None,
        "more": False,
    }


def test_a_member_id_with_a_slash_is_url_encoded(sandbox):
    shop_order(sandbox, member_id="a/b@example.com")
    assert member_list(sandbox, "a/b@example.com").json()["data"]["total"] == 1


def test_member_transactions_unknown_id_param(sandbox):
    response = get(sandbox, "members/x/transactions", idParam="email")
    assert response.status_code == 400
    assert response.json()["error_code"] == "ID_PARAM_NAME_NOT_FOUND"


def test_every_members_transactions(sandbox):
    shop_order(sandbox, "1")
    shop_order(sandbox, "2", member_id="joe@example.com")
    data = get(sandbox, "transactions", count=1).json()["data"]

    assert [t["member_id"] for t in data["transactions"]] == ["joe@example.com"]
    assert (data["total"], data["next_start_index"], data["more"]) == (2, 1, True)


# The lost answer: applied, then the connection is reset


def test_a_lost_return_is_applied_and_a_blind_resend_deducts_twice(make_sandbox):
    box = make_sandbox(faults={"lost": 1.0})
    with contextlib.suppress(requests.ConnectionError):
        award(box, purchase(order_subtotal="49.99", products=PRODUCTS))
    body = give_back(returned_amount="10.00", tags=["refund:R-1"])

    with pytest.raises(requests.ConnectionError, match="ConnectionResetError"):
        send_return(box, body)

    record = box.requests[-1]
    assert (record.status, record.fault, record.error_code, record.points) == (
        None,
        "lost",
        None,
        9,
    )
    assert box.order_points("1001") == 40
    [found] = member_list(box, transaction_type="deduct").json()["data"]["transactions"]
    assert found["transaction_attributes"]["tags"] == ["refund:R-1"]  # it can be looked up

    with pytest.raises(requests.ConnectionError):
        send_return(box, body)  # sent again blindly
    assert box.order_points("1001") == 31


@pytest.mark.parametrize(
    ("call", "check"),
    [
        (lambda box: award(box, purchase("new")), lambda box: len(box.awards_for("new")) == 1),
        (
            lambda box: send_return(box, give_back(returned_amount="10.00")),
            lambda box: box.order_points("1001") == 40,
        ),
        (
            lambda box: act(box, "pending", "reject"),
            lambda box: box.ledger("pending")["status"] == "rejected",
        ),
        (
            lambda box: act(box, "pending", "approve"),
            lambda box: box.ledger("pending")["status"] == "approved",
        ),
        (lambda box: act(box, "1001", "reverse"), lambda box: box.order_points("1001") == 0),
    ],
    ids=["award", "return", "reject", "approve", "reverse"],
)
def test_the_lost_fault_applies_every_write_call(make_sandbox, call, check):
    box = make_sandbox(faults={"lost": 1.0})
    with contextlib.suppress(requests.ConnectionError):  # lost answers, applied awards
        award(box, {**purchase("pending", order_subtotal="49.99"), "approval_date": FUTURE})
    with contextlib.suppress(requests.ConnectionError):
        award(box, purchase(order_subtotal="49.99"))
    assert box.order_points("pending") == box.order_points("1001") == 49
    with pytest.raises(requests.ConnectionError, match="ConnectionResetError"):
        call(box)

    assert check(box)
    assert box.requests[-1].fault == "lost"
    assert box.requests[-1].status is None


@pytest.mark.parametrize("fault", ["503", "reset"])
@pytest.mark.parametrize("action", ["return", "reject", "reverse"])
def test_other_faults_leave_write_calls_unapplied(make_sandbox, fault, action):
    box = make_sandbox(faults={fault: 0.5}, seed=2)
    while len(box.awarded) < 2:  # the seeded draws decide which awards go through
        with contextlib.suppress(requests.ConnectionError):
            award(box, {**purchase("pending"), "approval_date": FUTURE})
        with contextlib.suppress(requests.ConnectionError):
            award(box, purchase())
    while True:  # until a call meets the fault; the ledger as it was just before it
        before = (box.ledger("pending"), box.ledger("1001"))
        with contextlib.suppress(requests.ConnectionError):
            if action == "return":
                send_return(box, give_back(returned_amount="1"))
            else:
                act(box, "pending" if action == "reject" else "1001", action)
        if box.requests[-1].fault:
            break

    assert box.requests[-1].fault == fault
    assert (box.ledger("pending"), box.ledger("1001")) == before


def test_fault_reads_fails_the_transaction_lists_too(make_sandbox):
    box = make_sandbox(faults={"503": 1.0}, fault_reads=True)

    assert member_list(box).status_code == 503
    assert get(box, "transactions").status_code == 503
    assert get(box, "members/x", idParam="member_id").json()["error_code"] == "INVALID_MEMBER"


def test_adding_lost_keeps_the_draws_of_the_old_faults(make_sandbox):
    old = fault_sequence(make_sandbox(faults={"503": 0.5}, seed=9), 30)
    new = fault_sequence(make_sandbox(faults={"503": 0.5, "lost": 0.3}, seed=9), 30)

    assert [fault == "503" for fault in old] == [fault == "503" for fault in new]
    assert "lost" in new


# Latency and faults


def test_latency_delays_every_answer(make_sandbox):
    box = make_sandbox(latency=0.2)
    started = time.monotonic()
    response = award(box, purchase())
    elapsed = time.monotonic() - started

    assert response.json()["success"] is True
    assert elapsed >= 0.2


@pytest.mark.parametrize(
    ("fault", "status", "error_code"),
    [
        ("503", 503, "SERVICE_UNAVAILABLE"),
        ("500", 500, "INTERNAL_SERVER_ERROR"),
        ("429", 429, "RATE_LIMIT_EXCEEDED"),
    ],
)
def test_json_error_faults(make_sandbox, fault, status, error_code):
    box = make_sandbox(faults={fault: 1.0})
    response = award(box, purchase())

    assert response.status_code == status
    assert response.json()["success"] is False
    assert response.json()["error_code"] == error_code
    assert box.awards_for("1001") == []
    assert box.requests[-1].fault == fault
    if fault == "503":
        assert response.json()["reason"] == (
            "API Service is unavailable. Please contact Zinrelo support."
        )


def test_429_carries_retry_after(make_sandbox):
    box = make_sandbox(faults={"429": 1.0})
    assert award(box, purchase()).headers["Retry-After"] == "1"


def test_html_fault_is_a_502_proxy_page(make_sandbox):
    box = make_sandbox(faults={"html": 1.0})
    response = award(box, purchase())

    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    assert box.awards_for("1001") == []


def test_faults_come_before_validation(make_sandbox):
    box = make_sandbox(faults={"503": 1.0})
    assert award(box, {}, headers={}).status_code == 503


def test_faults_spare_reads_and_members(make_sandbox):
    box = make_sandbox(faults={"503": 1.0})
    response = requests.get(box.url + "members/x?idParam=member_id", headers=AUTH, timeout=TIMEOUT)
    created = requests.post(
        box.url + "members", json={"member_id": "m"}, headers=AUTH, timeout=TIMEOUT
    )
    listed = requests.get(box.url + "transactions", headers=AUTH, timeout=TIMEOUT)

    assert response.json()["error_code"] == "INVALID_MEMBER"
    assert created.json()["success"] is True
    assert listed.json()["success"] is True


def test_reset_fault_resets_the_connection(make_sandbox):
    box = make_sandbox(faults={"reset": 1.0})
    with pytest.raises(requests.ConnectionError) as raised:
        award(box, purchase())

    assert "ConnectionResetError" in repr(raised.value)  # an RST, not an orderly close
    assert box.awards_for("1001") == []
    assert box.requests[-1].status is None
    assert box.requests[-1].fault == "reset"


def test_hang_fault_never_answers_and_stop_releases_it(make_sandbox):
    box = make_sandbox(faults={"hang": 1.0})
    threads_before = set(threading.enumerate())
    with pytest.raises(requests.ReadTimeout):
        award(box, purchase(), timeout=(2, 0.5))
    hanging = set(threading.enumerate()) - threads_before
    assert hanging  # the handler thread, still waiting

    started = time.monotonic()
    box.stop()
    for thread in hanging:
        thread.join(timeout=2)
    assert time.monotonic() - started < 2
    assert not any(thread.is_alive() for thread in hanging)
    assert box.requests[-1].status is None
    assert box.requests[-1].fault == "hang"


def test_stop_closes_idle_keep_alive_connections(sandbox):
    with requests.Session() as session:
        award(sandbox, purchase(), session=session)
        sandbox.stop()
        with pytest.raises(requests.ConnectionError):
            award(sandbox, purchase("2"), session=session)
    assert sandbox.awards_for("2") == []


def test_slow_accept_records_the_award_the_client_gave_up_on(make_sandbox):
    box = make_sandbox(faults={"slow_accept": 1.0}, slow_seconds=1.0)
    with pytest.raises(requests.ReadTimeout):
        award(box, purchase("75"), timeout=(2, 0.5))

    assert box.awards_for("75") == [ANY]
    retry = award(box, purchase("75"))
    assert retry.json()["error_code"] == "DUPLICATE_ORDER_ID"
    assert box.awards_for("75") == [ANY]


def fault_sequence(box, count):
    with requests.Session() as session:
        for number in range(count):
            with contextlib.suppress(requests.ConnectionError):  # a lost answer
                award(box, purchase(str(number)), session=session)
    return [record.fault for record in box.requests]


def test_same_seed_same_faults(make_sandbox):
    faults = {"503": 0.3, "500": 0.2, "429": 0.2}
    first = fault_sequence(make_sandbox(faults=faults, seed=7), 30)
    second = fault_sequence(make_sandbox(faults=dict(reversed(faults.items())), seed=7), 30)

    assert first == second
    assert len(set(first)) > 1


def test_reset_forgets_everything_and_replays_the_faults(make_sandbox):
    box = make_sandbox(faults={"503": 0.5}, seed=3)
    first = fault_sequence(box, 10)
    requests.post(box.url + "members", json={"member_id": "m"}, headers=AUTH, timeout=TIMEOUT)

    box.reset()

    assert box.requests == []
    assert box.awarded == {}
    assert fault_sequence(box, 10) == first
    assert (
        requests.get(box.url + "members/m?idParam=member_id", headers=AUTH, timeout=TIMEOUT).json()[
            "error_code"
        ]
        == "INVALID_MEMBER"
    )


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"503": 0.6, "500": 0.5}, "more than 1"),
        ({"teapot": 0.1}, "Unknown fault"),
        ({"503": -0.1}, "between 0 and 1"),
        ({"503": 1.5}, "between 0 and 1"),
    ],
)
def test_bad_fault_configurations_are_refused(faults, message):
    with pytest.raises(ValueError, match=message):
        ZinreloSandbox(faults=faults)


def test_rates_summing_to_one_are_accepted():
    ZinreloSandbox(faults={"503": 0.6, "500": 0.3, "429": 0.1})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("503=0.2", ("503", 0.2)),
        ("slow_accept=1", ("slow_accept", 1.0)),
        (" hang =0", ("hang", 0.0)),
    ],
)
def test_parse_fault(text, expected):
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("503", "NAME=RATE"),
        ("teapot=0.1", "Unknown fault 'teapot'; the faults are: 503, 500"),
        ("503=abc", "not a number"),
        ("503=1.5", "between 0 and 1"),
        ("503=nan", "between 0 and 1"),
    ],
)
def test_parse_fault_refuses_bad_input(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_fault(text)


# Server behaviour


@pytest.fixture
def slow_transaction_ids(monkeypatch):
    """Hold each award 5 ms while its transaction id is made, after validation and before the
    award is recorded: a duplicate check done outside the recording lock then races visibly."""
    make_id = uuid.uuid4

    def slow_id():
        time.sleep(0.005)
        return make_id()

    monkeypatch.setattr(uuid, "uuid4", slow_id)


@pytest.mark.usefixtures("slow_transaction_ids")
def test_concurrent_posts_of_one_order_award_it_once(sandbox):
    barrier = threading.Barrier(16)
    codes: Counter[object] = Counter()
    lock = threading.Lock()

    def client():
        with requests.Session() as session:
            barrier.wait()
            for _ in range(20):
                answer = award(sandbox, purchase("same"), session=session).json()
                with lock:
                    codes[answer.get("error_code", "awarded")] += 1

    threads = [threading.Thread(target=client) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert codes == {"awarded": 1, "DUPLICATE_ORDER_ID": 319}
    assert sandbox.awards_for("same") == [ANY]


def test_keep_alive_session_serves_200_requests(sandbox):
    with requests.Session() as session:
        answers = [award(sandbox, purchase(str(n)), session=session) for n in range(200)]

    assert all(answer.json()["success"] for answer in answers)
    assert len(sandbox.awarded) == 200


def test_request_log_keeps_no_credentials(make_sandbox):
    box = make_sandbox(partner_id="partner-5e1f", api_key="key-9c2d-secret")
    headers = {"partner-id": "partner-5e1f", "api-key": "key-9c2d-secret"}
    award(box, purchase(), headers=headers)
    requests.get(
        box.url + "members/jane@example.com?idParam=member_id&api-key=key-9c2d-secret",
        headers=headers,
        timeout=TIMEOUT,
    )

    log = box.requests
    assert [(r.method, r.path, r.status, r.fault, r.error_code) for r in log] == [
        ("POST", "/v2/loyalty/transactions/award", 200, None, None),
        ("GET", "/v2/loyalty/members/jane@example.com", 200, None, None),
    ]
    assert (log[0].order_id, log[0].member_id, log[0].points) == ("1001", "jane@example.com", 1000)
    assert "key-9c2d-secret" not in repr(log)


def test_awarded_is_a_copy(sandbox):
    award(sandbox, purchase("75"))
    sandbox.awarded["75"]["points"] = 0
    sandbox.awarded.clear()

    assert sandbox.awarded["75"]["points"] == 1000


def test_life_cycle():
    box = ZinreloSandbox()
    with pytest.raises(RuntimeError):
        box.url  # noqa: B018

    assert box.start() is box
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v2/loyalty/", box.url)
    with pytest.raises(RuntimeError):
        box.start()
    port = int(box.url.split(":")[2].split("/")[0])
    box.stop()
    box.stop()

    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


@pytest.mark.parametrize("host", ["127.0.0.2", "localhost", "::1"])
def test_loopback_hosts(host):
    with ZinreloSandbox(host=host) as box:
        response = award(box, purchase())
    assert response.json()["success"] is True


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.168.1.10", "127.evil.example", ""],  # noqa: S104 - must be refused
)
def test_non_loopback_hosts_are_refused(host):
    with pytest.raises(ValueError, match="loopback"):
        ZinreloSandbox(host=host)


# The management command


def test_command_refuses_a_non_loopback_host():
    with pytest.raises(CommandError, match="loopback"):
        call_command("zinrelo_sandbox", "--host", "0.0.0.0")  # noqa: S104 - must be refused


def test_command_refuses_a_bad_fault():
    with pytest.raises(CommandError, match="Unknown fault"):
        call_command("zinrelo_sandbox", "--port", "0", "--fail", "teapot=0.5")


def test_command_serves_until_interrupted(monkeypatch):
    out = StringIO()
    seen: dict[str, Any] = {}

    def setting(name):
        found = re.search(rf'"{name}": "([^"]+)"', out.getvalue())
        assert found, f"{name} not printed"
        return found.group(1)

    def interrupt(seconds):
        # Runs while the command is serving: use the settings it printed, then press Ctrl-C.
        seen["url"] = setting("API_URL")
        headers = {"partner-id": setting("PARTNER_ID"), "api-key": setting("API_KEY")}
        seen["answer"] = post_award(seen["url"], purchase(), headers=headers).json()
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox_command, "sleep", interrupt)
    call_command(
        "zinrelo_sandbox",
        "--port",
        "0",
        "--partner-id",
        "p-1",
        "--api-key",
        "k-1",
        "--fail",
        "503=0",
        "--seed",
        "1",
        stdout=out,
    )

    assert seen["answer"]["success"] is True
    assert "Stopping" in out.getvalue()
    with pytest.raises(requests.ConnectionError):
        requests.get(seen["url"], timeout=TIMEOUT)


@pytest.mark.parametrize("verbosity", [1, 2])
def test_command_prints_one_line_per_request_and_never_a_header(monkeypatch, verbosity):
    out = StringIO()

    def interrupt(seconds):
        found = re.search(r'"API_URL": "([^"]+)"', out.getvalue())
        assert found
        url = found.group(1)
        post_award(url, purchase(order_subtotal="49.99"))
        requests.post(
            url + "transactions/return",
            json=give_back(returned_amount="10.00"),
            headers=AUTH,
            timeout=TIMEOUT,
        )
        requests.post(url + "transactions/1001/reject?idParam=order_id", headers=AUTH, timeout=5)
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox_command, "sleep", interrupt)
    call_command("zinrelo_sandbox", "--port", "0", verbosity=verbosity, stdout=out)

    log = out.getvalue().split("One line per request follows.\n", 1)[1]
    lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in log.splitlines()]
    calls = [
        "POST /v2/loyalty/transactions/award order=1001 member=jane@example.com -> 200 points=49",
        "POST /v2/loyalty/transactions/return order=1001 member=jane@example.com -> 200 points=9",
        "POST /v2/loyalty/transactions/1001/reject order=1001 -> 400 "
        "INVALID_REQUEST_PARAMETER_VALUES",
    ]
    if verbosity == 1:
        assert lines == [*calls, "Stopping the Zinrelo sandbox."]
    else:
        assert lines[0] == calls[0]
        assert json.loads(lines[1])["transaction_attributes"]["order_subtotal"] == "49.99"
        assert lines[2] == calls[1]
        assert json.loads(lines[3]) == give_back(returned_amount="10.00")
        assert lines[4:] == [calls[2], "Stopping the Zinrelo sandbox."]
    assert "sandbox-key" not in log
    assert "sandbox-partner" not in log


def test_goods_sold_by_weight_are_awarded_and_returned_by_the_unit_fraction(sandbox):
    """Zinrelo's guides accept decimal quantities (``fractional_quantities`` in the adapter)."""
    beans = {
        "product_id": "BEANS",
        "product_quantity": "2.5",
        "product_price": "16.00",
        "product_title": "Coffee beans, per kg",
    }
    body = purchase("W1", order_total="40.00", order_subtotal="40.00", products=[beans])
    assert award(sandbox, body).json()["data"]["points"] == 40
    returned = requests.post(
        sandbox.url + "transactions/return",
        json={
            "member_id": "jane@example.com",
            "activity_id": "made_a_purchase",
            "transaction_attributes": {
                "order_id": "W1",
                "returned_product_id": "BEANS",
                "returned_product_quantity": "0.5",
            },
        },
        headers=AUTH,
        timeout=TIMEOUT,
    )
    assert returned.json()["data"]["points"] == 8
    assert sandbox.order_points("W1") == 32
