"""The JSON Schema subset votive enforces while decoding, compiled into plain nodes, and a validator for it.

Supported (JSON Schema 2020-12 meanings): `type` (object, array, string, number, integer, boolean, null, or a
list of them), `properties`, `required`, `additionalProperties` (true, false or a schema), `items` (one schema),
`minItems`, `maxItems`, `enum`, `const`, `anyOf`, and the annotations that constrain nothing (`title`,
`description`, `default`, `examples`, `$schema`, `$id`, `$comment`, `deprecated`, `readOnly`, `writeOnly`).
Any other keyword (`$ref`, `pattern`, `format`, `minLength`, `oneOf`, ...) is refused by name: a constraint we
cannot enforce must not be ignored (llama.cpp's users met exactly that, #24097, #7149).

Decoding is allowed to be stricter than the schema, never looser: an object that declares `properties` is
generated with those properties only (extra ones are valid when `additionalProperties` allows them, but never
needed), and numbers are generated without needless forms. `validate` checks the schema's own meaning.

Example:
    >>> node = compile_schema({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    >>> validate({"a": 1}, node), validate({}, node)
    (None, "$: required property 'a' is missing")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from votive.errors import InputError

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                         "readOnly", "writeOnly"})
KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                      "enum", "const", "anyOf"})
MAX_NODES = 2000  # a schema is request input: bounded in size and depth
MAX_DEPTH = 32


class SchemaError(InputError):
    """A schema that is not valid JSON Schema or uses a feature votive does not enforce; `feature` names it."""

    def __init__(self, message: str, feature: str | None = None):
        self.feature = feature
        super().__init__(message)


@dataclass
class Node:
    """One schema, checked. `types` is every type a value may have; `enum` (const too) the only values allowed."""

    types: frozenset[str] = frozenset(TYPES)
    enum: list | None = None  # allowed values (JSON), or None for any of `types`
    properties: dict[str, "Node"] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    additional: "Node | None" = None  # the schema of undeclared properties; None: they are not allowed
    items: "Node | None" = None  # None: any value
    min_items: int = 0
    max_items: int | None = None
    any_of: list["Node"] | None = None  # alternatives (the node's other fields are then unused)


ANY = Node()  # the schema `true`: any JSON value, objects with any properties
ANY.additional = ANY


def compile_schema(schema: Any, where: str = "$") -> Node:
    """Check `schema` and compile it to a Node.

    Raises:
        SchemaError: not a JSON Schema, or a keyword outside the supported subset (named in the message).
    """
    count = [0]
    return _compile(schema, where, 0, count)


def _compile(schema: Any, where: str, depth: int, count: list[int]) -> Node:
    count[0] += 1
    if count[0] > MAX_NODES or depth > MAX_DEPTH:
        raise SchemaError(f"the schema is too large: at most {MAX_NODES} subschemas nested at most {MAX_DEPTH} deep")
    if schema is True:
        return ANY
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be a JSON object (or true), found {_json(schema)}")
    for key in schema:
        if key not in KEYWORDS and key not in ANNOTATIONS:
            raise SchemaError(f"{where}: the JSON Schema keyword {key!r} is not supported for enforced output; "
                              f"supported: {', '.join(sorted(KEYWORDS))}", feature=key)
    if "anyOf" in schema:
        alts = schema["anyOf"]
        if not isinstance(alts, list) or not alts:
            raise SchemaError(f"{where}.anyOf must be a non-empty list of schemas, found {_json(alts)}")
        others = set(schema) & KEYWORDS - {"anyOf"}
        if others:
            raise SchemaError(f"{where}: 'anyOf' beside {sorted(others)[0]!r} is not supported; move the keyword "
                              f"into each alternative", feature="anyOf")
        return Node(any_of=[_compile(a, f"{where}.anyOf[{i}]", depth + 1, count) for i, a in enumerate(alts)])
    node = Node(types=_types(schema.get("type", list(TYPES)), where))
    if "enum" in schema or "const" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{where}.enum must be a non-empty list, found {_json(values)}")
        node.enum = [v for v in values if _type_of(v) in node.types or (_type_of(v) == "integer"
                                                                          and "number" in node.types)]
        if not node.enum:
            raise SchemaError(f"{where}: no value of 'enum'/'const' has an allowed 'type'; nothing could match")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(f"{where}.properties must be an object of schemas, found {_json(props)}")
    node.properties = {k: _compile(v, f"{where}.properties.{k}", depth + 1, count) for k, v in props.items()}
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{where}.required must be a list of property names, found {_json(required)}")
    node.required = frozenset(required)
    additional = schema.get("additionalProperties", True)
    if additional is False:
        node.additional = None
    else:
        node.additional = _compile(additional, f"{where}.additionalProperties", depth + 1, count)
    for name in sorted(node.required - set(node.properties)):
        if node.additional is None:
            raise SchemaError(f"{where}: property {name!r} is required but additionalProperties is false and it is "
                              f"not in 'properties'; no object could match")
    if "items" in schema:
        if isinstance(schema["items"], list):
            raise SchemaError(f"{where}: 'items' as a list (tuple validation) is not supported", feature="items")
        node.items = _compile(schema["items"], f"{where}.items", depth + 1, count)
    node.min_items = _count(schema, "minItems", where, 0)
    node.max_items = _count(schema, "maxItems", where, None)
    if node.max_items is not None and node.max_items < node.min_items:
        raise SchemaError(f"{where}: maxItems {node.max_items} is below minItems {node.min_items}")
    return node


def _types(value, where: str) -> frozenset[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SchemaError(f"{where}.type must be a type name or a list of them, found {_json(value)}")
    for name in names:
        if name not in TYPES:
            raise SchemaError(f"{where}.type {name!r} is not a JSON Schema type; expected one of {', '.join(TYPES)}")
    return frozenset(names)


def _count(schema: dict, key: str, where: str, default):
    value = schema.get(key, default)
    if value is not default and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise SchemaError(f"{where}.{key} must be a non-negative integer, found {_json(value)}")
    return value


def _type_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def validate(value, node: Node, where: str = "$") -> str | None:
    """None when `value` (parsed JSON) is valid for `node`, else the first problem with its JSON path."""
    if node.any_of is not None:
        problems = [validate(value, alt, where) for alt in node.any_of]
        return None if None in problems else f"{where}: matches no anyOf alternative ({problems[0]})"
    kind = _type_of(value)
    if kind not in node.types and not (kind == "integer" and "number" in node.types):
        return f"{where}: expected {' or '.join(sorted(node.types))}, found {kind}"
    if node.enum is not None and not any(_same(value, v) for v in node.enum):
        return f"{where}: {_json(value)} is not one of {_json(node.enum)}"
    if kind == "object":
        for name in sorted(node.required - set(value)):
            return f"{where}: required property {name!r} is missing"
        for name, item in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is None:
                return f"{where}: property {name!r} is not allowed"
            if (problem := validate(item, sub, f"{where}.{name}")) is not None:
                return problem
    if kind == "array":
        if len(value) < node.min_items or (node.max_items is not None and len(value) > node.max_items):
            return f"{where}: {len(value)} items, expected {node.min_items} to {node.max_items}"
        for i, item in enumerate(value):
            if node.items is not None and (problem := validate(item, node.items, f"{where}[{i}]")) is not None:
                return problem
    return None


def _same(a, b) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 and "1" != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _json(value) -> str:
    return json.dumps(value)[:80]
