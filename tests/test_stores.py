"""Several Zinrelo stores: each order goes to its own store, with that store's credentials.

Each store is a sandbox of its own with its own partner id and key; a sandbox answers 401 to any
other key, so an award accepted by a store proves it carried that store's credentials.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import serializers
from django.core.checks import CheckMessage
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.views.debug import ExceptionReporter

import django_zinrelo
from django_zinrelo import client as client_module
from django_zinrelo.checks import check_settings
from django_zinrelo.conf import get_settings
from django_zinrelo.models import Award, AwardAttempt, Operation, OperationStatus, Status
from django_zinrelo.sandbox import DEFAULT_API_KEY, DEFAULT_PARTNER_ID, ZinreloSandbox
from django_zinrelo.sync import deliver_due
from tests.sandboxed import FAST, award_calls, new_order, shared_database, shop_process, sync
from tests.shop.models import Order
from tests.shop.zinrelo import ShopAdapter

pytestmark = pytest.mark.django_db

EU_KEY = "ZK-EU-7d1c-never-show-me"
US_KEY = "ZK-US-42aa-never-show-me"
# The sandboxes know only made_a_purchase: the awards are recorded under another top-level
# activity, so a body carrying made_a_purchase carries its store's ACTIVITY_ID.
TOP_ACTIVITY = "purchase_any_store"
STORE_ACTIVITY = "made_a_purchase"


class StoreAdapter(ShopAdapter):
    """The store is the order number's prefix: ``EU-1`` is of store ``eu``; no prefix, the
    default store."""

    def store(self, order: Any) -> str:
        prefix, _, rest = order.number.partition("-")
        return prefix.lower() if rest else ""


@contextmanager
def two_stores(**changes: Any) -> Iterator[dict[str, ZinreloSandbox]]:
    """A sandbox per store, ``eu`` and ``us`` with keys of their own, and the default store's
    (the top-level settings); ``changes`` go over the top-level settings."""
    with ExitStack() as stack:
        boxes = {
            "": stack.enter_context(ZinreloSandbox(seed=4)),
            "eu": stack.enter_context(ZinreloSandbox(partner_id="eu-partner", api_key=EU_KEY)),
            "us": stack.enter_context(ZinreloSandbox(partner_id="us-partner", api_key=US_KEY)),
        }
        zinrelo = {
            **settings.ZINRELO,
            **FAST,
            "ORDER_ADAPTER": "tests.test_stores.StoreAdapter",
            "API_URL": boxes[""].url,
            "PARTNER_ID": DEFAULT_PARTNER_ID,
            "API_KEY": DEFAULT_API_KEY,
            "ACTIVITY_ID": TOP_ACTIVITY,
            "STORES": {
                "eu": {
                    "PARTNER_ID": "eu-partner",
                    "API_KEY": EU_KEY,
                    "API_URL": boxes["eu"].url,
                    "ACTIVITY_ID": STORE_ACTIVITY,
                },
                "us": {
                    "PARTNER_ID": "us-partner",
                    "API_KEY": US_KEY,
                    "API_URL": boxes["us"].url,
                    "ACTIVITY_ID": STORE_ACTIVITY,
                },
            },
            **changes,
        }
        stack.enter_context(override_settings(ZINRELO=zinrelo))
        yield boxes


def with_store(name: str, **values: Any) -> dict[str, Any]:
    """``STORES`` with store ``name``'s settings changed (a value of None removes the key)."""
    stores = {key: dict(value) for key, value in get_settings().stores.items()}
    stores[name].update(values)
    stores[name] = {key: value for key, value in stores[name].items() if value is not None}
    return {**settings.ZINRELO, "STORES": stores}


def order_ids(box: ZinreloSandbox) -> list[str]:
    return sorted(str(record.order_id) for record in award_calls(box))


def test_each_order_reaches_its_own_store_only_with_that_stores_activity(
    django_capture_on_commit_callbacks,
):
    with two_stores() as boxes:
        with django_capture_on_commit_callbacks(execute=True):
            for number in ("EU-1", "US-1", "EU-2"):
                new_order(number)
        assert order_ids(boxes["eu"]) == ["EU-1", "EU-2"]
        assert order_ids(boxes["us"]) == ["US-1"]
        assert award_calls(boxes[""]) == []
        for number, store in (("EU-1", "eu"), ("EU-2", "eu"), ("US-1", "us")):
            award = Award.objects.get(order_id=number)
            assert (award.status, award.store, award.activity_id) == (
                Status.AWARDED,
                store,
                TOP_ACTIVITY,
            )
            [body] = boxes[store].awards_for(number)
            assert body["activity_id"] == STORE_ACTIVITY == (award.payload or {})["activity_id"]


def test_a_sync_over_mixed_stores_sends_each_award_once_to_its_store():
    with two_stores(DELIVERY="thread") as boxes:
        numbers = [f"{store}-{n}" for n in range(12) for store in ("EU", "US")]
        for number in numbers:
            new_order(number)  # thread delivery runs after commit: never, in this test
        sync("--concurrency", "4")
        sync()  # a second run finds nothing to send
        for number in numbers:
            store = number.split("-")[0].lower()
            other = "us" if store == "eu" else "eu"
            assert len(boxes[store].awards_for(number)) == 1
            assert boxes[other].awards_for(number) == []
        assert [record.status for record in award_calls(boxes["eu"])] == [200] * 12
        assert [record.status for record in award_calls(boxes["us"])] == [200] * 12
        assert Award.objects.filter(status=Status.AWARDED).count() == 24


def test_a_store_without_credentials_waits_while_the_others_go(caplog, monkeypatch):
    with (
        two_stores(DELIVERY="thread") as boxes,
        override_settings(ZINRELO=with_store("us", PARTNER_ID=None, API_KEY=None)),
    ):
        for number in ("EU-1", "US-1", "US-2", "EU-2"):
            new_order(number)
        sync()
        sync()
        assert order_ids(boxes["eu"]) == ["EU-1", "EU-2"]
        assert award_calls(boxes["us"]) == []
        waiting = Award.objects.filter(store="us")
        assert sorted(waiting.values_list("status", flat=True)) == [Status.PENDING] * 2
        assert caplog.text.count("Zinrelo awards of the store 'us' are waiting") == 1
        assert "ZINRELO_US_PARTNER_ID" in caplog.text

        # Its credentials arrive through the environment: its awards go, to its store.
        monkeypatch.setenv("ZINRELO_US_PARTNER_ID", "us-partner")
        monkeypatch.setenv("ZINRELO_US_API_KEY", US_KEY)
        sync()
        assert order_ids(boxes["us"]) == ["US-1", "US-2"]
        assert set(waiting.values_list("status", flat=True)) == {Status.AWARDED}


def test_an_order_of_an_unknown_store_ends_invalid_with_the_reason(
    django_capture_on_commit_callbacks,
):
    with two_stores() as boxes:
        with django_capture_on_commit_callbacks(execute=True):
            new_order("MARS-1")
        award = Award.objects.get(order_pk=str(new_order_pk("MARS-1")))
        assert award.status == Status.INVALID
        assert "store 'mars'" in award.last_reason and "ZINRELO['STORES']" in award.last_reason
        assert all(award_calls(box) == [] for box in boxes.values())


def new_order_pk(number: str) -> int:
    return Order.objects.get(number=number).pk


def test_a_store_removed_from_the_settings_ends_its_built_awards_invalid():
    with two_stores(DELIVERY="thread") as boxes:
        new_order("EU-1")
        stores = {"us": get_settings().stores["us"]}
        with override_settings(ZINRELO={**settings.ZINRELO, "STORES": stores}):
            # Built while eu existed, then sent after it was removed.
            Award.objects.update(store="eu", payload={"member_id": "m", "activity_id": "x"})
            deliver_due()
        award = Award.objects.get()
        assert (award.status, award.last_error_code) == (Status.INVALID, "invalid_order")
        assert "store 'eu'" in award.last_reason
        assert award_calls(boxes["eu"]) == []


def test_a_refund_of_a_store_b_order_goes_to_store_b(django_capture_on_commit_callbacks):
    with two_stores() as boxes:
        with django_capture_on_commit_callbacks(execute=True):
            order = new_order("US-7")
            new_order("EU-7")
        with django_capture_on_commit_callbacks(execute=True):
            django_zinrelo.record_refund(order, "R-1")
        operation = Operation.objects.get()
        assert operation.status == OperationStatus.DONE
        assert boxes["us"].ledger("US-7")["left"] == 0
        assert len(boxes["us"].deductions("US-7")) == 1
        assert all(record.path.endswith("/transactions/award") for record in boxes["eu"].requests)
        assert boxes["eu"].ledger("EU-7")["left"] > 0


def test_the_default_store_still_serves_orders_that_name_none(django_capture_on_commit_callbacks):
    with two_stores(ACTIVITY_ID=STORE_ACTIVITY) as boxes:
        with django_capture_on_commit_callbacks(execute=True):
            new_order("1001")
        assert order_ids(boxes[""]) == ["1001"]
        assert Award.objects.get().store == ""
        assert award_calls(boxes["eu"]) == award_calls(boxes["us"]) == []


def test_each_store_has_its_own_pooled_client(django_capture_on_commit_callbacks):
    with two_stores() as boxes:
        client_module.get_client.cache_clear()
        with django_capture_on_commit_callbacks(execute=True):
            for number in ("EU-1", "US-1", "EU-2", "US-2"):
                new_order(number)
        conf = get_settings()
        clients = {
            store: client_module.get_client(
                str(conf.for_store(store).partner_id),
                str(conf.for_store(store).api_key),
                conf.connect_timeout,
                conf.read_timeout,
            )
            for store in ("eu", "us")
        }
        assert clients["eu"] is not clients["us"]
        info = client_module.get_client.cache_info()
        assert (info.currsize, info.misses) == (2, 2), "one client per store, reused"
        assert len(award_calls(boxes["eu"])) == 2


def test_neither_stores_key_appears_anywhere(
    caplog, monkeypatch, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    with two_stores() as boxes:
        with django_capture_on_commit_callbacks(execute=True):
            new_order("EU-1")
            new_order("US-1")

        def explode(self: Any, url: str, body: str) -> Any:
            raise RuntimeError(f"forced failure talking to {url}")

        monkeypatch.setattr(client_module.ZinreloClient, "post", explode)
        with django_capture_on_commit_callbacks(execute=True):
            new_order("EU-2")
            new_order("US-2")
        # A store's key refused by Zinrelo (rotated at Zinrelo, not here).
        monkeypatch.undo()
        with override_settings(ZINRELO=with_store("us", API_KEY=US_KEY + "-old")):
            Award.objects.filter(order_id="US-2").update(next_attempt_at="2000-01-01T00:00Z")
            deliver_due()
        assert [record.status for record in award_calls(boxes["us"])][-1] == 401

        failures = [record for record in caplog.records if record.exc_info]
        assert len(failures) >= 2, "both forced failures were logged with their traceback"
        request = RequestFactory().get("/")
        for record in failures:
            error_type, error, tb = record.exc_info
            report = ExceptionReporter(request, error_type, error, tb, is_email=True)
            shown = [str(error), repr(error), report.get_traceback_text()]
            shown.append(report.get_traceback_html())
            while tb is not None:
                shown += [repr(value) for value in tb.tb_frame.f_locals.values()]
                tb = tb.tb_next
            for key in (EU_KEY, US_KEY):
                assert all(key not in text for text in shown)

        # Django's error page shows the settings: the stores' keys are hidden there too.
        try:
            raise ValueError("boom")
        except ValueError:
            page = ExceptionReporter(request, *sys.exc_info()).get_traceback_text()
        assert "eu-partner" in page, "the stores are on the page"
        conf = get_settings()
        rows = serializers.serialize("json", [*Award.objects.all(), *AwardAttempt.objects.all()])
        assert '"store": "eu"' in rows
        for key in (EU_KEY, US_KEY):
            assert key not in caplog.text
            assert key not in page
            assert key not in rows
            assert key not in repr(conf) and key not in str(conf)
            assert key not in repr(conf.for_store("eu")) + repr(conf.for_store("us"))


def messages(**zinrelo: Any) -> list[CheckMessage]:
    with override_settings(ZINRELO={**settings.ZINRELO, **zinrelo}):
        return check_settings()


def ids(**zinrelo: Any) -> list[str]:
    return [str(message.id) for message in messages(**zinrelo)]


def store(**values: Any) -> dict[str, Any]:
    return {"PARTNER_ID": "p", "API_KEY": "k", "API_URL": "https://eu.zinrelo.test/", **values}


def test_checks_accept_well_formed_stores():
    assert ids(STORES={"eu": store(), "us": store(ACTIVITY_ID="buy")}) == []


def test_checks_name_each_problem_of_a_store(monkeypatch):
    assert ids(STORES=["eu"]) == ["django_zinrelo.E010"]
    assert ids(STORES={"eu": "p:k"}) == ["django_zinrelo.E010"]
    assert ids(STORES={"": store()}) == ["django_zinrelo.E010"]
    assert ids(STORES={"x" * 65: store()}) == ["django_zinrelo.E010"]
    assert ids(STORES={"eu": store(APIKEY="typo")}) == ["django_zinrelo.W002"]
    assert ids(STORES={"eu": store(API_URL="http://eu.zinrelo.test/")}) == ["django_zinrelo.E012"]
    assert ids(STORES={"eu": store(API_KEY="k\n")}) == ["django_zinrelo.E007"]
    [missing] = messages(STORES={"eu": store(API_KEY=None)})
    assert missing.id == "django_zinrelo.E011"
    assert "ZINRELO_EU_API_KEY" in str(missing.hint)
    monkeypatch.setenv("ZINRELO_EU_API_KEY", "from-the-environment")
    assert ids(STORES={"eu": store(API_KEY=None)}) == []


def test_the_top_level_credentials_are_optional_once_there_are_stores():
    assert ids(API_KEY=None) == ["django_zinrelo.E001"]
    assert ids(API_KEY=None, STORES={"eu": store()}) == ["django_zinrelo.W003"]


def test_the_award_list_shows_and_filters_by_store_and_its_page_shows_it(admin_user):
    eu = Award.objects.create(order_model="shop.order", order_pk="1", activity_id="a", store="eu")
    Award.objects.create(order_model="shop.order", order_pk="2", activity_id="a", store="us")
    browser = Client()
    browser.force_login(admin_user)
    url = reverse("admin:django_zinrelo_award_changelist")
    page = browser.get(url).content.decode()
    assert "column-store" in page and "?store=eu" in page
    filtered = browser.get(url, {"store": "us"}).context["cl"].result_list
    assert [award.order_pk for award in filtered] == ["2"]
    change = browser.get(reverse("admin:django_zinrelo_award_change", args=[eu.pk]))
    assert '<div class="readonly">eu</div>' in change.content.decode()


def test_the_readmes_example_passes_the_checks(monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Several stores", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {"ZINRELO": dict(settings.ZINRELO)}
    exec(example, namespace)  # noqa: S102 (our own README)
    for name in ("EU", "US"):
        monkeypatch.setenv(f"ZINRELO_{name}_PARTNER_ID", f"{name}-partner")
        monkeypatch.setenv(f"ZINRELO_{name}_API_KEY", f"{name}-key")
    with override_settings(ZINRELO=namespace["ZINRELO"]):
        assert check_settings() == []
        conf = get_settings()
        assert conf.for_store("us").activity_id == "purchase_us"
        assert conf.for_store("us").api_url == conf.api_url
        assert (conf.for_store("eu").partner_id, conf.for_store("eu").api_key) == (
            "EU-partner",
            "EU-key",
        )


class UnprefetchedStoreAdapter(StoreAdapter):
    def prefetch(self, orders: Any) -> Any:
        raise RuntimeError("prefetch is broken")


def test_orders_read_one_at_a_time_still_go_to_their_store():
    with two_stores(DELIVERY="thread", ORDER_ADAPTER=UnprefetchedStoreAdapter) as boxes:
        new_order("EU-1")
        new_order("US-1")
        sync()
        assert (order_ids(boxes["eu"]), order_ids(boxes["us"])) == (["EU-1"], ["US-1"])


@pytest.mark.postgres  # a second process sees the test's rows only on a database server
@pytest.mark.django_db(transaction=True)
def test_two_racing_syncs_over_mixed_stores_send_each_award_once_to_its_store(tmp_path):
    count = 200
    numbers = [f"{store}-{n}" for n in range(count // 2) for store in ("EU", "US")]
    Order.objects.bulk_create(
        Order(number=number, email=f"{number}@example.com", status="paid", total=9, subtotal=9)
        for number in numbers
    )
    database = shared_database(tmp_path)
    with two_stores(DELIVERY="thread") as boxes:
        sync("--missing", "--dry-run")  # nothing recorded yet: the racing runs record and send
        processes = [shop_process(RACING_SYNC, database, stdin=subprocess.PIPE) for _ in range(2)]
        for process in processes:
            assert process.stdout and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0, 0], outputs
        for number in numbers:
            store = number.split("-")[0].lower()
            other = "us" if store == "eu" else "eu"
            assert len(boxes[store].awards_for(number)) == 1, outputs
            assert boxes[other].awards_for(number) == []
        assert award_calls(boxes[""]) == []
        for box in (boxes["eu"], boxes["us"]):
            assert Counter(record.status for record in award_calls(box)) == {200: count // 2}
    assert Counter(Award.objects.values_list("store", "status")) == {
        ("eu", Status.AWARDED): count // 2,
        ("us", Status.AWARDED): count // 2,
    }


RACING_SYNC = """
from io import StringIO
from django.core.management import call_command
print("ready", flush=True)
sys.stdin.readline()
out = StringIO()
call_command("zinrelo_sync", "--missing", "--concurrency", "2", stdout=out)
print(out.getvalue(), flush=True)
"""


def test_a_malformed_store_ends_its_awards_invalid_and_the_others_go(
    django_capture_on_commit_callbacks,
):
    with (
        two_stores() as boxes,
        override_settings(
            ZINRELO={**settings.ZINRELO, "STORES": {**get_settings().stores, "mars": "key", 7: {}}}
        ),
    ):
        with django_capture_on_commit_callbacks(execute=True):
            new_order("MARS-1")
            new_order("EU-1")
        sync()
        assert Award.objects.get(order_id="MARS-1").status == Status.INVALID
        assert order_ids(boxes["eu"]) == ["EU-1"]
