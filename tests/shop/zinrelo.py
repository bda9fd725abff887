from django_zinrelo.adapters import OrderAdapter, Product, RefundAdapter, RefundLine


class ShopAdapter(OrderAdapter):
    qualifying_statuses = ("paid", "completed")
    cancelled_statuses = ("cancelled",)
    approving_statuses = ("shipped",)

    def order_id(self, order):
        return order.number

    def coupons(self, order):
        return order.coupon_codes.split(",") if order.coupon_codes else []

    def tags(self, order):
        return ["web"]

    def prefetch(self, orders):
        return orders.prefetch_related("lines")

    def products(self, order):
        for line in order.lines.all():
            yield Product(
                id=line.sku,
                quantity=line.quantity,
                price=line.unit_price,
                title=line.title,
                category=line.category or None,
            )


class ShopRefundAdapter(RefundAdapter):
    applying_statuses = ("completed",)

    def refund_id(self, refund):
        return refund.number

    def lines(self, refund):
        return [RefundLine(line.sku, line.quantity) for line in refund.lines.all()]
