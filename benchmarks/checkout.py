"""What the app costs the shop's checkout: a qualifying save, and a burst of them (issue 11, 2-3).

Printed, never asserted. Zinrelo's stand-in runs in a process of its own (``standin.py``, 20 ms
per call); every save is committed in its own transaction; every figure is the median of several
rounds, printed with their min and max and the load average:

    python benchmarks/checkout.py                                          # SQLite, a temp file
    python benchmarks/checkout.py --database postgres://postgres@127.0.0.1:5432/postgres
    python benchmarks/checkout.py --quick                                  # a few hundred saves

"Delivery off" is the app recording each award and queuing its after-commit delivery, with the
delivery itself replaced by nothing: what the checkout pays for the app alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import configure, database, make_orders, quiet, verdict, versions
from standin import StandIn

LATENCY = 0.020
TARGETS = {"insert_ratio": 1.3, "burst_ratio": 1.3, "delivery_share": 0.80}


@dataclass(frozen=True)
class Sizes:
    saves: int
    burst: int
    rounds: int


FULL = Sizes(saves=1000, burst=5000, rounds=3)
QUICK = Sizes(saves=200, burst=300, rounds=3)


@dataclass(frozen=True)
class Figure:
    """The median of some rounds, with their spread."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def show(self, unit: str, digits: int = 0) -> str:
        low, high = min(self.values), max(self.values)
        return (
            f"{self.median:.{digits}f} {unit} (min {low:.{digits}f}, max {high:.{digits}f}, "
            f"{len(self.values)} rounds)"
        )


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


# Switching the app's parts


HOOKS = ("order_loaded", "order_saving", "order_saved")


@contextmanager
def without_app() -> Iterator[None]:
    """The app's receivers on the order model disconnected, as if it were not installed."""
    from django.db.models.signals import post_init, post_save, pre_save

    from django_zinrelo import receivers
    from tests.shop.models import Order

    signals = (post_init, pre_save, post_save)
    for signal, name in zip(signals, HOOKS, strict=True):
        signal.disconnect(sender=Order, dispatch_uid=f"django_zinrelo.{name}")
    try:
        yield
    finally:
        for signal, name in zip(signals, HOOKS, strict=True):
            signal.connect(
                getattr(receivers, name), sender=Order, dispatch_uid=f"django_zinrelo.{name}"
            )


@contextmanager
def delivery_off() -> Iterator[None]:
    """The app records and queues as usual; the queued delivery does nothing."""
    from unittest import mock

    from django_zinrelo import receivers

    with mock.patch.object(receivers, "submit", nothing):
        yield


def nothing(*args: Any, **kwargs: Any) -> None:
    """A delivery that does nothing."""


def fresh_orders(prefix: str, count: int) -> list[Any]:
    """``count`` new orders (status ``new``), loaded as a shop's code loads them."""
    from tests.shop.models import Order

    make_orders(prefix, count, status="new", lines=1)
    return list(Order.objects.filter(number__startswith=prefix).order_by("pk"))


def commit_each(orders: list[Any], status: str = "paid") -> float:
    """Microseconds per save, each in its own committed transaction, BEGIN to COMMIT."""
    from django.db import transaction

    spent = 0
    for order in orders:
        order.status = status
        started = time.perf_counter_ns()
        with transaction.atomic():
            order.save()
        spent += time.perf_counter_ns() - started
    return spent / len(orders) / 1000


# Part 3: one qualifying save


SCRATCH = "checkout_scratch"


def scratch_table() -> str:
    """A plain table of a shop's kind, and its one-row INSERT."""
    from django.db import connection

    with connection.cursor() as cursor:
        key = (
            "bigserial PRIMARY KEY"
            if connection.vendor == "postgresql"
            else "integer PRIMARY KEY AUTOINCREMENT"
        )
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {SCRATCH} (id {key}, note varchar(64))")
    return f"INSERT INTO {SCRATCH} (note) VALUES (%s)"  # noqa: S608 - a constant


def award_insert(order: Any) -> tuple[str, list[Any]]:
    """The award's own INSERT for ``order``, as the app compiles it, to run by hand."""
    from django.db import connection

    from django_zinrelo.inserts import parameters, statement

    insert = statement("default")
    given = {"order_model": "shop.order", "order_pk": f"by-hand-{order.pk}", "activity_id": "bench"}
    return insert.sql, parameters(insert, given, connection)


def timed_save(order: Any, then: tuple[str, list[Any]] | None = None) -> int:
    """Nanoseconds of a qualifying save in its own transaction, BEGIN to COMMIT; ``then``, a
    statement and its parameters run after the save in the same transaction."""
    from django.db import connection, transaction

    order.status = "paid"
    started = time.perf_counter_ns()
    with transaction.atomic():
        order.save()
        if then is not None:
            with connection.cursor() as cursor:
                cursor.execute(*then)
    return time.perf_counter_ns() - started


@dataclass(frozen=True)
class SaveCost:
    without: Figure
    with_app: Figure
    insert: Figure  # what one single-row INSERT into a plain table adds to the save
    ratio: Figure  # the app's added cost / that INSERT's, per round
    award: Figure  # what the award row's INSERT, run by hand, adds to the save
    award_ratio: Figure  # the app's added cost / that INSERT's, per round


def save_cost(sizes: Sizes) -> SaveCost:
    """A committed qualifying save (new -> paid) without the app, with it (delivery off), and
    without it plus one INSERT in its transaction (into a plain table; the award row by hand):
    one save of each in turn, so that all four see the same load, on the same connection."""
    sql = scratch_table()
    names = ("without", "with", "insert", "award")
    rows: dict[str, list[float]] = {name: [] for name in (*names, "ratio", "award_ratio")}
    for number in range(sizes.rounds):
        spent = dict.fromkeys(names, 0)
        orders = fresh_orders(f"cost-{number}-", sizes.saves * 4)
        for start in range(0, len(orders), 4):
            plain, app, plus, by_hand = orders[start : start + 4]
            with without_app():
                spent["without"] += timed_save(plain)
            with delivery_off():
                spent["with"] += timed_save(app)
            with without_app():
                spent["insert"] += timed_save(plus, (sql, [plus.number]))
                spent["award"] += timed_save(by_hand, award_insert(by_hand))
        without, with_app, insert, award = (spent[name] / sizes.saves / 1000 for name in names)
        rows["without"].append(without)
        rows["with"].append(with_app)
        rows["insert"].append(insert - without)
        rows["award"].append(award - without)
        rows["ratio"].append((with_app - without) / (insert - without))
        rows["award_ratio"].append((with_app - without) / (award - without))
    return SaveCost(
        without=Figure(tuple(rows["without"])),
        with_app=Figure(tuple(rows["with"])),
        insert=Figure(tuple(rows["insert"])),
        ratio=Figure(tuple(rows["ratio"])),
        award=Figure(tuple(rows["award"])),
        award_ratio=Figure(tuple(rows["award_ratio"])),
    )


class Statements:
    """Counts the statements run on the connection that saves, in this thread."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


class Sent(Statements):
    """Counts the statements, and the savepoints among them, sent on the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.savepoints = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.savepoints += "SAVEPOINT" in sql
        return super().__call__(execute, sql, params, many, context)


def statements_of_qualifying_saves(count: int) -> tuple[float, float]:
    """Statements and savepoints the app adds to a qualifying save on a connection that has
    recorded an award before (the steady state), delivery off."""
    from django.db import connection

    orders = fresh_orders("steady-", count * 2)
    counts = []
    for hooked, group in ((False, orders[:count]), (True, orders[count:])):
        sent = Sent()
        with connection.execute_wrapper(sent), delivery_off():
            if hooked:
                commit_each(group)
            else:
                with without_app():
                    commit_each(group)
        counts.append(sent)
    without, with_app = counts
    return (with_app.count - without.count) / count, (
        with_app.savepoints - without.savepoints
    ) / count


def statements_of_loaded_saves(count: int) -> dict[str, float]:
    """Statements the app adds to saves of orders that qualified when loaded, in the save's
    transaction and at its commit (delivery off: what the app sends later is counted apart)."""
    from django.db import connection, transaction
    from django.db.models.signals import post_save

    from django_zinrelo.receivers import order_saved
    from tests.shop.models import Order

    orders = fresh_orders("loaded-", count)
    with delivery_off():
        commit_each(orders)  # paid, awards recorded
    pks = [order.pk for order in orders]
    added: dict[str, float] = {}
    for name, change in (("status edit paid -> completed", "completed"), ("unchanged save", None)):
        counts = {}
        for hooked in (False, True):
            if not hooked:
                post_save.disconnect(sender=Order, dispatch_uid="django_zinrelo.order_saved")
            counter = Statements()
            with connection.execute_wrapper(counter), delivery_off():
                for order in Order.objects.filter(pk__in=pks):
                    if change is not None:
                        order.status = change
                    with transaction.atomic():
                        order.save()
            if not hooked:
                post_save.connect(
                    order_saved, sender=Order, dispatch_uid="django_zinrelo.order_saved"
                )
            Order.objects.filter(pk__in=pks).update(status="paid")  # sends no signal
            counts[hooked] = counter.count - 1  # the load
        added[name] = (counts[True] - counts[False]) / count
    return added


# Part 2: a burst of checkouts


def settings_delivery(backend: str) -> None:
    from django.conf import settings

    settings.ZINRELO["DELIVERY"] = backend


def awarded(prefix: str) -> int:
    from django_zinrelo.models import Award, Status

    return Award.objects.filter(status=Status.AWARDED, order_id__startswith=prefix).count()


def wait_awarded(prefix: str, count: int, timeout: float) -> None:
    """Return once ``count`` awards of orders ``prefix...`` are awarded."""
    deadline = time.perf_counter() + timeout
    while awarded(prefix) < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {awarded(prefix)} of {count} awarded after {timeout:.0f} s")
        time.sleep(0.05)


@dataclass(frozen=True)
class Burst:
    without: Figure  # µs per save, no app
    off: Figure  # µs per save, app recording, delivery off
    thread: Figure  # µs per save, DELIVERY = "thread"
    ratio: Figure  # thread / off, per round
    delivered: Figure  # awards/s, first commit to all awarded
    sync: Figure  # awards/s, zinrelo_sync --concurrency N
    share: Figure  # delivered / sync, per round
    cpu: Figure  # process CPU seconds per second of the thread burst (all threads)
    threads: int


def clear() -> None:
    """No award left due and no qualifying order without one: each ``zinrelo_sync`` sends only
    the awards of its own round. (``QuerySet.update`` sends no signal.)"""
    from django_zinrelo.models import Award, Status
    from django_zinrelo.sync import EVERYTHING, missing_orders

    Award.objects.exclude(status=Status.AWARDED).delete()
    missing_orders(EVERYTHING).update(status="archived")


def burst(sizes: Sizes) -> Burst:
    from django.core.management import call_command

    from django_zinrelo.conf import get_settings
    from django_zinrelo.sync import record_missing

    threads = get_settings().threads
    count = sizes.burst
    clear()
    rows: dict[str, list[float]] = {
        name: [] for name in ("without", "off", "thread", "delivered", "sync", "cpu")
    }
    for number in range(sizes.rounds):
        with without_app():
            rows["without"].append(commit_each(fresh_orders(f"b-none-{number}-", count)))
        with delivery_off():
            rows["off"].append(commit_each(fresh_orders(f"b-off-{number}-", count)))
        clear()
        settings_delivery("thread")
        prefix = f"b-thread-{number}-"
        orders = fresh_orders(prefix, count)
        cpu = time.process_time()
        first = time.perf_counter()
        rows["thread"].append(commit_each(orders))
        wait_awarded(prefix, count, 600)
        rows["delivered"].append(count / (time.perf_counter() - first))
        rows["cpu"].append((time.process_time() - cpu) / (time.perf_counter() - first))
        settings_delivery("immediate")
        prefix = f"b-sync-{number}-"
        make_orders(prefix, count, status="paid", lines=1)
        record_missing()
        started = time.perf_counter()
        call_command("zinrelo_sync", "--concurrency", str(threads), **quiet())
        rows["sync"].append(count / (time.perf_counter() - started))
        if awarded(prefix) != count:
            raise SystemExit(f"zinrelo_sync awarded {awarded(prefix)} of {count}")
    ratio = [t / o for t, o in zip(rows["thread"], rows["off"], strict=True)]
    share = [d / s for d, s in zip(rows["delivered"], rows["sync"], strict=True)]
    figures = {name: Figure(tuple(values)) for name, values in rows.items()}
    return Burst(**figures, ratio=Figure(tuple(ratio)), share=Figure(tuple(share)), threads=threads)


# An experiment on the award table's indexes (models.py unchanged)

# The indexes on columns that are empty when an award is inserted (filled once it is built and
# sent), and what "not empty" is for each.
PARTIAL = {
    "zinrelo_award_order_id": ("order_id", "order_id <> ''"),
    "zinrelo_award_member": ("member_id", "member_id <> ''"),
    "zinrelo_award_order_prefix": ("UPPER(order_id) text_pattern_ops", "order_id <> ''"),
    "zinrelo_award_member_prefix": ("UPPER(member_id) text_pattern_ops", "member_id <> ''"),
    "zinrelo_award_error": ("last_error_code", "last_error_code <> ''"),
    "zinrelo_award_http": ("last_status_code", "last_status_code IS NOT NULL"),
}


def partial_indexes() -> None:
    """Rebuild those indexes as partial ones, leaving out the rows a checkout inserts."""
    from django.db import connection

    from django_zinrelo.models import Award

    if connection.vendor != "postgresql":
        raise SystemExit("--partial-indexes: PostgreSQL only")
    table = Award._meta.db_table
    with connection.cursor() as cursor:
        for name, (columns, condition) in PARTIAL.items():
            cursor.execute(f"DROP INDEX {name}")
            cursor.execute(f"CREATE INDEX {name} ON {table} ({columns}) WHERE {condition}")


# The report


def report_save(
    cost: SaveCost, qualifying: tuple[float, float], loaded: dict[str, float], partial: bool
) -> None:
    added = cost.with_app.median - cost.without.median
    indexes = " (award table with partial indexes: an experiment)" if partial else ""
    print(f"Part 3: one committed qualifying save (new -> paid), delivery off{indexes}")
    print(f"  without the app:         {cost.without.show('µs')}")
    print(f"  with the app:            {cost.with_app.show('µs')}")
    print(f"  added by the app:        +{added:.0f} µs")
    print(f"  one INSERT, plain table: {cost.insert.show('µs')}")
    print(
        f"  added / plain INSERT:    {cost.ratio.show('x', 2)} "
        f"[{verdict(cost.ratio.median <= TARGETS['insert_ratio'], 'target <= 1.3')}]"
    )
    print(f"  the award row's INSERT:  {cost.award.show('µs')} (run by hand: the floor)")
    print(
        f"  added / award INSERT:    {cost.award_ratio.show('x', 2)} "
        f"[{verdict(cost.award_ratio.median <= TARGETS['insert_ratio'], 'target <= 1.3')}]"
    )
    statements, savepoints = qualifying
    print(
        f"  statements / savepoints the app adds to a qualifying save, connection proven: "
        f"{statements:.2f} / {savepoints:.2f} [{verdict(statements == 1, 'target 1')}]"
    )
    for name, statements in loaded.items():
        print(
            f"  statements the app adds to a {name} of an order that qualified when loaded: "
            f"{statements:.2f} [{verdict(statements == 0, 'target 0')}]"
        )
    print(f"  {load()}\n")


def report_burst(result: Burst, count: int) -> None:
    print(f"Part 2: {count} back-to-back committed qualifying saves, stand-in at 20 ms")
    print(f"  without the app:                 {result.without.show('µs per save')}")
    print(f"  app recording, delivery off:     {result.off.show('µs per save')}")
    print(f"  DELIVERY = 'thread':             {result.thread.show('µs per save')}")
    print(
        f"  thread / off:                    {result.ratio.show('x', 2)} "
        f"[{verdict(result.ratio.median <= TARGETS['burst_ratio'], 'target <= 1.3')}]"
    )
    print(
        f"  after-commit delivery:           {result.delivered.show('awards/s', 1)} "
        "(first commit to all awarded)"
    )
    print(f"  zinrelo_sync --concurrency {result.threads}:    {result.sync.show('awards/s', 1)}")
    print(
        f"  after-commit / zinrelo_sync:     {result.share.show('', 2)} "
        f"[{verdict(result.share.median >= TARGETS['delivery_share'], 'target >= 0.80')}]"
    )
    print(
        f"  process CPU during the thread burst and its delivery: {result.cpu.show('s per s', 2)}"
    )
    print(f"  {load()}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="postgres://user@host:port/db (default: SQLite)")
    parser.add_argument("--quick", action="store_true", help="a few hundred saves")
    parser.add_argument("--part", choices=("2", "3"), help="only this part of the issue")
    parser.add_argument(
        "--partial-indexes",
        action="store_true",
        help="PostgreSQL, an experiment: the award table's indexes on columns empty at insert "
        "made partial (WHERE not empty) in the benchmark's database",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    with StandIn(LATENCY) as standin:
        db = database(args.database)
        configure(db, standin.url)
        from django.db import connection, connections

        original = db["NAME"]
        connection.creation.create_test_db(verbosity=0, autoclobber=True)
        try:
            print(f"django-zinrelo checkout costs{' (quick)' if args.quick else ''}")
            print(f"machine: {versions()}; {load()}")
            print(f"stand-in: its own process, {LATENCY * 1000:.0f} ms per call\n")
            settings_delivery("immediate")
            if args.partial_indexes:
                partial_indexes()
            if args.part != "2":
                report_save(
                    save_cost(sizes),
                    statements_of_qualifying_saves(sizes.saves),
                    statements_of_loaded_saves(sizes.saves),
                    args.partial_indexes,
                )
            if args.part != "3":
                report_burst(burst(sizes), sizes.burst)
            print(f"total time: {time.perf_counter() - started:.0f} s")
        finally:
            threading.Event().wait(0.5)  # the last deliveries' connections
            connections.close_all()
            connection.creation.destroy_test_db(original, verbosity=0)


if __name__ == "__main__":
    main()
