"""The app's settings: one ``ZINRELO`` dict, read at call time.

Reading at call time (never caching at import) is what lets ``override_settings`` work in the
shop's tests and ours. The API key lives in a field excluded from ``repr`` so that a settings
object caught in a traceback, a debug page or a log line never shows it; so do ``STORES``.

The top-level settings are the default store; ``ZinreloSettings.for_store`` gives those of a
store of ``STORES``, so code that sends for an award asks for its store's settings and is
otherwise the same for one store or several.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from django.conf import settings

DEFAULT_API_URL: Final = "https://api.zinrelo.com/v2/loyalty/"

DELIVERY_CHOICES: Final = ("thread", "immediate", "tasks")

DEFAULTS: Final[dict[str, Any]] = {
    "ENABLED": True,
    "PARTNER_ID": None,
    "API_KEY": None,
    "API_URL": DEFAULT_API_URL,
    "AWARD_PATH": "transactions/award",
    "ORDER_MODEL": None,
    "ORDER_ADAPTER": "django_zinrelo.adapters.OrderAdapter",
    "REFUND_MODEL": None,
    "REFUND_ADAPTER": "django_zinrelo.adapters.RefundAdapter",
    "RETURN_PATH": "transactions/return",
    "TRANSACTION_PATH": "transactions/{id}/{action}",
    "MEMBER_TRANSACTIONS_PATH": "members/{member_id}/transactions",
    "ACTIVITY_ID": "made_a_purchase",
    "CONNECT_TIMEOUT": 2.0,
    "READ_TIMEOUT": 5.0,
    "RETRY_FOR": 48 * 3600.0,
    "MAX_ATTEMPTS": None,
    "BACKOFF_BASE": 30.0,
    "BACKOFF_CAP": 3600.0,
    "LOOKUP_AFTER": 300.0,
    "DELIVERY": "thread",
    "THREADS": 4,
    "STORES": {},
}

# Keys of ``ZINRELO`` that belong to an integration of ``django_zinrelo.contrib``: known here, so
# check W001 leaves them alone; read and checked by the integration itself.
CONTRIB_KEYS: Final = ("OSCAR",)

ENVIRONMENT: Final = {"PARTNER_ID": "ZINRELO_PARTNER_ID", "API_KEY": "ZINRELO_API_KEY"}

# What a store of ``STORES`` may set. The credentials are the store's own (its settings, else its
# environment variables), never the top-level ones: an order sent under another store's
# credentials would earn points in the wrong store. API_URL and ACTIVITY_ID fall back to the
# top-level values.
STORE_KEYS: Final = ("PARTNER_ID", "API_KEY", "API_URL", "ACTIVITY_ID")
CREDENTIALS: Final = tuple(ENVIRONMENT)
MAX_STORE_NAME: Final = 64  # Award.store


class UnknownStore(LookupError):
    """An award names a store that ``ZINRELO["STORES"]`` does not hold (any more)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The order belongs to the Zinrelo store {name!r} (the order adapter's store()), "
            "which ZINRELO['STORES'] does not define: add it there, then re-send it from the admin "
            "or with zinrelo_sync --failed."
        )


def store_environment(name: str, key: str) -> str:
    """``ZINRELO_<NAME>_<KEY>``: the name upper-cased, anything but letters and digits as ``_``."""
    return f"ZINRELO_{re.sub('[^A-Z0-9]', '_', name.upper())}_{key}"


@dataclass(frozen=True)
class ZinreloSettings:
    enabled: bool
    partner_id: str | None
    api_key: str | None = field(repr=False)
    api_url: str
    award_path: str
    order_model: str | None
    order_adapter: Any
    refund_model: str | None
    refund_adapter: Any
    return_path: str
    transaction_path: str
    member_transactions_path: str
    activity_id: str
    connect_timeout: float
    read_timeout: float
    retry_for: float
    max_attempts: int | None
    backoff_base: float
    backoff_cap: float
    lookup_after: float
    delivery: str
    threads: int
    # Every store's settings, keys included: kept out of repr, and of comparison and hashing.
    stores: Any = field(repr=False, compare=False)
    store: str = ""  # which store these settings are for; "" is the top-level (default) one

    @property
    def award_url(self) -> str:
        return self.url(self.award_path)

    def url(self, path: str) -> str:
        return self.api_url.rstrip("/") + "/" + path.lstrip("/")

    @property
    def has_credentials(self) -> bool:
        return bool(self.partner_id and self.api_key)

    @property
    def store_names(self) -> tuple[str, ...]:
        """The named stores of ``STORES``; a malformed entry (reported by check E010) is none,
        so that awards naming it end invalid rather than every delivery failing."""
        if not isinstance(self.stores, Mapping):
            return ()
        return tuple(
            name
            for name, store in self.stores.items()
            if isinstance(name, str) and name and isinstance(store, Mapping)
        )

    def for_store(self, name: str) -> ZinreloSettings:
        """These settings as store ``name`` sees them: its credentials, API URL and activity.

        ``""`` is the default store, the top-level settings themselves, so a shop with one store
        never names one. Raises :class:`UnknownStore` for a name ``STORES`` does not hold.
        """
        if not name:
            return self
        if name not in self.store_names:
            raise UnknownStore(name)
        store = self.stores[name]
        values: dict[str, Any] = {key: store.get(key) for key in STORE_KEYS}
        for key in CREDENTIALS:
            if not values[key]:
                values[key] = os.environ.get(store_environment(name, key)) or None
        for key in ("API_URL", "ACTIVITY_ID"):
            if values[key] is None:
                values[key] = getattr(self, key.lower())
        return replace(self, store=name, **{key.lower(): value for key, value in values.items()})


def user_settings() -> dict[str, Any]:
    value = getattr(settings, "ZINRELO", None)
    return dict(value) if isinstance(value, dict) else {}


# The last settings built, with the values they were built from: ``settings.ZINRELO`` (copied) and
# the environment's credentials that it leaves unset.
LAST: list[tuple[dict[str, Any], dict[str, str | None], ZinreloSettings]] = []


def get_settings() -> ZinreloSettings:
    """Merge ``settings.ZINRELO`` over the defaults, credentials falling back to the environment.

    Both are read on every call; the settings built from the same values last time are reused,
    since every qualifying save asks (building them was the largest single part of the save hook's
    own Python: 12 µs a call, 2 µs reused).
    """
    given = user_settings()
    environment = {
        key: os.environ.get(variable) or None
        for key, variable in ENVIRONMENT.items()
        if not given.get(key)
    }
    last = LAST[-1] if LAST else None
    if last is not None and last[0] == given and last[1] == environment:
        return last[2]
    merged = {**DEFAULTS, **given, **environment}
    built = ZinreloSettings(**{name.lower(): merged[name] for name in DEFAULTS})
    LAST[:] = [(given, environment, built)]
    return built
