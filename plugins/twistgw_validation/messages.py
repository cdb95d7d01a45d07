"""AWS's wording for body-validation failures (``$context.error.validationErrorString``).

API Gateway validates bodies with a draft-04 validator whose messages are those of the
Java json-schema-validator 2.x (fge) message bundle, and puts them in
``validationErrorString`` as a Java list: ``[message, message]``.  Observed on AWS:
``[object has missing required properties (["email"])]``; the same bundle's other
messages (``instance type (string) does not match any allowed primitive type (allowed:
["integer"])``, ...) are reproduced here from the bundle's text.  The body of the 400 is
always ``{"message": "Invalid request body"}``; only access logs and gateway-response
templates see these strings.

What is reproduced from that validator, and what is a choice:

* one message per failing keyword and instance node; ``required`` lists every missing
  name in one message, sorted; ``type`` lists the allowed types sorted, with
  ``integer`` added wherever ``number`` is allowed (an integer is a number);
* values are printed as compact JSON (``["a","b"]``, ``("x")``), strings in
  ``minLength``/``maxLength``/``pattern`` messages raw, lengths in code points;
* a node that fails its own keywords is not descended into (the validator's default
  without deep checks), so a failing object does not also report its members;
* ``format`` is not checked (API Gateway does not);
* order: the root's messages first, then its members' (by member name, array items by
  index), each node's messages by keyword name.  AWS's order between several messages has
  not been recorded; this is the documented choice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft4Validator, validators  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

__all__ = ["aws_messages", "validation_error_string", "json_text", "AwsDraft4Validator"]

#: JSON Schema type names as the validator names a value's type.
_TYPE_ORDER = ("array", "boolean", "integer", "null", "number", "object", "string")


def json_text(value: Any) -> str:
    """Compact JSON, as Jackson prints a node (non-ASCII kept, no spaces)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _all_of(validator: Any, all_of: list[Any], instance: Any, schema: Any
            ) -> Iterable[ValidationError]:
    """``allOf`` as one failure of the node (jsonschema reports the subschemas' errors
    instead), so the message can say how many subschemas matched."""
    errors = [e for index, sub in enumerate(all_of)
              for e in validator.descend(instance, sub, schema_path=index)]
    if errors:
        yield ValidationError("instance failed to match all required schemas",
                              context=errors)


#: Draft-04 as API Gateway reports it: ``allOf`` fails as one keyword of its node.
AwsDraft4Validator = validators.extend(Draft4Validator, {"allOf": _all_of})


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() and abs(value) < 2 ** 63 else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _allowed_types(types: Any) -> list[str]:
    wanted = {types} if isinstance(types, str) else set(types or ())
    if "number" in wanted:
        wanted.add("integer")
    return [t for t in _TYPE_ORDER if t in wanted]


def _number(value: Any) -> str:
    return json_text(value)


def _matched(error: ValidationError) -> int:
    """How many subschemas of an anyOf/oneOf/allOf the instance matched."""
    schemas = error.validator_value or []
    failed = {e.schema_path[0] for e in (error.context or ()) if e.schema_path}
    return len(schemas) - len(failed)


def _unwanted(schema: Mapping[str, Any], instance: Mapping[str, Any]) -> list[str]:
    properties = schema.get("properties") or {}
    patterns = [re.compile(p) for p in (schema.get("patternProperties") or {})]
    return sorted(k for k in instance if k not in properties
                  and not any(p.search(k) for p in patterns))


def _message(error: ValidationError) -> str | None:
    """The validator's message for one jsonschema error (``None``: not reported)."""
    keyword = error.validator
    value = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if keyword == "type":
        return (f"instance type ({_type_of(instance)}) does not match any allowed primitive "
                f"type (allowed: {json_text(_allowed_types(value))})")
    if keyword == "enum":
        return (f"instance value ({json_text(instance)}) not found in enum (possible values: "
                f"{json_text(value)})")
    if keyword == "minimum":
        if schema.get("exclusiveMinimum"):
            return (f"numeric instance is not strictly greater than the required minimum "
                    f"{_number(value)}")
        return (f"numeric instance is lower than the required minimum (minimum: "
                f"{_number(value)}, found: {_number(instance)})")
    if keyword == "maximum":
        if schema.get("exclusiveMaximum"):
            return (f"numeric instance is not strictly lower than the required maximum "
                    f"{_number(value)}")
        return (f"numeric instance is greater than the required maximum (maximum: "
                f"{_number(value)}, found: {_number(instance)})")
    if keyword == "multipleOf":
        return f"remainder of division is not zero ({_number(instance)} / {_number(value)})"
    if keyword == "minLength":
        return (f'string "{instance}" is too short (length: {len(instance)}, required '
                f"minimum: {value})")
    if keyword == "maxLength":
        return (f'string "{instance}" is too long (length: {len(instance)}, maximum '
                f"allowed: {value})")
    if keyword == "pattern":
        return f'ECMA 262 regex "{value}" does not match input string "{instance}"'
    if keyword == "minItems":
        return (f"array is too short: must have at least {value} elements but instance has "
                f"{len(instance)} elements")
    if keyword == "maxItems":
        return (f"array is too long: must have at most {value} elements but instance has "
                f"{len(instance)} elements")
    if keyword == "uniqueItems":
        return "array must not contain duplicate elements"
    if keyword == "additionalItems":
        items = schema.get("items")
        allowed = len(items) if isinstance(items, list) else 0
        return (f"schema only allows {allowed} elements in array but instance has "
                f"{len(instance)} elements")
    if keyword == "minProperties":
        return (f"object has too few properties (found {len(instance)} but schema requires "
                f"at least {value})")
    if keyword == "maxProperties":
        return (f"object has too many properties (found {len(instance)} but schema requires "
                f"at most {value})")
    if keyword == "additionalProperties":
        return (f"object instance has properties which are not allowed by the schema: "
                f"{json_text(_unwanted(schema, instance))}")
    if keyword == "anyOf":
        return f"instance failed to match at least one required schema among {len(value)}"
    if keyword == "oneOf":
        return (f"instance failed to match exactly one schema (matched {_matched(error)} "
                f"out of {len(value)})")
    if keyword == "allOf":
        return (f"instance failed to match all required schemas (matched only "
                f"{_matched(error)} out of {len(value)})")
    if keyword == "not":
        return "instance matched a schema which it should not have"
    if keyword == "dependencies":
        return None  # grouped per property in aws_messages
    if keyword == "required":
        return None  # grouped per object in aws_messages
    return error.message  # type: ignore[no-any-return]


def _path_key(path: Iterable[Any]) -> tuple[tuple[int, str], ...]:
    return tuple((0, f"{p:020d}") if isinstance(p, int) else (1, str(p)) for p in path)


def aws_messages(errors: Iterable[ValidationError]) -> list[str]:
    """The messages for a body's validation errors, in the documented order."""
    by_node: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    missing: dict[tuple[Any, ...], set[str]] = {}
    deps_seen: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator == "required":
            missing.setdefault(path, set()).update(
                name for name in error.validator_value if name not in error.instance)
            continue
        if error.validator == "dependencies":
            deps_seen.setdefault(path, (error.validator_value, error.instance))
            continue
        message = _message(error)
        if message is not None:
            by_node.setdefault(path, []).append((str(error.validator), message))
    for path, names in missing.items():
        by_node.setdefault(path, []).append(
            ("required", f"object has missing required properties "
                         f"({json_text(sorted(names))})"))
    for path, (deps, instance) in deps_seen.items():
        for name in sorted(instance):
            needed = deps.get(name)
            if not isinstance(needed, list):
                continue  # a schema dependency: its own keywords reported the failure
            absent = sorted(n for n in needed if n not in instance)
            if absent:
                by_node.setdefault(path, []).append(
                    ("dependencies", f'property "{name}" of object has missing property '
                                     f"dependencies (schema requires "
                                     f"{json_text(sorted(needed))}; missing: "
                                     f"{json_text(absent)})"))
    failing = sorted(by_node, key=_path_key)
    out: list[str] = []
    for path in failing:
        # Not descended into when an ancestor already failed (no deep check).
        if any(path[:i] in by_node for i in range(len(path))):
            continue
        for _keyword, message in sorted(by_node[path], key=lambda e: e[0]):
            if message not in out:
                out.append(message)
    return out


def validation_error_string(errors: Iterable[ValidationError]) -> str:
    """``[message, message]``: a Java list's text, as AWS shows it."""
    return f"[{', '.join(aws_messages(errors))}]"
