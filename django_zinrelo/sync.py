"""Catching up and back-filling: select orders, record or reset their awards, send what is due.

Shared by ``zinrelo_sync`` and the admin's re-sync, so both select and send awards the same way.
Safe to run from cron on several hosts at once: each award is claimed before it is sent (see
``delivery``). Everything streams in chunks of ``CHUNK`` (orders by primary key, awards by due
time), so memory stays flat however many orders a back-fill covers; awards are claimed a group at
a time, the group's orders read in a few queries (``OrderAdapter.prefetch``) and their payloads
built and stored together, and their answers recorded a batch at a time, so the queries per award
stay below one, however many lines its order has.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Final, TypeVar

from django.apps import apps
from django.db import connection, transaction
from django.db.models import CharField, Exists, Func, Model, OuterRef, QuerySet, UUIDField, Value
from django.db.models.functions import Cast, Concat, Substr
from django.utils import timezone

from django_zinrelo import inserts
from django_zinrelo.client import Reply
from django_zinrelo.conf import ZinreloSettings, get_settings
from django_zinrelo.delivery import (
    Call,
    body_for,
    build,
    call,
    claim,
    client_post,
    deliver,
    enabled,
    get_adapter,
    give_back,
    lease,
    may_claim,
    record,
    release,
    store_settings,
    update_in_order,
)
from django_zinrelo.dispatch import submit
from django_zinrelo.models import (
    DONE,
    FINAL_FAILURES,
    OPERATION_FINAL_FAILURES,
    WAITING,
    Award,
    AwardQuerySet,
    Operation,
    OperationQuerySet,
    Status,
    Trigger,
    update_each,
)
from django_zinrelo.operations import reset_operations, send_due_operations
from django_zinrelo.payloads import InvalidOrder, build_for_store, shop_code

logger = logging.getLogger("django_zinrelo")

# Where each group of a UUID's hex digits starts (from 1) and how long it is: 8-4-4-4-12.
UUID_GROUPS: Final = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))

CHUNK: Final = 1000
# Zinrelo counts calls as they arrive; the margin absorbs the scheduling jitter between our clock
# and theirs, so a window that holds ``rate`` calls here never holds more there.
RATE_MARGIN: Final = 0.05
MIN_RATE: Final = 0.1
RATE_LIMITED: Final = "RATE_LIMIT_EXCEEDED"
# Awards claimed per sending thread at a time: enough to keep every thread busy while the last
# answers are recorded, few enough that a claim's lease covers the wait for a thread.
CLAIM_PER_THREAD: Final = 4

T = TypeVar("T")
R = TypeVar("R")


# Which orders


@dataclass(frozen=True)
class Selection:
    """The orders a re-sync covers: by primary key, by purchase date, or (the default) all."""

    order_pks: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def everything(self) -> bool:
        return self.order_pks is None and self.since is None and self.until is None

    def orders(self) -> QuerySet[Model]:
        """The selected orders, qualifying or not."""
        orders = order_model()._default_manager.all()
        if self.order_pks is not None:
            orders = orders.filter(pk__in=self.order_pks)
        if self.since is not None or self.until is not None:
            orders = get_adapter().placed_between(orders, self.since, self.until)
        return orders

    def qualifying(self) -> QuerySet[Model]:
        return get_adapter().qualifying(self.orders())

    def awards(self) -> AwardQuerySet:
        """The awards of the selected orders (of the configured order model and activity)."""
        conf = get_settings()
        awards = Award.objects.filter(
            order_model=order_model()._meta.label_lower, activity_id=conf.activity_id
        )
        if self.everything:
            return awards
        return awards.filter(order_pk__in=self.orders().order_by().values_list(text_pk()))

    def operations(self) -> OperationQuerySet:
        """The cancellations, refunds and approvals of the selected orders."""
        if self.everything:
            return Operation.objects.all()
        return Operation.objects.filter(
            order_model=order_model()._meta.label_lower,
            order_pk__in=self.orders().order_by().values_list(text_pk()),
        )

    def to_send(self) -> AwardQuerySet:
        """The awards a run sends when due: with nothing selected, every award, including those
        recorded under an order model or activity configured before."""
        return Award.objects.all() if self.everything else self.awards()


EVERYTHING: Final = Selection()


def order_model() -> type[Model]:
    conf = get_settings()
    assert conf.order_model, "checked by django_zinrelo.E002"
    return apps.get_model(conf.order_model)


def text_pk(ref: str | OuterRef = "pk") -> Func:
    """An order's primary key as the award stores it, ``str(pk)``, for joins done by the database.

    A database without a UUID type (SQLite, MySQL) stores a UUID as its 32 hex digits: they are
    given back their hyphens, or no award of such an order would ever be found by a join.
    """
    text = Cast(ref, output_field=CharField())
    if (
        not isinstance(order_model()._meta.pk, UUIDField)
        or connection.features.has_native_uuid_field
    ):
        return text
    parts: list[Func | Value] = []
    for start, length in UUID_GROUPS:
        if parts:
            parts.append(Value("-"))
        parts.append(Substr(text, start, length))
    return Concat(*parts, output_field=CharField())


def missing_orders(selection: Selection) -> QuerySet[Model]:
    """Selected orders that qualify and have no award: written by bulk paths that send no signal."""
    conf = get_settings()
    has_award = Award.objects.filter(
        order_model=order_model()._meta.label_lower,
        activity_id=conf.activity_id,
        order_pk=text_pk(OuterRef("pk")),
    )
    return selection.qualifying().filter(~Exists(has_award))


def failed_awards(selection: Selection) -> AwardQuerySet:
    """Final failures of selected orders that still qualify: what a re-sync sends again."""
    return selection.awards().filter(
        status__in=FINAL_FAILURES,
        order_pk__in=selection.qualifying().order_by().values_list(text_pk()),
    )


def failed_operations(selection: Selection) -> OperationQuerySet:
    """Operations of selected orders that ended undone and can be sent again."""
    return selection.operations().filter(status__in=OPERATION_FINAL_FAILURES, award__isnull=False)


def pages(pks: QuerySet[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    """The primary keys of ``pks`` (a flat ``values_list("pk")``) in order, a query per page.

    No cursor is held between pages, so writing between them (awards recorded for the page just
    read) is safe on every database, and a later page sees what was written since.
    """
    page = list(pks.order_by("pk")[:size])
    while page:
        yield page
        if len(page) < size:
            return
        page = list(pks.filter(pk__gt=page[-1]).order_by("pk")[:size])


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[tuple[T, ...]]:
    iterator = iter(items)
    while chunk := tuple(islice(iterator, size)):
        yield chunk


# Recording and resetting


def record_missing(selection: Selection = EVERYTHING) -> int:
    """Record awards for selected qualifying orders with none; returns how many were recorded
    (none while the app is switched off)."""
    conf = get_settings()
    if not enabled(conf):
        return 0
    label = order_model()._meta.label_lower
    recorded = 0
    for page in pages(missing_orders(selection).values_list("pk", flat=True)):
        keys = [str(pk) for pk in page]
        fitting = [key for key in keys if len(key) <= inserts.LONGEST_KEY]
        if len(fitting) < len(keys):  # one such order must not stop the others' back-fill
            logger.error(
                "Zinrelo: %s order(s) have a primary key longer than %s characters, which no "
                "award can record; they are left out",
                len(keys) - len(fitting),
                inserts.LONGEST_KEY,
            )
        # Without payloads: the run that sends them builds them a claimed group at a time,
        # while the calls of the group before are made (``build_claimed``).
        recorded += inserts.record_page(label, fitting, conf.activity_id)
        inserts.keep_statistics(recorded)
    return recorded


def reset(awards: QuerySet[Award]) -> int:
    """Give final failures a fresh start, their payload rebuilt from the order as it is now;
    none while the app is switched off."""
    if not enabled(get_settings()):
        return 0
    return update_in_order(
        awards.filter(status__in=FINAL_FAILURES),
        status=Status.PENDING,
        attempts=0,
        payload=None,
        next_attempt_at=timezone.now(),
        claimed_until=None,
    )


def prepare(
    selection: Selection, *, record: bool, resend: bool, dry_run: bool = False
) -> Counter[str]:
    """Record missing awards and reset failed ones among the selection, or only count them.

    Returns ``recorded`` and ``resent``, and for a selection smaller than everything also what is
    left alone: ``already_awarded`` (never sent again), ``in_progress`` (pending, retrying or
    being sent: left to their schedule) and, when there are any, ``not_qualifying``.
    """
    counts: Counter[str] = Counter()
    if not selection.everything:
        awards = selection.awards().filter(
            order_pk__in=selection.qualifying().order_by().values_list(text_pk())
        )
        counts["already_awarded"] = awards.filter(status__in=DONE).count()
        counts["in_progress"] = awards.filter(status__in=[*WAITING, Status.SENDING]).count()
        not_qualifying = selection.orders().count() - selection.qualifying().count()
        if not_qualifying:
            counts["not_qualifying"] = not_qualifying
    if resend:
        failed = failed_awards(selection)
        counts["resent"] = failed.count() if dry_run else reset(failed)
        operations = failed_operations(selection)
        resent = operations.count() if dry_run else len(reset_operations(operations))
        if resent:
            counts["operations_resent"] = resent
    if record:
        counts["recorded"] = (
            missing_orders(selection).count() if dry_run else record_missing(selection)
        )
    return counts


# Building payloads a chunk at a time


def load_orders(model: type[Model], pks: Iterable[str]) -> dict[str, Model]:
    """The orders with these keys, and what the adapter prefetches for them, in a few queries."""
    orders = model._default_manager.filter(pk__in=list(pks)).order_by("pk")
    return {str(order.pk): order for order in get_adapter().prefetch(orders)}


Built = tuple[str, dict[str, Any]]  # an award's store and body


def build_chunk(rows: list[tuple[int, str, str, str]]) -> dict[int, Built | InvalidOrder]:
    """Stores and payloads for ``(key, order model, order pk, activity)`` rows (the key: an
    award's pk, or any number telling the rows apart), by key; an order that cannot be sent as
    it is, or for which the shop's code raises, has its reason instead.

    An order that no longer exists or whose model is gone is left out: delivery records why. So
    is one whose build fails in our own code: delivery tries it again and logs the failure.
    """
    conf = get_settings()
    adapter = get_adapter(conf)
    built: dict[int, Built | InvalidOrder] = {}
    for label in {row[1] for row in rows}:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        mine = [row for row in rows if row[1] == label]
        orders: dict[str, Model] | None = None
        try:
            with shop_code(f"Reading {model._meta.label} orders with the adapter's prefetch()"):
                orders = load_orders(model, (row[2] for row in mine))
        except InvalidOrder as failed:
            # One order its manager cannot read, or a prefetch() that fails, must not hold up
            # the others: each order is then read alone, as delivery does, without prefetch().
            logger.warning("Zinrelo: %s; reading %s orders one at a time", failed.reason, len(mine))
        for key, _, order_pk, activity_id in mine:
            try:
                if orders is None:
                    award = Award(order_model=label, order_pk=order_pk, activity_id=activity_id)
                    payload = build(award)  # sets award.store
                    built[key] = (award.store, payload)
                elif order_pk in orders:
                    built[key] = build_for_store(adapter, orders[order_pk], activity_id, conf)
            except InvalidOrder as invalid:
                built[key] = invalid
            except Exception:
                logger.exception("Building the Zinrelo payload of order %s failed", order_pk)
    return built


def build_claimed(claimed: list[Award]) -> None:
    """Build and store the payloads of claimed awards that have none, in a few queries.

    ``delivery`` builds a payload only when an award has none, one order at a time; building
    them here for a claimed group saves it two or more queries per award, and only the process
    holding the claim builds them (racing runs would each build every award due). Written only
    where the claim still holds, so a payload is never replaced once sent. Invalid orders are
    left for delivery, which records why.
    """
    missing = {award.pk: award for award in claimed if award.payload is None}
    rows = [
        (pk, award.order_model, award.order_pk, award.activity_id) for pk, award in missing.items()
    ]
    built = []
    for pk, outcome in build_chunk(rows).items():
        if isinstance(outcome, tuple):
            award = missing[pk]
            award.store, award.payload = outcome
            award.member_id = award.payload["member_id"]
            award.order_id = award.payload["transaction_attributes"]["order_id"]
            built.append(award)
    if built:
        update_each(
            Award,
            ("payload", "member_id", "order_id", "store"),
            ("id", "claim"),
            (
                (award.payload, award.member_id, award.order_id, award.store, award.pk, award.claim)
                for award in built
            ),
        )


@dataclass(frozen=True)
class Preview:
    """What a dry run shows for one order: the body it would send, or why it cannot."""

    order_pk: str
    payload: dict[str, Any] | None
    reason: str = ""


def preview(selection: Selection, *, record: bool, resend: bool) -> Iterator[Preview]:
    """The payloads a run with these options would send, read without writing anything.

    Awards that are due show the payload they hold (built from the order if they hold none);
    failures to re-send and orders to record show a payload built from the order as it is now.
    """
    sources = [(selection.to_send().due(), False)]
    if resend:
        sources.append((failed_awards(selection), True))
    columns = ("pk", "order_model", "order_pk", "activity_id", "payload")
    for awards, rebuild in sources:
        for page in pages(awards.values_list("pk", flat=True)):
            rows = list(Award.objects.filter(pk__in=page).order_by("pk").values_list(*columns))
            stored = {} if rebuild else {row[0]: row[4] for row in rows if row[4] is not None}
            built = build_chunk([row[:4] for row in rows if row[0] not in stored])
            for award_pk, _, order_pk, *_ in rows:
                yield shown(order_pk, stored.get(award_pk) or built.get(award_pk))
    if record:
        conf = get_settings()
        adapter = get_adapter()
        for page in pages(missing_orders(selection).values_list("pk", flat=True)):
            orders = load_orders(order_model(), (str(pk) for pk in page))
            for order_pk, order in orders.items():
                try:
                    _, payload = build_for_store(adapter, order, conf.activity_id, conf)
                    yield Preview(order_pk, payload)
                except InvalidOrder as invalid:
                    yield Preview(order_pk, None, invalid.reason)


def shown(order_pk: str, payload: dict[str, Any] | Built | InvalidOrder | None) -> Preview:
    if isinstance(payload, tuple):
        return Preview(order_pk, payload[1])
    if isinstance(payload, dict):
        return Preview(order_pk, payload)
    if isinstance(payload, InvalidOrder):
        return Preview(order_pk, None, payload.reason)
    return Preview(order_pk, None, f"Order {order_pk} no longer exists.")


# Sending


class Throttle:
    """Never more than ``rate`` calls started in any one-second window, across every thread.

    A sliding log of start times: a call waits until the one ``n`` calls before it is a full
    window old (``n`` is the whole calls per second; a rate below one spaces single calls). A
    rate-limit answer halves the rate and holds every thread for the ``Retry-After`` Zinrelo
    asked for, at most ``BACKOFF_CAP`` as an award's own retry waits: a huge or mistaken value
    must not stall the run while the awards it claimed wait out their lease. Each second without
    one then gives back a tenth of the rate asked for, so one 429 does not slow a long back-fill
    for good. Answers to calls started before the last change were paced at the older rate and
    change nothing.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = self.rate = rate
        self.longest_hold = get_settings().backoff_cap
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._starts: deque[float] = deque()
        self._held_until = 0.0
        self._changed_at = -math.inf

    def _delay(self, now: float) -> float:
        """Seconds before a call may start; forgets starts older than the window on the way."""
        if now < self._held_until:
            return self._held_until - now
        if self.rate < self.limit and now - self._changed_at >= 1.0:
            self.rate = min(self.limit, self.rate + self.limit / 10)
            self._changed_at = now
        if self.rate >= 1:
            calls, window = math.floor(self.rate), 1.0 + RATE_MARGIN
        else:
            calls, window = 1, 1.0 / self.rate + RATE_MARGIN
        while self._starts and self._starts[0] <= now - window:
            self._starts.popleft()
        if len(self._starts) < calls:
            return 0.0
        return self._starts[-calls] + window - now

    def wait(self) -> float:
        """Return when a call may start, counting it as started; returns its start time."""
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    self._starts.append(now)
                    return now
            self._sleep(delay)

    def slow_down(self, started: float, retry_after: float | None) -> None:
        """Zinrelo refused a call started at ``started`` for its rate limit."""
        with self._lock:
            if started < self._changed_at:
                return
            self.rate = max(MIN_RATE, self.rate / 2)
            hold = min(retry_after or 1.0, self.longest_hold)
            self._held_until = max(self._held_until, self._clock() + hold)
            # No call starts before the hold ends: the ones started earlier kept the old pace.
            self._changed_at = self._held_until
        logger.warning("Zinrelo answered 429 (rate limit): slowing to %.1f calls/s", self.rate)


def paced(throttle: Throttle, post: Callable[[str, str], Reply]) -> Callable[[str, str], Reply]:
    """``post``, started only when ``throttle`` allows and slowed by a 429."""

    def paced_post(url: str, body: str) -> Reply:
        started = throttle.wait()
        reply = post(url, body)
        if reply.status_code == 429 or reply.error_code == RATE_LIMITED:
            throttle.slow_down(started, reply.retry_after)
        return reply

    return paced_post


@dataclass
class Run:
    """What a delivery run did: the final status of each award it claimed, those it lost to
    another process, and those whose answer it could not store (released to be sent again)."""

    statuses: dict[int, str] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    unrecorded: set[int] = field(default_factory=set)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.statuses.values())


def send_due(
    awards: AwardQuerySet,
    *,
    concurrency: int = 1,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    trigger: str | None = None,
) -> Run:
    """Send every award of ``awards`` that is due, until none is left due.

    Awards are claimed a few per thread at a time, just ahead of their calls, so a claim's lease
    covers the wait for a thread (and for ``rate``), and the payloads a group lacks are built
    once it is claimed; the threads only make the HTTP calls, and this thread records the
    answers in batches of whatever has come back meanwhile. Awards whose
    retry falls due while the run goes on are sent again in the same run, so with a short backoff
    one run settles everything it can. ``progress`` is called with the calls finished so far;
    ``trigger`` names what the attempts were made for (else a retry or the sync command).
    """
    conf = get_settings()
    result = Run()
    if not may_claim(conf):
        return result
    # One pooled client per store, and one pace for the whole run (``rate`` is its total).
    throttle = Throttle(rate) if rate is not None else None
    posts: dict[str, Callable[[str, str], Reply]] = {}

    def post_for(mine: ZinreloSettings) -> Callable[[str, str], Reply]:
        if mine.store not in posts:
            post = client_post(mine)
            posts[mine.store] = paced(throttle, post) if throttle is not None else post
        return posts[mine.store]

    stores = [conf.for_store(name) for name in ("", *conf.store_names)]
    for mine in stores:
        if mine.has_credentials:
            post_for(mine)  # a client that cannot be built stops the run before any claim
    # Built awards of a store without credentials wait; the others go on.
    waiting = [mine.store for mine in stores if not mine.has_credentials]
    group = CLAIM_PER_THREAD * concurrency
    # Up to two groups are in flight, so a thread may have twice its share ahead of it.
    hold = lease(conf, CLAIM_PER_THREAD * 2, 2 * group / rate if rate else 0.0)
    finished = 0
    batch: dict[int, str] = {}
    answered = False  # a call of the current batch
    in_flight: dict[Future[Call], Call] = {}
    unsent: dict[int, Award] = {}  # claimed, and neither handed to a thread nor settled

    def collect() -> None:
        """Record the calls that have come back, once a call per thread has: a batch costs
        the same few queries whatever its size. (Waiting for a whole group's worth, to commit
        less often, measured slower: the threads ran out of calls while it was recorded.)"""
        nonlocal finished, answered
        done, pending = wait(in_flight, timeout=0)
        while len(done) < concurrency and pending:
            more, pending = wait(pending, return_when=FIRST_COMPLETED)
            done |= more
        calls = []
        for future in done:
            item = in_flight.pop(future)
            error = None if future.cancelled() else future.exception()
            if error is None:
                calls.append(item)
                continue
            give_back([item.award], error, conf)
            result.lost.add(item.award.pk)
        try:
            unstored = record(calls, conf)
        except Exception as error:
            give_back([item.award for item in calls], error, conf)
            result.unrecorded.update(item.award.pk for item in calls)
            return
        result.unrecorded.update(item.award.pk for item in unstored)
        for item in calls:
            if item.reply is None:
                result.lost.add(item.award.pk)
            elif item not in unstored:
                result.statuses[item.award.pk] = str(item.award.status)
                answered = answered or item.award.pk in batch
        finished += len(calls)
        if progress is not None:
            progress(finished)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="zinrelo-sync") as pool:
        try:
            while True:
                batch = dict(
                    awards.due()
                    .exclude(store__in=waiting, payload__isnull=False)
                    .order_by("next_attempt_at", "pk")
                    .values_list("pk", "status")[:CHUNK]
                )
                if not batch:
                    if not in_flight:
                        break
                    # The last calls' answers may make retries due within the run.
                    while in_flight:
                        collect()
                    continue
                answered = False
                for ids in chunks(batch, group):
                    claimed = claim(ids, hold)
                    unsent = {award.pk: award for award in claimed}
                    result.lost.update(set(ids) - unsent.keys())
                    build_claimed(claimed)
                    for item, mine in prepared(claimed, batch, conf, trigger):
                        in_flight[start(pool, call, item, post_for(mine), mine)] = item
                        del unsent[item.award.pk]
                    unsent = {}  # the rest were recorded invalid or given back by prepared()
                    while len(in_flight) > group:
                        collect()
                # The next batch is read while the last group's calls go on, so the threads
                # never wait for it; the awards in flight are being sent, so not due.
                if not answered:
                    while in_flight:
                        collect()
                    # A batch in which no call was answered would be the same batch again.
                    if not answered:
                        break
        except BaseException:
            # Interrupted: claims not yet handed to a thread are given back, due again at once
            # (no attempt was made), and so are those of calls cancelled before they started;
            # the answers of calls made are recorded.
            release(list(unsent.values()), conf, retry=False)
            pool.shutdown(cancel_futures=True)
            while in_flight:
                collect()
            raise
    result.lost -= result.statuses.keys()
    return result


def start(pool: ThreadPoolExecutor, func: Callable[..., R], *args: Any) -> Future[R]:
    """``func(*args)`` on ``pool``, or in this thread when the pool takes no more work.

    Pools refuse new work once the interpreter is exiting ("cannot schedule new futures after
    interpreter shutdown"), yet the exit waits for the thread running this one (``dispatch``'s
    drainer, with the batch in hand): the awards it has claimed are then sent one after another
    here rather than left claimed until their lease runs out.
    """
    try:
        return pool.submit(func, *args)
    except RuntimeError:
        pass
    done: Future[R] = Future()
    try:
        done.set_result(func(*args))
    except Exception as error:
        done.set_exception(error)
    return done


def prepared(
    claimed: list[Award], statuses: dict[int, str], conf: ZinreloSettings, why: str | None = None
) -> Iterator[tuple[Call, ZinreloSettings]]:
    """The calls to make for claimed awards, each with its store's settings; an invalid order
    is recorded as such instead, and an award whose store cannot be called now is given back."""
    for award in claimed:
        trigger = why or (
            Trigger.RETRY if statuses[award.pk] == Status.RETRYING else Trigger.COMMAND
        )
        try:
            body = body_for(award)
            mine = store_settings(award, conf) if body is not None else None
        except Exception as error:
            give_back([award], error, conf)
            continue
        if body is not None and mine is not None:
            yield Call(award, trigger, body), mine


def deliver_due(*, concurrency: int = 1) -> Counter[str]:
    """Send every due award, then every due cancellation, refund and approval, until none is
    left due; returns how many awards ended in each status."""
    counts = send_due(EVERYTHING.to_send(), concurrency=concurrency).counts
    send_due_operations(EVERYTHING.operations(), Trigger.COMMAND)
    return counts


# The admin's path: after commit, by the configured backend


def queue(award_ids: Iterable[int], trigger: str) -> None:
    """Deliver after commit by the configured backend, so no caller holds a request open."""
    ids = list(award_ids)

    def send() -> None:
        for award_id in ids:
            submit(deliver, award_id, trigger)

    if ids:
        transaction.on_commit(send)


def resend(awards: QuerySet[Award], trigger: str) -> int:
    """Give finally failed awards a fresh start, rebuilt from the order as it is now."""
    if not enabled(get_settings()):
        return 0
    ids = list(awards.filter(status__in=FINAL_FAILURES).values_list("pk", flat=True))
    count = reset(Award.objects.filter(pk__in=ids))
    queue(ids, trigger)
    return count


def resync_orders(order_pks: Iterable[object], trigger: str) -> Counter[str]:
    """Bring chosen orders to Zinrelo: new awards for those without, re-sends for failed ones.

    The selection logic of ``zinrelo_sync --orders``; returns what ``prepare`` counts, and the
    awards it made due are delivered after commit.
    """
    counts: Counter[str] = Counter()
    if not enabled(get_settings()):
        return counts
    for chunk in chunks(str(pk) for pk in order_pks):
        selection = Selection(order_pks=chunk)
        counts.update(prepare(selection, record=True, resend=True))
        queue(selection.to_send().due().values_list("pk", flat=True), trigger)
    return counts
