"""The app's settings: one ``ZINRELO`` dict, read at call time.

Reading at call time (never caching at import) is what lets ``override_settings`` work in the
shop's tests and ours. The API key lives in a field excluded from ``repr`` so that a settings
object caught in a traceback, a debug page or a log line never shows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    "DELIVERY": "thread",
    "THREADS": 4,
}

ENVIRONMENT: Final = {"PARTNER_ID": "ZINRELO_PARTNER_ID", "API_KEY": "ZINRELO_API_KEY"}


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
    delivery: str
    threads: int

    @property
    def award_url(self) -> str:
        return self.url(self.award_path)

    def url(self, path: str) -> str:
        return self.api_url.rstrip("/") + "/" + path.lstrip("/")

    @property
    def has_credentials(self) -> bool:
        return bool(self.partner_id and self.api_key)


def user_settings() -> dict[str, Any]:
    value = getattr(settings, "ZINRELO", None)
    return dict(value) if isinstance(value, dict) else {}


def get_settings() -> ZinreloSettings:
    """Merge ``settings.ZINRELO`` over the defaults, credentials falling back to the environment."""
    merged = {**DEFAULTS, **user_settings()}
    for key, variable in ENVIRONMENT.items():
        if not merged[key]:
            merged[key] = os.environ.get(variable) or None
    return ZinreloSettings(**{name.lower(): merged[name] for name in DEFAULTS})
