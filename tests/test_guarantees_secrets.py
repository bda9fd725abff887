"""Scenario 13: the API key appears nowhere, even when everything goes wrong at once.

``tests/test_secrets.py`` checks each place with answers faked by ``responses``; here the key goes
over real HTTP to the sandbox through faults, hangs, refusals, a 401 and exceptions forced at each
layer of the delivery path, and afterwards every place a key could surface is searched: the log
text at DEBUG, every table, the admin pages, Django's error reports with DEBUG off, ``str`` and
``repr`` of every exception raised in the app and its HTTP stack, and the local variables of every
traceback a logging or error-reporting tool would capture.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import pytest
import urllib3
from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.db import DatabaseError
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.views.debug import ExceptionReporter

from django_zinrelo import admin as zinrelo_admin
from django_zinrelo import client as client_module
from django_zinrelo import delivery
from django_zinrelo.models import Award, AwardAttempt, Status
from django_zinrelo.sandbox import DEFAULT_REFUSALS
from tests.conftest import AWARD_URL, make_order
from tests.sandboxed import award_calls, new_order, pointed_at, serving, sync
from tests.shop.zinrelo import ShopAdapter

pytestmark = pytest.mark.django_db

KEY = "ZK-LIVE-3e8a51c7-never-show-me"
PARTNER = "ZP-partner-5521"
CREDENTIALS = {"api_key": KEY, "partner_id": PARTNER}
FAULTS = {"503": 0.2, "429": 0.1, "500": 0.1, "html": 0.1, "reset": 0.1, "slow_accept": 0.05}
WATCHED = ("django_zinrelo", "requests", "urllib3")


class RaisedExceptions:
    """Every exception raised in, or passing through, the app and its HTTP stack, in any thread."""

    def __init__(self) -> None:
        self.seen: dict[int, BaseException] = {}

    def _in_frame(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "exception":
            self.seen.setdefault(id(arg[1]), arg[1])
        return self._in_frame

    def _on_call(self, frame: Any, event: str, arg: Any) -> Any:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in WATCHED or module == "django_zinrelo.sandbox":
            return None  # the sandbox stands in for Zinrelo: its own errors are not the app's
        frame.f_trace_lines = False
        return self._in_frame

    @contextmanager
    def watching(self) -> Iterator[RaisedExceptions]:
        sys.settrace(self._on_call)
        threading.settrace(self._on_call)
        try:
            yield self
        finally:
            threading.settrace(None)
            sys.settrace(None)


def chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def frame_values(tb: TracebackType | None) -> Iterator[tuple[str, Any]]:
    while tb is not None:
        code = tb.tb_frame.f_code
        for name, value in tb.tb_frame.f_locals.items():
            yield f"{code.co_filename}:{code.co_name}:{name}", value
        tb = tb.tb_next


def assert_no_key_in_captured(record: logging.LogRecord) -> None:
    """What Sentry and Django's own reporters would take from one logged exception."""
    error_type, error, tb = record.exc_info  # type: ignore[misc]
    for link in chain(error):
        assert KEY not in str(link) and KEY not in repr(link), record.getMessage()
        for where, value in frame_values(link.__traceback__):
            assert KEY not in repr(value), f"the key is a local variable at {where}"
    request = getattr(record, "request", None) or RequestFactory().get("/")
    with override_settings(DEBUG=False):
        for is_email in (True, False):
            report = ExceptionReporter(request, error_type, error, tb, is_email=is_email)
            assert KEY not in report.get_traceback_text()
            assert KEY not in report.get_traceback_html()


class ExplodingAdapter(ShopAdapter):
    def products(self, order):
        raise ValueError(f"the shop's code failed on {order.number}")


def transport_bug(*args, **kwargs):
    """Stands for a bug inside urllib3 while it holds the request's headers."""
    raise RuntimeError("unexpected failure inside the HTTP library")


def go_wrong(monkeypatch, admin_client, django_capture_on_commit_callbacks) -> RaisedExceptions:
    """The fault, hang and refusal runs, a 401 and forced exceptions; returns what was raised."""
    raised = RaisedExceptions()

    def saved(number, **fields):
        with django_capture_on_commit_callbacks(execute=True):
            new_order(number, **fields)

    with raised.watching():
        options = {**CREDENTIALS, "faults": FAULTS, "seed": 13, "slow_seconds": 0.3}
        with serving(options, API_KEY=KEY, PARTNER_ID=PARTNER, READ_TIMEOUT=0.1) as flaky:
            for n in range(20):
                saved(f"S{n}")
            for n, member in enumerate(DEFAULT_REFUSALS):
                saved(f"R{n}", email=member)
            sync()
            assert len(flaky.awards_for("S0")) == 1
        with serving({**CREDENTIALS, "faults": {"hang": 1.0}}, API_KEY=KEY, READ_TIMEOUT=0.2):
            saved("HANG")
        with serving(API_KEY=KEY, PARTNER_ID=PARTNER) as wrong_key:
            saved("U401")
            assert [call.status for call in award_calls(wrong_key)] == [401]

        with serving(CREDENTIALS, API_KEY=KEY, PARTNER_ID=PARTNER) as healthy:
            with monkeypatch.context() as patched:
                patched.setattr(urllib3.connection.HTTPConnection, "request", transport_bug)
                saved("TRANSPORT")
            with monkeypatch.context() as patched:
                patched.setattr(delivery, "insert_attempts", db_failure)
                saved("RECORD")
            with monkeypatch.context() as patched:
                client_module.get_client.cache_clear()
                patched.setattr(client_module, "HTTPAdapter", transport_bug)
                saved("SETUP")
            client_module.get_client.cache_clear()
            with pointed_at(
                healthy.url, API_KEY=KEY, PARTNER_ID=PARTNER, ORDER_ADAPTER=ExplodingAdapter
            ):
                saved("ADAPTER")
            with monkeypatch.context() as patched:
                patched.setattr(zinrelo_admin, "resend", transport_bug)
                admin_client.raise_request_exception = False
                failed = Award.objects.filter(status=Status.REFUSED).values_list("pk", flat=True)
                response = admin_client.post(
                    reverse("admin:django_zinrelo_award_changelist"),
                    {"action": "resend_to_zinrelo", "_selected_action": list(failed)},
                )
                assert response.status_code == 500
            sync()
            assert len(healthy.awards_for("TRANSPORT")) == len(healthy.awards_for("SETUP")) == 1
    return raised


def db_failure(*args, **kwargs):
    raise DatabaseError("could not extend file: No space left on device")


def test_the_api_key_appears_nowhere_after_faults_hangs_refusals_and_forced_errors(
    caplog, monkeypatch, admin_client, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    raised = go_wrong(monkeypatch, admin_client, django_capture_on_commit_callbacks)
    statuses = set(Award.objects.values_list("status", flat=True))
    assert {Status.AWARDED, Status.REFUSED} <= statuses, "the runs really happened"
    assert len(raised.seen) > 20, "exceptions were raised on the way"

    transport = Award.objects.get(order_id="TRANSPORT").attempts_log.order_by("pk")[0]
    assert (transport.outcome, transport.error_code) == ("retryable", "client_error")
    assert "RuntimeError" in transport.reason, "the failure is evidence like any other attempt"

    captured = [record for record in caplog.records if record.exc_info]
    messages = Counter(record.getMessage().split(" ", 2)[0] for record in captured)
    assert messages["Delivering"] == 1, "the forced client set-up failure"
    assert messages["Zinrelo"] == 1, "the forced DB failure: an answer that could not be stored"
    assert messages["Internal"] == 1, "the admin's 500, as Django's error reporting logs it"
    for record in captured:
        assert_no_key_in_captured(record)
    for error in raised.seen.values():
        assert KEY not in str(error) and KEY not in repr(error), type(error)
    assert KEY not in caplog.text

    tables = serializers.serialize(
        "json", [o for m in apps.get_models() for o in m._default_manager.all()]
    )
    assert "S0@example.com" in tables
    assert KEY not in tables

    awards = one_of_each(Award.objects.all(), "status", "last_error_code")
    attempts = one_of_each(AwardAttempt.objects.all(), "outcome", "error_code", "status_code")
    orders = Award.objects.filter(pk__in=awards).values_list("order_pk", flat=True)
    pages = [
        reverse("admin:django_zinrelo_award_changelist"),
        reverse("admin:django_zinrelo_awardattempt_changelist"),
        reverse("admin:shop_order_changelist"),
        *(reverse("admin:django_zinrelo_award_change", args=[pk]) for pk in awards),
        *(reverse("admin:django_zinrelo_awardattempt_change", args=[pk]) for pk in attempts),
        *(reverse("admin:shop_order_change", args=[pk]) for pk in orders),
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert KEY not in response.content.decode(), url
    print(
        f"\nscenario 13: {len(raised.seen)} exceptions raised, {len(captured)} tracebacks "
        f"captured, {len(pages)} admin pages, {len(caplog.records)} log records: no key"
    )


def one_of_each(rows, *fields) -> list[int]:
    """A row for each combination of ``fields``: every kind of content the admin shows."""
    first: dict[tuple[object, ...], int] = {}
    for pk, *key in rows.order_by("pk").values_list("pk", *fields):
        first.setdefault(tuple(key), pk)
    return list(first.values())


# Answers that echo the request's headers, as some error pages do; the last one puts the key
# across the cut of the stored excerpt, where masking after the cut would keep half of it.
ECHOES = [
    (
        200,
        {
            "success": False,
            "error_code": "MEMBER_BLOCKED",
            "reason": f"Blocked; request had api-key: {KEY}",
            "data": {"headers": {"api-key": KEY}},
        },
        Status.REFUSED,
    ),
    (
        400,
        {
            "success": False,
            "error_code": "INVALID_REQUEST_PARAMETER_VALUES",
            "reason": f"Bad request: partner-id={PARTNER} api-key={KEY}",
        },
        Status.REFUSED,
    ),
    (500, f"<html><pre>partner-id: {PARTNER}\napi-key: {KEY}</pre></html>", Status.RETRYING),
    (502, "x" * (client_module.EXCERPT_CHARS - 20) + KEY, Status.RETRYING),
]


@pytest.mark.parametrize(("status", "body", "ends"), ECHOES)
def test_an_answer_echoing_the_key_is_stored_and_shown_without_it(
    zinrelo, admin_client, django_capture_on_commit_callbacks, status, body, ends
):
    answer = {"json": body} if isinstance(body, dict) else {"body": body}
    zinrelo.post(AWARD_URL, status=status, **answer)
    client = client_module.ZinreloClient(
        partner_id=PARTNER, api_key=KEY, connect_timeout=1, read_timeout=1
    )
    reply = client.post(AWARD_URL, "{}")
    assert reply.status_code == status and reply.reason
    assert KEY[:12] not in repr(reply), "not the key, nor any part of it cut short"

    zinrelo.post(AWARD_URL, status=status, **answer)
    conf = {**settings.ZINRELO, "API_KEY": KEY, "PARTNER_ID": PARTNER}
    with override_settings(ZINRELO=conf), django_capture_on_commit_callbacks(execute=True):
        make_order(status="paid")
    assert zinrelo.calls[-1].request.headers["api-key"] == KEY, "the key is really sent"
    award = Award.objects.get()
    attempt = award.attempts_log.get()
    assert (award.status, award.attempts, attempt.status_code) == (ends, 1, status)
    assert KEY[:12] not in serializers.serialize("json", [award, attempt])
    assert client_module.API_KEY_MARK in attempt.response_body, "the rest is kept as evidence"
    for url in (
        reverse("admin:django_zinrelo_award_change", args=[award.pk]),
        reverse("admin:django_zinrelo_awardattempt_change", args=[attempt.pk]),
    ):
        assert KEY[:12] not in admin_client.get(url).content.decode(), url
