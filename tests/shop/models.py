import uuid

from django.db import models


class BaseOrder(models.Model):
    number = models.CharField(max_length=32, unique=True)
    email = models.CharField(max_length=254, blank=True)
    status = models.CharField(max_length=16, default="new")
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    subtotal = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    coupon_codes = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.number


class Order(BaseOrder):
    pass


class KeyedOrder(BaseOrder):
    """Orders keyed by a text of the shop's own, as long as it likes."""

    key = models.CharField(primary_key=True, max_length=300)


class UUIDOrder(BaseOrder):
    """Orders keyed by a UUID, which SQLite stores as 32 hex digits."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    title = models.CharField(max_length=200)
    quantity = models.IntegerField(default=1)
    unit_price = models.DecimalField(max_digits=12, decimal_places=3, null=True)
    category = models.CharField(max_length=100, blank=True)


class Refund(models.Model):
    """A refund as a shop records it: by amount, by lines, or (neither) the whole order."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="refunds")
    number = models.CharField(max_length=32, unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    status = models.CharField(max_length=16, default="requested")


class RefundedLine(models.Model):
    refund = models.ForeignKey(Refund, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    quantity = models.IntegerField()


class ProxyOrder(Order):
    """The same orders seen through another class, as a shop's back office often does."""

    class Meta:
        proxy = True


class GiftOrder(Order):
    """A kind of order with a table of its own (multi-table inheritance): still an order."""

    message = models.CharField(max_length=200, blank=True)
