"""``ZINRELO["OSCAR"]``, read at each use so that ``override_settings`` works.

A key of the app's one settings dict: the core knows it (``conf.CONTRIB_KEYS``) and leaves its
contents to this module and its checks.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from django.apps import apps
from django.db.models import Model

from django_zinrelo.conf import user_settings

DEFAULTS: Final[dict[str, Any]] = {
    # None: every status but the cancelled ones. Oscar takes the payment before it places the
    # order, so a placed order is a paid one, whatever OSCAR_INITIAL_ORDER_STATUS (maybe unset,
    # then the status is "") calls it.
    "QUALIFYING_STATUSES": None,
    "CANCELLED_STATUSES": ("Cancelled",),
    # Approves points held pending by the adapter's approval_date(); nothing to do otherwise.
    "APPROVING_STATUSES": ("Complete",),
    # PaymentEventType codes (slugs of their names: "Refunded" -> "refunded").
    "REFUND_EVENT_TYPES": ("refund", "refunded"),
    # The re-sync action added to the ModelAdmin oscar registers for its Order.
    "ADMIN_ACTION": True,
}


@dataclass(frozen=True)
class OscarSettings:
    qualifying_statuses: Collection[str] | None
    cancelled_statuses: Collection[str]
    approving_statuses: Collection[str]
    refund_event_types: Collection[str]
    admin_action: bool


def user_oscar_settings() -> Any:
    """What the shop set, unchecked (checks.py reports what is wrong with it)."""
    return user_settings().get("OSCAR", {})


def get_oscar_settings() -> OscarSettings:
    raw = user_oscar_settings()
    merged = {**DEFAULTS, **(raw if isinstance(raw, Mapping) else {})}
    qualifying = merged["QUALIFYING_STATUSES"]
    return OscarSettings(
        qualifying_statuses=None if qualifying is None else tuple(qualifying),
        cancelled_statuses=tuple(merged["CANCELLED_STATUSES"] or ()),
        approving_statuses=tuple(merged["APPROVING_STATUSES"] or ()),
        refund_event_types=tuple(merged["REFUND_EVENT_TYPES"] or ()),
        admin_action=bool(merged["ADMIN_ACTION"]),
    )


def oscar_model(name: str) -> type[Model]:
    """A model of oscar's order app (``order``, forked or not), looked up when asked."""
    return apps.get_model(f"order.{name}")
