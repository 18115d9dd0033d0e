"""Reading a manifest document: YAML or JSON, defensively (size limit, UTF-8, duplicate keys,
no YAML aliases or merge keys, no NaN/Infinity), into a plain mapping for validation."""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import yaml

from shared.catalog.manifest_problems import MAX_MANIFEST_BYTES, ManifestInvalid, ManifestProblem, show


class _ManifestYamlLoader(yaml.SafeLoader):
    """safe_load's loader, stricter: duplicate keys, aliases and merge keys are errors."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Aliases let a few hundred bytes expand into billions of nodes once traversed.
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed in a manifest",
                                       problem_mark=mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.MarkedYAMLError(problem="merge keys (<<) are not allowed in a manifest",
                                           problem_mark=key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {show(key)}",
                                           problem_mark=key_node.start_mark)
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


def _timestamp_as_text(loader: _ManifestYamlLoader, node: yaml.ScalarNode) -> str:
    # A YAML 1.1 timestamp (`released: 2025-01-01`) was almost surely meant as text; keep it text.
    return loader.construct_scalar(node)


_ManifestYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


class _StrictJsonError(ValueError):
    """Well-formed JSON that a manifest still may not contain."""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _StrictJsonError(f"duplicate key {show(key)}")
        result[key] = value
    return result


def _json_constant(name: str) -> float:
    raise _StrictJsonError(f"{name} is not valid JSON")


def parse_manifest_document(document: str | bytes, content_type_hint: str | None = None) -> object:
    """Parse a YAML or JSON manifest document into a mapping, or raise :class:`ManifestInvalid`.

    ``content_type_hint`` (a media type such as ``application/json`` or ``application/yaml``, or
    just ``json``/``yaml``) picks the parser; without one, a document starting with ``{`` is tried
    as JSON first.
    """
    def invalid(message: str) -> ManifestInvalid:
        return ManifestInvalid([ManifestProblem(path="", message=message)])

    if not isinstance(document, str | bytes | bytearray):
        raise invalid(f"must be text or bytes, not {type(document).__name__}")
    try:
        raw = document.encode("utf-8") if isinstance(document, str) else bytes(document)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise invalid(f"is {len(raw):,} bytes; a manifest may be at most {MAX_MANIFEST_BYTES:,} bytes")
        text = raw.decode("utf-8-sig")
    except (UnicodeEncodeError, UnicodeDecodeError) as error:
        raise invalid(f"is not valid UTF-8 text ({error.reason})") from None
    hint = (content_type_hint or "").split(";")[0].strip().lower()
    as_json = hint.endswith("json") or (not hint and text.lstrip().startswith("{"))
    try:
        if as_json:
            try:
                data = json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)
            except _StrictJsonError as error:
                raise invalid(f"is not valid JSON: {error}") from None
            except json.JSONDecodeError as error:
                if hint:  # declared JSON must be JSON; a sniffed "{" may still be a YAML flow mapping
                    raise invalid(f"is not valid JSON: {error}") from None
                data = yaml.load(text, Loader=_ManifestYamlLoader)  # noqa: S506 - a SafeLoader subclass
        else:
            data = yaml.load(text, Loader=_ManifestYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise invalid(f"is not valid YAML: {_yaml_reason(error)}") from None
    except RecursionError:
        raise invalid("is nested too deeply") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise invalid(f"must be a mapping of manifest fields at the top level, not {kind}")
    return data


def _yaml_reason(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        problem = f"{error.context}, {error.problem}" if error.context else error.problem
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(error)
