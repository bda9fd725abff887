"""The award body is the documented v2 shape; what Zinrelo would refuse is stopped with a reason."""

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest

from django_zinrelo.adapters import OrderAdapter, Product
from django_zinrelo.payloads import InvalidOrder, build_payload


class Adapter(OrderAdapter):
    def order_id(self, order):
        return order.number

    def products(self, order):
        return order.products

    def coupons(self, order):
        return order.coupons

    def tags(self, order):
        return order.tags

    def reason(self, order):
        return "purchase"

    def approval_date(self, order):
        return order.approval


def order(**changes):
    fields = {
        "pk": 7,
        "number": "A-75",
        "email": "jane@example.com",
        "total": Decimal("1010.50"),
        "subtotal": Decimal("1000.00"),
        "created_at": datetime(2019, 10, 5, 23, 10, 55, tzinfo=UTC),
        "products": [
            Product(
                id="112", quantity=1, price=Decimal("15"), title="Sweatshirt", category="tshirt"
            ),
            Product(
                id=980,
                quantity=2,
                price=Decimal("10.017"),
                title="Pant",
                image_url="https://x/p.png",
            ),
        ],
        "coupons": ["SPRING5", "FREESHIP"],
        "tags": "web",
        "approval": None,
    }
    return SimpleNamespace(**{**fields, **changes})


def build(**changes):
    return build_payload(Adapter(), order(**changes), "made_a_purchase")


def reason_for(**changes):
    with pytest.raises(InvalidOrder) as caught:
        build(**changes)
    return caught.value.reason


def test_the_documented_v2_shape():
    assert build() == {
        "member_id": "jane@example.com",
        "activity_id": "made_a_purchase",
        "transaction_date": "10/05/2019 23:10:55",
        "transaction_attributes": {
            "order_id": "A-75",
            "order_total": "1010.50",
            "order_subtotal": "1000.00",
            "coupons": "SPRING5,FREESHIP",
            "tags": ["web"],
            "reason": "purchase",
            "products": [
                {
                    "product_id": "112",
                    "product_quantity": "1",
                    "product_price": "15",
                    "product_title": "Sweatshirt",
                    "product_category": ["tshirt"],
                },
                {
                    "product_id": "980",
                    "product_quantity": "2",
                    "product_price": "10.017",
                    "product_title": "Pant",
                    "product_image_url": "https://x/p.png",
                },
            ],
        },
    }


def test_money_keeps_the_precision_the_shop_stores_and_never_uses_exponents():
    attributes = build(total=Decimal("1E+2"), subtotal=Decimal("0.10"))["transaction_attributes"]
    assert (attributes["order_total"], attributes["order_subtotal"]) == ("100", "0.10")
    assert json.dumps(build(total=Decimal("0.30"))).count('"0.30"') == 1


def test_integer_and_string_amounts_are_accepted_as_exact_decimals():
    attributes = build(total=12, subtotal="10.005")["transaction_attributes"]
    assert (attributes["order_total"], attributes["order_subtotal"]) == ("12", "10.005")


def test_dates_go_as_utc_mm_dd_yyyy():
    paris = timezone(timedelta(hours=2))
    payload = build(
        created_at=datetime(2024, 7, 1, 1, 30, 0, tzinfo=paris),
        approval=datetime(2024, 7, 31, 12, 0, 0, tzinfo=UTC),
    )
    assert payload["transaction_date"] == "06/30/2024 23:30:00"
    assert payload["approval_date"] == "07/31/2024 12:00:00"


def test_naive_dates_are_read_in_the_project_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    assert build(created_at=datetime(2024, 1, 15, 10, 0, 0))["transaction_date"] == (
        "01/15/2024 09:00:00"
    )


def test_without_products_zinrelo_uses_the_subtotal():
    assert "products" not in build(products=[])["transaction_attributes"]


def test_a_thousand_lines_and_non_ascii_titles():
    lines = [
        Product(id=i, quantity=1, price=Decimal("1.10"), title=f"Café crème № {i} 🍰")
        for i in range(1000)
    ]
    products = build(products=lines)["transaction_attributes"]["products"]
    assert len(products) == 1000
    assert products[999]["product_title"] == "Café crème № 999 🍰"


def test_control_characters_and_lone_surrogates_are_removed():
    lines = [
        Product(id="1", quantity=1, price=Decimal("2"), title="Mug\x00 with\x07 tab\tand \ud800")
    ]
    title = build(products=lines)["transaction_attributes"]["products"][0]["product_title"]
    assert title == "Mug with tab\tand ?"
    title.encode("utf-8")


@pytest.mark.parametrize("email", [None, "", "   ", "\x00"])
def test_an_order_with_no_customer_is_not_sent(email):
    assert "no customer identifier" in reason_for(email=email)


@pytest.mark.parametrize("subtotal", [Decimal("0"), Decimal("0.01"), Decimal("0.00")])
def test_subtotal_must_be_greater_than_one_cent(subtotal):
    assert "greater than 0.01" in reason_for(subtotal=subtotal)


def test_a_subtotal_just_above_one_cent_is_sent():
    assert build(subtotal=Decimal("0.02"))["transaction_attributes"]["order_subtotal"] == "0.02"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"total": Decimal("-1.00")}, "order total is negative"),
        ({"subtotal": Decimal("-5")}, "order subtotal is negative"),
        ({"total": None}, "order total is missing"),
        ({"total": 10.5}, "is a float"),
        ({"total": Decimal("NaN")}, "not a finite number"),
        ({"total": Decimal("Infinity")}, "not a finite number"),
        ({"total": "ten"}, "not a number"),
        ({"total": True}, "not an amount"),
        ({"total": Decimal("1E+20")}, "implausibly large"),
        ({"total": Decimal("1.0000000000001")}, "decimal places"),
        ({"number": ""}, "order id is missing"),
        ({"approval": "2024-01-01"}, "approval date must be a datetime"),
    ],
)
def test_odd_totals_and_fields_give_a_plain_reason(changes, words):
    assert words in reason_for(**changes)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (
            Product(id=None, quantity=1, price=Decimal(1), title="T"),
            "product id of line 1 is missing",
        ),
        (Product(id="1", quantity=1, price=None, title="T"), "price of line 1 is missing"),
        (Product(id="1", quantity=1, price=Decimal(1), title=""), "title of line 1 is missing"),
        (Product(id="1", quantity=None, price=Decimal(1), title="T"), "quantity of line 1"),
        (Product(id="1", quantity=0, price=Decimal(1), title="T"), "above zero"),
        (Product(id="1", quantity=1.5, price=Decimal(1), title="T"), "whole number"),
        (Product(id="1", quantity=Decimal("1.5"), price=Decimal(1), title="T"), "whole number"),
        (
            Product(id="1", quantity=1, price=Decimal("-2"), title="T"),
            "price of line 1 is negative",
        ),
        ({"product_id": "1"}, "must yield django_zinrelo.adapters.Product"),
    ],
)
def test_a_line_missing_a_mandatory_field_is_not_sent(line, words):
    assert words in reason_for(products=[line])


def test_an_adapter_that_crashes_gives_a_reason_naming_the_method():
    class Broken(Adapter):
        def products(self, order):
            raise AttributeError("'Order' object has no attribute 'lines'")

    with pytest.raises(InvalidOrder) as caught:
        build_payload(Broken(), order(), "made_a_purchase")
    assert caught.value.reason == (
        "The order adapter's products() raised AttributeError: "
        "'Order' object has no attribute 'lines'"
    )


def test_member_id_falls_back_to_the_user_email():
    built = build(email=None, user=SimpleNamespace(email="u@example.com"))
    assert built["member_id"] == "u@example.com"


def test_default_transaction_date_is_now_when_the_order_has_no_date_field():
    before = datetime.now(UTC).replace(microsecond=0)
    sent = datetime.strptime(build(created_at=None)["transaction_date"], "%m/%d/%Y %H:%M:%S")
    assert sent.replace(tzinfo=UTC) >= before


def test_a_product_s_page_tags_and_categories_are_sent_under_their_v2_names():
    line = Product(
        id="1234df",
        quantity=1,
        price=Decimal("26.95"),
        title="Stress Free Emotions",
        url="https://shop.example.com/p/1234df/",
        category=["Medicines", "Wellness"],
        tags=["medicines", "capsules"],
        image_url="https://shop.example.com/p/1234df.png",
    )
    assert build(products=[line])["transaction_attributes"]["products"] == [
        {
            "product_id": "1234df",
            "product_quantity": "1",
            "product_price": "26.95",
            "product_title": "Stress Free Emotions",
            "product_url": "https://shop.example.com/p/1234df/",
            "product_image_url": "https://shop.example.com/p/1234df.png",
            "product_category": ["Medicines", "Wellness"],
            "product_tags": ["medicines", "capsules"],
        }
    ]


def test_one_category_or_tag_string_is_one_item_and_blank_ones_are_left_out():
    line = Product(
        id="1", quantity=1, price=Decimal(2), title="T", url="  ", category="tshirt", tags=""
    )
    [sent] = build(products=[line])["transaction_attributes"]["products"]
    assert sent["product_category"] == ["tshirt"]
    assert {"product_url", "product_tags", "product_image_url"}.isdisjoint(sent)


class Priced(Adapter):
    def currency(self, order):
        return order.currency


@pytest.mark.parametrize(("given", "sent"), [("EUR", "EUR"), (" usd ", "USD")])
def test_the_currency_is_sent_when_the_adapter_gives_one(given, sent):
    built = build_payload(Priced(), order(currency=given), "made_a_purchase")
    assert built["transaction_attributes"]["currency"] == sent


def test_no_currency_is_sent_by_default():
    assert "currency" not in build()["transaction_attributes"]


@pytest.mark.parametrize("given", ["US Dollar", "€", "", "US"])
def test_a_currency_that_is_not_an_iso_code_gives_a_reason(given):
    with pytest.raises(InvalidOrder) as caught:
        build_payload(Priced(), order(currency=given), "made_a_purchase")
    assert "three-letter ISO 4217 code" in caught.value.reason


class ByWeight(Adapter):
    fractional_quantities = True


def weighed(quantity):
    line = Product(id="CHEESE", quantity=quantity, price=Decimal("24.00"), title="Comté")
    return build_payload(ByWeight(), order(products=[line]), "made_a_purchase")


def test_quantities_are_whole_numbers_unless_the_adapter_sells_by_weight():
    line = Product(id="CHEESE", quantity=Decimal("0.750"), price=Decimal("24.00"), title="Comté")
    assert "fractional_quantities = True" in reason_for(products=[line])
    [sent] = weighed(Decimal("0.750"))["transaction_attributes"]["products"]
    assert sent["product_quantity"] == "0.750"
    assert weighed(3)["transaction_attributes"]["products"][0]["product_quantity"] == "3"


@pytest.mark.parametrize(
    ("quantity", "words"),
    [(0.75, "is a float"), (Decimal("0"), "above zero"), (Decimal("-1.5"), "negative")],
)
def test_a_fractional_quantity_must_be_an_exact_amount_above_zero(quantity, words):
    with pytest.raises(InvalidOrder) as caught:
        weighed(quantity)
    assert words in caught.value.reason


def test_coupons_are_joined_with_the_adapter_s_separator():
    class Spaced(Adapter):
        coupon_separator = " "

    built = build_payload(Spaced(), order(), "made_a_purchase")
    assert built["transaction_attributes"]["coupons"] == "SPRING5 FREESHIP"
    assert build()["transaction_attributes"]["coupons"] == "SPRING5,FREESHIP"
