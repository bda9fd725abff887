from django.contrib import admin

from django_zinrelo.admin import ZinreloOrderAdminMixin
from tests.shop.models import Order


@admin.register(Order)
class OrderAdmin(ZinreloOrderAdminMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("number", "email", "status", "total")
    actions = ("mark_completed",)

    @admin.action(description="Mark as completed")
    def mark_completed(self, request, queryset):
        for order in queryset:
            order.status = "completed"
            order.save()
