"""Admin lists whose cost does not grow with the table: counts, pages and searches.

Django's changelist counts every matching row on each page (a quarter to most of a second at a
million awards on PostgreSQL) and lets staff page to the end with an ``OFFSET`` that reads every
row before it. Here a count is exact up to ``EXACT_UP_TO`` rows and the planner's estimate
above it (PostgreSQL; other databases say "more than"), a list that fits on its page is counted
from the rows shown, and only the first ``MAX_PAGES`` pages are offered: filters, a date range,
search and sorting reach the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from django.contrib.admin import display
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IncorrectLookupParameters, ModelAdmin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import F, Model, OrderBy, QuerySet, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

if TYPE_CHECKING:
    PaginatorBase = Paginator[Any]
    ListAdminBase = ModelAdmin[Any]
else:
    PaginatorBase = Paginator
    ListAdminBase = object

EXACT_UP_TO: Final = 1_000
MAX_PAGES: Final = 20
SORT_AFTER_UP_TO: Final = 50_000


@dataclass(frozen=True)
class Count:
    """How many rows match: exact, or at least ``value`` (``estimated`` by the planner or not)."""

    value: int
    exact: bool
    estimated: bool = False

    def __str__(self) -> str:
        if self.exact:
            return f"{self.value:,}"
        return f"about {self.value:,}" if self.estimated else f"more than {self.value - 1:,}"


def planner_rows(queryset: QuerySet[Any]) -> int | None:
    """The rows PostgreSQL's planner expects the query to return, without running it."""
    if connections[queryset.db].vendor != "postgresql":
        return None
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def bounded_count(queryset: QuerySet[Any], limit: int) -> int:
    """How many rows match, counting no further than ``limit``.

    The rows counted select a constant, so that an index holding the filtered columns answers
    alone (an index-only scan); Django's ``count()`` of a slice selects the primary key, which
    only the table has, or (for a constant) nothing at all, which SQLite refuses.
    """
    rows = queryset.order_by().values(one=Value(1))[:limit]
    sql, params = rows.query.get_compiler(using=queryset.db).as_sql()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({sql}) matched", params)  # noqa: S608
        (found,) = cursor.fetchone()
    return int(found)


def count(queryset: QuerySet[Any]) -> Count:
    """Exact while it is cheap to be (reading at most ``EXACT_UP_TO + 1`` rows), else estimated.

    The bounded count reads index entries until it has enough; the estimate costs a plan.
    """
    capped = bounded_count(queryset, EXACT_UP_TO + 1)
    if capped <= EXACT_UP_TO:
        return Count(capped, exact=True)
    estimate = planner_rows(queryset)
    if estimate is None:
        return Count(capped, exact=False)
    return Count(max(estimate, capped), exact=False, estimated=True)


class CountingPaginator(PaginatorBase):
    """Django's paginator with ``count`` from ``count()`` (or set from the page) and at most
    ``MAX_PAGES`` pages."""

    @cached_property
    def matched(self) -> Count:
        assert isinstance(self.object_list, QuerySet)
        return count(self.object_list)

    @cached_property
    def count(self) -> int:
        return self.matched.value

    @cached_property
    def num_pages(self) -> int:
        pages: int = Paginator.num_pages.func(self)  # type: ignore[attr-defined]
        return min(pages, MAX_PAGES)

    @property
    def limited(self) -> bool:
        """Whether more rows match than the pages offered show."""
        return self.count > MAX_PAGES * self.per_page


def unindexed(ordering: Any) -> OrderBy:
    """The same order, written so that no index can provide it (``COALESCE(x, x)``)."""
    if isinstance(ordering, OrderBy):
        return OrderBy(Coalesce(ordering.expression, ordering.expression), ordering.descending)
    name = ordering.lstrip("-")
    return OrderBy(Coalesce(F(name), F(name)), descending=ordering.startswith("-"))


class QuickChangeList(ChangeList):
    """The page's rows first, then a count only where they do not tell it.

    Reading one row past the page tells whether there is more; a list that fits on its page is
    counted from the rows shown, so the count and the rows come from one query and can never
    disagree (as "0 results" above a row delivered in between could, when a separate count ran
    first).
    """

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        """For a search with fewer than ``SORT_AFTER_UP_TO`` matches (by the planner's
        estimate), an order that no index gives, so that the matches are found through the
        search's indexes and then sorted.

        Otherwise PostgreSQL walks the sort's index and tests each row, expecting matches
        spread evenly, and reads most of the table when they sit together (an order-id prefix
        is a run of consecutive awards): 2.7 s instead of a few milliseconds at a million rows.
        """
        queryset = super().get_queryset(request, exclude_parameters)
        if not self.query:
            return queryset
        expected = planner_rows(queryset)
        if expected is None or expected > SORT_AFTER_UP_TO:
            return queryset
        return queryset.order_by(*(unindexed(item) for item in queryset.query.order_by))

    def get_ordering_field(self, field_name: Any) -> Any:
        """Only the columns offered for sorting (``sortable_by``): another one, asked for by a
        hand-made ``?o=`` URL, would sort a million rows by a column no index orders."""
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)

    def get_results(self, request: HttpRequest) -> None:
        per_page = self.list_per_page
        paginator = self.model_admin.get_paginator(request, self.queryset, per_page)
        assert isinstance(paginator, CountingPaginator)
        self.page_num = min(max(self.page_num, 1), MAX_PAGES)
        if self.show_all:
            per_page = self.list_max_show_all
            self.page_num = 1
        offset = (self.page_num - 1) * per_page
        rows: list[Model] = list(self.queryset[offset : offset + per_page + 1])
        if offset and not rows:
            raise IncorrectLookupParameters
        seen = offset + len(rows)
        if len(rows) <= per_page:
            paginator.matched = Count(seen, exact=True)
        elif paginator.matched.value < seen:  # a count without an estimate, capped below
            paginator.matched = Count(seen, exact=False)
        self.result_count = paginator.count
        self.full_result_count = None
        self.show_full_result_count = False
        self.show_admin_actions = True
        self.can_show_all = self.result_count <= self.list_max_show_all
        self.multi_page = self.result_count > self.list_per_page
        self.result_list = rows[:per_page]
        self.paginator = paginator


class QuickListAdmin(ListAdminBase):
    """For a ``ModelAdmin``: lists counted and paged as above, whatever its size."""

    paginator = CountingPaginator
    show_full_result_count = False
    # Rendering a row costs Django about half a millisecond: 100 rows alone would take the page
    # past 50 ms on a small server.
    list_per_page = 50

    @display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: Model) -> SafeString:
        """Django's row checkbox written directly: rendering its widget template for each row
        took a third of a list page's time."""
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="Select this object for an action - {}">',
            ACTION_CHECKBOX_NAME,
            obj.pk,
            obj,
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return QuickChangeList
