"""Secret redaction: one rule for every log line, error, audit entry, webhook payload and displayed URL.

Two mechanisms, applied together by :func:`redact_text`:

* **URLs, by construction.** Every ``scheme://…`` URL (also percent-encoded, ``https%3A%2F%2F…``)
  is split (RFC 3986, appendix B) and rebuilt from its scheme, host and path and its query and
  fragment *keys*; the user-info and every query or fragment *value* become ``[REDACTED]``,
  whatever they look like (``X-Amz-Signature``, ``sig``, ``token``, ``key``, …). See :func:`mask_url`.
* **Credential shapes** anywhere in text (:data:`SHAPES`): the platform's own keys and tokens,
  cloud and SaaS keys, JWTs, PEM private keys, authorization values, ``password=``-style pairs.

Speed: the access log runs this on every request. Each shape names the literals (lower case) that
any match of it contains; text holding none of a shape's literals cannot hold that shape, so
only the shapes whose literals occur are compiled into one expression (cached per combination),
and most lines skip regular expressions altogether. Standard library only: the data plane uses it.

Redaction is idempotent (redacting twice changes nothing more) and leaves text without any of
these shapes unchanged.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class Shape:
    """One credential shape: a regular expression, the lower-case literals every match contains,
    and whether it is masked whole or after a kept prefix (the named group ``keep``)."""

    name: str
    triggers: tuple[str, ...]
    pattern: str


# Key names whose values are secrets, in ``key=value`` text and as keys of structured data.
# Matched anywhere inside a longer key (``client_secret``, ``X-Amz-Security-Token``) ...
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "api_key", "api-key",
                 "accesskey", "access_key", "access-key", "privatekey", "private_key", "private-key",
                 "credential", "signature", "sessionid", "session_id", "cookie")
# ... or only as the whole key (``sig=``, ``pwd=``, not ``design=``).
_SECRET_KEYS_WHOLE = ("sig", "pwd", "pass", "auth", "authorization", "key", "dsn")
# Literals one of which every such name contains (the words hold one each; a test says so).
_KEY_TRIGGERS = ("pass", "secret", "token", "key", "credential", "sig", "session", "cookie", "pwd", "auth", "dsn")
_KEY_WORDS = "|".join(re.escape(w) for w in _SECRET_WORDS)
_KEY_WHOLE = "|".join(re.escape(w) for w in _SECRET_KEYS_WHOLE)
_TEXT_KEY = re.compile(rf"[A-Za-z0-9_.\-]*(?i:{_KEY_WORDS})[A-Za-z0-9_\-]*|(?i:{_KEY_WHOLE})")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# Headers written ``Name: value`` in text; other names take ``:`` only quoted (JSON, YAML-ish).
_HEADER_NAMES = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-auth-token",
                           "private-token", "x-goog-api-key", "cookie", "set-cookie"})
# What follows a secret's name: a closing quote when it was quoted, ``=`` or ``:``.
_SEPARATOR = re.compile(r"""(?P<quote>\\?["'])?[ \t]*(?P<sep>[=:])[ \t]*""")
# A value: quoted (its quotes escaped too, inside a JSON string; JSON escapes in it), or a
# scheme and a run of characters that cannot end it. ``[`` starts none: ``[REDACTED]`` is never
# matched again (idempotence).
_VALUE = (r"""(?:\\?"(?:[^"\\\[\n]|\\[^"])+(?:\\?")?|\\?'(?:[^'\\\[\n]|\\[^'])+(?:\\?')?"""
          r"""|(?:(?i:bearer|basic|token|bot|digest|negotiate)(?:\s+|%20|\+))?[^\s"'&,;<>()\[\]{}\\]+)""")
_AUTH_SCHEME = r"(?i:bearer|basic|token|bot|digest|negotiate)(?:\s+|%20|\+)"
_VALUE_AT = re.compile(_VALUE)
# A header's value: a scheme, then a credential long enough not to be a word
# (``Authorization: Bearer <token>`` in a help text stays).
_HEADER_VALUE_AT = re.compile(rf"(?:{_AUTH_SCHEME})?[A-Za-z0-9._~+/=%\-]{{8,}}")

SHAPES: tuple[Shape, ...] = (
    # The platform's own: API keys mk.<id>.<secret>, refresh tokens rt.<id>.<secret>, webhook secrets.
    Shape("platform key or refresh token", ("mk.", "rt."), r"\b(?:mk|rt)\.[A-Za-z0-9_]+\.[A-Za-z0-9_\-]{16,}"),
    Shape("webhook signing secret", ("whsec_",), r"\bwhsec_[A-Za-z0-9+/=_\-]+"),
    Shape("JWT", ("eyj",), r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
    # PEM private keys (RSA, EC, OPENSSH, ENCRYPTED, ...), also cut short (an excerpt in an error).
    Shape("PEM private key", ("-----begin",),
          r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----"
          r"|(?:[A-Za-z0-9+/=\s]|\\[nrt])*)"),
    # Long-term (AKIA) and temporary (ASIA) access key ids; the other prefixes name users and
    # roles, not credentials.
    Shape("AWS access key id", ("akia", "asia"), r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    Shape("GitHub token", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
          r"\b(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255})"),
    Shape("GitLab token", ("glpat-", "gldt-", "glrt-", "glptt-", "glsoat-"),
          r"\b(?:glpat|gldt|glrt|glptt|glsoat)-[A-Za-z0-9_\-]{20,}"),
    Shape("Slack token", ("xox", "xapp"), r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9\-]{10,}"),
    Shape("Slack webhook", ("slack",),
          r"(?P<keep>hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+"),
    Shape("Discord webhook", ("discord",),
          r"(?P<keep>discord(?:app)?\.com/api/webhooks/[0-9]+/)[A-Za-z0-9_\-]+"),
    Shape("Stripe key", ("_live_", "_test_"),
          r"\b[srp]k_(?:live|test)_[A-Za-z0-9]{10,}"),
    Shape("Google API key", ("aiza",), r"\bAIza[0-9A-Za-z_\-]{30,}"),
    Shape("Google OAuth token or secret", ("ya29.", "gocspx-", "1//"),
          r"(?:\bya29\.[0-9A-Za-z_\-]+|\bGOCSPX-[0-9A-Za-z_\-]+|(?<![A-Za-z0-9:/])1//0[0-9A-Za-z_\-]{20,})"),
    Shape("OpenAI or Anthropic key", ("sk-",), r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}"),
    Shape("Hugging Face, npm, PyPI, SendGrid token", ("hf_", "npm_", "pypi-", "sg."),
          r"\b(?:hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_\-]{50,}"
          r"|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,})"),
    Shape("Telegram bot token", (":aa",), r"\b[0-9]{8,10}:AA[0-9A-Za-z_\-]{30,}"),
    # A bare AWS secret access key: 40 characters of base64 with upper and lower case and a digit
    # or slash, standing alone. It carries no literal, so it is looked for in every text of 40
    # characters or more (``_ALWAYS``); hex digests (no upper case) and our ids never match.
    Shape("AWS secret access key", (),
          r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
          r"(?=[A-Za-z0-9/+]{0,39}[0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
    # Authorization values: ``Bearer x`` (also URL-encoded, ``Bearer%20x``); ``Basic`` only before
    # something base64 that is not a plain word (``Basic authentication`` stays).
    Shape("Bearer credential", ("bearer",), r"(?P<keep>\b(?i:bearer)(?:\s+|%20|\+))[A-Za-z0-9._\-~+/%]+=*"),
    Shape("Basic credential", ("basic",),
          r"(?P<keep>\b(?i:basic)(?:\s+|%20|\+))(?=[A-Za-z0-9+/]*(?:[a-z][A-Z]|[0-9=]))[A-Za-z0-9+/]{6,}={0,2}"
          r"(?![A-Za-z0-9+/=_.\-])"),
)

# URLs: a scheme, ``://``, then everything up to a character that cannot be in one unescaped.
_URL = r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>\\`]+"
# The same, percent-encoded (a URL inside a query value or a form body).
_ENCODED_URL = r"\b[A-Za-z][A-Za-z0-9+.\-]*%3[Aa]%2[Ff]%2[Ff][A-Za-z0-9%._~+\-!*]+"
_URL_TRIGGERS = ("://",)
_ENCODED_URL_TRIGGERS = ("%3a%2f%2f",)
# RFC 3986, appendix B: the regular expression that splits any URI into its five parts.
_URI_PARTS = re.compile(r"^([^:/?#]+:)?(//[^/?#]*)?([^?#]*)(\?[^#]*)?(#.*)?$", re.DOTALL)

def _index_triggers() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each distinct trigger literal with the shapes it enables (-1: URLs, -2: encoded URLs)."""
    by_literal: dict[str, list[int]] = {}
    for index, shape in enumerate(SHAPES):
        for literal in shape.triggers:
            by_literal.setdefault(literal, []).append(index)
    for literal in _URL_TRIGGERS:
        by_literal.setdefault(literal, []).append(-1)
    for literal in _ENCODED_URL_TRIGGERS:
        by_literal.setdefault(literal, []).append(-2)
    return tuple((literal, tuple(indexes)) for literal, indexes in by_literal.items())


_ALL_TRIGGERS = _index_triggers()
_LITERALS = tuple(literal for literal, _ in _ALL_TRIGGERS)
_SHAPES_OF = dict(_ALL_TRIGGERS)
_NONE: frozenset[int] = frozenset()


@functools.lru_cache(maxsize=512)
def _combined(active: frozenset[int]) -> re.Pattern[str]:
    """One expression for the shapes in ``active`` (URLs first, so a URL is masked as a whole)."""
    parts = []
    if -1 in active:
        parts.append(f"(?P<url>{_URL})")
    if -2 in active:
        parts.append(f"(?P<encurl>{_ENCODED_URL})")
    for index in sorted(i for i in active if i >= 0):
        pattern = SHAPES[index].pattern.replace("(?P<keep>", f"(?P<keep{index}>")
        parts.append(f"(?P<s{index}>{pattern})")
    return re.compile("|".join(parts))


_ALWAYS = frozenset(index for index, shape in enumerate(SHAPES) if not shape.triggers)
_ALWAYS_FROM = 40  # the shortest text a trigger-less shape can match


def _active(lowered: str) -> frozenset[int]:
    always = _ALWAYS if len(lowered) >= _ALWAYS_FROM else _NONE
    hits = [literal for literal in _LITERALS if literal in lowered]
    if not hits:
        return always
    return always | frozenset(index for literal in hits for index in _SHAPES_OF[literal])


def _replace(match: re.Match[str]) -> str:
    groups = match.groupdict()
    if groups.get("url") is not None:
        return mask_url(match.group("url"))
    if groups.get("encurl") is not None:
        return quote(mask_url(unquote(match.group("encurl"))), safe="")
    for group, value in groups.items():
        if value is not None and group.startswith("s"):
            return (groups.get("keep" + group[1:]) or "") + REDACTED
    return REDACTED  # pragma: no cover - every alternative is a named group


def _named_values(text: str, lowered: str) -> str:
    """Mask the values of secret-named keys: ``password=x``, ``client_secret = "x"``,
    ``X-Amz-Signature=x``, JSON's ``"private_key_id": "x"`` (also escaped inside a JSON string),
    ``Authorization: Token x``. Driven by where a name literal occurs (``str.find``), so text
    without one costs a few substring searches, and a name is checked whole (``design`` holds
    ``sig`` and is not a secret's name)."""
    words = [word for word in _KEY_TRIGGERS if word in lowered]
    if not words:
        return text
    if len(lowered) != len(text):  # a character whose lower case is longer: positions differ
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    spans: list[tuple[int, int]] = []
    seen: set[int] = set()
    size = len(text)
    for word in words:
        at = lowered.find(word)
        while at != -1:
            start, end = at, at + len(word)
            while start > 0 and text[start - 1] in _NAME_CHARS:
                start -= 1
            while end < size and text[end] in _NAME_CHARS:
                end += 1
            at = lowered.find(word, end)
            if start in seen:
                continue
            seen.add(start)
            name = text[start:end]
            if not _TEXT_KEY.fullmatch(name):
                continue
            sep = _SEPARATOR.match(text, end)
            if sep is None:
                continue
            opening = start > 0 and text[start - 1] in "\"'"
            closing = sep.group("quote") is not None
            if closing and not opening:
                continue  # a closing quote without an opening one
            if sep.group("sep") == ":" and not closing:
                # ``Name: value`` unquoted: only a header's name (``Authorization: Token x``).
                if name.lower() not in _HEADER_NAMES:
                    continue
                value = _HEADER_VALUE_AT.match(text, sep.end())
            else:
                value = _VALUE_AT.match(text, sep.end())
            if value is not None and value.end() > value.start():
                spans.append((value.start(), value.end()))
    if not spans:
        return text
    out, last = [], 0
    for begin, finish in sorted(spans):
        if begin < last:
            continue
        out.append(text[last:begin])
        out.append(_masked_value(text[begin:finish]))
        last = finish
    out.append(text[last:])
    return "".join(out)


def _masked_value(value: str) -> str:
    """``[REDACTED]`` in place of a value, its quotes kept (``"x"`` → ``"[REDACTED]"``)."""
    for quote_mark in ('\\"', "\\'", '"', "'"):
        if value.startswith(quote_mark):
            closing = quote_mark if value.endswith(quote_mark) and len(value) > 2 * len(quote_mark) else ""
            return quote_mark + REDACTED + closing
    return REDACTED


def _shapes_only(text: str) -> str:
    active = _active(text.lower()) - {-1, -2}
    return _combined(active).sub(_replace, text) if active else text


def redact_text(text: str) -> str:
    """``text`` with every URL masked (see :func:`mask_url`), every secret-named value and every
    credential shape replaced."""
    lowered = text.lower()
    named = _named_values(text, lowered)
    if named is not text:
        text, lowered = named, named.lower()
    active = _active(lowered)
    return _combined(active).sub(_replace, text) if active else text


def _mask_params(part: str) -> str:
    """``a=1&b=2`` → ``a=[REDACTED]&b=[REDACTED]``: keys kept, every value masked; a part without
    ``=`` is a bare value (an opaque token as often as a flag) and is masked too."""
    masked: list[str] = []
    for item in part.split("&"):  # the WHATWG URL standard's separator
        if not item:
            masked.append(item)
            continue
        name, sep, value = item.partition("=")
        if not sep:
            masked.append(REDACTED)
        else:
            masked.append(f"{_shapes_only(name)}={REDACTED if value else ''}")
    return "&".join(masked)


def mask_url(url: str) -> str:
    """A URL fit to log or show: scheme, host, port and path kept (credential shapes in them still
    masked), the user-info and every query and fragment value replaced, whatever they hold.

    >>> mask_url("https://user:pw@bucket.s3.amazonaws.com/a.csv?X-Amz-Signature=abc&v=1#t=x")
    'https://[REDACTED]@bucket.s3.amazonaws.com/a.csv?X-Amz-Signature=[REDACTED]&v=[REDACTED]#t=[REDACTED]'
    """
    parts = _URI_PARTS.match(url)
    assert parts is not None  # the expression matches every string
    scheme, authority, path, query, fragment = parts.groups()
    out = scheme or ""
    if authority is not None:
        userinfo, at, host = authority[2:].rpartition("@")
        out += "//" + (REDACTED + "@" if at and userinfo else "") + host
    out = _shapes_only(out + path)
    if query is not None:
        out += "?" + _mask_params(query[1:])
    if fragment is not None:
        out += "#" + _mask_params(fragment[1:])
    return out


# In structured data a key named just ``key`` is as often a name as a secret (its value's shape
# still decides); the other names are the same as in text.
_STRUCTURED_KEY = re.compile(rf"[A-Za-z0-9_.\-]*(?i:{_KEY_WORDS})[A-Za-z0-9_\-]*"
                             rf"|(?i:{'|'.join(re.escape(w) for w in _SECRET_KEYS_WHOLE if w != 'key')})")


@functools.lru_cache(maxsize=4096)
def secret_key(key: str) -> bool:
    """Whether a structured value under ``key`` is a secret by its name alone."""
    return _STRUCTURED_KEY.fullmatch(key) is not None


def redact(value: Any, *, key: str | None = None, text: bool = True, keys: bool = True) -> Any:
    """Redact a structure: a text or structured value under a secret-named key entirely (unless
    ``keys`` is False; numbers, booleans and empty values are kept: ``token_count: 3``,
    ``secret_included: true`` say nothing secret), credential shapes and URLs in any string, keys
    included (unless ``text`` is False: the caller redacts the serialized text as a whole)."""
    if value is None or isinstance(value, int | float):  # numbers and booleans say nothing secret
        return value
    if keys and key is not None and isinstance(value, str | dict | list | tuple) and value and secret_key(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value) if text else value
    if isinstance(value, dict):
        # A key is text too (``{"AKIA…": 1}``), judged as a name before it is masked.
        return {(redact_text(k) if text and isinstance(k, str) else k): redact(v, key=str(k), text=text, keys=keys)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, text=text, keys=keys) for v in value]
    return value
