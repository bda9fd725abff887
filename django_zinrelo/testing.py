"""Testing a shop's Zinrelo integration: no network, no credentials, no threads.

While a :class:`ZinreloRecorder` is active, awards are delivered in the test's own thread and every
call to Zinrelo is answered here instead of being sent: the test reads what was sent, and chooses
the answer of the next call when it wants a refusal or an outage. Every other call is answered by
the sandbox's own ledger (:mod:`django_zinrelo.sandbox_ledger`: the same points, returns, approval
and codes), and the answers go through the client's real reading of Zinrelo's bodies, so the rows
end as they would in production.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from unittest import mock
from urllib.parse import parse_qs, urlsplit

from django.test import override_settings
from django.utils import timezone

from django_zinrelo.client import CONNECTION_ERROR, TIMEOUT, Outcome, Reply, ZinreloClient, classify
from django_zinrelo.conf import ZinreloSettings, get_settings, user_settings
from django_zinrelo.models import WAITING, Award
from django_zinrelo.sandbox_ledger import (
    ACTIONS,
    REASONS,
    Call,
    LedgerInspection,
    ZinreloError,
    ZinreloLedger,
    encode,
    not_found,
    parse_body,
    route,
)
from django_zinrelo.sync import deliver_due

TEST_PARTNER_ID: Final = "test-partner"
TEST_API_KEY: Final = "test-api-key"

# Calls that never get an answer, under the codes the award log shows for them.
NO_ANSWER: Final = {
    TIMEOUT: "Zinrelo did not answer in time (answered by django_zinrelo.testing).",
    CONNECTION_ERROR: "Could not reach Zinrelo (answered by django_zinrelo.testing).",
}


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One call to Zinrelo as the recorder saw it.

    ``path`` is relative to the API base (``transactions/award``, ``transactions/A-1/reject``),
    ``query`` its query string, ``body`` the parsed JSON body (None for a call without one),
    ``action`` the operation (``award``, ``return``, ``reject``, ``approve``, ``reverse``,
    ``member``, ``create_member``, ``member_transactions``, ``transactions``; ``""`` for an
    unknown path) and ``order_id`` the order it concerns, where one does.
    """

    method: str
    path: str
    query: str
    body: dict[str, Any] | None
    action: str
    order_id: str | None


@dataclass(frozen=True, slots=True)
class _Planned:
    reply: Reply
    applied: bool


class ZinreloRecorder(LedgerInspection):
    """Captures the calls a shop sends and answers them like Zinrelo.

    Answers follow the sandbox's rules (:mod:`django_zinrelo.sandbox_ledger`): an award earns one
    point per whole unit of its products' value (of ``order_subtotal`` without products), an
    order id already awarded is answered ``DUPLICATE_ORDER_ID``, returns deduct and are not
    idempotent, pending awards are rejected, approved or reversed. Unlike the sandbox it refuses
    no member. What Zinrelo holds reads as on the sandbox (``order_points``, ``ledger``,
    ``deductions``, ``balance``, ``spend``, ``awards_for``, ``awarded``). Use it as a context
    manager or with :meth:`start` and :meth:`stop`.
    """

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        """Every award body sent, parsed, oldest first (a retried order appears once per call)."""
        self.calls: list[RecordedCall] = []
        """Every call, whatever its operation, oldest first."""
        self._ledger = ZinreloLedger()
        self._planned: deque[_Planned] = deque()
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
        if conf.store_names:  # each store of ZINRELO["STORES"] gets dummy keys too
            stores = dict(conf.stores)
            for name in conf.store_names:
                store = conf.for_store(name)
                stores[name] = {
                    **stores[name],
                    "PARTNER_ID": store.partner_id or TEST_PARTNER_ID,
                    "API_KEY": store.api_key or TEST_API_KEY,
                }
            overrides["STORES"] = stores
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
        self,
        error_code: str,
        *,
        status: int = 200,
        reason: str | None = None,
        times: int = 1,
        applied: bool = False,
    ) -> None:
        """Answer the next ``times`` calls, whatever they are, with this error.

        ``error_code`` is one of Zinrelo's: a refusal such as ``MEMBER_BLOCKED`` (Zinrelo sends
        those with HTTP 200), or an outage such as ``SERVICE_UNAVAILABLE`` with ``status=503``,
        which delivery retries. ``"timeout"`` and ``"connection_error"`` stand for a call that
        never got an answer. With ``applied=True`` Zinrelo applies each call before its answer
        is replaced: ``respond_with("timeout", applied=True)`` is an answer lost after the
        points moved.
        """
        if error_code in NO_ANSWER:
            reply = Reply(Outcome.RETRYABLE, None, error_code, reason or NO_ANSWER[error_code])
        else:
            text = reason or REASONS.get(error_code, f"{error_code} (django_zinrelo.testing).")
            body = {"success": False, "error_code": error_code, "reason": text}
            reply = classify(status, json.dumps(body))
        with self._lock:
            self._planned.extend([_Planned(reply, applied)] * times)

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
        """The order id of each award call, oldest first."""
        return [str(p["transaction_attributes"]["order_id"]) for p in self.payloads]

    def for_order(self, order_id: str) -> list[dict[str, Any]]:
        """Every operation sent for one order id, one per call, oldest first.

        Awards and returns as their parsed bodies; a reject, approve or reverse (which has no
        body) as ``{"action": "reject"}`` and so on. :meth:`actions` names each entry.
        """
        return [call.body or {"action": call.action} for call in self._operations(order_id)]

    def actions(self, order_id: str) -> list[str]:
        """The operation of each entry of :meth:`for_order`: ``["award", "return", ...]``."""
        return [call.action for call in self._operations(order_id)]

    def _operations(self, order_id: str) -> list[RecordedCall]:
        with self._lock:
            return [call for call in self.calls if call.order_id == order_id]

    # The stand-in for ZinreloClient.request

    def _answer(self, method: str, url: str, body: str | None = None) -> Reply:
        parts = urlsplit(url)
        target = url.split("?", 1)[0]
        conf = store_of(target)
        base = conf.api_url.rstrip("/") + "/"
        path = "transactions/award" if target == conf.award_url else target.removeprefix(base)
        call = route(method, path) if target.startswith(base) else None
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            planned = self._planned.popleft() if self._planned else None
            reply, data = self._apply(call, query, body, planned)
            sent = _parsed(body)
            self.calls.append(
                RecordedCall(
                    method,
                    path,
                    parts.query,
                    sent,
                    call.action if call else "",
                    _order_of(call, query, sent, data),
                )
            )
            if call is not None and call.action == "award" and sent is not None:
                self.payloads.append(sent)
            return reply

    def _apply(
        self,
        call: Call | None,
        query: Mapping[str, list[str]],
        body: str | None,
        planned: _Planned | None,
    ) -> tuple[Reply, dict[str, Any]]:
        """Zinrelo's answer by the ledger's rules (unless a planned answer says it never ran)."""
        data: dict[str, Any] = {}
        if planned is not None and not planned.applied:
            return planned.reply, data
        try:
            if call is None:
                raise not_found()
            request = parse_body(body) if call.has_body else None
            status, payload = self._ledger.handle(call, query, request)
            data = payload["data"]
        except ZinreloError as error:
            status, payload = error.status, error.payload()
        if planned is not None:
            return planned.reply, data
        return classify(status, encode(payload)), data


def _parsed(body: str | None) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _order_of(
    call: Call | None,
    query: Mapping[str, list[str]],
    body: Mapping[str, Any] | None,
    data: Mapping[str, Any],
) -> str | None:
    """The order a call concerns: from its body, its path (by order id) or Zinrelo's answer."""
    attributes = (body or {}).get("transaction_attributes")
    if isinstance(attributes, dict) and attributes.get("order_id") not in (None, ""):
        return str(attributes["order_id"])
    if call is not None and call.action in ACTIONS and query.get("idParam") == ["order_id"]:
        return call.target
    found = data.get("order_id") or data.get("returned_for_order_id")
    return None if found is None else str(found)


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


def store_of(target: str) -> ZinreloSettings:
    """The settings of the store a call was made to (by its API URL); the default store's when
    none matches, so that the call is answered as not found."""
    conf = get_settings()
    for name in conf.store_names:
        store = conf.for_store(name)
        if target.startswith(store.api_url.rstrip("/") + "/"):
            return store
    return conf
