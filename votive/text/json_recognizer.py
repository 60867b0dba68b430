"""A byte-level pushdown recognizer for JSON documents, optionally valid for a schema (`votive.text.json_schema`),
optionally wrapped in fixed text (a tool call's `<tool_call>` ... `</tool_call>`).

It is fed one byte at a time and says which states the prefix read so far can be in; a prefix that no valid
document starts with has no state. Constrained decoding (`votive.models.json_constraint`) asks it, for every
token, whether the token's bytes keep a state alive.

A state is a frozenset of stacks (nondeterminism: `anyOf`, and a number or literal that may end or go on), a
stack a tuple of hashable frames, its top last, so states can key caches. Frames:

    ("V", node, ws)                 a value of schema `node` is expected; ws whitespace bytes read before it
    ("O", node, phase, emitted, ws) inside an object; phase "{", ",", "a" (after a value), ("k", typed key
                                    bytes so far) or ("c", key) (a key read, the colon expected)
    ("A", node, phase, count, ws)   inside an array; phase "[", ",", "a"; count items begun
    ("S", esc)                      inside a string of any content; esc 0, -1 after a backslash, n > 0 hex
                                    digits of a \\u escape still to come, or (n, lo, hi): n UTF-8 continuation
                                    bytes still to come, the next one from lo to hi (strings stay valid UTF-8)
    ("N", integer_only, phase, n)   inside a number; phase "-", "0", "i", ".", "f", "e", "s", "x"; n digits
    ("L", candidates, pos)          one of the byte strings `candidates` (enum values, true/false/null), pos read
    ("P", text, pos), ("T", text, pos)   fixed text before (P) or after (T) the document

Generation is kept finite and models kept from wandering: at most MAX_WS whitespace bytes in a row, MAX_DIGITS
digits in a number's integer or fraction part, free-form containers nested at most MAX_DEPTH deep, and nothing
at all after the document (the only continuation of a complete document is the end of generation).

Example:
    >>> r = Recognizer(compile_schema({"type": "array", "items": {"type": "integer"}}))
    >>> state = r.feed(r.start, b'[1, 2]')
    >>> r.complete(state), r.feed(r.start, b'[1, "a"]')
    (True, None)
"""

from __future__ import annotations

import json

from votive.text.json_schema import ANY, Node, compile_schema

MAX_WS = 20
MAX_DIGITS = 16
MAX_EXP_DIGITS = 3
MAX_DEPTH = 24  # frames on a stack: nesting of containers

_WS = frozenset(b" \t\n\r")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'"\\/bfnrt')
_ACCEPTING_NUMBER = frozenset({"0", "i", "f", "x"})
# UTF-8 lead byte -> (continuation bytes, range of the first one): no overlong forms, surrogates or code points
# past U+10FFFF (the Unicode standard's table 3-7).
_UTF8_LEADS = {**{b: (1, 0x80, 0xBF) for b in range(0xC2, 0xE0)}, 0xE0: (2, 0xA0, 0xBF),
               **{b: (2, 0x80, 0xBF) for b in (*range(0xE1, 0xED), 0xEE, 0xEF)}, 0xED: (2, 0x80, 0x9F),
               0xF0: (3, 0x90, 0xBF), **{b: (3, 0x80, 0xBF) for b in range(0xF1, 0xF4)}, 0xF4: (3, 0x80, 0x8F)}
_QUOTE, _BACKSLASH, _COLON, _COMMA = 0x22, 0x5C, 0x3A, 0x2C


def json_bytes(value) -> bytes:
    """The compact JSON text a literal (enum value, property name) is generated as."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Compiled:
    """What the recognizer needs of one schema node, precomputed."""

    def __init__(self, node: Node):
        self.node = node
        self.types = node.types
        self.integer_only = "number" not in node.types
        self.literals = frozenset(json_bytes(v) for v in node.enum) if node.enum is not None else None
        self.any_of: list[int] = []
        self.keys: dict[bytes, tuple[str, int]] = {}  # '"name"' as bytes -> (name, child node index)
        self.required = node.required
        self.free_value: int | None = None  # objects without declared properties: any key, values of this schema
        self.items = 0


class Recognizer:
    """The recognizer for documents valid for `root`, between the fixed texts `prefix` and `suffix`."""

    def __init__(self, root: Node, prefix: bytes = b"", suffix: bytes = b""):
        self.nodes: list[_Compiled] = []
        self._index: dict[int, int] = {}
        stack: tuple = (("V", self._register(root), 0),)
        if suffix:
            stack = (("T", suffix, 0),) + stack
        if prefix:
            stack = stack + (("P", prefix, 0),)
        self.start = frozenset([stack])

    def _register(self, node: Node) -> int:
        if id(node) in self._index:
            return self._index[id(node)]
        i = len(self.nodes)
        c = _Compiled(node)
        self.nodes.append(c)
        self._index[id(node)] = i
        if node.any_of is not None:
            c.any_of = [self._register(alt) for alt in node.any_of]
        declared = dict(node.properties)
        for name in node.required - set(declared):  # required but undeclared: valued by additionalProperties
            declared[name] = node.additional
        c.keys = {json_bytes(name): (name, self._register(sub)) for name, sub in declared.items()}
        if not declared and node.additional is not None:
            c.free_value = self._register(node.additional)
        c.items = self._register(node.items if node.items is not None else ANY)
        return i

    # --- the whole state

    def feed(self, state: frozenset | None, data: bytes) -> frozenset | None:
        """The state after `data`, or None when no document starts with what has been read."""
        for b in data:
            if not state:
                return None
            state = self.step(state, b)
        return state or None

    def step(self, state: frozenset, b: int) -> frozenset:
        out: list = []
        for stack in state:
            self._step(stack, b, out)
        return frozenset(out)

    def complete(self, state: frozenset | None) -> bool:
        """Whether the bytes read are a whole document (the generation may end here)."""
        return bool(state) and any(self._done(stack) for stack in state)

    def _done(self, stack: tuple) -> bool:
        if not stack:
            return True
        if len(stack) > 1:
            return False
        top = stack[0]
        return (top[0] == "N" and top[2] in _ACCEPTING_NUMBER) or (top[0] == "L" and _literal_ends(top))

    # --- one stack, one byte

    def _step(self, stack: tuple, b: int, out: list) -> None:
        if not stack:
            return  # the document is complete: nothing may follow it
        top, rest = stack[-1], stack[:-1]
        kind = top[0]
        if kind == "S":
            self._string(top[1], rest, b, out)
        elif kind == "V":
            self._value(top, rest, b, out)
        elif kind == "O":
            self._object(top, rest, b, out)
        elif kind == "A":
            self._array(top, rest, b, out)
        elif kind == "N":
            self._number(top, rest, b, out)
        elif kind == "L":
            cands, pos = top[1], top[2]
            nxt = frozenset(c for c in cands if len(c) > pos and c[pos] == b)
            if nxt:
                out.append(rest if all(len(c) == pos + 1 for c in nxt) else rest + (("L", nxt, pos + 1),))
            if _literal_ends(top):  # the literal may have ended: the byte is the parent's
                self._step(rest, b, out)
        else:  # "P" / "T": fixed text
            text, pos = top[1], top[2]
            if text[pos] == b:
                out.append(rest if pos + 1 == len(text) else rest + ((kind, text, pos + 1),))

    @staticmethod
    def _string(esc: int, rest: tuple, b: int, out: list) -> None:
        if esc == 0:
            if b == _QUOTE:
                out.append(rest)
            elif b == _BACKSLASH:
                out.append(rest + (("S", -1),))
            elif 0x20 <= b < 0x80:  # control characters must be escaped in JSON strings
                out.append(rest + (("S", 0),))
            elif b in _UTF8_LEADS:
                out.append(rest + (("S", _UTF8_LEADS[b]),))
        elif isinstance(esc, tuple):
            pending, lo, hi = esc
            if lo <= b <= hi:
                out.append(rest + (("S", 0 if pending == 1 else (pending - 1, 0x80, 0xBF)),))
        elif esc == -1:
            if b in _ESCAPES:
                out.append(rest + (("S", 0),))
            elif b == 0x75:  # \uXXXX
                out.append(rest + (("S", 4),))
        elif b in _HEX:
            out.append(rest + (("S", esc - 1),))

    def _value(self, top: tuple, rest: tuple, b: int, out: list) -> None:
        _, i, ws = top
        c = self.nodes[i]
        if b in _WS:
            if ws < MAX_WS:
                out.append(rest + (("V", i, ws + 1),))
            return
        if c.any_of:
            for alt in c.any_of:
                self._value(("V", alt, ws), rest, b, out)
            return
        if c.literals is not None:
            self._step(rest + (("L", c.literals, 0),), b, out)
            return
        types = c.types
        deep = len(rest) + 1 >= MAX_DEPTH
        if b == 0x7B and "object" in types and not deep:
            out.append(rest + (("O", i, "{", frozenset(), 0),))
        elif b == 0x5B and "array" in types and not deep:
            out.append(rest + (("A", i, "[", 0, 0),))
        elif b == _QUOTE and "string" in types:
            out.append(rest + (("S", 0),))
        elif (b == 0x2D or b in _DIGITS) and ("number" in types or "integer" in types):
            phase, n = ("-", 0) if b == 0x2D else ("0", 0) if b == 0x30 else ("i", 1)
            out.append(rest + (("N", c.integer_only, phase, n),))
        elif b in b"tf" and "boolean" in types:
            self._step(rest + (("L", frozenset({b"true", b"false"}), 0),), b, out)
        elif b == 0x6E and "null" in types:
            self._step(rest + (("L", frozenset({b"null"}), 0),), b, out)

    def _object(self, top: tuple, rest: tuple, b: int, out: list) -> None:
        _, i, phase, emitted, ws = top
        c = self.nodes[i]
        if isinstance(phase, tuple) and phase[0] == "k":  # typing a declared key
            typed = phase[1] + bytes((b,))
            for key, (name, _) in c.keys.items():
                if name not in emitted and key.startswith(typed):
                    out.append(rest + (("O", i, ("c", name) if key == typed else ("k", typed), emitted, 0),))
                    return
            return
        if b in _WS:
            if ws < MAX_WS:
                out.append(rest + (("O", i, phase, emitted, ws + 1),))
            return
        if isinstance(phase, tuple):  # ("c", key): the colon, then the key's value
            if b == _COLON:
                name = phase[1]
                child = c.free_value if name is None else c.keys[json_bytes(name)][1]
                done = emitted if name is None else emitted | {name}
                out.append(rest + (("O", i, "a", done, 0), ("V", child, 0)))
            return
        can_close = c.required <= emitted
        more = c.free_value is not None or any(name not in emitted for name, _ in c.keys.values())
        if phase == "a":
            if b == _COMMA and more:
                out.append(rest + (("O", i, ",", emitted, 0),))
            elif b == 0x7D and can_close:
                out.append(rest)
            return
        if b == 0x7D and phase == "{" and can_close:
            out.append(rest)
        elif b == _QUOTE and more:
            if c.free_value is not None:
                out.append(rest + (("O", i, ("c", None), emitted, 0), ("S", 0)))
            else:
                out.append(rest + (("O", i, ("k", b'"'), emitted, 0),))

    def _array(self, top: tuple, rest: tuple, b: int, out: list) -> None:
        _, i, phase, count, ws = top
        node = self.nodes[i].node
        if b in _WS:
            if ws < MAX_WS:
                out.append(rest + (("A", i, phase, count, ws + 1),))
            return
        full = node.max_items is not None and count >= node.max_items
        if b == 0x5D and phase != "," and count >= node.min_items:
            out.append(rest)
        elif phase == "a":
            if b == _COMMA and not full:
                out.append(rest + (("A", i, ",", count, 0),))
        elif not full:
            self._value(("V", self.nodes[i].items, 0), rest + (("A", i, "a", count + 1, 0),), b, out)

    def _number(self, top: tuple, rest: tuple, b: int, out: list) -> None:
        _, integer_only, phase, n = top
        nxt = None
        digit = b in _DIGITS
        if phase == "-":
            nxt = ("0", 0) if b == 0x30 else ("i", 1) if digit else None
        elif phase in ("0", "i") and digit:
            nxt = ("i", n + 1) if phase == "i" and n < MAX_DIGITS else None
        elif phase in ("0", "i", "f") and b == 0x2E and phase != "f" and not integer_only:
            nxt = (".", 0)
        elif phase in ("0", "i", "f") and b in b"eE" and not integer_only:
            nxt = ("e", 0)
        elif phase == "." and digit:
            nxt = ("f", 1)
        elif phase == "f" and digit:
            nxt = ("f", n + 1) if n < MAX_DIGITS else None
        elif phase == "e" and b in b"+-":
            nxt = ("s", 0)
        elif phase in ("e", "s") and digit:
            nxt = ("x", 1)
        elif phase == "x" and digit:
            nxt = ("x", n + 1) if n < MAX_EXP_DIGITS else None
        if nxt is not None:
            out.append(rest + (("N", integer_only, *nxt),))
        if phase in _ACCEPTING_NUMBER:  # the number may have ended: the byte is the parent's
            self._step(rest, b, out)


class Distance:
    """The fewest bytes that complete a document from a state (0 when it is complete): what a generation whose
    token budget runs low must still write (`votive.models.json_constraint` closes documents with it).

    Computed frame by frame from the schema's shortest values (`shortest`): a string needs its closing quote,
    an object the required properties it lacks and its brace, an array its missing minItems and its bracket.
    Whitespace limits are not counted; a value is as short as its type allows (a number is one digit).
    """

    def __init__(self, recognizer: Recognizer):
        self.r = recognizer
        self._shortest: dict[int, int] = {}

    def __call__(self, state: frozenset | None) -> int:
        if not state:
            return 1 << 30
        return min(sum(self._frame(f) for f in stack) for stack in state)

    def shortest(self, i: int) -> int:
        """Bytes of the shortest value of node i."""
        if i in self._shortest:
            return self._shortest[i]
        self._shortest[i] = 1 << 20  # a node reached again while being measured (no finite value through it)
        c = self.r.nodes[i]
        node = c.node
        if c.any_of:
            best = min(self.shortest(a) for a in c.any_of)
        elif c.literals is not None:
            best = min(len(v) for v in c.literals)
        else:
            sizes = {"null": 4, "boolean": 4, "number": 1, "integer": 1, "string": 2,
                     "array": 2 + self._items(i, node.min_items) if node.min_items else 2,
                     "object": self._close(c, c.required) + (0 if c.required else 1)}  # "{" + keys + "}"
            best = min(sizes[t] for t in node.types)
        self._shortest[i] = best
        return best

    def _items(self, i: int, k: int) -> int:
        return k * self.shortest(self.r.nodes[i].items) + k - 1 if k > 0 else 0

    def _key(self, c: _Compiled, name: str) -> int:
        key = json_bytes(name)
        return len(key) + 1 + self.shortest(c.keys[key][1])

    def _close(self, c: _Compiled, missing) -> int:
        """Bytes after an object's last written value (or its "{"): the missing required keys, then "}"."""
        return sum(1 + self._key(c, r) for r in missing) + 1

    def _frame(self, f: tuple) -> int:
        kind = f[0]
        if kind == "V":
            return self.shortest(f[1])
        if kind == "S":
            esc = f[1]
            return esc[0] + 1 if isinstance(esc, tuple) else 1 if esc == 0 else 2 if esc == -1 else esc + 1
        if kind == "N":
            return 0 if f[2] in _ACCEPTING_NUMBER else 1
        if kind == "L":
            return min(len(c) - f[2] for c in f[1])
        if kind in ("P", "T"):
            return len(f[1]) - f[2]
        if kind == "A":
            node = self.r.nodes[f[1]].node
            missing = max(node.min_items - f[3], 1 if f[2] == "," else 0)
            if f[2] == "a":
                return missing * (1 + self.shortest(self.r.nodes[f[1]].items)) + 1
            return self._items(f[1], missing) + 1
        c = self.r.nodes[f[1]]  # "O"
        phase, emitted = f[2], f[3]
        missing = c.required - emitted
        if phase == "a":
            return self._close(c, missing)
        if phase in ("{", ","):
            if missing:
                return self._close(c, missing) - 1
            if phase == "{":
                return 1
            if c.free_value is not None:
                return 3 + self.shortest(c.free_value) + 1
            return min(self._key(c, n) for n, _ in c.keys.values() if n not in emitted) + 1
        if phase[0] == "c":
            child = c.free_value if phase[1] is None else c.keys[json_bytes(phase[1])][1]
            return 1 + self.shortest(child) + self._close(c, missing - {phase[1]})
        typed = phase[1]  # ("k", typed)
        return min(len(key) - len(typed) + 1 + self.shortest(child) + self._close(c, missing - {name})
                   for key, (name, child) in c.keys.items() if name not in emitted and key.startswith(typed))


def _literal_ends(frame: tuple) -> bool:
    return any(len(c) == frame[2] for c in frame[1])


__all__ = ["Recognizer", "compile_schema", "json_bytes", "MAX_WS", "MAX_DEPTH"]
