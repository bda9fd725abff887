from __future__ import annotations

from django.apps import AppConfig, apps
from django.core import checks
from django.db.models import Model
from django.db.models.signals import post_init, post_save, pre_save


class ZinreloConfig(AppConfig):
    name = "django_zinrelo"
    verbose_name = "Zinrelo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_zinrelo.checks import check_settings
        from django_zinrelo.conf import get_settings
        from django_zinrelo.receivers import order_loaded, order_saved, order_saving, refund_saved

        checks.register(check_settings)
        conf = get_settings()
        order_model = model_or_none(conf.order_model)  # else reported by check E002
        if order_model is not None:
            # A proxy of the order model, or a subclass with its own table (multi-table
            # inheritance), saves a row of the order model's table: an order like any other.
            # Django sends post_save with the class saved through as sender, so each is
            # connected by name; saves of every other model never reach the receiver. Each
            # also notes the values its orders are loaded with, to skip saves that change
            # nothing the app looks at (see ``receivers``).
            for model in apps.get_models():
                if issubclass(model, order_model):
                    for signal, receiver in (
                        (post_init, order_loaded),
                        (pre_save, order_saving),
                        (post_save, order_saved),
                    ):
                        signal.connect(
                            receiver,
                            sender=model,
                            dispatch_uid=f"django_zinrelo.{receiver.__name__}",
                        )
        refund_model = model_or_none(conf.refund_model)
        if refund_model is not None:
            post_save.connect(
                refund_saved, sender=refund_model, dispatch_uid="django_zinrelo.refund_saved"
            )


def model_or_none(label: object) -> type[Model] | None:
    try:
        return apps.get_model(label) if isinstance(label, str) else None
    except (LookupError, ValueError):
        return None
