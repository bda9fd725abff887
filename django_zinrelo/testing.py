"""Testing a shop's Zinrelo integration: no network, no credentials, no threads.

While a :class:`ZinreloRecorder` is active, awards are delivered in the test's own thread and every
call to Zinrelo is answered here instead of being sent: the test reads the payloads, and chooses
the answer of the next call when it wants a refusal or an outage. The answers go through the
client's real reading of Zinrelo's bodies, so the award rows end as they would in production.

The client's ``request`` itself is replaced, not ``requests``: whatever the shop's settings say (a
real API URL, real keys, the thread backend), a test cannot reach the network.

The recorder switches the app on (``ENABLED = True``) while it is active, on purpose: a shop's
test settings often keep it off so that no test talks to Zinrelo, and a test that asks for the
recorder wants to see what the shop would send. Nothing can leave the process while it is active;
outside it, ``ENABLED = False`` is obeyed by every path (``django_zinrelo.delivery.enabled``).

From pytest, add ``pytest_plugins = ["django_zinrelo.testing"]`` to the root ``conftest.py`` and
ask for the ``zinrelo_awards`` fixture; from Django's ``TestCase``, mix in
:class:`ZinreloTestMixin` and use ``self.zinrelo``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter, deque
from collections.abc import Iterator
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from unittest import mock

from django.test import override_settings
from django.utils import timezone

from django_zinrelo.client import (
    CONNECTION_ERROR,
    DUPLICATE_ORDER_ID,
    TIMEOUT,
    Outcome,
    Reply,
    ZinreloClient,
    classify,
)
from django_zinrelo.conf import get_settings, user_settings
from django_zinrelo.models import WAITING, Award
from django_zinrelo.sandbox import REASONS
from django_zinrelo.sync import deliver_due

TEST_PARTNER_ID: Final = "test-partner"
TEST_API_KEY: Final = "test-api-key"

# Calls that never get an answer, under the codes the award log shows for them.
NO_ANSWER: Final = {
    TIMEOUT: "Zinrelo did not answer in time (answered by django_zinrelo.testing).",
    CONNECTION_ERROR: "Could not reach Zinrelo (answered by django_zinrelo.testing).",
}


class ZinreloRecorder:
    """Captures the awards a shop sends and answers them like Zinrelo.

    By default each call is awarded one point per whole unit of ``order_subtotal``, and an order
    id already awarded is answered ``DUPLICATE_ORDER_ID``, as Zinrelo does. Use it as a context
    manager or with :meth:`start` and :meth:`stop`.
    """

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        """Every award body sent, parsed, oldest first (a retried order appears once per call)."""
        self._planned: deque[Reply] = deque()
        self._awarded: set[str] = set()
        self._lock = threading.Lock()
        self._stack: contextlib.ExitStack | None = None

    # Life cycle

    def start(self) -> ZinreloRecorder:
        """Force immediate, enabled delivery (dummy keys if none are set) and intercept calls.

        Enabled even where the settings switch the app off: see the module's docstring.
        """
        if self._stack is not None:
            raise RuntimeError("The recorder is already active.")
        conf = get_settings()
        overrides = {**user_settings(), "ENABLED": True, "DELIVERY": "immediate"}
        if not conf.partner_id:
            overrides["PARTNER_ID"] = TEST_PARTNER_ID
        if not conf.api_key:
            overrides["API_KEY"] = TEST_API_KEY
        stack = contextlib.ExitStack()
        stack.enter_context(override_settings(ZINRELO=overrides))
        stack.enter_context(mock.patch.object(ZinreloClient, "request", self._answer))
        self._stack = stack
        return self

    def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> ZinreloRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # What the test does

    def respond_with(
        self, error_code: str, *, status: int = 200, reason: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` calls with this error instead of awarding.

        ``error_code`` is one of Zinrelo's: a refusal such as ``MEMBER_BLOCKED`` (Zinrelo sends
        those with HTTP 200), or an outage such as ``SERVICE_UNAVAILABLE`` with ``status=503``,
        which delivery retries. ``"timeout"`` and ``"connection_error"`` stand for a call that
        never got an answer.
        """
        if error_code in NO_ANSWER:
            reply = Reply(Outcome.RETRYABLE, None, error_code, reason or NO_ANSWER[error_code])
        else:
            text = reason or REASONS.get(error_code, f"{error_code} (django_zinrelo.testing).")
            body = {"success": False, "error_code": error_code, "reason": text}
            reply = classify(status, json.dumps(body))
        with self._lock:
            self._planned.extend([reply] * times)

    def deliver(self) -> Counter[str]:
        """Deliver every waiting award now, as a commit or an elapsed backoff would.

        A test's transaction never commits (Django's ``TestCase``, pytest's ``db``), so the
        after-commit delivery of an order save never runs there: call this after the saves.
        Each call gives every waiting award one more attempt; returns how many ended in each
        status.
        """
        if self._stack is None:
            raise RuntimeError("Start the recorder first: deliver() would reach the network.")
        Award.objects.filter(status__in=WAITING).update(next_attempt_at=timezone.now())
        return deliver_due()

    # What the test reads

    @property
    def order_ids(self) -> list[str]:
        """The order id of each call, oldest first."""
        return [str(p["transaction_attributes"]["order_id"]) for p in self.payloads]

    def for_order(self, order_id: str) -> list[dict[str, Any]]:
        """The bodies sent for one order id, one per call."""
        return [p for p in self.payloads if p["transaction_attributes"]["order_id"] == order_id]

    # The stand-in for ZinreloClient.request

    def _answer(self, method: str, url: str, body: str | None = None) -> Reply:
        payload = json.loads(body or "{}")
        with self._lock:
            self.payloads.append(payload)
            if self._planned:
                return self._planned.popleft()
            attributes = payload["transaction_attributes"]
            order_id = str(attributes["order_id"])
            if order_id in self._awarded:
                duplicate = {
                    "success": False,
                    "error_code": DUPLICATE_ORDER_ID,
                    "reason": "Loyalty Points already awarded for the Order ID.",
                }
                return classify(200, json.dumps(duplicate))
            self._awarded.add(order_id)
            data = {
                "id": f"test-{len(self._awarded)}",
                "member_id": payload["member_id"],
                "activity_id": payload["activity_id"],
                "order_id": order_id,
                "points": int(Decimal(attributes["order_subtotal"])),
                "points_status": "pending" if payload.get("approval_date") else "auto_approved",
            }
            return classify(200, json.dumps({"success": True, "data": data}))


if TYPE_CHECKING:
    from unittest import TestCase as _TestCaseBase
else:
    _TestCaseBase = object


class ZinreloTestMixin(_TestCaseBase):
    """For Django's ``TestCase``: ``self.zinrelo`` is a fresh active recorder in every test."""

    zinrelo: ZinreloRecorder

    def setUp(self) -> None:
        super().setUp()
        self.zinrelo = self.enterContext(ZinreloRecorder())


try:
    import pytest
except ImportError:  # a shop on Django's own test runner needs only the classes above
    pass
else:

    @pytest.fixture
    def zinrelo_awards(db: None) -> Iterator[ZinreloRecorder]:
        """An active :class:`ZinreloRecorder`, with database access (pytest-django's ``db``)."""
        with ZinreloRecorder() as recorder:
            yield recorder
