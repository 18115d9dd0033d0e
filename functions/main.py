"""Entry points for functions-framework: each registered operation is a target of its name.

``functions-framework --target get_org`` (or a Cloud Functions deploy with
``--entry-point get_org``) resolves the name here through the registry.
"""

from __future__ import annotations

import importlib
from typing import Any

OPERATION_MODULES = (
    "functions.health",
    "functions.meta",
    "functions.auth",
    "functions.orgs",
    "functions.audit",
    "functions.deployments",
    "functions.dataplane",
    "functions.manifests",
    "functions.catalog",
    "functions.moderation",
    "functions.runs",
    "functions.tasks",
    "functions.webhooks",
    "functions.dispatch",
    "functions.scheduled",
    "functions.billing",  # billing (issue 16)
    "functions.approvals",  # issue 15
    "functions.notifications",  # issue 15
    "functions.memory",  # issue 17
)


def load_operations() -> None:
    """Import every operation module (each registers its operations once)."""
    for module in OPERATION_MODULES:
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    from functions.operation import REGISTRY  # noqa: PLC0415

    load_operations()
    try:
        return REGISTRY.get(name).handler
    except KeyError:
        raise AttributeError(name) from None
