"""Settings for the suite: SQLite by default, or the server in DATABASE_URL (PostgreSQL in CI)."""

import os

import dj_database_url

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", "sqlite:///:memory:"))}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_zinrelo",
    "tests.shop",
    "django_tasks_db",  # the task queue a real worker serves in tests/test_tasks_worker.py
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

ZINRELO = {
    "PARTNER_ID": "test-partner",
    "API_KEY": "test-api-key",
    "API_URL": "https://api.zinrelo.test/v2/loyalty/",
    "ORDER_MODEL": "shop.Order",
    "ORDER_ADAPTER": "tests.shop.zinrelo.ShopAdapter",
    "REFUND_MODEL": "shop.Refund",
    "REFUND_ADAPTER": "tests.shop.zinrelo.ShopRefundAdapter",
    "DELIVERY": "immediate",
    "BACKOFF_BASE": 30,
}
