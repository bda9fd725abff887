"""How fast django-zinrelo sends, what it costs a checkout, and how much memory a back-fill takes.

Printed, never asserted. Runs against the Zinrelo sandbox started in this process (20 ms of
latency per call), on a database created for the run and dropped after it:

    python benchmarks/run.py                                   # SQLite, a temporary file
    python benchmarks/run.py --database postgres://postgres@127.0.0.1:5432/postgres
    python benchmarks/run.py --quick                           # small counts, a few seconds (CI)
    python benchmarks/run.py --profile                         # + where a sync's time goes
    python benchmarks/run.py --admin --database postgres://... # admin pages at 1M awards only

The results and the machine they ran on are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import admin_pages  # noqa: E402 - beside this script

LATENCY = 0.020
ADMIN_ROWS = 1_000_000
ADMIN_QUICK_ROWS = 3_000
ADMIN_ROUNDS = 7
THREADS = 16
TARGETS = {"baseline": 10.0, "ceiling": 0.80, "memory_mb": 50.0, "save_us": 100.0}


@dataclass(frozen=True)
class Sizes:
    naive: int
    ceiling: int
    sync: int
    backfill: int
    saves: int


FULL = Sizes(naive=200, ceiling=2000, sync=2000, backfill=100_000, saves=2000)
QUICK = Sizes(naive=20, ceiling=200, sync=200, backfill=2000, saves=200)


# Setting up


def database(url: str | None) -> dict[str, Any]:
    """Django's DATABASES entry: the server in ``url`` (the run creates its own database there) or
    a SQLite file.

    SQLite gets WAL and IMMEDIATE transactions, what any SQLite site with concurrent writers
    needs (a deferred transaction that must upgrade to a write lock fails at once when busy).
    """
    import dj_database_url

    if url:
        db: dict[str, Any] = {**dj_database_url.parse(url)}
        db["TEST"] = {"NAME": f"zinrelo_bench_{os.getpid()}"}
        return db
    path = str(Path(tempfile.mkdtemp(prefix="zinrelo-bench-")) / "bench.sqlite3")
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "TEST": {"NAME": path},
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
    }


def configure(db: dict[str, Any], api_url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        SECRET_KEY="benchmarks-only",  # noqa: S106 - no secret: a throwaway process
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DATABASES={"default": db},
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django_zinrelo",
            "tests.shop",
        ],
        # The admin pages of ``--admin``, served as tests.settings serves them.
        ROOT_URLCONF="tests.urls",
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        ZINRELO={
            "PARTNER_ID": "sandbox-partner",
            "API_KEY": "sandbox-key",
            "API_URL": api_url,
            "ORDER_MODEL": "shop.Order",
            "ORDER_ADAPTER": "tests.shop.zinrelo.ShopAdapter",
            "DELIVERY": "thread",
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def versions() -> str:
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            db = f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
        else:
            cursor.execute("SELECT sqlite_version()")
            db = f"SQLite {cursor.fetchone()[0]}"
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"Django {django.get_version()}, {db}"
    )


def make_orders(prefix: str, count: int, *, status: str = "paid", lines: int = 2) -> None:
    """Orders written in bulk, as an import writes them: no signal, so no award yet."""
    from django.db import connection

    from tests.shop.models import Order, OrderLine

    batch = 5000
    for start in range(0, count, batch):
        numbers = [f"{prefix}{n}" for n in range(start, min(start + batch, count))]
        Order.objects.bulk_create(
            Order(
                number=number,
                email=f"{number}@example.com",
                status=status,
                total=Decimal("54.00"),
                subtotal=Decimal("50.00"),
            )
            for number in numbers
        )
        pks = Order.objects.filter(number__in=numbers).values_list("pk", flat=True)
        OrderLine.objects.bulk_create(
            OrderLine(
                order_id=pk,
                sku=f"SKU-{n}",
                title="Sweatshirt",
                quantity=1,
                unit_price=Decimal("25.00"),
            )
            for pk in pks
            for n in range(lines)
        )
    # What autovacuum does within a minute of a bulk load; a planner still believing the tables
    # empty picks a nested loop that reads the award table once per order.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


class QueryCounter:
    """Counts the queries of every connection, whichever thread opened it."""

    def __init__(self) -> None:
        from django.db import connections
        from django.db.backends.signals import connection_created

        self.total = 0
        self._seen = 0
        self._lock = threading.Lock()
        for conn in connections.all(initialized_only=True):
            conn.execute_wrappers.append(self)
        connection_created.connect(self.attach, weak=False)

    def attach(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        with self._lock:
            self.total += 1
        return execute(sql, params, many, context)

    def take(self) -> int:
        """Queries since the last call."""
        taken, self._seen = self.total - self._seen, self.total
        return taken


# The measurements


def payload(order_id: str) -> dict[str, Any]:
    return {
        "member_id": f"{order_id}@example.com",
        "activity_id": "made_a_purchase",
        "transaction_date": "01/15/2025 10:00:00",
        "transaction_attributes": {
            "order_id": order_id,
            "order_total": "54.00",
            "order_subtotal": "50.00",
            "products": [
                {
                    "product_id": "SKU-0",
                    "product_quantity": "2",
                    "product_price": "25.00",
                    "product_title": "Sweatshirt",
                }
            ],
        },
    }


HEADERS = {
    "partner-id": "sandbox-partner",
    "api-key": "sandbox-key",
    "Content-Type": "application/json",
    "Accept": "application/json",
}


def naive(url: str, count: int) -> float:
    """Zinrelo's sample script in a loop: one requests.post per order, no session, in sequence."""
    import requests

    bodies = [json.dumps(payload(f"naive-{n}")) for n in range(count)]
    started = time.perf_counter()
    for body in bodies:
        requests.post(url, data=body, headers=HEADERS, timeout=10).raise_for_status()
    return count / (time.perf_counter() - started)


def ceiling(url: str, count: int) -> float:
    """The most this machine's HTTP stack does: 16 threads, pooled sessions, no database."""
    import requests

    work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    for n in range(count):
        work.put(json.dumps(payload(f"raw-{n}")))
    for _ in range(THREADS):
        work.put(None)

    def send() -> None:
        with requests.Session() as session:
            session.headers.update(HEADERS)
            while (body := work.get()) is not None:
                session.post(url, data=body, timeout=10).raise_for_status()

    threads = [threading.Thread(target=send) for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count / (time.perf_counter() - started)


def bulk_sync(count: int, counter: QueryCounter) -> tuple[float, float]:
    """``zinrelo_sync --concurrency 16`` over ``count`` pending awards: awards/s, queries/award."""
    from django.core.management import call_command

    from django_zinrelo.models import Award, Status
    from django_zinrelo.sync import record_missing

    make_orders("sync-", count)
    record_missing()
    counter.take()
    started = time.perf_counter()
    call_command("zinrelo_sync", "--concurrency", str(THREADS), **quiet())
    elapsed = time.perf_counter() - started
    queries = counter.take()
    awarded = Award.objects.filter(status=Status.AWARDED, order_id__startswith="sync-").count()
    if awarded != count:
        raise SystemExit(f"zinrelo_sync awarded {awarded} of {count}")
    return count / elapsed, queries / count


def quiet() -> dict[str, io.StringIO]:
    return {"stdout": io.StringIO(), "stderr": io.StringIO()}


def profile_sync(count: int, sandbox: Any) -> str:
    """Where a sync's own CPU goes: cProfile sees the thread that reads orders, builds payloads,
    claims awards and records answers; the HTTP calls run on the sending thread, outside it (the
    ceiling's part). The sandbox answers at once meanwhile, so there is no latency to wait out."""
    from django.core.management import call_command

    from django_zinrelo.sync import record_missing

    make_orders("profile-", count)
    record_missing()
    latency, sandbox.latency = sandbox.latency, 0
    profiler = cProfile.Profile()
    profiler.enable()
    call_command("zinrelo_sync", **quiet())
    profiler.disable()
    sandbox.latency = latency
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(r"django_zinrelo|requests/sessions.py", 25)
    return out.getvalue()


def save_cost(count: int, sandbox: Any) -> tuple[float, float, int]:
    """Microseconds per qualifying ``order.save()`` inside a transaction, with and without the app.

    The same orders, in alternating rounds; each round rolls back, so nothing is ever committed
    and the app never gets to send: any call Zinrelo receives meanwhile was made inside the save.
    """
    from django.db import transaction
    from django.db.models.signals import post_save

    from django_zinrelo.receivers import order_saved
    from tests.shop.models import Order

    make_orders("save-", count, status="new", lines=1)
    orders = list(Order.objects.filter(number__startswith="save-"))
    uid = "django_zinrelo.order_saved"
    calls_before = len(sandbox.requests)
    timings: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(5):
        for with_app in (False, True):
            if with_app:
                post_save.connect(order_saved, sender=Order, dispatch_uid=uid)
            else:
                post_save.disconnect(sender=Order, dispatch_uid=uid)
            with transaction.atomic():
                spent = 0
                for order in orders:
                    order.status = "paid"
                    started = time.perf_counter_ns()
                    order.save()
                    spent += time.perf_counter_ns() - started
                    order.status = "new"
                transaction.set_rollback(True)
            timings[with_app].append(spent / len(orders) / 1000)
    post_save.connect(order_saved, sender=Order, dispatch_uid=uid)
    return (
        statistics.median(timings[True]),
        statistics.median(timings[False]),
        len(sandbox.requests) - calls_before,
    )


def after_commit_only(sandbox: Any) -> tuple[int, int]:
    """One committed qualifying save: Zinrelo's calls when the save returns, and once delivered."""
    from django.db import transaction

    from django_zinrelo.models import DONE, Award
    from tests.shop.models import Order

    before = len(sandbox.requests)
    with transaction.atomic():
        order = Order.objects.create(
            number="commit-1", email="c@example.com", status="new", total=1, subtotal=Decimal(9)
        )
        order.status = "paid"
        order.save()
        during = len(sandbox.requests) - before
    deadline = time.monotonic() + 5
    awards = Award.objects.filter(order_pk=str(order.pk), status__in=DONE)
    while not awards.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return during, len(sandbox.requests) - before


def dry_run(db: dict[str, Any], api_url: str, *, traced: bool) -> dict[str, float]:
    """``zinrelo_sync --dry-run --missing`` in a fresh process, so that its peak is the run's."""
    child = subprocess.run(  # noqa: S603 - this script, this interpreter
        [sys.executable, __file__, "--dry-run-child", json.dumps([db, api_url, traced])],
        capture_output=True,
        text=True,
        check=True,
    )
    measured: dict[str, float] = json.loads(child.stdout)
    return measured


def memory_mb(name: str) -> float:
    """A figure of /proc/self/status: VmRSS (now) or VmHWM (the peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(name)


def dry_run_child(db: dict[str, Any], api_url: str, traced: bool) -> None:
    """Peak RSS over the run, or (``traced``) the Python heap's peak, which tracemalloc measures
    exactly but at a quarter of the speed, and whose own bookkeeping would inflate the RSS."""
    configure(db, api_url)
    from django.core.management import call_command

    class Discard(io.TextIOBase):
        def __init__(self) -> None:
            self.lines = 0

        def write(self, text: str) -> int:
            self.lines += text.count("\n")
            return len(text)

    out = Discard()
    call_command("zinrelo_sync", "--dry-run", "--orders", "0", stdout=out, stderr=io.StringIO())
    counter = QueryCounter()
    counter.take()
    before = memory_mb("VmRSS")
    # The peak RSS starts again from here (ru_maxrss would still hold the parent's, from fork).
    Path("/proc/self/clear_refs").write_text("5")
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    call_command("zinrelo_sync", "--dry-run", "--missing", stdout=out, stderr=io.StringIO())
    elapsed = time.perf_counter() - started
    growth = tracemalloc.get_traced_memory()[1] / 2**20 if traced else memory_mb("VmHWM") - before
    print(
        json.dumps(
            {
                "orders": out.lines,
                "seconds": elapsed,
                "rss_mb": before,
                "growth_mb": growth,
                "queries": counter.take(),
            }
        )
    )


# The report


def verdict(ok: bool, missed: str) -> str:
    return "ok" if ok else f"MISSED: {missed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="postgres://user@host:port/db (default: SQLite)")
    parser.add_argument("--quick", action="store_true", help="small counts, for CI")
    parser.add_argument("--profile", action="store_true", help="cProfile a one-thread sync")
    parser.add_argument(
        "--admin", action="store_true", help="only the admin's pages, at 1,000,000 awards"
    )
    parser.add_argument("--dry-run-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dry_run_child:
        dry_run_child(*json.loads(args.dry_run_child))
        return

    from django_zinrelo.sandbox import ZinreloSandbox

    sizes = QUICK if args.quick else FULL
    run_started = time.perf_counter()
    with ZinreloSandbox(latency=LATENCY, refusals={}) as sandbox:
        db = database(args.database)
        configure(db, sandbox.url)
        from django.db import connection

        original = db["NAME"]
        test_db = {**db, "NAME": connection.creation.create_test_db(verbosity=0, autoclobber=True)}
        try:
            award_url = sandbox.url + "transactions/award"
            print(f"django-zinrelo benchmarks{' (quick)' if args.quick else ''}")
            print(f"machine: {versions()}, load average {os.getloadavg()[0]:.1f} at start")
            if args.admin:
                admin_pages.run(ADMIN_ROWS, rounds=ADMIN_ROUNDS)
                return
            print(f"sandbox: in-process, {LATENCY * 1000:.0f} ms latency per call\n")

            base = naive(award_url, sizes.naive)
            print(f"naive baseline (requests.post per order, sequential): {base:8.1f} awards/s")
            top = ceiling(award_url, sizes.ceiling)
            print(f"raw HTTP ceiling ({THREADS} threads, pooled, no DB):    {top:8.1f} awards/s")
            counter = QueryCounter()
            rate, per_award = bulk_sync(sizes.sync, counter)
            print(
                f"zinrelo_sync --concurrency {THREADS}, {sizes.sync} orders:      "
                f"{rate:8.1f} awards/s  = {rate / base:.1f}x baseline "
                f"[{verdict(rate / base >= TARGETS['baseline'], 'target 10x')}], "
                f"{100 * rate / top:.0f}% of ceiling "
                f"[{verdict(rate / top >= TARGETS['ceiling'], 'target 80%')}]"
            )
            print(f"  queries per award: {per_award:.2f}")
            if args.profile:
                profile = profile_sync(sizes.sync // 4, sandbox)

            make_orders("fill-a-", sizes.backfill // 10)
            heap = dry_run(test_db, sandbox.url, traced=True)
            make_orders("fill-b-", sizes.backfill - sizes.backfill // 10)
            rss = dry_run(test_db, sandbox.url, traced=False)
            print(
                f"zinrelo_sync --dry-run --missing, {rss['orders']:.0f} orders: "
                f"peak RSS growth {rss['growth_mb']:.1f} MB "
                f"[{verdict(rss['growth_mb'] < TARGETS['memory_mb'], 'target < 50 MB')}] "
                f"(from {rss['rss_mb']:.0f} MB), {rss['orders'] / rss['seconds']:.0f} payloads/s, "
                f"{rss['queries'] / max(rss['orders'], 1):.3f} queries per order"
            )
            print(
                f"  Python heap peak (tracemalloc) over the first {heap['orders']:.0f} orders: "
                f"{heap['growth_mb']:.1f} MB"
            )

            with_app, without, inside = save_cost(sizes.saves, sandbox)
            added = with_app - without
            print(
                f"qualifying order.save() in a transaction: {without:.0f} µs without the app, "
                f"{with_app:.0f} µs with it: +{added:.0f} µs ({with_app / without:.2f}x) "
                f"[{verdict(added < TARGETS['save_us'], 'target < 100 µs')}]"
            )
            during, after = after_commit_only(sandbox)
            print(
                f"  HTTP calls inside the saves and transactions: {inside + during}; "
                f"after commit (delivery thread): {after}"
            )
            if args.quick:  # a small log, so that the admin's part cannot rot either
                admin_pages.run(ADMIN_QUICK_ROWS, rounds=1)
            print(f"\ntotal time: {time.perf_counter() - run_started:.0f} s")
            if args.profile:
                count = sizes.sync // 4
                print(f"\ncProfile of zinrelo_sync over {count} awards, its database thread:")
                print(profile)

        finally:
            from django.db import connections

            connections.close_all()
            connection.creation.destroy_test_db(original, verbosity=0)


if __name__ == "__main__":
    main()
