"""Problems of configuration and of shape that hit awards alike: said once, at the right setting,
and never a record that differs from what was sent."""

from __future__ import annotations

import json
import logging
from typing import ClassVar

import pytest
from django.conf import settings
from django.test import override_settings

from django_zinrelo.client import Outcome, Reply
from django_zinrelo.delivery import report
from django_zinrelo.models import Award, Status
from django_zinrelo.payloads import MAX_MEMBER_ID, MAX_ORDER_ID
from tests.conftest import awarded, make_order, refused
from tests.shop.zinrelo import ShopAdapter

pytestmark = pytest.mark.django_db


@pytest.fixture
def place(django_capture_on_commit_callbacks):
    def place_order(**fields):
        with django_capture_on_commit_callbacks(execute=True):
            make_order(**{"status": "paid", **fields})
        return Award.objects.order_by("-pk").first()

    return place_order


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("API_KEY", "k3y-from-a-file\n"),
        ("API_KEY", " k3y-pasted"),
        ("API_KEY", "k3y\r\nX-Injected: 1"),
        ("API_KEY", "k3y-pasted "),
        ("API_KEY", "k3y-\u00e9"),
        ("PARTNER_ID", "partner\n"),
    ],
)
def test_a_malformed_credential_is_named_and_reported_once(zinrelo, place, caplog, setting, value):
    awarded(zinrelo)
    with (
        override_settings(ZINRELO={**settings.ZINRELO, setting: value}),
        caplog.at_level(logging.DEBUG, logger="django_zinrelo"),
    ):
        awards = [place(number=number) for number in ("1", "2", "3")]
    assert len(zinrelo.calls) == 0, "nothing is sent with a header requests would refuse"
    for award in awards:
        assert (award.status, award.last_error_code) == (Status.REFUSED, "request_error")
        assert award.last_reason.startswith(f"ZINRELO['{setting}'] holds a line break")
        assert "API_URL" not in award.last_reason
    (error,) = errors(caplog)
    assert f"ZINRELO['{setting}']" in error
    assert value.strip() not in caplog.text


def test_a_401_is_one_error_per_process_and_a_warning_per_order(zinrelo, place, caplog):
    refused(zinrelo, "ERROR_UNAUTHORIZED", status=401, reason="Invalid API key.")
    with caplog.at_level(logging.DEBUG, logger="django_zinrelo"):
        for number in ("1", "2", "3"):
            place(number=number)
    assert errors(caplog) == [
        "Zinrelo rejected the API credentials (HTTP 401, saying 'Invalid API key.'). Every award "
        "will be refused until ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] are fixed; then "
        "re-send the refused awards from the admin or with zinrelo_sync --failed."
    ]
    per_order = [r for r in caplog.records if r.getMessage().startswith("Zinrelo award ")]
    assert [r.levelno for r in per_order] == [logging.WARNING] * 3
    assert Award.objects.filter(status=Status.REFUSED).count() == 3


def test_the_id_limits_are_the_columns_that_store_them():
    assert Award._meta.get_field("order_id").max_length == MAX_ORDER_ID
    assert Award._meta.get_field("member_id").max_length == MAX_MEMBER_ID


class GivenIds(ShopAdapter):
    """Ids as long as a test asks, longer than the shop's own columns hold."""

    ids: ClassVar[dict[str, str]] = {}

    def order_id(self, order):
        return self.ids.get("order_id", order.number)

    def member_id(self, order):
        return self.ids.get("member_id", order.email)


@pytest.fixture
def given_ids(monkeypatch):
    def given(**ids: str) -> override_settings:
        monkeypatch.setattr(GivenIds, "ids", ids)
        return override_settings(ZINRELO={**settings.ZINRELO, "ORDER_ADAPTER": GivenIds})

    return given


@pytest.mark.parametrize(
    ("ids", "words"),
    [
        ({"order_id": "N" * (MAX_ORDER_ID + 1)}, "The order id is 129 characters long"),
        ({"member_id": "j" * (MAX_MEMBER_ID - 11) + "@example.com"}, "The member id is 255 char"),
    ],
)
def test_an_id_too_long_to_record_is_refused_before_sending(zinrelo, place, given_ids, ids, words):
    awarded(zinrelo)
    with given_ids(**ids):
        award = place()
    assert (award.status, award.last_error_code) == (Status.INVALID, "invalid_order")
    assert award.last_reason.startswith(words)
    assert len(zinrelo.calls) == 0


def test_the_longest_ids_are_sent_and_recorded_whole(zinrelo, place, given_ids):
    awarded(zinrelo)
    number = "N" * MAX_ORDER_ID
    email = "j" * (MAX_MEMBER_ID - 12) + "@example.com"
    with given_ids(order_id=number, member_id=email):
        award = place()
    assert award.status == Status.AWARDED
    assert (award.order_id, award.member_id) == (number, email)
    sent = json.loads(zinrelo.calls[0].request.body)
    assert (sent["transaction_attributes"]["order_id"], sent["member_id"]) == (number, email)


def test_bad_credentials_are_said_once_per_store(caplog):
    unauthorized = Reply(Outcome.REFUSED, 401, "ERROR_UNAUTHORIZED", "Please verify")
    for store in ("eu", "eu", "", ""):
        report(Award(store=store, status=Status.REFUSED, order_id="1"), unauthorized)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2
    assert errors[0].startswith("Zinrelo store 'eu': Zinrelo rejected the API credentials")
    assert errors[1].startswith("Zinrelo rejected the API credentials")
