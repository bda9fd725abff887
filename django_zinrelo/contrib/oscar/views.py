"""The dashboard's re-sync button: the admin action's work for one order, behind its permission."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from django_zinrelo.admin import can_resync
from django_zinrelo.conf import get_settings
from django_zinrelo.contrib.oscar.conf import oscar_model
from django_zinrelo.delivery import DISABLED, enabled
from django_zinrelo.models import Trigger
from django_zinrelo.sync import resync_orders


@require_POST
def resync(request: HttpRequest, number: str) -> HttpResponseRedirect:
    if not can_resync(request):
        raise PermissionDenied("You may not re-sync orders to Zinrelo.")
    order = get_object_or_404(oscar_model("Order"), number=number)
    if not enabled(get_settings()):
        messages.warning(request, DISABLED)
    else:
        with transaction.atomic():
            counts = resync_orders([order.pk], Trigger.ADMIN)
        done = [name.replace("_", " ") for name, count in sorted(counts.items()) if count]
        messages.success(request, f"Re-sync to Zinrelo: {', '.join(done) or 'nothing to do'}.")
    return HttpResponseRedirect(reverse("dashboard:order-detail", kwargs={"number": number}))
