"""A store-wide problem (the store inactive, the activity paused, a wrong partner id or award path,
a proxy mangling requests) is said once, shown to staff, and holds awards back until it is fixed,
after which they go without anyone re-sending them."""

import logging
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from django_zinrelo.client import STORE_WIDE
from django_zinrelo.health import store_problems
from django_zinrelo.models import Award, Status
from django_zinrelo.sync import deliver_due
from tests.conftest import AWARD_URL, awarded, make_order, refused

pytestmark = pytest.mark.django_db

STORE_WIDE_ANSWERS = [
    (200, "STORE_INACTIVE", "STORE_INACTIVE"),
    (200, "PAUSED_ACTIVITY", "PAUSED_ACTIVITY"),
    (400, "MERCHANT_DOES_NOT_EXIST", "MERCHANT_DOES_NOT_EXIST"),
    (400, "INVALID_JSON", "INVALID_JSON"),
    (400, "INVALID_REQUEST", "INVALID_REQUEST"),
    (404, "TRANSACTION_DOES_NOT_EXIST", "path_not_found"),
]


@pytest.fixture
def place(django_capture_on_commit_callbacks):
    def place_order(number):
        with django_capture_on_commit_callbacks(execute=True):
            make_order(number=number, status="paid")

    return place_order


def due_now():
    """As if the awards' waits were over."""
    Award.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def errors(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize(("status", "answered", "code"), STORE_WIDE_ANSWERS)
def test_awards_wait_for_the_fix_and_then_all_go_without_a_resend(
    zinrelo, place, caplog, status, answered, code
):
    refused(zinrelo, answered, status=status, reason="Said by Zinrelo.")
    with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
        for number in ("1", "2", "3"):
            place(number)
        due_now()
        assert deliver_due() == {Status.RETRYING: 3}
    assert len(errors(caplog)) == 1, "one ERROR per process, not one per award or per run"
    assert STORE_WIDE[code] in errors(caplog)[0]
    for award in Award.objects.all():
        assert (award.status, award.last_error_code, award.attempts) == (
            Status.RETRYING,
            code,
            0,
        )
        wait = (award.next_attempt_at - timezone.now()).total_seconds()
        assert 1700 < wait <= 3600, "between half and all of BACKOFF_CAP"
    [problem] = store_problems()
    assert (problem.code, problem.advice, problem.waiting) == (code, STORE_WIDE[code], 3)

    zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 5}})
    due_now()
    assert deliver_due() == {Status.AWARDED: 3}
    assert store_problems() == []


def test_waiting_for_the_store_spends_none_of_an_award_s_attempts(zinrelo, place):
    refused(zinrelo, "STORE_INACTIVE")
    with override_settings(ZINRELO=settings_with(MAX_ATTEMPTS=2)):
        place("1")
        for _ in range(4):
            due_now()
            deliver_due()
        zinrelo.replace("POST", AWARD_URL, status=503, json={"error_code": "SERVICE_UNAVAILABLE"})
        due_now()
        deliver_due()
    award = Award.objects.get()
    assert len(zinrelo.calls) == 6
    assert (award.status, award.attempts) == (Status.RETRYING, 1), "its budget is whole"


def test_a_problem_that_comes_back_after_a_fix_is_said_again(zinrelo, place, caplog):
    refused(zinrelo, "PAUSED_ACTIVITY")
    awarded(zinrelo)
    refused(zinrelo, "PAUSED_ACTIVITY")
    with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
        for number in ("1", "2", "3"):
            place(number)
    assert len(errors(caplog)) == 2


def test_store_problems_names_each_unresolved_problem_in_a_few_queries(
    zinrelo, place, django_assert_num_queries
):
    refused(zinrelo, "STORE_INACTIVE", reason="Store is not active.")
    refused(zinrelo, "STORE_INACTIVE", reason="Store is not active.")
    refused(zinrelo, "INVALID_JSON", reason="Invalid JSON format.")
    refused(zinrelo, "MEMBER_BLOCKED")
    for number in ("1", "2", "3", "4"):
        place(number)
    # An award refused for a store-wide code before this release waits for nothing: not counted.
    Award.objects.filter(last_error_code="MEMBER_BLOCKED").update(last_error_code="STORE_INACTIVE")
    with django_assert_num_queries(5):
        problems = store_problems()
    assert [(p.code, p.waiting, p.reason) for p in problems] == [
        ("STORE_INACTIVE", 2, "Store is not active."),
        ("INVALID_JSON", 1, "Invalid JSON format."),
    ]
    assert problems[0].message.startswith(
        "The Zinrelo store is not active: reactivate it in Zinrelo's admin console. "
        "2 Zinrelo award(s) are waiting"
    )


def test_an_award_made_since_the_last_store_wide_answer_means_it_is_fixed(zinrelo, place):
    refused(zinrelo, "STORE_INACTIVE")
    awarded(zinrelo)
    place("1")
    assert [p.code for p in store_problems()] == ["STORE_INACTIVE"]
    place("2")
    assert store_problems() == []


def settings_with(**changes):
    from django.conf import settings

    return {**settings.ZINRELO, **changes}


def test_with_several_stores_a_problem_is_said_and_cleared_per_store():
    def award(store, status, code="", **fields):
        return Award.objects.create(
            order_model="shop.order",
            order_pk=f"{store}-{status}-{Award.objects.count()}",
            activity_id="made_a_purchase",
            store=store,
            status=status,
            last_error_code=code,
            last_reason="Store is not active." if code else "",
            **fields,
        )

    award("eu", Status.RETRYING, "STORE_INACTIVE")
    award("", Status.AWARDED)  # the default store works: it says nothing of the "eu" store
    [problem] = store_problems()
    assert (problem.store, problem.code, problem.waiting) == ("eu", "STORE_INACTIVE", 1)
    assert problem.message.startswith("Store 'eu': The Zinrelo store is not active")

    award("eu", Status.AWARDED)  # fixed at Zinrelo: the "eu" store has awarded since
    assert store_problems() == []
