"""Every answer Zinrelo can give is read as the API reference's table says."""

import pytest
import requests
from responses import matchers

from django_zinrelo import __version__
from django_zinrelo.client import Outcome, ZinreloClient, classify, get_client, parse_retry_after
from tests.conftest import AWARD_URL
from tests.seed_codes import SEED_TABLE


@pytest.fixture
def client():
    return ZinreloClient(
        partner_id="partner", api_key="secret-key", connect_timeout=1.5, read_timeout=2.5
    )


@pytest.mark.parametrize(("status", "code", "outcome"), [row[:3] for row in SEED_TABLE])
def test_every_documented_code_is_classified(client, zinrelo, status, code, outcome):
    zinrelo.post(
        AWARD_URL,
        status=status,
        json={"success": False, "error_code": code, "reason": f"reason for {code}"},
    )
    reply = client.post(AWARD_URL, "{}")
    assert reply.outcome is outcome
    assert reply.status_code == status
    assert reply.error_code == code
    assert reply.reason == f"reason for {code}"


def test_success_keeps_points_status_and_transaction_id(client, zinrelo):
    zinrelo.post(
        AWARD_URL,
        json={"success": True, "data": {"id": "tx-9", "points": 270, "points_status": "pending"}},
    )
    reply = client.post(AWARD_URL, "{}")
    assert reply.outcome is Outcome.AWARDED
    assert reply.data == {"id": "tx-9", "points": 270, "points_status": "pending"}


def test_a_200_with_an_error_code_is_never_a_success():
    reply = classify(200, '{"success": true, "error_code": "MEMBER_BLOCKED"}')
    assert reply.outcome is Outcome.REFUSED


def test_a_200_with_success_false_and_no_code_is_a_final_refusal_with_a_reason():
    reply = classify(200, '{"success": false}')
    assert reply.outcome is Outcome.REFUSED
    assert "success false" in reply.reason


def test_an_unknown_error_code_is_final_and_keeps_its_reason():
    reply = classify(200, '{"success": false, "error_code": "NEW_CODE", "reason": "Why not."}')
    assert (reply.outcome, reply.error_code, reply.reason) == (
        Outcome.REFUSED,
        "NEW_CODE",
        "Why not.",
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, ""),
        (200, "<html>Bad gateway</html>"),
        (200, '{"success": true, "data": {'),
        (200, "[1, 2]"),
        (502, "<html><body>502 Bad Gateway</body></html>"),
        (503, ""),
        (500, "Internal Server Error"),
    ],
)
def test_bodies_that_are_not_json_objects_are_retried(client, zinrelo, status, body):
    zinrelo.post(AWARD_URL, status=status, body=body)
    reply = client.post(AWARD_URL, "{}")
    assert reply.outcome is Outcome.RETRYABLE
    assert reply.error_code == "bad_response"
    assert reply.body == body


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a": ' * 100_000])
def test_a_body_too_deep_to_decode_is_retried_like_a_proxys_page(client, zinrelo, body):
    """The decoder gives up on deep nesting with RecursionError, not ValueError."""
    zinrelo.post(AWARD_URL, body="<html>Bad gateway</html>")
    zinrelo.post(AWARD_URL, body=body)
    page, deep = client.post(AWARD_URL, "{}"), client.post(AWARD_URL, "{}")
    assert (deep.outcome, deep.status_code, deep.error_code, deep.reason) == (
        page.outcome,
        200,
        "bad_response",
        page.reason,
    )
    assert deep.outcome is Outcome.RETRYABLE and "not a JSON object" in deep.reason
    assert deep.body == body[:4096]


def test_a_4xx_that_is_not_json_is_final(client, zinrelo):
    zinrelo.post(AWARD_URL, status=403, body="Forbidden")
    assert client.post(AWARD_URL, "{}").outcome is Outcome.REFUSED


def test_429_honours_retry_after(client, zinrelo):
    zinrelo.post(
        AWARD_URL,
        status=429,
        headers={"Retry-After": "17"},
        json={"success": False, "error_code": "RATE_LIMIT_EXCEEDED", "reason": "Slow down."},
    )
    reply = client.post(AWARD_URL, "{}")
    assert (reply.outcome, reply.retry_after) == (Outcome.RETRYABLE, 17.0)


def test_retry_after_as_an_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (requests.ConnectTimeout("connect"), "timeout"),
        (requests.ReadTimeout("read"), "timeout"),
        (requests.ConnectionError("reset"), "connection_error"),
        (requests.exceptions.ChunkedEncodingError("truncated"), "connection_error"),
    ],
)
def test_network_failures_are_retryable_with_no_status(client, zinrelo, error, code):
    zinrelo.post(AWARD_URL, body=error)
    reply = client.post(AWARD_URL, "{}")
    assert (reply.outcome, reply.status_code, reply.error_code) == (Outcome.RETRYABLE, None, code)


def test_read_timeout_reason_says_the_retry_may_be_a_duplicate(client, zinrelo):
    zinrelo.post(AWARD_URL, body=requests.ReadTimeout("read"))
    assert "2.5s" in client.post(AWARD_URL, "{}").reason


def test_redirects_are_not_followed(client, zinrelo):
    zinrelo.post(AWARD_URL, status=302, headers={"Location": "https://elsewhere.test/steal"})
    zinrelo.post("https://elsewhere.test/steal", json={"success": True})
    reply = client.post(AWARD_URL, "{}")
    assert (reply.outcome, reply.error_code) == (Outcome.REFUSED, "redirect")
    assert len(zinrelo.calls) == 1


def test_request_carries_auth_json_and_user_agent_and_timeouts(client, zinrelo):
    zinrelo.post(
        AWARD_URL,
        json={"success": True, "data": {}},
        match=[
            matchers.header_matcher(
                {
                    "partner-id": "partner",
                    "api-key": "secret-key",
                    "Content-Type": "application/json",
                    "User-Agent": f"django-zinrelo/{__version__} python-requests/"
                    f"{requests.__version__}",
                }
            ),
            matchers.request_kwargs_matcher({"timeout": (1.5, 2.5)}),
        ],
    )
    assert client.post(AWARD_URL, '{"a": "é"}').outcome is Outcome.AWARDED
    assert zinrelo.calls[0].request.body == '{"a": "é"}'.encode()


def test_one_pooled_session_is_reused_per_configuration():
    first = get_client("p", "k", 1.0, 2.0)
    assert get_client("p", "k", 1.0, 2.0) is first
    assert get_client("p", "other", 1.0, 2.0) is not first


def test_repr_never_shows_the_key(client):
    assert "secret-key" not in repr(client)
    assert "partner" in repr(client)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("<html>Not Found</html>", ""),
        ("", ""),
        ('{"message": "Not Found"}', ""),
        (
            '{"success": false, "error_code": "TRANSACTION_DOES_NOT_EXIST", '
            '"reason": "Transaction does not exist."}',
            " (Zinrelo said TRANSACTION_DOES_NOT_EXIST: Transaction does not exist.)",
        ),
    ],
)
def test_a_404_to_the_award_path_means_the_path_is_wrong(client, zinrelo, body, said):
    zinrelo.post(AWARD_URL, status=404, body=body)
    reply = client.award(AWARD_URL, "{}")
    assert (reply.outcome, reply.status_code, reply.error_code) == (
        Outcome.STORE_PROBLEM,
        404,
        "path_not_found",
    )
    assert reply.reason == f"POST {AWARD_URL} answered HTTP 404{said}."
    assert reply.body == body


def test_a_404_elsewhere_keeps_its_meaning(client, zinrelo):
    """Approving an unknown transaction is answered 404 too: that one is about the transaction."""
    url = "https://api.zinrelo.test/v2/loyalty/transactions/tx-0/approve"
    zinrelo.post(
        url,
        status=404,
        json={"success": False, "error_code": "TRANSACTION_DOES_NOT_EXIST", "reason": "No."},
    )
    reply = client.post(url, "")
    assert (reply.outcome, reply.error_code) == (Outcome.REFUSED, "TRANSACTION_DOES_NOT_EXIST")


def test_an_award_answer_that_is_not_a_404_is_read_as_any_other(client, zinrelo):
    zinrelo.post(
        AWARD_URL,
        json={"success": False, "error_code": "STORE_INACTIVE", "reason": "Store is not active."},
    )
    reply = client.award(AWARD_URL, "{}")
    assert (reply.outcome, reply.error_code, reply.reason) == (
        Outcome.STORE_PROBLEM,
        "STORE_INACTIVE",
        "Store is not active.",
    )
