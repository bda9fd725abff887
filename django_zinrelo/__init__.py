"""Zinrelo loyalty points for a Django shop's purchases: exactly once, off the checkout path."""

__version__ = "0.1.0"
