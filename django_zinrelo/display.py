"""Times as staff read them: to the second, in the current time zone, with how long ago."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html


def ago(moment: datetime, now: datetime | None = None) -> str:
    """How far ``moment`` is from now, as staff say it: "in 40 s", "3 min ago", "2 d ago"."""
    seconds = round(((now or timezone.now()) - moment).total_seconds())
    size = abs(seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= length:
            text = f"{size // length} {unit}"
            break
    else:
        text = f"{size} s"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def moment(value: datetime | None, *, relative: bool = True) -> str:
    """A time to the second in the current time zone, with how long ago it was."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    shown = format_html(
        '<time datetime="{}">{}</time>', local.isoformat(), local.strftime("%Y-%m-%d %H:%M:%S")
    )
    if not relative:
        return shown
    return format_html('{} <span class="quiet">({})</span>', shown, ago(value))
