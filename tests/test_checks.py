"""System checks catch each misconfiguration with a stable id."""

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_zinrelo.checks import check_settings


def ids(**changes):
    with override_settings(ZINRELO={**settings.ZINRELO, **changes}):
        return [message.id for message in check_settings()]


def test_the_test_settings_are_clean():
    assert ids() == []


def test_missing_credentials(monkeypatch):
    monkeypatch.delenv("ZINRELO_API_KEY", raising=False)
    assert ids(API_KEY=None) == ["django_zinrelo.E001"]
    assert ids(API_KEY=None, ENABLED=False) == []


def test_credentials_from_the_environment_satisfy_the_check(monkeypatch):
    monkeypatch.setenv("ZINRELO_PARTNER_ID", "p")
    monkeypatch.setenv("ZINRELO_API_KEY", "k")
    assert ids(API_KEY=None, PARTNER_ID=None) == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("API_KEY", "k3y-from-a-file\n"),
        ("API_KEY", " k3y-pasted"),
        ("API_KEY", "k3y-pasted\t"),
        ("API_KEY", "k3y-\u00e9"),
        ("PARTNER_ID", "partner\r\n"),
    ],
)
def test_a_credential_that_cannot_be_a_header_is_named_never_shown(setting, value):
    with override_settings(ZINRELO={**settings.ZINRELO, setting: value}):
        (message,) = check_settings()
    assert message.id == "django_zinrelo.E007"
    assert message.msg.startswith(f"ZINRELO['{setting}'] holds a line break")
    assert value.strip() not in f"{message.msg} {message.hint}"


def test_a_malformed_key_from_the_environment_is_caught(monkeypatch):
    monkeypatch.setenv("ZINRELO_API_KEY", "k3y\n")
    with override_settings(ZINRELO={**settings.ZINRELO, "API_KEY": None}):
        (message,) = check_settings()
    assert message.id == "django_zinrelo.E007"
    assert "ZINRELO_API_KEY" in str(message.hint)


@pytest.mark.parametrize("model", [None, "shop.Nope", "nodots"])
def test_unknown_order_model(model):
    assert ids(ORDER_MODEL=model) == ["django_zinrelo.E002"]


def test_adapter_that_does_not_import():
    assert ids(ORDER_ADAPTER="tests.shop.zinrelo.Missing") == ["django_zinrelo.E003"]


def test_adapter_that_is_not_an_order_adapter():
    assert ids(ORDER_ADAPTER="tests.shop.models.Order") == ["django_zinrelo.E004"]


@pytest.mark.parametrize(
    ("url", "debug", "expected"),
    [
        ("http://api.zinrelo.com/v2/loyalty/", False, ["django_zinrelo.E005"]),
        ("http://api.zinrelo.com/v2/loyalty/", True, []),
        ("http://127.0.0.1:8765/v2/loyalty/", False, []),
        ("http://localhost:8765/v2/loyalty/", False, []),
        ("http://[::1]:8765/v2/loyalty/", False, []),
        ("https://api.zinrelo.com/v2/loyalty/", False, []),
    ],
)
def test_plain_http_only_to_loopback_or_in_debug(url, debug, expected):
    with override_settings(DEBUG=debug):
        assert ids(API_URL=url) == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"DELIVERY": "celery"},
        {"ENABLED": "yes"},
        {"MAX_ATTEMPTS": 0},
        {"MAX_ATTEMPTS": 2.5},
        {"RETRY_FOR": 0},
        {"RETRY_FOR": None},
        {"READ_TIMEOUT": "5"},
        {"BACKOFF_BASE": -1},
        {"THREADS": 0},
    ],
)
def test_invalid_values(changes):
    assert ids(**changes) == ["django_zinrelo.E006"]


def test_a_count_of_attempts_is_optional():
    assert ids(MAX_ATTEMPTS=None) == []
    assert ids(MAX_ATTEMPTS=10, RETRY_FOR=3600) == []


def test_unknown_keys_warn():
    assert ids(APIKEY="typo") == ["django_zinrelo.W001"]


def test_a_contrib_integrations_key_is_known():
    """``ZINRELO["OSCAR"]`` is django_zinrelo.contrib.oscar's, which checks what it holds."""
    assert ids(OSCAR={"CANCELLED_STATUSES": ["Cancelled"]}) == []


def test_manage_py_check_shows_the_errors(monkeypatch):
    with (
        override_settings(ZINRELO={**settings.ZINRELO, "ORDER_MODEL": "shop.Nope"}),
        pytest.raises(SystemCheckError, match=r"django_zinrelo\.E002"),
    ):
        call_command("check")


@pytest.mark.parametrize("model", ["shop.Nope", "nodots"])
def test_unknown_refund_model(model):
    assert ids(REFUND_MODEL=model) == ["django_zinrelo.E008"]


def test_refund_model_is_optional():
    assert ids(REFUND_MODEL=None) == []


@pytest.mark.parametrize(
    "adapter", ["tests.shop.zinrelo.Missing", "tests.shop.zinrelo.ShopAdapter"]
)
def test_refund_adapter_that_is_not_a_refund_adapter(adapter):
    assert ids(REFUND_ADAPTER=adapter) == ["django_zinrelo.E009"]
