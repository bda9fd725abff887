"""End to end on a real task queue: orders saved here, awards sent by a worker process.

The worker is a separate process with its own settings (``tests.settings_tasks``), pointed at the
sandbox this test runs and at this test's database, as a shop's worker would be at Zinrelo and
at the shop's database. Some calls fail (503s), so retries go through the queue as deferred tasks.
"""

import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings

from django_zinrelo.models import DONE, Award, AwardAttempt, Trigger
from django_zinrelo.sandbox import ZinreloSandbox
from tests.settings_tasks import BACKENDS, zinrelo_at
from tests.shop.models import Order, OrderLine

ROOT = Path(__file__).resolve().parent.parent
ORDERS = 12
FAULT_RATE = 0.3
WAIT = 60.0

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def first_draw_fails():
    """A seed whose first call is a 503, so at least one award goes through a deferred retry."""
    return next(s for s in range(1000) if random.Random(s).random() < FAULT_RATE)


def database_url():
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(kind, sandbox, log, extra_env):
    env = {
        **os.environ,
        **extra_env,
        "DJANGO_SETTINGS_MODULE": "tests.settings_tasks",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url(),
        "ZINRELO_SANDBOX_URL": sandbox.url,
        "ZINRELO_TASKS_BACKEND": kind,
    }
    if kind == "db":
        command = ["-m", "django", "db_worker", "--interval", "0.1", "--no-startup-delay"]
    else:
        command = ["-m", "celery", "-A", "tests.celery_app", "worker", "--pool", "solo"]
        command += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
    return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop(worker):
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def save_orders():
    """Checkouts, each in its own committed transaction, lines written after the order row."""
    numbers = [f"T{n}" for n in range(ORDERS)]
    for number in numbers:
        order = Order.objects.create(
            number=number,
            email=f"{number}@example.com",
            status="new",
            total=Decimal("20.00"),
            subtotal=Decimal("18.00"),
        )
        OrderLine.objects.create(
            order=order, sku="MUG", title="Mug", quantity=2, unit_price=Decimal("9.00")
        )
        order.status = "paid"
        order.save()
    return numbers


def delivered_within(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Award.objects.filter(status__in=DONE).count() == ORDERS:
            return True
        time.sleep(0.2)
    return False


def deliver_through(kind, tmp_path, extra_env=None):
    log_path = tmp_path / f"{kind}-worker.log"
    with (
        ZinreloSandbox(faults={"503": FAULT_RATE}, seed=first_draw_fails()) as sandbox,
        override_settings(ZINRELO=zinrelo_at(sandbox.url), TASKS={"default": BACKENDS[kind]}),
        log_path.open("w") as log,
    ):
        worker = start_worker(kind, sandbox, log, extra_env or {})
        try:
            numbers = save_orders()
            done = delivered_within(WAIT)
        finally:
            stop(worker)
        assert done, f"not all delivered within {WAIT:.0f}s:\n{log_path.read_text()[-3000:]}"
        assert {number: len(sandbox.awards_for(number)) for number in numbers} == dict.fromkeys(
            numbers, 1
        ), "each order awarded exactly once"
        calls = [r for r in sandbox.requests if r.path.endswith("/transactions/award")]
        assert len(calls) == AwardAttempt.objects.count(), "every call is in the award log"
    assert calls[0].status == 503
    assert AwardAttempt.objects.filter(trigger=Trigger.RETRY).exists(), "retried by the queue"
    payload = Award.objects.get(order_id="T0").payload
    assert payload is not None
    assert payload["transaction_attributes"]["products"] == [
        {
            "product_id": "MUG",
            "product_quantity": "2",
            "product_price": "9.000",
            "product_title": "Mug",
        }
    ]


def test_db_worker_delivers_each_order_exactly_once(tmp_path):
    deliver_through("db", tmp_path)


def test_celery_worker_delivers_each_order_exactly_once(tmp_path):
    """Celery with the local Redis as broker, through django-tasks-celery (Django 6 only)."""
    pytest.importorskip("django_tasks_celery", reason="Celery's Tasks backend needs Django 6")
    from tests.celery_app import app

    # A queue of its own: messages an aborted run left behind are never picked up.
    queue = f"zinrelo-tests-{os.getpid()}-{time.time_ns()}"
    shared = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        deliver_through("celery", tmp_path, {"ZINRELO_CELERY_QUEUE": queue})
    finally:
        app.conf.task_default_queue = shared
        with app.connection_for_write() as broker:  # leave the broker as it was
            broker.default_channel.queue_delete(queue)
            broker.default_channel.client.delete(
                f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"
            )
