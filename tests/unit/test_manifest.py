"""The agent manifest: validation with paths and messages, loading, semver, money, schema, diffs."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from shared.catalog.manifest import (
    MANIFEST_SCHEMA_ID,
    MAX_MANIFEST_BYTES,
    SCHEMA_FILE,
    AgentManifest,
    ConstraintName,
    ManifestInvalid,
    PricingModel,
    load_manifest,
    manifest_json_schema,
    manifest_json_schema_text,
    parse_manifest_document,
    permission_diff,
    validate_manifest_data,
)
from shared.catalog.semver import SemVer, SemVerError
from shared.kernel.money import MoneyError, micros_to_usd_str, usd_to_micros

REPO = Path(__file__).resolve().parents[2]
BUILTIN_MANIFEST = REPO / "agents" / "cost-anomaly" / "manifest.yaml"

BASE: dict[str, Any] = {
    "name": "cost-anomaly-detector",
    "version": "1.2.3",
    "display_name": "Cost Anomaly Detector",
    "description": "Finds cost anomalies in FOCUS billing data.",
    "category": "finops",
    "tags": ["finops", "cost"],
    "publisher": "Agent Marketplace",
    "runtime": {
        "framework": "langgraph",
        "entrypoint": "runtime.agents.cost_anomaly.graph:build_graph",
        "timeout_seconds": 900,
        "resources": {"cpu": "500m", "memory": "1Gi"},
    },
    "inputs": {
        "type": "object",
        "properties": {"lookback_days": {"type": "integer", "minimum": 1, "maximum": 365}},
        "additionalProperties": False,
    },
    "config": {
        "type": "object",
        "required": ["billing_source"],
        "properties": {"billing_source": {"type": "string"}, "sensitivity": {"type": "number"}},
    },
    "permissions": ["billing:read", "compute:write"],
    "tools": [
        {"name": "billing.read_focus", "description": "Read rows.", "permissions": ["billing:read"]},
        {"name": "compute.propose_remediation", "description": "Propose.", "permissions": ["compute:write"]},
    ],
    "constraints": ["requires-human-approval-for-remediation"],
    "memory": {"levels": [1, 2, 3, 4, 5], "namespaces": ["cost_anomalies"]},
    "pricing": {"base_usd": "0.50", "per_record_usd": "0.001", "per_cpu_hour_usd": 0.5},
    "deployment": ["saas", "byoc"],
}


def manifest_data(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def at(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting (or, for the sentinel DELETE, removing) the value at a dotted/indexed path."""

    def mutate(data: dict[str, Any]) -> None:
        parts = path.replace("[", ".").replace("]", "").split(".")
        keys: list[str | int] = [int(k) if k.isdigit() else k for k in parts]
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value

    return mutate


DELETE = object()

# (mutation, expected path, fragment of the expected message)
INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("name-too-short", at("name", "ab"), "name", "3 to 64 characters"),
    ("name-too-long", at("name", "a" * 65), "name", "3 to 64 characters"),
    ("name-uppercase", at("name", "Cost-Anomaly"), "name", "slug"),
    ("name-starts-with-digit", at("name", "1cost"), "name", "starting with a letter"),
    ("name-trailing-hyphen", at("name", "cost-"), "name", "slug"),
    ("name-missing", at("name", DELETE), "name", "is required"),
    ("version-two-parts", at("version", "1.0"), "version", "semantic version"),
    ("version-leading-zero", at("version", "01.0.0"), "version", "semantic version"),
    ("version-v-prefix", at("version", "v1.0.0"), "version", "semantic version"),
    ("version-empty-prerelease", at("version", "1.0.0-"), "version", "semantic version"),
    ("version-number", at("version", 1), "version", "must be a string"),
    ("display-name-blank", at("display_name", "   "), "display_name", "must not be blank"),
    ("display-name-newline", at("display_name", "Cost\nAnomaly"), "display_name", "single line"),
    ("description-control-char", at("description", "bell \x07"), "description", "control characters"),
    ("category-unknown", at("category", "finance"), "category", "must be one of: 'finops'"),
    ("tags-too-many", at("tags", [f"t{i}" for i in range(21)]), "tags", "at most 20 items"),
    ("tag-not-slug", at("tags", ["Has Space"]), "tags[0]", "lowercase letters"),
    ("tag-duplicate", at("tags", ["cost", "cost"]), "tags[1]", "listed twice"),
    ("publisher-missing", at("publisher", DELETE), "publisher", "is required"),
    ("framework-unknown", at("runtime.framework", "crewai"), "runtime.framework", "'langgraph'"),
    ("entrypoint-no-callable", at("runtime.entrypoint", "runtime.agents.graph"), "runtime.entrypoint",
     "module.path:callable"),
    ("entrypoint-bad-module", at("runtime.entrypoint", "my-agent.graph:build"), "runtime.entrypoint",
     "module.path:callable"),
    ("timeout-zero", at("runtime.timeout_seconds", 0), "runtime.timeout_seconds", "must be ≥ 1"),
    ("timeout-too-long", at("runtime.timeout_seconds", 86_401), "runtime.timeout_seconds", "must be ≤ 86400"),
    ("timeout-string", at("runtime.timeout_seconds", "900"), "runtime.timeout_seconds", "whole number"),
    ("timeout-bool", at("runtime.timeout_seconds", True), "runtime.timeout_seconds", "whole number"),
    ("cpu-words", at("runtime.resources.cpu", "1 core"), "runtime.resources.cpu", "CPU quantity"),
    ("memory-bad-unit", at("runtime.resources.memory", "512MB"), "runtime.resources.memory",
     "memory quantity"),
    ("memory-zero", at("runtime.resources.memory", "0Mi"), "runtime.resources.memory", "greater than zero"),
    ("image-invalid", at("runtime.image", "Not An Image!"), "runtime.image", "container image"),
    # issue 14: a version's image is pinned by digest; a tag can move after review
    ("image-tag-only", at("runtime.image", "us-docker.pkg.dev/acme/agents/spend:1.0.0"), "runtime.image",
     "pinned by digest"),
    ("runtime-unknown-field", at("runtime.timeout", 60), "runtime.timeout", "did you mean 'timeout_seconds'"),
    ("inputs-not-object-schema", at("inputs", {"type": "array"}), "inputs.type", 'must be "object"'),
    ("inputs-not-mapping", at("inputs", ["lookback_days"]), "inputs", "must be a mapping"),
    ("config-invalid-json-schema", at("config.properties.billing_source.type", "strin"),
     "config.properties.billing_source.type", "not valid JSON Schema"),
    ("config-required-not-list", at("config.required", "billing_source"), "config.required",
     "not valid JSON Schema"),
    ("config-unknown-dialect", at("config.$schema", "https://example.com/my-dialect"), "config.$schema",
     "unknown JSON Schema dialect"),
    ("permission-no-action", at("permissions", ["billing", "compute:write"]), "permissions[0]",
     "'resource:action'"),
    ("permission-duplicate", at("permissions", ["billing:read", "compute:write", "billing:read"]),
     "permissions[2]", "listed twice"),
    ("tool-permission-undeclared", at("tools[1].permissions", ["compute:delete"]), "tools[1].permissions[0]",
     "not declared in the manifest's permissions"),
    ("tool-permission-undeclared-after-removal", at("permissions", ["billing:read"]),
     "tools[1].permissions[0]", "'compute:write' is not declared"),
    ("tool-name-duplicate", at("tools[1].name", "billing.read_focus"), "tools[1].name", "defined twice"),
    ("tool-name-invalid", at("tools[0].name", "Billing Read"), "tools[0].name", "tool name"),
    ("tool-description-missing", at("tools[0].description", DELETE), "tools[0].description", "is required"),
    ("tool-unknown-field", at("tools[0].scopes", ["x"]), "tools[0].scopes", "unknown field 'scopes'"),
    ("constraint-unknown", at("constraints", ["approve-everything"]), "constraints[0]",
     "allowed: requires-human-approval-for-remediation"),
    ("constraint-read-only-with-write", at("constraints", ["read-only"]), "constraints[0]",
     "cannot request non-read permissions: compute:write"),
    ("constraint-missing-value", at("constraints", ["max-run-cost-usd"]), "constraints[0]", "needs a value"),
    ("constraint-bad-amount", at("constraints", ["max-run-cost-usd=ten"]), "constraints[0]",
     "decimal amount"),
    ("constraint-flag-with-value", at("constraints", ["no-external-network=yes"]), "constraints[0]",
     "takes no value"),
    ("constraint-duplicate", at("constraints", ["max-concurrent-runs=2", "max-concurrent-runs=3"]),
     "constraints[1]", "listed twice"),
    ("memory-level-zero", at("memory.levels", [0, 1]), "memory.levels[0]", "must be ≥ 1"),
    ("memory-level-six", at("memory.levels", [1, 6]), "memory.levels[1]", "must be ≤ 5"),
    ("memory-namespace-unknown", at("memory.namespaces", ["secrets"]), "memory.namespaces[0]",
     "must be one of: 'customer_environments'"),
    ("memory-namespace-without-level-3", at("memory.levels", [1, 2]), "memory.namespaces", "level 3"),
    ("price-negative", at("pricing.per_record_usd", "-0.001"), "pricing.per_record_usd", "must be ≥ 0"),
    ("price-negative-number", at("pricing.base_usd", -1), "pricing.base_usd", "must be ≥ 0"),
    ("price-sub-micro", at("pricing.base_usd", "0.0000001"), "pricing.base_usd",
     "finer than one micro-dollar"),
    ("price-nan", at("pricing.base_usd", "NaN"), "pricing.base_usd", "finite"),
    ("price-infinite-float", at("pricing.per_cpu_hour_usd", float("inf")), "pricing.per_cpu_hour_usd",
     "finite"),
    ("price-inexact-float", at("pricing.base_usd", 0.1 + 0.2), "pricing.base_usd",
     "not exactly representable"),
    ("price-boolean", at("pricing.base_usd", True), "pricing.base_usd", "boolean"),
    ("price-currency-symbol", at("pricing.base_usd", "$5"), "pricing.base_usd", "decimal amount"),
    ("price-missing", at("pricing.per_cpu_hour_usd", DELETE), "pricing.per_cpu_hour_usd", "is required"),
    ("pricing-unknown-field", at("pricing.setup_usd", "1"), "pricing.setup_usd", "unknown field"),
    ("deployment-empty", at("deployment", []), "deployment", "must not be empty"),
    ("deployment-unknown", at("deployment", ["on-prem"]), "deployment[0]",
     "must be one of: 'saas' or 'byoc'"),
    ("deployment-duplicate", at("deployment", ["saas", "saas"]), "deployment[1]", "listed twice"),
    ("deployment-not-list", at("deployment", "saas"), "deployment", "must be a list"),
    ("unknown-top-level-field", at("colour", "blue"), "colour", "unknown field 'colour'"),
    ("misspelt-top-level-field", at("permisions", []), "permisions", "did you mean 'permissions'"),
]


@pytest.mark.parametrize(("mutate", "path", "message"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_manifest_reports_path_and_message(mutate: Callable[[dict[str, Any]], None], path: str,
                                                   message: str) -> None:
    data = manifest_data()
    mutate(data)
    verdict = validate_manifest_data(data)
    assert not verdict.ok
    assert verdict.manifest is None
    matching = [p["message"] for p in verdict.problems if p["path"] == path]
    assert matching, f"no problem at {path!r}: {verdict.problems}"
    assert any(message in text for text in matching), matching
    with pytest.raises(ManifestInvalid) as raised:
        verdict.unwrap()
    assert raised.value.problems == verdict.problems


def test_invalid_table_is_large_enough() -> None:
    assert len(INVALID) >= 30
    assert len({case[0] for case in INVALID}) == len(INVALID)


def test_every_problem_is_reported_at_once() -> None:
    data = manifest_data()
    for mutate in (at("name", "X"), at("pricing.per_record_usd", "-1"), at("tools[1].permissions", ["a:b"]),
                   at("deployment", []), at("extra", 1), at("memory.levels", [9])):
        mutate(data)
    paths = {problem["path"] for problem in validate_manifest_data(data).problems}
    assert {"name", "pricing.per_record_usd", "tools[1].permissions[0]", "deployment", "extra",
            "memory.levels[0]"} <= paths


def test_problem_messages_are_rewritten_not_pydantic_defaults() -> None:
    data = manifest_data(runtime="langgraph", tags="finops")
    del data["version"]
    problems = validate_manifest_data(data).problems
    assert {"path": "version", "message": "is required"} in problems
    assert {"path": "runtime", "message": "must be a mapping (key: value pairs)"} in problems
    assert {"path": "tags", "message": "must be a list"} in problems
    assert not any("Input should" in p["message"] for p in problems)


@pytest.mark.parametrize("data", [[], "name: x", None, 42])
def test_non_mapping_data_is_one_problem_at_the_root(data: object) -> None:
    verdict = validate_manifest_data(data)
    assert verdict.problems == [{"path": "", "message": "must be a mapping (key: value pairs)"}]


def test_valid_manifest_from_yaml_and_json_agree() -> None:
    from_yaml = load_manifest(yaml.safe_dump(BASE), "application/yaml")
    from_json = load_manifest(json.dumps(BASE).encode(), "application/json; charset=utf-8")
    sniffed_json = load_manifest(json.dumps(BASE))
    assert from_yaml == from_json == sniffed_json
    assert from_yaml.version == "1.2.3"
    assert from_yaml.semver == SemVer(1, 2, 3)
    assert from_yaml.runtime.resources.cpu_millicores == 500
    assert from_yaml.runtime.resources.memory_bytes == 2**30
    assert from_yaml.pricing.per_cpu_hour_usd == Decimal("0.50")


def test_defaults_and_round_trip_through_json() -> None:
    minimal = manifest_data()
    for optional in ("tags", "inputs", "config", "permissions", "tools", "constraints", "memory"):
        del minimal[optional]
    del minimal["runtime"]["timeout_seconds"], minimal["runtime"]["resources"]
    manifest = validate_manifest_data(minimal).unwrap()
    assert manifest.runtime.timeout_seconds == 900
    assert manifest.runtime.resources.cpu_millicores == 1000
    assert manifest.inputs == {"type": "object", "additionalProperties": False}
    assert manifest.memory.levels == []
    dumped = manifest.model_dump(mode="json")
    assert dumped["pricing"] == {"base_usd": "0.50", "per_record_usd": "0.001", "per_cpu_hour_usd": "0.50",
                                 "subscription_monthly_usd": None}
    assert validate_manifest_data(dumped).unwrap() == manifest


def test_valued_constraints_are_exposed_typed() -> None:
    manifest = validate_manifest_data(manifest_data(constraints=[
        "requires-human-approval-for-remediation", "max-run-cost-usd=25.5", "max-concurrent-runs=3",
    ])).unwrap()
    assert manifest.has_constraint(ConstraintName.REQUIRES_HUMAN_APPROVAL_FOR_REMEDIATION)
    assert not manifest.has_constraint("read-only")
    assert manifest.max_run_cost_micros == 25_500_000
    assert manifest.max_concurrent_runs == 3
    read_only = manifest_data(constraints=["read-only"], permissions=["billing:read"])
    read_only["tools"] = read_only["tools"][:1]
    assert validate_manifest_data(read_only).ok


# ------------------------------------------------------------------------------------- documents


def test_yaml_duplicate_keys_are_rejected() -> None:
    with pytest.raises(ManifestInvalid) as raised:
        parse_manifest_document("name: a\nversion: 1.0.0\nname: b\n")
    assert raised.value.problems == [
        {"path": "", "message": "is not valid YAML: duplicate key 'name' (line 3, column 1)"},
    ]


def test_json_duplicate_keys_are_rejected() -> None:
    with pytest.raises(ManifestInvalid, match="is not valid JSON: duplicate key 'name'"):
        parse_manifest_document('{"name": "a", "name": "b"}')


@pytest.mark.parametrize(("document", "hint", "message"), [
    ("base: &b {a: 1}\nother: *b\n", None, "aliases (*name) are not allowed"),
    ("<<: {a: 1}\nb: 2\n", None, "merge keys (<<) are not allowed"),
    ("- name\n- version\n", None, "must be a mapping of manifest fields at the top level, not a list"),
    ("", None, "not empty"),
    ("name: [\n", "text/yaml", "is not valid YAML"),
    ("a: 1\n---\nb: 2\n", None, "expected a single document"),
    ("a: !!python/object/apply:os.system [ls]\n", None, "could not determine a constructor"),
    ('{"a": NaN}', "application/json", "NaN is not valid JSON"),
    ("{a: 1", "json", "is not valid JSON"),
    (b"name: \xff\n", None, "is not valid UTF-8"),
    ("[" * 10_000, "json", "nested too deeply"),
])
def test_bad_documents_are_one_clear_problem(document: str | bytes, hint: str | None, message: str) -> None:
    with pytest.raises(ManifestInvalid) as raised:
        parse_manifest_document(document, hint)
    [problem] = raised.value.problems
    assert problem["path"] == ""
    assert message in problem["message"]


def test_documents_over_256_kib_are_rejected_before_parsing() -> None:
    text = yaml.safe_dump(BASE)
    padded = text + "#" * (MAX_MANIFEST_BYTES - len(text.encode()))
    assert load_manifest(padded).name == BASE["name"]
    with pytest.raises(ManifestInvalid, match="at most 262,144 bytes"):
        load_manifest(padded + "#")


def test_yaml_flow_mapping_without_hint_is_still_yaml() -> None:
    assert parse_manifest_document("{name: x, tags: [a, b]}") == {"name": "x", "tags": ["a", "b"]}


def test_values_json_cannot_hold_are_problems_with_paths() -> None:
    data = parse_manifest_document("released: 2025-01-01\nblob: !!binary aGk=\nratio: .nan\n1: one\n")
    assert data == {"released": "2025-01-01", "blob": b"hi", "ratio": data["ratio"], 1: "one"}  # type: ignore[index]
    problems = validate_manifest_data(data).problems
    assert {"path": "blob",
            "message": "is a bytes value, which JSON cannot represent; quote it if it is text"} in problems
    assert {"path": "ratio", "message": "must be a finite number (NaN and infinity are not JSON)"} in problems
    assert {"path": "", "message": "has the non-string key 1; quote it"} in problems
    assert {"path": "released", "message": "unknown field 'released'; allowed fields: name, version, "
            "display_name, description, category, tags, publisher, runtime, inputs, config, permissions, "
            "tools, constraints, memory, pricing, deployment"} in problems


def test_hostile_nesting_is_a_problem_not_a_crash() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"x": deep}}
    verdict = validate_manifest_data(manifest_data(config=deep))
    [problem] = verdict.problems
    assert problem["path"].startswith("config.properties.x.properties.x")
    assert problem["message"] == "is nested more than 64 levels deep"


def test_load_manifest_raises_with_every_problem() -> None:
    data = manifest_data(name="X", deployment=[])
    with pytest.raises(ManifestInvalid) as raised:
        load_manifest(json.dumps(data))
    assert [p["path"] for p in raised.value.problems] == ["name", "deployment"]
    assert "name: must be 3 to 64 characters" in str(raised.value)


# --------------------------------------------------------------------------------------- semver


def test_semver_parses_every_part() -> None:
    version = SemVer.parse("1.0.0-alpha.1+build.5.sha-1")
    assert (version.major, version.minor, version.patch) == (1, 0, 0)
    assert version.prerelease == ("alpha", "1")
    assert version.build == ("build", "5", "sha-1")
    assert version.is_prerelease
    assert str(version) == "1.0.0-alpha.1+build.5.sha-1"


@pytest.mark.parametrize("text", ["1", "1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.03", "1.2.3-01", "1.2.3-",
                                  "1.2.3+", "1.2.3-a..b", "v1.2.3", " 1.2.3", "1.2.3 ", "1.2.3\n", "1.2.3-é",
                                  "1.2.3+a+b", "-1.2.3", "1.2.3-" + "a" * 200])
def test_semver_rejects_what_semver_org_rejects(text: str) -> None:
    with pytest.raises(SemVerError):
        SemVer.parse(text)


def test_semver_direct_construction_is_as_strict_as_parse() -> None:
    with pytest.raises(SemVerError):
        SemVer(1, 0, -1)
    with pytest.raises(SemVerError):
        SemVer(1, 0, 0, ("01",))


def test_semver_org_precedence_example() -> None:
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]
    versions = [SemVer.parse(text) for text in chain]
    assert all(a < b for a, b in itertools.pairwise(versions))
    shuffled = versions[5:] + versions[:5]
    assert sorted(shuffled) == versions


def test_semver_ignores_build_metadata_for_precedence() -> None:
    assert SemVer.parse("1.0.0+a") == SemVer.parse("1.0.0+b")
    assert hash(SemVer.parse("1.0.0+a")) == hash(SemVer.parse("1.0.0"))
    assert str(SemVer.parse("1.0.0+a")) != str(SemVer.parse("1.0.0+b"))


def _reference_compare(a: str, b: str) -> int:
    """semver.org §11, written independently of SemVer, on version strings."""
    def split(text: str) -> tuple[list[int], list[str] | None]:
        core, _, pre = text.partition("+")[0].partition("-")
        return [int(n) for n in core.split(".")], pre.split(".") if pre else None

    (core_a, pre_a), (core_b, pre_b) = split(a), split(b)
    if core_a != core_b:
        return -1 if core_a < core_b else 1
    if pre_a is None or pre_b is None:
        return (pre_a is None) - (pre_b is None)
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() or y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


_numbers = st.one_of(st.integers(0, 3), st.integers(0, 10**12))
_prerelease_ids = st.one_of(
    st.sampled_from(["alpha", "beta", "rc", "0", "1", "2", "11", "a-1", "-", "1a", "Z", "z"]),
    st.integers(0, 10**9).map(str),
    st.from_regex(r"[0-9]*[A-Za-z-][0-9A-Za-z-]{0,6}", fullmatch=True),
)
semvers = st.builds(
    SemVer, _numbers, _numbers, _numbers,
    st.lists(_prerelease_ids, max_size=4).map(tuple),
    st.lists(st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True), max_size=2).map(tuple),
)


@given(semvers, semvers)
def test_semver_order_matches_the_specification(a: SemVer, b: SemVer) -> None:
    expected = _reference_compare(str(a), str(b))
    assert (a < b, a == b, a > b) == (expected < 0, expected == 0, expected > 0)


@given(semvers, semvers, semvers)
def test_semver_order_is_a_total_order(a: SemVer, b: SemVer, c: SemVer) -> None:
    assert sum((a < b, a == b, a > b)) == 1  # trichotomy
    if a <= b and b <= c:
        assert a <= c  # transitivity
    if a <= b and b <= a:
        assert a == b  # antisymmetry
        assert hash(a) == hash(b)


@given(st.tuples(_numbers, _numbers, _numbers), st.tuples(_numbers, _numbers, _numbers))
def test_release_order_is_tuple_order(x: tuple[int, int, int], y: tuple[int, int, int]) -> None:
    assert (SemVer(*x) < SemVer(*y)) == (x < y)
    assert (SemVer(*x) == SemVer(*y)) == (x == y)


@given(semvers)
def test_semver_text_round_trips(version: SemVer) -> None:
    reparsed = SemVer.parse(str(version))
    assert str(reparsed) == str(version)
    assert reparsed == version
    assert validate_manifest_data(manifest_data(version=str(version))).ok


# ---------------------------------------------------------------------------------------- money


def test_architecture_example_charge_from_manifest_micros() -> None:
    pricing = load_manifest(BUILTIN_MANIFEST.read_text()).pricing
    total = pricing.base_micros + pricing.per_record_micros * 15_000 + pricing.per_cpu_hour_micros * 2
    assert total == 16_500_000
    assert micros_to_usd_str(total) == "16.50"
    developer = total * 80 // 100
    assert (developer, total - developer) == (13_200_000, 3_300_000)


@given(st.decimals(min_value=0, max_value=10**12, places=6, allow_nan=False, allow_infinity=False))
def test_decimal_strings_with_six_places_convert_exactly(amount: Decimal) -> None:
    micros = usd_to_micros(f"{amount:f}")
    assert micros == int(amount.scaleb(6))
    assert Decimal(micros_to_usd_str(micros)) == amount
    assert usd_to_micros(micros_to_usd_str(micros)) == micros


@given(st.integers(0, 10**12 - 1), st.integers(0, 999_999), st.integers(1, 9))
def test_amounts_finer_than_a_micro_dollar_are_refused(whole: int, micros: int, extra_digit: int) -> None:
    with pytest.raises(MoneyError, match="finer than one micro-dollar"):
        usd_to_micros(f"{whole}.{micros:06d}{extra_digit}")


@given(st.integers(0, 10**8), st.integers(0, 999_999))
def test_floats_written_with_at_most_15_digits_convert_exactly(whole: int, fraction: int) -> None:
    assert usd_to_micros(float(f"{whole}.{fraction:06d}")) == whole * 1_000_000 + fraction


@given(st.integers(-(10**18), 10**18))
def test_micros_format_round_trips(micros: int) -> None:
    text = micros_to_usd_str(micros)
    assert usd_to_micros(text, allow_negative=True) == micros
    assert len(text.split(".")[1]) in range(2, 7)


@pytest.mark.parametrize(("value", "micros"), [
    ("0.50", 500_000), (0.001, 1_000), (2, 2_000_000), (Decimal("1E-6"), 1), ("0.1234560000", 123_456),
    ("-0.00", 0), (1e12, 10**18), (Decimal("1E+3"), 1_000_000_000),
])
def test_usd_to_micros_examples(value: Any, micros: int) -> None:
    assert usd_to_micros(value) == micros


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "must be ≥ 0"), (float("nan"), "finite"), ("Infinity", "finite"), (Decimal("-Inf"), "finite"),
    (False, "boolean"), ("1e3", "decimal amount"), (" 1", "decimal amount"), ("1_000", "decimal amount"),
    ([1], "not list"), (0.1 + 0.2, "not exactly representable"), (1e-7, "finer than one micro-dollar"),
    (10**12 + 1, "at most"), ("1" * 65, "at most 64 characters"),
])
def test_usd_to_micros_refusals(value: Any, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        usd_to_micros(value)


def test_negative_amounts_allowed_only_on_request() -> None:
    assert usd_to_micros("-16.50", allow_negative=True) == -16_500_000
    assert micros_to_usd_str(-3_300_000) == "-3.30"
    assert micros_to_usd_str(1) == "0.000001"


@pytest.mark.parametrize(("prices", "model"), [
    ({"base_usd": 0, "per_record_usd": "0", "per_cpu_hour_usd": "0.000"}, PricingModel.FREE),
    ({"base_usd": 0, "per_record_usd": "0", "per_cpu_hour_usd": 0, "subscription_monthly_usd": "0"},
     PricingModel.FREE),
    ({"base_usd": "0.50", "per_record_usd": "0", "per_cpu_hour_usd": 0}, PricingModel.USAGE),
    ({"base_usd": 0, "per_record_usd": 0, "per_cpu_hour_usd": 0, "subscription_monthly_usd": "99"},
     PricingModel.SUBSCRIPTION),
    ({"base_usd": 0, "per_record_usd": "0.000001", "per_cpu_hour_usd": 0, "subscription_monthly_usd": 10},
     PricingModel.HYBRID),
])
def test_pricing_model_summary(prices: dict[str, Any], model: PricingModel) -> None:
    manifest = validate_manifest_data(manifest_data(pricing=prices)).unwrap()
    assert manifest.pricing.pricing_model is model


# ---------------------------------------------------------------------------- permissions, schema


def _with_permissions(*permissions: str) -> AgentManifest:
    return validate_manifest_data(manifest_data(permissions=list(permissions), tools=[])).unwrap()


def test_permission_diff_on_upgrade_needs_consent_only_for_added() -> None:
    old = _with_permissions("billing:read", "compute:write")
    new = _with_permissions("billing:read", "storage:read", "alerts:write")
    diff = permission_diff(old, new)
    assert diff.added == ("alerts:write", "storage:read")
    assert diff.removed == ("compute:write",)
    assert diff.unchanged == ("billing:read",)
    assert diff.needs_consent
    narrower = permission_diff(old, _with_permissions("billing:read"))
    assert (narrower.added, narrower.removed, narrower.needs_consent) == ((), ("compute:write",), False)
    assert not permission_diff(old, old).needs_consent


def test_permission_diff_first_install_adds_everything() -> None:
    diff = permission_diff(None, _with_permissions("billing:read"))
    assert (diff.added, diff.removed, diff.unchanged, diff.needs_consent) == (("billing:read",), (), (), True)


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == manifest_json_schema_text(), (
        "docs/manifest.schema.json is stale: run `python -m shared.catalog.manifest`"
    )


def test_published_schema_is_draft_2020_12_and_agrees_with_the_model() -> None:
    schema = manifest_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == MANIFEST_SCHEMA_ID
    assert schema["title"] == "Agent manifest"
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(BASE)
    validator.validate(yaml.safe_load(BUILTIN_MANIFEST.read_text()))
    for mutate in (at("colour", "x"), at("runtime.framework", "crewai"), at("name", "Bad Name"),
                   at("pricing.base_usd", "0.0000001"), at("deployment", ["on-prem"]), at("tags", ["a", "a"]),
                   at("inputs", {"type": "array"}), at("config.properties.billing_source.type", "strin"),
                   at("constraints", ["approve-everything"]), at("constraints", ["max-concurrent-runs=0"])):
        data = manifest_data()
        mutate(data)
        assert not validator.is_valid(data)


def test_builtin_cost_anomaly_manifest_loads() -> None:
    manifest = load_manifest(BUILTIN_MANIFEST.read_bytes())
    assert (manifest.name, manifest.version) == ("cost-anomaly-detector", "1.1.0")
    assert manifest.category == "finops"
    assert manifest.publisher == "Agent Marketplace"
    assert manifest.runtime.entrypoint == "cost_anomaly.graph:build_graph"
    assert (manifest.pricing.base_micros, manifest.pricing.per_record_micros,
            manifest.pricing.per_cpu_hour_micros) == (500_000, 1_000, 500_000)
    assert manifest.pricing.pricing_model is PricingModel.USAGE
    assert manifest.has_constraint(ConstraintName.REQUIRES_HUMAN_APPROVAL_FOR_REMEDIATION)
    assert set(manifest.deployment) == {"saas", "byoc"}
    assert manifest.memory.levels == [1, 2, 3, 4, 5]
    assert manifest.memory.namespaces == ["cost_anomalies"]
    assert {tool.name: tool.permissions for tool in manifest.tools} == {
        "billing.read_focus": ["billing:read"], "compute.propose_remediation": ["compute:write"],
        "cloud.stop_instance": ["compute:write"],
    }
    config = jsonschema.Draft202012Validator(manifest.config)
    assert config.is_valid({"billing_source": "/data/focus.csv", "sensitivity": 2.5})
    assert config.is_valid({})  # no billing source: the agent reads its demo export (issue 19)
    assert not config.is_valid({"billing_source": ""})
    inputs = jsonschema.Draft202012Validator(manifest.inputs)
    assert inputs.is_valid({"lookback_days": 30, "currency": "USD"})
    assert not inputs.is_valid({"lookback_days": 0})


def test_an_image_pinned_by_digest_is_accepted() -> None:
    """issue 14: the gcp and BYOC data planes run a version's own image when it names one."""
    image = "us-docker.pkg.dev/acme/agents/spend:1.0.0@sha256:" + "ab" * 32
    data = manifest_data()
    data["runtime"] = {**data["runtime"], "image": image}
    verdict = validate_manifest_data(data)
    assert verdict.manifest is not None, verdict.problems
    assert verdict.manifest.runtime.image == image
    untagged = "europe-docker.pkg.dev/acme/agents/spend@sha256:" + "cd" * 32
    data["runtime"]["image"] = untagged
    assert validate_manifest_data(data).ok
