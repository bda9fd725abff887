"""Every code of Zinrelo's table, answered to a real delivery, ends in the status it should; and
the answers whose reading depends on more than the code (a 404, a lost answer, where the points
are) are read as the README says."""

from datetime import timedelta

import pytest
import requests
from django.test import override_settings
from django.utils import timezone

from django_zinrelo.client import Outcome
from django_zinrelo.models import Award, Status
from django_zinrelo.sync import deliver_due
from tests.conftest import AWARD_URL, make_order, refused
from tests.seed_codes import SEED_TABLE

pytestmark = pytest.mark.django_db


@pytest.fixture
def place(django_capture_on_commit_callbacks):
    """Place a paid order in a transaction that commits: its award is sent after commit."""

    def place_order(**fields):
        with django_capture_on_commit_callbacks(execute=True):
            make_order(**{"status": "paid", **fields})
        return Award.objects.order_by("-pk").first()

    return place_order


@pytest.mark.parametrize(("status", "code", "outcome", "stored"), SEED_TABLE)
def test_every_code_of_the_table_ends_in_its_status(zinrelo, place, status, code, outcome, stored):
    refused(zinrelo, code, status=status, reason=f"reason for {code}")
    award = place()
    # An award names no transaction: a 404 to it says the award path is wrong.
    if status == 404:
        code, outcome = "path_not_found", Outcome.STORE_PROBLEM
    assert (award.status, award.last_status_code, award.last_error_code) == (
        stored,
        status,
        code,
    )
    assert award.attempts_log.get().outcome == outcome
    assert "reason for " in award.last_reason
    # A store-wide problem is not the award's fault: it spends none of the award's attempts.
    assert award.attempts == (0 if outcome is Outcome.STORE_PROBLEM else 1)
    Award.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    deliver_due()
    assert len(zinrelo.calls) == (2 if stored == Status.RETRYING else 1), "finals stay final"


@pytest.mark.parametrize(
    "lost",
    [requests.ReadTimeout("read"), requests.ConnectionError("reset"), 502, 503],
    ids=["timeout", "connection", "502", "503"],
)
def test_attribute_not_unique_after_a_lost_answer_is_taken_as_already_awarded(zinrelo, place, lost):
    """A store that makes order_id a unique attribute answers this when our earlier call, whose
    answer was lost, did record the award."""
    if isinstance(lost, Exception):
        zinrelo.post(AWARD_URL, body=lost)
    else:
        zinrelo.post(AWARD_URL, status=lost, body="<html>gateway</html>")
    refused(zinrelo, "TRANSACTION_ATTRIBUTE_NOT_UNIQUE", reason="Not unique.")
    with override_settings(ZINRELO=settings_with(BACKOFF_BASE=0)):
        award = place()
        deliver_due()
    award.refresh_from_db()
    assert (award.status, award.last_error_code) == (
        Status.ALREADY_AWARDED,
        "TRANSACTION_ATTRIBUTE_NOT_UNIQUE",
    )
    assert award.last_reason.startswith("Taken as already awarded")
    assert award.last_reason.endswith("Zinrelo said: Not unique.")
    assert len(zinrelo.calls) == 2


def test_attribute_not_unique_after_calls_zinrelo_answered_is_a_refusal(zinrelo, place):
    """A 429 is Zinrelo's own refusal to take the call: nothing of ours can be there."""
    refused(zinrelo, "RATE_LIMIT_EXCEEDED", status=429)
    refused(zinrelo, "TRANSACTION_ATTRIBUTE_NOT_UNIQUE", reason="Not unique.")
    with override_settings(ZINRELO=settings_with(BACKOFF_BASE=0)):
        award = place()
        deliver_due()
    award.refresh_from_db()
    assert (award.status, award.last_reason) == (Status.REFUSED, "Not unique.")


def settings_with(**changes):
    from django.conf import settings

    return {**settings.ZINRELO, **changes}


@pytest.mark.parametrize(
    "data",
    [
        {"id": "tx-7", "points": 270, "points_status": "auto_approved"},
        {"id": "tx-7", "award_info": {"points": 270, "points_status": "auto_approved"}},
        {"id": "tx-7", "points": 270, "award_info": {"points_status": "auto_approved"}},
    ],
    ids=["purchase answer", "v2 transaction object", "mixed"],
)
def test_points_and_their_status_are_read_at_the_top_or_in_award_info(zinrelo, place, data):
    zinrelo.post(AWARD_URL, json={"success": True, "data": data})
    award = place()
    assert (award.status, award.points, award.points_status, award.transaction_id) == (
        Status.AWARDED,
        270,
        "auto_approved",
        "tx-7",
    )
