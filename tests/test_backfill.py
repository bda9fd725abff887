"""``zinrelo_sync --missing`` records the awards of orders written without a signal (imports,
``bulk_create``, ``update()``), a page of orders per statement."""

from decimal import Decimal

import pytest
from django.db import connection

from django_zinrelo import inserts
from django_zinrelo.models import Award
from django_zinrelo.sync import record_missing
from tests.shop.models import Order

pytestmark = pytest.mark.django_db

VARYING = {"id", "order_pk", "next_attempt_at", "created_at", "updated_at"}


def imported(count: int, start: int = 0) -> list[Order]:
    """Orders written as an import writes them: no signal, so no award."""
    return Order.objects.bulk_create(
        Order(
            number=f"imp-{n}",
            email=f"imp-{n}@example.com",
            status="paid",
            total=Decimal("10.00"),
            subtotal=Decimal("10.00"),
        )
        for n in range(start, start + count)
    )


def test_a_back_fill_records_the_same_row_a_checkout_does():
    checkout = Order.objects.create(number="co-1", email="co@example.com", status="new", total=5)
    checkout.status = "paid"
    checkout.save()
    [order] = imported(1)

    assert record_missing() == 1

    by_checkout = Award.objects.filter(order_pk=str(checkout.pk)).values().get()
    by_back_fill = Award.objects.filter(order_pk=str(order.pk)).values().get()
    assert {k: v for k, v in by_back_fill.items() if k not in VARYING} == {
        k: v for k, v in by_checkout.items() if k not in VARYING
    }
    assert by_back_fill["created_at"] == by_back_fill["next_attempt_at"]


def test_a_back_fill_counts_only_the_awards_it_inserted():
    orders = imported(3)
    # An order that got its award between the page's read and its insert keeps that award.
    inserts.record_page("shop.order", [str(orders[0].pk)], "made_a_purchase")

    pks = [str(order.pk) for order in orders]
    assert inserts.record_page("shop.order", pks, "made_a_purchase") == 2
    assert Award.objects.count() == 3


@pytest.mark.postgres
def test_a_first_back_fill_tells_the_planner_the_award_table_is_no_longer_empty():
    """A new award table looks empty to PostgreSQL's planner until autovacuum's next pass; the
    anti-join that finds orders without an award then read the whole table for each order, and a
    first back-fill grew quadratic (26 s for 30,000 orders)."""
    imported(2500)

    assert record_missing() == 2500

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [Award._meta.db_table]
        )
        [(believed,)] = cursor.fetchall()
    assert believed >= 2000
