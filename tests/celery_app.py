"""The Celery app of the Celery worker test (``celery -A tests.celery_app worker``).

Redis on loopback is the broker. Both processes, the test and its worker, read the queue name
from the environment the test sets, so a run never picks up messages an aborted run left behind.
"""

import os

from celery import Celery  # type: ignore[import-not-found, unused-ignore]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_tasks")

app = Celery(
    "zinrelo_tests", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
)
app.conf.task_default_queue = os.environ.get("ZINRELO_CELERY_QUEUE", "zinrelo-tests")
app.conf.broker_connection_retry_on_startup = True
# The worker registers the app's tasks as it imports them: django-tasks-celery adds each
# @task of the modules named here once Django is set up.
app.autodiscover_tasks(["django_zinrelo"])
