"""How long, and in how many calls, an award is retried before it ends ``failed``.

Printed, never asserted: the README's figures for the default ``RETRY_FOR`` and backoff, with a
``zinrelo_sync`` run every minute (each retry sent 30 s after it falls due, on average).

    python benchmarks/retry_budget.py [--runs 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django_zinrelo.conf import DEFAULTS, ZinreloSettings  # noqa: E402
from django_zinrelo.delivery import backoff  # noqa: E402

CRON_LATENESS = 30.0
OLD_MAX_ATTEMPTS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    random.seed(options.seed)
    conf = ZinreloSettings(**{name.lower(): value for name, value in DEFAULTS.items()})
    calls, hours, old_hours = [], [], []
    for _ in range(options.runs):
        elapsed, attempt = 0.0, 0
        while True:
            attempt += 1
            if attempt == OLD_MAX_ATTEMPTS:
                old_hours.append(elapsed / 3600)
            if elapsed >= conf.retry_for:
                break
            elapsed += backoff(attempt, conf) + CRON_LATENESS
        calls.append(attempt)
        hours.append(elapsed / 3600)
    print(f"{options.runs} awards failing for ever, RETRY_FOR = {conf.retry_for / 3600:g} h:")
    print(f"  calls until failed: {min(calls)} to {max(calls)}, median {statistics.median(calls)}")
    print(f"  hours until failed: {min(hours):.1f} to {max(hours):.1f}")
    print(
        f"  the old MAX_ATTEMPTS = {OLD_MAX_ATTEMPTS} gave up after {min(old_hours):.1f} to "
        f"{max(old_hours):.1f} h (median {statistics.median(old_hours):.1f})"
    )


if __name__ == "__main__":
    main()
