"""The webhook SSRF rules: address classes, URL checks, and resolution checked on every call."""

from __future__ import annotations

import ipaddress

import pytest

from shared.webhooks.destinations import (
    DestinationPolicy,
    DestinationRefused,
    SystemResolver,
    address_problem,
)


class TableResolver:
    """A resolver answering from a table the test can change between calls (DNS rebinding)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise OSError("no such host")
        return self.table[host]


@pytest.mark.parametrize("address", [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1",
    "127.8.9.10", "169.254.169.254", "169.254.0.1", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1",
    "192.168.0.1", "198.18.0.1", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    "::", "::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "::10.0.0.1",
    "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "100::1", "2001::1", "2001:db8::1", "2002:a00:1::1",
    "2002:7f00:1::", "fc00::1", "fd12:3456:789a::1", "fe80::1", "febf::1", "fec0::1", "ff02::1", "ff0e::1",
])
def test_non_public_addresses_are_refused(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e", "::ffff:93.184.216.34", "64:ff9b::808:808", "2002:5db8:d822::1",
])
def test_public_addresses_are_allowed(address):
    assert address_problem(ipaddress.ip_address(address)) is None


def test_loopback_is_allowed_only_when_enabled_and_only_loopback():
    for address in ("127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"):
        ip = ipaddress.ip_address(address)
        assert address_problem(ip) == "loopback"
        assert address_problem(ip, allow_loopback=True) is None
    for address in ("0.0.0.0", "10.0.0.1", "169.254.169.254", "fc00::1", "::"):
        assert address_problem(ipaddress.ip_address(address), allow_loopback=True) is not None


@pytest.mark.parametrize(("url", "reason"), [
    ("http://93.184.216.34/", "only https"),
    ("ftp://93.184.216.34/", "only https"),
    ("file:///etc/passwd", "only https"),
    ("gopher://93.184.216.34:70/", "only https"),
    ("//93.184.216.34/", "only https"),
    ("https://user:pw@93.184.216.34/", "credentials"),
    ("https://user@93.184.216.34/", "credentials"),
    ("https:///path", "no host"),
    ("https://exa mple.com/", "whitespace"),
    ("https://example.com\\@10.0.0.1/", "backslash"),
    ("https://example.com:99999/", "not valid"),
    ("https://example.com:0/", "port"),
    ("https://-bad-.example/", "host name"),
    ("https://[zz::1]/", "not valid"),
    ("https://" + "a" * 2050 + ".com/", "longer"),
])
def test_static_checks(url, reason):
    policy = DestinationPolicy(TableResolver({}))
    with pytest.raises(DestinationRefused, match=reason):
        policy.parse(url)


def test_parse_normalises_and_keeps_path_and_query():
    policy = DestinationPolicy(TableResolver({}))
    dest = policy.parse("HTTPS://Hooks.Example.COM.:8443/in/bound?token=abc#frag")
    assert (dest.scheme, dest.host, dest.port, dest.target) == ("https", "hooks.example.com", 8443,
                                                               "/in/bound?token=abc")
    assert dest.url == "https://hooks.example.com:8443/in/bound?token=abc"
    assert policy.parse("https://[2606:4700::1111]/").url == "https://[2606:4700::1111]/"
    assert policy.parse("https://bücher.example/x").host == "xn--bcher-kva.example"


def test_every_resolved_address_must_be_public():
    policy = DestinationPolicy(TableResolver({"mixed.example": ["93.184.216.34", "10.0.0.7"]}))
    with pytest.raises(DestinationRefused, match=r"mixed\.example resolves to 10\.0\.0\.7, a private address"):
        policy.check("https://mixed.example/")


def test_unresolvable_host_is_refused():
    with pytest.raises(DestinationRefused, match="does not resolve"):
        DestinationPolicy(TableResolver({})).check("https://nowhere.example/")


def test_system_resolver_refuses_the_invalid_tld():
    with pytest.raises(DestinationRefused, match="does not resolve"):
        DestinationPolicy(SystemResolver(timeout_seconds=5)).check("https://does-not-exist.invalid/")


def test_numeric_host_forms_are_resolved_and_checked():
    # getaddrinfo reads "2130706433" and "0x7f.1" as 127.0.0.1: the check applies to what it resolves to.
    policy = DestinationPolicy(SystemResolver())
    for url in ("https://2130706433/", "https://0x7f.1/", "https://127.1/"):
        with pytest.raises(DestinationRefused, match="loopback"):
            policy.check(url)


def test_resolution_is_checked_again_on_every_call():
    resolver = TableResolver({"rebind.example": ["93.184.216.34"]})
    policy = DestinationPolicy(resolver)
    dest, address = policy.check("https://rebind.example/hook")
    assert address == "93.184.216.34"
    resolver.table["rebind.example"] = ["169.254.169.254"]
    with pytest.raises(DestinationRefused, match="link-local"):
        policy.resolve(dest)
    assert resolver.calls == ["rebind.example", "rebind.example"]


def test_plain_http_only_to_loopback_when_allowed():
    resolver = TableResolver({"localhost": ["127.0.0.1"], "public.example": ["93.184.216.34"]})
    strict = DestinationPolicy(resolver)
    with pytest.raises(DestinationRefused, match="only https"):
        strict.parse("http://127.0.0.1:8080/")
    with pytest.raises(DestinationRefused, match="loopback"):
        strict.check("https://localhost/")
    local = DestinationPolicy(resolver, allow_loopback=True)
    assert local.check("http://127.0.0.1:8080/in")[1] == "127.0.0.1"
    assert local.check("http://localhost:8080/in")[1] == "127.0.0.1"
    assert local.check("https://localhost/in")[1] == "127.0.0.1"
    with pytest.raises(DestinationRefused, match="plain http is only allowed to loopback"):
        local.check("http://public.example/")
    with pytest.raises(DestinationRefused, match="private"):
        local.check("http://10.0.0.1/")
