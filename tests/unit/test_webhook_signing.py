"""Standard Webhooks signing, checked against the specification's own example and an independent HMAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
import standardwebhooks

from shared.webhooks.delivery import event_body, new_signing_secret, secret_key, sign, signed_headers
from shared.webhooks.service import RetrySchedule


def test_the_specifications_example_signature():
    # The example message of the Standard Webhooks reference libraries.
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, message_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330,
                     body=b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secrets_are_whsec_base64_of_32_random_bytes():
    secrets_seen = {new_signing_secret() for _ in range(50)}
    assert len(secrets_seen) == 50
    for secret in secrets_seen:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[6:], validate=True)) == 32


def test_bad_secrets_are_rejected():
    with pytest.raises(ValueError, match="whsec_"):
        secret_key("sk_abc")
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not*base64")


def test_headers_verify_with_an_independent_hmac():
    secret = new_signing_secret()
    body = event_body("run.completed", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), {"run_id": "run_1", "n": 3})
    headers = signed_headers(secret_key(secret), message_id="msg_1", timestamp=1_700_000_000, body=body)
    assert json.loads(body) == {"type": "run.completed", "timestamp": "2026-01-02T03:04:05Z",
                                "data": {"run_id": "run_1", "n": 3}}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    version, _, value = headers["webhook-signature"].partition(",")
    expected = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), b"msg_1.1700000000." + body,
                        hashlib.sha256).digest()
    assert version == "v1"
    assert hmac.compare_digest(base64.b64decode(value), expected)


def test_the_reference_library_verifies_our_signature():
    secret = new_signing_secret()
    body = event_body("approval.requested", datetime.now(UTC), {"approval_id": "apr_1"})
    headers = signed_headers(secret_key(secret), message_id="msg_2", timestamp=int(datetime.now(UTC).timestamp()),
                             body=body)
    assert standardwebhooks.Webhook(secret).verify(body, headers)["data"] == {"approval_id": "apr_1"}
    tampered = body.replace(b"apr_1", b"apr_2")
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, headers)


def test_retry_schedule_grows_and_ends():
    schedule = RetrySchedule(jitter=0)
    delays = [schedule.delay_after(n) for n in range(1, schedule.max_attempts + 1)]
    assert schedule.max_attempts == 8
    assert delays[:3] == [5, 30, 120]
    assert delays[-1] is None
    waits = [d for d in delays if d is not None]
    assert waits == sorted(waits)
    assert sum(waits) < 24 * 3600


def test_retry_jitter_stays_within_its_band():
    schedule = RetrySchedule(jitter=0.1)
    samples = [schedule.delay_after(2) for _ in range(200)]
    assert all(s is not None and 27 <= s <= 33 for s in samples)
    assert len(set(samples)) > 1
    with pytest.raises(ValueError, match="jitter"):
        RetrySchedule(jitter=1.5)
