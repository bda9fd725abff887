"""The admin's side of cancellations and refunds: one ledger per order, the same read-only rules
and the same re-send permission as awards."""

from decimal import Decimal

import pytest
from django.urls import reverse

from django_zinrelo import record_refund
from django_zinrelo.models import AwardAttempt, Call, Operation, OperationStatus
from tests.test_admin import (
    RESYNCER,
    VIEWER,
    action_choices,
    award_page,
    logged_in,
    run_action,
    staff,
)
from tests.test_operations import RETURN_URL, deduct_answer

pytestmark = pytest.mark.django_db

OPERATIONS = reverse("admin:django_zinrelo_operation_changelist")
VIEWS = (*VIEWER, "view_operation")


@pytest.fixture
def refunded(place, zinrelo, django_capture_on_commit_callbacks):
    """An order of 25 points, 10 of them returned by a partial refund."""
    order = place()
    zinrelo.post(RETURN_URL, json=deduct_answer(10))
    with django_capture_on_commit_callbacks(execute=True):
        record_refund(order, "R-1", amount=Decimal("10.00"))
    return Operation.objects.get()


def test_an_awards_page_reads_as_the_orders_ledger(admin_client, refunded):
    page = admin_client.get(award_page(refunded.award)).content.decode()
    assert "awarded 25 (approved) · rejected 0 · returned 10 · <strong>left 15</strong>" in page
    assert "cancellations, refunds and approvals" in page.lower()
    assert "R-1" in page


def test_the_attempt_log_says_which_call_each_attempt_was(admin_client, refunded):
    kinds = set(AwardAttempt.objects.values_list("kind", flat=True))
    assert kinds == {Call.AWARD, Call.RETURN}
    page = admin_client.get(reverse("admin:django_zinrelo_awardattempt_changelist")).content
    assert b"Return" in page and b"Award" in page


def test_operations_are_read_only_for_everyone(admin_client, refunded):
    change = reverse("admin:django_zinrelo_operation_change", args=[refunded.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert b'name="status"' not in page.content
    delete = reverse("admin:django_zinrelo_operation_delete", args=[refunded.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Operation.objects.filter(pk=refunded.pk).exists()


def test_only_staff_with_the_resync_permission_may_re_send(
    django_user_model, refunded, zinrelo, django_capture_on_commit_callbacks
):
    Operation.objects.filter(pk=refunded.pk).update(status=OperationStatus.FAILED, call="")
    viewer = logged_in(staff(django_user_model, *VIEWS, username="viewer"))
    assert "resend_operations_to_zinrelo" not in action_choices(viewer.get(OPERATIONS))
    run_action(viewer, OPERATIONS, "resend_operations_to_zinrelo", [refunded])
    assert Operation.objects.get().status == OperationStatus.FAILED

    resyncer = logged_in(staff(django_user_model, *RESYNCER, "view_operation"))
    assert "resend_operations_to_zinrelo" in action_choices(resyncer.get(OPERATIONS))
    with django_capture_on_commit_callbacks(execute=True):
        _, messages = run_action(resyncer, OPERATIONS, "resend_operations_to_zinrelo", [refunded])
    assert messages == [
        "Queued 1 operation(s) that ended refused, invalid or failed to re-send to Zinrelo; "
        "skipped 0 that had not ended so."
    ]
    assert Operation.objects.get().status == OperationStatus.DONE
