"""Scenario 15: only staff with ``django_zinrelo.resync_award`` can make the admin send anything.

Every kind of user who lacks it forges the POSTs of both actions (the award log's "Re-send to
Zinrelo" and the shop's order "Re-sync to Zinrelo") against the real sandbox; a permitted user's
POST without a CSRF token is refused. The same POSTs from a permitted user with a token do send,
which shows that the refusals above are what stopped them.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from django_zinrelo.models import Award, AwardAttempt, Status
from tests.sandboxed import award_calls, new_order, serving
from tests.shop.models import Order

pytestmark = pytest.mark.django_db

AWARDS = reverse("admin:django_zinrelo_award_changelist")
ORDERS = reverse("admin:shop_order_changelist")
VIEW = ("view_award", "view_awardattempt", "view_order")
ACTIONS = {AWARDS: "resend_to_zinrelo", ORDERS: "resync_to_zinrelo"}


def user(django_user_model, name, *codenames, staff=True):
    account = django_user_model.objects.create_user(name, is_staff=staff)  # no password to hash
    account.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return account


def client_for(account=None, *, csrf=False):
    client = Client(enforce_csrf_checks=csrf)
    if account is not None:
        client.force_login(account)
    return client


def offered(client, url):
    return re.findall(r'<option value="(\w+)"', client.get(url).content.decode())


def state():
    return (
        sorted(Award.objects.values_list("order_id", "status", "attempts")),
        AwardAttempt.objects.count(),
    )


def test_no_one_without_the_permission_can_send_and_no_post_without_csrf_token_does(
    django_user_model, django_capture_on_commit_callbacks
):
    with serving() as sandbox:
        with django_capture_on_commit_callbacks(execute=True):
            new_order("R15", email="blocked@example.com")
        silent = new_order("M15", status="new")
        Order.objects.filter(pk=silent.pk).update(status="paid")  # no award recorded yet
        selected = {AWARDS: [Award.objects.get(order_id="R15").pk], ORDERS: [silent.pk]}
        before, calls = state(), len(award_calls(sandbox))
        assert before[0] == [("R15", Status.REFUSED, 1)] and calls == 1

        def post_actions(client, token=None):
            statuses = []
            for url, action in ACTIONS.items():
                data = {"action": action, "index": 0, "_selected_action": selected[url]}
                if token:
                    data["csrfmiddlewaretoken"] = token
                with django_capture_on_commit_callbacks(execute=True):
                    statuses.append(client.post(url, data).status_code)
            return statuses

        viewer = user(django_user_model, "viewer", *VIEW)
        editor = user(django_user_model, "editor", *VIEW, "change_order", "change_award")
        outsider = user(django_user_model, "outsider", "resync_award", *VIEW, staff=False)
        for account in (viewer, editor):
            client = client_for(account)
            assert [offered(client, url) for url in ACTIONS] == [[], ["mark_completed"]]
        forged = {
            "anonymous": post_actions(client_for()),
            "not staff, even with the permission": post_actions(client_for(outsider)),
            "view-only staff": post_actions(client_for(viewer)),
            "staff who may change orders": post_actions(client_for(editor)),
        }
        assert (state(), len(award_calls(sandbox))) == (before, calls), "nothing was sent"

        resyncer = user(django_user_model, "resyncer", *VIEW, "resync_award")
        without_token = post_actions(client_for(resyncer, csrf=True))
        assert (state(), len(award_calls(sandbox))) == (before, calls), "nothing was sent"

        with_token = client_for(resyncer, csrf=True)
        assert [offered(with_token, url) for url in ACTIONS] == [
            ["resend_to_zinrelo"],
            ["mark_completed", "resync_to_zinrelo"],
        ]
        token = with_token.cookies["csrftoken"].value
        assert post_actions(with_token, token) == [302, 302]
        sent = award_calls(sandbox)[calls:]

    assert forged == {
        "anonymous": [302, 302],  # to the login page
        "not staff, even with the permission": [302, 302],
        # The award log offers them no action at all, so the POST is a page view; the order
        # list has the shop's own action, so Django answers "No action selected." and redirects.
        "view-only staff": [200, 302],
        "staff who may change orders": [200, 302],
    }
    assert without_token == [403, 403]
    # The permitted POSTs did reach Zinrelo: the refused award went again (still blocked), and
    # the silently paid order was recorded and awarded.
    assert [(call.status, call.error_code) for call in sent] == [
        (200, "MEMBER_BLOCKED"),
        (200, None),
    ]
    assert dict(Award.objects.values_list("order_id", "status")) == {
        "R15": Status.REFUSED,
        "M15": Status.AWARDED,
    }
