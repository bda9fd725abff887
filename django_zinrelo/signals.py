"""Signals a shop can connect to; both are sent after the award's new state is saved."""

from django.dispatch import Signal

award_delivered = Signal()
"""Zinrelo holds the award (``awarded`` or ``already_awarded``). Sent with ``award``."""

award_failed = Signal()
"""The award ended without points and will not be retried by itself. Sent with ``award``."""
