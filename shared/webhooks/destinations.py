"""Where a webhook may send: the SSRF rules, checked when a webhook is created and again per delivery.

A webhook URL is attacker-controlled input that makes the platform send requests from inside its
network, so the rules are strict:

* ``https`` only; plain ``http`` only to a loopback address, and only when the platform allows
  loopback receivers at all (``webhooks_allow_loopback``: local development and tests).
* No credentials in the URL (``user:pass@``), no whitespace, control characters or backslashes
  (URL parsers disagree about them).
* The host is resolved and *every* address it resolves to must be public: private, loopback,
  link-local (cloud metadata at 169.254.169.254), shared (100.64.0.0/10), multicast, reserved,
  documentation and unspecified ranges are refused, for IPv4 and IPv6, including IPv4 addresses
  embedded in IPv6 (``::ffff:10.0.0.1``, NAT64, 6to4).
* The check runs again at every delivery attempt, and the request goes to the address that check
  approved (with the URL's name as Host header and TLS server name), so a DNS answer that changes
  after the check (DNS rebinding) cannot redirect a delivery inside the network.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
import threading
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class DestinationRefused(Exception):
    """The URL, or an address its host resolves to, is not an allowed webhook destination."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Ranges refused whatever Python's ``is_global`` says (its answer has changed between versions).
_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), label) for net, label in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved (6to4 relay)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "reserved (IPv4-compatible)"),
        ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64 or 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_problem(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` is not an allowed destination (e.g. ``"private"``), or None when it is allowed."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_problem(embedded, allow_loopback=allow_loopback)
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    for network, label in _BLOCKED:
        if ip.version == network.version and ip in network:
            return label
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global:
        return "not publicly routable"
    return None


def is_loopback(ip: IPAddress) -> bool:
    """Loopback, including an IPv4 loopback address inside IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return embedded.is_loopback
    return ip.is_loopback


@dataclass(frozen=True)
class Destination:
    """A webhook URL that passed the static checks, split into what a request needs."""

    url: str
    scheme: str
    host: str
    port: int
    target: str

    @property
    def is_ip_literal(self) -> bool:
        """Whether the URL names an address rather than a host name."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


class HostResolver(Protocol):
    """Turns a host name into the addresses a connection would use."""

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to (empty or an ``OSError`` when it does not resolve)."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), bounded by a timeout."""

    def __init__(self, *, timeout_seconds: float = 5.0, max_workers: int = 4) -> None:
        self.timeout_seconds = timeout_seconds
        self._max_workers = max_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(self._max_workers,
                                                                       thread_name_prefix="webhook-dns")
            return self._executor

    def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host``; a lookup slower than the timeout counts as not resolving."""
        future = self._pool().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=self.timeout_seconds)
        except concurrent.futures.TimeoutError as exc:
            raise OSError(f"resolving {host} took longer than {self.timeout_seconds:g}s") from exc
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class DestinationPolicy:
    """Checks webhook URLs and picks the address to deliver to (see the module docstring)."""

    def __init__(self, resolver: HostResolver, *, allow_loopback: bool = False) -> None:
        self.resolver = resolver
        self.allow_loopback = allow_loopback

    def parse(self, url: str) -> Destination:
        """The static checks: scheme, credentials, host syntax, port. No network access."""
        if len(url) > MAX_URL_LENGTH:
            raise DestinationRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
        if _FORBIDDEN_CHARS.search(url):
            raise DestinationRefused("the URL contains whitespace, control characters or backslashes")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise DestinationRefused(f"the URL is not valid: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise DestinationRefused("only https URLs are allowed")
        if scheme == "http" and not self.allow_loopback:
            raise DestinationRefused("only https URLs are allowed (plain http is not encrypted)")
        if "@" in parts.netloc:
            raise DestinationRefused("the URL must not contain credentials (user:password@)")
        host = _normalise_host(parts.hostname or "", bracketed=parts.netloc.startswith("["))
        if port == 0:
            raise DestinationRefused("the URL's port is not valid")
        port = port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        shown_host = f"[{host}]" if ":" in host else host
        default_port = 443 if scheme == "https" else 80
        netloc = shown_host if port == default_port else f"{shown_host}:{port}"
        return Destination(url=f"{scheme}://{netloc}{target}", scheme=scheme, host=host, port=port,
                           target=target)

    def resolve(self, destination: Destination) -> str:
        """Resolve the host now and return the address to connect to; refuse if any address is not allowed."""
        if destination.is_ip_literal:
            addresses = [destination.host]
        else:
            try:
                addresses = self.resolver.resolve(destination.host, destination.port)
            except (OSError, UnicodeError) as exc:
                raise DestinationRefused(f"the host {destination.host} does not resolve") from exc
            if not addresses:
                raise DestinationRefused(f"the host {destination.host} does not resolve")
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            problem = address_problem(ip, allow_loopback=self.allow_loopback)
            if problem is not None:
                named = "" if destination.is_ip_literal else f"{destination.host} resolves to "
                raise DestinationRefused(f"{named}{ip}, a {problem} address, which webhooks may not reach")
            if destination.scheme == "http" and not is_loopback(ip):
                raise DestinationRefused("plain http is only allowed to loopback addresses; use https")
        return addresses[0].split("%", 1)[0]

    def check(self, url: str) -> tuple[Destination, str]:
        """``parse`` then ``resolve``: the destination and the address approved for it right now."""
        destination = self.parse(url)
        return destination, self.resolve(destination)


def _normalise_host(host: str, *, bracketed: bool) -> str:
    if not host:
        raise DestinationRefused("the URL has no host")
    if bracketed:
        try:
            return str(ipaddress.IPv6Address(host.split("%", 1)[0]))
        except ValueError as exc:
            raise DestinationRefused("the URL's IPv6 address is not valid") from exc
    host = host.rstrip(".")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise DestinationRefused("the URL's host name is not valid") from exc
    if not _HOSTNAME.match(ascii_host):
        raise DestinationRefused("the URL's host name is not valid")
    return ascii_host
