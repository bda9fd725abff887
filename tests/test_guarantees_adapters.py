"""Guarantees on the shop's own code: whatever its adapter or its order model raises, for one
order, ends that one award ``invalid`` with a reason, and every other award is sent.

The shop's code runs in two places: ``zinrelo_sync`` reads orders a chunk at a time (the order
model's manager, then the adapter's ``prefetch()``), and delivery reads one order at a time (after
commit, on a task, or when a chunk could not be read). Each scenario poisons one order among
healthy ones and checks that sending goes on against the sandbox.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Model, QuerySet
from django.utils import timezone

from django_zinrelo import payloads
from django_zinrelo.adapters import Product
from django_zinrelo.models import Award, Status
from tests.sandboxed import award_calls, new_order, serving, sync
from tests.shop.models import Order
from tests.shop.zinrelo import ShopAdapter
from tests.test_tasks import IMMEDIATE, tasks_delivery

pytestmark = pytest.mark.django_db

POISONED = "POISON-1"
LINE = Product(id="SKU-1", quantity=1, price=Decimal("12.50"), title="Mug")


class PoisonedAdapter(ShopAdapter):
    """The README's style: ``products()`` is a generator, and for one order it raises midway."""

    def products(self, order: Any) -> Iterator[Product]:
        private_note = "kept-in-a-local-variable"
        yield LINE
        if order.number == POISONED:
            raise RuntimeError(f"line 2 of {order.number} has no SKU")
        assert private_note


class RaisingMethod(ShopAdapter):
    """``method`` raises for the poisoned order; ``lazily`` when its result is iterated."""

    method = ""
    lazily = False

    def __getattribute__(self, name: str) -> Any:
        found = super().__getattribute__(name)
        if name != type(self).method:
            return found

        def raising(order: Any) -> Any:
            if order.number != POISONED:
                return found(order)
            if not type(self).lazily:
                raise ValueError(f"{name} broke")
            return broken_generator(name)

        return raising


def broken_generator(name: str) -> Iterator[Any]:
    raise ValueError(f"{name} broke")
    yield  # a generator: it raises only when iterated


class FailingPrefetch(ShopAdapter):
    def prefetch(self, orders: QuerySet[Model]) -> QuerySet[Model]:
        raise LookupError("no such relation: 'lines__vouchers'")


def orders(healthy: int) -> list[Order]:
    """``healthy`` paid orders and the poisoned one among them, each with its pending award."""
    made = [new_order(f"OK-{n}") for n in range(healthy // 2)]
    made.append(new_order(POISONED))
    made += [new_order(f"OK-{n}") for n in range(healthy // 2, healthy)]
    assert Award.objects.filter(status=Status.PENDING).count() == healthy + 1
    return made


def poisoned_award() -> Award:
    return Award.objects.get(order_pk=str(Order.objects.get(number=POISONED).pk))


def statuses() -> Counter[str]:
    return Counter(Award.objects.values_list("status", flat=True))


def test_one_poisoned_order_among_100_ends_invalid_and_every_other_is_sent(caplog):
    with serving(ORDER_ADAPTER=PoisonedAdapter) as sandbox:
        orders(100)
        with caplog.at_level(logging.DEBUG, logger="django_zinrelo"):
            out = sync()
        assert statuses() == {Status.AWARDED: 100, Status.INVALID: 1}
        assert "100 awarded" in out
        assert len(award_calls(sandbox)) == 100
        award = poisoned_award()
        assert (award.last_error_code, award.last_reason, award.attempts) == (
            "invalid_order",
            "The order adapter's products() raised RuntimeError: line 2 of POISON-1 has no SKU",
            0,
        )
        assert award.order_id == POISONED, "staff find the invalid award by its order id"
        assert sync() == "Delivered: nothing was due.\n", "later runs are not held up either"
    assert "kept-in-a-local-variable" not in caplog.text
    assert not [record for record in caplog.records if record.exc_info], "no traceback logged"


def test_on_the_after_commit_path_the_poisoned_order_ends_invalid(
    django_capture_on_commit_callbacks,
):
    with serving(ORDER_ADAPTER=PoisonedAdapter) as sandbox:
        with django_capture_on_commit_callbacks(execute=True):
            new_order(POISONED)
        with django_capture_on_commit_callbacks(execute=True):
            new_order("OK-1")
        assert statuses() == {Status.AWARDED: 1, Status.INVALID: 1}
        assert "products() raised RuntimeError" in poisoned_award().last_reason
        assert len(award_calls(sandbox)) == 1
        assert sync() == "Delivered: nothing was due.\n"


def test_on_the_task_path_the_poisoned_order_ends_invalid(django_capture_on_commit_callbacks):
    with serving(ORDER_ADAPTER=PoisonedAdapter) as sandbox:
        with tasks_delivery(IMMEDIATE), django_capture_on_commit_callbacks(execute=True):
            new_order(POISONED)
            new_order("OK-1")
        assert statuses() == {Status.AWARDED: 1, Status.INVALID: 1}
        assert "products() raised RuntimeError" in poisoned_award().last_reason
        assert len(award_calls(sandbox)) == 1


@pytest.mark.parametrize(
    ("method", "lazily"),
    [
        ("member_id", False),
        ("order_id", False),
        ("order_total", False),
        ("order_subtotal", False),
        ("reason", False),
        ("transaction_date", False),
        ("approval_date", False),
        ("products", False),
        ("products", True),
        ("coupons", True),
        ("tags", True),
    ],
)
def test_any_adapter_method_raising_for_one_order_ends_only_that_award_invalid(
    method, lazily, monkeypatch
):
    monkeypatch.setattr(RaisingMethod, "method", method)
    monkeypatch.setattr(RaisingMethod, "lazily", lazily)
    with serving(ORDER_ADAPTER=RaisingMethod) as sandbox:
        orders(4)
        sync()
        assert statuses() == {Status.AWARDED: 4, Status.INVALID: 1}
        assert len(award_calls(sandbox)) == 4
    assert poisoned_award().last_reason == (
        f"The order adapter's {method}() raised ValueError: {method} broke"
    )


def test_an_order_its_model_cannot_load_ends_invalid_and_the_rest_of_its_chunk_is_sent(
    monkeypatch, caplog
):
    with serving() as sandbox:
        poisoned_pk = orders(10)[5].pk
        from_db = Order.from_db.__func__  # type: ignore[attr-defined]

        def corrupt(cls: type[Order], db: str, names: Any, values: Any) -> Order:
            order: Order = from_db(cls, db, names, values)
            if order.pk == poisoned_pk:
                raise ValueError("invalid literal for Decimal: 'n/a'")
            return order

        monkeypatch.setattr(Order, "from_db", classmethod(corrupt))
        with caplog.at_level(logging.WARNING, logger="django_zinrelo"):
            sync()
        assert statuses() == {Status.AWARDED: 10, Status.INVALID: 1}
        assert len(award_calls(sandbox)) == 10
    assert Award.objects.get(order_pk=str(poisoned_pk)).last_reason == (
        f"Reading order {poisoned_pk} through shop.Order's manager raised ValueError: "
        "invalid literal for Decimal: 'n/a'"
    )
    # The chunk is the group of awards claimed together (four per sending thread).
    assert "reading 4 orders one at a time" in caplog.text


def test_a_failing_prefetch_slows_a_run_down_but_sends_everything(caplog):
    with serving(ORDER_ADAPTER=FailingPrefetch) as sandbox:
        orders(10)
        with caplog.at_level(logging.WARNING, logger="django_zinrelo"):
            sync()
        assert statuses() == {Status.AWARDED: 11}
        assert len(award_calls(sandbox)) == 11
    # Said for each group of awards claimed together (four per sending thread): 4, 4 and 3.
    assert (
        "Reading shop.Order orders with the adapter's prefetch() raised LookupError: "
        "no such relation: 'lines__vouchers'; reading 4 orders one at a time"
    ) in caplog.text


def test_a_failure_in_our_own_code_is_logged_and_retried_never_a_silent_invalid(
    monkeypatch, caplog
):
    line = payloads.product_line

    def buggy(product: Any, number: int) -> dict[str, str]:
        if product.title == "Bug":
            raise TypeError("our bug")
        return line(product, number)

    class Buggy(ShopAdapter):
        def products(self, order: Any) -> list[Product]:
            return (
                [Product(id="1", quantity=1, price=1, title="Bug")]
                if order.number == POISONED
                else []
            )

    monkeypatch.setattr(payloads, "product_line", buggy)
    with serving(ORDER_ADAPTER=Buggy, BACKOFF_BASE=30, BACKOFF_CAP=3600) as sandbox:
        orders(4)
        with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
            sync()
        assert statuses() == {Status.AWARDED: 4, Status.PENDING: 1}
        assert len(award_calls(sandbox)) == 4
    award = poisoned_award()
    assert award.last_reason == ""
    assert award.next_attempt_at > timezone.now(), "tried again after a backoff"
    logged = [record for record in caplog.records if record.exc_info]
    assert logged and all(record.exc_info[0] is TypeError for record in logged)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


class OddValues(ShopAdapter):
    """For the poisoned order, one value of a type the adapter's contract does not give."""

    odd = ""

    def member_id(self, order: Any) -> Any:
        poisoned = order.number == POISONED and self.odd == "member"
        return Unprintable() if poisoned else super().member_id(order)

    def coupons(self, order: Any) -> list[str]:
        return ["SAVE5"]

    @property
    def coupon_separator(self) -> Any:  # type: ignore[override]
        return None if self.odd == "separator" else ","

    @property
    def fractional_quantities(self) -> bool:  # type: ignore[override]
        if self.odd == "fractional":
            raise AttributeError("settings has no WEIGHTS")
        return False


@pytest.mark.parametrize(
    ("odd", "reason"),
    [
        ("member", "A Unprintable from the shop could not be read as text (its str() raised "),
        ("separator", "The order adapter's coupon_separator must be text, not NoneType."),
        ("fractional", "The order adapter's fractional_quantities raised AttributeError"),
    ],
)
def test_a_value_of_the_wrong_type_ends_the_award_invalid_not_retried_forever(
    odd, reason, monkeypatch
):
    monkeypatch.setattr(OddValues, "odd", odd)
    with serving(ORDER_ADAPTER=OddValues) as sandbox:
        orders(2)
        sync()
        healthy = 2 if odd == "member" else 0
        assert statuses()[Status.INVALID] == 3 - healthy
        assert len(award_calls(sandbox)) == healthy
    assert poisoned_award().last_reason.startswith(reason)


def test_a_category_given_as_its_id_is_sent_as_one_category():
    class CategoryIds(ShopAdapter):
        def products(self, order: Any) -> Iterator[Product]:
            yield Product(id="SKU-1", quantity=1, price=Decimal("25.00"), title="Mug", category=42)

    with serving(ORDER_ADAPTER=CategoryIds) as sandbox:
        new_order("1001")
        sync()
        assert statuses() == {Status.AWARDED: 1}
        [sent] = award_calls(sandbox)
    [product] = json.loads(sent.body)["transaction_attributes"]["products"]
    assert product["product_category"] == ["42"]
