"""Every row of the status code table in shared/seeds/000_6718c48c347ebfdc.txt (and the 429 that
the API reference adds), with how the client reads it and the status an award then ends in.

Written out row by row from the API reference's table and issue 13's decisions, not computed by
the rules under test.
"""

from django_zinrelo.client import Outcome
from django_zinrelo.models import Status

REFUSED = (Outcome.REFUSED, Status.REFUSED)
RETRIED = (Outcome.RETRYABLE, Status.RETRYING)
# The store, not the award, is wrong: the award waits for it to be fixed.
WAITS = (Outcome.STORE_PROBLEM, Status.RETRYING)

SEED_TABLE = [
    (200, "UNABLE_TO_UPLOAD_PHOTO", *RETRIED),  # "Please try again later."
    (400, "ATTRIBUTE_NOT_UNIQUE", *REFUSED),
    (200, "MEMBER_ID_ALREADY_IN_USE", *REFUSED),
    (200, "INVALID_MEMBER_STATUS", *REFUSED),
    (200, "MEMBER_BLOCKED", *REFUSED),
    (200, "MAX_AWARDS_EXCEEDED", *REFUSED),
    (200, "INVALID_AMOUNT_TO_DEDUCT", *REFUSED),
    (400, "INVALID_JSON", *WAITS),
    (400, "INVALID_REQUEST", *WAITS),
    (200, "INCORRECT_MEMBER_ID_PASSED", *REFUSED),
    (200, "STORE_INACTIVE", *WAITS),
    (200, "MEMBER_DELETED", *REFUSED),
    (200, "EXCLUDED_TRANSACTION", *REFUSED),
    # About a transaction id when approving one; to an award, it says the award path is wrong.
    (404, "TRANSACTION_DOES_NOT_EXIST", Outcome.REFUSED, Status.RETRYING),
    (500, "INTERNAL_SERVER_ERROR", *RETRIED),
    (400, "INVALID_REQUEST_PARAMETER_VALUES", *REFUSED),
    (200, "INVALID_PHOTO", *REFUSED),
    (200, "PAUSED_ACTIVITY", *WAITS),
    (400, "ID_PARAM_NAME_NOT_FOUND", *REFUSED),
    (401, "ERROR_UNAUTHORIZED", *REFUSED),
    (200, "DUPLICATE_ORDER_ID", Outcome.ALREADY_AWARDED, Status.ALREADY_AWARDED),
    (200, "MEMBER_CREATION_UNSUCCESSFUL", *REFUSED),
    (400, "MERCHANT_DOES_NOT_EXIST", *WAITS),
    (200, "TRANSACTION_ATTRIBUTE_NOT_UNIQUE", *REFUSED),  # on a first send
    (200, "INVALID_MEMBER", *REFUSED),
    (400, "INVALID_CURSOR", *REFUSED),
    (503, "SERVICE_UNAVAILABLE", *RETRIED),
    (200, "INACTIVE_REWARD", *REFUSED),
    (200, "AUTO_REDEEMABLE_REWARD", *REFUSED),
    (200, "INVALID_REWARD_FOR_USER", *REFUSED),
    (200, "MAX_REWARDS_EXCEEDED", *REFUSED),
    (200, "INSUFFICIENT_REDEEMABLE_POINTS", *REFUSED),
    (200, "INVALID_REWARD_FOR_TIER", *REFUSED),
    (200, "ORDER_NOT_EXIST", *REFUSED),
    (200, "PRODUCT_QUANTITY_EXCEEDED", *REFUSED),
    (200, "INVALID_PRODUCT_ID", *REFUSED),
    (200, "RETURN_VALUE_EXCEEDS_AVAILABLE_BALANCE", *REFUSED),
    (200, "PRODUCT_ID_AND_RETURN_AMOUNT_PASSED", *REFUSED),
    (429, "RATE_LIMIT_EXCEEDED", *RETRIED),
]
