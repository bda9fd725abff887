"""Unit prices that add up, to the cent, to what a line cost after discounts.

Oscar keeps each line's discounted total (``line_price_excl_tax``); its ``unit_price_*`` are before
discounts. Zinrelo wants a unit price after discounts. A line of 3 for 10.00 has no such price in
cents, so it is sent as two products: 2 at 3.33 and 1 at 3.34. The parts keep the line's order:
the units at the lower price first, so a refund of units maps onto them the same way each time.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple


class Part(NamedTuple):
    quantity: int
    price: Decimal


def split(total: Decimal, quantity: int) -> list[Part]:
    """At most two parts whose ``quantity * price`` add up to ``total`` exactly, prices a unit of
    the total's last decimal apart (a cent for amounts in cents)."""
    if quantity <= 0:
        raise ValueError(f"A line has quantity {quantity}: there is no unit price to send.")
    exponent = min(int(total.as_tuple().exponent), 0)
    step = Decimal(1).scaleb(exponent)
    units = int(total.scaleb(-exponent))
    base, extra = divmod(units, quantity)
    parts = [Part(quantity - extra, base * step), Part(extra, (base + 1) * step)]
    return [part for part in parts if part.quantity]


def spread(parts: list[Part], start: int, count: int) -> list[int]:
    """How many of units ``[start, start + count)`` of a line fall in each of its parts."""
    taken, end, low = [], start + count, 0
    for part in parts:
        high = low + part.quantity
        taken.append(max(0, min(end, high) - max(start, low)))
        low = high
    return taken
