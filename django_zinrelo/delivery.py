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
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.apps import apps
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from django_zinrelo.adapters import OrderAdapter
from django_zinrelo.client import Outcome, Reply, get_client
from django_zinrelo.conf import ZinreloSettings, get_settings
from django_zinrelo.models import DONE, FINAL_FAILURES, Award, AwardAttempt, Status, Trigger
from django_zinrelo.payloads import InvalidOrder, build_payload, text
from django_zinrelo.signals import award_delivered, award_failed

logger = logging.getLogger("django_zinrelo")

INVALID_ORDER = "invalid_order"
UNAUTHORIZED = "ERROR_UNAUTHORIZED"

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


def lease(conf: ZinreloSettings) -> timedelta:
    """Long enough to outlive any call in flight, short enough that a crash delays little."""
    return timedelta(seconds=2 * (conf.connect_timeout + conf.read_timeout) + 60)


def backoff(attempt: int, conf: ZinreloSettings, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter, never sooner than Zinrelo's ``Retry-After`` asks."""
    ceiling = min(conf.backoff_cap, conf.backoff_base * 2.0 ** (attempt - 1))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, conf.backoff_cap))
    return delay


def claim(award_id: int, conf: ZinreloSettings, now: datetime) -> Award | None:
    claimed = (
        Award.objects.due(now)
        .filter(pk=award_id)
        .update(status=Status.SENDING, claimed_until=now + lease(conf))
    )
    return Award.objects.get(pk=award_id) if claimed else None


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


def deliver(
    award_id: int, trigger: str, post: Callable[[str, str], Reply] | None = None
) -> Award | None:
    """Send one award if it is due and nobody else holds it; returns it in its new state.

    ``post`` stands in for the client's, for callers that pace calls (``zinrelo_sync --rate``).
    """
    conf = get_settings()
    if not conf.has_credentials:
        report_once(
            "credentials",
            "Zinrelo awards are waiting: ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] (or the "
            "ZINRELO_PARTNER_ID and ZINRELO_API_KEY environment variables) are not set.",
        )
        return None
    award = claim(award_id, conf, timezone.now())
    if award is None:
        return None
    try:
        if award.payload is None:
            try:
                award.payload = build(award)
            except InvalidOrder as invalid:
                return refuse_invalid(award, invalid.reason)
            award.member_id = award.payload["member_id"][:254]
            award.order_id = award.payload["transaction_attributes"]["order_id"][:128]
            award.save(update_fields=["payload", "member_id", "order_id", "updated_at"])
        body = json.dumps(award.payload, ensure_ascii=False, separators=(",", ":"))
        if post is None:
            post = get_client(
                str(conf.partner_id), str(conf.api_key), conf.connect_timeout, conf.read_timeout
            ).post
        reply = post(conf.award_url, body)
        return record(award, reply, body, trigger, conf)
    except Exception as error:
        forget_locals(error)
        logger.exception(
            "Delivering Zinrelo award %s failed unexpectedly; will try again", award.pk
        )
        release(award, conf)
        return None


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


def refuse_invalid(award: Award, reason: str) -> Award:
    finish(
        award,
        {
            "status": Status.INVALID,
            "order_id": award.order_id,
            "last_error_code": INVALID_ORDER,
            "last_reason": reason,
            "last_status_code": None,
        },
    )
    logger.error("Zinrelo award %s (order %s) cannot be sent: %s", award.pk, award.order_pk, reason)
    announce(award)
    return award


def release(award: Award, conf: ZinreloSettings) -> None:
    """Give a claim back after our own failure, so the award is not stuck until the lease ends."""
    try:
        Award.objects.filter(
            pk=award.pk, status=Status.SENDING, claimed_until=award.claimed_until
        ).update(
            status=Status.RETRYING,
            claimed_until=None,
            next_attempt_at=timezone.now() + timedelta(seconds=backoff(award.attempts + 1, conf)),
        )
    except Exception:
        logger.exception("Could not release Zinrelo award %s; its lease will expire", award.pk)


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
            points=points(data.get("points")),
            points_status=str(data.get("points_status") or "")[:32],
            transaction_id=str(data.get("id") or data.get("transaction_id") or "")[:64],
        )
    elif reply.outcome is Outcome.ALREADY_AWARDED:
        fields["status"] = Status.ALREADY_AWARDED
    elif reply.outcome is Outcome.REFUSED:
        fields["status"] = Status.REFUSED
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


POINTS_RANGE = range(-(2**31), 2**31)  # Award.points is an IntegerField on every database


def points(value: Any) -> int | None:
    """Zinrelo's points as stored, or None when unreadable: a figure the column cannot hold
    would make the whole record fail, losing the evidence of an award Zinrelo has made."""
    try:
        number = int(float(value)) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or number in POINTS_RANGE else None


def record(award: Award, reply: Reply, body: str, trigger: str, conf: ZinreloSettings) -> Award:
    """Write the attempt and the award's new state together, outside any caller's transaction."""
    fields = {**outcome_fields(award, reply, conf), "attempts": award.attempts + 1}
    with transaction.atomic():
        AwardAttempt.objects.create(
            award=award,
            trigger=trigger,
            outcome=reply.outcome.value,
            status_code=reply.status_code,
            error_code=reply.error_code[:64],
            reason=reply.reason,
            duration_ms=reply.duration_ms,
            request_body=body,
            response_body=reply.body,
        )
        finish(award, fields)
    if reply.status_code == 401 or reply.error_code == UNAUTHORIZED:
        report_once(
            "unauthorized",
            "Zinrelo rejected the API credentials (HTTP 401): every award will be refused until "
            "ZINRELO['PARTNER_ID'] and ZINRELO['API_KEY'] are fixed; then re-send the refused "
            "awards from the admin or with zinrelo_sync --failed.",
        )
    elif reply.outcome is not Outcome.RETRYABLE:
        _reported.discard("unauthorized")
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
    announce(award)
    return award


LOG_LEVELS: dict[str, int] = {
    Status.AWARDED: logging.INFO,
    Status.ALREADY_AWARDED: logging.INFO,
    Status.RETRYING: logging.WARNING,
    Status.REFUSED: logging.ERROR,
    Status.FAILED: logging.ERROR,
    Status.INVALID: logging.ERROR,
}


def finish(award: Award, fields: dict[str, Any]) -> Award:
    """Store the new state only while our claim still holds; an expired claim belongs to another."""
    updated = Award.objects.filter(
        pk=award.pk, status=Status.SENDING, claimed_until=award.claimed_until
    ).update(claimed_until=None, **fields)
    if not updated:
        logger.warning(
            "Zinrelo award %s: the claim expired before the answer was stored; another worker "
            "owns it now",
            award.pk,
        )
    for name, value in {**fields, "claimed_until": None}.items():
        setattr(award, name, value)
    return award


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
