"""A local stand-in for Zinrelo's v2 loyalty API, for development, tests and benchmarks.

Zinrelo has no public sandbox host, and a staging store still awards real points and throttles, so a
shop needs something on its own machine that answers like Zinrelo: the same paths and headers, the
same error bodies (many of them HTTP 200), duplicate order ids refused, and the failures a real
network produces (5xx, 429, HTML from a proxy, resets, hangs, an award accepted after the client
gave up, an answer lost after the call was applied). The rules follow ``seeds/000`` and
``seeds/004`` of the project's API notes and live in :mod:`django_zinrelo.sandbox_ledger` (shared
with the testing kit), whose docstring states them: points, returns, approval.

Calls served below ``/v2/loyalty/``: ``POST transactions/award``, ``POST transactions/return``,
``POST transactions/{id}/reject|approve|reverse`` (``?idParam=order_id`` to name the order),
``GET members/{id}/transactions`` and ``GET transactions`` (filters ``transaction_type``,
``points_status``, ``created_date`` / ``approved_date`` as JSON operators, paging by ``start_index``
and ``count``; an unknown member has an empty list), ``GET members/{id}`` (available and pending
points) and ``POST members``. Faults are drawn for the write calls (award, return, reject, approve,
reverse), and for the transaction lists with ``fault_reads=True``.

The Python API a test uses, thread-safe (each returns a copy taken under a lock):
``url``, ``requests`` (the request log), ``awarded`` (order id -> award transaction and its
``request``), ``awards_for(order_id)`` (the body of each award accepted for the order: more than
one would mean a race awarded it twice), ``order_points(order_id)`` (points the member keeps for
the order: awarded minus every deduction, 0 if rejected or unknown), ``ledger(order_id)``
(``awarded``, ``pending``, ``approved``, ``rejected``, ``returned``, ``left``, ``status``;
KeyError for an order never awarded), ``deductions(order_id)`` (returns and reversals, oldest
first), ``balance(member_id)`` (``available``, ``pending``), ``spend(member_id, points)`` (the
customer redeems points, so that a later return meets ``RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE``)
and ``reset()``.

Standard library only and no Django import, so a test or a benchmark can start it in-process without
settings. It listens on loopback addresses only: it accepts any client that knows a throwaway key.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import logging
import random
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import Message
from types import MappingProxyType, TracebackType
from typing import Any, Final
from urllib.parse import SplitResult, parse_qs, urlsplit

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

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "DEFAULT_PARTNER_ID",
    "DEFAULT_REFUSALS",
    "FAULTS",
    "REASONS",
    "RequestRecord",
    "ZinreloSandbox",
    "parse_fault",
]

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/v2/loyalty/"
DEFAULT_PARTNER_ID: Final = "sandbox-partner"
DEFAULT_API_KEY: Final = "sandbox-key"

# Canonical order: a seeded sandbox maps each random draw to the same fault whatever the order of
# the ``faults`` mapping it was given. New faults go last, so an old seed keeps drawing old faults.
FAULTS: Final = ("503", "500", "429", "html", "reset", "hang", "slow_accept", "lost")
# Faults after which the call was applied all the same.
APPLIED_FAULTS: Final = ("slow_accept", "lost")

DEFAULT_REFUSALS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "blocked@example.com": "MEMBER_BLOCKED",
        "deleted@example.com": "MEMBER_DELETED",
        "excluded@example.com": "EXCLUDED_TRANSACTION",
        "paused@example.com": "PAUSED_ACTIVITY",
        "maxed@example.com": "MAX_AWARDS_EXCEEDED",
    }
)

# Float sums can land one ulp over 1 (0.6 + 0.3 + 0.1); that is not a configuration error.
RATE_TOLERANCE: Final = 1e-9
POLL_INTERVAL: Final = 0.05

HTML_ERROR_PAGE: Final = (
    b"<html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the sandbox saw it.

    Holds no headers and no query string, so it can never hold a credential whichever way a client
    sends one. ``status`` is None when no answer was sent (``reset``, ``hang``, ``lost``);
    ``error_code`` is that of the answer made, even when it was lost. ``order_id``, ``member_id``
    and ``points`` are read from the body or the answer where there is one; ``body`` is the
    request's body as text.
    """

    method: str
    path: str
    status: int | None
    fault: str | None
    error_code: str | None
    order_id: str | None = None
    member_id: str | None = None
    points: int | None = None
    body: str = ""


@dataclass(frozen=True, slots=True)
class _Reply:
    """What the handler must do: answer ``status`` (None: no answer), ``delay`` seconds late."""

    status: int | None
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    error_code: str | None = None
    fault: str | None = None
    delay: float = 0.0


def _error_reply(error: ZinreloError) -> _Reply:
    return _Reply(error.status, encode(error.payload()).encode(), error_code=error.error_code)


def _throttled() -> _Reply:
    reply = _error_reply(ZinreloError(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded."))
    return replace(reply, headers=(("Retry-After", "1"),))


# The faults that answer without looking at the request.
CANNED_FAULTS: Final[Mapping[str, _Reply]] = MappingProxyType(
    {
        "503": _error_reply(
            ZinreloError(
                503,
                "SERVICE_UNAVAILABLE",
                "API Service is unavailable. Please contact Zinrelo support.",
            )
        ),
        "500": _error_reply(ZinreloError(500, "INTERNAL_SERVER_ERROR", "Internal server error.")),
        "429": _throttled(),
        "html": _Reply(502, HTML_ERROR_PAGE, content_type="text/html"),
    }
)


def _check_fault(name: str, rate: float) -> None:
    if name not in FAULTS:
        raise ValueError(f"Unknown fault {name!r}; the faults are: {', '.join(FAULTS)}.")
    if not 0.0 <= rate <= 1.0:  # also refuses NaN
        raise ValueError(f"The rate of fault {name!r} must be between 0 and 1, not {rate}.")


def parse_fault(text: str) -> tuple[str, float]:
    """Read one ``NAME=RATE`` option, e.g. ``503=0.2``, as the management command's ``--fail``."""
    name, equals, rate_text = text.partition("=")
    name = name.strip()
    if not equals:
        raise ValueError(f"Expected NAME=RATE (e.g. 503=0.2), not {text!r}.")
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(f"The rate in {text!r} is not a number.") from None
    _check_fault(name, rate)
    return name, rate


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_object(headers: Message, body: bytes | None) -> dict[str, Any]:
    raw = headers.get("Content-Type", "")
    if raw.split(";", 1)[0].strip().lower() != "application/json":
        raise ZinreloError(
            400, "INVALID_REQUEST", f"Invalid request: unsupported Content-Type {raw or '(none)'}."
        )
    return parse_body(body)


def _field(container: Any, name: str) -> str | None:
    value = container.get(name) if isinstance(container, dict) else None
    return None if value in (None, "") or isinstance(value, dict | list) else str(value)


def _record(
    method: str,
    parts: SplitResult,
    call: Call | None,
    reply: _Reply,
    request: dict[str, Any] | None,
    data: Any,
    body: bytes | None,
) -> RequestRecord:
    """The request log's line: which order and member it concerned, read where they show."""
    attributes = request.get("transaction_attributes") if request else None
    order_id = _field(attributes, "order_id") or _field(data, "order_id")
    order_id = order_id or _field(data, "returned_for_order_id")
    if call is not None and call.action in ACTIONS and "idParam=order_id" in parts.query:
        order_id = order_id or call.target
    member_id = _field(request, "member_id") or _field(data, "member_id")
    if call is not None and call.action.startswith("member") and call.target:
        member_id = call.target
    points = data.get("points") if isinstance(data, dict) else None
    return RequestRecord(
        method,
        parts.path,
        reply.status,
        reply.fault,
        reply.error_code,
        order_id,
        member_id,
        points if isinstance(points, int) else None,
        (body or b"").decode("utf-8", errors="replace"),
    )


class ZinreloSandbox(LedgerInspection):
    """Zinrelo's v2 API on a loopback port, with its state open to inspection.

    The ledger (awards, returns, members) keeps its own lock; the request log and the fault
    generator sit behind the sandbox's. Every inspection returns a copy, so a test reads a
    consistent snapshot while handler threads go on writing. ``clock`` (a callable returning an
    aware UTC datetime) replaces the real time for approval dates; ``on_request`` is called with
    each :class:`RequestRecord` from the handler's thread, as the management command prints them;
    ``unique_attributes`` names the transaction attributes the store made unique (a second award
    with the same value: ``TRANSACTION_ATTRIBUTE_NOT_UNIQUE``); ``fault_reads`` draws faults for
    the transaction lists too, as the write calls always do.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        partner_id: str = DEFAULT_PARTNER_ID,
        api_key: str = DEFAULT_API_KEY,
        latency: float = 0.0,
        faults: Mapping[str, float] | None = None,
        seed: int | None = None,
        slow_seconds: float = 3.0,
        refusals: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
        unique_attributes: Iterable[str] = (),
        fault_reads: bool = False,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(
                f"The sandbox listens on loopback addresses only (127.x, localhost, ::1), not "
                f"{host!r}: anyone reaching it could use its throwaway key."
            )
        if latency < 0 or slow_seconds < 0:
            raise ValueError("latency and slow_seconds cannot be negative.")
        faults = dict(faults or {})
        for name, rate in faults.items():
            _check_fault(name, rate)
        if sum(faults.values()) > 1 + RATE_TOLERANCE:
            raise ValueError(f"The fault rates add up to more than 1: {faults}.")
        self.host = host
        self.port = port
        self.partner_id = partner_id
        self.api_key = api_key
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.faults: Mapping[str, float] = MappingProxyType(faults)
        self._ledger = ZinreloLedger(
            refusals=DEFAULT_REFUSALS if refusals is None else refusals,
            clock=clock,
            unique_attributes=unique_attributes,
        )
        self.fault_reads = fault_reads
        self.refusals = self._ledger.refusals
        self.on_request = on_request
        self._fault_table = [(name, faults[name]) for name in FAULTS if faults.get(name)]
        self._seed = seed
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._stopped = threading.Event()

    # Life cycle

    @property
    def url(self) -> str:
        """The base URL, with its trailing slash, as a shop's ``ZINRELO["API_URL"]``."""
        if self._url is None:
            raise RuntimeError("The sandbox has no URL until start() is called.")
        return self._url

    def start(self) -> ZinreloSandbox:
        """Bind (port 0: a free port, read it from ``url``) and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("The sandbox is already running.")
        self._stopped = threading.Event()
        server = _Server((self.host, self.port), self)
        host, port = server.socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        self._url = f"http://{shown}:{port}{API_PREFIX}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="zinrelo-sandbox",
            daemon=True,
        )
        self._thread.start()
        logger.debug("Zinrelo sandbox listening on %s", self._url)
        return self

    def stop(self) -> None:
        """Stop serving, release hanging and sleeping handlers, and close every connection."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        self._stopped.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        logger.debug("Zinrelo sandbox on %s stopped", self._url)

    def __enter__(self) -> ZinreloSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Inspection (see the module's docstring; the ledger's part comes from LedgerInspection)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget everything and rewind the fault generator, as a freshly started sandbox."""
        self._ledger.reset()
        with self._lock:
            self._requests.clear()
            self._random.seed(self._seed)

    # Request handling, called from the handler threads

    def _dispatch(self, method: str, target: str, headers: Message, body: bytes | None) -> _Reply:
        parts = urlsplit(target)
        path = parts.path
        call = route(method, path.removeprefix(API_PREFIX)) if path.startswith(API_PREFIX) else None
        # Drawn before validation: a proxy or an overloaded Zinrelo fails whatever was sent.
        faulty = call is not None and (call.writes or (self.fault_reads and call.lists))
        fault = self._draw_fault() if faulty else None
        request: dict[str, Any] | None = None
        data: Any = None
        if fault in ("reset", "hang"):
            reply = _Reply(None, fault=fault)
        elif fault is not None and fault in CANNED_FAULTS:
            reply = replace(CANNED_FAULTS[fault], fault=fault)
        else:
            try:
                if call is None:
                    raise not_found()
                self._check_auth(headers)
                if call.has_body:
                    request = _json_object(headers, body)
                query = parse_qs(parts.query, keep_blank_values=True)
                status, payload = self._ledger.handle(call, query, request)
                reply, data = _Reply(status, encode(payload).encode()), payload["data"]
            except ZinreloError as error:
                reply = _error_reply(error)
            if fault == "slow_accept":  # applied; only the answer is late
                reply = replace(reply, fault=fault, delay=self.slow_seconds)
            elif fault == "lost":  # applied; the answer never leaves
                reply = replace(reply, status=None, fault=fault)
        record = _record(method, parts, call, reply, request, data, body)
        with self._lock:
            self._requests.append(record)
        if self.on_request is not None:
            self.on_request(record)
        return reply

    def _check_auth(self, headers: Message) -> None:
        if headers.get("partner-id") != self.partner_id or headers.get("api-key") != self.api_key:
            raise ZinreloError(
                401,
                "ERROR_UNAUTHORIZED",
                "Some error occurred while authenticating your account at Zinrelo. Please verify "
                "your API credentials.",
            )

    def _draw_fault(self) -> str | None:
        with self._lock:
            roll = self._random.random()
        for name, rate in self._fault_table:
            if roll < rate:
                return name
            roll -= rate
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive I/O around :meth:`ZinreloSandbox._dispatch`; no Zinrelo rules here."""

    protocol_version = "HTTP/1.1"
    # Without it, a keep-alive client's next request waits on Nagle + delayed ACK: ~23 requests/s.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        sandbox = self.server.sandbox
        body = self._read_body()
        reply = sandbox._dispatch(self.command, self.path, self.headers, body)
        if reply.status is None:
            if reply.fault == "hang":
                sandbox._stopped.wait()
            self._drop(reset=reply.fault != "hang")
            return
        if sandbox._stopped.wait(sandbox.latency + reply.delay):
            self._drop(reset=False)
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:  # the client asked for it, or its body could not be delimited
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply.body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes | None:
        """The body, or None when it cannot be delimited, which leaves the connection unusable."""
        length = self.headers.get("Content-Length", "0")
        if "Transfer-Encoding" not in self.headers and length.isascii() and length.isdigit():
            return self.rfile.read(int(length))
        self.close_connection = True
        return None

    def _drop(self, *, reset: bool) -> None:
        """End the connection without an answer; with ``reset``, an RST instead of a FIN."""
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    # 16 client threads opening connections at once overflow the default backlog of 5, and a
    # dropped SYN costs the client a one-second retransmission.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: ZinreloSandbox) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves its own name with getfqdn(), a DNS query that is
        # slow on some machines and reaches beyond loopback; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handlers idling on keep-alive connections, which would otherwise outlive stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is routine here; the default prints a traceback.
        logger.debug("Error while serving %s", client_address, exc_info=True)
