"""The retry budget: with the default settings, transient failures are retried for 48 hours from
the first one, so a day-long Zinrelo outage ends with every award sent and none waiting for a
person. Time is simulated: the clock jumps to each retry's due time plus a minute, as a
``zinrelo_sync`` run every minute would find it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from django_zinrelo.models import Award, Status, Trigger
from django_zinrelo.sync import deliver_due, resend
from tests.conftest import AWARD_URL, make_order, refused

pytestmark = pytest.mark.django_db

CRON = timedelta(minutes=1)


@pytest.fixture
def clock(monkeypatch):
    """The time every part of the app reads, moved by the test."""
    now = [timezone.now()]
    monkeypatch.setattr(timezone, "now", lambda: now[0])
    return now


def failing_for(clock: list[datetime], span: timedelta) -> tuple[Award, int]:
    """Run every minute while Zinrelo answers 503 for ``span``; the award and the calls made."""
    started = clock[0]
    calls = 0
    Award.objects.update(next_attempt_at=started)  # recorded on the simulated clock
    award = Award.objects.get()
    while award.status in (Status.PENDING, Status.RETRYING):
        due = max(clock[0], award.next_attempt_at) + CRON
        if due - started >= span:
            break
        clock[0] = due
        deliver_due()
        calls += 1
        award.refresh_from_db()
    return award, calls


def test_a_day_long_outage_loses_nothing_with_the_default_settings(zinrelo, clock):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    make_order(status="paid")
    award, calls = failing_for(clock, timedelta(hours=25))
    assert award.status == Status.RETRYING, award.last_reason
    assert calls == award.attempts == len(zinrelo.calls) >= 20
    zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 3}})
    clock[0] = award.next_attempt_at + CRON
    assert deliver_due() == {Status.AWARDED: 1}


def test_after_48_hours_of_failures_the_award_fails_and_says_why(zinrelo, clock):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    make_order(status="paid")
    started = clock[0]
    award, _ = failing_for(clock, timedelta(days=30))
    assert award.status == Status.FAILED
    assert award.retrying_since == started + CRON, "the first failure starts the budget"
    gave_up_after = clock[0] - award.retrying_since
    # The first failure at or after 48 h is final: at most one backoff (an hour) later.
    assert timedelta(hours=48) <= gave_up_after <= timedelta(hours=49, minutes=1)
    assert award.last_reason.startswith(f"Gave up after {award.attempts} attempts over 4")
    assert "h (RETRY_FOR). Last: " in award.last_reason


def test_a_re_send_by_a_person_starts_a_new_budget(
    zinrelo, clock, settings, django_capture_on_commit_callbacks
):
    settings.ZINRELO = {**settings.ZINRELO, "RETRY_FOR": 3 * 3600}
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    make_order(status="paid")
    award, _ = failing_for(clock, timedelta(days=30))
    assert award.status == Status.FAILED
    clock[0] += timedelta(days=3)
    with django_capture_on_commit_callbacks(execute=True):
        assert resend(Award.objects.all(), Trigger.ADMIN) == 1
    award.refresh_from_db()
    assert (award.status, award.attempts, award.retrying_since) == (
        Status.RETRYING,
        1,
        clock[0],
    )


def test_a_count_of_attempts_still_applies_where_a_shop_sets_one(zinrelo, clock, settings):
    settings.ZINRELO = {**settings.ZINRELO, "MAX_ATTEMPTS": 10}
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    make_order(status="paid")
    award, _ = failing_for(clock, timedelta(days=30))
    assert (award.status, award.attempts) == (Status.FAILED, 10)
    assert award.last_reason.startswith("Gave up after 10 attempts. Last: ")
    assert award.retrying_since is not None
    assert clock[0] - award.retrying_since < timedelta(hours=48)


def test_an_award_retrying_from_before_the_budget_existed_gets_a_whole_one(zinrelo, clock):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    make_order(status="paid")
    Award.objects.update(
        status=Status.RETRYING, attempts=30, retrying_since=None, next_attempt_at=clock[0]
    )
    deliver_due()
    award = Award.objects.get()
    assert (award.status, award.attempts, award.retrying_since) == (
        Status.RETRYING,
        31,
        clock[0],
    )
