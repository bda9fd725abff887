"""``update_each``: the bulk sync's one statement for many awards' new states, each with its own
values, written only where the given keys still match."""

import uuid
from collections.abc import Sequence

import pytest
from django.db import connection, connections

from django_zinrelo import models
from django_zinrelo.models import Award, update_each

TRICKY = {"title": 'Sweatshirt "Über" \\ 10% {a,b}', "lines": [None, 1.5, "'"]}


def awards(count: int) -> list[Award]:
    return [
        Award.objects.create(
            order_model="shop.order", order_pk=str(n), activity_id="a", claim=uuid.uuid4()
        )
        for n in range(count)
    ]


def write(rows: list[Award], payloads: Sequence[object]) -> int:
    return update_each(
        Award,
        ("payload", "member_id"),
        ("id", "claim"),
        [
            (payload, f"m{award.pk}", award.pk, award.claim)
            for award, payload in zip(rows, payloads, strict=True)
        ],
    )


def check_writes() -> None:
    first, second, lost = awards(3)
    payloads = [TRICKY, None, {"x": 1}]
    lost.claim = uuid.uuid4()  # its claim went to another process meanwhile

    changed = write([first, second, lost], payloads)

    assert changed == 2
    stored = dict(Award.objects.values_list("pk", "payload"))
    assert stored == {first.pk: TRICKY, second.pk: None, lost.pk: None}
    assert Award.objects.filter(payload__isnull=True).count() == 2  # SQL NULL, not JSON null
    assert Award.objects.get(pk=lost.pk).member_id == ""


@pytest.mark.django_db
def test_each_row_gets_its_own_values_where_its_keys_still_match():
    check_writes()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_with_server_side_binding(monkeypatch):
    """Django's psycopg option that binds on the server, where one execute runs one statement."""
    wrapper = type(connections["default"])
    options = {**connection.settings_dict.get("OPTIONS", {}), "server_side_binding": True}
    binding = wrapper({**connection.settings_dict, "OPTIONS": options}, alias="default")
    monkeypatch.setattr(models, "connection", binding)
    try:
        check_writes()
    finally:
        binding.close()
