from django.contrib import admin

from django_zinrelo.admin import ZinreloOrderAdminMixin

from .models import Customer, Order, OrderLine, Product


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email"]
    search_fields = ["name", "email"]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "title", "price", "category"]
    search_fields = ["sku", "title"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    autocomplete_fields = ["product"]


@admin.register(Order)
class OrderAdmin(ZinreloOrderAdminMixin, admin.ModelAdmin):
    """The order admin every shop has, plus one mixin: the "Re-sync to Zinrelo" action."""

    list_display = ["number", "customer", "status", "placed_at"]
    list_filter = ["status"]
    search_fields = ["number", "customer__email"]
    list_select_related = ["customer"]
    autocomplete_fields = ["customer"]
    inlines = [OrderLineInline]
