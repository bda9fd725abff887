"""``ZINRELO["OSCAR"]``: read at each use, known to the core's checks, checked by the app's own."""

from typing import Any, cast

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from django_zinrelo.models import Award, Status
from tests_oscar.shop import place, product

pytestmark = pytest.mark.django_db


def oscar(**changes):
    suites = cast(dict[str, Any], settings.ZINRELO["OSCAR"])
    return override_settings(ZINRELO={**settings.ZINRELO, "OSCAR": {**suites, **changes}})


def ids():
    return sorted(message.id for message in run_checks() if "zinrelo" in (message.id or ""))


def test_the_suites_settings_pass_every_check():
    assert ids() == []


def test_statuses_are_read_at_each_use(zinrelo_awards):
    with oscar(QUALIFYING_STATUSES=["Being processed", "Complete"]):
        order = place([(product("MUG", "9.99"), 1)], guest_email="guest@example.com")
        zinrelo_awards.deliver()
        assert zinrelo_awards.for_order(order.number) == []  # "Pending" does not qualify here
        order.set_status("Being processed")
        zinrelo_awards.deliver()
    assert zinrelo_awards.actions(order.number) == ["award"]
    assert Award.objects.get(order_id=order.number).status == Status.AWARDED


def test_a_typo_in_the_oscar_dict_warns():
    with oscar(CANCELED_STATUSES=["Cancelled"]):
        assert ids() == ["django_zinrelo_oscar.W002"]


@pytest.mark.parametrize(
    "changes",
    [
        {"CANCELLED_STATUSES": "Cancelled"},  # would be read as C, a, n, ...
        {"QUALIFYING_STATUSES": "Complete"},
        {"REFUND_EVENT_TYPES": [1]},
        {"ADMIN_ACTION": "no"},
    ],
)
def test_a_value_the_app_would_misread_is_an_error(changes):
    with oscar(**changes):
        assert ids() == ["django_zinrelo_oscar.E001"]


def test_an_oscar_setting_that_is_no_dict_is_an_error():
    with override_settings(ZINRELO={**settings.ZINRELO, "OSCAR": ["Cancelled"]}):
        assert ids() == ["django_zinrelo_oscar.E001"]


def test_none_and_empty_lists_are_accepted():
    with oscar(QUALIFYING_STATUSES=None, APPROVING_STATUSES=[], CANCELLED_STATUSES=None):
        assert ids() == []
