"""``manage.py zinrelo_sandbox``: a local Zinrelo to point a development shop at.

Thin on purpose: the sandbox lives in :mod:`django_zinrelo.sandbox`, where tests and benchmarks
start it without Django; this turns options into arguments, prints one line per request (with
``-v 2`` the body too; never a header, so never a key) and waits for Ctrl-C.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from time import sleep
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_zinrelo.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_PARTNER_ID,
    FAULTS,
    RequestRecord,
    ZinreloSandbox,
    parse_fault,
)


def describe(record: RequestRecord) -> str:
    """One request as a line: method, path, order, member, answer and points."""
    parts = [record.method, record.path]
    if record.order_id is not None:
        parts.append(f"order={record.order_id}")
    if record.member_id is not None:
        parts.append(f"member={record.member_id}")
    answer = "no answer" if record.status is None else str(record.status)
    parts.append(f"-> {answer} {record.error_code or ''}".rstrip())
    if record.points is not None:
        parts.append(f"points={record.points}")
    if record.fault is not None:
        parts.append(f"[fault: {record.fault}]")
    return " ".join(parts)


class Command(BaseCommand):
    help = (
        "Serve a local stand-in for Zinrelo's v2 API (awards, returns, reject/approve/reverse, "
        "members, transaction lists, injected faults) in the foreground until Ctrl-C, printing "
        "one line per request (-v 2: with its body). It listens on loopback addresses only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="A loopback address: 127.x, localhost or ::1."
        )
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port.")
        parser.add_argument(
            "--latency", type=float, default=0.0, help="Seconds to wait before every answer."
        )
        parser.add_argument(
            "--fail",
            action="append",
            default=[],
            metavar="NAME=RATE",
            help=f"Make this share of write calls (award, return, reject, approve, reverse) fail, "
            f"e.g. 503=0.2; repeatable. NAME is one of: {', '.join(FAULTS)} (lost: applied, then "
            "the answer is lost).",
        )
        parser.add_argument("--seed", type=int, help="Seed the fault draws, to replay a run.")
        parser.add_argument(
            "--partner-id", default=DEFAULT_PARTNER_ID, help="The partner-id header to expect."
        )
        parser.add_argument(
            "--api-key",
            default=DEFAULT_API_KEY,
            help="The api-key header to expect; never a real Zinrelo key, since it is printed.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        lock = threading.Lock()

        def show(record: RequestRecord) -> None:
            if verbosity < 1:
                return
            line = f"{datetime.now(UTC):%H:%M:%S} {describe(record)}"
            if verbosity > 1 and record.body:
                line += f"\n    {record.body}"
            with lock:  # handler threads print at once
                self.stdout.write(line)

        try:
            sandbox = ZinreloSandbox(
                host=options["host"],
                port=options["port"],
                partner_id=options["partner_id"],
                api_key=options["api_key"],
                latency=options["latency"],
                faults=dict(parse_fault(text) for text in options["fail"]),
                seed=options["seed"],
                on_request=show,
            )
            sandbox.start()
        except (ValueError, OSError) as error:
            raise CommandError(str(error)) from error
        try:
            self._announce(sandbox)
            while True:
                sleep(3600)
        except KeyboardInterrupt:
            self.stdout.write("Stopping the Zinrelo sandbox.")
        finally:
            sandbox.stop()

    def _announce(self, sandbox: ZinreloSandbox) -> None:
        faults = ", ".join(f"{name}={rate}" for name, rate in sandbox.faults.items()) or "none"
        # Printing the key is safe only because it is the sandbox's own throwaway key.
        self.stdout.write(
            f"Zinrelo sandbox listening on {sandbox.url}\n"
            f"Faults on write calls: {faults}; latency: {sandbox.latency}s.\n\n"
            "Point the shop at it with:\n\n"
            "ZINRELO = {\n"
            f'    "API_URL": {json.dumps(sandbox.url)},\n'
            f'    "PARTNER_ID": {json.dumps(sandbox.partner_id)},\n'
            f'    "API_KEY": {json.dumps(sandbox.api_key)},\n'
            "}\n\n"
            "Quit with CONTROL-C. One line per request follows."
        )
