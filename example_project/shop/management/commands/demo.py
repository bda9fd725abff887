"""``manage.py demo``: the whole award flow in a few seconds, on this machine alone.

It migrates the SQLite database, starts the Zinrelo sandbox in this process, places sample orders
through their ordinary ``save()``, lets the app deliver them (one refused by Zinrelo, one retried
after an outage, one that cannot be sent), cancels one and refunds part of another, and prints the
award log with the points each order keeps.

The demo owns the orders numbered ``DEMO-…``: each run deletes them and their awards and places
them again, so every run starts from the same state and the sandbox (which forgets everything when
it stops) never sees an order id twice. Whatever else is in the database is left alone.
"""

import logging
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

import django_zinrelo
from django_zinrelo.adapters import RefundLine
from django_zinrelo.models import DONE, Award
from django_zinrelo.operations import ledger
from django_zinrelo.sandbox import ZinreloSandbox
from django_zinrelo.sync import deliver_due
from shop.models import Customer, Order, Product

PREFIX = "DEMO-"
BACKOFF_BASE = 1.0  # seconds: the first retry comes within a second instead of 15 to 30

CUSTOMERS = {
    "jane": ("Jane Cooper", "jane@example.com"),
    "omar": ("Omar Haddad", "omar@example.com"),
    "li": ("Li Wei", "li@example.com"),
    "ana": ("Ana Souza", "ana@example.com"),
    "blocked": ("Blocked Member", "blocked@example.com"),
    "phone": ("Phone order, no email", ""),
}
PRODUCTS = {
    "TEE": ("Organic tee", "19.00", "apparel"),
    "HOODIE": ("Zip hoodie", "54.00", "apparel"),
    "MUG": ("Enamel mug", "12.50", "kitchen"),
    "BEANS": ("Coffee beans 1 kg", "31.90", "kitchen"),
}
# number, customer, lines (sku, quantity), coupon, what happens
ORDERS = [
    ("1001", "jane", [("HOODIE", 1), ("TEE", 2)], "SPRING10", "awarded"),
    ("1002", "omar", [("BEANS", 1)], "", "awarded"),
    ("1003", "li", [("MUG", 2), ("TEE", 1)], "", "awarded"),
    ("1004", "blocked", [("TEE", 1)], "", "refused by Zinrelo: the member is blocked"),
    ("1005", "ana", [("BEANS", 2)], "", "Zinrelo is down (HTTP 503): will be retried"),
    ("1006", "phone", [("MUG", 1)], "", "invalid: no email to award, so no call"),
    ("1007", "jane", [("TEE", 1)], "", "awarded, then cancelled: its points are taken back"),
    ("1008", "omar", [("MUG", 2), ("BEANS", 1)], "", "awarded, then one mug is refunded"),
]
CANCELLED = "1007"
REFUNDED = ("1008", "MUG", 1)
COLUMNS = [
    "order",
    "member",
    "status",
    "points",
    "left",
    "attempts",
    "calls",
    "last code",
    "reason",
]


class Command(BaseCommand):
    help = "Run the example shop's award flow against an in-process Zinrelo sandbox."

    def handle(self, *args, verbosity=1, **options):
        started = time.monotonic()
        library_logs = logging.getLogger("django_zinrelo")
        level = library_logs.level
        if verbosity < 2:  # the table below says it all; -v 2 shows the log lines too
            library_logs.setLevel(logging.CRITICAL)
        try:
            self.run()
        finally:
            library_logs.setLevel(level)
        self.say(f"\nDone in {time.monotonic() - started:.1f}s.")
        self.look_around()

    def say(self, text=""):
        self.stdout.write(text)

    def run(self):
        self.say("django-zinrelo demo: a shop's paid orders earn Zinrelo points.")
        self.say()
        call_command("migrate", interactive=False, verbosity=0)
        self.say(f"Database: {shorter(Path(settings.DATABASES['default']['NAME']))} (migrated)")
        self.make_superuser()
        self.reset_demo_orders()
        with ZinreloSandbox() as zinrelo, ZinreloSandbox(faults={"503": 1.0}) as outage:
            self.say(
                f"Zinrelo sandbox: {zinrelo.url} (in this process: nothing leaves this machine)"
            )
            live = {
                **settings.ZINRELO,
                "API_URL": zinrelo.url,
                "PARTNER_ID": zinrelo.partner_id,
                "API_KEY": zinrelo.api_key,
                "DELIVERY": "immediate",  # send in this thread right after commit, for the demo
                "BACKOFF_BASE": BACKOFF_BASE,
            }
            with override_settings(ZINRELO=live):
                self.place_orders(outage)
                self.retry_when_due()
                self.cancel_and_refund()
        self.print_log()

    def make_superuser(self):
        users = get_user_model()._default_manager
        if users.filter(username="admin").exists():
            self.say("Superuser: admin (already there; the demo leaves its password alone)")
        else:
            users.create_superuser("admin", "admin@example.com", "admin")
            self.say("Superuser: admin / admin (created)")

    def reset_demo_orders(self):
        orders = Order.objects.filter(number__startswith=PREFIX)
        pks = [str(pk) for pk in orders.values_list("pk", flat=True)]
        Award.objects.filter(order_model=Order._meta.label_lower, order_pk__in=pks).delete()
        orders.delete()
        for name, email in CUSTOMERS.values():
            Customer.objects.update_or_create(name=name, defaults={"email": email})
        for sku, (title, price, category) in PRODUCTS.items():
            Product.objects.update_or_create(
                sku=sku, defaults={"title": title, "price": Decimal(price), "category": category}
            )

    def place_orders(self, outage):
        self.say("\nPlacing orders: each is saved as paid in one transaction with its lines; the")
        self.say("award is recorded in that transaction and sent to Zinrelo after commit.")
        for number, customer_key, lines, coupon, story in ORDERS:
            url = outage.url if "503" in story else settings.ZINRELO["API_URL"]
            with override_settings(ZINRELO={**settings.ZINRELO, "API_URL": url}):
                order = self.checkout(PREFIX + number, customer_key, lines, coupon)
            self.say(f"  {order.number}  {order.subtotal():>7}  {story}")

    def checkout(self, number, customer_key, lines, coupon):
        with transaction.atomic():
            order = Order.objects.create(
                number=number,
                customer=Customer.objects.get(name=CUSTOMERS[customer_key][0]),
                status=Order.Status.PAID,
                shipping=Decimal("4.90"),
                coupon_code=coupon,
            )
            for sku, quantity in lines:
                product = Product.objects.get(sku=sku)
                order.lines.create(product=product, quantity=quantity, unit_price=product.price)
        return order

    def cancel_and_refund(self):
        self.say("\nAfter the sale: the shop cancels one order and refunds a mug of another, each")
        self.say("in its own transaction; the app sends them to Zinrelo after commit.")
        with transaction.atomic():
            order = Order.objects.get(number=PREFIX + CANCELLED)
            order.status = Order.Status.CANCELLED
            order.save()
        self.say(f"  {order.number}  cancelled: all its points are returned")
        number, sku, quantity = REFUNDED
        with transaction.atomic():
            order = Order.objects.get(number=PREFIX + number)
            django_zinrelo.record_refund(
                order, f"{PREFIX}R-{number}", lines=[RefundLine(sku, quantity)]
            )
        self.say(f"  {order.number}  refund of {quantity} {sku}: that line's share is returned")

    def demo_awards(self):
        numbers = dict(Order.objects.filter(number__startswith=PREFIX).values_list("pk", "number"))
        awards = Award.objects.filter(
            order_model=Order._meta.label_lower, order_pk__in=[str(pk) for pk in numbers]
        )
        return awards, {str(pk): number for pk, number in numbers.items()}

    def retry_when_due(self):
        waiting = self.demo_awards()[0].filter(status="retrying")
        due_at = max(waiting.values_list("next_attempt_at", flat=True), default=None)
        if due_at is None:
            return
        pause = max(0.0, (due_at - timezone.now()).total_seconds())
        self.say(f"\nZinrelo is back. Waiting {pause:.1f}s for the retry's backoff, then")
        self.say("running what `manage.py zinrelo_sync` runs from cron: deliver_due().")
        time.sleep(pause)
        counts = deliver_due()
        self.say("Delivered: " + ", ".join(f"{n} {status}" for status, n in counts.items()))

    def print_log(self):
        awards, numbers = self.demo_awards()
        rows = [
            [
                numbers[award.order_pk],
                award.member_id or "-",
                award.status,
                "-" if award.points is None else str(award.points),
                points_left(award),
                str(award.attempts),
                ", ".join(
                    str(call.status_code or call.error_code)
                    for call in sorted(award.attempts_log.all(), key=lambda call: call.pk)
                )
                or "none",
                award.last_error_code or "-",
                award.last_reason or "-",
            ]
            for award in awards.prefetch_related("attempts_log")
        ]
        rows.sort()
        widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        numeric = {"points", "left", "attempts"}

        def line(cells):
            return "  ".join(
                cell.rjust(width) if name in numeric else cell.ljust(width)
                for name, cell, width in zip(COLUMNS, cells, widths, strict=True)
            ).rstrip()

        self.say(f"\nAward log ({len(rows)} awards, as the admin shows them):\n")
        self.say(line(COLUMNS))
        self.say(line(["-" * width for width in widths[:-1]] + ["-" * len(COLUMNS[-1])]))
        for row in rows:
            self.say(line(row))

    def look_around(self):
        python = shorter(Path(sys.executable))
        manage = shorter(Path(settings.BASE_DIR) / "manage.py")
        self.say(
            "\nLook around in the admin (award log, attempts, the orders' Re-sync to Zinrelo "
            "action):\n\n"
            f"  {python} {manage} runserver\n\n"
            "then open http://127.0.0.1:8000/admin/ and log in as admin / admin.\n\n"
            "The demo's sandbox stopped with it. For the running site to reach Zinrelo (new paid "
            "orders,\nre-syncs), keep one running in another terminal:\n\n"
            f"  {python} {manage} zinrelo_sandbox"
        )


def points_left(award):
    """What the member keeps for the order, after cancellations and refunds."""
    if award.status not in DONE:
        return "-"
    left = ledger(award).left
    return "-" if left is None else str(left)


def shorter(path):
    """The path as the reader would type it from here: relative when under this directory."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative
