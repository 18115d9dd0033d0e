"""The action an approval is bound to, in RFC 8785 canonical JSON, and its hash.

The data plane computes the same bytes (``runtime/approvals.py`` uses the same library and the
same fields), so an approval names one exact call: agent version and package digest, tool,
arguments, run and interrupt.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_action(*, agent_id: str, version: str, package_digest: str, tool: str, arguments: Any,
                     run_id: str, interrupt_id: str) -> bytes:
    """The action's canonical JSON (RFC 8785)."""
    return rfc8785.dumps({"agent_id": agent_id, "version": version, "package_digest": package_digest,
                          "tool": tool, "arguments": arguments, "run_id": run_id,
                          "interrupt_id": interrupt_id})


def action_hash(canonical: bytes) -> str:
    """SHA-256 of the canonical JSON, hex."""
    return hashlib.sha256(canonical).hexdigest()
