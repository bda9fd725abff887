"""Running delivery off the request path, by the backend ``ZINRELO["DELIVERY"]`` names.

``thread`` (the default) hands the work to a small in-process pool so a checkout never waits on
Zinrelo; ``immediate`` runs it in the caller, for tests and scripts; ``tasks`` enqueues it on
Django's Tasks framework (see ``tasks``), for shops that run workers. Whatever the backend, nothing
raises back into the shop's code: the award row is the durable record, and ``zinrelo_sync``
delivers anything a lost thread, a lost task or a killed process left behind. On every backend the
work starts in ``run``, which asks the switch (``delivery.enabled``) again: a delivery queued before
the app was switched off (a pending commit, a task waiting in a broker) then does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections

from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import enabled

logger = logging.getLogger("django_zinrelo")

R = TypeVar("R")

_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


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


def submit(func: Callable[..., Any], *args: Any) -> None:
    """Run ``func(*args)`` by the configured backend; never raises."""
    try:
        conf = get_settings()
        if conf.delivery == "immediate":
            run(func, *args)
        elif conf.delivery == "tasks":
            # Imported only when chosen: on Django 5.2 the Tasks framework is an optional extra.
            from django_zinrelo.tasks import enqueue

            enqueue(func, *args)
        else:
            executor(conf.threads).submit(run_in_thread, func, *args)
    except Exception:
        logger.exception("Could not start Zinrelo delivery; the award stays due for zinrelo_sync")
