"""System checks of ``ZINRELO["OSCAR"]`` and of the re-sync action on oscar's order admin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import CheckMessage, Error, Warning

LISTS = ("QUALIFYING_STATUSES", "CANCELLED_STATUSES", "APPROVING_STATUSES", "REFUND_EVENT_TYPES")


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Unknown keys (a typo) warn; a value the app would misread is an error: a single name
    given as a string would be read letter by letter."""
    from django_zinrelo.contrib.oscar.conf import DEFAULTS, user_oscar_settings

    raw = user_oscar_settings()
    if not isinstance(raw, Mapping):
        return [
            Error(
                f"ZINRELO['OSCAR'] must be a dict, not {type(raw).__name__}.",
                id="django_zinrelo_oscar.E001",
            )
        ]
    messages: list[CheckMessage] = []
    unknown = sorted(str(key) for key in set(raw) - set(DEFAULTS))
    if unknown:
        messages.append(
            Warning(
                f"ZINRELO['OSCAR'] has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(DEFAULTS)}.",
                id="django_zinrelo_oscar.W002",
            )
        )
    messages += [
        Error(
            f"ZINRELO['OSCAR']['{name}'] must be a list of names, not {raw[name]!r}.",
            hint="Give a list, even of one name: ['Cancelled'].",
            id="django_zinrelo_oscar.E001",
        )
        for name in LISTS
        if raw.get(name) is not None and not is_names(raw[name])
    ]
    if not isinstance(raw.get("ADMIN_ACTION", True), bool):
        messages.append(
            Error(
                "ZINRELO['OSCAR']['ADMIN_ACTION'] must be True or False.",
                id="django_zinrelo_oscar.E001",
            )
        )
    return messages


def is_names(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(name, str) for name in value
    )


def check_admin_action(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django_zinrelo.admin import resync_to_zinrelo
    from django_zinrelo.contrib.oscar.apps import order_admin
    from django_zinrelo.contrib.oscar.conf import get_oscar_settings

    model_admin = order_admin()
    if model_admin is None or not get_oscar_settings().admin_action:
        return []
    if resync_to_zinrelo in (model_admin.actions or ()):
        return []
    return [
        Warning(
            "The 'Re-sync to Zinrelo' action is not on oscar's order admin.",
            hint="List 'django_zinrelo.contrib.oscar' after 'django.contrib.admin' in "
            "INSTALLED_APPS, or set ZINRELO['OSCAR']['ADMIN_ACTION'] = False.",
            id="django_zinrelo_oscar.W001",
        )
    ]
