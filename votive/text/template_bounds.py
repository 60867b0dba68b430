"""Bounds on rendering an untrusted chat template: a GGUF's metadata is anyone's text.

jinja2's sandbox keeps a template away from Python's internals, not from the machine's time and memory:
`'a'.ljust(3000000000)` asks for 3 GB in one call, two nested `range(100000)` loops run for hours, a string
doubled thirty times is a gigabyte. `BoundedEnvironment` adds bounds, each crossing raising
ChatTemplateLimitError:

- time: RENDER_SECONDS per render, checked at every item of every `for` loop (the compiled loops iterate
  through `bounded_iter`), in each call (macros included), filter and operator, and while sizing values: a
  template repeats work only through loops and macro calls;
- size of each value: whatever an operator (`+ * % **`), a call, a filter, a slice, a list/tuple/dict literal,
  a `~` concatenation or a printed `{{ }}` makes is at most MAX_CHARS characters as text, counting containers
  item by item (so `[a, a]` nested thirty deep is as big as it prints). Where one step could allocate far more
  than its inputs (padding widths of ljust/center/zfill/format/%, repetition, replace, join, expandtabs, indent,
  wordwrap, batch), the size is predicted and refused before the step runs;
- total work: the sizes of all values made in one render add up to at most TOTAL_CHARS;
- the rendered prompt: at most MAX_CHARS characters (above the 6 MB request limit, so any request that gets
  this far can be rendered, and the context length then decides);
- integers made by `*` and `**`: at most MAX_INT_BITS bits; ranges: jinja's own 100000 items;
- recursion: Python's own limit. `lipsum` (jinja's filler text, which no chat template uses) is removed, and
  `str.translate` refused.

`render_bounded` raises ChatTemplateLimitError for a bound crossed, and for the RecursionError, MemoryError and
OverflowError with which Python and jinja keep theirs; anything else the template raises is the caller's to
report (`votive.text.chat.ChatTemplate.render` makes it a ChatTemplateError).
"""

from __future__ import annotations

import functools
import re
import string
import threading
import time
import types
from collections.abc import ItemsView, KeysView, Mapping, ValuesView

import jinja2.compiler
import jinja2.nodes
import jinja2.sandbox

from votive.errors import ChatTemplateLimitError

RENDER_SECONDS = 2.0  # a real template renders in milliseconds, even over megabytes of messages
MAX_CHARS = 8 << 20  # 8 Mi characters (32 MiB at worst as Python text) for any one value and for the prompt
TOTAL_CHARS = 8 * MAX_CHARS  # all values one render makes, together
MAX_INT_BITS = 1 << 16  # Python refuses to print ints of more than 4300 digits (~14300 bits) anyway
MAX_SOURCE_CHARS = 1 << 20  # real templates are a few KB; compiling megabytes of Jinja takes seconds
_CHECK_EVERY = 1 << 14  # nodes between two clock readings while sizing a container
_TEXT = (str, bytes)  # what a template can pad, repeat and join ('x'.encode() is bytes)


class _Budget:
    """The deadline and the running total of one render."""

    def __init__(self):
        self.deadline = time.monotonic() + RENDER_SECONDS
        self.total = 0
        self.sizes: dict[int, tuple[object, int]] = {}  # id -> (container, size): see text_size

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ChatTemplateLimitError(f"the chat template ran past its {RENDER_SECONDS:g} s rendering limit")

    def charge(self, size: int, what: str) -> None:
        if size > MAX_CHARS:
            raise ChatTemplateLimitError(f"the chat template made a value of {size} characters or more with "
                                         f"{what}; the limit is {MAX_CHARS}")
        self.total += size
        if self.total > TOTAL_CHARS:
            raise ChatTemplateLimitError(f"the chat template made more than {TOTAL_CHARS} characters of values in "
                                         "one render")


def text_size(value, budget: _Budget | None = None, limit: int = MAX_CHARS) -> int:
    """About len(str(value)): containers are walked item by item, a container met twice counted each time (as it
    prints) but walked once per render (sizes are remembered in `budget`), so `[a, a]` nested thirty deep costs
    thirty steps and is as big as it prints. Stops once past `limit`."""
    if isinstance(value, _TEXT):
        return len(value)
    sizes = budget.sizes if budget is not None else {}
    results, stack, steps = [], [(value, None)], 0
    while stack:
        v, pending = stack.pop()
        if pending is None:
            steps += 1
            if budget is not None and steps % _CHECK_EVERY == 0:
                budget.check_time()
            size = _leaf_size(v)
            if size is None and id(v) in sizes:
                size = sizes[id(v)][1]
            if size is not None:
                results.append(size)
                continue
            base, items = _container(v)
            stack.append((v, (base, len(items))))
            stack.extend((item, None) for item in items)
            continue
        base, n = pending
        size = base + sum(results[len(results) - n:])
        del results[len(results) - n:]
        if size > limit:
            return size
        if not isinstance(v, jinja2.utils.Namespace):  # the only container a template can change
            sizes[id(v)] = (v, size)  # the object is kept, so its id is not reused during the render
        results.append(size)
    return results[0]


def _leaf_size(v) -> int | None:
    """The printed size of a value that holds no others, None for a container."""
    if isinstance(v, _TEXT):
        return len(v) + 4  # quotes and ', ' when printed inside a container
    if isinstance(v, bool) or v is None:
        return 5
    if isinstance(v, int):
        return v.bit_length() // 3 + 2
    if isinstance(v, range):
        return 2 + len(v) * (max(abs(v.start), abs(v.stop)).bit_length() // 3 + 4)
    if isinstance(v, (Mapping, list, tuple, set, frozenset, KeysView, ValuesView, ItemsView, jinja2.utils.Namespace)):
        return None
    return 24  # floats, Undefined, macros, loop objects: short reprs


def _container(v) -> tuple[int, list]:
    """A container's own printed overhead and its items."""
    if isinstance(v, jinja2.utils.Namespace):
        attrs = v._Namespace__attrs  # its repr prints them all
        return 12 + 4 * len(attrs), list(attrs.values())
    if isinstance(v, Mapping):
        return 2 + 2 * len(v), [*v.keys(), *v.values()]
    return 2, list(v)


def _bounded_items(iterable, budget: _Budget, what: str) -> list:
    """`iterable` as a list, refused as soon as its items' text passes MAX_CHARS (a generator too)."""
    items, size = [], 0
    for item in iterable:
        size += text_size(item, budget) + 1
        if size > MAX_CHARS:
            budget.charge(size, what)
        items.append(item)
    return items


# --- predictions for the steps that can allocate far more than their inputs


def _check_width(width, what: str, budget: _Budget, base: int = 0, times: int = 1) -> None:
    if isinstance(width, int) and not isinstance(width, bool):
        budget.charge(base + max(width, 0) * times, what)


def _check_percent_format(fmt: str, args, budget: _Budget) -> None:
    """`fmt % args`: widths and precisions are bounded, `*` widths refused."""
    specs = re.findall(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]", fmt)
    widest = 0
    for width, precision in specs:
        if "*" in (width, precision):
            raise ChatTemplateLimitError("the chat template uses a '*' width in '%' formatting; not allowed")
        widest = max(widest, int(width or 0), int(precision or 0))
    budget.charge(len(fmt) + len(specs) * (widest + text_size(args, budget)), "'%' formatting")


def _check_str_format(fmt: str, args, kwargs, budget: _Budget) -> None:
    """`fmt.format(*args, **kwargs)`: numbers in format specs are widths or precisions, all bounded."""
    fields, widest = 0, 0
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None:
            continue
        fields += 1
        if spec and "{" in spec:
            raise ChatTemplateLimitError("the chat template nests a field inside a format spec; not allowed")
        widest = max([widest, *(int(n) for n in re.findall(r"\d+", spec or ""))])
    budget.charge(len(fmt) + fields * (widest + text_size((args, kwargs), budget)), "str.format")


def _check_replace(s: str, old, new, count, budget: _Budget, what: str) -> None:
    if isinstance(s, _TEXT) and isinstance(old, _TEXT) and isinstance(new, _TEXT):
        times = len(s) + 1 if not old else len(s) // len(old)
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        budget.charge(len(s) + times * len(new), what)


def _check_str_method(method, args, kwargs, budget: _Budget) -> tuple:
    """Predict a str (or bytes) method's size before it runs; returns the args to call it with (an iterable to
    join made a list)."""
    s, name = method.__self__, method.__name__
    what = f"str.{name}"
    if name in ("ljust", "rjust", "center", "zfill") and args:
        _check_width(args[0], what, budget)
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        _check_width(tab, what, budget, base=len(s), times=s.count("\t" if isinstance(s, str) else b"\t"))
    elif name == "replace" and len(args) >= 2:
        _check_replace(s, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1), budget, what)
    elif name == "join" and args:
        items = _bounded_items(args[0], budget, what)
        budget.charge(text_size(items, budget) + len(s) * len(items), what)
        args = (items, *args[1:])
    elif name == "translate":
        raise ChatTemplateLimitError("the chat template calls str.translate; not allowed")
    return args


def _filter_checks(name: str, budget: _Budget, args: list, kwargs: dict) -> None:
    """Predict the size of jinja's growing filters before they run; `args[0]` is the filtered value."""
    value = args[0] if args else None

    def arg(i: int, key: str, default=None):
        return args[i] if len(args) > i else kwargs.get(key, default)

    what = f"the '{name}' filter"
    if name == "center":
        _check_width(arg(1, "width", 80), what, budget)
    elif name == "indent":
        width = arg(1, "width", 4)
        pad = len(width) if isinstance(width, str) else width
        lines = value.count("\n") + 1 if isinstance(value, str) else 1
        _check_width(pad, what, budget, base=text_size(value, budget), times=lines)
    elif name == "format" and isinstance(value, str):
        _check_percent_format(value, (args[1:], kwargs), budget)
    elif name == "replace":
        _check_replace(value, arg(1, "old"), arg(2, "new"), arg(3, "count"), budget, what)
    elif name == "wordwrap":
        wrap = arg(4, "wrapstring") or "\n"
        budget.charge(text_size(value, budget) * (1 + len(str(wrap))), what)
    elif name in ("batch", "slice"):
        _check_width(arg(1, "linecount" if name == "batch" else "slices"), what, budget)
    elif name == "sum" and not isinstance(arg(2, "start", 0), (int, float)):
        raise ChatTemplateLimitError("the chat template sums non-numbers with the 'sum' filter; not allowed")
    elif name == "join":
        args[0] = _bounded_items(value, budget, what)
        budget.charge(text_size(args[0], budget) + len(str(arg(1, "d", ""))) * len(args[0]), what)


class _BoundedCodeGenerator(jinja2.compiler.CodeGenerator):
    """Routes what the sandbox cannot intercept (`~`, slices, list, tuple and dict literals) through the
    environment."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.bounded_concat((")
        for item in node.nodes:
            self.visit(item, frame)
            self.write(", ")
        self.write("))")

    def _wrapped(self, visit, node, frame) -> None:
        self.write("environment.bounded_literal(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node, frame) -> None:
        self._wrapped(super().visit_List, node, frame)

    def visit_Dict(self, node, frame) -> None:
        self._wrapped(super().visit_Dict, node, frame)

    def visit_For(self, node, frame) -> None:
        # Loops are the only way a template repeats work (besides macro calls, which pass through `call`): each
        # iterates through environment.bounded_iter, which keeps the deadline item by item.
        if not getattr(node, "bounded", False):
            node.iter = jinja2.nodes.Call(jinja2.nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None,
                                          None, lineno=node.lineno)
            node.bounded = True
        super().visit_For(node, frame)

    def visit_Getitem(self, node, frame) -> None:
        if isinstance(node.arg, jinja2.nodes.Slice):  # jinja does slices itself, not through the environment
            self._wrapped(super().visit_Getitem, node, frame)
        else:
            super().visit_Getitem(node, frame)

    def visit_Tuple(self, node, frame) -> None:
        if node.ctx == "load":  # not the targets of a for or set
            self._wrapped(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """An immutable sandbox whose renders are bounded (see the module docstring); render with `render_bounded`."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "%", "**"})

    def __init__(self, **options):
        super().__init__(finalize=self.bounded_finalize, **options)
        self.globals.pop("lipsum", None)
        self._renders = threading.local()  # one template may render in several server threads at once

    # --- the hooks the compiled template calls

    def budget(self) -> _Budget:
        budget = getattr(self._renders, "budget", None)
        if budget is None:  # outside render_bounded: jinja folding constants at compile time (it then defers)
            raise ChatTemplateLimitError("not inside a bounded render")
        return budget

    def wrap_filters(self) -> None:
        """Put every filter (jinja's and those added) behind the size checks; call once they are all added."""
        for name, f in list(self.filters.items()):
            self.filters[name] = self._bounded_filter(name, f)

    def _bounded_filter(self, name: str, f):
        skip = 1 if getattr(f, "jinja_pass_arg", None) is not None else 0  # a context comes first

        @functools.wraps(f)  # keeps jinja_pass_arg
        def bounded(*args, **kwargs):
            budget = self.budget()
            budget.check_time()
            head, rest = list(args[:skip]), list(args[skip:])
            if rest:
                _filter_checks(name, budget, rest, kwargs)
            result = f(*head, *rest, **kwargs)
            budget.charge(text_size(result, budget), what=f"the '{name}' filter")
            return result

        return bounded

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (the sandbox's own signature)
        budget = __self.budget()
        budget.check_time()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format in a function
        if isinstance(method, types.BuiltinMethodType):  # C methods take counts: ljust, zfill, int.to_bytes, ...
            for value in (*args, *kwargs.values()):
                if isinstance(value, int) and abs(value) > MAX_CHARS:
                    raise ChatTemplateLimitError(f"the chat template passes {value} to {method.__name__}; counts "
                                                 f"past {MAX_CHARS} are refused")
        if isinstance(getattr(method, "__self__", None), _TEXT):
            if method.__name__ in ("format", "format_map"):
                _check_str_format(method.__self__, args, kwargs, budget)
            else:
                args = _check_str_method(method, args, kwargs, budget)
        result = super().call(__context, __obj, *args, **kwargs)
        budget.charge(text_size(result, budget), f"a call to {getattr(method, '__name__', 'a function')}")
        return result

    def call_binop(self, context, operator: str, left, right):
        budget = self.budget()
        budget.check_time()
        what = f"'{operator}'"
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*" and ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ChatTemplateLimitError(f"the chat template multiplies integers past {MAX_INT_BITS} bits")
        if operator == "*" and not ints:
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(n, int) and isinstance(seq, (*_TEXT, list, tuple)):
                budget.charge(text_size(seq, budget) * max(n, 0), what)
        if operator == "**" and ints and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
            raise ChatTemplateLimitError(f"the chat template raises an integer past {MAX_INT_BITS} bits")
        if operator == "+" and isinstance(left, (*_TEXT, list, tuple)):
            budget.charge(text_size(left, budget) + text_size(right, budget), what)
        if operator == "%" and isinstance(left, _TEXT):
            _check_percent_format(left if isinstance(left, str) else left.decode("latin-1"), right, budget)
        result = super().call_binop(context, operator, left, right)
        budget.charge(text_size(result, budget), what)
        return result

    def bounded_iter(self, iterable):
        budget = self.budget()
        for item in iterable:
            budget.check_time()
            yield item

    def bounded_concat(self, pieces: tuple) -> str:
        budget = self.budget()
        budget.charge(sum(text_size(p, budget) for p in pieces), "'~'")
        return "".join(map(str, pieces))

    def bounded_literal(self, value):
        budget = self.budget()
        budget.charge(text_size(value, budget), "a literal")
        return value

    def bounded_finalize(self, value):
        budget = self.budget()
        budget.charge(text_size(value, budget), "'{{ }}'")
        return value


def compile_bounded(env: BoundedEnvironment, source: str):
    """`env.from_string(source)`, a source too long or too deeply nested refused as ChatTemplateLimitError."""
    if len(source) > MAX_SOURCE_CHARS:
        raise ChatTemplateLimitError(f"the chat template is {len(source)} characters long; the limit is "
                                     f"{MAX_SOURCE_CHARS}")
    try:
        return env.from_string(source)
    except (RecursionError, MemoryError) as e:
        raise ChatTemplateLimitError(f"the chat template cannot be compiled: {type(e).__name__}") from None


def render_bounded(env: BoundedEnvironment, template, variables: dict) -> str:
    """`template` rendered with `variables` inside the bounds: ChatTemplateLimitError when it crosses one; what
    else the template raises passes through."""
    env._renders.budget = budget = _Budget()
    pieces, size = [], 0
    try:
        for piece in template.generate(**variables):
            budget.check_time()
            size += len(piece)
            if size > MAX_CHARS:
                raise ChatTemplateLimitError(f"the chat template's output passed {MAX_CHARS} characters")
            pieces.append(piece)
    except (RecursionError, MemoryError, OverflowError) as e:  # the bounds Python and jinja keep themselves
        raise ChatTemplateLimitError(f"the chat template failed: {type(e).__name__}: {e}") from None
    finally:
        env._renders.budget = None
    return "".join(pieces)
