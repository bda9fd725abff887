"""The guarantee tests' common ground: the app pointed at a real Zinrelo stand-in on loopback.

Timeouts are short and backoff is zero so that one ``zinrelo_sync`` pass (which loops until nothing
is due) settles every award a test creates; correctness never depends on these values, only speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_zinrelo.sandbox import DEFAULT_API_KEY, DEFAULT_PARTNER_ID, ZinreloSandbox
from tests.shop.models import Order

ROOT = Path(__file__).resolve().parent.parent

FAST = {
    "CONNECT_TIMEOUT": 0.5,
    "READ_TIMEOUT": 0.5,
    "BACKOFF_BASE": 0,
    "BACKOFF_CAP": 0,  # also zeroes the sandbox's Retry-After: 1, so retries fall due at once
    # Longer than the sandbox takes to apply a call its client gave up on, even on a loaded
    # machine: a look-up before that would find nothing (see operations.Settle.retry).
    "LOOKUP_AFTER": 2.0,
    "DELIVERY": "immediate",
}


def pointed_at(api_url: str, **changes: Any) -> override_settings:
    """The app's settings with Zinrelo at ``api_url`` and the sandbox's throwaway credentials."""
    return override_settings(
        ZINRELO={
            **settings.ZINRELO,
            **FAST,
            "API_URL": api_url,
            "PARTNER_ID": DEFAULT_PARTNER_ID,
            "API_KEY": DEFAULT_API_KEY,
            **changes,
        }
    )


# A second process of the same shop: the suite's settings, the test's database and ZINRELO.
PRELUDE = """
import json, os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
from django.test.utils import override_settings
override_settings(ZINRELO=json.loads(os.environ["ZINRELO_SETTINGS"])).enable()
"""


def shop_process(script: str, database_url: str, **options: Any) -> subprocess.Popen[str]:
    """Start ``script`` in a new Python process set up as the shop, with the current ZINRELO."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ZINRELO_SETTINGS": json.dumps(settings.ZINRELO),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(  # noqa: S603 (our own script, with this interpreter)
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )


def run_shop(script: str, database_url: str) -> tuple[int, str]:
    """Run ``script`` to its end (or its crash); its exit code and what it printed."""
    process = shop_process(script, database_url)
    out, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err
    return process.returncode, out


def shared_database(scratch: Path) -> str:
    """A database URL a second process can open: the test database itself on a server, or a
    migrated file under ``scratch`` on SQLite (whose in-memory test database is this process's
    alone)."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        return (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    url = f"sqlite:///{scratch / 'shop.sqlite3'}"
    code, _ = run_shop(
        "from django.core.management import call_command\ncall_command('migrate', verbosity=0)",
        url,
    )
    assert code == 0
    return url


@contextmanager
def serving(
    sandbox_options: dict[str, Any] | None = None, **changes: Any
) -> Iterator[ZinreloSandbox]:
    """A started sandbox (seeded, loopback, port 0) and the app's settings pointing at it."""
    with (
        ZinreloSandbox(**{"seed": 4, **(sandbox_options or {})}) as sandbox,
        pointed_at(sandbox.url, **changes),
    ):
        yield sandbox


def award_calls(sandbox: ZinreloSandbox) -> list[Any]:
    """Every award request the sandbox received, answered or not."""
    return [r for r in sandbox.requests if r.path.endswith("/transactions/award")]


def sync(*args: str) -> str:
    out = StringIO()
    call_command("zinrelo_sync", *args, stdout=out)
    return out.getvalue()


def new_order(number: str, status: str = "paid", **fields: Any) -> Order:
    """An order as a checkout saves it: one ``save()``, so the app's hook sees it."""
    values = {
        "email": f"{number}@example.com",
        "total": Decimal("27.50"),
        "subtotal": Decimal("25.00"),
        **fields,
    }
    return Order.objects.create(number=number, status=status, **values)


def unsaved_orders(prefix: str, count: int, status: str = "paid") -> list[Order]:
    """Orders for ``bulk_create``, which sends no signal."""
    return [
        Order(
            number=f"{prefix}{n}",
            email=f"{prefix.lower()}{n}@example.com",
            status=status,
            total=Decimal("9.99"),
            subtotal=Decimal("9.99"),
        )
        for n in range(count)
    ]
