"""The agent manifest (SPEC §4): one pydantic model, its loader, its JSON Schema and permission diffs.

A manifest arrives as YAML or JSON from a developer. :func:`load_manifest` parses it defensively
(size limit, duplicate keys, no YAML aliases) and :func:`validate_manifest_data` reports *every*
problem, each with a path such as ``tools[1].permissions[0]`` and a message a person can act on,
so the developer portal can show them all at once. Reading the document is
``manifest_document.py``; the problem types are ``manifest_problems.py`` (both re-exported here).

Regenerate the published schema with ``python -m shared.catalog.manifest [PATH]`` (default
``docs/manifest.schema.json``); a unit test fails while the file is out of date.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
import typing
from collections.abc import Hashable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.exceptions import ValidationError as JsonSchemaError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, PydanticCustomError, core_schema

from shared.catalog.manifest_document import parse_manifest_document
from shared.catalog.manifest_problems import MAX_MANIFEST_BYTES, ManifestInvalid, ManifestProblem, format_path, show
from shared.catalog.semver import MAX_LENGTH as SEMVER_MAX_LENGTH
from shared.catalog.semver import SEMVER_PATTERN, SemVer
from shared.kernel.money import MoneyError, PricingModel, PricingSpec, usd_to_micros

__all__ = [
    "MANIFEST_SCHEMA_ID", "MAX_MANIFEST_BYTES", "SCHEMA_FILE",
    "AgentManifest", "Category", "ConstraintName", "DeploymentType", "ManifestInvalid", "ManifestProblem",
    "ManifestVerdict", "MemoryNamespace", "MemorySpec", "PermissionDiff", "PricingModel", "PricingSpec",
    "Resources", "RuntimeSpec", "ToolSpec",
    "format_path", "load_manifest", "manifest_json_schema", "manifest_json_schema_text",
    "parse_manifest_document", "permission_diff", "validate_manifest_data", "write_manifest_json_schema",
]

"""Largest manifest document accepted, in bytes of UTF-8."""

MANIFEST_SCHEMA_ID = "urn:agent-marketplace:schema:agent-manifest:1"
"""The ``$id`` of the published JSON Schema."""

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json"
"""Where the published JSON Schema lives in a source checkout."""

_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# Deep enough for any real JSON Schema, shallow enough that recursive validators never hit
# Python's recursion limit on hostile input.
_MAX_DEPTH = 64
_TOO_DEEP = f"is nested more than {_MAX_DEPTH} levels deep"


class Category(StrEnum):
    """Catalog category of an agent."""

    FINOPS = "finops"
    SECURITY = "security"
    DEVOPS = "devops"
    DATA = "data"
    SUPPORT = "support"
    SALES = "sales"
    OTHER = "other"


class DeploymentType(StrEnum):
    """Where an installed agent runs: on the platform, or in the customer's cluster."""

    SAAS = "saas"
    BYOC = "byoc"


class MemoryNamespace(StrEnum):
    """The five Level 3 (vector knowledge) namespaces of the architecture document."""

    CUSTOMER_ENVIRONMENTS = "customer_environments"
    COST_ANOMALIES = "cost_anomalies"
    AUTOMATION_PATTERNS = "automation_patterns"
    VENDOR_TROUBLESHOOTING = "vendor_troubleshooting"
    APPLICATION_ARCHITECTURES = "application_architectures"


class ConstraintName(StrEnum):
    """Known constraints. Valued ones are written ``name=value`` (``max-run-cost-usd=25``); ``=``
    rather than ``:`` so that an unquoted YAML list item stays a string, not a mapping."""

    REQUIRES_HUMAN_APPROVAL_FOR_REMEDIATION = "requires-human-approval-for-remediation"
    READ_ONLY = "read-only"
    NO_EXTERNAL_NETWORK = "no-external-network"
    MAX_RUN_COST_USD = "max-run-cost-usd"
    MAX_CONCURRENT_RUNS = "max-concurrent-runs"


# ---------------------------------------------------------------------------------------- problems

Loc = tuple[str | int, ...]


# The values valued constraints take, for the published schema (editors); _constraint_problem()
# applies the same rules with precise messages.
_CONSTRAINT_VALUE_PATTERNS = {
    ConstraintName.MAX_RUN_COST_USD: r"[0-9]+(?:\.[0-9]{1,6})?",
    ConstraintName.MAX_CONCURRENT_RUNS: r"[1-9][0-9]{0,5}",
}
_CONSTRAINT_PATTERN = "^(?:{})$".format("|".join(
    f"{name}={_CONSTRAINT_VALUE_PATTERNS[name]}" if name in _CONSTRAINT_VALUE_PATTERNS else name.value
    for name in ConstraintName
))


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("manifest", "{message}", {"message": message})


def _problems(found: list[tuple[Loc, str]]) -> PydanticCustomError:
    # A validator can raise only one error; this one carries several, each at a path below the
    # validated value, and _translate() unfolds them into separate problems.
    summary = "; ".join(message for _, message in found)
    return PydanticCustomError("manifest_problems", "{summary}", {"summary": summary, "problems": found})


# ----------------------------------------------------------------------------------- scalar types


@dataclass(frozen=True)
class _Text:
    """A string type with a length range, an optional pattern, its own message and JSON Schema.

    Patterns are anchored, use no look-arounds and spell digits ``[0-9]``, so they mean the same
    to Python's ``re`` and to the ECMA-262 regexes JSON Schema validators use.
    """

    rule: str
    max_length: int
    min_length: int = 1
    pattern: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        regex = re.compile(self.pattern) if self.pattern else None

        def check(value: str) -> str:
            if not self.min_length <= len(value) <= self.max_length:
                raise _fail(f"must be {self.min_length} to {self.max_length} characters, not {len(value)}")
            if regex is not None and not regex.fullmatch(value):
                raise _fail(f"must be {self.rule}, not {show(value)}")
            if not value.strip():
                raise _fail("must not be blank")
            return value

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema(strict=True))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        published: JsonSchemaValue = {
            "type": "string", "minLength": self.min_length, "maxLength": self.max_length,
        }
        if self.pattern:
            published["pattern"] = self.pattern
        return published


@dataclass(frozen=True)
class _Quantity:
    """A Kubernetes resource quantity (``"500m"``, ``"2"``, ``"512Mi"``); plain numbers become strings."""

    rule: str
    pattern: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        regex = re.compile(self.pattern)

        def check(value: Any) -> str:
            # YAML authors write `cpu: 2` as often as `cpu: "2"`, as in Kubernetes itself.
            text = repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
            if not isinstance(text, str) or not regex.fullmatch(text):
                raise _fail(f"must be {self.rule}, not {show(value)}")
            if Decimal(re.sub(r"[^0-9.]", "", text)) == 0:
                raise _fail("must be greater than zero")
            return text

        return core_schema.no_info_plain_validator_function(check)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string", "pattern": self.pattern},
                          {"type": "number", "exclusiveMinimum": 0}]}


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMAGE_PART = r"[a-z0-9]+(?:[._-][a-z0-9]+)*"
_MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

Slug = Annotated[str, _Text(
    "a slug: lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen",
    max_length=64, min_length=3, pattern=r"^[a-z][a-z0-9-]*[a-z0-9]$")]
Version = Annotated[str, _Text(
    "a semantic version such as 1.4.0 or 2.0.0-rc.1 (semver.org, no leading zeros, no 'v')",
    max_length=SEMVER_MAX_LENGTH, pattern=SEMVER_PATTERN)]
DisplayName = Annotated[str, _Text("a single line of text", max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Description = Annotated[str, _Text(
    "text without control characters other than newlines and tabs", max_length=4000,
    pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$")]
Tag = Annotated[str, _Text("a tag: lowercase letters, digits and hyphens",
                           max_length=32, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Entrypoint = Annotated[str, _Text(
    "'module.path:callable' (Python identifiers, e.g. my_agent.graph:build_graph)",
    max_length=200, pattern=rf"^{_IDENT}(?:\.{_IDENT})*:{_IDENT}$")]
# Pinned by digest (issue 14): a version is immutable, so the code it names must be too; a tag can
# be moved to other bytes after review.
ImageRef = Annotated[str, _Text(
    "a container image reference pinned by digest, such as "
    "us-docker.pkg.dev/project/repo/agent:1.0.0@sha256:<64 hex digits>", max_length=255,
    pattern=rf"^{_IMAGE_PART}(?::[0-9]+)?(?:/{_IMAGE_PART})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"@sha256:[a-f0-9]{64}$")]
Permission = Annotated[str, _Text(
    "'resource:action' in lowercase, e.g. billing:read or compute:write", max_length=64,
    pattern=r"^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$")]
ToolName = Annotated[str, _Text(
    "a tool name: lowercase dotted identifiers, e.g. billing.read_focus", max_length=64,
    pattern=r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$")]
CpuQuantity = Annotated[str, _Quantity(
    'a Kubernetes CPU quantity such as "500m", "1" or "2.5"', r"^(?:[0-9]+m|[0-9]+(?:\.[0-9]{1,3})?)$")]
MemoryQuantity = Annotated[str, _Quantity(
    'a Kubernetes memory quantity such as "512Mi", "2Gi" or "1G"',
    r"^[0-9]+(?:\.[0-9]+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")]
MemoryLevel = Annotated[int, Field(strict=True, ge=1, le=5)]

_T = TypeVar("_T", bound=Hashable)


class _UniqueItems:
    """List marker: duplicates are errors at their index; published as ``uniqueItems``."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_unique, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        published = handler(schema)
        published["uniqueItems"] = True
        return published


_UNIQUE = _UniqueItems()


def _unique(items: list[_T]) -> list[_T]:
    first_at: dict[_T, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, item in enumerate(items):
        if item in first_at:
            found.append(((index,), f"{show(item)} is listed twice (first at index {first_at[item]})"))
        first_at.setdefault(item, index)
    if found:
        raise _problems(found)
    return items


def _object_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Accept a JSON Schema for a JSON object: valid against its own dialect's metaschema."""
    found: list[tuple[Loc, str]] = []
    if schema.get("type") != "object":
        found.append((("type",), 'must be "object": run inputs and install config are JSON objects'))
    dialect = schema.get("$schema", _DRAFT_2020_12)
    # validator_for falls back to its default for an unknown $schema, with only a warning.
    cls = validator_for(schema, default=Draft202012Validator) if isinstance(dialect, str) else None
    if cls is None or (cls is Draft202012Validator and dialect.rstrip("#") != _DRAFT_2020_12):
        found.append((("$schema",),
                      f"unknown JSON Schema dialect {show(dialect)}; omit it or use {_DRAFT_2020_12}"))
    else:
        try:
            cls.check_schema(schema)
        except SchemaError:
            # check_schema stops at one error; list every one so they can all be fixed at once.
            meta = cls(cls.META_SCHEMA, format_checker=cls.FORMAT_CHECKER)
            for error in meta.iter_errors(schema):
                deepest = _most_specific(error)
                found.append((tuple(deepest.absolute_path), f"is not valid JSON Schema: {deepest.message}"))
        except RecursionError:
            found.append(((), "is nested too deeply"))
    if found:
        raise _problems(found)
    return schema


def _most_specific(error: JsonSchemaError) -> JsonSchemaError:
    # For "x is not valid under any of the given schemas", the branch that names the allowed
    # values says more than the branches that only say "not of type ...".
    best = best_match([error]) or error
    specific = [branch for branch in best.context or () if branch.validator != "type"]
    return (best_match(specific) or best) if specific else best


ObjectJsonSchema = Annotated[
    dict[str, Any],
    AfterValidator(_object_json_schema),
    # Published as "a JSON Schema for an object", so editors check nested schemas too; the
    # metaschema ships with every validator (jsonschema bundles it), so no download is needed.
    WithJsonSchema({"$ref": _DRAFT_2020_12, "type": "object", "required": ["type"],
                    "properties": {"type": {"const": "object"}}}),
]
_NO_PROPERTIES = {"type": "object", "additionalProperties": False}


# ------------------------------------------------------------------------------------------ models


class _Strict(BaseModel):
    # Unknown fields are typos or features we do not have; either way the author must hear of it.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Resources(_Strict):
    """Compute requested for each run (Kubernetes quantities)."""

    cpu: CpuQuantity = "1"
    """CPU, e.g. "500m" or "2"."""
    memory: MemoryQuantity = "512Mi"
    """Memory, e.g. "512Mi" or "2Gi"."""

    @property
    def cpu_millicores(self) -> int:
        """CPU in thousandths of a core."""
        if self.cpu.endswith("m"):
            return int(self.cpu[:-1])
        return int(Decimal(self.cpu) * 1000)

    @property
    def memory_bytes(self) -> int:
        """Memory in bytes, rounded up as Kubernetes does."""
        unit = self.memory.lstrip("0123456789.")
        number = self.memory[: len(self.memory) - len(unit)]
        return math.ceil(Decimal(number) * _MEMORY_UNITS[unit])


class RuntimeSpec(_Strict):
    """How the data plane runs the agent."""

    framework: Literal["langgraph"]
    """The agent framework; only LangGraph is supported."""
    entrypoint: Entrypoint
    """'module.path:callable'; the callable returns the agent's compiled LangGraph graph."""
    image: ImageRef | None = None
    """Container image holding the agent's code, pinned by digest (``...@sha256:<hex>``): the gcp and
    BYOC data planes run it instead of the runner image. Without one, the runner runs the version's
    uploaded package."""
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=86_400)] = 900
    """Wall-clock limit of one run."""
    resources: Resources = Field(default_factory=Resources)


class ToolSpec(_Strict):
    """A tool the agent calls, with the permissions it needs."""

    name: ToolName
    description: Annotated[str, _Text("text", max_length=500)]
    permissions: Annotated[list[Permission], _UNIQUE] = Field(default_factory=list)
    """Permissions this tool needs; each must also be declared in the manifest's `permissions`."""
    requires_approval: bool = False
    """Every call waits for an approver of the org and executes only as approved (docs/APPROVALS.md);
    with the constraint `requires-human-approval-for-remediation`, tools needing a `*:write`
    permission are gated too."""


class MemorySpec(_Strict):
    """Which memory levels the agent uses, and which Level 3 knowledge namespaces it reads."""

    levels: Annotated[list[MemoryLevel], _UNIQUE] = Field(default_factory=list)
    """1 session, 2 task summaries, 3 vector knowledge, 4 episodes, 5 org preferences."""
    namespaces: Annotated[list[MemoryNamespace], _UNIQUE] = Field(default_factory=list)
    """Level 3 namespaces; only meaningful with level 3."""

    @model_validator(mode="after")
    def _namespaces_need_level_3(self) -> MemorySpec:
        if self.namespaces and 3 not in self.levels:
            raise _problems([(("namespaces",), "Level 3 namespaces need level 3 in memory.levels")])
        return self


class AgentManifest(_Strict):
    """An agent version's manifest (SPEC §4). Versions are immutable once published."""

    name: Slug
    """Stable identifier of the agent: 3 to 64 of a-z, 0-9 and '-', starting with a letter."""
    version: Version
    """Semantic version (semver.org 2.0.0)."""
    display_name: DisplayName
    description: Description
    category: Category
    tags: Annotated[list[Tag], Field(max_length=20), _UNIQUE] = Field(default_factory=list)
    publisher: DisplayName
    runtime: RuntimeSpec
    inputs: ObjectJsonSchema = Field(default_factory=lambda: dict(_NO_PROPERTIES))
    """JSON Schema of a run's inputs, enforced when a run is created (default: no inputs)."""
    config: ObjectJsonSchema = Field(default_factory=lambda: dict(_NO_PROPERTIES))
    """JSON Schema of the install-time config, enforced on install (default: no config)."""
    permissions: Annotated[list[Permission], _UNIQUE] = Field(default_factory=list)
    """What the installing org grants; more than the installed version's needs the admin's consent."""
    tools: list[ToolSpec] = Field(default_factory=list)
    constraints: Annotated[list[Annotated[str, _Text("a constraint", max_length=100)]],
                           WithJsonSchema({"type": "array", "uniqueItems": True,
                                           "items": {"type": "string", "pattern": _CONSTRAINT_PATTERN}}),
                           ] = Field(default_factory=list)
    """Known names only; valued ones as name=value, e.g. max-run-cost-usd=25."""
    memory: MemorySpec = Field(default_factory=MemorySpec)
    pricing: PricingSpec
    deployment: Annotated[list[DeploymentType], Field(min_length=1), _UNIQUE]
    """Where the agent may be installed: saas, byoc, or both."""

    # Field validators run in declaration order, so `permissions` is already in info.data here;
    # checking in a field validator (not a model validator) still works when unrelated fields fail,
    # and wrapping the list's own validation still checks the tools that are themselves valid.
    @field_validator("tools", mode="wrap")
    @classmethod
    def _tools_use_declared_permissions(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> list[ToolSpec]:
        found: list[tuple[Loc, str]] = []
        tools: list[ToolSpec] = []
        try:
            tools = handler(value)
        except ValidationError as error:
            found += _translate(error, root=list[ToolSpec])
        reported = {loc for loc, _ in found}
        found += [problem for problem in _tool_problems(value, info.data.get("permissions"))
                  if problem[0] not in reported]
        if found:  # in the order of the tools list, whichever check found them
            raise _problems(sorted(found, key=lambda problem: problem[0][:1] or (-1,)))
        return tools

    @field_validator("constraints")
    @classmethod
    def _known_constraints(cls, constraints: list[str], info: ValidationInfo) -> list[str]:
        found: list[tuple[Loc, str]] = []
        first_at: dict[str, int] = {}
        for index, entry in enumerate(constraints):
            name, _, value = entry.partition("=")
            problem = _constraint_problem(name, value if "=" in entry else None, info.data.get("permissions"))
            if problem is None and name in first_at:
                problem = f"constraint {name!r} is listed twice (first at index {first_at[name]})"
            if problem is not None:
                found.append(((index,), problem))
            first_at.setdefault(name, index)
        if found:
            raise _problems(found)
        return constraints

    @property
    def semver(self) -> SemVer:
        """The version, parsed, for precedence comparisons."""
        return SemVer.parse(self.version)

    def constraint_value(self, name: ConstraintName | str) -> str | None:
        """The value of a valued constraint (``max-run-cost-usd=25`` -> ``"25"``), or None if absent."""
        for entry in self.constraints:
            key, _, value = entry.partition("=")
            if key == name:
                return value
        return None

    def has_constraint(self, name: ConstraintName | str) -> bool:
        """True if the manifest lists the constraint (flag or valued)."""
        return any(entry.partition("=")[0] == name for entry in self.constraints)

    @property
    def max_run_cost_micros(self) -> int | None:
        """The ``max-run-cost-usd`` cap in micro-dollars, if set."""
        value = self.constraint_value(ConstraintName.MAX_RUN_COST_USD)
        return None if value is None else usd_to_micros(value)

    @property
    def max_concurrent_runs(self) -> int | None:
        """The ``max-concurrent-runs`` cap, if set."""
        value = self.constraint_value(ConstraintName.MAX_CONCURRENT_RUNS)
        return None if value is None else int(value)


def _tool_problems(raw: object, declared: list[str] | None) -> list[tuple[Loc, str]]:
    """Duplicate tool names and undeclared permissions, read from the raw tools list."""
    found: list[tuple[Loc, str]] = []
    first_at: dict[str, int] = {}
    for index, tool in enumerate(raw if isinstance(raw, list) else []):
        entry = tool.model_dump() if isinstance(tool, ToolSpec) else tool
        if not isinstance(entry, dict):
            continue
        name, permissions = entry.get("name"), entry.get("permissions")
        if isinstance(name, str):
            if name in first_at:
                found.append(((index, "name"),
                              f"tool {name!r} is defined twice (first at tools[{first_at[name]}])"))
            first_at.setdefault(name, index)
        for position, permission in enumerate(permissions if isinstance(permissions, list) else []):
            if declared is not None and isinstance(permission, str) and permission not in declared:
                found.append(((index, "permissions", position),
                              f"{show(permission)} is not declared in the manifest's permissions"))
    return found


_VALUED_CONSTRAINTS = {
    ConstraintName.MAX_RUN_COST_USD: "<USD amount>",
    ConstraintName.MAX_CONCURRENT_RUNS: "<N>",
}
_CONSTRAINT_NAMES = frozenset(ConstraintName)
_ALLOWED_CONSTRAINTS = ", ".join(
    f"{name}={_VALUED_CONSTRAINTS[name]}" if name in _VALUED_CONSTRAINTS else name for name in ConstraintName
)


def _constraint_problem(name: str, value: str | None, permissions: list[str] | None) -> str | None:
    if name not in _CONSTRAINT_NAMES:
        return f"unknown constraint {show(name)}; allowed: {_ALLOWED_CONSTRAINTS}"
    if name in _VALUED_CONSTRAINTS and value is None:
        return f"constraint {name!r} needs a value: {name}={_VALUED_CONSTRAINTS[ConstraintName(name)]}"
    if name not in _VALUED_CONSTRAINTS and value is not None:
        return f"constraint {name!r} takes no value"
    if name == ConstraintName.MAX_RUN_COST_USD:
        try:
            usd_to_micros(str(value))
        except MoneyError as error:
            return f"{name}: {error}"
    if name == ConstraintName.MAX_CONCURRENT_RUNS and not re.fullmatch(
            _CONSTRAINT_VALUE_PATTERNS[ConstraintName.MAX_CONCURRENT_RUNS], str(value)):
        return f"{name}: must be a whole number from 1 to 999999"
    if name == ConstraintName.READ_ONLY and permissions:
        writes = [p for p in permissions if not p.endswith(":read")]
        if writes:
            return f"a read-only agent cannot request non-read permissions: {', '.join(writes)}"
    return None


# ------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ManifestVerdict:
    """The outcome of validating manifest data: the model, or every problem found."""

    manifest: AgentManifest | None
    problems: list[ManifestProblem]

    @property
    def ok(self) -> bool:
        """True when the manifest is valid."""
        return self.manifest is not None

    def unwrap(self) -> AgentManifest:
        """The manifest, or :class:`ManifestInvalid` carrying the problems."""
        if self.manifest is None:
            raise ManifestInvalid(self.problems)
        return self.manifest


def validate_manifest_data(data: object) -> ManifestVerdict:
    """Validate parsed manifest data (a mapping from YAML/JSON); never raises for bad data."""
    found = _non_json_values(data, ())
    if any(message == _TOO_DEEP for _, message in found):
        return _verdict(found)  # validating further could exhaust the stack
    try:
        manifest = AgentManifest.model_validate(data)
    except ValidationError as error:
        seen = {loc for loc, _ in found}
        found += [(loc, message) for loc, message in _translate(error) if loc not in seen]
        return _verdict(found)
    return _verdict(found) if found else ManifestVerdict(manifest, [])


def _verdict(found: list[tuple[Loc, str]]) -> ManifestVerdict:
    return ManifestVerdict(None, [ManifestProblem(path=format_path(loc), message=msg) for loc, msg in found])


def _non_json_values(value: object, loc: Loc) -> list[tuple[Loc, str]]:
    """Values JSON cannot hold (YAML dates, sets, NaN, non-string keys) or nesting too deep to check."""
    if len(loc) > _MAX_DEPTH:
        return [(loc, _TOO_DEEP)]
    if isinstance(value, dict):
        found: list[tuple[Loc, str]] = []
        for key, item in value.items():
            if isinstance(key, str):
                found += _non_json_values(item, (*loc, key))
            else:
                found.append((loc, f"has the non-string key {show(key)}; quote it"))
        return found
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _non_json_values(item, (*loc, index))]
    if (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, Decimal) and not value.is_finite()):
        return [(loc, "must be a finite number (NaN and infinity are not JSON)")]
    if value is None or isinstance(value, str | int | float | Decimal):
        return []
    return [(loc, f"is a {type(value).__name__} value, which JSON cannot represent; quote it if it is text")]


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value pairs)",
    "model_type": "must be a mapping (key: value pairs)",
    "model_attributes_type": "must be a mapping (key: value pairs)",
}


def _translate(error: ValidationError, root: Any = AgentManifest) -> list[tuple[Loc, str]]:
    """Pydantic's errors as (location, human message), unfolding multi-problem errors.

    ``root`` is the type that was validated, to name the allowed fields of an unknown one.
    """
    found: list[tuple[Loc, str]] = []
    for detail in error.errors(include_url=False):
        loc, ctx = tuple(detail["loc"]), detail.get("ctx", {})
        if detail["type"] == "manifest_problems":
            found += [((*loc, *sub), message) for sub, message in ctx["problems"]]
        else:
            found.append((loc, _message(detail, ctx, root)))
    return found


def _message(detail: ErrorDetails, ctx: dict[str, Any], root: Any) -> str:
    kind = detail["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in ("manifest", "usd_amount"):
        return str(ctx["message"])
    if kind == "extra_forbidden":
        return _unknown_field_message(tuple(detail["loc"]), root)
    if kind in ("enum", "literal_error"):
        return f"must be one of: {ctx['expected']}; got {show(detail['input'])}"
    if kind == "too_short":
        minimum = ctx["min_length"]
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx['le']}"
    return str(detail["msg"])


def _unknown_field_message(loc: Loc, root: Any) -> str:
    key = str(loc[-1])
    owner: Any = root
    for part in (*loc[:-1], None):  # walk the annotations down to the model that owns the unknown key
        while typing.get_origin(owner) not in (None, list):  # Annotated[X, ...] -> X, X | None -> X
            owner = next(arg for arg in typing.get_args(owner) if arg is not type(None))
        if isinstance(part, str):
            owner = owner.model_fields[part].annotation
        elif isinstance(part, int):
            owner = typing.get_args(owner)[0]
    allowed = list(owner.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field {key!r}; {hint}allowed fields: {', '.join(allowed)}"


def load_manifest(text_or_bytes: str | bytes, content_type_hint: str | None = None) -> AgentManifest:
    """Parse and validate a YAML or JSON manifest; raise :class:`ManifestInvalid` with every problem."""
    return validate_manifest_data(parse_manifest_document(text_or_bytes, content_type_hint)).unwrap()


# ---------------------------------------------------------------------------------- schema, diffs


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a manifest document, as published in ``docs/``.

    Cross-field rules (tool permissions declared, known constraints, valid nested JSON Schemas)
    are beyond JSON Schema; :func:`validate_manifest_data` is the authority.
    """
    schema = AgentManifest.model_json_schema(mode="validation")
    schema["title"] = "Agent manifest"
    return {"$schema": _DRAFT_2020_12, "$id": MANIFEST_SCHEMA_ID, **schema}


def manifest_json_schema_text() -> str:
    """:func:`manifest_json_schema` rendered exactly as ``docs/manifest.schema.json`` stores it."""
    return json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False) + "\n"


def write_manifest_json_schema(path: Path = SCHEMA_FILE) -> Path:
    """Write the published JSON Schema file and return its path."""
    path.write_text(manifest_json_schema_text(), encoding="utf-8")
    return path


@dataclass(frozen=True)
class PermissionDiff:
    """Permissions of a new version compared with the installed one (each sorted)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def needs_consent(self) -> bool:
        """An org admin must consent before a version asking for more permissions is installed."""
        return bool(self.added)


def permission_diff(old: AgentManifest | None, new: AgentManifest) -> PermissionDiff:
    """Compare permissions; ``old`` is None for a first install, where everything is added."""
    before = set(old.permissions) if old is not None else set()
    after = set(new.permissions)
    return PermissionDiff(
        added=tuple(sorted(after - before)),
        removed=tuple(sorted(before - after)),
        unchanged=tuple(sorted(after & before)),
    )


if __name__ == "__main__":
    written = write_manifest_json_schema(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_FILE)
    sys.stdout.write(f"wrote {written}\n")
