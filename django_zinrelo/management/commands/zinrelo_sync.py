"""``manage.py zinrelo_sync``: deliver what is due, back-fill and re-sync orders, or preview it all.

The selection and the sending live in ``django_zinrelo.sync``, shared with the admin's re-sync;
this module reads the options and shows progress and the summary.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from time import sleep
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db import close_old_connections
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from django_zinrelo.client import POOL_SIZE
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import DISABLED, enabled
from django_zinrelo.models import Status, SyncRun, Trigger
from django_zinrelo.operations import send_due_operations
from django_zinrelo.sync import Selection, order_model, prepare, preview, send_due

PROGRESS_WIDTH = 30


def order_keys(text: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in text.split(",") if key.strip())
    if not keys:
        raise CommandError("--orders needs primary keys separated by commas, e.g. 1,2,3.")
    return keys


def moment(text: str, *, end: bool) -> datetime:
    """A datetime, or a date taken as a whole day: ``--until 2025-01-31`` includes the 31st."""
    try:
        day = parse_date(text)
        value = parse_datetime(text) if day is None else None
    except ValueError as error:
        raise CommandError(f"{text!r} is not a valid date: {error}.") from None
    if day is not None:
        value = datetime.combine(day + timedelta(days=1 if end else 0), datetime.min.time())
    if value is None:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD) or a datetime (ISO 8601).")
    return timezone.make_aware(value) if timezone.is_naive(value) else value


def positive(option: str, unit: str) -> Callable[[str], float]:
    """The reader of an option that takes a number above zero."""

    def read(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise CommandError(f"{option} must be a number of {unit}, not {text!r}.") from None
        if not value > 0:
            raise CommandError(f"{option} must be above zero, not {text!r}.")
        return value

    return read


class Progress:
    """A bar redrawn in place on a terminal; otherwise a line every ``every`` seconds, so a cron
    run that sends a few awards prints nothing while a long back-fill shows it is alive."""

    every = 10.0

    def __init__(self, total: int, stream: OutputWrapper) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.started = self.shown_at = time.monotonic()
        self.drawn = False

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        total = max(self.total, done)  # retries that fall due during the run add calls
        rate = f"{done / max(now - self.started, 1e-9):.0f} calls/s"
        if self.tty:
            if now - self.shown_at >= 0.1 or done == total:
                filled = PROGRESS_WIDTH * done // max(total, 1)
                bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
                self.stream.write(f"\r[{bar}] {done}/{total} {rate}", ending="")
                self.stream.flush()
                self.shown_at, self.drawn = now, True
        elif now - self.shown_at >= self.every:
            self.stream.write(f"Sent {done}/{total} ({100 * done // max(total, 1)}%), {rate}")
            self.shown_at = now

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("")


def summary(counts: Counter[str], skipped: int, elapsed: float, unrecorded: int = 0) -> str:
    if not (counts or skipped or unrecorded):
        return "Delivered: nothing was due."
    delivered = counts[Status.AWARDED] + counts[Status.ALREADY_AWARDED]
    retrying = counts[Status.RETRYING]
    later = f" ({retrying} will be retried)" if retrying else ""
    lost = f", {unrecorded} answer(s) NOT STORED (released to be sent again)" if unrecorded else ""
    return (
        f"Delivered: {counts[Status.AWARDED]} awarded, "
        f"{counts[Status.ALREADY_AWARDED]} already awarded, "
        f"{counts[Status.REFUSED] + counts[Status.INVALID]} refused, "
        f"{counts[Status.FAILED] + retrying} failed{later}, {skipped} skipped{lost} "
        f"in {elapsed:.1f} s ({delivered / max(elapsed, 1e-9):.0f} awards/s)."
    )


class Command(BaseCommand):
    help = (
        "Deliver every Zinrelo award that is due (new, retrying, or abandoned by a crash); with "
        "options, first back-fill or re-sync chosen orders. Safe to run every minute from cron, "
        "on several hosts at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        chosen = parser.add_argument_group(
            "choosing orders",
            "With --orders, --since or --until, only those orders are recorded, re-sent and "
            "delivered; unless --missing or --failed narrows it, both are done for them.",
        )
        chosen.add_argument(
            "--orders", type=order_keys, metavar="PK,PK", help="Orders by primary key."
        )
        chosen.add_argument(
            "--since",
            type=lambda text: moment(text, end=False),
            metavar="DATE",
            help="Orders placed on or after DATE (the adapter's placed_between(); a date is a "
            "whole day, a datetime is exact, both in the current time zone unless one is given).",
        )
        chosen.add_argument(
            "--until",
            type=lambda text: moment(text, end=True),
            metavar="DATE",
            help="Orders placed before DATE's end (a datetime: before that moment).",
        )
        chosen.add_argument(
            "--missing",
            action="store_true",
            help="Record awards for qualifying orders that have none (orders written by "
            "QuerySet.update, bulk_create or imports, which send no signal).",
        )
        chosen.add_argument(
            "--failed",
            action="store_true",
            help="Send again the awards that ended invalid, refused or failed, rebuilt from the "
            "order as it is now (after fixing credentials, an order, or Zinrelo's settings).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Print the payloads that would be sent, one JSON object a line; send nothing "
            "and change nothing.",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            metavar="N",
            help=f"Parallel calls over pooled connections (1 to {POOL_SIZE}; default 1).",
        )
        parser.add_argument(
            "--rate",
            type=positive("--rate", "calls per second"),
            metavar="R",
            help="Never start more than R calls in any second (Zinrelo's rate limit); a 429 "
            "answer halves the pace, which then recovers by a tenth of R each second.",
        )
        parser.add_argument(
            "--every",
            type=positive("--every", "seconds"),
            metavar="SECONDS",
            help="Run again every SECONDS seconds until Ctrl-C: keeps delivering where no cron "
            "runs (development).",
        )

    def handle(
        self,
        *args: Any,
        orders: tuple[str, ...] | None,
        since: datetime | None,
        until: datetime | None,
        missing: bool,
        failed: bool,
        dry_run: bool,
        concurrency: int,
        rate: float | None,
        every: float | None,
        **options: Any,
    ) -> None:
        if not enabled(get_settings()):
            # A dry run still shows what would go once the app is on; it never writes anyway.
            (self.stderr if dry_run else self.stdout).write(DISABLED)
            if not dry_run:
                return
        if every is not None:
            if dry_run:
                raise CommandError("--every repeats a run that sends; it has no --dry-run.")
            self.repeat(
                every,
                orders=orders,
                since=since,
                until=until,
                missing=missing,
                failed=failed,
                dry_run=False,
                concurrency=concurrency,
                rate=rate,
                **options,
            )
            return
        if not 1 <= concurrency <= POOL_SIZE:
            raise CommandError(f"--concurrency must be between 1 and {POOL_SIZE}.")
        selection = Selection(order_pks=orders and self.checked(orders), since=since, until=until)
        if not (selection.everything or missing or failed):
            missing = failed = True
        started = time.monotonic()
        try:
            if dry_run:
                self.preview(selection, missing, failed)
                return
            SyncRun.started()
            counts = prepare(selection, record=missing, resend=failed)
        except ImproperlyConfigured as error:  # the adapter cannot select by date
            raise CommandError(str(error)) from None
        if missing:
            self.stdout.write(f"Recorded {counts['recorded']} missing award(s).")
        if failed:
            self.stdout.write(f"Re-sending {counts['resent']} failed award(s).")
            if counts["operations_resent"]:
                self.stdout.write(
                    f"Re-sending {counts['operations_resent']} failed cancellation(s), "
                    "refund(s) or approval(s)."
                )
        awards = selection.to_send()
        progress = Progress(awards.due().count(), self.stderr)
        result = send_due(awards, concurrency=concurrency, rate=rate, progress=progress)
        progress.finish()
        if selection.everything:
            skipped = len(result.lost)
        else:
            skipped = selection.orders().count() - len(result.statuses)
        elapsed = time.monotonic() - started
        self.stdout.write(summary(result.counts, skipped, elapsed, len(result.unrecorded)))
        operations = send_due_operations(selection.operations(), Trigger.COMMAND)
        if operations:
            done = ", ".join(f"{count} {status}" for status, count in sorted(operations.items()))
            self.stdout.write(f"Cancellations, refunds and approvals: {done}.")
        SyncRun.finished()
        if result.unrecorded:
            # Exit status 1 and a line on stderr: what cron and monitoring notice.
            raise CommandError(
                f"Zinrelo's answer for {len(result.unrecorded)} award(s) could not be stored in "
                "the database (see the log); they were released, and the next run sends them "
                "again, when Zinrelo confirms them as already awarded."
            )

    def repeat(self, seconds: float, **options: Any) -> None:
        """Run every ``seconds`` until interrupted: delivery and retries without cron.

        A usage error stops the first run; a later run that fails (the database restarted) is
        reported and the next one goes on, as the next cron run would.
        """
        self.stdout.write(f"Running every {seconds:g} s; quit with CONTROL-C.")
        first = True
        try:
            while True:
                close_old_connections()
                try:
                    self.handle(every=None, **options)
                except Exception as error:
                    if first:
                        raise
                    self.stderr.write(f"This run failed ({type(error).__name__}: {error}).")
                first = False
                sleep(seconds)
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")

    def checked(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        """The keys as the order model's primary key reads them, or a usage error."""
        field = order_model()._meta.pk
        assert field is not None
        try:
            return tuple(str(field.to_python(key)) for key in keys)
        except ValidationError as error:
            raise CommandError(f"--orders: {' '.join(error.messages)}") from None

    def preview(self, selection: Selection, missing: bool, failed: bool) -> None:
        """Payloads on stdout, one JSON object a line; reasons and the count on stderr."""
        counts = prepare(selection, record=missing, resend=failed, dry_run=True)
        sent = invalid = 0
        for shown in preview(selection, record=missing, resend=failed):
            if shown.payload is None:
                invalid += 1
                self.stderr.write(f"Order {shown.order_pk} would not be sent: {shown.reason}")
            else:
                sent += 1
                self.stdout.write(json.dumps(shown.payload, ensure_ascii=False))
        detail = []
        if missing:
            detail.append(f"{counts['recorded']} would be recorded")
        if failed:
            detail.append(f"{counts['resent']} re-sent")
        line = f"Dry run: {sent} award(s) would be sent"
        if detail:
            line += f" ({', '.join(detail)})"
        if invalid:
            line += f", {invalid} cannot be sent"
        if not selection.everything:
            line += f", {selection.orders().count() - sent - invalid} skipped"
        self.stderr.write(line + "; nothing was sent or changed.")
