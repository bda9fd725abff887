"""The admin: a read-only award log, actions behind the app's permission, pages that stay fast."""

import html
import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.sites import AdminSite
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.db import connection
from django.test import Client, RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_zinrelo.admin import ATTEMPTS_SHOWN, AwardAdmin, AwardAttemptAdmin, resync_to_zinrelo
from django_zinrelo.models import Award, AwardAttempt, Status
from django_zinrelo.sync import deliver_due
from tests.conftest import AWARD_URL, awarded, make_order, refused
from tests.shop.models import Order

pytestmark = pytest.mark.django_db

AWARDS = reverse("admin:django_zinrelo_award_changelist")
ATTEMPTS = reverse("admin:django_zinrelo_awardattempt_changelist")
ORDERS = reverse("admin:shop_order_changelist")


def award_page(award):
    return reverse("admin:django_zinrelo_award_change", args=[award.pk])


def attempt_page(attempt):
    return reverse("admin:django_zinrelo_awardattempt_change", args=[attempt.pk])


def staff(django_user_model, *codenames, username="staff"):
    user = django_user_model.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


VIEWER = ("view_award", "view_awardattempt", "view_order")
RESYNCER = (*VIEWER, "resync_award")


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def action_choices(response):
    return re.findall(r'<option value="(\w+)"', response.content.decode())


def run_action(client, url, action, objects, **extra):
    data = {"action": action, "index": 0, "_selected_action": [o.pk for o in objects], **extra}
    response = client.post(url, data)
    return response, [str(m) for m in get_messages(response.wsgi_request)]


def deliver(capture, zinrelo_reply, number, **fields):
    """An order paid and delivered through the save hook, as in a shop."""
    zinrelo_reply()
    with capture(execute=True):
        order = make_order(number=number, status="paid", **fields)
    return order, Award.objects.get(order_id=number)


@pytest.fixture
def refused_award(zinrelo, django_capture_on_commit_callbacks):
    return deliver(
        django_capture_on_commit_callbacks,
        lambda: refused(zinrelo, "MEMBER_BLOCKED", reason="Member is blocked."),
        "R-1",
    )[1]


@pytest.fixture
def awarded_award(zinrelo, django_capture_on_commit_callbacks):
    return deliver(django_capture_on_commit_callbacks, lambda: awarded(zinrelo), "A-1")[1]


def test_pages_render_for_a_superuser_with_attempts_and_non_ascii_payload(
    admin_client, zinrelo, django_capture_on_commit_callbacks
):
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    awarded(zinrelo)
    with override_settings(ZINRELO={**settings.ZINRELO, "BACKOFF_BASE": 0}):
        with django_capture_on_commit_callbacks(execute=True):
            order = make_order(number="Ü-7", email="zoë@example.com", lines=0)
            order.lines.create(sku="CB", title="Crème brûlée", quantity=1, unit_price=Decimal(25))
            order.status = "paid"
            order.save()
        deliver_due()
    award = Award.objects.get()
    assert (award.status, award.attempts) == (Status.AWARDED, 2)

    for url in (AWARDS, ATTEMPTS, award_page(award), attempt_page(AwardAttempt.objects.first())):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert "Ü-7" in response.content.decode(), url

    page = html.unescape(admin_client.get(award_page(award)).content.decode())
    assert '  "member_id": "zoë@example.com",\n' in page, "payload indented, text as written"
    assert "Crème brûlée" in page
    assert page.count('class="form-row has_original') == 2, "both attempts inline"
    assert "SERVICE_UNAVAILABLE" in page


def test_the_award_page_shows_the_latest_attempts_and_links_to_all(admin_client, awarded_award):
    AwardAttempt.objects.bulk_create(
        AwardAttempt(award=awarded_award, trigger="retry", outcome="retryable", request_body="{}")
        for _ in range(ATTEMPTS_SHOWN + 10)
    )
    newest = AwardAttempt.objects.create(
        award=awarded_award,
        trigger="admin",
        outcome="awarded",
        request_body="{}",
        created_at=timezone.now() + timedelta(minutes=1),
    )
    response = admin_client.get(award_page(awarded_award))
    [attempts] = [
        inline
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.model is AwardAttempt
    ]
    forms = attempts.formset.forms
    assert len(forms) == ATTEMPTS_SHOWN
    assert forms[0].instance == newest
    link = f"{ATTEMPTS}?award__id__exact={awarded_award.pk}"
    assert f'href="{link}"' in response.content.decode()
    listed = admin_client.get(link)
    assert listed.context["cl"].result_count == ATTEMPTS_SHOWN + 12


def test_search_matches_prefixes_of_order_and_member_ids_in_any_case_and_the_order_pk(
    admin_client, awarded_award
):
    other = make_order(number="other", status="paid", email="someone@example.com")
    order = Order.objects.get(number="A-1")
    for term in ("A-1", "a-", str(order.pk), "jane@example.com", "JANE@Example.COM", " jan"):
        found = admin_client.get(AWARDS, {"q": term}).context["cl"].result_list
        assert list(found) == [awarded_award], term
    for inside in ("ane", "-1", "example.com"):
        assert not admin_client.get(AWARDS, {"q": inside}).context["cl"].result_list, inside
    attempts = admin_client.get(ATTEMPTS, {"q": "JANE"}).context["cl"].result_list
    assert [attempt.award for attempt in attempts] == [awarded_award]
    assert other.pk != order.pk


def test_the_log_cannot_be_added_to_changed_or_deleted(admin_client, refused_award):
    attempt = refused_award.attempts_log.get()
    for model, obj in (("award", refused_award), ("awardattempt", attempt)):
        changelist = admin_client.get(reverse(f"admin:django_zinrelo_{model}_changelist"))
        assert reverse(f"admin:django_zinrelo_{model}_add") not in changelist.content.decode()
        assert "delete_selected" not in action_choices(changelist)
        assert admin_client.get(reverse(f"admin:django_zinrelo_{model}_add")).status_code == 403
        delete = reverse(f"admin:django_zinrelo_{model}_delete", args=[obj.pk])
        assert admin_client.get(delete).status_code == 403
        assert admin_client.post(delete, {"post": "yes"}).status_code == 403
        change = reverse(f"admin:django_zinrelo_{model}_change", args=[obj.pk])
        assert admin_client.post(change, {"status": "awarded"}).status_code == 403
        assert 'name="_save"' not in admin_client.get(change).content.decode()
    refused_award.refresh_from_db()
    assert refused_award.status == Status.REFUSED
    assert AwardAttempt.objects.count() == 1


def test_staff_without_the_permission_see_no_action_and_a_forged_post_sends_nothing(
    django_user_model, zinrelo, refused_award, django_capture_on_commit_callbacks
):
    calls = len(zinrelo.calls)
    client = logged_in(staff(django_user_model, *VIEWER))
    assert client.get(AWARDS).status_code == 200
    assert client.get(award_page(refused_award)).status_code == 200
    assert "resend_to_zinrelo" not in action_choices(client.get(AWARDS))
    assert "resync_to_zinrelo" not in action_choices(client.get(ORDERS))

    awarded(zinrelo)
    order = Order.objects.get(number="R-1")
    with django_capture_on_commit_callbacks(execute=True):
        response, notes = run_action(client, AWARDS, "resend_to_zinrelo", [refused_award])
        _, order_notes = run_action(client, ORDERS, "resync_to_zinrelo", [order])
    assert response.status_code == 200
    assert notes == [], "no action offered at all, so the POST is only a page view"
    assert order_notes == ["No action selected."]
    assert len(zinrelo.calls) == calls
    refused_award.refresh_from_db()
    assert (refused_award.status, refused_award.attempts) == (Status.REFUSED, 1)


def test_staff_with_the_permission_re_send_failed_awards_only(
    django_user_model, zinrelo, refused_award, awarded_award, django_capture_on_commit_callbacks
):
    client = logged_in(staff(django_user_model, *RESYNCER))
    assert "resend_to_zinrelo" in action_choices(client.get(AWARDS))
    awarded(zinrelo, points=25)
    calls = len(zinrelo.calls)
    with django_capture_on_commit_callbacks(execute=True):
        _, notes = run_action(client, AWARDS, "resend_to_zinrelo", [refused_award, awarded_award])
    assert notes == [
        "Queued 1 award(s) that ended refused, invalid or failed to re-send to Zinrelo; "
        "skipped 1 that had not ended so."
    ]
    assert len(zinrelo.calls) == calls + 1
    refused_award.refresh_from_db()
    assert (refused_award.status, refused_award.points) == (Status.AWARDED, 25)
    assert refused_award.attempts_log.filter(trigger="admin").count() == 1


def test_order_admin_mixin_resyncs_each_order_as_its_award_needs(
    django_user_model, zinrelo, refused_award, awarded_award, django_capture_on_commit_callbacks
):
    fresh = Order.objects.create(
        number="F-1", email="f@example.com", status="new", total=Decimal(9), subtotal=Decimal(9)
    )
    Order.objects.filter(pk=fresh.pk).update(status="paid")  # no signal: no award yet
    make_order(number="N-1", status="new")
    client = logged_in(staff(django_user_model, *RESYNCER))
    assert action_choices(client.get(ORDERS)) == ["mark_completed", "resync_to_zinrelo"]
    zinrelo.replace("POST", AWARD_URL, json={"success": True, "data": {"points": 9}})
    calls = len(zinrelo.calls)
    orders = Order.objects.filter(number__in=["F-1", "R-1", "A-1", "N-1"])
    with django_capture_on_commit_callbacks(execute=True):
        _, notes = run_action(client, ORDERS, "resync_to_zinrelo", orders)
    assert notes == [
        "Re-sync to Zinrelo: 1 recorded, 1 re-sent, 1 already awarded (not sent again), "
        "0 in progress, 1 not qualifying."
    ]
    assert len(zinrelo.calls) == calls + 2
    assert dict(Award.objects.values_list("order_id", "status")) == {
        "F-1": Status.AWARDED,
        "R-1": Status.AWARDED,
        "A-1": Status.AWARDED,
    }
    assert awarded_award.attempts_log.count() == 1


def test_select_all_over_thousands_of_orders_only_queues(
    admin_client, zinrelo, django_capture_on_commit_callbacks
):
    Order.objects.bulk_create(
        Order(number=f"S{n}", email="s@example.com", status="paid", subtotal=Decimal(5))
        for n in range(2500)
    )
    first = Order.objects.first()
    started = time.monotonic()
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=False) as callbacks,
    ):
        _, notes = run_action(admin_client, ORDERS, "resync_to_zinrelo", [first], select_across=1)
    assert time.monotonic() - started < 5
    assert notes == [
        "Re-sync to Zinrelo: 2500 recorded, 0 re-sent, 0 already awarded (not sent again), "
        "0 in progress, 0 not qualifying."
    ]
    assert len(zinrelo.calls) == 0, "nothing is sent inside the request"
    assert len(callbacks) == 3, "delivery is queued for after commit, per chunk of orders"
    assert len(queries) < 125, "queries per chunk of orders, not per order"
    assert Award.objects.filter(status=Status.PENDING).count() == 2500


def plain_admin_request(user):
    request = RequestFactory().post(ORDERS)
    request.user = user
    request._messages = CookieStorage(request)  # type: ignore[attr-defined]
    return request


def test_the_plain_action_function_fits_any_order_admin_and_checks_the_permission(
    django_user_model, zinrelo, refused_award, django_capture_on_commit_callbacks
):
    class PlainOrderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
        actions = [resync_to_zinrelo]

    modeladmin = PlainOrderAdmin(Order, AdminSite())
    assert modeladmin.check() == [], "valid without the mixin"
    awarded(zinrelo)
    calls = len(zinrelo.calls)
    orders = Order.objects.all()

    viewer = plain_admin_request(staff(django_user_model, *VIEWER))
    with django_capture_on_commit_callbacks(execute=True):
        resync_to_zinrelo(modeladmin, viewer, orders)
    assert [str(m) for m in get_messages(viewer)] == [
        "You do not have permission to re-sync orders to Zinrelo."
    ]
    assert len(zinrelo.calls) == calls
    refused_award.refresh_from_db()
    assert refused_award.status == Status.REFUSED

    allowed = plain_admin_request(staff(django_user_model, *RESYNCER, username="allowed"))
    with django_capture_on_commit_callbacks(execute=True):
        resync_to_zinrelo(modeladmin, allowed, orders)
    assert [str(m) for m in get_messages(allowed)] == [
        "Re-sync to Zinrelo: 0 recorded, 1 re-sent, 0 already awarded (not sent again), "
        "0 in progress, 0 not qualifying."
    ]
    refused_award.refresh_from_db()
    assert refused_award.status == Status.AWARDED


def test_an_action_post_without_csrf_token_is_refused(
    admin_user, zinrelo, refused_award, django_capture_on_commit_callbacks
):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    awarded(zinrelo)
    calls = len(zinrelo.calls)
    with django_capture_on_commit_callbacks(execute=True):
        response, _ = run_action(client, AWARDS, "resend_to_zinrelo", [refused_award])
    assert response.status_code == 403
    assert len(zinrelo.calls) == calls
    refused_award.refresh_from_db()
    assert refused_award.status == Status.REFUSED


KEY = "ZK-ADMIN-7d2e91-do-not-leak"


def test_no_admin_page_shows_the_api_key(admin_client, zinrelo, django_capture_on_commit_callbacks):
    with override_settings(ZINRELO={**settings.ZINRELO, "API_KEY": KEY}):
        refused(zinrelo, "ERROR_UNAUTHORIZED", status=401)
        _, award = deliver(django_capture_on_commit_callbacks, lambda: None, "K-1")
        assert zinrelo.calls[0].request.headers["api-key"] == KEY, "the key is really sent"
        attempt = award.attempts_log.get()
        for url in (AWARDS, ATTEMPTS, award_page(award), attempt_page(attempt), ORDERS):
            response = admin_client.get(url)
            assert response.status_code == 200
            assert KEY not in response.content.decode(), url


def fill_log(awards, attempts_each=3):
    """A log of the given size, written in bulk: the shape, not the path, matters here."""
    now = timezone.now()
    created = Award.objects.bulk_create(
        Award(
            order_model="shop.order",
            order_pk=str(n),
            activity_id="made_a_purchase",
            order_id=f"N{n}",
            member_id=f"m{n % 7}@example.com",
            status=[Status.AWARDED, Status.REFUSED, Status.RETRYING][n % 3],
            attempts=attempts_each,
            payload={"member_id": f"m{n % 7}@example.com"},
            last_status_code=[200, 200, 503][n % 3],
            last_error_code=["", "MEMBER_BLOCKED", "SERVICE_UNAVAILABLE"][n % 3],
            created_at=now - timedelta(days=n),
        )
        for n in range(awards)
    )
    AwardAttempt.objects.bulk_create(
        AwardAttempt(
            award=award,
            trigger="retry",
            outcome=["awarded", "refused", "retryable"][i],
            status_code=[200, 200, 503][i],
            error_code=["", "MEMBER_BLOCKED", "SERVICE_UNAVAILABLE"][i],
            request_body="{}",
            created_at=now - timedelta(minutes=i),
        )
        for award in created
        for i in range(attempts_each)
    )


PAGES = (
    AWARDS,
    f"{AWARDS}?status__exact=refused",
    f"{AWARDS}?last_error_code=MEMBER_BLOCKED&o=-3",
    ATTEMPTS,
    f"{ATTEMPTS}?outcome__exact=refused",
    f"{ATTEMPTS}?status_code=503&trigger__exact=retry",
)


def queries_per_page(client):
    """Each page's queries, less the planner's estimate that takes over from the count above
    ``EXACT_UP_TO`` matches (one more query, on PostgreSQL)."""
    counts = {}
    for url in PAGES:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        counts[url] = [q for q in queries.captured_queries if not q["sql"].startswith("EXPLAIN")]
    return counts


def test_changelists_run_the_same_queries_for_600_or_1800_awards(admin_client):
    fill_log(600)
    small = {url: len(queries) for url, queries in queries_per_page(admin_client).items()}
    Award.objects.all().delete()
    fill_log(1800)
    large = queries_per_page(admin_client)
    assert {url: len(queries) for url, queries in large.items()} == small
    shown = str(admin_client.get(AWARDS).context["cl"].paginator.matched)
    assert (
        shown.startswith("about")
        if connection.vendor == "postgresql"
        else shown == "more than 1,000"
    )

    for url, queries in large.items():
        sql = [query["sql"] for query in queries]
        if "?" in url:
            counts = [s for s in sql if "COUNT(" in s]
            assert counts and all("WHERE" in s for s in counts), "no count of the whole table"
        if url.startswith(ATTEMPTS):
            assert not [s for s in sql if "DISTINCT" in s], "filters do not read every row"


def test_filters_offer_each_value_present_sorted_with_empty_last(admin_client, awarded_award):
    for status_code, error_code in ((503, "B_CODE"), (None, "A_CODE"), (200, ""), (503, "")):
        AwardAttempt.objects.create(
            award=awarded_award,
            trigger="retry",
            outcome="retryable",
            status_code=status_code,
            error_code=error_code,
            request_body="{}",
        )
    specs = admin_client.get(ATTEMPTS).context["cl"].filter_specs
    choices = {s.field.name: s.lookup_choices for s in specs if hasattr(s, "lookup_choices")}
    assert choices["status_code"] == [200, 503, None]
    assert choices["error_code"] == ["A_CODE", "B_CODE"]


def test_every_filter_and_sort_is_served_by_an_index():
    def leading_columns(model):
        meta = model._meta
        firsts = [index.fields[0].lstrip("-") for index in meta.indexes if index.fields]
        firsts += [c.fields[0] for c in meta.constraints]
        return {meta.get_field(name).name for name in firsts} | {"id"}

    for model, model_admin in ((Award, AwardAdmin), (AwardAttempt, AwardAttemptAdmin)):
        filters = [f if isinstance(f, str) else f[0] for f in model_admin.list_filter]
        sorts = [
            getattr(getattr(model_admin, name, None), "admin_order_field", name)
            for name in model_admin.sortable_by
        ]
        orderings = [
            str(name).lstrip("-").replace("pk", "id") for name in model_admin.ordering or ()
        ]
        used = {*filters, *sorts, *orderings}
        assert used <= leading_columns(model), model


def test_a_column_not_offered_for_sorting_is_not_sorted_on_even_when_asked(admin_client):
    """Only the columns staff can click sort: a hand-made ``?o=`` on another one (the store, which
    no index orders with the primary key) keeps the list's own order."""
    url = reverse("admin:django_zinrelo_award_changelist")
    store = ("action_checkbox", *AwardAdmin.list_display).index("store")
    updated = ("action_checkbox", *AwardAdmin.list_display).index("updated")
    asked = admin_client.get(f"{url}?o=-{store}").context["cl"]
    default = admin_client.get(url).context["cl"]
    assert asked.queryset.query.order_by == default.queryset.query.order_by
    sorted_by_updated = admin_client.get(f"{url}?o=-{updated}").context["cl"]
    assert "-updated_at" in sorted_by_updated.queryset.query.order_by
