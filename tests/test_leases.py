"""The claim leases docs/reliability.md gives are the ones the code takes, on each path."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from django_zinrelo import delivery, sync
from django_zinrelo.conf import get_settings
from django_zinrelo.models import Award, Trigger
from tests.conftest import awarded, make_order

pytestmark = pytest.mark.django_db

RELIABILITY = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


@pytest.fixture
def holds(monkeypatch):
    """The lease of every claim made, in seconds."""
    taken: list[float] = []
    claim = delivery.claim

    def spy(award_ids: list[int], hold: timedelta) -> list[Award]:
        taken.append(hold.total_seconds())
        return claim(award_ids, hold)

    monkeypatch.setattr(delivery, "claim", spy)
    monkeypatch.setattr(sync, "claim", spy)
    return taken


def test_each_path_claims_for_the_lease_the_docs_give(zinrelo, holds):
    conf = get_settings()
    assert (conf.connect_timeout, conf.read_timeout) == (2.0, 5.0), "the default timeouts"
    awarded(zinrelo)
    docs = RELIABILITY.read_text()

    make_order("1", status="paid")
    delivery.deliver(Award.objects.get().pk, Trigger.ORDER_SAVE)
    assert holds == [74.0]
    assert "**74 s**" in docs

    make_order("2", status="paid")
    call_command("zinrelo_sync", stdout=StringIO())
    assert holds[1:] == [172.0]
    assert "**172 s**" in docs

    make_order("3", status="paid")
    call_command("zinrelo_sync", "--concurrency", "16", "--rate", "20", stdout=StringIO())
    assert holds[2:] == [178.4]
    assert "(178.4 s" in docs
