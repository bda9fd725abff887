"""zinrelo_sync's options: choosing orders, previewing, pacing, and what it reports."""

import io
import json
import threading
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from functools import partial
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_zinrelo.management.commands.zinrelo_sync import Progress
from django_zinrelo.models import Award, AwardAttempt, Status
from django_zinrelo.sandbox import DEFAULT_API_KEY, DEFAULT_PARTNER_ID, ZinreloSandbox
from django_zinrelo.sync import Throttle, resync_orders
from tests.conftest import AWARD_URL, awarded, make_order
from tests.shop.models import Order, OrderLine
from tests.shop.zinrelo import ShopAdapter

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")


def sync(*args):
    out, err = StringIO(), StringIO()
    call_command("zinrelo_sync", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def silent_orders(*numbers, status="paid", lines=1, **fields):
    """Orders written with bulk_create, as an import does: no signal, so no award yet."""
    orders = Order.objects.bulk_create(
        [
            Order(
                **{
                    "number": number,
                    "email": f"{number}@example.com",
                    "status": status,
                    "total": Decimal("10"),
                    "subtotal": Decimal("10"),
                    **fields,
                }
            )
            for number in numbers
        ]
    )
    orders = list(Order.objects.filter(number__in=numbers).order_by("pk"))
    OrderLine.objects.bulk_create(
        [
            OrderLine(order=order, sku=f"S{n}", title="Mug", quantity=1, unit_price=Decimal("10"))
            for order in orders
            for n in range(lines)
        ]
    )
    return orders


def sent_order_ids(mock):
    return sorted(
        json.loads(call.request.body)["transaction_attributes"]["order_id"] for call in mock.calls
    )


def failed_award(number, zinrelo, django_capture_on_commit_callbacks, code="MEMBER_BLOCKED"):
    """An order whose award Zinrelo refused; Zinrelo awards whatever comes next."""
    zinrelo.upsert(
        "POST", AWARD_URL, json={"success": False, "error_code": code, "reason": "Refused."}
    )
    with django_capture_on_commit_callbacks(execute=True):
        make_order(number=number, status="paid")
    zinrelo.upsert("POST", AWARD_URL, json={"success": True, "data": {"points": 10}})
    return Award.objects.get(order_id=number)


def rows():
    """Everything the app stores, to prove a run changed nothing."""
    return (
        list(Award.objects.order_by("pk").values()),
        list(AwardAttempt.objects.order_by("pk").values()),
    )


def test_orders_option_resyncs_only_the_orders_named(zinrelo, django_capture_on_commit_callbacks):
    blocked = failed_award("blocked", zinrelo, django_capture_on_commit_callbacks)
    other_failure = failed_award("other", zinrelo, django_capture_on_commit_callbacks)
    zinrelo.calls.reset()
    new, untouched, unpaid = silent_orders("new", "untouched", "unpaid")
    Order.objects.filter(pk=unpaid.pk).update(status="new")

    out, _ = sync("--orders", f"{blocked.order_pk},{new.pk}, {unpaid.pk}")

    assert sent_order_ids(zinrelo) == ["blocked", "new"]
    assert out.splitlines()[:2] == ["Recorded 1 missing award(s).", "Re-sending 1 failed award(s)."]
    assert out.splitlines()[2].startswith(
        "Delivered: 2 awarded, 0 already awarded, 0 refused, 0 failed, 1 skipped in "
    )
    assert Award.objects.get(order_pk=blocked.order_pk).status == Status.AWARDED
    assert Award.objects.get(pk=other_failure.pk).status == Status.REFUSED
    assert not Award.objects.filter(order_pk__in=[str(untouched.pk), str(unpaid.pk)]).exists()


def test_since_and_until_select_by_purchase_date_whole_days_included(zinrelo):
    awarded(zinrelo)
    silent_orders("dec31", created_at=datetime(2024, 12, 31, 23, 59, tzinfo=PARIS))
    silent_orders("jan1", created_at=datetime(2025, 1, 1, 0, 0, tzinfo=PARIS))
    silent_orders("jan31", created_at=datetime(2025, 1, 31, 23, 59, tzinfo=PARIS))
    silent_orders("feb1", created_at=datetime(2025, 2, 1, 0, 0, tzinfo=PARIS))

    sync("--since", "2025-01-01", "--until", "2025-01-31")
    assert sent_order_ids(zinrelo) == ["jan1", "jan31"]

    sync("--since", "2025-02-01T00:00:00+01:00")
    assert sent_order_ids(zinrelo) == ["feb1", "jan1", "jan31"]


def test_a_date_range_needs_a_date_the_adapter_can_query():
    class Dateless(ShopAdapter):
        date_fields = ("placed",)

    with (
        override_settings(ZINRELO={**settings.ZINRELO, "ORDER_ADAPTER": Dateless}),
        pytest.raises(CommandError, match="override placed_between"),
    ):
        sync("--since", "2025-01-01")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "not a date"),
        (["--until", "2025-02-30"], "not a valid date"),
        (["--orders", " , "], "primary keys"),
        (["--orders", "1,x"], "--orders: .x. value must be an integer"),
        (["--concurrency", "0"], "between 1 and 32"),
        (["--concurrency", "33"], "between 1 and 32"),
        (["--rate", "0"], "above zero"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(zinrelo, args, message):
    silent_orders("A1")
    with pytest.raises(CommandError, match=message):
        sync("--missing", *args)
    assert (Award.objects.count(), len(zinrelo.calls)) == (0, 0)


def test_failed_resends_final_failures_and_never_an_award_zinrelo_holds(
    zinrelo, django_capture_on_commit_callbacks
):
    blocked = failed_award("blocked", zinrelo, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        make_order(number="done", status="paid")
    zinrelo.calls.reset()
    silent_orders("silent")

    out, _ = sync("--failed")

    assert sent_order_ids(zinrelo) == ["blocked"]
    assert out.startswith("Re-sending 1 failed award(s).\nDelivered: 1 awarded, ")
    blocked.refresh_from_db()
    assert (blocked.status, blocked.attempts) == (Status.AWARDED, 1)
    assert not Award.objects.filter(order_id="silent").exists(), "--failed records nothing"


def test_dry_run_prints_what_would_be_sent_and_sends_and_writes_nothing(
    zinrelo, django_capture_on_commit_callbacks
):
    failed_award("blocked", zinrelo, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        make_order(number="due", status="paid")  # recorded, its delivery never ran
    silent_orders("silent", lines=2)
    silent_orders("nobody", email="")
    zinrelo.calls.reset()
    before = rows()

    out, err = sync("--dry-run", "--missing", "--failed")

    payloads = [json.loads(line) for line in out.splitlines()]
    sent = sorted(p["transaction_attributes"]["order_id"] for p in payloads)
    assert sent == ["blocked", "due", "silent"]
    silent = next(p for p in payloads if p["transaction_attributes"]["order_id"] == "silent")
    assert silent["member_id"] == "silent@example.com"
    assert [line["product_id"] for line in silent["transaction_attributes"]["products"]] == [
        "S0",
        "S1",
    ]
    nobody = Order.objects.get(number="nobody").pk
    assert f"Order {nobody} would not be sent: The order has no customer identifier" in err
    assert err.splitlines()[-1] == (
        "Dry run: 3 award(s) would be sent (2 would be recorded, 1 re-sent), 1 cannot be sent; "
        "nothing was sent or changed."
    )
    assert len(zinrelo.calls) == 0
    assert rows() == before


def test_dry_run_of_a_selection_counts_what_it_skips(zinrelo, django_capture_on_commit_callbacks):
    awarded(zinrelo)
    with django_capture_on_commit_callbacks(execute=True):
        done = make_order(number="done", status="paid")
    zinrelo.calls.reset()
    (new,) = silent_orders("new")
    before = rows()

    out, err = sync("--dry-run", "--orders", f"{done.pk},{new.pk}")

    assert [
        json.loads(line)["transaction_attributes"]["order_id"] for line in out.splitlines()
    ] == ["new"]
    assert err.splitlines()[-1] == (
        "Dry run: 1 award(s) would be sent (1 would be recorded, 0 re-sent), 1 skipped; "
        "nothing was sent or changed."
    )
    assert (len(zinrelo.calls), rows()) == (0, before)


def test_summary_counts_each_outcome(zinrelo):
    silent_orders("ok", "twice", "blocked", "down")
    zinrelo.add_callback(
        "POST",
        AWARD_URL,
        callback=lambda request: answer(json.loads(request.body)),
    )

    out, _ = sync("--missing")

    assert out.splitlines()[1].startswith(
        "Delivered: 1 awarded, 1 already awarded, 1 refused, 1 failed (1 will be retried), "
        "0 skipped in "
    )
    assert Award.objects.get(order_id="down").status == Status.RETRYING


def answer(payload):
    order_id = payload["transaction_attributes"]["order_id"]
    error = {
        "twice": (200, "DUPLICATE_ORDER_ID"),
        "blocked": (200, "MEMBER_BLOCKED"),
        "down": (503, "SERVICE_UNAVAILABLE"),
    }.get(order_id)
    if error is None:
        return 200, {}, json.dumps({"success": True, "data": {"points": 10}})
    status, code = error
    return status, {}, json.dumps({"success": False, "error_code": code, "reason": "No."})


def test_queries_per_award_do_not_grow_with_lines_or_orders(zinrelo):
    """Orders are read a chunk at a time with their lines; each award costs the same few queries."""
    awarded(zinrelo)

    def queries_to_sync(count, lines):
        Award.objects.all().delete()
        Order.objects.all().delete()
        silent_orders(*(f"{lines}-{n}" for n in range(count)), lines=lines)
        with CaptureQueriesContext(connection) as captured:
            sync("--missing")
        assert Award.objects.filter(status=Status.AWARDED).count() == count
        order_reads = [q for q in captured if 'FROM "shop_order"' in q["sql"]]
        line_reads = [q for q in captured if 'FROM "shop_orderline"' in q["sql"]]
        return len(captured), len(order_reads), len(line_reads)

    small, small_orders, small_lines = queries_to_sync(10, lines=1)
    many_lines, many_lines_orders, many_lines_lines = queries_to_sync(10, lines=6)
    double, double_orders, double_lines = queries_to_sync(20, lines=1)

    # Orders are read, and their payloads built, a claimed group at a time: four awards per
    # sending thread, so 3 groups for 10 awards at --concurrency 1 and 5 for 20.
    assert small_lines == many_lines_lines == 3, "a group's lines in one query, whatever the lines"
    assert double_lines == 5, "one query of lines per group"
    assert small_orders == many_lines_orders == double_orders - 2, "orders are read per group"
    # Answers are recorded in batches of whatever has come back, so totals vary with timing:
    # at worst one answer per batch, 4 queries (savepoint, insert, update, release), plus a
    # share of a claim (2 queries per 4 awards) and a fixed few per run and chunk. A query per
    # line would add 60 to the run with six lines per order.
    for total, awards in ((small, 10), (many_lines, 10), (double, 20)):
        assert total <= 15 + 5 * awards


def test_non_tty_progress_lines_and_tty_bar():
    plain = StringIO()
    from django.core.management.base import OutputWrapper

    progress = Progress(4, OutputWrapper(plain))
    progress.every = 0
    for done in range(1, 5):
        progress(done)
    progress.finish()
    lines = plain.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "Sent 1/4 (25%)",
        "Sent 2/4 (50%)",
        "Sent 3/4 (75%)",
        "Sent 4/4 (100%)",
    ]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = Progress(4, OutputWrapper(screen))
    for done in range(1, 5):
        progress(done)
    progress.finish()
    drawn = screen.getvalue()
    assert "\n" not in drawn.rstrip("\n") and drawn.endswith("\n")
    assert drawn.split("\r")[-1].startswith("[" + "#" * 30 + "] 4/4 ")


def test_resync_orders_leaves_orders_that_do_not_qualify(
    zinrelo, django_capture_on_commit_callbacks
):
    awarded(zinrelo)
    paid, unpaid = silent_orders("paid", "unpaid")
    Order.objects.filter(pk=unpaid.pk).update(status="cancelled")
    with django_capture_on_commit_callbacks(execute=True):
        counts = resync_orders([paid.pk, unpaid.pk], "admin")
    assert counts == {
        "recorded": 1,
        "resent": 0,
        "not_qualifying": 1,
        "already_awarded": 0,
        "in_progress": 0,
    }
    assert sent_order_ids(zinrelo) == ["paid"]


# The rate limit


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def starts(throttle, count):
    return [throttle.wait() for _ in range(count)]


def busiest_second(times):
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + 1) for start in times)


def test_throttle_never_starts_more_than_the_rate_in_any_second():
    fake = FakeTime()
    for rate in (1, 3, 7.5, 20):
        throttle = Throttle(rate, clock=fake.clock, sleep=fake.sleep)
        assert busiest_second(starts(throttle, 60)) == int(rate)
    slow = Throttle(0.5, clock=fake.clock, sleep=fake.sleep)
    first, second = starts(slow, 2)
    assert second - first >= 2


def test_a_429_halves_the_rate_holds_every_call_and_then_recovers():
    fake = FakeTime()
    throttle = Throttle(10, clock=fake.clock, sleep=fake.sleep)
    before = starts(throttle, 20)
    throttle.slow_down(before[-1], retry_after=3)
    throttle.slow_down(before[0], retry_after=3)  # sent at the old pace: no second halving
    assert throttle.rate == 5
    after = starts(throttle, 12)
    assert after[0] - before[-1] >= 3, "every call waits out the Retry-After"
    assert sum(1 for t in after if t < after[0] + 1) == 5
    later = starts(throttle, 200)
    assert throttle.rate == 10
    assert busiest_second(later[-30:]) == 10


def capped(seconds):
    return override_settings(ZINRELO={**settings.ZINRELO, "BACKOFF_CAP": seconds})


def test_a_429_holds_every_call_at_most_backoff_cap_whatever_retry_after_asks():
    fake = FakeTime()
    with capped(60):
        throttle = Throttle(10, clock=fake.clock, sleep=fake.sleep)
    before = starts(throttle, 5)
    throttle.slow_down(before[-1], retry_after=99999999)  # three years
    after = starts(throttle, 1)
    assert after[0] - before[-1] == 60


def test_a_huge_retry_after_holds_a_rate_limited_sync_only_until_backoff_cap(zinrelo, monkeypatch):
    """The first call is refused with ``Retry-After: 99999999``; the others are answered once
    the throttle has taken it in, so the calls after it meet the hold. Time is a fake moved on
    by each sleep: nothing here waits."""
    fake, slept, held = FakeTime(), [], threading.Event()

    class Watched(Throttle):
        def slow_down(self, started, retry_after):
            super().slow_down(started, retry_after)
            held.set()

    def sleep(seconds):
        slept.append(seconds)
        fake.sleep(seconds)

    answers = iter([429])

    def answer(request):
        if next(answers, 200) == 429:
            body = {"success": False, "error_code": "RATE_LIMIT_EXCEEDED", "reason": "Slow."}
            return 429, {"Retry-After": "99999999"}, json.dumps(body)
        assert held.wait(5)
        return 200, {}, json.dumps({"success": True, "data": {"points": 10}})

    zinrelo.add_callback("POST", AWARD_URL, callback=answer)
    throttle = partial(Watched, clock=fake.clock, sleep=sleep)
    monkeypatch.setattr("django_zinrelo.sync.Throttle", throttle)
    silent_orders(*(f"H{n}" for n in range(6)))
    with capped(60):
        sync("--missing", "--rate", "10", "--concurrency", "2")
    assert slept, "a call met the hold"
    assert max(slept) <= 60
    statuses = Counter(Award.objects.values_list("status", flat=True))
    assert statuses == {Status.AWARDED: 5, Status.RETRYING: 1}


@pytest.fixture
def sandbox_arrivals(monkeypatch):
    """A local Zinrelo that notes when each call arrives, and the app pointed at it."""
    arrivals = []
    with ZinreloSandbox(latency=0.01) as sandbox:
        dispatch = sandbox._dispatch

        def noted(*args):
            arrivals.append(time.monotonic())
            return dispatch(*args)

        monkeypatch.setattr(sandbox, "_dispatch", noted)
        zinrelo = {
            **settings.ZINRELO,
            "API_URL": sandbox.url,
            "PARTNER_ID": DEFAULT_PARTNER_ID,
            "API_KEY": DEFAULT_API_KEY,
        }
        with override_settings(ZINRELO=zinrelo):
            yield arrivals


def check_rate(arrivals, concurrency):
    silent_orders(*(f"R{n}" for n in range(24)))
    started = time.monotonic()
    out, _ = sync("--missing", "--rate", "8", "--concurrency", str(concurrency))
    assert "Delivered: 24 awarded" in out
    assert len(arrivals) == 24
    assert busiest_second(arrivals) <= 8
    # 24 calls at 8 a second take 3 s; the bound only tells a run that ends from one that hangs,
    # with room for a loaded machine.
    assert time.monotonic() - started < 60, "the run ends"


def test_rate_limit_holds_at_the_server(sandbox_arrivals):
    check_rate(sandbox_arrivals, concurrency=1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rate_limit_holds_across_concurrent_threads(sandbox_arrivals):
    check_rate(sandbox_arrivals, concurrency=8)
    assert not [t for t in threading.enumerate() if t.name.startswith("zinrelo-sync")]
