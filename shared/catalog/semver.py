"""Semantic versions (semver.org 2.0.0): strict parsing and precedence ordering.

Agent versions are immutable and ordered by precedence, so "latest version" and "is this an upgrade"
questions are answered here, never by comparing strings.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# The regular expression published on semver.org, restricted to ASCII digits; it has no
# look-arounds, so the same text also works as a JSON Schema ``pattern``.
_NUMBER = r"0|[1-9][0-9]*"
_PRERELEASE_ID = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_BUILD_ID = r"[0-9A-Za-z-]+"
SEMVER_PATTERN = (
    rf"^({_NUMBER})\.({_NUMBER})\.({_NUMBER})"
    rf"(?:-((?:{_PRERELEASE_ID})(?:\.(?:{_PRERELEASE_ID}))*))?"
    rf"(?:\+({_BUILD_ID}(?:\.{_BUILD_ID})*))?$"
)
"""Anchored pattern for a semver 2.0.0 version string (usable as a JSON Schema ``pattern``)."""

MAX_LENGTH = 128
"""Longest accepted version string; semver sets no limit, but versions are stored and shown."""

_SEMVER = re.compile(SEMVER_PATTERN)

# Precedence key of one pre-release identifier: numeric identifiers compare numerically and rank
# below alphanumeric ones, which compare in ASCII order (semver.org §11.4.1-3).
_IdentifierKey = tuple[int, int, str]
_PrecedenceKey = tuple[int, int, int, int, tuple[_IdentifierKey, ...]]


class SemVerError(ValueError):
    """Text that is not a semver 2.0.0 version."""


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class SemVer:
    """A parsed semantic version, ordered by semver precedence.

    Equality, hashing and ordering all follow precedence, so build metadata is ignored
    (``1.0.0+a == 1.0.0+b``), as semver.org §10 requires; compare ``str()`` for textual identity.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Re-checking the rendered text keeps direct construction as strict as parse().
        if not _SEMVER.fullmatch(str(self)):
            raise SemVerError(f"{str(self)!r} is not a valid semantic version")

    @classmethod
    def parse(cls, text: str) -> SemVer:
        """Parse ``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`` strictly (no ``v`` prefix, no spaces)."""
        if not isinstance(text, str):
            raise SemVerError(f"a version must be a string, not {type(text).__name__}")
        if len(text) > MAX_LENGTH:
            raise SemVerError(f"a version must be at most {MAX_LENGTH} characters")
        match = _SEMVER.fullmatch(text)
        if match is None:
            raise SemVerError(
                f"{text!r} is not a semantic version: expected MAJOR.MINOR.PATCH with optional "
                "-PRERELEASE and +BUILD, numbers without leading zeros (e.g. 1.4.0 or 2.0.0-rc.1)"
            )
        major, minor, patch, prerelease, build = match.groups()
        return cls(
            int(major),
            int(minor),
            int(patch),
            tuple(prerelease.split(".")) if prerelease else (),
            tuple(build.split(".")) if build else (),
        )

    @property
    def is_prerelease(self) -> bool:
        """True for versions such as ``1.0.0-rc.1``, which rank below their release."""
        return bool(self.prerelease)

    def precedence_key(self) -> _PrecedenceKey:
        """A tuple whose natural ordering is semver precedence."""
        # A release ranks above every pre-release of the same MAJOR.MINOR.PATCH (§11.3), hence the
        # 1/0 flag ahead of the identifiers; a shorter identifier list ranks first when all
        # preceding identifiers are equal (§11.4.4), which is plain tuple ordering.
        identifiers = tuple(
            (0, int(part), "") if part.isdigit() else (1, 0, part) for part in self.prerelease
        )
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self.precedence_key() == other.precedence_key()

    def __lt__(self, other: SemVer) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self.precedence_key() < other.precedence_key()

    def __hash__(self) -> int:
        return hash(self.precedence_key())
