"""Oscar's dashboard order page shows the award; staff with the permission may re-sync it."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from django_zinrelo.admin import resync_to_zinrelo
from django_zinrelo.contrib.oscar.apps import order_admin
from django_zinrelo.models import Award, Status
from tests_oscar.shop import place, product

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(zinrelo_awards):
    placed = place([(product("MUG", "9.99"), 1)], guest_email="guest@example.com")
    zinrelo_awards.deliver()
    return placed


def staff(django_user_model, *, resync):
    user = django_user_model.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    # Oscar's dashboard shows orders to staff who may view them; the re-sync needs the app's.
    user.user_permissions.add(Permission.objects.get(codename="view_order"))
    if resync:
        user.user_permissions.add(Permission.objects.get(codename="resync_award"))
    return user


def test_the_dashboard_order_page_shows_the_award_and_the_button(client, order, django_user_model):
    client.force_login(staff(django_user_model, resync=True))
    page = client.get(reverse("dashboard:order-detail", kwargs={"number": order.number}))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="zinrelo-award"' in html
    assert "Awarded" in html and "left 9" in html  # status and the ledger's points
    assert "data-zinrelo-resync" in html and "csrfmiddlewaretoken" in html


def test_the_button_resyncs_a_failed_award(client, order, django_user_model, zinrelo_awards):
    Award.objects.filter(order_id=order.number).update(
        status=Status.FAILED, last_error_code="SERVICE_UNAVAILABLE", last_reason="Down."
    )
    client.force_login(staff(django_user_model, resync=True))
    detail = reverse("dashboard:order-detail", kwargs={"number": order.number})
    assert "SERVICE_UNAVAILABLE: Down." in client.get(detail).content.decode()
    answer = client.post(reverse("zinrelo_oscar:resync", kwargs={"number": order.number}))
    assert answer.status_code == 302 and answer["Location"] == detail
    zinrelo_awards.deliver()
    assert Award.objects.get(order_id=order.number).status == Status.ALREADY_AWARDED
    assert zinrelo_awards.actions(order.number) == ["award", "award"]  # sent once more


def test_without_the_permission_no_button_and_no_resync(client, order, django_user_model):
    Award.objects.filter(order_id=order.number).update(status=Status.FAILED)
    client.force_login(staff(django_user_model, resync=False))
    page = client.get(reverse("dashboard:order-detail", kwargs={"number": order.number}))
    assert 'id="zinrelo-award"' in page.content.decode()
    assert "data-zinrelo-resync" not in page.content.decode()
    url = reverse("zinrelo_oscar:resync", kwargs={"number": order.number})
    assert client.post(url).status_code == 403
    assert client.get(url).status_code == 405
    assert Award.objects.get(order_id=order.number).status == Status.FAILED


def test_oscars_own_order_admin_gets_the_action(admin_client, order):
    registered = order_admin()
    assert registered is not None and resync_to_zinrelo in (registered.actions or ())
    page = admin_client.get(reverse("admin:order_order_changelist"))
    assert "resync_to_zinrelo" in page.content.decode()
    answer = admin_client.post(
        reverse("admin:order_order_changelist"),
        {"action": "resync_to_zinrelo", "_selected_action": [order.pk]},
        follow=True,
    )
    assert "1 already awarded" in answer.content.decode()
