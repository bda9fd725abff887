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
from typing import Any, Final

from django.apps import apps
from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone
from django.utils.module_loading import import_string

from django_zinrelo.adapters import OrderAdapter
from django_zinrelo.client import STORE_WIDE, Outcome, Reply, get_client
from django_zinrelo.conf import ZinreloSettings, get_settings
from django_zinrelo.models import (
    DONE,
    FINAL_FAILURES,
    Award,
    AwardAttempt,
    Status,
    Trigger,
    update_each,
)
from django_zinrelo.payloads import InvalidOrder, build_payload, text
from django_zinrelo.signals import award_delivered, award_failed

logger = logging.getLogger("django_zinrelo")

INVALID_ORDER = "invalid_order"
UNAUTHORIZED = "ERROR_UNAUTHORIZED"
ATTRIBUTE_NOT_UNIQUE = "TRANSACTION_ATTRIBUTE_NOT_UNIQUE"

_reported: set[str] = set()


def report_once(problem: str, message: str, *args: Any) -> None:
    """Configuration problems hit every award alike: say so once per process, not once per order."""
    if problem not in _reported:
        _reported.add(problem)
        logger.error(message, *args)


@lru_cache(maxsize=8)
def load_adapter(path: Any) -> OrderAdapter:
    adapter_class = import_string(path) if isinstance(path, str) else path
    return adapter_class()  # type: ignore[no-any-return]


def get_adapter(conf: ZinreloSettings | None = None) -> OrderAdapter:
    return load_adapter((conf or get_settings()).order_adapter)


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


def ready(conf: ZinreloSettings) -> bool:
    if not conf.has_credentials:
        report_once(
            "credentials",
            "Zinrelo awards are waiting: ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] (or the "
            "ZINRELO_PARTNER_ID and ZINRELO_API_KEY environment variables) are not set.",
        )
    return conf.has_credentials


def client_post(conf: ZinreloSettings) -> Callable[[str, str], Reply]:
    try:
        return get_client(
            str(conf.partner_id), str(conf.api_key), conf.connect_timeout, conf.read_timeout
        ).award
    except Exception as error:
        forget_locals(error)  # the frames below hold the API key
        raise


def claim(award_ids: Sequence[int], hold: timedelta) -> list[Award]:
    """Take the due awards among ``award_ids`` for this process, for ``hold``.

    One ``UPDATE`` marks them with a token of this claim; whatever it did not match is due no
    longer (sent, or claimed by another process), and the token tells ours apart afterwards.
    """
    now = timezone.now()
    token = uuid.uuid4()
    claimed = (
        Award.objects.due(now)
        .filter(pk__in=award_ids)
        .update(status=Status.SENDING, claimed_until=now + hold, claim=token)
    )
    if not claimed:
        return []
    return list(Award.objects.filter(pk__in=award_ids, claim=token).order_by("pk"))


def build(award: Award) -> dict[str, Any]:
    conf = get_settings()
    try:
        model = apps.get_model(award.order_model)
    except LookupError:
        raise InvalidOrder(f"The order model {award.order_model!r} is not installed.") from None
    order = model._default_manager.filter(pk=award.order_pk).first()
    if order is None:
        raise InvalidOrder(f"Order {award.order_pk} no longer exists.")
    adapter = get_adapter(conf)
    # Known even when the payload is refused, so staff find an invalid award by its order id;
    # a failing order_id() is reported by build_payload with its reason.
    with suppress(Exception):
        award.order_id = text(adapter.order_id(order))[:128]
    return build_payload(adapter, order, award.activity_id)


def body_for(award: Award) -> str | None:
    """The body to send for a claimed award, built and stored once if it has none yet; None
    when the order cannot be sent, which is then recorded as invalid."""
    if award.payload is None:
        try:
            award.payload = build(award)
        except InvalidOrder as invalid:
            refuse_invalid(award, invalid.reason)
            return None
        award.member_id = award.payload["member_id"][:254]
        award.order_id = award.payload["transaction_attributes"]["order_id"][:128]
        award.save(update_fields=["payload", "member_id", "order_id", "updated_at"])
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
    if not ready(conf):
        return None
    claimed = claim([award_id], lease(conf))
    if not claimed:
        return None
    award = claimed[0]
    try:
        body = body_for(award)
        if body is not None:
            record([call(Call(award, trigger, body), client_post(conf), conf)], conf)
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
    finish(
        [
            (
                award,
                {
                    "status": Status.INVALID,
                    "last_error_code": INVALID_ORDER,
                    "last_reason": reason,
                    "last_status_code": None,
                },
            )
        ]
    )
    logger.error("Zinrelo award %s (order %s) cannot be sent: %s", award.pk, award.order_pk, reason)
    announce(award)


def release(awards: Sequence[Award], conf: ZinreloSettings, *, retry: bool = True) -> None:
    """Give claims back unused: after our own failure (``retry``: after a backoff, as a failed
    attempt would be), or when a claim ran too short to make the call (due again now)."""
    if not awards:
        return
    delay = backoff(min(award.attempts for award in awards) + 1, conf) if retry else 0.0
    try:
        Award.objects.filter(
            pk__in=[award.pk for award in awards],
            status=Status.SENDING,
            claim__in={award.claim for award in awards},
        ).update(
            status=Case(
                When(attempts=0, then=Value(Status.PENDING)), default=Value(Status.RETRYING)
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
        # and the wait spends none of its attempts (``attempts`` is its give-up budget).
        fields.update(
            status=Status.RETRYING,
            attempts=award.attempts,
            next_attempt_at=timezone.now() + timedelta(seconds=store_wait(conf)),
        )
    elif attempts >= conf.max_attempts:
        fields.update(
            status=Status.FAILED,
            last_reason=f"Gave up after {attempts} attempts. Last: {reply.reason}",
        )
    else:
        delay = backoff(attempts, conf, reply.retry_after)
        fields.update(
            status=Status.RETRYING, next_attempt_at=timezone.now() + timedelta(seconds=delay)
        )
    return fields


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


def record(calls: Sequence[Call], conf: ZinreloSettings) -> None:
    """Write the attempts and the awards' new states together, outside any caller's transaction.

    A batch costs the same few queries whatever its size, so a bulk sync's database work per
    award stays well below the call's own.
    """
    made = [(item, item.reply) for item in calls if item.reply is not None]
    release([item.award for item in calls if item.reply is None], conf, retry=False)
    if not made:
        return
    changes = [
        (
            item.award,
            {"attempts": item.award.attempts + 1, **outcome_fields(item.award, reply, conf)},
        )
        for item, reply in made
    ]
    attempts = [
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
        for item, reply in made
    ]
    with transaction.atomic():
        AwardAttempt.objects.bulk_create(attempts)
        finish(changes)
    for item, reply in made:
        report(item.award, reply)
        announce(item.award)


def report(award: Award, reply: Reply) -> None:
    if reply.status_code == 401 or reply.error_code == UNAUTHORIZED:
        report_once(
            "unauthorized",
            "Zinrelo rejected the API credentials (HTTP 401): every award will be refused until "
            "ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] are fixed; then re-send the refused "
            "awards from the admin or with zinrelo_sync --failed.",
        )
    elif reply.outcome is not Outcome.RETRYABLE:
        _reported.discard("unauthorized")
    if reply.outcome is Outcome.STORE_PROBLEM:
        report_once(
            f"store:{reply.error_code}",
            "Zinrelo answered %s (%s), which holds back every award: %s Awards wait and are "
            "sent again at their next attempt once it is fixed.",
            reply.error_code,
            reply.reason,
            STORE_WIDE[reply.error_code],
        )
    elif reply.outcome is Outcome.AWARDED:
        _reported.difference_update(
            {problem for problem in _reported if problem.startswith("store:")}
        )
    logger.log(
        LOG_LEVELS[award.status],
        "Zinrelo award %s (order %s): %s after attempt %s, HTTP %s %s %s",
        award.pk,
        award.order_id,
        award.status,
        award.attempts,
        reply.status_code,
        reply.error_code,
        reply.reason,
    )


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


def finish(changes: Sequence[tuple[Award, dict[str, Any]]]) -> None:
    """Store the new states only where our claim still holds; an expired claim belongs to
    another process now, and what it stores wins."""
    now = timezone.now()
    rows = []
    for award, fields in changes:
        token = award.claim
        for name, value in {
            **fields,
            "claimed_until": None,
            "claim": None,
            "updated_at": now,
        }.items():
            setattr(award, name, value)
        rows.append([*(getattr(award, name) for name in STATE), award.pk, token])
    stored = update_each(STATE, ("id", "claim"), rows)
    if 0 <= stored < len(rows):
        logger.warning(
            "Zinrelo: the claim on %s of award(s) %s expired before the answer was stored; "
            "another worker owns them now",
            len(rows) - stored,
            ", ".join(str(award.pk) for award, _ in changes),
        )


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
    awards.filter(status=Status.INVALID).update(
        status=Status.PENDING, payload=None, next_attempt_at=timezone.now()
    )
    award_id = awards.values_list("pk", flat=True).first()
    return deliver(award_id, Trigger.ORDER_SAVE) if award_id is not None else None
