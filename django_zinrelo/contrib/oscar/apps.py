from __future__ import annotations

from django.apps import AppConfig, apps
from django.contrib import admin
from django.core import checks
from django.db.models import Model


class ZinreloOscarConfig(AppConfig):
    """Hooks oscar's refund events and adds the re-sync action to oscar's order admin.

    List it after ``django.contrib.admin`` (whose ``ready()`` registers oscar's admin, so the
    action can be added to it) and before ``oscar.config.Shop`` (so its dashboard template is
    found before oscar's).
    """

    name = "django_zinrelo.contrib.oscar"
    label = "django_zinrelo_oscar"  # "oscar" is oscar's own
    verbose_name = "Zinrelo for django-oscar"

    def ready(self) -> None:
        from django_zinrelo.contrib.oscar import refunds
        from django_zinrelo.contrib.oscar.checks import check_admin_action, check_settings

        refunds.connect()
        add_admin_action()
        checks.register(check_settings)
        checks.register(check_admin_action)


def order_admin() -> admin.ModelAdmin[Model] | None:
    """The ``ModelAdmin`` oscar (or a forked order app) registered for its ``Order``, if any."""
    from django_zinrelo.contrib.oscar.conf import oscar_model

    if not apps.is_installed("django.contrib.admin"):
        return None
    return admin.site._registry.get(oscar_model("Order"))


def add_admin_action() -> None:
    """Put the plain action in the registered admin's ``actions``: the shop keeps oscar's
    registration; the action refuses to run for staff without the permission."""
    from django_zinrelo.admin import resync_to_zinrelo
    from django_zinrelo.contrib.oscar.conf import get_oscar_settings

    model_admin = order_admin()
    if model_admin is None or not get_oscar_settings().admin_action:
        return
    actions = list(model_admin.actions or ())
    if resync_to_zinrelo not in actions:
        model_admin.actions = [*actions, resync_to_zinrelo]
