"""What staff see: the order's award, readable labels and times, honest counts, the health view."""

import html
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from django_zinrelo.display import ago
from django_zinrelo.listing import EXACT_UP_TO, MAX_PAGES, count
from django_zinrelo.models import Award, AwardAttempt, Status, SyncRun
from tests.conftest import awarded, make_order, refused
from tests.test_admin import (
    AWARDS,
    RESYNCER,
    VIEWER,
    award_page,
    deliver,
    fill_log,
    logged_in,
    run_action,
    staff,
)

pytestmark = pytest.mark.django_db

HEALTH = reverse("admin:django_zinrelo_award_health")


def text(response):
    return html.unescape(response.content.decode())


@pytest.fixture
def retrying_award(zinrelo, django_capture_on_commit_callbacks):
    return deliver(
        django_capture_on_commit_callbacks,
        lambda: refused(zinrelo, "SERVICE_UNAVAILABLE", status=503),
        "W-1",
    )[1]


def test_times_say_how_far_they_are_to_the_second():
    now = timezone.now()
    assert ago(now + timedelta(seconds=40), now) == "in 40 s"
    assert ago(now - timedelta(minutes=3, seconds=20), now) == "3 min ago"
    assert ago(now - timedelta(hours=5), now) == "5 h ago"
    assert ago(now - timedelta(days=2, hours=3), now) == "2 d ago"


def test_the_order_page_shows_its_award_with_status_points_error_and_link(
    admin_client, zinrelo, django_capture_on_commit_callbacks
):
    order, award = deliver(django_capture_on_commit_callbacks, lambda: awarded(zinrelo), "O-1")
    page = text(admin_client.get(reverse("admin:shop_order_change", args=[order.pk])))
    assert "Zinrelo" in page
    assert f'href="{award_page(award)}"' in page
    assert "Awarded, 15 points" in page

    blocked, refused_award = deliver(
        django_capture_on_commit_callbacks,
        lambda: refused(zinrelo, "MEMBER_BLOCKED", reason="Member is blocked."),
        "O-2",
    )
    page = text(admin_client.get(reverse("admin:shop_order_change", args=[blocked.pk])))
    assert "Refused by Zinrelo (MEMBER_BLOCKED: Member is blocked.)" in page
    fresh = make_order(number="O-3", status="new")
    page = text(admin_client.get(reverse("admin:shop_order_change", args=[fresh.pk])))
    assert "No award recorded for this order." in page
    assert refused_award.order_id == "O-2"


def test_next_attempt_is_shown_only_while_one_is_due_and_retries_name_the_command(
    admin_client, retrying_award, awarded_award
):
    waiting = text(admin_client.get(award_page(retrying_award)))
    assert "Next attempt:" in waiting
    assert "Retries are sent by the zinrelo_sync command" in waiting
    assert "it has never run here" in waiting
    done = text(admin_client.get(award_page(awarded_award)))
    assert "Next attempt:" not in done
    assert "zinrelo_sync" not in done


@pytest.fixture
def awarded_award(zinrelo, django_capture_on_commit_callbacks):
    return deliver(django_capture_on_commit_callbacks, lambda: awarded(zinrelo), "A-9")[1]


def test_after_a_re_send_the_page_counts_every_call(
    django_user_model, zinrelo, django_capture_on_commit_callbacks
):
    _, award = deliver(
        django_capture_on_commit_callbacks,
        lambda: refused(zinrelo, "MEMBER_BLOCKED", reason="Member is blocked."),
        "C-1",
    )
    client = logged_in(staff(django_user_model, *RESYNCER))
    awarded(zinrelo)
    with django_capture_on_commit_callbacks(execute=True):
        run_action(client, AWARDS, "resend_to_zinrelo", [award])
    award.refresh_from_db()
    assert (award.status, award.attempts) == (Status.AWARDED, 1), "attempts restarts"
    page = text(client.get(award_page(award)))
    assert "2 in all</a> (attempts counts those since it was recorded or last re-sent)" in page


def test_labels_are_readable_and_the_order_is_shown_by_its_number(
    admin_client, zinrelo, django_capture_on_commit_callbacks
):
    _, award = deliver(
        django_capture_on_commit_callbacks,
        lambda: refused(zinrelo, "DUPLICATE_ORDER_ID", reason="Already."),
        "L-1",
    )
    award.refresh_from_db()
    attempt = AwardAttempt.objects.get()
    shown = text(
        admin_client.get(reverse("admin:django_zinrelo_awardattempt_change", args=[attempt.pk]))
    )
    assert attempt.outcome == "already_awarded"
    assert "Already awarded" in shown
    assert "Order save" in shown
    page = text(admin_client.get(award_page(award)))
    assert "shop.order #" not in page
    assert ">L-1</a>" in page
    assert "Already_Awarded" not in shown + page


def test_the_list_never_counts_fewer_rows_than_it_shows(admin_client, awarded_award):
    """A change between the count and the rows (a delivery finishing) cannot show "0 awards"
    above an award: the rows of a list that fits on its page are its count."""
    Award.objects.filter(pk=awarded_award.pk).update(status=Status.RETRYING)

    delivered: list[str] = []

    def delivered_after_the_first_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if '"status" =' in sql and not delivered:
            delivered.append(sql)
            Award.objects.filter(pk=awarded_award.pk).update(status=Status.AWARDED)
        return result

    with connection.execute_wrapper(delivered_after_the_first_read):
        response = admin_client.get(AWARDS, {"status__exact": "awarded"})
    cl = response.context["cl"]
    assert delivered
    assert cl.result_count == len(cl.result_list)
    page = response.content.decode()
    assert ("0 Zinrelo awards" in page) == (not cl.result_list)


def test_long_lists_offer_their_first_pages_and_say_the_count_is_not_exact(admin_client):
    fill_log(EXACT_UP_TO + 200, attempts_each=0)
    response = admin_client.get(AWARDS, {"p": MAX_PAGES + 5})
    cl = response.context["cl"]
    assert cl.page_num == MAX_PAGES
    assert len(cl.result_list) == cl.list_per_page
    page = response.content.decode()
    assert f"the first {MAX_PAGES} pages are listed" in page
    expected = "about" if connection.vendor == "postgresql" else "more than 1,000"
    assert f"{expected}" in str(cl.paginator.matched)
    small = admin_client.get(AWARDS, {"status__exact": "retrying"}).context["cl"]
    assert str(small.paginator.matched) == f"{Award.objects.filter(status='retrying').count():,}"


@pytest.mark.postgres
def test_estimated_counts_come_from_the_planner_on_postgresql():
    fill_log(EXACT_UP_TO * 3, attempts_each=0)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Award._meta.db_table}")
    matched = count(Award.objects.all())
    assert matched.estimated and not matched.exact
    assert EXACT_UP_TO * 2 < matched.value < EXACT_UP_TO * 4


@pytest.mark.postgres
def test_prefix_searches_use_their_indexes_on_postgresql():
    fill_log(2000, attempts_each=0)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Award._meta.db_table}")
        cursor.execute("SET LOCAL enable_seqscan = off")
        for lookup in ("order_id__istartswith", "member_id__istartswith"):
            plan = Award.objects.filter(**{lookup: "n12"}).explain()
            assert "_prefix" in plan, plan


def test_the_health_view_is_for_staff_who_may_view_awards(django_user_model, client):
    assert client.get(HEALTH).status_code == 302, "to the login page"
    outsider = logged_in(staff(django_user_model, "view_order", username="outsider"))
    assert outsider.get(HEALTH).status_code == 403
    viewer = logged_in(staff(django_user_model, *VIEWER))
    assert viewer.get(HEALTH).status_code == 200
    assert f'href="{HEALTH}"' in viewer.get(AWARDS).content.decode()


def test_the_health_view_counts_statuses_and_days_and_warns_without_zinrelo_sync(
    admin_client, retrying_award, awarded_award
):
    response = admin_client.get(HEALTH)
    health = response.context["health"]
    counts = {status: str(matched) for status, _, matched in health.statuses}
    assert counts[Status.AWARDED] == "1" and counts[Status.RETRYING] == "1"
    assert counts[Status.FAILED] == "0"
    assert health.days[-1].total == 2
    assert str(health.waiting) == "1"
    assert health.problems == [], "the place for store-wide problems, empty until wired"
    page = text(response)
    assert "zinrelo_sync has never run against this database." in page
    assert "1 award(s) are waiting" in page

    call_command("zinrelo_sync", stdout=StringIO(), stderr=StringIO())
    run = SyncRun.objects.get()
    assert run.finished_at is not None
    assert "has never run" not in text(admin_client.get(HEALTH))
    SyncRun.objects.update(started_at=timezone.now() - timedelta(minutes=10))
    assert "more than 5 minutes ago" in text(admin_client.get(HEALTH))


def test_the_health_view_shows_a_store_wide_problem_until_zinrelo_awards_again(admin_client):
    Award.objects.create(
        order_model="shop.order",
        order_pk="77",
        activity_id="made_a_purchase",
        status=Status.RETRYING,
        last_error_code="STORE_INACTIVE",
        last_reason="Store is not active.",
    )
    page = admin_client.get(HEALTH).content.decode()
    assert "The Zinrelo store is not active: reactivate it" in page
    assert "1 Zinrelo award(s) are waiting" in page

    Award.objects.create(  # fixed at Zinrelo: an award went through after the last refusal
        order_model="shop.order", order_pk="78", activity_id="made_a_purchase", status="awarded"
    )
    assert "The Zinrelo store is not active" not in admin_client.get(HEALTH).content.decode()
