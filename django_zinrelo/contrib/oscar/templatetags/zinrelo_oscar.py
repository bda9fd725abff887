"""``{% zinrelo_award_panel order %}``: the order's award on oscar's dashboard order page."""

from __future__ import annotations

from typing import Any

from django import template

from django_zinrelo.admin import awards_of, can_resync
from django_zinrelo.models import DONE
from django_zinrelo.operations import ledger

register = template.Library()


@register.inclusion_tag("zinrelo_oscar/award_panel.html", takes_context=True)
def zinrelo_award_panel(context: dict[str, Any], order: Any) -> dict[str, Any]:
    request = context.get("request")
    awards = [
        {
            "award": award,
            "ledger": ledger(award) if award.status in DONE else None,
            "operations": list(award.operations.order_by("pk")),
        }
        for award in awards_of(order)
    ]
    return {
        "order": order,
        "awards": awards,
        "may_resync": request is not None and can_resync(request),
        "csrf_token": context.get("csrf_token"),
    }
