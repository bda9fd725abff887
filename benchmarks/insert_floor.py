"""What the award row's INSERT costs a committed transaction on PostgreSQL, and why (issue 11, 3).

Printed, never asserted. Each transaction is ``UPDATE`` of one row (a shop's save) then, in turn,
nothing, an ``INSERT`` into a plain two-column table, or a variant of the award's ``INSERT``, then
``COMMIT``; the variants take away one thing at a time from what the checkout's insert pays,
then name every column as it did before migration 0007, and write the narrowest row a checkout
could write instead:

    python benchmarks/insert_floor.py --database postgres://postgres@127.0.0.1:5432/postgres

The statements run through psycopg directly, bound on the client as Django binds them, so that
the figures are the database's and the driver's only, not the app's Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import configure, database, versions

ROUNDS = 3
SAVES = 1500
QUICK_SAVES = 50  # CI: the script runs, the figures mean nothing

# Copies of the award table, each without one of the things its INSERT pays for.
TABLES = (
    "CREATE TABLE floor_plain (id bigserial PRIMARY KEY, v varchar(100))",
    "CREATE TABLE floor_counter (id int PRIMARY KEY, n int)",
    "INSERT INTO floor_counter VALUES (1, 0)",
    # Every index, no unique constraint to check first.
    "CREATE TABLE floor_all (LIKE django_zinrelo_award INCLUDING ALL)",
    # Only the primary key and the unique constraint that ON CONFLICT needs.
    "CREATE TABLE floor_two (LIKE django_zinrelo_award INCLUDING DEFAULTS INCLUDING IDENTITY)",
    "ALTER TABLE floor_two ADD PRIMARY KEY (id)",
    "CREATE UNIQUE INDEX floor_two_once ON floor_two (order_model, order_pk, activity_id)",
    # Every column named, the fixed values written into it: the award insert before migration 0007.
    "CREATE TABLE floor_wide (LIKE django_zinrelo_award INCLUDING ALL)",
    # For the prepared statement, a table of its own with every index.
    "CREATE TABLE floor_prepared (LIKE django_zinrelo_award INCLUDING ALL)",
    # The narrowest award a checkout could write instead: its key (the primary key) and a time.
    "CREATE TABLE floor_narrow (order_model varchar(100), order_pk varchar(64), "
    "activity_id varchar(64), created_at timestamptz, "
    "PRIMARY KEY (order_model, order_pk, activity_id))",
)
WIDE = (
    "INSERT INTO floor_wide (status, attempts, next_attempt_at, retrying_since, claimed_until, "
    "claim, payload, points, points_status, transaction_id, last_status_code, last_error_code, "
    "last_reason, created_at, updated_at, order_model, order_pk, activity_id, order_id, "
    "member_id, store) VALUES ('pending', 0, %s, NULL, NULL, NULL, NULL, NULL, '', '', NULL, '', "
    "'', %s, %s, %s, %s, %s, '', '', '') ON CONFLICT DO NOTHING"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="postgres://user@host:port/db")
    parser.add_argument("--quick", action="store_true", help="a few transactions, one round")
    args = parser.parse_args()
    db = database(args.database)
    configure(db, "http://127.0.0.1:1/")  # no call is made
    from django.db import connection

    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        with connection.cursor() as cursor:
            for sql in TABLES:
                cursor.execute(sql)
        saves, rounds = (QUICK_SAVES, 1) if args.quick else (SAVES, ROUNDS)
        print(f"machine: {versions()}")
        print(f"{saves} committed transactions of each kind, median of {rounds} rounds\n")
        measure(saves, rounds)
    finally:
        connection.close()
        connection.creation.destroy_test_db(name, verbosity=0)


def measure(saves: int, rounds: int) -> None:
    import psycopg
    from django.db import connection
    from django.utils import timezone

    from django_zinrelo import inserts

    insert = inserts.statement("default")
    award = insert.sql
    raw = connection.connection
    raw.autocommit = False  # each kind is one transaction: the save, what follows, COMMIT
    # Django turns psycopg's prepared statements off (it binds on the client); on for the one kind.
    raw.prepare_threshold = 0
    client = psycopg.ClientCursor(raw)  # Django's default: parameters bound on the client
    server = psycopg.Cursor(raw)  # parameters bound on the server: can be prepared

    def award_params(n: int) -> list[Any]:
        given = {"order_model": "shop.order", "order_pk": str(n), "activity_id": "a"}
        return inserts.parameters(insert, given, connection)

    def wide_params(n: int) -> list[Any]:
        now = timezone.now()
        return [now, now, now, "shop.order", str(n), "a"]

    def run(sql: str, params: Callable[[int], list[Any]], *, prepare: bool = False) -> Any:
        cursor = server if prepare else client
        return lambda n: cursor.execute(sql, params(n))

    kinds: dict[str, Callable[[int], Any] | None] = {
        "the save alone": None,
        "+ INSERT, plain two-column table": run(
            "INSERT INTO floor_plain (v) VALUES (%s)", lambda n: [str(n)]
        ),
        "+ the award's INSERT, as the app sends it": run(award, award_params),
        "+ the same without ON CONFLICT": run(
            award.replace(" ON CONFLICT DO NOTHING", "").replace(
                "django_zinrelo_award", "floor_all"
            ),
            award_params,
        ),
        "+ the same, only its 2 unique indexes": run(
            award.replace("django_zinrelo_award", "floor_two"), award_params
        ),
        "+ every column named, as before db_default": run(WIDE, wide_params),
        "+ the award's INSERT, a prepared statement": run(
            award.replace("django_zinrelo_award", "floor_prepared"), award_params, prepare=True
        ),
        "+ a narrow row instead: its key and a time": run(
            "INSERT INTO floor_narrow (order_model, order_pk, activity_id, created_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            lambda n: [*wide_params(n)[3:], timezone.now()],
        ),
    }
    spent: dict[str, list[float]] = {kind: [] for kind in kinds}
    number = 0
    for _ in range(rounds):
        total = dict.fromkeys(kinds, 0.0)
        for _ in range(saves):
            for kind, then in kinds.items():
                number += 1
                started = time.perf_counter()
                client.execute("UPDATE floor_counter SET n = n + 1 WHERE id = 1")
                if then is not None:
                    then(number)
                raw.commit()
                total[kind] += time.perf_counter() - started
        for kind in kinds:
            spent[kind].append(1e6 * total[kind] / saves)
    alone = statistics.median(spent["the save alone"])
    for kind, values in spent.items():
        median = statistics.median(values)
        added = "" if kind == "the save alone" else f"  added {median - alone:4.0f} µs"
        spread = f"(min {min(values):.0f}, max {max(values):.0f})"
        print(f"  {kind:44s} {median:5.0f} µs {spread}{added}")


if __name__ == "__main__":
    main()
