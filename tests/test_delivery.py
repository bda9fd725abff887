"""Delivery: each answer ends in the right state, retries back off, finals stay final."""

import json
import logging
from datetime import timedelta

import pytest
import requests
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_zinrelo import client as client_module
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import backoff, deliver
from django_zinrelo.models import Award, AwardAttempt, Status, Trigger
from django_zinrelo.signals import award_delivered, award_failed
from django_zinrelo.sync import deliver_due
from tests.conftest import AWARD_URL, awarded, make_order, refused

pytestmark = pytest.mark.django_db


@pytest.fixture
def place(django_capture_on_commit_callbacks):
    """Place an order the way a checkout does: saved as paid in a transaction that commits."""

    def place_order(**fields):
        with django_capture_on_commit_callbacks(execute=True):
            make_order(**{"status": "paid", **fields})
        return Award.objects.order_by("-pk").first()

    return place_order


def configured(**changes):
    from django.conf import settings

    return override_settings(ZINRELO={**settings.ZINRELO, **changes})


def test_success_is_recorded_with_its_evidence(zinrelo, place):
    awarded(zinrelo, points=25, status="pending", transaction_id="tx-42")
    award = place()
    assert (award.status, award.points, award.points_status, award.transaction_id) == (
        Status.AWARDED,
        25,
        "pending",
        "tx-42",
    )
    assert (award.member_id, award.order_id, award.attempts) == ("jane@example.com", "1001", 1)
    attempt = award.attempts_log.get()
    assert (attempt.trigger, attempt.outcome, attempt.status_code) == (
        Trigger.ORDER_SAVE,
        "awarded",
        200,
    )
    assert json.loads(attempt.request_body) == award.payload
    assert '"tx-42"' in attempt.response_body
    assert attempt.duration_ms >= 0


def test_duplicate_order_id_counts_as_awarded_and_is_never_retried(zinrelo, place):
    refused(
        zinrelo, "DUPLICATE_ORDER_ID", reason="Loyalty Points already awarded for the Order ID."
    )
    award = place()
    assert award.status == Status.ALREADY_AWARDED
    assert deliver_due() == {}
    assert len(zinrelo.calls) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, "MEMBER_BLOCKED"),
        (200, "EXCLUDED_TRANSACTION"),
        (200, "INVALID_MEMBER"),
        (200, "MAX_AWARDS_EXCEEDED"),
        (400, "INVALID_REQUEST_PARAMETER_VALUES"),
        (401, "ERROR_UNAUTHORIZED"),
    ],
)
def test_refusals_are_final_and_visible(zinrelo, place, status, code):
    refused(zinrelo, code, status=status, reason="Because.")
    award = place()
    assert (award.status, award.last_status_code, award.last_error_code, award.last_reason) == (
        Status.REFUSED,
        status,
        code,
        "Because.",
    )
    Award.objects.update(next_attempt_at=timezone.now() - timedelta(days=1))
    assert deliver_due() == {}
    assert len(zinrelo.calls) == 1


def test_a_transient_failure_is_retried_after_a_backoff(zinrelo, place):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    award = place()
    assert award.status == Status.RETRYING
    wait = (award.next_attempt_at - timezone.now()).total_seconds()
    assert 14 < wait <= 30  # first backoff: half of BACKOFF_BASE plus jitter up to the base
    assert deliver_due() == {}, "nothing is sent before the backoff ends"
    zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 3}})
    Award.objects.update(next_attempt_at=timezone.now())
    assert deliver_due() == {Status.AWARDED: 1}
    triggers = list(AwardAttempt.objects.order_by("pk").values_list("trigger", flat=True))
    assert triggers == [Trigger.ORDER_SAVE, Trigger.RETRY]


def test_retry_after_is_honoured(zinrelo, place):
    zinrelo.post(
        AWARD_URL,
        status=429,
        headers={"Retry-After": "600"},
        json={"success": False, "error_code": "RATE_LIMIT_EXCEEDED", "reason": "Slow down."},
    )
    award = place()
    assert (award.next_attempt_at - timezone.now()).total_seconds() > 590


def test_gives_up_after_max_attempts_and_says_so(zinrelo, place):
    zinrelo.post(AWARD_URL, body=requests.ConnectionError("reset"))
    failures = []
    award_failed.connect(
        lambda award, **kw: failures.append(award.pk), weak=False, dispatch_uid="t"
    )
    try:
        with configured(MAX_ATTEMPTS=4, BACKOFF_BASE=0):
            award = place()
            deliver_due()
    finally:
        award_failed.disconnect(dispatch_uid="t")
    award.refresh_from_db()
    assert (award.status, award.attempts, len(zinrelo.calls)) == (Status.FAILED, 4, 4)
    assert award.last_reason.startswith("Gave up after 4 attempts. Last: Could not reach Zinrelo")
    assert failures == [award.pk]


def test_one_run_settles_flaky_answers_when_backoff_is_short(zinrelo, place):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    zinrelo.post(AWARD_URL, status=502, body="<html>proxy</html>")
    awarded(zinrelo)
    with configured(BACKOFF_BASE=0):
        award = place()
        assert deliver_due() == {Status.AWARDED: 1}
    award.refresh_from_db()
    assert award.attempts == 3
    assert [a.outcome for a in award.attempts_log.order_by("pk")] == [
        "retryable",
        "retryable",
        "awarded",
    ]


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    with configured(BACKOFF_BASE=10, BACKOFF_CAP=100):
        conf = get_settings()
        for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (12, 100)]:
            delays = {backoff(attempt, conf) for _ in range(50)}
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert len(delays) > 1
        assert backoff(1, conf, retry_after=70) == 70
        assert backoff(1, conf, retry_after=10_000) == 100


def test_an_invalid_order_is_never_sent_and_a_fix_resends_it(
    zinrelo, place, django_capture_on_commit_callbacks
):
    awarded(zinrelo)
    award = place(email="")
    assert (award.status, award.last_error_code, award.order_id) == (
        Status.INVALID,
        "invalid_order",
        "1001",
    )
    assert "no customer identifier" in award.last_reason
    assert len(zinrelo.calls) == 0
    order = award_order(award)
    with django_capture_on_commit_callbacks(execute=True):
        order.email = "fixed@example.com"
        order.save()
    award.refresh_from_db()
    assert (award.status, award.member_id) == (Status.AWARDED, "fixed@example.com")


def award_order(award):
    from tests.shop.models import Order

    return Order.objects.get(pk=award.order_pk)


def test_an_order_deleted_before_delivery_ends_invalid(zinrelo):
    with transaction.atomic():
        order = make_order(status="paid")
    order_pk = order.pk
    order.delete()
    deliver_due()
    award = Award.objects.get()
    assert (award.status, award.last_reason) == (
        Status.INVALID,
        f"Order {order_pk} no longer exists.",
    )


def test_signals_fire_once_and_a_failing_receiver_breaks_nothing(zinrelo, place, caplog):
    awarded(zinrelo)
    seen = []

    def receiver(award, **kwargs):
        seen.append(award.status)
        raise ValueError("shop bug")

    award_delivered.connect(receiver, dispatch_uid="t")
    try:
        award = place()
    finally:
        award_delivered.disconnect(dispatch_uid="t")
    assert award.status == Status.AWARDED
    assert seen == [Status.AWARDED]
    assert "shop bug" in caplog.text


def test_credentials_rejected_are_reported_once_not_per_order(zinrelo, place, caplog):
    refused(zinrelo, "ERROR_UNAUTHORIZED", status=401)
    with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
        for number in ("1", "2", "3"):
            place(number=number)
    assert caplog.text.count("Zinrelo rejected the API credentials") == 1
    assert Award.objects.filter(status=Status.REFUSED).count() == 3


def test_missing_credentials_keep_awards_waiting(zinrelo, place, caplog, monkeypatch):
    monkeypatch.delenv("ZINRELO_API_KEY", raising=False)
    with configured(API_KEY=None):
        place(number="1")
        place(number="2")
        assert deliver_due() == {}
    assert caplog.text.count("ZINRELO['API_KEY']") == 1
    assert set(Award.objects.values_list("status", flat=True)) == {Status.PENDING}
    awarded(zinrelo)
    assert deliver_due() == {Status.AWARDED: 2}


def test_credentials_come_from_the_environment(zinrelo, place, monkeypatch):
    awarded(zinrelo)
    monkeypatch.setenv("ZINRELO_PARTNER_ID", "env-partner")
    monkeypatch.setenv("ZINRELO_API_KEY", "env-key")
    with configured(PARTNER_ID=None, API_KEY=None):
        assert place().status == Status.AWARDED
    assert zinrelo.calls[0].request.headers["partner-id"] == "env-partner"
    assert zinrelo.calls[0].request.headers["api-key"] == "env-key"


def test_settings_are_read_on_every_call(settings, monkeypatch):
    """``get_settings`` reuses what it built from the same values, never a stale value: an
    override, a change made in place to ``settings.ZINRELO`` and the environment are each seen
    by the very next call."""
    monkeypatch.delenv("ZINRELO_API_KEY", raising=False)
    first = get_settings()
    assert get_settings() is first  # same values: built once
    with configured(THREADS=9):
        assert get_settings().threads == 9
    assert get_settings().threads == first.threads
    settings.ZINRELO = {**settings.ZINRELO, "API_KEY": None}
    assert get_settings().api_key is None
    monkeypatch.setenv("ZINRELO_API_KEY", "from-the-environment")
    assert get_settings().api_key == "from-the-environment"
    settings.ZINRELO["ACTIVITY_ID"] = "changed_in_place"
    assert get_settings().activity_id == "changed_in_place"


def test_an_award_in_flight_is_never_claimed_twice(zinrelo):
    awarded(zinrelo)
    with transaction.atomic():
        make_order(status="paid")
    award = Award.objects.get()
    Award.objects.update(status=Status.SENDING, claimed_until=timezone.now() + timedelta(minutes=5))
    assert deliver(award.pk, Trigger.COMMAND) is None
    assert deliver_due() == {}
    assert len(zinrelo.calls) == 0


def test_a_claim_abandoned_by_a_crash_is_picked_up_after_its_lease(zinrelo):
    """Zinrelo accepted, then the process died before storing it: the resend confirms it."""
    refused(zinrelo, "DUPLICATE_ORDER_ID")
    with transaction.atomic():
        make_order(status="paid")
    Award.objects.update(status=Status.SENDING, claimed_until=timezone.now() - timedelta(seconds=1))
    assert deliver_due() == {Status.ALREADY_AWARDED: 1}


def test_an_unexpected_error_releases_the_award_for_a_later_try(
    zinrelo, place, monkeypatch, caplog
):
    def explode(self, url, body):
        raise MemoryError("out of memory")

    monkeypatch.setattr(client_module.ZinreloClient, "post", explode)
    award = place()
    award.refresh_from_db()
    # Never attempted (no answer was had), so still pending, but after a backoff like a retry.
    assert (award.status, award.claimed_until, award.claim) == (Status.PENDING, None, None)
    assert award.next_attempt_at > timezone.now()
    assert not award.attempts_log.exists()
    assert "failed unexpectedly" in caplog.text
