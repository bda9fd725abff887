"""Signals a shop can connect to; each is sent after the new state is saved."""

from django.dispatch import Signal

award_delivered = Signal()
"""Zinrelo holds the award (``awarded`` or ``already_awarded``). Sent with ``award``."""

award_failed = Signal()
"""The award ended without points and will not be retried by itself. Sent with ``award``."""

operation_delivered = Signal()
"""A cancellation, refund or approval is done (at Zinrelo, or locally when nothing had to be
sent). Sent with ``operation``."""

operation_failed = Signal()
"""A cancellation, refund or approval ended undone and will not be retried by itself, for example
a return refused because the customer already spent the points. Sent with ``operation``."""
