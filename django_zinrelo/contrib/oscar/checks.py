"""A system check that the re-sync action reached oscar's order admin."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning


def check_admin_action(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django_zinrelo.admin import resync_to_zinrelo
    from django_zinrelo.contrib.oscar.apps import order_admin
    from django_zinrelo.contrib.oscar.conf import get_oscar_settings

    model_admin = order_admin()
    if model_admin is None or not get_oscar_settings().admin_action:
        return []
    if resync_to_zinrelo in (model_admin.actions or ()):
        return []
    return [
        Warning(
            "The 'Re-sync to Zinrelo' action is not on oscar's order admin.",
            hint="List 'django_zinrelo.contrib.oscar' after 'django.contrib.admin' in "
            "INSTALLED_APPS, or set ZINRELO_OSCAR['ADMIN_ACTION'] = False.",
            id="django_zinrelo_oscar.W001",
        )
    ]
