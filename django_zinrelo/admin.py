"""The award log in the admin, and the re-sync action a shop adds to its own order admin.

The log is evidence of what was sent and what Zinrelo answered, so every page is read-only: nobody
adds, edits or deletes a row here. Staff act only through the actions, both behind the app's
permission ``django_zinrelo.resync_award``; they only queue work (see ``sync``) and the HTTP calls
happen after commit on the delivery path, never while the admin request is open.

The pages must stay fast with millions of rows: counts and pages as ``listing`` makes them, no
facet counts, no query per row, an index behind every filter, sort and search. Times are shown
to the second with how long ago they were; the health view sums the log up for staff.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.db import connections, router, transaction
from django.db.models import Field, Model, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from django_zinrelo import health
from django_zinrelo.conf import get_settings
from django_zinrelo.delivery import DISABLED, enabled
from django_zinrelo.display import ago, moment
from django_zinrelo.listing import QuickListAdmin
from django_zinrelo.models import (
    DONE,
    WAITING,
    Award,
    AwardAttempt,
    Operation,
    Status,
    SyncRun,
    Trigger,
)
from django_zinrelo.operations import ledger, resend_operations
from django_zinrelo.sync import CHUNK, resend, resync_orders

if TYPE_CHECKING:
    OperationAdminBase = admin.ModelAdmin[Operation]
    OperationInlineBase = admin.TabularInline[Operation, Award]
    AwardAdminBase = admin.ModelAdmin[Award]
    AttemptAdminBase = admin.ModelAdmin[AwardAttempt]
    AttemptInlineBase = admin.TabularInline[AwardAttempt, Award]
    OrderAdminBase = admin.ModelAdmin[Any]
    AttemptFormSetBase = BaseInlineFormSet[AwardAttempt, Award, Any]
else:
    AwardAdminBase = AttemptAdminBase = OrderAdminBase = OperationAdminBase = admin.ModelAdmin
    AttemptInlineBase = OperationInlineBase = admin.TabularInline
    AttemptFormSetBase = BaseInlineFormSet

PERMISSION: Final = "django_zinrelo.resync_award"
ATTEMPTS_SHOWN: Final = 50


def can_resync(request: HttpRequest) -> bool:
    return request.user.has_perm(PERMISSION)


def pretty(text: Any) -> SafeString:
    """JSON indented for reading, with its non-ASCII text as written; anything else verbatim."""
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError:
            return format_html("<pre>{}</pre>", text)
    return format_html("<pre>{}</pre>", json.dumps(text, indent=2, ensure_ascii=False))


def distinct_values(model: type[Model], field: Field[Any, Any]) -> list[Any]:
    """The distinct values of an indexed column, found by hopping from each to the next.

    Each hop is one probe of the column's index, so the cost grows with the number of distinct
    values, not with the table: a ``SELECT DISTINCT`` reads every row (a quarter of a second per
    filter with three million attempts on PostgreSQL), and would on every changelist page.
    """
    assert field.column
    connection = connections[router.db_for_read(model)]
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(field.column)
    # Names from the model's own metadata, quoted; nothing from the request.
    sql = (
        f"WITH RECURSIVE hop(value) AS (SELECT MIN({column}) FROM {table} UNION ALL "  # noqa: S608
        f"SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > hop.value) "
        "FROM hop WHERE hop.value IS NOT NULL) SELECT value FROM hop WHERE value IS NOT NULL"
    )
    if field.null:
        sql += f" UNION ALL SELECT NULL WHERE EXISTS (SELECT 1 FROM {table} WHERE {column} IS NULL)"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        found = [row[0] for row in cursor.fetchall()]
    values = sorted(value for value in found if value not in (None, ""))
    return [*values, None] if None in found else values


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """Django's filter by each value present, without reading the whole table on every page.

    Values are taken over the whole table, like Django's, since these admins narrow no queryset;
    the empty string is left out (nothing to click on).
    """

    def __init__(
        self,
        field: Field[Any, Any],
        request: HttpRequest,
        params: dict[str, list[str]],
        model: type[Model],
        model_admin: ModelAdmin[Any],
        field_path: str,
    ) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        self.lookup_choices = distinct_values(model, field)  # type: ignore[assignment]


class ReadOnly:
    """The log is evidence: shown to whoever may view it, never added to, edited or deleted."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def order_prefix(term: str, prefix: str = "") -> Q:
    """Order ids and member ids starting with ``term``, any case, each behind a prefix index."""
    return Q(**{f"{prefix}order_id__istartswith": term}) | Q(
        **{f"{prefix}member_id__istartswith": term}
    )


def sync_advice() -> str:
    """What a retrying award waits for, with when the command last ran."""
    run = SyncRun.objects.filter(name="zinrelo_sync").first()
    last = f"it last ran {ago(run.started_at)}" if run else "it has never run here"
    return (
        "Retries are sent by the zinrelo_sync command: schedule it every minute (cron or a "
        f"systemd timer), or this award never goes ({last})."
    )


class LatestAttempts(AttemptFormSetBase):
    """Only the newest attempts: an award retried for weeks must not render thousands of rows."""

    def get_queryset(self) -> QuerySet[AwardAttempt]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:ATTEMPTS_SHOWN]
        return self._latest


class AttemptInline(ReadOnly, AttemptInlineBase):
    model = AwardAttempt
    formset = LatestAttempts
    verbose_name_plural = f"latest attempts (newest first, up to {ATTEMPTS_SHOWN})"
    fields = (
        "when",
        "kind",
        "trigger",
        "outcome",
        "status_code",
        "error_code",
        "reason",
        "duration_ms",
    )
    readonly_fields = ("when",)
    ordering = ("-created_at", "-pk")
    extra = 0
    show_change_link = True

    @admin.display(description="time")
    def when(self, attempt: AwardAttempt) -> str:
        return moment(attempt.created_at)


class OperationInline(ReadOnly, OperationInlineBase):
    model = Operation
    fk_name = "award"
    verbose_name_plural = "cancellations, refunds and approvals (oldest first)"
    fields = (
        "created_at",
        "action",
        "refund_id",
        "product_id",
        "quantity",
        "amount",
        "status",
        "call",
        "points",
        "last_error_code",
        "last_reason",
    )
    readonly_fields = fields
    ordering = ("pk",)
    extra = 0
    show_change_link = True


@admin.register(Award)
class AwardAdmin(ReadOnly, QuickListAdmin, AwardAdminBase):
    list_display = (
        "order",
        "member_id",
        "status",
        "points",
        "attempts",
        "last_status_code",
        "last_error_code",
        "store",
        "updated",
    )
    list_filter = (
        "status",
        "created_at",
        ("last_status_code", IndexedValuesFilter),
        ("last_error_code", IndexedValuesFilter),
        ("activity_id", IndexedValuesFilter),
        ("store", IndexedValuesFilter),
    )
    sortable_by = ("order", "member_id", "updated")
    search_fields = ("order_id", "member_id", "order_pk")
    search_help_text = (
        "The start of an order id or a member id (any case), or an order's primary key."
    )
    show_facets = admin.ShowFacets.NEVER
    actions = ("resend_to_zinrelo",)
    inlines = (OperationInline, AttemptInline)
    readonly_fields = (
        "order_link",
        "ledger_shown",
        "status_shown",
        "calls",
        "next_attempt",
        "claimed",
        "payload_shown",
        "created",
        "updated",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Award | None = None) -> Any:
        """ "Next attempt" only while one is due, the claim only while a call is under way."""
        delivery: list[str] = ["status_shown", "attempts", "calls"]
        if obj is not None and obj.status in WAITING:
            delivery.append("next_attempt")
        if obj is not None and obj.status == Status.SENDING:
            delivery.append("claimed")
        delivery += ["last_status_code", "last_error_code", "last_reason"]
        return (
            (None, {"fields": ("order_link", "member_id", "activity_id", "store")}),
            ("Ledger", {"fields": ("ledger_shown",)}),
            ("Delivery", {"fields": delivery}),
            ("Zinrelo", {"fields": ("points", "points_status", "transaction_id")}),
            ("Sent", {"fields": ("payload_shown", "created", "updated")}),
        )

    def get_urls(self) -> list[URLPattern]:
        health = path(
            "health/",
            self.admin_site.admin_view(self.health_view),
            name="django_zinrelo_award_health",
        )
        return [health, *super().get_urls()]

    def health_view(self, request: HttpRequest) -> HttpResponse:
        """The log at a glance for staff who may view it (see ``health``)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Zinrelo health",
            "opts": self.model._meta,
            "health": health.gather(),
        }
        return TemplateResponse(request, "admin/django_zinrelo/health.html", context)

    @admin.display(description="order", ordering="order_id")
    def order(self, award: Award) -> str:
        return award.order_id or award.order_pk

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, award: Award) -> str:
        return moment(award.updated_at)

    @admin.display(description="created")
    def created(self, award: Award) -> str:
        return moment(award.created_at)

    @admin.display(description="next attempt")
    def next_attempt(self, award: Award) -> str:
        return moment(award.next_attempt_at)

    @admin.display(description="call under way until")
    def claimed(self, award: Award) -> str:
        return moment(award.claimed_until)

    @admin.display(description="status")
    def status_shown(self, award: Award) -> str:
        label = award.get_status_display()
        if award.status == Status.RETRYING:
            return format_html("{}<br>{}", label, sync_advice())
        return label

    @admin.display(description="order")
    def order_link(self, award: Award) -> str:
        """The order by its number, linked to the shop's own admin page when it has one."""
        app_label, _, model_name = award.order_model.partition(".")
        text = award.order_id or f"primary key {award.order_pk}"
        try:
            url = reverse(
                f"admin:{app_label}_{model_name}_change",
                args=[award.order_pk],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return text
        return format_html('<a href="{}">{}</a>', url, text)

    @admin.display(description="points")
    def ledger_shown(self, award: Award) -> str:
        """The order's points as one ledger: what the award earned and what came back."""
        if award.status not in DONE:
            return "No points: the award is not held by Zinrelo."
        book = ledger(award)
        if book.awarded is None:
            return "Zinrelo holds the award; it did not say how many points."
        return format_html(
            "awarded {} ({}) · rejected {} · returned {} · <strong>left {}</strong>",
            book.awarded,
            "pending" if book.pending and not book.taken_back else "approved",
            book.rejected,
            book.returned,
            book.left,
        )

    @admin.display(description="calls to Zinrelo")
    def calls(self, award: Award) -> str:
        """Every call ever made for the award: "attempts" restarts at 0 when it is re-sent."""
        url = reverse(
            "admin:django_zinrelo_awardattempt_changelist", current_app=self.admin_site.name
        )
        query = urlencode({"award__id__exact": award.pk})
        total = award.attempts_log.count()
        return format_html(
            '<a href="{}?{}">{} in all</a> (attempts counts those since it was recorded or '
            "last re-sent)",
            url,
            query,
            total,
        )

    @admin.display(description="payload")
    def payload_shown(self, award: Award) -> str:
        if award.payload is None:
            return "Not built yet: it is built from the order when the award is first sent."
        return pretty(award.payload)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Award], search_term: str
    ) -> tuple[QuerySet[Award], bool]:
        """Prefixes of order and member ids in any case, and an order's primary key exactly,
        each behind an index: a ``LIKE '%term%'`` reads the whole log.

        The order's primary key is matched with the configured order model, so the unique
        index (order model, order pk, activity) serves it.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        match = order_prefix(term)
        label = get_settings().order_model
        try:
            model = apps.get_model(label) if isinstance(label, str) else None
        except (LookupError, ValueError):
            model = None
        if model is not None:
            match |= Q(order_model=model._meta.label_lower, order_pk=term)
        return queryset.filter(match), False

    def has_resync_permission(self, request: HttpRequest) -> bool:
        return can_resync(request)

    @admin.action(description="Re-send to Zinrelo", permissions=["resync"])
    def resend_to_zinrelo(self, request: HttpRequest, queryset: QuerySet[Award]) -> None:
        """Only finally failed awards go again; the others are counted as skipped."""
        if not enabled(get_settings()):
            self.message_user(request, DISABLED, messages.WARNING)
            return
        selected = queryset.count()
        queued = resend(queryset, Trigger.ADMIN)
        skipped = selected - queued
        self.message_user(
            request,
            f"Queued {queued} award(s) that ended refused, invalid or failed to re-send to "
            f"Zinrelo; skipped {skipped} that had not ended so.",
            messages.SUCCESS if queued else messages.WARNING,
        )


@admin.register(AwardAttempt)
class AwardAttemptAdmin(ReadOnly, QuickListAdmin, AttemptAdminBase):
    list_display = (
        "created",
        "award_link",
        "kind",
        "trigger",
        "outcome",
        "status_code",
        "error_code",
        "duration_ms",
    )
    list_filter = (
        "kind",
        "outcome",
        ("status_code", IndexedValuesFilter),
        ("error_code", IndexedValuesFilter),
        "trigger",
        "created_at",
    )
    sortable_by = ("created",)
    list_select_related = ("award",)
    ordering = ("-created_at", "-pk")
    search_fields = ("award__order_id", "award__member_id")
    search_help_text = "The start of the award's order id or member id (any case)."
    show_facets = admin.ShowFacets.NEVER
    fields = (
        "award_link",
        "operation",
        "kind",
        "created",
        "trigger",
        "outcome",
        "status_code",
        "error_code",
        "reason",
        "duration_ms",
        "request_shown",
        "response_shown",
    )
    readonly_fields = ("award_link", "created", "request_shown", "response_shown")
    raw_id_fields = ("operation",)

    @admin.display(description="time", ordering="created_at")
    def created(self, attempt: AwardAttempt) -> str:
        return moment(attempt.created_at)

    @admin.display(description="order")
    def award_link(self, attempt: AwardAttempt) -> str:
        url = reverse(
            "admin:django_zinrelo_award_change",
            args=[attempt.award_id],
            current_app=self.admin_site.name,
        )
        award = attempt.award
        return format_html('<a href="{}">{}</a>', url, award.order_id or award.order_pk)

    @admin.display(description="request sent")
    def request_shown(self, attempt: AwardAttempt) -> str:
        return pretty(attempt.request_body)

    @admin.display(description="response received")
    def response_shown(self, attempt: AwardAttempt) -> str:
        return pretty(attempt.response_body) if attempt.response_body else "-"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AwardAttempt], search_term: str
    ) -> tuple[QuerySet[AwardAttempt], bool]:
        """The attempts of awards whose order or member id starts with the term, any case."""
        term = search_term.strip()
        if not term:
            return queryset, False
        awards = Award.objects.filter(order_prefix(term)).values("pk")
        return queryset.filter(award__in=awards), False


@admin.register(Operation)
class OperationAdmin(ReadOnly, QuickListAdmin, OperationAdminBase):
    """Cancellations, refunds and approvals: read-only evidence, re-sent only by the action."""

    list_display = (
        "created_at",
        "order",
        "action",
        "refund_id",
        "status",
        "call",
        "points",
        "last_error_code",
    )
    list_filter = ("status", "action", "call")
    list_select_related = ("award",)
    sortable_by = ("created_at",)
    ordering = ("-created_at", "-pk")
    search_fields = ("refund_id",)
    search_help_text = "Exact refund id."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ("resend_operations_to_zinrelo",)
    exclude = ("payload", "claim")
    readonly_fields = ("sent_shown",)

    @admin.display(description="order")
    def order(self, operation: Operation) -> str:
        award = operation.award
        return (award.order_id if award else "") or operation.order_pk

    @admin.display(description="last body sent")
    def sent_shown(self, operation: Operation) -> str:
        return "-" if operation.payload is None else pretty(operation.payload)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Operation], search_term: str
    ) -> tuple[QuerySet[Operation], bool]:
        term = search_term.strip()
        return (queryset.filter(refund_id=term) if term else queryset), False

    def has_resync_permission(self, request: HttpRequest) -> bool:
        return can_resync(request)

    @admin.action(description="Re-send to Zinrelo", permissions=["resync"])
    def resend_operations_to_zinrelo(
        self, request: HttpRequest, queryset: QuerySet[Operation]
    ) -> None:
        """Only operations that ended undone go again; one whose call may have arrived is
        looked up at Zinrelo before anything is sent."""
        if not enabled(get_settings()):
            self.message_user(request, DISABLED, messages.WARNING)
            return
        selected = queryset.count()
        queued = resend_operations(queryset, Trigger.ADMIN)
        self.message_user(
            request,
            f"Queued {queued} operation(s) that ended refused, invalid or failed to re-send to "
            f"Zinrelo; skipped {selected - queued} that had not ended so.",
            messages.SUCCESS if queued else messages.WARNING,
        )


RESYNC_DESCRIPTION: Final = "Re-sync to Zinrelo"


def resync_selected(
    modeladmin: OrderAdminBase, request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    """Bring the selected orders to Zinrelo, for whoever has the permission, and say what was done.

    Only primary keys are read and awards queued, so selecting thousands of orders returns
    quickly; the calls to Zinrelo happen after commit on the delivery path.
    """
    if not can_resync(request):
        modeladmin.message_user(
            request, "You do not have permission to re-sync orders to Zinrelo.", messages.ERROR
        )
        return
    if not enabled(get_settings()):
        modeladmin.message_user(request, DISABLED, messages.WARNING)
        return
    # In primary key order, as every other path takes its locks: two re-syncs of overlapping
    # selections then wait for each other rather than deadlock.
    pks = queryset.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=CHUNK)
    with transaction.atomic():
        counts = resync_orders(pks, Trigger.ADMIN)
    modeladmin.message_user(
        request,
        f"Re-sync to Zinrelo: {counts['recorded']} recorded, {counts['resent']} re-sent, "
        f"{counts['already_awarded']} already awarded (not sent again), "
        f"{counts['in_progress']} in progress, {counts['not_qualifying']} not qualifying.",
        messages.SUCCESS,
    )


@admin.action(description=RESYNC_DESCRIPTION)
def resync_to_zinrelo(
    modeladmin: OrderAdminBase, request: HttpRequest, queryset: QuerySet[Any]
) -> None:
    """The action for any order ``ModelAdmin``'s ``actions``, without the mixin.

    Every staff member who sees the orders sees it; it refuses to run for those without the
    permission. ``ZinreloOrderAdminMixin`` also hides it from them.
    """
    resync_selected(modeladmin, request, queryset)


def awards_of(order: Model) -> QuerySet[Award]:
    """The order's awards, found through the unique index (order model, order pk, activity)."""
    return Award.objects.filter(order_model=order._meta.label_lower, order_pk=str(order.pk))


class ZinreloOrderAdminMixin(OrderAdminBase):
    """Put first in the bases of the shop's order ``ModelAdmin`` for a "Re-sync to Zinrelo" action
    and the order's award on its page.

    The action is added to whatever ``actions`` the shop declares, and shown only to users with
    the ``django_zinrelo.resync_award`` permission; Django refuses it to anyone else. The award
    (status, points, last error, a link to it) is a read-only "Zinrelo" section of the order's
    page, unless the shop places the ``zinrelo_award`` field itself.
    """

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if "zinrelo_award" in fields else (*fields, "zinrelo_award")

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        placed = [
            *(self.fields or ()),
            *(name for _, o in self.fieldsets or () for name in o["fields"]),
        ]
        if "zinrelo_award" in placed:
            return fieldsets
        without = [
            (name, {**options, "fields": [f for f in options["fields"] if f != "zinrelo_award"]})
            for name, options in fieldsets
        ]
        return without if obj is None else [*without, ("Zinrelo", {"fields": ["zinrelo_award"]})]

    @admin.display(description="award")
    def zinrelo_award(self, order: Model) -> str:
        rows = [
            format_html(
                '<a href="{}">{}</a>: {}{}{}',
                reverse(
                    "admin:django_zinrelo_award_change",
                    args=[award.pk],
                    current_app=self.admin_site.name,
                ),
                award.activity_id,
                award.get_status_display(),
                f", {award.points} points" if award.points is not None else "",
                format_html(" ({}: {})", award.last_error_code, award.last_reason)
                if award.last_error_code
                else "",
            )
            for award in awards_of(order)
        ]
        if not rows:
            return "No award recorded for this order."
        return format_html("{}", SafeString("<br>".join(rows)))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.actions is not None:
            names = {getattr(action, "__name__", action) for action in self.actions}
            if "resync_to_zinrelo" not in names:
                self.actions = [*self.actions, "resync_to_zinrelo"]

    def has_resync_permission(self, request: HttpRequest) -> bool:
        return can_resync(request)

    @admin.action(description=RESYNC_DESCRIPTION, permissions=["resync"])
    def resync_to_zinrelo(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        resync_selected(self, request, queryset)
