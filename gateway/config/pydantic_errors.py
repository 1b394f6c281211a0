"""Pydantic validation errors -> `ConfigProblem`s an OT engineer can act on.

Pydantic reports `('connection', 'modbus_tcp', 'host')` and "Field required"; the engineer
needs `devices/press-3.yaml:7: connection.host: field required`. This module turns each error's
location into the dotted path of the YAML (dropping the union tags pydantic inserts), finds the
line through the document's marks, and rewrites the message in plain words that name the
offending value. It knows nothing about particular models: it walks whatever model it is given,
so new protocols and point types need no change here.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.config.models import RULE_KIND_ERROR
from gateway.config.yaml_marks import MarkedDocument, PathPart, dotted
from gateway.core.errors import ConfigProblem

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def validation_problems(
    exc: ValidationError, model: type[BaseModel], document: MarkedDocument
) -> list[ConfigProblem]:
    """One problem per pydantic error, located in `document`."""
    problems: list[ConfigProblem] = []
    for error in exc.errors(include_url=False):
        parts = _yaml_path(error["loc"], document.data)
        message = _message(error, parts, model, document.data)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # The problem is the discriminator key (`protocol`), not the whole mapping.
            parts = [*parts, _discriminator(error)]
        elif error["type"] == RULE_KIND_ERROR and _has_key(error.get("input"), "kind"):
            # An unknown kind that is written: reported at its own line.
            parts = [*parts, "kind"]
            message = f"{message}; got {_got(error['input']['kind'])}"
        path = dotted(parts)
        problems.append(ConfigProblem(document.file, document.line_of(path), path, message))
    return problems


def _has_key(value: object, key: str) -> bool:
    return isinstance(value, dict) and key in value


def _yaml_path(loc: tuple[int | str, ...], data: object) -> list[PathPart]:
    """The location as written in the YAML: union tags and validator names dropped.

    A discriminated union adds the tag (`modbus_tcp`) to the location; it is not a key of the
    input, so any component that is neither a key of the mapping nor an index of the list at
    that point is skipped, except the last one of a missing field, which names the field.
    """
    parts: list[PathPart] = []
    node = data
    for position, part in enumerate(loc):
        is_last = position == len(loc) - 1
        in_mapping = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            parts.append(part)
            node = node[part]  # type: ignore[index]
        elif is_last and isinstance(node, dict) and isinstance(part, str):
            parts.append(part)  # a missing field: located at its parent mapping
    return parts


def _discriminator(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    return str(ctx.get("discriminator", "type")).strip("'\"")


def _message(
    error: ErrorDetails, parts: list[PathPart], model: type[BaseModel], data: object
) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    got = _got(value)
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        key = str(parts[-1]) if parts else "?"
        close = difflib.get_close_matches(
            key, _field_names(_types_at(model, parts[:-1], data)), n=1, cutoff=0.7
        )
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        return f"unknown key `{key}`{hint}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        name = _discriminator(error)
        tags = _discriminator_values(_types_at(model, parts, data), name)
        tag_list = ", ".join(tags) or _QUOTED.sub(r"\1", str(ctx.get("expected_tags", "")))
        if kind == "union_tag_not_found":
            return f"field required; {name} must be one of: {tag_list}"
        return f"{name} must be one of: {tag_list}; got {_got(ctx.get('tag'))}"
    if kind in ("enum", "literal_error"):
        choices = ", ".join(_QUOTED.findall(str(ctx.get("expected", ""))))
        return f"must be one of: {choices}; got {got}"
    simple = _SIMPLE_MESSAGES.get(kind)
    if simple is not None:
        return f"{simple}, got {got}{_quoted_number_hint(kind, value)}"
    if kind == "string_type":
        hint = "; put it in quotes" if isinstance(value, bool | int | float) else ""
        return f"input should be a text string, got {got}{hint}"
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "at least" if kind == "too_short" else "at most"
        noun = "item" if bound == 1 else "items"
        return f"should have {word} {bound} {noun}, got {ctx.get('actual_length')}"
    bound_words = _BOUNDS.get(kind)
    if bound_words is not None:
        word, key = bound_words
        return f"must be {word} {_got(ctx.get(key))}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')}, got {got}"
    if kind in ("value_error", "assertion_error"):
        # A model's own validator: its sentence is already written for the engineer.
        return str(ctx.get("error", error["msg"]))
    text = error["msg"]
    text = text[:1].lower() + text[1:]
    return f"{text}, got {got}" if not isinstance(value, dict | list) else text


_SIMPLE_MESSAGES = {
    "float_parsing": "input should be a valid number",
    "float_type": "input should be a valid number",
    "finite_number": "input should be a finite number",
    "int_parsing": "input should be a valid integer",
    "int_type": "input should be a valid integer",
    "int_from_float": "input should be a whole number",
    "bool_parsing": "input should be true or false",
    "bool_type": "input should be true or false",
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "list_type": "expected a list",
}

_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}


def _quoted_number_hint(kind: str, value: object) -> str:
    """`port: "502"`: the models are strict like the JSON Schema (a quoted number is text), so
    say how to write it rather than only that it is wrong."""
    if kind not in ("int_type", "float_type", "bool_type") or not isinstance(value, str):
        return ""
    text = value.strip()
    if kind == "bool_type":
        return "; write true or false without quotes" if text in ("true", "false") else ""
    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number) or (kind == "int_type" and not number.is_integer()):
        return ""
    return f"; write {text} without quotes"


def _got(value: object) -> str:
    """The offending value as the engineer wrote it in YAML."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # `gt=0` on a float field reports 0.0; the YAML said 0
    return repr(value)


# --- walking the model to name allowed keys and discriminator values ------------------------


def _types_at(model: type[BaseModel], parts: Sequence[PathPart], data: object) -> list[Any]:
    """The types the model expects at `parts` (several for a union), narrowed by the data."""
    candidates: list[Any] = [model]
    node = data
    for part in parts:
        node = _child(node, part)
        following: list[Any] = []
        for candidate in candidates:
            if _is_model(candidate) and isinstance(part, str):
                field = _field(candidate, part)
                if field is not None:
                    following.extend(_flatten(field.annotation))
            elif get_origin(candidate) in (list, tuple, Sequence) and isinstance(part, int):
                args = get_args(candidate)
                if args:
                    following.extend(_flatten(args[0]))
        candidates = following
    return _narrow_by_discriminator(candidates, node)


def _child(node: object, part: PathPart) -> object:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _flatten(annotation: Any) -> list[Any]:
    """`Annotated[A | B, ...] | None` -> `[A, B]`: the alternatives a value may take."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _flatten(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _flatten(arg) if t is not type(None)]
    return [annotation]


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _field_names(candidates: list[Any]) -> list[str]:
    names: list[str] = []
    for candidate in candidates:
        if _is_model(candidate):
            names.extend(info.alias or name for name, info in candidate.model_fields.items())
    return names


def _literal_values(model: type[BaseModel], field_name: str) -> list[str]:
    field = _field(model, field_name)
    if field is None:
        return []
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    return []


def _discriminator_values(candidates: list[Any], name: str) -> list[str]:
    return [v for c in candidates if _is_model(c) for v in _literal_values(c, name)]


def _narrow_by_discriminator(candidates: list[Any], node: object) -> list[Any]:
    """Of several models, keep the one whose `Literal` field matches the data (`protocol`)."""
    models = [c for c in candidates if _is_model(c)]
    if len(models) < 2 or not isinstance(node, dict):
        return candidates
    for candidate in models:
        for name in candidate.model_fields:
            values = _literal_values(candidate, name)
            if values and str(node.get(name)) in values:
                return [candidate]
    return candidates


def problem_for_non_mapping(document: MarkedDocument, what: str) -> ConfigProblem:
    """The whole file is not a mapping (empty, a list, a bare word)."""
    if document.data is None:
        message = f"the file is empty; expected the {what} as a mapping of keys"
    else:
        message = f"expected the {what} as a mapping of keys, got {_got(document.data)}"
    return ConfigProblem(document.file, document.line_of(""), "", message)
