"""Guarantees on how orders reach the app: once per order whatever the saves, nothing on rollback
or fixture loads, and the writes that send no signal found by ``zinrelo_sync --missing``.

Every scenario runs against the sandbox, so "sent" means an HTTP call really reached a server.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from django_zinrelo.models import Award, AwardAttempt, Status, Trigger
from tests.sandboxed import award_calls, new_order, serving, sync, unsaved_orders
from tests.shop.models import Order
from tests.shop.zinrelo import ShopAdapter


class CompletedOnly(ShopAdapter):
    qualifying_statuses = ("completed",)  # type: ignore[assignment]  # ShopAdapter's is 2 long


def admin_form(order: Order) -> dict[str, str]:
    """The shop's order change form as the admin posts it back."""
    return {
        "number": order.number,
        "email": order.email,
        "status": order.status,
        "total": str(order.total),
        "subtotal": str(order.subtotal),
        "coupon_codes": order.coupon_codes,
        "created_at_0": "",
        "created_at_1": "",
        "_save": "Save",
    }


@pytest.mark.parametrize(
    ("adapter", "paid_with_update_fields", "sent_on"),
    [
        (ShopAdapter, False, "paid"),
        (ShopAdapter, True, "paid"),
        (CompletedOnly, False, "completed"),
    ],
    ids=["paid-qualifies", "paid-by-update-fields", "completed-qualifies"],
)
@pytest.mark.django_db
def test_repeated_saves_through_an_orders_life_send_one_award_on_the_named_transition(
    adapter, paid_with_update_fields, sent_on, admin_client, django_capture_on_commit_callbacks
):
    """Scenario 2: created, paid, completed, edited, saved in admin, save(update_fields=...)."""
    calls_after: list[tuple[str, int]] = []
    with serving(ORDER_ADAPTER=adapter) as sandbox:

        def step(name, save):
            with django_capture_on_commit_callbacks(execute=True):
                save()
            calls_after.append((name, len(award_calls(sandbox))))

        order = Order(
            number="LIFE", email="life@example.com", total=Decimal("30"), subtotal=Decimal("25")
        )
        step("created", order.save)
        order.status = "paid"
        step(
            "paid",
            lambda: order.save(update_fields=["status"] if paid_with_update_fields else None),
        )
        order.status = "completed"
        step("completed", order.save)
        order.coupon_codes = "SPRING5"
        step("edited", order.save)

        def admin_save():
            form = {**admin_form(order), "coupon_codes": "SPRING5,STAFF"}
            response = admin_client.post(f"/admin/shop/order/{order.pk}/change/", form)
            assert response.status_code == 302, "the admin saved the order"

        step("admin", admin_save)
        order.refresh_from_db()
        order.email = "renamed@example.com"
        step("update_fields", lambda: order.save(update_fields=["email"]))
        assert len(sandbox.awards_for("LIFE")) == 1

    assert Order.objects.get(pk=order.pk).coupon_codes == "SPRING5,STAFF"
    names = [name for name, _ in calls_after]
    first = names.index(sent_on)
    assert calls_after == [(name, int(index >= first)) for index, name in enumerate(names)]
    award = Award.objects.get()
    assert (award.status, award.attempts, award.member_id) == (
        Status.AWARDED,
        1,
        "life@example.com",
    )
    assert award.attempts_log.get().trigger == Trigger.ORDER_SAVE


SILENT = 1000


@pytest.mark.django_db(transaction=True)
def test_writes_without_signals_are_found_by_missing_and_awarded_exactly_once():
    """Scenario 3: QuerySet.update, bulk_create and bulk_update of 1,000 qualifying orders."""
    with serving() as sandbox:
        Order.objects.bulk_create(unsaved_orders("BC", 400, status="paid"))
        Order.objects.bulk_create(unsaved_orders("QU", 300, status="new"))
        Order.objects.filter(number__startswith="QU").update(status="completed")
        Order.objects.bulk_create(unsaved_orders("BU", 300, status="new"))
        updated = list(Order.objects.filter(number__startswith="BU"))
        for order in updated:
            order.status = "paid"
        Order.objects.bulk_update(updated, ["status"])
        Order.objects.bulk_create(unsaved_orders("NQ", 50, status="new"))  # never qualifies
        assert (Award.objects.count(), len(award_calls(sandbox))) == (0, 0)
        assert sync() == "Delivered: nothing was due.\n", "only --missing looks for them"

        concurrency = "4" if connection.vendor == "postgresql" else "1"
        output = sync("--missing", "--concurrency", concurrency)
        assert f"Recorded {SILENT} missing award(s)." in output
        numbers = Order.objects.exclude(number__startswith="NQ").values_list("number", flat=True)
        assert Counter(len(sandbox.awards_for(number)) for number in numbers) == {1: SILENT}
        assert len(award_calls(sandbox)) == SILENT
        assert Counter(Award.objects.values_list("status", flat=True)) == {Status.AWARDED: SILENT}

        again = sync("--missing")
        assert "Recorded 0 missing award(s)." in again
        assert "nothing was due" in again
        assert len(award_calls(sandbox)) == SILENT
    assert AwardAttempt.objects.count() == SILENT


@pytest.mark.django_db
def test_a_fixture_load_of_100_completed_orders_sends_and_logs_nothing(
    tmp_path, caplog, django_capture_on_commit_callbacks
):
    """Scenario 4: loaddata saves with raw=True; the app stays silent."""
    fixture = tmp_path / "orders.json"
    rows = [
        {
            "model": "shop.order",
            "pk": n,
            "fields": {
                "number": f"FX{n}",
                "email": f"fx{n}@example.com",
                "status": "completed",
                "total": "10.00",
                "subtotal": "10.00",
            },
        }
        for n in range(1, 101)
    ]
    rows += [
        {
            "model": "shop.orderline",
            "pk": n,
            "fields": {"order": n, "sku": "S", "title": "Mug", "quantity": 1, "unit_price": "10"},
        }
        for n in range(1, 101)
    ]
    fixture.write_text(json.dumps(rows))
    caplog.set_level(logging.DEBUG, logger="django_zinrelo")
    with serving() as sandbox:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            call_command("loaddata", str(fixture), verbosity=0)
        assert Order.objects.filter(status="completed").count() == 100
        assert sync() == "Delivered: nothing was due.\n"
        assert award_calls(sandbox) == []
    assert (len(callbacks), Award.objects.count(), AwardAttempt.objects.count()) == (0, 0, 0)
    app_records = [r for r in caplog.records if r.name == "django_zinrelo"]
    assert app_records == []


@pytest.mark.django_db(transaction=True)
def test_an_order_that_qualified_in_a_failed_transaction_sends_nothing():
    """Scenario 5: the whole checkout rolls back, or only the savepoint that made it qualify."""
    with serving() as sandbox:

        def checkout():
            with transaction.atomic():
                new_order("ROLLED")
                assert Award.objects.count() == 1, "the award was recorded in the transaction"
                raise RuntimeError("payment declined")

        with pytest.raises(RuntimeError):
            checkout()

        with transaction.atomic():
            kept = new_order("KEPT", status="new")
            try:
                with transaction.atomic():
                    kept.status = "paid"
                    kept.save()
                    raise RuntimeError("stock check failed")
            except RuntimeError:
                pass

        assert sync("--missing").startswith("Recorded 0 missing award(s).")
        assert award_calls(sandbox) == []
    assert list(Order.objects.values_list("number", "status")) == [("KEPT", "new")]
    assert Award.objects.count() == 0
