"""What the save hook costs the shop's transaction: one statement to record, none when nothing
the app looks at changed, and a failure of that statement never breaks the shop's transaction.

On PostgreSQL the statement runs inside a savepoint until an award insert has succeeded on the
database in this process (the proof), then alone for values checked to fit; every test starts
unproven (``conftest``), as a new process does."""

import logging
from contextlib import nullcontext

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from django_zinrelo import inserts, receivers
from django_zinrelo.models import Award, Operation
from tests.conftest import awarded, make_order
from tests.shop.models import Order

pytestmark = pytest.mark.django_db


def app_statements(queries):
    """The statements of ours among those captured: they name the app's tables or savepoint."""
    return [q["sql"] for q in queries if "zinrelo" in q["sql"].lower()]


class Executed:
    """Every statement sent on the connection (``execute_wrapper``), before the driver runs it."""

    def __init__(self):
        self.sql = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)


def qualifying_save(number, then=None):
    """A new order saved as paid in a transaction of the shop's (``then`` run after the save in
    it); the statements of ours the save sent."""
    order = Order.objects.get(pk=make_order(number=number).pk)
    order.status = "paid"
    executed = Executed()
    with connection.execute_wrapper(executed), transaction.atomic():
        order.save()
        if then is not None:
            then()
    return app_statements([{"sql": sql} for sql in executed.sql])


def confined(statements):
    """Whether our insert ran inside a savepoint (sent with it on PostgreSQL, and rolled back to
    in one more statement after a failure); an insert alone must be the only statement."""
    if "SAVEPOINT" in statements[0]:
        return True
    assert len(statements) == 1
    return False


# SQLite undoes a failed statement alone: it never needs the savepoint.
CONFINES = connection.vendor != "sqlite"


def paid_order(number="1001"):
    """An order that qualified and whose award is recorded, loaded as the shop loads it."""
    order = make_order(number=number)
    order.status = "paid"
    order.save()
    assert Award.objects.filter(order_pk=str(order.pk)).exists()
    return Order.objects.get(pk=order.pk)


def test_a_qualifying_save_records_its_award_in_one_statement(django_capture_on_commit_callbacks):
    order = Order.objects.get(pk=make_order().pk)
    order.status = "paid"
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(),
        transaction.atomic(),
    ):
        order.save()
    [statement] = app_statements(queries)
    assert "INSERT" in statement
    assert Award.objects.filter(order_pk=str(order.pk)).count() == 1


def test_the_checkouts_short_insert_writes_the_row_the_model_would():
    """The insert names only the columns that vary; every other one must start as the
    database's default, the same as the model's own (a field added without its ``db_default``
    would start otherwise, or fail as NOT NULL)."""
    order = Order.objects.get(pk=make_order().pk)
    order.status = "paid"
    order.save()
    by_checkout = Award.objects.filter(order_pk=str(order.pk)).values().get()
    by_model = Award.objects.create(
        order_model="shop.order", order_pk="x", activity_id=by_checkout["activity_id"]
    )
    model_row = Award.objects.filter(pk=by_model.pk).values().get()
    varying = {"id", "order_pk", "next_attempt_at", "created_at", "updated_at"}
    assert {slot.name for slot in inserts.statement("default").slots} == (
        varying - {"id"} | {"order_model", "activity_id"}
    )
    assert {k: v for k, v in by_checkout.items() if k not in varying} == {
        k: v for k, v in model_row.items() if k not in varying
    }
    assert by_checkout["created_at"] == by_checkout["next_attempt_at"]


@pytest.mark.parametrize("change", [None, "completed"], ids=["unchanged", "status_edit"])
def test_a_save_of_an_order_that_qualified_when_loaded_runs_no_statement_of_ours(
    change, django_capture_on_commit_callbacks
):
    order = paid_order()
    if change:
        order.status = change
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks() as callbacks,
        transaction.atomic(),
    ):
        order.save()
    assert app_statements(queries) == []
    # An edit still looks at the award after commit (an invalid one is rebuilt); an unchanged
    # save does not even do that.
    assert len(callbacks) == (1 if change else 0)


def test_a_fix_to_an_invalid_award_is_still_sent_after_a_status_edit(
    zinrelo, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        order = make_order(email="", status="paid")
    assert Award.objects.get().status == "invalid"
    awarded(zinrelo)
    order = Order.objects.get(pk=order.pk)
    order.email = "fixed@example.com"
    with django_capture_on_commit_callbacks(execute=True):
        order.save()
    assert Award.objects.get().status == "awarded"


def test_an_order_built_in_code_over_an_existing_row_is_looked_at_in_full():
    row = make_order()  # "new" in the database
    built = Order(pk=row.pk, number=row.number, status="paid", email=row.email, total=1)
    built.save()
    assert Award.objects.filter(order_pk=str(row.pk)).count() == 1


def test_an_order_loaded_with_deferred_fields_is_looked_at_in_full():
    row = make_order()
    order = Order.objects.only("pk", "status").get(pk=row.pk)
    assert receivers.LOADED not in order.__dict__
    order.status = "paid"
    order.save()
    assert Award.objects.filter(order_pk=str(row.pk)).count() == 1


def test_a_save_limited_to_other_fields_is_judged_by_what_the_row_holds():
    order = Order.objects.get(pk=make_order().pk)
    order.status = "paid"  # set in memory, never written
    order.email = "new@example.com"
    order.save(update_fields=["email"])
    assert Order.objects.get(pk=order.pk).status == "new"
    assert not Award.objects.exists()
    order.save(update_fields=["status"])
    assert Award.objects.filter(order_pk=str(order.pk)).count() == 1


def pay_and_fail(order):
    with transaction.atomic():
        order.status = "paid"
        order.save()
        raise RuntimeError("the payment's capture failed")


def test_a_payment_rolled_back_to_its_savepoint_then_a_save_of_another_field_records_nothing():
    order = Order.objects.get(pk=make_order().pk)
    with transaction.atomic():
        with pytest.raises(RuntimeError):
            pay_and_fail(order)
        order.coupon_codes = "SORRY10"
        order.save(update_fields=["coupon_codes"])
    assert Order.objects.get(pk=order.pk).status == "new"
    assert not Award.objects.exists()


def test_loading_orders_runs_no_query_and_no_adapter_code(monkeypatch):
    make_order()

    def boom(self, order):
        raise AssertionError("the adapter ran while loading")

    monkeypatch.setattr("tests.shop.zinrelo.ShopAdapter.qualifies", boom)
    with CaptureQueriesContext(connection) as queries:
        [order] = Order.objects.all()
    assert len(queries) == 1
    assert order.__dict__[receivers.LOADED]


def test_transitions_are_recorded_against_the_loaded_status(django_capture_on_commit_callbacks):
    order = paid_order()
    order.status = "shipped"  # approving
    with django_capture_on_commit_callbacks():
        order.save()
    assert Operation.objects.filter(action="approve").count() == 1
    shipped = Order.objects.get(pk=order.pk)
    shipped.email = "new@example.com"
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks():
        shipped.save()
    assert app_statements(queries) == []  # no look-up of the award on each save
    shipped.status = "cancelled"
    with django_capture_on_commit_callbacks():
        shipped.save()
    assert Operation.objects.filter(action="take_back").count() == 1


def test_the_first_insert_on_a_connection_is_confined_and_the_next_ones_go_alone():
    assert confined(qualifying_save("1001")) is CONFINES
    for number in ("1002", "1003"):
        [statement] = qualifying_save(number)
        assert statement.lstrip().upper().startswith("INSERT")
        assert "SAVEPOINT" not in statement
    assert Award.objects.count() == 3


def shop_goes_on():
    """What a checkout does after the save: write and read again in its transaction."""
    make_order(number="9999")
    assert Order.objects.filter(number="9999").count() == 1


def rename_award_table(old, new):
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {old} RENAME TO {new}")


def test_a_table_missing_at_process_start_never_breaks_the_shops_transaction(caplog):
    table = Award._meta.db_table
    rename_award_table(table, "zinrelo_award_not_migrated")
    with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
        assert confined(qualifying_save("1001", then=shop_goes_on)) is CONFINES
    assert "zinrelo_sync --missing will find it" in caplog.text
    assert Order.objects.get(number="1001").status == "paid"
    rename_award_table("zinrelo_award_not_migrated", table)  # migrate runs
    # The failure proved nothing: the next insert is confined again, and proves the table.
    assert confined(qualifying_save("1002")) is CONFINES
    assert confined(qualifying_save("1003")) is False
    assert Award.objects.count() == 2


@pytest.mark.parametrize(
    "activity_id",
    ["x" * 65, "made_a\x00purchase", "made_a_\ud800"],
    ids=["too_long", "nul", "lone_surrogate"],
)
def test_values_the_table_cannot_hold_never_go_alone_nor_break_the_transaction(
    activity_id, settings, caplog
):
    qualifying_save("1001")  # the proof
    settings.ZINRELO = {**settings.ZINRELO, "ACTIVITY_ID": activity_id}
    with caplog.at_level(logging.ERROR, logger="django_zinrelo"):
        assert confined(qualifying_save("1002", then=shop_goes_on)) is CONFINES
    assert Order.objects.get(number="1002").status == "paid"
    if CONFINES:  # SQLite stores a long value or a NUL as given
        assert "zinrelo_sync --missing will find it" in caplog.text
        assert not Award.objects.filter(order_pk=str(Order.objects.get(number="1002").pk)).exists()


@pytest.mark.postgres
def test_text_a_utf8_database_stores_goes_alone_once_proven(settings):
    assert connection.connection.info.parameter_status("server_encoding") == "UTF8"
    qualifying_save("1001")
    settings.ZINRELO = {**settings.ZINRELO, "ACTIVITY_ID": "achat_effectué_😀"}
    assert confined(qualifying_save("1002")) is False
    assert Award.objects.filter(activity_id="achat_effectué_😀").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_proof_holds_for_the_process_across_connections(monkeypatch):
    """With Django's default ``CONN_MAX_AGE = 0`` each request has a new connection: the proof
    is the process's, so a checkout's one qualifying save is one statement all the same."""
    monkeypatch.setattr(receivers, "submit", lambda *args, **kwargs: None)  # no delivery
    assert confined(qualifying_save("1001")) is CONFINES
    assert confined(qualifying_save("1002")) is False
    first = connection.connection
    connection.close()  # the end of a request
    assert confined(qualifying_save("1003")) is False
    assert connection.vendor == "sqlite" or connection.connection is not first
    assert Award.objects.count() == 3


def test_a_table_changed_after_the_proof_costs_one_transaction_then_proves_again(monkeypatch):
    """The limit of the proof: a table dropped or changed under a running process (a migration
    run before the old processes stop) fails the one insert that meets it, alone; on PostgreSQL
    that aborts the shop's transaction. The process then proves again."""
    qualifying_save("1001")
    real = inserts.statement("default")
    broken = real.sql.replace(Award._meta.db_table, "zinrelo_award_dropped")
    monkeypatch.setattr(inserts, "statement", lambda alias: inserts.Statement(broken, real.slots))
    aborts = pytest.raises(DatabaseError) if CONFINES else nullcontext()
    with aborts:
        assert confined(qualifying_save("1002")) is False
    monkeypatch.undo()
    assert confined(qualifying_save("1003")) is CONFINES
    assert confined(qualifying_save("1004")) is False


@pytest.mark.parametrize(
    "fields",
    [("order_pk",), ()],
    ids=["failing_on_the_server", "failing_before_sending"],
)
def test_a_failed_insert_leaves_the_shops_transaction_usable(fields, monkeypatch, caplog):
    """A missing table fails on the server (PostgreSQL then aborts the transaction, unless
    confined); a parameter missing fails in the driver, before anything is sent."""
    sql = "INSERT INTO no_such_zinrelo_table (x) VALUES (%s)"
    columns = tuple(field for field in Award._meta.concrete_fields if field.name in fields)
    monkeypatch.setattr(inserts, "statement", lambda alias: inserts.Statement(sql, columns))
    order = make_order()
    with caplog.at_level(logging.ERROR, logger="django_zinrelo"), transaction.atomic():
        order.status = "paid"
        order.save()
        # The shop's transaction goes on after our failure: it can still write and read.
        make_order(number="1002")
        assert Order.objects.count() == 2
    assert "zinrelo_sync --missing will find it" in caplog.text
    assert Order.objects.get(pk=order.pk).status == "paid"
    assert Award.objects.count() == 0


def test_after_a_failed_record_the_next_save_of_the_same_order_tries_again(monkeypatch):
    real = inserts.record

    def failing(*args):
        raise RuntimeError("database hiccup")

    order = Order.objects.get(pk=make_order().pk)
    monkeypatch.setattr(inserts, "record", failing)
    order.status = "paid"
    order.save()
    monkeypatch.setattr(inserts, "record", real)
    order.save()
    assert Award.objects.filter(order_pk=str(order.pk)).count() == 1
