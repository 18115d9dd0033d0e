"""The operation registry, the OpenAPI document and the gateway export."""

from __future__ import annotations

import openapi_spec_validator
import pytest
from pydantic import BaseModel

from functions.main import load_operations
from functions.openapi import gateway_document, openapi_document
from functions.operation import ANY_MEMBER, REGISTRY, Registry, operation


def test_duplicates_fail_at_registration():
    registry = Registry()

    @operation("GET", "/x", summary="x", registry=registry)
    def first(call):
        return None

    with pytest.raises(RuntimeError, match="route registered twice"):
        @operation("GET", "/x", summary="x", registry=registry, name="other")
        def second(call):
            return None

    with pytest.raises(RuntimeError, match="name registered twice"):
        @operation("GET", "/y", summary="y", registry=registry, name="first")
        def third(call):
            return None


def test_org_scoped_operations_must_name_roles():
    with pytest.raises(RuntimeError, match="must name the roles"):
        operation("GET", "/orgs/{org_id}/z", summary="z", registry=Registry())
    operation("GET", "/orgs/{org_id}/z", summary="z", roles=ANY_MEMBER, registry=Registry())


def test_openapi_document_describes_every_operation():
    load_operations()
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(op.method, op.path) for op in REGISTRY if not op.push}
    # The push targets of Cloud Tasks and Cloud Scheduler are called at their function's own URL,
    # never through the API (and answer 404 in local mode): they are not in the document.
    assert {op.path for op in REGISTRY if op.push} == {"/internal/tasks/dispatch", "/internal/scheduled"}
    assert not {"/internal/tasks/dispatch", "/internal/scheduled"} & doc["paths"].keys()
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, entry in item.items():
            assert entry["operationId"] and entry["responses"], (method, path)
            for response in entry["responses"].values():
                ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                if ref:
                    assert ref.split("/")[-1] in schemas, ref
    create_org = doc["paths"]["/orgs"]["post"]
    assert create_org["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/OrgCreate")
    assert any(p["name"] == "Idempotency-Key" for p in create_org["parameters"])
    assert doc["paths"]["/health"]["get"]["security"] == []


def test_openapi_lists_each_operations_statuses_codes_and_media_types():
    load_operations()
    paths = openapi_document()["paths"]

    def codes(path, method, status):
        schema = paths[path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
        return schema["properties"]["error"]["properties"]["code"]["enum"]

    assert {"invalid_grant", "refresh_token_reused"} <= set(codes("/auth/token", "post", 401))
    bundle = paths["/orgs/{org_id}/deployments/{deployment_id}/bundle"]["get"]["responses"]
    assert "not_byoc" in codes("/orgs/{org_id}/deployments/{deployment_id}/bundle", "get", 409)
    assert list(bundle["200"]["content"]) == ["application/gzip"]
    logs = paths["/agents/{agent_id}/runs/{run_id}/logs"]["get"]["responses"]["200"]["content"]
    assert set(logs) == {"application/json", "text/event-stream"}
    assert set(paths["/orgs/{org_id}/deployments/{deployment_id}/upgrade"]["post"]["responses"]) >= {"200", "202"}
    assert "content" not in paths["/tasks/next"]["get"]["responses"]["204"]
    for ops in paths.values():
        for entry in ops.values():
            responses = entry["responses"]
            assert "413" in responses and "500" not in responses
            if entry["security"]:
                assert {"401", "403"} <= responses.keys(), entry["operationId"]
            if "requestBody" in entry:
                assert {"415", "422"} <= responses.keys(), entry["operationId"]
                if "application/json" in entry["requestBody"]["content"]:  # not a body of bytes (issue 14)
                    assert "400" in responses, entry["operationId"]


def test_openapi_validates_as_3_1():
    load_operations()
    openapi_spec_validator.validate(openapi_document())


def test_gateway_export_points_each_operation_at_its_function():
    load_operations()
    doc = gateway_document(project="proj", region="europe-west1")
    assert doc["swagger"] == "2.0"
    get_org = doc["paths"]["/orgs/{org_id}"]["get"]
    assert get_org["x-google-backend"]["address"] == "https://europe-west1-proj.cloudfunctions.net/get_org"
    assert get_org["parameters"] == [{"name": "org_id", "in": "path", "required": True, "type": "string"}]


def test_functions_framework_targets_resolve():
    import functions.main as main

    assert main.get_org.__name__ == "get_org"
    with pytest.raises(AttributeError):
        _ = main.no_such_function


class _Body(BaseModel):
    x: int


def test_served_openapi_matches_generated(anon):
    served = anon.get("/openapi.json")
    assert served.status == 200
    assert served.body["paths"].keys() == openapi_document()["paths"].keys()


def test_gateway_config_carries_quotas_every_public_operation_draws_on():
    load_operations()
    doc = gateway_document(project="proj", region="europe-west1", reads_per_minute=600, writes_per_minute=60)
    management = doc["x-google-management"]
    assert {m["name"]: (m["valueType"], m["metricKind"]) for m in management["metrics"]} == {
        "read-requests": ("INT64", "DELTA"), "write-requests": ("INT64", "DELTA")}
    limits = {limit["metric"]: limit for limit in management["quota"]["limits"]}
    assert limits["read-requests"]["unit"] == "1/min/{project}"
    assert limits["read-requests"]["values"] == {"STANDARD": 600}
    assert limits["write-requests"]["values"] == {"STANDARD": 60}
    metrics = {m["name"] for m in management["metrics"]}
    for path, methods in doc["paths"].items():
        for method, entry in methods.items():
            costs = entry["x-google-quota"]["metricCosts"]
            assert costs == {"read-requests" if method == "get" else "write-requests": 1}, (method, path)
            assert set(costs) <= metrics
            assert "429" in entry["responses"]


def test_every_rate_limited_operation_documents_429_with_retry_after():
    load_operations()
    doc = openapi_document()
    for path, methods in doc["paths"].items():
        for method, entry in methods.items():
            op = next(o for o in REGISTRY if o.path == path and o.method.lower() == method)
            if op.rate_limited:
                assert "Retry-After" in entry["responses"]["429"]["headers"], (method, path)
            else:
                assert "429" not in entry["responses"], (method, path)
