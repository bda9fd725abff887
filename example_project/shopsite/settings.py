"""Settings of the example shop, read from the environment (and a ``.env`` beside manage.py).

Without Zinrelo credentials the shop talks to the local sandbox (``manage.py zinrelo_sandbox``)
with the sandbox's own throwaway keys, so it runs on any machine with nothing to configure.
"""

from pathlib import Path

import environ

from django_zinrelo.sandbox import DEFAULT_API_KEY, DEFAULT_PARTNER_ID

BASE_DIR = Path(__file__).resolve().parent.parent
SANDBOX_URL = "http://127.0.0.1:8765/v2/loyalty/"
PRODUCTION_URL = "https://api.zinrelo.com/v2/loyalty/"

env = environ.Env()
ENV_FILE = Path(env.str("SHOP_ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE)  # variables already set in the environment win

SECRET_KEY = env.str("SHOP_SECRET_KEY", default="example-shop-only-not-a-secret")
DEBUG = env.bool("SHOP_DEBUG", default=True)
ALLOWED_HOSTS = env.list("SHOP_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

DATABASES = {
    "default": env.db_url("SHOP_DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
}

_partner_id = env.str("ZINRELO_PARTNER_ID", default="")
_api_key = env.str("ZINRELO_API_KEY", default="")
_real = bool(_partner_id and _api_key)  # both, or the sandbox's pair
_api_url = env.str("ZINRELO_API_URL", default="") or (PRODUCTION_URL if _real else SANDBOX_URL)
ZINRELO = {
    "PARTNER_ID": _partner_id if _real else DEFAULT_PARTNER_ID,
    "API_KEY": _api_key if _real else DEFAULT_API_KEY,
    "API_URL": _api_url,
    "ORDER_MODEL": "shop.Order",
    "ORDER_ADAPTER": "shop.zinrelo.ShopAdapter",
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_zinrelo",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shopsite.urls"
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
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Award outcomes on the console, as the shop's logs would show them.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_zinrelo": {"handlers": ["console"], "level": "INFO"}},
}
