"""A table of credential formats, each a realistic-looking but fake value, as someone would paste it.

``SECRETS`` lists what must never be repeated: each entry's ``text`` is the way the credential
travels (a header line, a ``key=value`` pair, a URL, a JSON document), and ``secrets`` the parts of
it that are the secret. The redaction unit tests and the end-to-end leak test
(``tests/e2e/test_secret_leaks.py``) push every entry through every channel and look for the
``secrets`` in everything that comes out.

The values are made up: fixed strings of the right shape (no real key has these contents), with a
random tail so that each test run's values are its own.
"""

from __future__ import annotations

import secrets as _random
import string
from dataclasses import dataclass


@dataclass(frozen=True)
class SecretCase:
    name: str
    text: str
    secrets: tuple[str, ...]


def _tail(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_random.choice(alphabet) for _ in range(n))


def _upper(n: int) -> str:
    return _tail(n, string.ascii_uppercase + string.digits)


def secret_table() -> list[SecretCase]:
    """Twenty-odd formats, with fresh random tails."""
    aws_id = "AKIA" + _upper(16)
    aws_secret = _tail(30) + "/K7MDENG+bPx"[: 10]
    ghp = "ghp_" + _tail(36)
    pem_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + _tail(40)
    sa_key_id = _tail(40, "0123456789abcdef")
    bearer = _tail(24) + "." + _tail(16)
    jwt = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJzdWIiOiIx" + _tail(20) + "." + _tail(43)
    sig = _tail(64, "0123456789abcdef")
    bare_aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + _upper(8) + "k1"
    session = _tail(40)
    url_pw = _tail(14)
    return [
        SecretCase("AWS access key id", f"aws_access_key_id {aws_id}", (aws_id,)),
        SecretCase("AWS secret access key", f"aws_secret_access_key={aws_secret}", (aws_secret,)),
        SecretCase("AWS secret access key, bare", f"copied {bare_aws_secret} by mistake", (bare_aws_secret,)),
        SecretCase("AWS presigned URL",
                   f"https://billing-exports.s3.amazonaws.com/focus/2024-01.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                   f"&X-Amz-Credential={aws_id}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
                   f"&X-Amz-Security-Token={session}&X-Amz-Signature={sig}",
                   (aws_id, session, sig)),
        SecretCase("GitHub personal access token", f"token {ghp}", (ghp,)),
        SecretCase("GitHub app token", "ghs_" + (v := _tail(36)), (v,)),
        SecretCase("GitHub fine-grained token", (v := "github_pat_11A" + _tail(20) + "_" + _tail(59)), (v,)),
        SecretCase("GitLab token", (v := "glpat-" + _tail(20)), (v,)),
        SecretCase("Slack bot token", (v := "xoxb-1234567890-1234567890123-" + _tail(24)), (v,)),
        SecretCase("Slack webhook URL",
                   f"https://hooks.slack.com/services/T0{_upper(8)}/B0{_upper(8)}/{(v := _tail(24))}", (v,)),
        SecretCase("Stripe secret key", (v := "sk_live_51" + _tail(40)), (v,)),
        SecretCase("Stripe restricted key", (v := "rk_test_51" + _tail(40)), (v,)),
        SecretCase("Stripe webhook secret", (v := "whsec_" + _tail(32)), (v,)),
        SecretCase("Google API key", (v := "AIza" + _tail(35, string.ascii_letters + string.digits + "_-")), (v,)),
        SecretCase("Google service-account JSON",
                   '{"type": "service_account", "project_id": "demo", "private_key_id": "' + sa_key_id + '", '
                   '"private_key": "-----BEGIN PRIVATE KEY-----\\n' + pem_body + '\\n-----END PRIVATE KEY-----\\n", '
                   '"client_email": "svc@demo.iam.gserviceaccount.com"}',
                   (sa_key_id, pem_body)),
        SecretCase("PEM private key",
                   "-----BEGIN RSA PRIVATE KEY-----\n" + (v := "MIIEowIBAAKCAQEA" + _tail(48)) +
                   "\n-----END RSA PRIVATE KEY-----", (v,)),
        SecretCase("JWT", jwt, (jwt.split(".", 1)[1],)),
        SecretCase("Bearer header", f"Authorization: Bearer {bearer}", (bearer,)),
        SecretCase("URL-encoded bearer", f"auth_header=Bearer%20{(v := _tail(32))}", (v,)),
        SecretCase("Basic header", f"Authorization: Basic {(v := 'dXNlcjp' + _tail(16))}", (v,)),
        SecretCase("password pair", f"password={(v := _tail(18))}", (v,)),
        SecretCase("client_secret pair", f'client_secret = "{(v := _tail(28))}"', (v,)),
        SecretCase("URL user-info", f"postgresql://billing:{url_pw}@db.internal:5432/costs", (url_pw,)),
        SecretCase("URL query token", f"https://api.example.com/v1/export?format=csv&token={(v := _tail(30))}", (v,)),
        SecretCase("platform API key", (v := f"mk.key_{_tail(26).lower()}.{_tail(43)}"), (v.split(".")[2],)),
        SecretCase("platform refresh token", (v := f"rt.rtk_{_tail(26).lower()}.{_tail(43)}"), (v.split(".")[2],)),
        SecretCase("OpenAI key", (v := "sk-proj-" + _tail(48)), (v,)),
    ]
