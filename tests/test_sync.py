"""zinrelo_sync: delivers what is due, finds orders no signal announced, and is safe to repeat."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_zinrelo import client as client_module
from django_zinrelo.client import Reply
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import Call, body_for, call, claim, record
from django_zinrelo.models import Award, AwardAttempt, Status, Trigger
from tests.conftest import AWARD_URL, awarded, make_order, refused
from tests.shop.models import Order

pytestmark = pytest.mark.django_db


def sync(*args):
    out = StringIO()
    call_command("zinrelo_sync", *args, stdout=out)
    return out.getvalue()


def test_silent_writes_are_found_by_missing_and_awarded_once(zinrelo):
    awarded(zinrelo)
    Order.objects.bulk_create(
        [
            Order(
                number=f"B{n}",
                email=f"c{n}@example.com",
                status="new",
                total=Decimal("9.99"),
                subtotal=Decimal("9.99"),
            )
            for n in range(300)
        ]
    )
    Order.objects.filter(number__startswith="B").update(status="completed")
    Order.objects.bulk_update(
        [Order(pk=pk, status="paid") for pk in Order.objects.values_list("pk", flat=True)[:10]],
        ["status"],
    )
    make_order(number="unpaid", status="new")
    assert (Award.objects.count(), len(zinrelo.calls)) == (0, 0)

    assert sync() == "Delivered: nothing was due.\n"
    output = sync("--missing")
    assert output.startswith(
        "Recorded 300 missing award(s).\n"
        "Delivered: 300 awarded, 0 already awarded, 0 refused, 0 failed, 0 skipped in "
    )
    assert len(zinrelo.calls) == 300
    assert sorted(Award.objects.values_list("order_id", flat=True)) == sorted(
        f"B{n}" for n in range(300)
    )
    assert set(AwardAttempt.objects.values_list("trigger", flat=True)) == {Trigger.COMMAND}

    assert sync("--missing") == "Recorded 0 missing award(s).\nDelivered: nothing was due.\n"
    assert len(zinrelo.calls) == 300


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sync_with_concurrency_sends_each_award_once(zinrelo):
    awarded(zinrelo)
    Order.objects.bulk_create(
        [
            Order(
                number=f"C{n}",
                email="c@example.com",
                status="paid",
                total=Decimal("5"),
                subtotal=Decimal("5"),
            )
            for n in range(40)
        ]
    )
    assert "Delivered: 40 awarded, 0 already" in sync("--missing", "--concurrency", "4")
    assert len(zinrelo.calls) == 40
    assert Award.objects.filter(status=Status.AWARDED, attempts=1).count() == 40


def test_resync_orders_records_resends_and_never_doubles(
    zinrelo, django_capture_on_commit_callbacks
):
    from django_zinrelo.sync import resync_orders

    refused(zinrelo, "MEMBER_BLOCKED")
    with django_capture_on_commit_callbacks(execute=True):
        blocked = make_order(number="blocked", status="paid")
    awarded(zinrelo)
    with django_capture_on_commit_callbacks(execute=True):
        done = make_order(number="done", status="paid")
    fresh = Order.objects.create(
        number="fresh", email="f@example.com", status="new", total=Decimal(5), subtotal=Decimal(5)
    )
    Order.objects.filter(pk=fresh.pk).update(status="paid")
    zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 5}})
    with django_capture_on_commit_callbacks(execute=True):
        counts = resync_orders([blocked.pk, done.pk, fresh.pk], Trigger.ADMIN)
    assert counts == {"recorded": 1, "resent": 1, "already_awarded": 1, "in_progress": 0}
    assert len(zinrelo.calls) == 4
    assert dict(Award.objects.values_list("order_id", "status")) == {
        "blocked": Status.AWARDED,
        "done": Status.AWARDED,
        "fresh": Status.AWARDED,
    }
    assert Award.objects.get(order_id="blocked").attempts == 1
    assert AwardAttempt.objects.filter(trigger=Trigger.ADMIN).count() == 2


def test_a_call_that_raises_in_a_worker_ends_the_run_and_waits_for_a_later_try(
    zinrelo, settings, caplog, monkeypatch
):
    settings.ZINRELO = {**settings.ZINRELO, "BACKOFF_BASE": 0}

    def explode(self, url, body):
        raise RuntimeError("bug in the transport")

    monkeypatch.setattr(client_module.ZinreloClient, "post", explode)
    Order.objects.create(
        number="X1", email="x@example.com", status="paid", total=Decimal(5), subtotal=Decimal(5)
    )
    assert "0 awarded" in sync("--missing", "--concurrency", "2")
    award = Award.objects.get()
    assert (award.status, award.attempts, award.claim, award.claimed_until) == (
        Status.PENDING,
        0,
        None,
        None,
    )
    assert award.next_attempt_at <= timezone.now(), "a zero backoff makes it due again at once"
    assert "Delivering Zinrelo award" in caplog.text and "bug in the transport" in caplog.text
    assert not AwardAttempt.objects.exists()


def test_a_claim_too_short_for_the_call_is_given_back_unsent():
    """A call that might outlast its claim could also be made by the award's next claimant."""
    conf = get_settings()
    make_order(number="L1", status="paid")  # the test's transaction never commits: not sent
    posted: list[tuple[str, str]] = []

    def post(url: str, body: str) -> Reply:
        posted.append((url, body))
        raise AssertionError("a call was made on a claim too short for it")

    (award,) = claim(list(Award.objects.values_list("pk", flat=True)), timedelta(seconds=1))
    body = body_for(award)
    assert body is not None
    item = call(Call(award, Trigger.COMMAND, body), post, conf)
    assert (item.reply, posted) == (None, [])
    record([item], conf)
    award.refresh_from_db()
    assert (award.status, award.attempts, award.claim) == (Status.PENDING, 0, None)
    assert award.next_attempt_at <= timezone.now(), "due again at once, for a longer claim"
    assert not AwardAttempt.objects.exists()
