"""Every answer Zinrelo can give is read as the API reference's table says."""

import pytest
import requests
from responses import matchers

from django_zinrelo import __version__
from django_zinrelo.client import Outcome, ZinreloClient, classify, get_client, parse_retry_after
from tests.conftest import AWARD_URL

# Every row of the status code table in shared/seeds/000_6718c48c347ebfdc.txt.
SEED_TABLE = [
    (200, "UNABLE_TO_UPLOAD_PHOTO"),
    (400, "ATTRIBUTE_NOT_UNIQUE"),
    (200, "MEMBER_ID_ALREADY_IN_USE"),
    (200, "INVALID_MEMBER_STATUS"),
    (200, "MEMBER_BLOCKED"),
    (200, "MAX_AWARDS_EXCEEDED"),
    (200, "INVALID_AMOUNT_TO_DEDUCT"),
    (400, "INVALID_JSON"),
    (400, "INVALID_REQUEST"),
    (200, "INCORRECT_MEMBER_ID_PASSED"),
    (200, "STORE_INACTIVE"),
    (200, "MEMBER_DELETED"),
    (200, "EXCLUDED_TRANSACTION"),
    (404, "TRANSACTION_DOES_NOT_EXIST"),
    (500, "INTERNAL_SERVER_ERROR"),
    (400, "INVALID_REQUEST_PARAMETER_VALUES"),
    (200, "INVALID_PHOTO"),
    (200, "PAUSED_ACTIVITY"),
    (400, "ID_PARAM_NAME_NOT_FOUND"),
    (401, "ERROR_UNAUTHORIZED"),
    (200, "DUPLICATE_ORDER_ID"),
    (200, "MEMBER_CREATION_UNSUCCESSFUL"),
    (400, "MERCHANT_DOES_NOT_EXIST"),
    (200, "TRANSACTION_ATTRIBUTE_NOT_UNIQUE"),
    (200, "INVALID_MEMBER"),
    (400, "INVALID_CURSOR"),
    (503, "SERVICE_UNAVAILABLE"),
    (200, "INACTIVE_REWARD"),
    (200, "AUTO_REDEEMABLE_REWARD"),
    (200, "INVALID_REWARD_FOR_USER"),
    (200, "MAX_REWARDS_EXCEEDED"),
    (200, "INSUFFICIENT_REDEEMABLE_POINTS"),
    (200, "INVALID_REWARD_FOR_TIER"),
    (200, "ORDER_NOT_EXIST"),
    (200, "PRODUCT_QUANTITY_EXCEEDED"),
    (200, "INVALID_PRODUCT_ID"),
    (200, "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE"),
    (200, "PRODUCT_ID_AND_RETURN_AMOUNT_PASSED"),
    (429, "RATE_LIMIT_EXCEEDED"),
]


def expected(status, code):
    if code == "DUPLICATE_ORDER_ID":
        return Outcome.ALREADY_AWARDED
    if status in (429, 500, 503):
        return Outcome.RETRYABLE
    return Outcome.REFUSED


@pytest.fixture
def client():
    return ZinreloClient(
        partner_id="partner", api_key="secret-key", connect_timeout=1.5, read_timeout=2.5
    )


@pytest.mark.parametrize(("status", "code"), SEED_TABLE)
def test_every_documented_code_is_classified(client, zinrelo, status, code):
    zinrelo.post(
        AWARD_URL,
        status=status,
        json={"success": False, "error_code": code, "reason": f"reason for {code}"},
    )
    reply = client.post(AWARD_URL, "{}")
    assert reply.outcome is expected(status, code)
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
