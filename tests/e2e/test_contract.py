"""The API answers as /openapi.json says: schemathesis' stateless checks against the running gateway.

For every operation of the document, schemathesis generates requests that fit its schema and
requests that break it (fixed seed, a bounded number of each) and sends them through the real
gateway in-process (WSGI), authenticated as a user who is a platform admin and the admin of an org
whose id fills ``{org_id}``. Each answer must be no server error, with a documented status, a
documented content type, and a body that matches the documented schema.
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
import schemathesis
from contract_support import Tenant, path_ids, tenant, user
from hypothesis import HealthCheck, Phase, given, strategies
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.main import load_operations
from functions.openapi import openapi_document

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per operation and kind of request (fitting, breaking, at real ids); more for a deeper run.
EXAMPLES = int(os.environ.get("MARKETPLACE_CONTRACT_EXAMPLES", "12"))
SEED = 18

load_operations()
OPERATIONS = sorted(f"{method.upper()} {path}" for path, item in openapi_document()["paths"].items()
                    for method in item)
# Delivers every org's due webhook events to the outside world: its success path is
# tests/e2e/test_webhooks.py's; here it runs without the platform admin (a 403 in the contract).
WITHOUT_PLATFORM_ADMIN = {"POST /internal/webhooks/dispatch"}


@pytest.fixture(scope="module")
def world(app: Any, container: Any, settings: Any) -> Tenant:
    world = tenant(app, container, settings, platform_admin=True, finish_run=True)
    world.members["plain"] = user(app, container, "plain")
    return world


@pytest.fixture(scope="module")
def api(app: Any, world: Tenant) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_keeps_its_contract(api: Any, world: Tenant, label: str) -> None:
    method, path = label.split(" ", 1)
    operation = api[path][method]
    token = world.members["plain"].token if label in WITHOUT_PLATFORM_ADMIN else world.admin.token
    fixed = {"org_id": world.org_id} if "{org_id}" in path else None
    headers = {"Authorization": f"Bearer {token}"}
    variants = [operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed, headers=headers),
                operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed, headers=headers)]
    ids = path_ids(world, path)
    if ids.keys() - {"org_id"}:  # also at the org's real resources, not only at ids that name nothing
        variants.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=ids, headers=headers))
    strategy = strategies.one_of(*variants)

    @hypothesis.settings(max_examples=len(variants) * EXAMPLES, deadline=None, database=None, derandomize=False,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.seed(SEED)
    @given(case=strategy)
    def check(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    check()

