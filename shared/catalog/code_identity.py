"""What identifies the code a run of a version executes (issue 14), as approvals bind it.

A version with a package runs exactly those bytes: ``"sha256:" + the package's SHA-256``. A version
without one (a built-in agent, whose code ships with the platform at that version) is identified
by its manifest: ``"sha256:" + SHA-256 of its RFC 8785 canonical JSON``. The data plane reports the
same value with every gated action (``runtime/approvals.py``), and the control plane refuses an
action whose digest is not the run's version's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785

from shared.catalog.models import PackageOut


def code_digest(manifest_json: Mapping[str, Any], package: PackageOut | None) -> str:
    """``sha256:<hex>`` of the version's package, or of its canonical manifest when it has none."""
    if package is not None:
        return f"sha256:{package.sha256}"
    return "sha256:" + hashlib.sha256(rfc8785.dumps(dict(manifest_json))).hexdigest()
