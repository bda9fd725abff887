"""The save hook: recorded in the order's transaction, sent only after commit, never twice."""

import json
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings

from django_zinrelo import inserts
from django_zinrelo.models import Award, AwardAttempt, Status
from django_zinrelo.signals import award_delivered
from tests.conftest import AWARD_URL, awarded, make_order
from tests.shop.models import Order

pytestmark = pytest.mark.django_db


def test_qualifying_order_is_recorded_in_its_transaction_and_sent_after_commit(
    zinrelo, django_capture_on_commit_callbacks
):
    awarded(zinrelo)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        order = make_order(lines=2)
        order.status = "paid"
        order.save()
        award = Award.objects.get()
        assert award.status == Status.PENDING
        assert len(zinrelo.calls) == 0
    assert len(callbacks) == 1
    assert len(zinrelo.calls) == 1
    sent = json.loads(zinrelo.calls[0].request.body)
    assert sent["transaction_attributes"]["order_id"] == order.number
    assert [p["product_id"] for p in sent["transaction_attributes"]["products"]] == [
        "SKU-0",
        "SKU-1",
    ]
    award.refresh_from_db()
    assert (award.status, award.points, award.transaction_id) == (Status.AWARDED, 15, "tx-1")


def test_lines_added_after_the_order_row_are_sent(zinrelo, django_capture_on_commit_callbacks):
    """Like django-oscar, the order is saved before its lines; the award still carries them."""
    awarded(zinrelo)
    with django_capture_on_commit_callbacks(execute=True):
        order = make_order(status="paid", lines=0)
        order.lines.create(sku="LATE", title="Late line", quantity=3, unit_price=Decimal("4.20"))
    products = json.loads(zinrelo.calls[0].request.body)["transaction_attributes"]["products"]
    assert products == [
        {
            "product_id": "LATE",
            "product_quantity": "3",
            "product_price": "4.200",
            "product_title": "Late line",
        }
    ]


def test_an_order_that_does_not_qualify_records_nothing(
    zinrelo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        make_order(status="new")
    assert (Award.objects.count(), len(callbacks), len(zinrelo.calls)) == (0, 0, 0)


def test_saving_an_awarded_order_again_never_sends_again(
    zinrelo, django_capture_on_commit_callbacks
):
    awarded(zinrelo)
    with django_capture_on_commit_callbacks(execute=True):
        order = make_order(status="paid")
    for status in ("completed", "completed", "paid"):
        with django_capture_on_commit_callbacks(execute=True):
            order.status = status
            order.save()
    with django_capture_on_commit_callbacks(execute=True):
        order.email = "new@example.com"
        order.save(update_fields=["email"])
    assert len(zinrelo.calls) == 1
    assert Award.objects.count() == 1
    assert AwardAttempt.objects.count() == 1


def test_disabled_app_records_nothing(zinrelo, django_capture_on_commit_callbacks):
    with (
        override_settings(ZINRELO={"ENABLED": False}),
        django_capture_on_commit_callbacks(execute=True),
    ):
        make_order(status="paid")
    assert Award.objects.count() == 0


def test_fixture_loads_send_nothing(zinrelo, tmp_path):
    fixture = tmp_path / "orders.json"
    fixture.write_text(
        json.dumps(
            [
                {
                    "model": "shop.order",
                    "pk": n,
                    "fields": {
                        "number": f"F{n}",
                        "email": "f@example.com",
                        "status": "completed",
                        "total": "10.00",
                        "subtotal": "10.00",
                    },
                }
                for n in range(1, 101)
            ]
        )
    )
    call_command("loaddata", str(fixture), verbosity=0)
    assert Order.objects.count() == 100
    assert (Award.objects.count(), len(zinrelo.calls)) == (0, 0)


def test_a_broken_adapter_never_breaks_the_shops_save(zinrelo, caplog):
    class Exploding:
        def qualifies(self, order):
            raise RuntimeError("boom")

    with override_settings(ZINRELO={"ORDER_MODEL": "shop.Order", "ORDER_ADAPTER": Exploding}):
        order = make_order(status="paid")
    assert Order.objects.filter(pk=order.pk).exists()
    assert "Could not record the Zinrelo award" in caplog.text


def test_a_database_error_while_recording_leaves_the_shops_transaction_usable(
    zinrelo, monkeypatch, caplog
):
    """A real database error (a missing table): on PostgreSQL it aborts a transaction."""
    real = inserts.statement("default")
    broken = real.sql.replace(Award._meta.db_table, "zinrelo_no_such_table")
    monkeypatch.setattr(inserts, "statement", lambda alias: inserts.Statement(broken, real.slots))
    with transaction.atomic():
        order = make_order(status="paid")
        assert Order.objects.filter(pk=order.pk).count() == 1  # the transaction still works
    assert Order.objects.filter(pk=order.pk).exists()
    assert "zinrelo_sync --missing will find it" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_order_sends_nothing(zinrelo):
    def checkout():
        with transaction.atomic():
            make_order(status="paid")
            assert Award.objects.count() == 1
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError):
        checkout()
    assert (Order.objects.count(), Award.objects.count(), len(zinrelo.calls)) == (0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_the_default_thread_delivery_never_makes_save_wait(zinrelo):
    called, released, delivered = threading.Event(), threading.Event(), threading.Event()

    def slow_zinrelo(request):
        called.set()
        released.wait(5)
        return 200, {}, json.dumps({"success": True, "data": {"points": 1}})

    def on_delivered(**kwargs):
        delivered.set()

    zinrelo.add_callback("POST", AWARD_URL, callback=slow_zinrelo)
    # The test database is SQLite in memory, whose connections lock each other's tables: the
    # test reads only while the delivery thread waits on Zinrelo or is done.
    award_delivered.connect(on_delivered, dispatch_uid="test-thread-delivery")
    try:
        with override_settings(ZINRELO={**_settings(), "DELIVERY": "thread"}):
            started = time.monotonic()
            with transaction.atomic():
                make_order(status="paid")
            saved_in = time.monotonic() - started
            assert called.wait(5), "delivery went on in a thread after commit"
            assert Award.objects.get().status == Status.SENDING
            released.set()
            assert delivered.wait(5)
    finally:
        award_delivered.disconnect(dispatch_uid="test-thread-delivery")
    assert Award.objects.get().status == Status.AWARDED
    assert saved_in < 2, "the order's save waited for Zinrelo"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_processes_saving_one_order_at_once_award_it_once(zinrelo):
    awarded(zinrelo)
    order = make_order(status="new")
    barrier = threading.Barrier(8)
    errors = []

    def save_as_paid():
        try:
            same = Order.objects.get(pk=order.pk)
            same.status = "paid"
            barrier.wait()
            with transaction.atomic():
                same.save()
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=save_as_paid) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Award.objects.count() == 1
    assert len(zinrelo.calls) == 1


def _settings():
    from django.conf import settings

    return settings.ZINRELO
