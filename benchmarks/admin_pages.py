"""The admin at a million rows: a log built in SQL, then each page's server time.

Used by ``run.py --admin`` (1,000,000 awards; ``--quick`` builds a few thousand so the code cannot
rot). The log is shaped like a shop's year: awards spread over 365 days, most awarded, a few in
every other status, one attempt each and a retry for every tenth. Each page is requested through
Django's test client as a superuser (the whole request: queries, the changelist, the template),
several rounds, and printed as median (min-max) with its query count.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

TARGET_MS = 50.0
SECONDS_PER_YEAR = 365 * 24 * 3600

# One of every 200 awards by its number: 170 awarded, 6 already awarded, 10 refused, 4 invalid,
# 2 failed, 4 retrying, 4 pending.
STATUS = """CASE
  WHEN i % 200 < 170 THEN 'awarded' WHEN i % 200 < 176 THEN 'already_awarded'
  WHEN i % 200 < 186 THEN 'refused' WHEN i % 200 < 190 THEN 'invalid'
  WHEN i % 200 < 192 THEN 'failed' WHEN i % 200 < 196 THEN 'retrying' ELSE 'pending' END"""
ERROR = """CASE
  WHEN i % 200 BETWEEN 176 AND 182 THEN 'MEMBER_BLOCKED'
  WHEN i % 200 BETWEEN 183 AND 185 THEN 'EXCLUDED_TRANSACTION'
  WHEN i % 200 BETWEEN 186 AND 189 THEN 'invalid_order'
  WHEN i % 200 BETWEEN 190 AND 195 THEN 'SERVICE_UNAVAILABLE' ELSE '' END"""
HTTP = """CASE WHEN i % 200 < 186 THEN 200 WHEN i % 200 BETWEEN 190 AND 195 THEN 503 END"""


@dataclass(frozen=True)
class Dialect:
    """What differs between the two databases in the builder's SQL."""

    numbers: str  # a query of one column ``i`` from 1 to {rows}
    ago: str  # a timestamp ``{seconds}`` before now
    padded: str  # ``i`` as eight digits
    json: str  # cast of a JSON text


POSTGRES = Dialect(
    numbers="SELECT generate_series(1, {rows}) AS i",
    ago="now() - make_interval(secs => {seconds})",
    padded="lpad(i::text, 8, '0')",
    json="::jsonb",
)
SQLITE = Dialect(
    numbers="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
    "SELECT i FROM n",
    ago="strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({seconds}) || ' seconds')",
    padded="printf('%08d', i)",
    json="",
)


def build(rows: int) -> int:
    """``rows`` awards and their attempts, written by the database itself; returns the attempts."""
    from django.db import connection

    from django_zinrelo.models import Award, AwardAttempt

    sql = POSTGRES if connection.vendor == "postgresql" else SQLITE
    created = sql.ago.format(seconds=f"({rows} - i) * {SECONDS_PER_YEAR / rows:.6f}")
    payload = (
        '\'{"member_id": "member\' || ((i % 200000) * 7919 % 200000) || \'@example.com", '
        '"activity_id": "made_a_purchase", "order_id": "N\' || ' + sql.padded + " || '\", "
        '"order_total": "125.50", "currency": "USD", "products": [{"product_id": "SKU-1", '
        '"quantity": "2", "price": "50.00"}, {"product_id": "SKU-2", "quantity": "1", '
        '"price": "25.50"}]}\''
    )
    awards = Award._meta.db_table
    attempts = AwardAttempt._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {awards} (order_model, order_pk, activity_id, store, order_id, "  # noqa: S608
            "member_id, status, attempts, next_attempt_at, payload, points, points_status, "
            "transaction_id, last_status_code, last_error_code, last_reason, created_at, "
            "updated_at) "
            f"SELECT 'shop.order', 'admin-' || i, 'made_a_purchase', '', 'N' || {sql.padded}, "
            f"'member' || ((i % 200000) * 7919 % 200000) || '@example.com', {STATUS}, "
            f"CASE WHEN i % 10 = 0 THEN 2 ELSE 1 END, {created}, ({payload}){sql.json}, "
            "CASE WHEN i % 200 < 170 THEN i % 100 END, '', '', "
            f"{HTTP}, {ERROR}, '', {created}, {created} "
            f"FROM ({sql.numbers.format(rows=int(rows))}) numbers ORDER BY i",
        )
        cursor.execute(
            f"INSERT INTO {attempts} (award_id, kind, created_at, trigger, outcome, status_code, "  # noqa: S608
            "error_code, reason, duration_ms, request_body, response_body) "
            "SELECT id, 'award', created_at, "
            "CASE WHEN attempts > 1 THEN 'retry' ELSE 'order_save' END, "
            "CASE WHEN status IN ('awarded', 'already_awarded', 'refused') THEN status "
            "ELSE 'retryable' END, last_status_code, last_error_code, '', 180, "
            f"CAST(payload AS TEXT), '{{\"success\": true}}' FROM {awards} "
            "WHERE status NOT IN ('pending', 'invalid') "
            "UNION ALL SELECT id, 'award', created_at, 'order_save', 'retryable', 503, "
            f"'SERVICE_UNAVAILABLE', '', 20000, CAST(payload AS TEXT), '' FROM {awards} "
            "WHERE attempts > 1 ORDER BY 1, 2",
        )
        cursor.execute(f"SELECT COUNT(*) FROM {attempts}")  # noqa: S608
        (attempt_rows,) = cursor.fetchone()
        # What autovacuum does to a table that has settled: planner statistics and the
        # visibility map that lets an index answer without reading the table.
        for table in (awards, attempts):
            cursor.execute(f"VACUUM ANALYZE {table}" if sql is POSTGRES else f"ANALYZE {table}")
    return int(attempt_rows)


@dataclass(frozen=True)
class Timing:
    median: float
    low: float
    high: float
    cpu: float  # median CPU time of this process (Django's share, without the database's)
    sql: float  # median time spent waiting for the queries' answers
    queries: int


def timed(get: Callable[[], Any], rounds: int) -> Timing:
    """One warm-up request, then ``rounds`` timed ones; the queries of the last."""
    from django.db import connection

    assert get().status_code == 200
    times, cpu, sql = [], [], []
    for _ in range(rounds):
        waits: list[float] = []

        def waited(execute: Any, *args: Any, waits: list[float] = waits) -> Any:
            started = time.perf_counter()
            try:
                return execute(*args)
            finally:
                waits.append(time.perf_counter() - started)

        with connection.execute_wrapper(waited):
            started, used = time.perf_counter(), time.process_time()
            response = get()
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - used) * 1000)
        sql.append(sum(waits) * 1000)
        assert response.status_code == 200, response.status_code
    return Timing(
        statistics.median(times),
        min(times),
        max(times),
        statistics.median(cpu),
        statistics.median(sql),
        len(waits),
    )


def pages() -> list[tuple[str, str]]:
    from django.urls import reverse
    from django.utils import timezone
    from django.utils.http import urlencode

    from django_zinrelo.admin import AwardAdmin
    from django_zinrelo.models import Award

    awards = reverse("admin:django_zinrelo_award_changelist")
    attempts = reverse("admin:django_zinrelo_awardattempt_changelist")
    some = Award.objects.filter(order_pk__startswith="admin-").values_list(
        "pk", "order_id", "order_pk"
    )[100]
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)

    def since(days: int) -> str:
        """The date filter's own parameters for the past ``days`` days."""
        start, end = midnight - timedelta(days=days), midnight + timedelta(days=1)
        return urlencode({"created_at__gte": str(start), "created_at__lt": str(end)})

    week, month = since(7), since(30)
    # A column's number in ``?o=``, counted as the changelist does (the checkbox column first).
    updated = ("action_checkbox", *AwardAdmin.list_display).index("updated")
    return [
        ("awards", awards),
        ("awards, status awarded", f"{awards}?status__exact=awarded"),
        ("awards, status failed", f"{awards}?status__exact=failed"),
        ("awards, sorted by member", f"{awards}?o=2"),
        ("awards, sorted by member, descending", f"{awards}?o=-2"),
        ("awards, awarded, sorted by member", f"{awards}?status__exact=awarded&o=2"),
        ("awards, refused, sorted by order", f"{awards}?status__exact=refused&o=1"),
        ("awards, sorted by updated", f"{awards}?o=-{updated}"),
        ("awards, error MEMBER_BLOCKED", f"{awards}?last_error_code=MEMBER_BLOCKED"),
        ("awards, HTTP 503", f"{awards}?last_status_code=503"),
        ("awards, created in the past 7 days", f"{awards}?{week}"),
        ("awards, refused in the past 30 days", f"{awards}?{month}&status__exact=refused"),
        ("awards, page 20 (the last offered)", f"{awards}?p=20"),
        ("awards, page 20, awarded, by member", f"{awards}?p=20&status__exact=awarded&o=2"),
        ("awards, search order id prefix", f"{awards}?q=n0012"),
        ("awards, search member email", f"{awards}?q=MEMBER4242@example.com"),
        ("awards, search member prefix", f"{awards}?q=member42"),
        ("awards, search order pk", f"{awards}?q={some[2]}"),
        ("award page", reverse("admin:django_zinrelo_award_change", args=[some[0]])),
        ("health", reverse("admin:django_zinrelo_award_health")),
        ("attempts", attempts),
        ("attempts, outcome refused", f"{attempts}?outcome__exact=refused"),
        ("attempts, HTTP 503, trigger retry", f"{attempts}?status_code=503&trigger__exact=retry"),
        ("attempts, error EXCLUDED_TRANSACTION", f"{attempts}?error_code=EXCLUDED_TRANSACTION"),
        ("attempts, created in the past 7 days", f"{attempts}?{week}"),
        ("attempts, page 20", f"{attempts}?p=20"),
        ("attempts, search order id", f"{attempts}?q={some[1]}"),
        ("attempts of one award", f"{attempts}?award__id__exact={some[0]}"),
    ]


def run(rows: int, rounds: int) -> None:
    """Build the log, then print each page's time; the database is the run's own."""
    started = time.perf_counter()
    attempt_rows = build(rows)
    print(
        f"admin: {rows:,} awards and {attempt_rows:,} attempts built in "
        f"{time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}; "
        f"median (min-max) of {rounds} rounds, server time of the whole request"
    )
    measure(rounds)


def measure(rounds: int) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    model = get_user_model()._default_manager
    user = model.filter(username="bench").first() or model.create_superuser("bench")
    client = Client()
    client.force_login(user)
    worst = 0.0
    for name, url in pages():
        timing = timed(partial(client.get, url), rounds)
        worst = max(worst, timing.median)
        print(
            f"  {name:<42} {timing.median:7.1f} ms ({timing.low:.1f}-{timing.high:.1f}), "
            f"{timing.queries} queries ({timing.sql:.1f} ms), {timing.cpu:.0f} ms CPU in Django"
        )
    met = "ok" if worst <= TARGET_MS else f"MISSED: target {TARGET_MS:.0f} ms"
    print(f"  slowest page {worst:.1f} ms [{met}]; load average {os.getloadavg()[0]:.1f} at end")
