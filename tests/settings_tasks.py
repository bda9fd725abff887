"""Settings for the worker process that tests/test_tasks_worker.py starts: the suite's, with
delivery on Django's Tasks framework and Zinrelo at the sandbox the test runs.

The test passes what only it knows in the environment: the sandbox's URL, the test database
(``DATABASE_URL``, read by ``tests.settings``) and which task backend to serve. It configures its
own process with the same ``zinrelo_at()`` and ``BACKENDS``.
"""

import os

from django_zinrelo.sandbox import DEFAULT_API_KEY, DEFAULT_PARTNER_ID
from tests.settings import *  # noqa: F403
from tests.settings import ZINRELO as SUITE_ZINRELO

BACKENDS = {
    "db": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "celery": {
        "BACKEND": "django_tasks_celery.CeleryBackend",
        "OPTIONS": {"CELERY_APP": "tests.celery_app.app"},
    },
}


def zinrelo_at(url):
    return {
        **SUITE_ZINRELO,
        "DELIVERY": "tasks",
        "API_URL": url,
        "PARTNER_ID": DEFAULT_PARTNER_ID,
        "API_KEY": DEFAULT_API_KEY,
        # Short, so that a retry enqueued for its due time runs within the test's wait.
        "BACKOFF_BASE": 0.2,
        "BACKOFF_CAP": 0.5,
        "CONNECT_TIMEOUT": 1.0,
        "READ_TIMEOUT": 2.0,
    }


ZINRELO = zinrelo_at(os.environ.get("ZINRELO_SANDBOX_URL", "http://127.0.0.1:9/v2/loyalty/"))
TASKS = {"default": BACKENDS[os.environ.get("ZINRELO_TASKS_BACKEND", "db")]}
