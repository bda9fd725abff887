"""Zinrelo loyalty points for a Django shop's purchases: exactly once, off the checkout path."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["record_refund"]


def __getattr__(name: str) -> Any:
    """``django_zinrelo.record_refund``, imported on first use: the package itself must be
    importable before Django's app registry is ready (settings, ``INSTALLED_APPS``)."""
    if name == "record_refund":
        from django_zinrelo.operations import record_refund

        return record_refund
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
