"""HTTP to Zinrelo and the reading of its answers; knows nothing of Django models.

Every answer becomes a :class:`Reply` whose :class:`Outcome` tells delivery what to do next.
Zinrelo reports many refusals with HTTP 200 and an ``error_code``, so the body decides, not the
status alone. Retrying is delivery's job (each retry logged and counted), so the transport never
retries by itself.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from django_zinrelo import __version__

USER_AGENT: Final = f"django-zinrelo/{__version__} python-requests/{requests.__version__}"
EXCERPT_CHARS: Final = 4096
REASON_CHARS: Final = 500
CODE_CHARS: Final = 64
POOL_SIZE: Final = 32
# What stands in an answer where the API key was: a proxy's error page may echo the headers.
API_KEY_MARK: Final = "[API key]"

DUPLICATE_ORDER_ID: Final = "DUPLICATE_ORDER_ID"
# UNABLE_TO_UPLOAD_PHOTO is answered with HTTP 200 but says "Please try again later".
RETRYABLE_ERROR_CODES: Final = frozenset(
    {
        "RATE_LIMIT_EXCEEDED",
        "SERVICE_UNAVAILABLE",
        "INTERNAL_SERVER_ERROR",
        "UNABLE_TO_UPLOAD_PHOTO",
    }
)
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})

# Codes for answers that never reached Zinrelo's own error table. Lower case, so they can never be
# mistaken for one of Zinrelo's (which are all upper case).
TIMEOUT: Final = "timeout"
CONNECTION_ERROR: Final = "connection_error"
BAD_RESPONSE: Final = "bad_response"
REDIRECT: Final = "redirect"
REQUEST_ERROR: Final = "request_error"
CLIENT_ERROR: Final = "client_error"
PATH_NOT_FOUND: Final = "path_not_found"

# Answers about the store or our side of the wire, not about one award: every award gets the same
# one until someone fixes a setting, so awards wait for that instead of ending refused one by one.
# Each code maps to what staff should do about it.
STORE_WIDE: Final[dict[str, str]] = {
    "STORE_INACTIVE": "The Zinrelo store is not active: reactivate it in Zinrelo's admin console.",
    "PAUSED_ACTIVITY": (
        "The activity in ZINRELO['ACTIVITY_ID'] is paused in Zinrelo: resume it in Zinrelo's "
        "admin console."
    ),
    "MERCHANT_DOES_NOT_EXIST": (
        "Zinrelo knows no merchant for ZINRELO['PARTNER_ID']: check the partner id in Zinrelo's "
        "admin console (General, Settings)."
    ),
    "INVALID_JSON": (
        "Zinrelo could not read the award body as JSON: a proxy between this server and Zinrelo "
        "changes requests, or django-zinrelo has a bug (please report it)."
    ),
    "INVALID_REQUEST": (
        "Zinrelo refused the form of the request (its content type): a proxy between this "
        "server and Zinrelo changes requests, or django-zinrelo has a bug (please report it)."
    ),
    PATH_NOT_FOUND: (
        "Zinrelo has no such award endpoint: check ZINRELO['API_URL'] and ZINRELO['AWARD_PATH']."
    ),
}


class Outcome(enum.StrEnum):
    AWARDED = "awarded"
    ALREADY_AWARDED = "already_awarded"
    REFUSED = "refused"
    RETRYABLE = "retryable"
    STORE_PROBLEM = "store_problem"


@dataclass(frozen=True)
class Reply:
    outcome: Outcome
    status_code: int | None
    error_code: str = ""
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    duration_ms: int = 0
    body: str = ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from either form RFC 9110 allows (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def readable(value: Any, limit: int) -> str:
    """Text from Zinrelo as a person reads it and a database keeps it: one line of printable
    characters (PostgreSQL refuses NUL), never longer than ``limit``."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"


def decoded(body: str) -> Any:
    """The JSON ``body`` holds, or None when it holds none that can be read.

    Any failure of the decoder means the same, so it is caught here and nowhere wider: besides
    ``ValueError`` for malformed text, deep nesting (a body of ``[`` repeated) raises
    ``RecursionError``, which would otherwise escape before the answer is recorded.
    """
    try:
        return json.loads(body)
    except Exception:
        return None


def masked(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by a fixed mark."""
    return text.replace(secret, API_KEY_MARK) if secret else text


def classify(status: int, body: str, retry_after: str | None = None) -> Reply:
    """Turn one HTTP answer into an outcome, following the table in the project's API reference."""
    after = parse_retry_after(retry_after)
    # Kept verbatim as evidence, except NUL, which no PostgreSQL text column accepts.
    excerpt = body[:EXCERPT_CHARS].replace("\x00", "\ufffd")
    if 300 <= status < 400:
        return Reply(
            Outcome.REFUSED,
            status,
            REDIRECT,
            f"Zinrelo answered HTTP {status} (a redirect); redirects are never followed because "
            "they would carry the API credentials to another host. Check ZINRELO['API_URL'].",
            body=excerpt,
        )
    parsed = decoded(body)
    if not isinstance(parsed, dict):
        if status in RETRYABLE_STATUSES or status >= 500 or status < 300:
            return Reply(
                Outcome.RETRYABLE,
                status,
                BAD_RESPONSE,
                f"Zinrelo answered HTTP {status} with a body that is not a JSON object; "
                "will try again.",
                retry_after=after,
                body=excerpt,
            )
        return Reply(
            Outcome.REFUSED,
            status,
            BAD_RESPONSE,
            f"Zinrelo answered HTTP {status} with a body that is not a JSON object.",
            body=excerpt,
        )
    error_code = readable(parsed.get("error_code") or "", CODE_CHARS)
    reason = readable(parsed.get("reason") or parsed.get("message") or "", REASON_CHARS)
    data = parsed.get("data")
    data = data if isinstance(data, dict) else {}
    if status == 200 and not error_code and parsed.get("success") is not False:
        return Reply(Outcome.AWARDED, status, data=data, body=excerpt)
    if error_code == DUPLICATE_ORDER_ID:
        return Reply(Outcome.ALREADY_AWARDED, status, error_code, reason, data, body=excerpt)
    if error_code in STORE_WIDE:
        return Reply(
            Outcome.STORE_PROBLEM,
            status,
            error_code,
            reason or f"Zinrelo answered HTTP {status} {error_code}.",
            data,
            body=excerpt,
        )
    if status in RETRYABLE_STATUSES or status >= 500 or error_code in RETRYABLE_ERROR_CODES:
        return Reply(
            Outcome.RETRYABLE,
            status,
            error_code,
            reason or f"Zinrelo answered HTTP {status}; will try again.",
            data,
            after,
            body=excerpt,
        )
    if not reason:
        reason = (
            f"Zinrelo answered HTTP {status} and refused without giving a reason."
            if error_code
            else f"Zinrelo answered HTTP {status} with success false and no error code."
        )
    return Reply(Outcome.REFUSED, status, error_code, reason, data, body=excerpt)


def fits_a_header(value: str) -> bool:
    """Whether a credential can travel as an HTTP header value as it is: printable ASCII with no
    space around it. A newline or a leading space (a key pasted from an email or a file) makes
    requests refuse the header; a trailing one would be sent and refused by Zinrelo."""
    return value == value.strip() and value.isascii() and value.isprintable()


def award_answer(url: str, reply: Reply) -> Reply:
    """An award call's answer, where a 404 means the award path itself is wrong.

    An award addresses no resource of its own (no transaction id, no member in the path), and no
    code of Zinrelo's table that an award can earn comes with a 404; the one 404 code,
    ``TRANSACTION_DOES_NOT_EXIST``, is what a path read as ``transactions/{id}`` would give. The
    path is inferred, so a wrong one is plausible, and it fails every award alike.
    """
    if reply.status_code != 404 or reply.outcome is Outcome.STORE_PROBLEM:
        return reply
    # Our own codes (bad_response for a proxy's page) are lower case; Zinrelo's are kept.
    said = (
        f" (Zinrelo said {reply.error_code}: {reply.reason})" if reply.error_code.isupper() else ""
    )
    return replace(
        reply,
        outcome=Outcome.STORE_PROBLEM,
        error_code=PATH_NOT_FOUND,
        reason=readable(f"POST {url} answered HTTP 404{said}.", REASON_CHARS),
    )


class ZinreloClient:
    """One pooled session per set of credentials. The key is kept for the session's headers and
    to mask it in answers; ``repr`` never shows it."""

    def __init__(
        self, *, partner_id: str, api_key: str, connect_timeout: float, read_timeout: float
    ) -> None:
        self.partner_id = partner_id
        self._api_key = api_key
        self.timeout = (connect_timeout, read_timeout)
        # The setting to fix, never its value: the value may be the key.
        self.malformed = [
            name
            for name, value in (("PARTNER_ID", partner_id), ("API_KEY", api_key))
            if not fits_a_header(value)
        ]
        self.session = requests.Session()
        self.session.headers.update(
            {
                "partner-id": partner_id,
                "api-key": api_key,
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Content-Type": "application/json",
            }
        )
        pooled = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        self.session.mount("https://", pooled)
        self.session.mount("http://", pooled)
        # The environment's proxies and CA bundle, read once per host (``_environment``)
        # rather than on every call: requests reads the whole environment and looks for a
        # ~/.netrc each time, a fifth of a bulk sync's HTTP work. Credentials from a .netrc
        # are never wanted here: the key travels in its own header.
        self.session.trust_env = False
        self._environments: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"<ZinreloClient partner_id={self.partner_id!r}>"

    def post(self, url: str, body: str) -> Reply:
        """POST a JSON body (awards, returns, and the empty body of approve, reject, reverse)."""
        return self.request("POST", url, body)

    def award(self, url: str, body: str) -> Reply:
        """POST one award (to ``ZINRELO["API_URL"]`` + ``["AWARD_PATH"]``)."""
        return award_answer(url, self.post(url, body))

    def get(self, url: str) -> Reply:
        """GET a URL whose query string is already encoded (the transaction lists)."""
        return self.request("GET", url)

    def request(self, method: str, url: str, body: str | None = None) -> Reply:
        """Make one call; never raises, whatever the network, Zinrelo or the HTTP stack does.

        The one place every call to Zinrelo passes, so the testing kit answers them all here.
        """
        started = time.monotonic()
        if self.malformed:
            settings = " and ".join(f"ZINRELO['{name}']" for name in self.malformed)
            return Reply(
                Outcome.REFUSED,
                None,
                REQUEST_ERROR,
                f"{settings} holds a line break, a space at its start or end, or a character "
                "that is not printable ASCII, so it cannot be sent as an HTTP header: check it "
                "(copy it again from Zinrelo's admin console).",
            )
        try:
            environment = self._environment(url)
            response = self.session.request(
                method,
                url,
                data=None if body is None else body.encode("utf-8"),
                timeout=self.timeout,
                allow_redirects=False,
                proxies=environment["proxies"],
                verify=environment["verify"],
            )
            content = response.content
        except requests.Timeout as error:
            return self._failed(started, TIMEOUT, self._timeout_reason(error))
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            return self._failed(
                started,
                CONNECTION_ERROR,
                f"Could not reach Zinrelo ({type(error).__name__}); will try again.",
            )
        except requests.RequestException as error:
            return Reply(
                Outcome.REFUSED,
                None,
                REQUEST_ERROR,
                f"The request could not be sent ({type(error).__name__}). "
                "Check ZINRELO['API_URL'].",
                duration_ms=self._elapsed(started),
            )
        except Exception as error:
            # Anything else is a failure inside requests or urllib3, whose frames hold the
            # request's headers (the API key) as local variables: a traceback let out of here
            # would carry the key into every logging or error-reporting tool that captures one.
            # The type says enough to investigate; the exception and its frames are dropped.
            return self._failed(
                started,
                CLIENT_ERROR,
                f"Calling Zinrelo failed inside the HTTP library ({type(error).__name__}); "
                "will try again.",
            )
        # Masked before it is read, so that no excerpt or reason cut short keeps part of the key.
        text = masked(content.decode("utf-8", errors="replace"), self._api_key)
        reply = classify(response.status_code, text, response.headers.get("Retry-After"))
        return replace(reply, duration_ms=self._elapsed(started))

    def _environment(self, url: str) -> dict[str, Any]:
        """What requests takes from the environment for ``url`` (proxies, ``no_proxy``,
        ``REQUESTS_CA_BUNDLE``), as a session trusting it would, kept for its scheme and host."""
        origin = "://".join(urlsplit(url)[:2])
        if origin not in self._environments:
            with requests.Session() as trusting:
                found = trusting.merge_environment_settings(url, {}, None, None, None)
                self._environments[origin] = dict(found)
        return self._environments[origin]

    def _timeout_reason(self, error: requests.Timeout) -> str:
        connect, read = self.timeout
        if isinstance(error, requests.ConnectTimeout):
            return f"Timed out connecting to Zinrelo after {connect:g}s; will try again."
        return (
            f"Zinrelo did not answer within {read:g}s; will try again "
            "(if Zinrelo did record it, the retry is answered DUPLICATE_ORDER_ID)."
        )

    def _failed(self, started: float, code: str, reason: str) -> Reply:
        return Reply(Outcome.RETRYABLE, None, code, reason, duration_ms=self._elapsed(started))

    @staticmethod
    def _elapsed(started: float) -> int:
        return round((time.monotonic() - started) * 1000)


@lru_cache(maxsize=64)
def get_client(
    partner_id: str, api_key: str, connect_timeout: float, read_timeout: float
) -> ZinreloClient:
    """Reuse a session per configuration: pooled keep-alive connections double throughput."""
    return ZinreloClient(
        partner_id=partner_id,
        api_key=api_key,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
