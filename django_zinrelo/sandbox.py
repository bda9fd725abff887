"""A local stand-in for Zinrelo's v2 loyalty API, for development, tests and benchmarks.

Zinrelo has no public sandbox host, and a staging store still awards real points and throttles, so a
shop needs something on its own machine that answers like Zinrelo: the same paths and headers, the
same error bodies (many of them HTTP 200), duplicate order ids refused, and the failures a real
network produces (5xx, 429, HTML from a proxy, resets, hangs, an award accepted after the client
gave up). The rules follow ``seeds/000`` and ``seeds/004`` of the project's API notes.

Standard library only and no Django import, so a test or a benchmark can start it in-process without
settings. It listens on loopback addresses only: it accepts any client that knows a throwaway key.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import ipaddress
import json
import logging
import random
import re
import socket
import socketserver
import struct
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from email.message import Message
from types import MappingProxyType, TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)

API_PREFIX: Final = "/v2/loyalty/"
PURCHASE: Final = "made_a_purchase"
DEFAULT_PARTNER_ID: Final = "sandbox-partner"
DEFAULT_API_KEY: Final = "sandbox-key"

# Canonical order: a seeded sandbox maps each random draw to the same fault whatever the order of
# the ``faults`` mapping it was given.
FAULTS: Final = ("503", "500", "429", "html", "reset", "hang", "slow_accept")

DEFAULT_REFUSALS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "blocked@example.com": "MEMBER_BLOCKED",
        "deleted@example.com": "MEMBER_DELETED",
        "excluded@example.com": "EXCLUDED_TRANSACTION",
        "paused@example.com": "PAUSED_ACTIVITY",
        "maxed@example.com": "MAX_AWARDS_EXCEEDED",
    }
)

# Zinrelo's own wording (seeds/000), so a shop's admin shows what production would show.
REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "MEMBER_BLOCKED": "Member has been blocked.",
        "MEMBER_DELETED": "Member record has been deleted.",
        "EXCLUDED_TRANSACTION": "Points could not be awarded because exclusion rule was applied.",
        "PAUSED_ACTIVITY": "Activity is in paused state.",
        "MAX_AWARDS_EXCEEDED": "Maximum award limit exceeded.",
        "INVALID_MEMBER_STATUS": "Invalid member status.",
        "INCORRECT_MEMBER_ID_PASSED": "Incorrect Member ID passed.",
        "INVALID_MEMBER": "Member does not exist.",
        "STORE_INACTIVE": "Store is not active.",
        "TRANSACTION_ATTRIBUTE_NOT_UNIQUE": (
            "Unique transaction attribute for given activity is not unique."
        ),
    }
)

DATE_FIELDS: Final = ("transaction_date", "approval_date", "expiration_date")
DATE_FORMAT: Final = "%m/%d/%Y %H:%M:%S"
# strptime alone would also take "1/5/2019 1:2:3"; Zinrelo documents two digits everywhere.
DATE_SHAPE: Final = re.compile(r"\d\d/\d\d/\d{4} \d\d:\d\d:\d\d")
MIN_SUBTOTAL: Final = Decimal("0.01")
PRODUCT_FIELDS: Final = ("product_id", "product_quantity", "product_price", "product_title")
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
    sends one. ``status`` is None when no answer was sent (``reset``, ``hang``).
    """

    method: str
    path: str
    status: int | None
    fault: str | None
    error_code: str | None


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


def _encode(payload: Mapping[str, Any]) -> bytes:
    # Numbers in a request are parsed as Decimal (never float); echoed back, they go out as strings.
    return json.dumps(payload, default=str).encode()


def _success(data: Mapping[str, Any]) -> _Reply:
    return _Reply(200, _encode({"success": True, "data": data}))


class _ZinreloError(Exception):
    """An answer in Zinrelo's error shape; raised from deep in validation, answered by dispatch."""

    def __init__(self, status: int, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error_code = error_code
        self.reason = reason

    def reply(self) -> _Reply:
        body = {"success": False, "error_code": self.error_code, "reason": self.reason}
        return _Reply(self.status, _encode(body), error_code=self.error_code)


def _invalid(detail: str) -> _ZinreloError:
    return _ZinreloError(
        400, "INVALID_REQUEST_PARAMETER_VALUES", f"Invalid request parameter value: {detail}"
    )


def _refused(error_code: str, reason: str | None = None) -> _ZinreloError:
    text = reason or REASONS.get(error_code, f"Refused by the sandbox's rules ({error_code}).")
    return _ZinreloError(200, error_code, text)


def _throttled() -> _Reply:
    reply = _ZinreloError(429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded.").reply()
    return replace(reply, headers=(("Retry-After", "1"),))


# The faults that answer without looking at the request.
CANNED_FAULTS: Final[Mapping[str, _Reply]] = MappingProxyType(
    {
        "503": _ZinreloError(
            503,
            "SERVICE_UNAVAILABLE",
            "API Service is unavailable. Please contact Zinrelo support.",
        ).reply(),
        "500": _ZinreloError(500, "INTERNAL_SERVER_ERROR", "Internal server error.").reply(),
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


def _text(container: Mapping[str, Any], name: str) -> str:
    """A mandatory identifier: a non-empty string (an integer is accepted as its decimal form)."""
    value = container.get(name)
    if value is None or value == "":
        raise _invalid(f"{name} is mandatory.")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _invalid(f"{name} must be a string.")
    return str(value)


def _decimal(value: Any, name: str) -> Decimal:
    """Money and quantities, exact: JSON numbers already arrive as Decimal, strings are parsed."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _invalid(f"{name} must be a number.")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _invalid(f"{name} must be a number, not {value!r}.") from None
    if not number.is_finite():
        raise _invalid(f"{name} must be a finite number.")
    return number


def _check_date(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, str) and DATE_SHAPE.fullmatch(value):
        try:
            datetime.strptime(value, DATE_FORMAT)
        except ValueError:
            pass
        else:
            return
    raise _invalid(f"{name} must be a date in the format MM/DD/YYYY HH:MM:SS (UTC), not {value!r}.")


def _purchase_basis(attributes: Mapping[str, Any]) -> Decimal:
    """The amount points are computed on, checking the made_a_purchase attributes on the way.

    Product prices win over the subtotal, except that a subtotal lower than their sum means the
    discount is missing from the prices, which Zinrelo then prorates down to the subtotal
    (seeds/004).
    """
    for name in ("order_id", "order_total", "order_subtotal"):
        if attributes.get(name) in (None, ""):
            raise _invalid(f"{name} is mandatory in transaction_attributes for {PURCHASE}.")
    _decimal(attributes["order_total"], "order_total")
    subtotal = _decimal(attributes["order_subtotal"], "order_subtotal")
    if subtotal <= MIN_SUBTOTAL:
        raise _invalid(f"order_subtotal should be greater than {MIN_SUBTOTAL}.")
    products = attributes.get("products")
    if products is None or products == []:
        return subtotal
    if not isinstance(products, list):
        raise _invalid("products must be a list.")
    total = Decimal(0)
    for number, product in enumerate(products, start=1):
        where = f" of product {number}"
        if not isinstance(product, dict):
            raise _invalid(f"product {number} must be an object.")
        for name in PRODUCT_FIELDS:
            if product.get(name) in (None, ""):
                raise _invalid(f"{name} is mandatory for each product; missing{where}.")
        price = _decimal(product["product_price"], f"product_price{where}")
        quantity = _decimal(product["product_quantity"], f"product_quantity{where}")
        if price < 0:
            raise _invalid(f"product_price{where} must not be negative.")
        if quantity <= 0 or quantity != quantity.to_integral_value():
            raise _invalid(f"product_quantity{where} must be a whole number above zero.")
        total += price * quantity
    return min(total, subtotal)


def _content_error(headers: Message) -> _ZinreloError | None:
    raw = headers.get("Content-Type", "")
    if raw.split(";", 1)[0].strip().lower() == "application/json":
        return None
    return _ZinreloError(
        400, "INVALID_REQUEST", f"Invalid request: unsupported Content-Type {raw or '(none)'}."
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_object(headers: Message, body: bytes | None) -> dict[str, Any]:
    error = _content_error(headers)
    if error is not None:
        raise error
    if body is None:
        raise _ZinreloError(
            400, "INVALID_REQUEST", "Invalid request: the body needs a Content-Length."
        )
    try:
        parsed = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        parsed = None
    if not isinstance(parsed, dict):
        raise _ZinreloError(400, "INVALID_JSON", "Invalid JSON format.")
    return parsed


class ZinreloSandbox:
    """Zinrelo's v2 API on a loopback port, with its state open to inspection.

    All state (awards, members, the request log, the fault generator) sits behind one lock. The
    ``awarded`` and ``requests`` properties return copies taken under that lock, so a test reads a
    consistent snapshot while handler threads go on writing.
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
        self.refusals: Mapping[str, str] = MappingProxyType(
            dict(DEFAULT_REFUSALS if refusals is None else refusals)
        )
        self._fault_table = [(name, faults[name]) for name in FAULTS if faults.get(name)]
        self._seed = seed
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._awarded: dict[str, dict[str, Any]] = {}
        # Counted apart from ``_awarded`` (which would silently overwrite), so a race that records
        # one order twice shows up as 2 instead of hiding.
        self._award_counts: dict[str, int] = {}
        self._members: dict[str, dict[str, Any]] = {}
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

    # Inspection

    @property
    def awarded(self) -> dict[str, dict[str, Any]]:
        """A copy of order id -> recorded transaction (the answer's ``data`` plus the request)."""
        with self._lock:
            return copy.deepcopy(self._awarded)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def awards_for(self, order_id: str) -> int:
        with self._lock:
            return self._award_counts.get(order_id, 0)

    def reset(self) -> None:
        """Forget everything and rewind the fault generator, as a freshly started sandbox."""
        with self._lock:
            self._awarded.clear()
            self._award_counts.clear()
            self._members.clear()
            self._requests.clear()
            self._random.seed(self._seed)

    # Request handling, called from the handler threads

    def _dispatch(self, method: str, target: str, headers: Message, body: bytes | None) -> _Reply:
        parts = urlsplit(target)
        path = parts.path
        route = path.removeprefix(API_PREFIX) if path.startswith(API_PREFIX) else None
        try:
            if method == "POST" and route == "transactions/award":
                reply = self._award_with_faults(headers, body)
            elif method == "POST" and route == "members":
                reply = self._create_member(headers, body)
            elif (
                method == "GET" and route and route.startswith("members/") and route.count("/") == 1
            ):
                reply = self._get_member(headers, parts.query, unquote(route[len("members/") :]))
            else:
                raise _ZinreloError(404, "NOT_FOUND", "The resource does not exist.")
        except _ZinreloError as error:
            reply = error.reply()
        with self._lock:
            self._requests.append(
                RequestRecord(method, path, reply.status, reply.fault, reply.error_code)
            )
        return reply

    def _check_auth(self, headers: Message) -> None:
        if headers.get("partner-id") != self.partner_id or headers.get("api-key") != self.api_key:
            raise _ZinreloError(
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

    def _award_with_faults(self, headers: Message, body: bytes | None) -> _Reply:
        # Drawn before validation: a proxy or an overloaded Zinrelo fails whatever was sent.
        fault = self._draw_fault()
        if fault is None:
            return self._award(headers, body)
        if fault in ("reset", "hang"):
            return _Reply(None, fault=fault)
        if fault in CANNED_FAULTS:
            return replace(CANNED_FAULTS[fault], fault=fault)
        try:  # slow_accept: the award goes through; only the answer is late
            reply = self._award(headers, body)
        except _ZinreloError as error:
            reply = error.reply()
        return replace(reply, fault=fault, delay=self.slow_seconds)

    def _award(self, headers: Message, body: bytes | None) -> _Reply:
        self._check_auth(headers)
        request = _json_object(headers, body)
        member_id = _text(request, "member_id")
        activity_id = _text(request, "activity_id")
        attributes = request.get("transaction_attributes")
        if attributes is None:
            raise _invalid("transaction_attributes is mandatory.")
        if not isinstance(attributes, dict):
            raise _invalid("transaction_attributes must be an object.")
        if activity_id != PURCHASE:
            raise _invalid(
                f"activity_id {activity_id!r} is not an activity of the sandbox store, which has "
                f"only {PURCHASE}."
            )
        if "points_passed" in request:
            raise _invalid(f"points_passed is not allowed for {PURCHASE}.")
        for name in DATE_FIELDS:
            _check_date(request, name)
        basis = _purchase_basis(attributes)
        order_id = _text(attributes, "order_id")
        refusal = self.refusals.get(member_id)
        if refusal is not None:
            raise _refused(refusal)
        points = int(basis.to_integral_value(rounding=ROUND_FLOOR))
        if points <= 0:
            raise _refused("ZERO_POINTS", "Calculated points are zero.")
        data = {
            "id": uuid.uuid4().hex,
            "member_id": member_id,
            "activity_id": activity_id,
            "order_id": order_id,
            "points": points,
            "points_status": "pending" if request.get("approval_date") else "auto_approved",
            "created_time": datetime.now(UTC).strftime(DATE_FORMAT),
        }
        with self._lock:
            if order_id in self._awarded:
                raise _refused(
                    "DUPLICATE_ORDER_ID", "Loyalty Points already awarded for the Order ID."
                )
            self._awarded[order_id] = {**data, "request": request}
            self._award_counts[order_id] = self._award_counts.get(order_id, 0) + 1
            self._members.setdefault(member_id, {"member_id": member_id})
        return _success(data)

    def _create_member(self, headers: Message, body: bytes | None) -> _Reply:
        self._check_auth(headers)
        profile = _json_object(headers, body)
        member_id = _text(profile, "member_id")
        with self._lock:
            if member_id in self._members:
                raise _refused("MEMBER_ID_ALREADY_IN_USE", "Member ID already in use.")
            self._members[member_id] = {**profile, "member_id": member_id}
            return _success(self._member_view(member_id))

    def _get_member(self, headers: Message, query: str, member_id: str) -> _Reply:
        self._check_auth(headers)
        # Without idParam Zinrelo reads its own member id; the sandbox has only the shop's.
        id_param = parse_qs(query).get("idParam", ["member_id"])[0]
        if id_param != "member_id":
            raise _ZinreloError(
                400, "ID_PARAM_NAME_NOT_FOUND", "IdParams name passed does not exist."
            )
        with self._lock:
            if member_id not in self._members:
                raise _refused("INVALID_MEMBER")
            return _success(self._member_view(member_id))

    def _member_view(self, member_id: str) -> dict[str, Any]:
        """The member with points summed from its awards; call with the lock held."""
        points = {"auto_approved": 0, "pending": 0}
        for award in self._awarded.values():
            if award["member_id"] == member_id:
                points[award["points_status"]] += award["points"]
        return {
            **self._members[member_id],
            "available_points": points["auto_approved"],
            "pending_points": points["pending"],
        }


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
            self._drop(reset=reply.fault == "reset")
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
