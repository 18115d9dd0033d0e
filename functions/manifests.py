"""Manifest checking for developers: validate without side effects, and the published JSON Schema."""

from __future__ import annotations

from typing import Any

from functions.operation import Call, operation
from shared.catalog import ManifestInput, ManifestVerdictOut, manifest_json_schema, manifest_verdict


@operation("POST", "/manifests/validate", summary="Validate an agent manifest", tags=["developer portal"],
           body=ManifestInput, response=ManifestVerdictOut, idempotent=False)
def validate_manifest(call: Call) -> ManifestVerdictOut:
    return manifest_verdict(call.body.manifest, call.body.manifest_yaml)


@operation("GET", "/manifests/schema", summary="The agent manifest JSON Schema", tags=["developer portal"],
           auth=False)
def manifest_schema(call: Call) -> dict[str, Any]:  # noqa: ARG001 - the schema depends on nothing
    return manifest_json_schema()
