"""Running delivery off the request path, by the backend ``ZINRELO["DELIVERY"]`` names.

``thread`` (the default) hands the work to a small in-process pool so a checkout never waits on
Zinrelo. Work that has a batch form (an order's award, once its save has committed) waits a moment
in memory and is done together with whatever else is waiting, through ``zinrelo_sync``'s own loop:
a burst of checkouts then costs a few batched queries and a few threads waiting on calls, not a
thread of round trips per order competing with the checkouts for the interpreter. ``immediate``
runs the work in the caller, for tests and scripts; ``tasks`` enqueues it on Django's Tasks
framework (see ``tasks``), for shops that run workers. Whatever the backend, nothing raises back
into the shop's code: the award row is the durable record, and ``zinrelo_sync`` delivers anything
a lost thread, a lost task or a killed process left behind. On every backend the work starts in
``run``, which asks the switch (``delivery.enabled``) again: a delivery queued before the app was
switched off (a pending commit, a task waiting in a broker) then does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from django.db import close_old_connections

from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import enabled

logger = logging.getLogger("django_zinrelo")

R = TypeVar("R")
Batch = Callable[[Sequence[tuple[Any, ...]]], Any]

# How long work waits for more to join it, and the most one batch takes: during a burst of
# checkouts, each batch then costs its queries once for many orders.
GATHER: Final = 0.2
MOST: Final = 1000
# While checkouts keep committing (work put within BUSY seconds), batches go in slices of SLICE
# and the thread rests after each as long as the slice took: delivery then holds the interpreter
# at most half the time, and the checkouts, waiting on their database round trips, get it back
# sooner. Once they stop, the backlog goes at full speed.
BUSY: Final = 0.05
SLICE: Final = 100

_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None
_drainer: tuple[int, Drainer] | None = None


def run(func: Callable[..., R], *args: Any) -> R | None:
    """``func(*args)``, or None after logging what it raised, or None while the app is off."""
    try:
        if not enabled(get_settings()):
            return None
        return func(*args)
    except Exception:
        logger.exception("Zinrelo delivery failed; the award stays due for zinrelo_sync")
        return None


def run_in_thread(func: Callable[..., Any], *args: Any) -> None:
    close_old_connections()
    try:
        run(func, *args)
    finally:
        close_old_connections()


def executor(size: int) -> ThreadPoolExecutor:
    """One pool per process; a forked worker (gunicorn, uwsgi) builds its own."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(max_workers=size, thread_name_prefix="zinrelo"),
            )
        return _pool[1]


class Drainer:
    """What waits for a batch, and at most one pool thread doing the batches, per process.

    Work put while a batch runs joins the next one, so the slower Zinrelo or the database, the
    bigger the batches. The thread ends when nothing waits, so a process exits once the work
    waiting has been done (the pool joins its threads at exit; pools then take no new work, so
    the batch in hand makes its calls from this thread, see ``sync.start``); work still waiting
    when the process is killed is in the award rows, for ``zinrelo_sync``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[Batch, list[tuple[Any, ...]]] = {}
        self.busy = False
        self.last_put = 0.0

    def put(self, batch: Batch, args: tuple[Any, ...], threads: int) -> None:
        with self.lock:
            self.waiting.setdefault(batch, []).append(args)
            self.last_put = time.monotonic()
            if self.busy:
                return
            self.busy = True
        try:
            executor(threads).submit(self.drain)
        except BaseException:
            with self.lock:
                self.busy = False
            raise

    def take(self) -> dict[Batch, list[tuple[Any, ...]]]:
        """Everything waiting, or nothing, the thread then done (under the lock, so that work
        put meanwhile starts a thread of its own)."""
        with self.lock:
            waiting, self.waiting = self.waiting, {}
            self.busy = bool(waiting)
            return waiting

    def checkouts_busy(self) -> bool:
        return time.monotonic() - self.last_put < BUSY

    def drain(self) -> None:
        close_old_connections()
        try:
            while True:
                time.sleep(GATHER)
                waiting = self.take()
                if not waiting:
                    return
                for batch, items in waiting.items():
                    while items:
                        size = SLICE if self.checkouts_busy() else MOST
                        started = time.monotonic()
                        run(batch, items[:size])
                        del items[:size]
                        if self.checkouts_busy():
                            time.sleep(time.monotonic() - started)
        except BaseException:
            with self.lock:
                self.busy = False
            raise
        finally:
            close_old_connections()


def drainer() -> Drainer:
    """One per process, as the pool: a forked worker starts with none of its parent's work."""
    global _drainer
    with _lock:
        if _drainer is None or _drainer[0] != os.getpid():
            _drainer = (os.getpid(), Drainer())
        return _drainer[1]


def submit(func: Callable[..., Any], *args: Any, batch: Batch | None = None) -> None:
    """Run ``func(*args)`` by the configured backend; never raises.

    With ``batch``, the thread backend runs ``batch([args, ...])`` once for the calls waiting
    together instead of ``func`` for each; the other backends run ``func(*args)``.
    """
    try:
        conf = get_settings()
        if conf.delivery == "immediate":
            run(func, *args)
        elif conf.delivery == "tasks":
            # Imported only when chosen: on Django 5.2 the Tasks framework is an optional extra.
            from django_zinrelo.tasks import enqueue

            enqueue(func, *args)
        elif batch is not None:
            drainer().put(batch, args, conf.threads)
        else:
            executor(conf.threads).submit(run_in_thread, func, *args)
    except Exception:
        logger.exception("Could not start Zinrelo delivery; the award stays due for zinrelo_sync")
