"""System checks shown by ``manage.py check``; stable ids, so a shop can silence one on purpose."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from django_zinrelo.adapters import OrderAdapter, RefundAdapter
from django_zinrelo.client import fits_a_header
from django_zinrelo.conf import (
    CONTRIB_KEYS,
    DEFAULTS,
    DELIVERY_CHOICES,
    ENVIRONMENT,
    MAX_STORE_NAME,
    STORE_KEYS,
    ZinreloSettings,
    get_settings,
    store_environment,
    user_settings,
)

POSITIVE_NUMBERS = ("CONNECT_TIMEOUT", "READ_TIMEOUT", "RETRY_FOR", "MAX_ATTEMPTS", "THREADS")
NON_NEGATIVE_NUMBERS = ("BACKOFF_BASE", "BACKOFF_CAP", "LOOKUP_AFTER")
OPTIONAL = ("MAX_ATTEMPTS",)  # None: no limit of its own


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    raw = user_settings()
    conf = get_settings()
    messages: list[CheckMessage] = []
    unknown = sorted(set(raw) - {*DEFAULTS, *CONTRIB_KEYS})
    if unknown:
        messages.append(
            Warning(
                f"ZINRELO has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join([*DEFAULTS, *CONTRIB_KEYS])}.",
                id="django_zinrelo.W001",
            )
        )
    if conf.enabled and not conf.has_credentials and conf.store_names:
        messages.append(
            Warning(
                "The default Zinrelo store has no credentials: awards of orders whose adapter's "
                "store() returns '' will wait unsent.",
                hint="Set ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] (or ZINRELO_PARTNER_ID and "
                "ZINRELO_API_KEY), or silence this when every order names a store of "
                "ZINRELO['STORES'].",
                id="django_zinrelo.W003",
            )
        )
    elif conf.enabled and not conf.has_credentials:
        messages.append(
            Error(
                "Zinrelo credentials are missing: awards will wait unsent.",
                hint="Set ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'], or the environment "
                "variables ZINRELO_PARTNER_ID and ZINRELO_API_KEY, or ZINRELO['ENABLED'] = False.",
                id="django_zinrelo.E001",
            )
        )
    messages += check_credentials(conf)
    messages += check_order_model(conf)
    messages += check_adapter(conf)
    messages += check_refunds(conf)
    messages += check_api_url(conf)
    messages += check_values(conf)
    messages += check_stores(conf)
    return messages


def check_credentials(conf: ZinreloSettings, where: str = "ZINRELO") -> list[CheckMessage]:
    """Credentials that cannot travel as HTTP headers; the message never shows their value."""
    return [
        Error(
            f"{where}['{name}'] holds a line break, a space at its start or end, or a character "
            "that is not printable ASCII: it cannot be sent as an HTTP header, so every award "
            "would be refused.",
            hint=f"Copy it again from Zinrelo's admin console (General → Settings); if it comes "
            f"from the environment variable {variable(conf, name)}, check where that is set.",
            id="django_zinrelo.E007",
        )
        for name, value in (("PARTNER_ID", conf.partner_id), ("API_KEY", conf.api_key))
        if value is not None and not fits_a_header(str(value))
    ]


def variable(conf: ZinreloSettings, name: str) -> str:
    """The environment variable a credential of ``conf``'s store may come from."""
    return store_environment(conf.store, name) if conf.store else ENVIRONMENT[name]


def check_stores(conf: ZinreloSettings) -> list[CheckMessage]:
    """Each store of ``STORES``: a usable name, known keys, credentials that can be sent, an
    https API URL. Its values are checked as ``for_store`` resolves them (environment included)."""
    stores = conf.stores
    shape = "ZINRELO['STORES'] must map each store's name to its settings"
    if not isinstance(stores, Mapping):
        return [Error(f"{shape}, not {type(stores).__name__}.", id="django_zinrelo.E010")]
    messages: list[CheckMessage] = []
    for name, store in stores.items():
        where = f"ZINRELO['STORES'][{name!r}]"
        if not isinstance(name, str) or not 0 < len(name) <= MAX_STORE_NAME:
            messages.append(
                Error(
                    f"{where}: a store's name must be text of 1 to {MAX_STORE_NAME} characters.",
                    hint="'' is the default store (the top-level settings), never in STORES.",
                    id="django_zinrelo.E010",
                )
            )
            continue
        if not isinstance(store, Mapping):
            messages.append(
                Error(
                    f"{shape}: {where} is {type(store).__name__}, not a dict.",
                    id="django_zinrelo.E010",
                )
            )
            continue
        unknown = sorted(str(key) for key in set(store) - set(STORE_KEYS))
        if unknown:
            messages.append(
                Warning(
                    f"{where} has unknown keys: {', '.join(unknown)}.",
                    hint=f"A store sets only {', '.join(STORE_KEYS)}; other settings are the "
                    "top-level ones.",
                    id="django_zinrelo.W002",
                )
            )
        mine = conf.for_store(name)
        if conf.enabled and not mine.has_credentials:
            messages.append(
                Error(
                    f"{where} has no credentials: its awards will wait unsent.",
                    hint=f"Set its PARTNER_ID and API_KEY, or the environment variables "
                    f"{variable(mine, 'PARTNER_ID')} and {variable(mine, 'API_KEY')}. A store "
                    "never uses the top-level credentials.",
                    id="django_zinrelo.E011",
                )
            )
        messages += check_credentials(mine, where)
        if store.get("API_URL") is not None:  # else the top-level one, checked by E005
            messages += check_api_url(mine, where, "django_zinrelo.E012")
    return messages


def check_order_model(conf: ZinreloSettings) -> list[CheckMessage]:
    hint = "Set ZINRELO['ORDER_MODEL'] to your order model as 'app_label.ModelName'."
    if not conf.order_model:
        return [Error("ZINRELO['ORDER_MODEL'] is not set.", hint=hint, id="django_zinrelo.E002")]
    try:
        apps.get_model(conf.order_model)
    except (LookupError, ValueError):
        return [
            Error(
                f"ZINRELO['ORDER_MODEL'] = {conf.order_model!r} is not an installed model.",
                hint=hint,
                id="django_zinrelo.E002",
            )
        ]
    return []


def check_adapter(conf: ZinreloSettings) -> list[CheckMessage]:
    return check_class(
        "ORDER_ADAPTER",
        conf.order_adapter,
        OrderAdapter,
        "django_zinrelo.E003",
        "django_zinrelo.E004",
    )


def check_refunds(conf: ZinreloSettings) -> list[CheckMessage]:
    """The refund model is optional; when set, it and its adapter must load."""
    if conf.refund_model is None:
        return []
    try:
        apps.get_model(conf.refund_model)
    except (LookupError, ValueError):
        return [
            Error(
                f"ZINRELO['REFUND_MODEL'] = {conf.refund_model!r} is not an installed model.",
                hint="Give your refund model as 'app_label.ModelName', or remove the setting.",
                id="django_zinrelo.E008",
            )
        ]
    return check_class(
        "REFUND_ADAPTER",
        conf.refund_adapter,
        RefundAdapter,
        "django_zinrelo.E009",
        "django_zinrelo.E009",
    )


def check_class(
    name: str, path: Any, base: type, import_id: str, subclass_id: str
) -> list[CheckMessage]:
    try:
        adapter = import_string(path) if isinstance(path, str) else path
    except ImportError as error:
        return [
            Error(
                f"ZINRELO[{name!r}] = {path!r} does not import: {error}",
                hint=f"Give the dotted path of your {base.__name__} subclass.",
                id=import_id,
            )
        ]
    if not (isinstance(adapter, type) and issubclass(adapter, base)):
        return [
            Error(
                f"ZINRELO[{name!r}] = {path!r} is not a subclass of "
                f"{base.__module__}.{base.__name__}.",
                id=subclass_id,
            )
        ]
    return []


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_api_url(
    conf: ZinreloSettings, where: str = "ZINRELO", check_id: str = "django_zinrelo.E005"
) -> list[CheckMessage]:
    url = urlsplit(str(conf.api_url))
    if (
        url.scheme == "https"
        or settings.DEBUG
        or (url.scheme == "http" and is_loopback(url.hostname))
    ):
        return []
    return [
        Error(
            f"{where}['API_URL'] = {conf.api_url!r} is not https: the API key would cross the "
            "network in clear text.",
            hint="Use https (plain http is allowed only to a loopback sandbox or with DEBUG on).",
            id=check_id,
        )
    ]


def check_values(conf: ZinreloSettings) -> list[CheckMessage]:
    problems = []
    if not isinstance(conf.enabled, bool):
        problems.append(f"ENABLED must be True or False, not {conf.enabled!r}")
    if conf.delivery not in DELIVERY_CHOICES:
        problems.append(
            f"DELIVERY must be one of {', '.join(DELIVERY_CHOICES)}, not {conf.delivery!r}"
        )
    for name in POSITIVE_NUMBERS + NON_NEGATIVE_NUMBERS:
        value = getattr(conf, name.lower())
        if value is None and name in OPTIONAL:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{name} must be a number, not {value!r}")
        elif value < 0 or (value == 0 and name in POSITIVE_NUMBERS):
            bound = "above" if name in POSITIVE_NUMBERS else "at least"
            problems.append(f"{name} must be {bound} zero, not {value!r}")
    for name in ("MAX_ATTEMPTS", "THREADS"):
        value = getattr(conf, name.lower())
        if isinstance(value, float):
            problems.append(f"{name} must be a whole number, not {value!r}")
    return [
        Error(f"ZINRELO['{p.split()[0]}'] is invalid: {p}.", id="django_zinrelo.E006")
        for p in problems
    ]
