from decimal import Decimal

import pytest
import responses
from django.db import connection

from django_zinrelo import delivery, inserts
from django_zinrelo.models import Award, Status
from tests.shop.models import Order, OrderLine

AWARD_URL = "https://api.zinrelo.test/v2/loyalty/transactions/award"

# The testing kit's fixture (zinrelo_awards), loaded as README tells a shop to.
pytest_plugins = ["django_zinrelo.testing"]


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests run in the PostgreSQL pass of .ci/run; say so when they cannot."""
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test starts like a new process: no configuration problem reported yet, and no
    connection proven to take the award's insert without a savepoint."""
    delivery._reported.clear()
    inserts.PROVEN.clear()
    yield
    delivery._reported.clear()


@pytest.fixture
def zinrelo():
    """Zinrelo's award endpoint, faked by `responses`; nothing reaches the network."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def awarded(mock, points=15, status="auto_approved", transaction_id="tx-1"):
    mock.post(
        AWARD_URL,
        json={
            "success": True,
            "data": {
                "id": transaction_id,
                "activity_id": "made_a_purchase",
                "points": points,
                "points_status": status,
            },
        },
    )


def refused(mock, error_code, status=200, reason="Refused."):
    mock.post(
        AWARD_URL,
        status=status,
        json={"success": False, "error_code": error_code, "reason": reason},
    )


def make_order(number="1001", status="new", email="jane@example.com", lines=1, **fields):
    defaults = {"total": Decimal("27.50"), "subtotal": Decimal("25.00")}
    order = Order.objects.create(
        number=number, status=status, email=email, **{**defaults, **fields}
    )
    for index in range(lines):
        OrderLine.objects.create(
            order=order,
            sku=f"SKU-{index}",
            title=f"Sweatshirt {index}",
            quantity=1,
            unit_price=Decimal("12.500"),
        )
    return order


@pytest.fixture
def place(zinrelo, django_capture_on_commit_callbacks):
    """An order placed and awarded 25 points (a 25.00 subtotal, two lines of 12.50), its points
    held pending until ``approval`` when one is given."""

    def place_order(number="1001", approval=None, **fields):
        zinrelo.post(
            AWARD_URL,
            json={
                "success": True,
                "data": {
                    "id": "tx-award",
                    "points": 25,
                    "points_status": "pending" if approval else "auto_approved",
                },
            },
        )
        with django_capture_on_commit_callbacks(execute=True):
            order = make_order(number=number, status="paid", lines=2, **fields)
        award = Award.objects.get(order_pk=str(order.pk))
        assert award.status == Status.AWARDED
        if approval is not None:  # as an adapter's approval_date() would have sent it
            award.payload = {
                **(award.payload or {}),
                "approval_date": approval.strftime("%m/%d/%Y %H:%M:%S"),
            }
            award.save()
        return order

    return place_order
