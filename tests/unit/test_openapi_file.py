"""docs/openapi.json is the generated document, kept in step with the code."""

from __future__ import annotations

import json
from pathlib import Path

from functions.main import load_operations
from functions.openapi import openapi_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_docs_openapi_is_up_to_date():
    load_operations()
    expected = openapi_document()
    assert DOC.exists(), "regenerate: marketplace openapi > docs/openapi.json"
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(expected)), (
        "docs/openapi.json is stale; regenerate: marketplace openapi > docs/openapi.json")
