"""Sending one award: claim the row, build the body once, call Zinrelo, record what happened.

The claim is a conditional ``UPDATE`` that only one process can win, so any number of workers,
cron runs and hosts may try the same award and exactly one sends it. A claim carries a lease: a
process that dies mid-call leaves the award to be picked up again once the lease runs out, and
Zinrelo's ``DUPLICATE_ORDER_ID`` then confirms an award that had in fact arrived.
"""

from __future__ import annotations

import json
import logging
import random
import traceback
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any, Final, TypeVar

from django.apps import apps
from django.db import connection, transaction
from django.db.models import Case, Model, Q, QuerySet, Value, When
from django.utils import timezone
from django.utils.module_loading import import_string

from django_zinrelo.adapters import OrderAdapter
from django_zinrelo.client import (
    REQUEST_ERROR,
    STORE_WIDE,
    Outcome,
    Reply,
    ZinreloClient,
    get_client,
)
from django_zinrelo.conf import UnknownStore, ZinreloSettings, get_settings, store_environment
from django_zinrelo.models import (
    DONE,
    FINAL_FAILURES,
    Award,
    AwardAttempt,
    Outbox,
    Status,
    Trigger,
    on_psycopg3,
    update_each,
)
from django_zinrelo.payloads import MAX_ORDER_ID, InvalidOrder, build_for_store, shop_code, text
from django_zinrelo.signals import award_delivered, award_failed

logger = logging.getLogger("django_zinrelo")

INVALID_ORDER = "invalid_order"
UNAUTHORIZED = "ERROR_UNAUTHORIZED"
DISABLED: Final = (
    "Zinrelo is switched off (ZINRELO['ENABLED'] is False): nothing is recorded or sent to Zinrelo."
)
ATTRIBUTE_NOT_UNIQUE = "TRANSACTION_ATTRIBUTE_NOT_UNIQUE"

_reported: set[str] = set()

M = TypeVar("M", bound=Model)


def report_once(problem: str, message: str, *args: Any, level: int = logging.ERROR) -> None:
    """Configuration problems hit every award alike: say so once per process, not once per order."""
    if problem not in _reported:
        _reported.add(problem)
        logger.log(level, message, *args)


@lru_cache(maxsize=8)
def load_adapter(path: Any) -> Any:
    """The adapter named by a setting (a dotted path or the class), made once per process."""
    adapter_class = import_string(path) if isinstance(path, str) else path
    return adapter_class()


def get_adapter(conf: ZinreloSettings | None = None) -> OrderAdapter:
    adapter: OrderAdapter = load_adapter((conf or get_settings()).order_adapter)
    return adapter


def lease(conf: ZinreloSettings, calls: int = 1, waiting: float = 0.0) -> timedelta:
    """Long enough to outlive ``calls`` calls made one after another and ``waiting`` seconds
    spent waiting for a turn, short enough that a crash delays little."""
    return timedelta(seconds=2 * (conf.connect_timeout + conf.read_timeout) * calls + waiting + 60)


def backoff(attempt: int, conf: ZinreloSettings, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter, never sooner than Zinrelo's ``Retry-After`` asks."""
    ceiling = min(conf.backoff_cap, conf.backoff_base * 2.0 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, conf.backoff_cap))
    return delay


def enabled(conf: ZinreloSettings) -> bool:
    """The switch: every path that would record an award or call Zinrelo asks this first.

    A shop turns the app off exactly when it must not talk to Zinrelo (a staging copy of
    production data, an incident, a migration), so a path that skips this question is a bug.
    Logged once per process at INFO: being off is a choice, not a fault, and the paths someone
    watches (``zinrelo_sync``, the admin's actions) say it to that person themselves.
    """
    if not conf.enabled:
        report_once("disabled", DISABLED, level=logging.INFO)
    return bool(conf.enabled)


def ready(conf: ZinreloSettings) -> bool:
    """Whether a call to Zinrelo may be made now: the app is on and has the credentials of the
    store ``conf`` is for (see ``ZinreloSettings.for_store``)."""
    if not enabled(conf):
        return False
    if not conf.has_credentials and not conf.store:
        report_once(
            "credentials",
            "Zinrelo awards are waiting: ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] (or the "
            "ZINRELO_PARTNER_ID and ZINRELO_API_KEY environment variables) are not set.",
        )
    elif not conf.has_credentials:
        report_once(
            f"credentials:{conf.store}",
            "Zinrelo awards of the store %r are waiting: its PARTNER_ID and API_KEY in "
            "ZINRELO['STORES'] (or the %s and %s environment variables) are not set.",
            conf.store,
            store_environment(conf.store, "PARTNER_ID"),
            store_environment(conf.store, "API_KEY"),
        )
    return conf.has_credentials


def may_claim(conf: ZinreloSettings) -> bool:
    """Whether to claim anything: with one store, only when a call can be made; with several,
    whenever the app is on, each award's store being asked once the award is built
    (``store_settings``)."""
    return enabled(conf) if conf.store_names else ready(conf)


def store_settings(award: Award, conf: ZinreloSettings) -> ZinreloSettings | None:
    """The settings of a claimed, built award's store, when its call can be made now.

    Else None, the award given back: to wait for its store's credentials (due again at once; a
    sync run leaves out the built awards of such stores), or ended invalid when
    ``ZINRELO["STORES"]`` no longer defines its store.
    """
    try:
        mine = conf.for_store(award.store)
    except UnknownStore as unknown:
        refuse_invalid(award, str(unknown))
        return None
    if not ready(mine):
        release([award], conf, retry=False)
        return None
    return mine


def client(conf: ZinreloSettings) -> ZinreloClient:
    try:
        return get_client(
            str(conf.partner_id), str(conf.api_key), conf.connect_timeout, conf.read_timeout
        )
    except Exception as error:
        forget_locals(error)  # the frames below hold the API key
        raise


def client_post(conf: ZinreloSettings) -> Callable[[str, str], Reply]:
    return client(conf).award


def update_in_order(rows: QuerySet[M], *, skip_locked: bool = False, **values: Any) -> int:
    """``rows.update(**values)``, locking the rows in primary key order first.

    A plain ``UPDATE ... WHERE`` locks rows in whatever order its plan scans them. Every path
    that locks several rows at once (claiming, recording, releasing, re-sending) locks them in
    primary key order instead, so that no two can wait on each other: PostgreSQL would end such
    a wait by killing one of them (``deadlock detected``). ``skip_locked`` leaves out rows another
    transaction holds rather than waiting for them. The lock re-reads each row's own columns, so
    a row claimed meanwhile by a transaction that has committed is left out too, whatever other
    tables ``rows`` joins (an operation's award). On SQLite, which locks the whole database, this
    is the plain ``UPDATE``.
    """
    ordered = rows.order_by("pk").select_for_update(
        no_key=True, skip_locked=skip_locked, of=("self",)
    )
    with transaction.atomic():
        return rows.model._default_manager.filter(pk__in=ordered.values("pk")).update(**values)


def claim(award_ids: Sequence[int], hold: timedelta, model: type[Outbox] = Award) -> list[Any]:
    """Take the due rows (awards, or operations) among ``award_ids`` for this process, for ``hold``.

    One ``UPDATE`` marks them with a token of this claim; whatever it did not match is due no
    longer (sent, or claimed by another process) or is held by another transaction this very
    moment (left for later rather than waited for), and the token tells ours apart afterwards.
    """
    now = timezone.now()
    token = uuid.uuid4()
    claimed = update_in_order(
        model.objects.due(now).filter(pk__in=award_ids),  # type: ignore[attr-defined]
        skip_locked=True,
        status=Status.SENDING,
        claimed_until=now + hold,
        claim=token,
    )
    if not claimed:
        return []
    return list(model._default_manager.filter(pk__in=award_ids, claim=token).order_by("pk"))


def build(award: Award) -> dict[str, Any]:
    """The body for an award, read from its order as it is now, its store set on ``award``;
    :class:`InvalidOrder` when the order cannot be sent, including when the shop's code (its
    adapter, its order model's manager) raises for it."""
    conf = get_settings()
    try:
        model = apps.get_model(award.order_model)
    except LookupError:
        raise InvalidOrder(f"The order model {award.order_model!r} is not installed.") from None
    with shop_code(f"Reading order {award.order_pk} through {model._meta.label}'s manager"):
        order = model._default_manager.filter(pk=award.order_pk).first()
    if order is None:
        raise InvalidOrder(f"Order {award.order_pk} no longer exists.")
    adapter = get_adapter(conf)
    # Known even when the payload is refused, so staff find an invalid award by its order id;
    # a failing order_id() is reported by build_payload with its reason.
    with suppress(Exception):
        award.order_id = text(adapter.order_id(order))[:MAX_ORDER_ID]
    award.store, payload = build_for_store(adapter, order, award.activity_id, conf)
    return payload


def body_for(award: Award) -> str | None:
    """The body to send for a claimed award, built and stored once if it has none yet; None
    when the order cannot be sent, which is then recorded as invalid."""
    if award.payload is None:
        try:
            award.payload = build(award)
        except InvalidOrder as invalid:
            refuse_invalid(award, invalid.reason)
            return None
        award.member_id = award.payload["member_id"]
        award.order_id = award.payload["transaction_attributes"]["order_id"]
        award.save(update_fields=["payload", "member_id", "order_id", "store", "updated_at"])
    return json.dumps(award.payload, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Call:
    """One award's call to Zinrelo: what was sent, why, and the answer once there is one."""

    award: Award
    trigger: str
    body: str
    reply: Reply | None = None


def call(item: Call, post: Callable[[str, str], Reply], conf: ZinreloSettings) -> Call:
    """Make the call unless the claim could run out before it ends: a call made then might also
    be made by whoever claims the award next. ``reply`` stays None when not made."""
    budget = timedelta(seconds=conf.connect_timeout + conf.read_timeout)
    claimed_until = item.award.claimed_until
    if claimed_until is not None and timezone.now() + budget < claimed_until:
        item.reply = post(conf.award_url, item.body)
    return item


def deliver(award_id: int, trigger: str) -> Award | None:
    """Send one award if it is due and nobody else holds it; returns it in its new state."""
    conf = get_settings()
    if not may_claim(conf):
        return None
    claimed: list[Award] = claim([award_id], lease(conf))
    if not claimed:
        return None
    award = claimed[0]
    try:
        body = body_for(award)
        if body is None:
            return award
        mine = store_settings(award, conf)
        if mine is None:
            return award if award.status == Status.INVALID else None
        if record([call(Call(award, trigger, body), client_post(mine), mine)], conf):
            return None
        return award
    except Exception as error:
        give_back([award], error, conf)
        return None


def give_back(awards: Sequence[Award], error: BaseException, conf: ZinreloSettings) -> None:
    """After a failure of our own, not an answer from Zinrelo: log it, without its frames'
    local variables, and release the awards for a later try."""
    forget_locals(error)
    logger.error(
        "Delivering Zinrelo award %s failed unexpectedly; will try again",
        ", ".join(str(award.pk) for award in awards),
        exc_info=error,
    )
    release(awards, conf)


def forget_locals(error: BaseException) -> None:
    """Keep a traceback's stack and lines for the log, but not its frames' local variables.

    Frames below ``deliver`` (``get_client``, the client, requests) hold the API key as a local
    variable, and error reporters such as Sentry capture the locals of every logged traceback.
    """
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        traceback.clear_frames(link.__traceback__)
        link = link.__cause__ or link.__context__


def refuse_invalid(award: Award, reason: str) -> None:
    change = (
        award,
        answered(
            {
                "status": Status.INVALID,
                "last_error_code": INVALID_ORDER,
                "last_reason": reason,
                "last_status_code": None,
            }
        ),
    )
    finish([change])
    settle([change])
    logger.error("Zinrelo award %s (order %s) cannot be sent: %s", award.pk, award.order_pk, reason)
    announce(award)


def release(
    awards: Sequence[Outbox],
    conf: ZinreloSettings,
    *,
    retry: bool = True,
    model: type[Outbox] = Award,
) -> None:
    """Give claims back unused: after our own failure (``retry``: after a backoff, as a failed
    attempt would be), or when a claim ran too short to make the call (due again now)."""
    if not awards:
        return
    delay = backoff(min(award.attempts for award in awards) + 1, conf) if retry else 0.0
    try:
        update_in_order(
            model._default_manager.filter(
                pk__in=[award.pk for award in awards],
                status=Status.SENDING,
                claim__in={award.claim for award in awards},
            ),
            status=Case(
                *([When(check_first=True, then=Value("checking"))] if model is not Award else []),
                When(attempts=0, then=Value(Status.PENDING)),
                default=Value(Status.RETRYING),
            ),
            claimed_until=None,
            claim=None,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
        )
    except Exception:
        logger.exception(
            "Could not release %s Zinrelo award(s); their lease will expire", len(awards)
        )


def outcome_fields(award: Award, reply: Reply, conf: ZinreloSettings) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "last_status_code": reply.status_code,
        "last_error_code": reply.error_code,
        "last_reason": reply.reason,
    }
    attempts = award.attempts + 1
    if reply.outcome is Outcome.AWARDED:
        data = reply.data
        fields.update(
            status=Status.AWARDED,
            points=points(award_figure(data, "points")),
            points_status=str(award_figure(data, "points_status") or "")[:32],
            transaction_id=str(data.get("id") or data.get("transaction_id") or "")[:64],
        )
    elif reply.outcome is Outcome.ALREADY_AWARDED:
        fields["status"] = Status.ALREADY_AWARDED
    elif reply.error_code == ATTRIBUTE_NOT_UNIQUE and answer_was_lost(award):
        fields.update(
            status=Status.ALREADY_AWARDED,
            last_reason=(
                "Taken as already awarded: Zinrelo answered TRANSACTION_ATTRIBUTE_NOT_UNIQUE to a "
                "re-send after an earlier call got no answer, so it holds a transaction with this "
                "order's unique attribute, most likely from that call (a store that makes the "
                f"order id unique). Zinrelo said: {reply.reason}"
            ),
        )
    elif reply.outcome is Outcome.REFUSED:
        fields["status"] = Status.REFUSED
    elif reply.outcome is Outcome.STORE_PROBLEM:
        # Not this award's fault: it waits for the store to be fixed, however long that takes,
        # and the wait spends none of its retry budget (attempts, nor RETRY_FOR's clock).
        fields.update(
            status=Status.RETRYING,
            attempts=award.attempts,
            next_attempt_at=timezone.now() + timedelta(seconds=store_wait(conf)),
        )
    else:
        fields.update(retry_fields(award, attempts, reply, conf))
    return fields


def retry_fields(
    award: Outbox, attempts: int, reply: Reply, conf: ZinreloSettings
) -> dict[str, Any]:
    """After a transient failure: try again after a backoff while the retry budget lasts.

    The budget is ``RETRY_FOR`` from the first failure of the current run of failures (a re-send
    by a person starts a new one, as does an award failing since before the budget existed),
    and ``MAX_ATTEMPTS`` calls when a shop sets it. Time says what a shop means ("keep trying
    through a day's outage"); a count would cover more or less time as the backoff changes.
    """
    now = timezone.now()
    since = award.retrying_since if award.attempts and award.retrying_since else now
    if conf.max_attempts is not None and attempts >= conf.max_attempts:
        reason = f"Gave up after {attempts} attempts. Last: {reply.reason}"
    elif now - since >= timedelta(seconds=conf.retry_for):
        reason = (
            f"Gave up after {attempts} attempts over {hours(now - since)} "
            f"(RETRY_FOR). Last: {reply.reason}"
        )
    else:
        delay = backoff(attempts, conf, reply.retry_after)
        return {
            "status": Status.RETRYING,
            "retrying_since": since,
            "next_attempt_at": now + timedelta(seconds=delay),
        }
    return {"status": Status.FAILED, "retrying_since": since, "last_reason": reason}


def hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:.1f} h"


STORE_WAIT_FLOOR: Final = 300.0


def store_wait(conf: ZinreloSettings) -> float:
    """Between half and all of ``BACKOFF_CAP`` (the longest retry wait, spread out), and never
    under five minutes: a person fixes a store-wide problem, and with no attempts spent, a
    shorter wait would let one sync run call again and again for as long as it lasts."""
    return max(STORE_WAIT_FLOOR, random.uniform(conf.backoff_cap / 2, conf.backoff_cap))


def answer_was_lost(award: Award) -> bool:
    """Whether an earlier call for this award may have reached Zinrelo unanswered (a timeout, a
    dropped connection, a 5xx): Zinrelo may then hold the award from that call."""
    return award.attempts_log.filter(
        Q(status_code__isnull=True) | Q(status_code__gte=500), outcome=Outcome.RETRYABLE
    ).exists()


def award_figure(data: dict[str, Any], name: str) -> Any:
    """``points`` or ``points_status`` of an award answer: at the top of ``data`` (the purchase
    answer), else in ``award_info`` (Zinrelo's v2 transaction object)."""
    value = data.get(name)
    if value is None and isinstance(data.get("award_info"), dict):
        value = data["award_info"].get(name)
    return value


POINTS_RANGE = range(-(2**31), 2**31)  # Award.points is an IntegerField on every database


def points(value: Any) -> int | None:
    """Zinrelo's points as stored, or None when unreadable: a figure the column cannot hold
    would make the whole record fail, losing the evidence of an award Zinrelo has made."""
    try:
        number = int(float(value)) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or number in POINTS_RANGE else None


# A failed write of answers is tried once more as a batch (a deadlock, a serialization failure
# or a statement timeout is usually gone on the next try), then award by award, so that an answer
# the database refuses costs only its own record.
BATCH_TRIES: Final = 2


def record(calls: Sequence[Call], conf: ZinreloSettings) -> list[Call]:
    """Write the attempts and the awards' new states together, outside any caller's transaction;
    returns the calls whose answer could not be stored.

    A batch costs the same few queries whatever its size, so a bulk sync's database work per
    award stays well below the call's own. An answer that cannot be stored is logged in full
    and its award released, due at once: sent again, Zinrelo's ``DUPLICATE_ORDER_ID`` settles it.
    """
    made = [item for item in calls if item.reply is not None]
    release([item.award for item in calls if item.reply is None], conf, retry=False)
    unstored = []
    if made and not any(written(made, conf) is None for _ in range(BATCH_TRIES)):
        for item in made:
            if (error := written([item], conf)) is not None:
                unstored.append(item)
                lost_answer(item, error)
    for item in made:
        if item not in unstored:
            assert item.reply is not None
            report(item.award, item.reply)
            announce(item.award)
    release([item.award for item in unstored], conf, retry=False)
    return unstored


def written(made: Sequence[Call], conf: ZinreloSettings) -> Exception | None:
    """``store``, returning its failure (logged, its frames' locals cleared) instead of raising."""
    try:
        store(made, conf)
    except Exception as error:
        forget_locals(error)
        logger.warning(
            "Storing %s Zinrelo answer(s) failed: %s: %s", len(made), type(error).__name__, error
        )
        return error
    return None


def store(made: Sequence[Call], conf: ZinreloSettings) -> None:
    """One transaction: the attempts logged and the awards' new states written, in primary key
    order; the awards in memory take their new state only once it is committed."""
    made = sorted(made, key=lambda item: item.award.pk)
    changes = []
    attempts = []
    for item in made:
        reply = item.reply
        assert reply is not None
        fields = outcome_fields(item.award, reply, conf)
        # A store-wide problem keeps ``attempts`` as it was: it spends no retry budget.
        changes.append((item.award, answered({"attempts": item.award.attempts + 1, **fields})))
        attempts.append(
            AwardAttempt(
                award=item.award,
                trigger=item.trigger,
                outcome=reply.outcome.value,
                status_code=reply.status_code,
                error_code=reply.error_code[:64],
                reason=reply.reason,
                duration_ms=reply.duration_ms,
                request_body=item.body,
                response_body=reply.body,
            )
        )
    with transaction.atomic():
        insert_attempts(attempts)
        finish(changes)
    settle(changes)


def insert_attempts(attempts: Sequence[AwardAttempt]) -> None:
    """Write attempt rows: on PostgreSQL with ``COPY``, whose rows psycopg encodes in C.

    The ORM's ``INSERT`` has each value quoted into the statement by Python code (Django binds
    parameters on the client), which made it the largest part of recording a batch of answers.
    """
    if not on_psycopg3():
        AwardAttempt.objects.bulk_create(attempts)
        return
    meta = AwardAttempt._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    # Names come from the model's own metadata, quoted; the values travel as COPY data.
    sql = f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for attempt in attempts:
            copy.write_row([getattr(attempt, field.attname) for field in fields])


def lost_answer(item: Call, error: BaseException) -> None:
    """The evidence of an answer that could not be stored, kept in the log instead."""
    reply = item.reply
    assert reply is not None
    logger.error(
        "Zinrelo award %s (order %s): its answer could not be stored; the award is released "
        "to be sent again. Zinrelo answered %s, HTTP %s %s: %s",
        item.award.pk,
        item.award.order_id,
        reply.outcome.value,
        reply.status_code,
        reply.error_code,
        reply.body,
        exc_info=error,
    )


def report(award: Award, reply: Reply) -> None:
    """Log an answer: a configuration problem (bad credentials, a request that cannot be made)
    hits every award alike, so it is an ERROR once per process and a WARNING for each award."""
    problem = configuration_problem(reply)
    # With several stores, each has its own credentials: said once per store.
    keys = {
        name: f"{name}:{award.store}" if award.store else name for name in CONFIGURATION_PROBLEMS
    }
    if problem is not None:
        where = f"Zinrelo store {award.store!r}: " if award.store else ""
        report_once(keys[problem], where + CONFIGURATION_PROBLEMS[problem], reply.reason)
    elif reply.outcome is not Outcome.RETRYABLE:
        _reported.difference_update(keys.values())  # fixed: say so again if it comes back
    if reply.outcome is Outcome.STORE_PROBLEM:
        report_once(
            f"store:{award.store}:{reply.error_code}",
            "Zinrelo answered %s (%s), which holds back every award%s: %s Awards wait and are "
            "sent again at their next attempt once it is fixed.",
            reply.error_code,
            reply.reason,
            f" of store {award.store!r}" if award.store else "",
            STORE_WIDE[reply.error_code],
        )
    elif reply.outcome is Outcome.AWARDED:
        _reported.difference_update(
            {problem for problem in _reported if problem.startswith(f"store:{award.store}:")}
        )
    logger.log(
        logging.WARNING if problem is not None else LOG_LEVELS[award.status],
        "Zinrelo award %s (order %s): %s after attempt %s, HTTP %s %s %s",
        award.pk,
        award.order_id,
        award.status,
        award.attempts,
        reply.status_code,
        reply.error_code,
        reply.reason,
    )


CONFIGURATION_PROBLEMS: Final = {
    UNAUTHORIZED: "Zinrelo rejected the API credentials (HTTP 401, saying %r). Every award "
    "will be refused until ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] are fixed; then re-send "
    "the refused awards from the admin or with zinrelo_sync --failed.",
    REQUEST_ERROR: "No call to Zinrelo can be made: %s Every award will be refused until this is "
    "fixed; then re-send the refused awards from the admin or with zinrelo_sync --failed.",
}


def configuration_problem(reply: Reply) -> str | None:
    if reply.status_code == 401 or reply.error_code == UNAUTHORIZED:
        return UNAUTHORIZED
    if reply.error_code == REQUEST_ERROR:
        return REQUEST_ERROR
    return None


LOG_LEVELS: dict[str, int] = {
    Status.AWARDED: logging.INFO,
    Status.ALREADY_AWARDED: logging.INFO,
    Status.RETRYING: logging.WARNING,
    Status.REFUSED: logging.ERROR,
    Status.FAILED: logging.ERROR,
    Status.INVALID: logging.ERROR,
}


# What an award's answer changes, written for many awards in one statement.
STATE: Final = (
    "status",
    "attempts",
    "next_attempt_at",
    "retrying_since",
    "claimed_until",
    "claim",
    "points",
    "points_status",
    "transaction_id",
    "last_status_code",
    "last_error_code",
    "last_reason",
    "order_id",
    "updated_at",
)
OPERATION_STATE: Final = (*(name for name in STATE if name != "order_id"), "call", "check_first")


def answered(fields: dict[str, Any]) -> dict[str, Any]:
    """A row's new state once its answer is known: ``fields``, and the claim given up."""
    return {**fields, "claimed_until": None, "claim": None, "updated_at": timezone.now()}


def finish(changes: Sequence[tuple[Outbox, dict[str, Any]]], model: type[Outbox] = Award) -> None:
    """Store the new states only where our claim still holds; an expired claim belongs to
    another process now, and what it stores wins.

    The rows in memory are left as they were, claim included, so that a failed write can
    still be released; ``settle`` gives them their new state once it is committed.
    """
    names = STATE if model is Award else OPERATION_STATE
    rows = [
        [*(fields.get(name, getattr(row, name)) for name in names), row.pk, row.claim]
        for row, fields in sorted(changes, key=lambda change: change[0].pk)
    ]
    stored = update_each(model, names, ("id", "claim"), rows)
    if 0 <= stored < len(rows):
        logger.warning(
            "Zinrelo: the claim on %s of award(s) %s expired before the answer was stored; "
            "another worker owns them now",
            len(rows) - stored,
            ", ".join(str(award.pk) for award, _ in changes),
        )


def settle(changes: Sequence[tuple[Outbox, dict[str, Any]]]) -> None:
    """The rows in memory take the state ``finish`` stored, for the signals and the log."""
    for award, fields in changes:
        for name, value in fields.items():
            setattr(award, name, value)


def announce(award: Award) -> None:
    if award.status in DONE:
        signal = award_delivered
    elif award.status in FINAL_FAILURES:
        signal = award_failed
    else:
        return
    for _receiver, result in signal.send_robust(sender=Award, award=award):
        if isinstance(result, Exception):
            logger.error("A receiver of %s raised %s: %s", signal, type(result).__name__, result)


def deliver_order(order_model: str, order_pk: str, activity_id: str) -> Award | None:
    """The after-commit path of an order save: find its award and send it if due.

    An award that was invalid is rebuilt from the order as it is now, because the save that
    brought us here may be the shop fixing what was wrong (a missing email, a zero subtotal).
    """
    awards = Award.objects.filter(
        order_model=order_model, order_pk=order_pk, activity_id=activity_id
    )
    revive_invalid(awards)
    award_id = awards.values_list("pk", flat=True).first()
    return deliver(award_id, Trigger.ORDER_SAVE) if award_id is not None else None


def revive_invalid(awards: QuerySet[Award]) -> int:
    """Make the invalid awards among ``awards`` due again, to be rebuilt from their orders."""
    return awards.filter(status=Status.INVALID).update(
        status=Status.PENDING, payload=None, next_attempt_at=timezone.now()
    )
