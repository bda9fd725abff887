"""The API key never leaves the session headers: not in logs, errors, reprs, tables or reports."""

import logging
import sys

import pytest
import requests
from django.conf import settings
from django.core import serializers
from django.test import RequestFactory, override_settings
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from django_zinrelo import client as client_module
from django_zinrelo.conf import get_settings
from django_zinrelo.models import Award, AwardAttempt, Status
from django_zinrelo.sync import deliver_due
from tests.conftest import AWARD_URL, awarded, make_order, refused

pytestmark = pytest.mark.django_db

KEY = "ZK-SECRET-5b1f0c9e-do-not-leak"


@pytest.fixture
def secret_settings():
    with override_settings(
        ZINRELO={**settings.ZINRELO, "API_KEY": KEY, "BACKOFF_BASE": 0, "MAX_ATTEMPTS": 3}
    ):
        yield


def frames_locals(tb):
    while tb is not None:
        yield from tb.tb_frame.f_locals.values()
        tb = tb.tb_next


def test_the_key_appears_nowhere(
    zinrelo, secret_settings, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    awarded(zinrelo)
    refused(zinrelo, "SERVICE_UNAVAILABLE", status=503)
    zinrelo.post(AWARD_URL, body=requests.ReadTimeout("read timed out"))
    refused(zinrelo, "MEMBER_BLOCKED")
    refused(zinrelo, "ERROR_UNAUTHORIZED", status=401)
    zinrelo.post(AWARD_URL, status=502, body="<html>bad gateway</html>")
    for number in range(6):
        with django_capture_on_commit_callbacks(execute=True):
            make_order(number=str(number), status="paid")
    assert zinrelo.calls[0].request.headers["api-key"] == KEY, "the key is really sent"

    def explode(self, url, body):
        raise RuntimeError(f"forced failure talking to {url}")

    monkeypatch.setattr(client_module.ZinreloClient, "post", explode)
    with django_capture_on_commit_callbacks(execute=True):
        make_order(number="crash", status="paid")
    deliver_due()

    failures = [record for record in caplog.records if record.exc_info]
    assert failures, "the forced failure was logged with its traceback"
    for record in failures:
        error_type, error, tb = record.exc_info
        assert KEY not in str(error) and KEY not in repr(error)
        for value in frames_locals(tb):
            assert KEY not in repr(value)
        report = ExceptionReporter(RequestFactory().get("/"), error_type, error, tb, is_email=True)
        assert KEY not in report.get_traceback_text()
        assert KEY not in report.get_traceback_html()

    assert KEY not in caplog.text
    rows = serializers.serialize("json", [*Award.objects.all(), *AwardAttempt.objects.all()])
    assert "jane@example.com" in rows
    assert KEY not in rows
    conf = get_settings()
    assert KEY not in repr(conf) and KEY not in str(conf)
    client = client_module.get_client(conf.partner_id, KEY, conf.connect_timeout, conf.read_timeout)
    assert KEY not in repr(client)


def test_djangos_error_reporter_hides_the_key(secret_settings):
    safe = SafeExceptionReporterFilter().get_safe_settings()
    assert safe["ZINRELO"]["API_KEY"] != KEY
    assert safe["ZINRELO"]["PARTNER_ID"] == "test-partner"
    try:
        raise ValueError("checkout failed")
    except ValueError:
        with override_settings(DEBUG=False):
            html = ExceptionReporter(
                RequestFactory().get("/"), *sys.exc_info()
            ).get_traceback_html()
    assert KEY not in html


def test_a_client_that_cannot_be_built_stops_the_sync_without_the_key_in_its_traceback(
    secret_settings, monkeypatch
):
    def broken_adapter(*args, **kwargs):
        raise RuntimeError("cannot build the connection pool")

    client_module.get_client.cache_clear()
    monkeypatch.setattr(client_module, "HTTPAdapter", broken_adapter)
    make_order(status="paid")  # recorded; the test's transaction never commits, so not sent
    try:
        with pytest.raises(RuntimeError) as raised:
            deliver_due()
    finally:
        client_module.get_client.cache_clear()
    values = list(frames_locals(raised.value.__traceback__))
    assert values, "the traceback's frames are there, for the log"
    for value in values:
        assert KEY not in repr(value)
    assert Award.objects.get().status == Status.PENDING, "the award waits for the next run"
