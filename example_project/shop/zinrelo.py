"""How this shop's orders map to a Zinrelo award: the one class a shop writes."""

from django_zinrelo.adapters import OrderAdapter, Product


class ShopAdapter(OrderAdapter):
    # Paid orders earn points (and shipped ones, for orders the save hook missed).
    qualifying_statuses = ("paid", "shipped")
    # Cancelling an order takes its points back (or stops an award not sent yet).
    cancelled_statuses = ("cancelled",)
    # Where the storefront shows its products; Zinrelo links each product to its page.
    site_url = "https://shop.example.com"

    def order_id(self, order):
        return order.number

    def member_id(self, order):
        return order.customer.email or None

    def order_subtotal(self, order):
        return order.subtotal()

    def order_total(self, order):
        return order.subtotal() + order.shipping

    def coupons(self, order):
        return [order.coupon_code] if order.coupon_code else []

    def tags(self, order):
        return ["web"]

    def products(self, order):
        for line in order.lines.select_related("product"):
            yield Product(
                id=line.product.sku,
                quantity=line.quantity,
                price=line.unit_price,
                title=line.product.title,
                url=f"{self.site_url}/products/{line.product.sku}/",
                category=line.product.category or None,
            )
