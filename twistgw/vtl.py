"""A compact Velocity Template Language engine with Amazon API Gateway's semantics.

API Gateway renders mapping templates with Apache Velocity 1.7 over Java objects.  The
Python Velocity engines on PyPI (``airspeed`` and LocalStack's fork ``airspeed-ext``)
render Python ``repr`` for maps (``{'foo': 'bar'}`` instead of Java's ``{foo=bar}``),
treat a missing value as unequal to ``""``, iterate ``#foreach`` without AWS's 1,000 cap
and have no bound on render time or output size (a doubling ``#set`` in a loop hangs
them), so this module implements the subset AWS templates use, with those rules built in
(docs/mapping.rst says what is supported).

A template is parsed once (:class:`Template`) into a tree of nodes and rendered many
times with a dict of top-level variables.  Values are plain Python values with Java's
behaviour layered on top:

* ``None`` (Java ``null``) renders as nothing: AWS renders every reference quietly.
* ``dict`` renders like ``java.util.Map.toString()``: ``{k=v, k2=v2}``.
* A plain ``list`` is a JSON array (from ``$input.path``, ``$util.parseJson``) and renders
  as compact JSON, as AWS's JSON library does; :class:`JavaList` (lists the template
  builds: ``[a, b]`` literals, ``keySet()``, ``split()``) renders like
  ``java.util.List.toString()``: ``[a, b]``.  (Plain lists for JSON, so a parsed body
  needs no conversion pass.)
* ``True``/``False`` render ``true``/``false``; floats like Java's ``Double.toString``.
* Objects implementing :class:`VtlObject` (``$input``, ``$util``, ``$context``) answer
  property reads, method calls, index reads and assignments themselves.

Everything a client can influence is bounded (:class:`Limits`): output size, the size of
any string built while rendering, render time (checked on every ``#foreach`` iteration,
the only loop), ``#foreach`` iterations (1,000, silently stopping like Velocity's
``directive.foreach.maxloops``), nesting depth of the template and of rendered values.
Breaking a bound raises :class:`TemplateLimitError`; any other failure while rendering
raises :class:`TemplateRenderError`, never a bare Python exception.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import attrs

__all__ = ["Template", "TemplateError", "walk", "TemplateSyntaxError", "TemplateRenderError",
           "TemplateLimitError", "Limits", "JsonList", "JavaList", "VtlObject", "to_text",
           "to_json",
           "java_double", "MAX_TEMPLATE_BYTES", "FOREACH_LIMIT", "MISSING", "COMPUTED",
           "foldable_roots"]

#: AWS's limit on the size of one mapping template (aws-apigw-spec.md §11).
MAX_TEMPLATE_BYTES = 300 * 1024
#: AWS's ``#foreach`` iteration limit (limits.md): a loop stops after this many.
FOREACH_LIMIT = 1000
#: How deeply directives, parentheses and literals may nest in a template.
MAX_NESTING = 64


class TemplateError(Exception):
    """Any problem with a template; the message is safe to log."""


class TemplateSyntaxError(TemplateError):
    """The template cannot be parsed (a load-time error)."""

    def __init__(self, message: str, source: str = "", pos: int = 0) -> None:
        line = source.count("\n", 0, pos) + 1
        column = pos - (source.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{message} at line {line}, column {column}")
        self.line = line
        self.column = column


class TemplateRenderError(TemplateError):
    """Rendering failed (on AWS: a 500 for the request)."""


class TemplateLimitError(TemplateRenderError):
    """Rendering broke one of the bounds of :class:`Limits`."""


@attrs.frozen
class Limits:
    """Bounds on one render.

    :ivar max_output: characters of output (and of any string built while rendering);
        10 MiB, API Gateway's payload limit.
    :ivar max_seconds: wall-clock seconds for one render.
    :ivar foreach_limit: iterations of one ``#foreach`` before it stops (silently).
    :ivar max_depth: nesting of values when rendering them (a list holding itself).
    :ivar max_range: elements of a ``[a..b]`` range literal.
    """

    max_output: int = 10 * 1024 * 1024
    max_seconds: float = 2.0
    foreach_limit: int = FOREACH_LIMIT
    max_depth: int = 100
    max_range: int = 100_000


DEFAULT_LIMITS = Limits()


class JsonList(list[Any]):
    """A list that came from JSON: renders as compact JSON (``[{"foo":"bar"}]``), like
    every plain ``list``; the name says so where it matters."""

    __slots__ = ()


class JavaList(list[Any]):
    """A list built by the template: renders like a Java ``List`` (``[a, b]``)."""

    __slots__ = ()


class VtlObject:
    """Base for objects that define their own VTL behaviour.

    Subclasses override what they support; the defaults behave like a Java object
    without such a property or method (``null``).
    """

    def vtl_get(self, name: str) -> Any:
        """``$obj.name`` (and ``$obj["name"]`` unless :meth:`vtl_index` is overridden)."""
        return None

    def vtl_get_path(self, names: tuple[str, ...]) -> Any:
        """``$obj.a.b.c`` at once (``names`` is ``("a", "b", "c")``): the same as reading
        each property in turn, which is what this default does; an object whose nested
        names resolve in one lookup (``$context.identity.sourceIp``) overrides it."""
        return walk(self.vtl_get(names[0]), names[1:])

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        """``$obj.name(args)``; return :data:`MISSING` for an unknown method."""
        return MISSING

    @classmethod
    def vtl_compile_get(cls, names: tuple[str, ...]) -> Callable[[Any], Any] | None:
        """For templates compiled knowing a root is of this class (:class:`Template`'s
        ``types``): a function ``f(obj)`` answering ``$obj.a.b`` (``names``) for any
        instance exactly as :meth:`vtl_get` (one name) or :meth:`vtl_get_path` does,
        called instead of them.  ``None`` (the default): no shortcut."""
        return None

    @classmethod
    def vtl_compile_call(cls, name: str, args: tuple[Any, ...]) -> Callable[..., Any] | None:
        """Like :meth:`vtl_compile_get` for ``$obj.name(args)``: ``f(obj, *values)``
        answering what :meth:`vtl_call` does (never :data:`MISSING`); ``args`` holds the
        literal arguments' values and :data:`COMPUTED` for the others, so a constant
        argument (a JSONPath) can be prepared once.  ``None`` (the default): none."""
        return None

    @classmethod
    def vtl_compile_set(cls, names: tuple[str, ...], key: str
                        ) -> Callable[[Any, Any], None] | None:
        """Like :meth:`vtl_compile_get` for ``#set($obj.<names>.<key> = value)`` with a
        non-null value: ``f(obj, value)`` doing for any instance exactly what reading
        ``$obj.<names>`` and then setting ``key`` on what it gives does.  ``None`` (the
        default): none."""
        return None

    @classmethod
    def vtl_compile_deferred(cls, name: str, args: tuple[Any, ...], names: tuple[str, ...]
                             ) -> tuple[Callable[[Any], Any], int] | None:
        """For ``#set($v = $obj.name(args))`` (literal ``args``) where the template reads
        ``$v`` only through leading properties (``names``: ``$v.a.b...``) and nothing
        else in it can reach what the call returns (no other ``$obj.name`` of that arity
        that may be the same call, no bare ``$obj``, no write to ``$v``): ``(f, count)``
        where ``f(obj)`` answers ``$v.<names[:count]>`` as the call's untouched result
        would, without making that result.  Asked first with no ``names``: whether the
        call may be left out at all (no effects, no errors; any ``(f, 0)``: yes), since
        a deferred call is not made.  ``None`` (the default): the call is made and
        ``$v`` holds its result."""
        return None

    def vtl_index(self, key: Any) -> Any:
        """``$obj[key]``."""
        return self.vtl_get(key) if isinstance(key, str) else None

    def vtl_set(self, name: Any, value: Any) -> None:
        """``#set($obj.name = value)`` / ``#set($obj[name] = value)``."""
        raise TemplateRenderError(f"cannot assign to {name!r} of {type(self).__name__}")

    def vtl_text(self) -> str:
        """How ``$obj`` renders."""
        return ""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Returned by :meth:`VtlObject.vtl_call` for a method the object does not have.
MISSING: Any = _Missing()


class _Computed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "COMPUTED"


#: An argument of :meth:`VtlObject.vtl_compile_call` known only when rendering.
COMPUTED: Any = _Computed()


# -- rendering values --------------------------------------------------------------------------


def java_double(value: float) -> str:
    """``Double.toString``: ``1.0``, ``0.001``, ``1.0E7``, ``1.5E-5``, ``NaN``, ``Infinity``."""
    if 1e-3 <= value < 1e7 or -1e7 < value <= -1e-3:
        # the common case first: Python's repr has no exponent in this range, always a
        # '.', and is the same shortest round-trip digits Java prints
        return repr(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e7:
        text = repr(value)
        if "e" in text or "E" in text:
            text = f"{value:.17f}".rstrip("0")
        return text if "." in text else text + ".0"
    mantissa, _, exponent = f"{value:.16e}".partition("e")
    digits = repr(float(mantissa))  # shortest round-trip of the mantissa
    shortest = repr(value)
    if "e" in shortest:
        digits = shortest.partition("e")[0]
        exponent = shortest.partition("e")[2]
    if "." not in digits:
        digits += ".0"
    return f"{digits}E{int(exponent)}"


def to_text(value: Any, depth: int = 0, limits: Limits = DEFAULT_LIMITS) -> str:
    """How Velocity renders ``value`` (Java ``toString``); ``None`` renders empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _java_str(value, depth, limits)


def _java_str(value: Any, depth: int, limits: Limits) -> str:
    if depth > limits.max_depth:
        raise TemplateLimitError("value nested too deeply to render")
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, JavaList) or isinstance(value, tuple):
        return "[" + ", ".join(_java_str(v, depth + 1, limits) for v in value) + "]"
    if isinstance(value, list):
        return to_json(value, depth, limits)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_java_str(k, depth + 1, limits)}="
                               f"{_java_str(v, depth + 1, limits)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, VtlObject):
        return value.vtl_text()
    if isinstance(value, range):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def to_json(value: Any, depth: int = 0, limits: Limits = DEFAULT_LIMITS) -> str:
    """Compact JSON (``{"a":1}``), as AWS's JSON library writes arrays and ``$input.json``."""
    if depth > limits.max_depth:
        raise TemplateLimitError("value nested too deeply to render")
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "null"
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(to_text(k), ensure_ascii=False)}:"
                              f"{to_json(v, depth + 1, limits)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, range)):
        return "[" + ",".join(to_json(v, depth + 1, limits) for v in value) + "]"
    if isinstance(value, VtlObject):
        return json.dumps(value.vtl_text(), ensure_ascii=False)
    return json.dumps(str(value), ensure_ascii=False)


# -- Java semantics of operators ---------------------------------------------------------------

_LONG_MIN, _LONG_MAX = -(2 ** 63), 2 ** 63 - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: int | float) -> int | float:
    """Keep integer results within Java's ``long``; beyond it, a double (as Velocity's
    MathUtils widens) -- which also bounds the memory a template can make numbers use."""
    if isinstance(value, int) and not _LONG_MIN <= value <= _LONG_MAX:
        return float(value)
    return value


def _equals(left: Any, right: Any) -> bool:
    """Velocity's ``==``: numbers by value, ``null`` equal to ``null`` and to ``""`` (as
    recorded on AWS, §3.6), same types by ``equals``, other types by ``toString``."""
    if left is None or right is None:
        other = right if left is None else left
        return other is None or other == ""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is type(right) or (isinstance(left, str) and isinstance(right, str)):
        return bool(left == right)
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    return to_text(left) == to_text(right)


def _compare(op: str, left: Any, right: Any) -> bool:
    if _is_number(left) and _is_number(right):
        pass
    elif isinstance(left, str) and isinstance(right, str):
        pass
    else:
        return False  # Velocity logs an error and the comparison is false
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    return bool(left >= right)


def _truthy(value: Any) -> bool:
    """Velocity 1.7's ``#if``: only ``null`` and ``false`` are false."""
    return value is not None and value is not False


def _java_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _arith(op: str, left: Any, right: Any, rc: _Render) -> Any:
    if op == "+" and (isinstance(left, str) or isinstance(right, str)):
        if left is None or right is None:
            return None
        return rc.check_string(to_text(left) + to_text(right))
    if not (_is_number(left) and _is_number(right)):
        return None  # Velocity: "left side of addition operation is not a number" -> null
    try:
        if op == "+":
            return _number(left + right)
        if op == "-":
            return _number(left - right)
        if op == "*":
            return _number(left * right)
        if right == 0 and isinstance(left, int) and isinstance(right, int):
            return None  # Velocity logs the division by zero and yields null
        if op == "/":
            if isinstance(left, int) and isinstance(right, int):
                return _java_div(left, right)
            return left / right if right else (math.copysign(math.inf, left) if left
                                               else math.nan)
        if isinstance(left, int) and isinstance(right, int):
            return left - right * _java_div(left, right)
        return math.fmod(left, right) if right else math.nan
    except (OverflowError, ValueError):
        return None


# -- the tree ----------------------------------------------------------------------------------


class _Break(Exception):
    pass


class _Stop(Exception):
    pass


class _Render:
    """The state of one render: variables, output, bounds."""

    __slots__ = ("deadline", "limits", "out", "size", "vars")

    def __init__(self, variables: dict[str, Any], limits: Limits) -> None:
        self.vars = variables
        self.out: list[str] = []
        self.size = 0
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds

    def write(self, text: str) -> None:
        """Append a computed value, checking the output bound.  Static text is appended
        by :class:`_Text` directly and checked on the next value, loop iteration or at
        the end: between two checks it adds at most the template's own size."""
        self.size += len(text)
        if self.size > self.limits.max_output:
            self.over()
        self.out.append(text)

    def over(self) -> NoReturn:
        raise TemplateLimitError(f"template output exceeds {self.limits.max_output} "
                                 "characters")

    def check_string(self, text: str) -> str:
        if len(text) > self.limits.max_output:
            raise TemplateLimitError(
                f"a string built by the template exceeds {self.limits.max_output} "
                "characters")
        return text

    def tick(self) -> None:
        if self.size > self.limits.max_output:
            self.over()
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"template rendering took longer than {self.limits.max_seconds} seconds")


#: For :meth:`Template.render_typed`, which makes its :class:`_Render` without ``__init__``.
_new_render = object.__new__
_monotonic = time.monotonic


def _render_failed(error: Exception) -> NoReturn:
    """What a render raises for ``error`` (raised by the template's code): a
    :class:`TemplateError` as it is, anything else as one (never a bare exception)."""
    if isinstance(error, TemplateError):
        raise error
    if isinstance(error, RecursionError):
        raise TemplateLimitError("template recursion too deep") from None
    if isinstance(error, MemoryError):
        raise TemplateLimitError("template used too much memory") from None
    raise TemplateRenderError(f"{type(error).__name__}: {error}") from error


#: Root count -> the factory of :meth:`Template.typed_renderer`'s functions for it.
_RENDERER_FACTORIES: dict[int, Callable[..., Callable[..., str]]] = {}


def _renderer_factory(count: int) -> Callable[..., Callable[..., str]]:
    """``factory(function, copy, limits)``: a function rendering the typed entry
    ``function`` with ``count`` roots as positional arguments.  Written out per count
    and compiled once: a call with ``*roots`` is not inlined by CPython 3.11's eval loop
    (it measured slower than :meth:`Template.render_typed` itself)."""
    found = _RENDERER_FACTORIES.get(count)
    if found is None:
        roots = "".join(f", _R{i}" for i in range(count))
        source = (
            "def factory(function, copy, limits):\n"
            " max_output, max_seconds = limits.max_output, limits.max_seconds\n"
            f" def typed(variables{roots}):\n"
            "  rc = _new_render(_Render)\n"
            "  rc.vars = variables = dict(variables) if copy else variables\n"
            "  rc.out = out = []\n"
            "  rc.size = 0\n"
            "  rc.limits = limits\n"
            "  rc.deadline = _monotonic() + max_seconds\n"
            "  try:\n"
            "   try:\n"
            f"    function(rc, variables{roots})\n"
            "   except (_Stop, _Break):\n"
            "    pass\n"
            "   if rc.size > max_output:\n"
            "    rc.over()\n"
            "  except Exception as e:\n"
            "   _render_failed(e)\n"
            "  return ''.join(out)\n"
            " return typed\n")
        namespace: dict[str, Any] = {
            "_new_render": _new_render, "_Render": _Render, "_monotonic": _monotonic,
            "_Stop": _Stop, "_Break": _Break, "_render_failed": _render_failed}
        exec(compile(source, "<vtl renderer>", "exec"), namespace)
        found = _RENDERER_FACTORIES[count] = namespace["factory"]
    return found


class _Node:
    __slots__ = ()

    def render(self, rc: _Render) -> None:
        raise NotImplementedError


class _Expr:
    __slots__ = ()

    def eval(self, rc: _Render) -> Any:
        raise NotImplementedError


def _render_all(nodes: Sequence[_Node], rc: _Render) -> None:
    for node in nodes:
        node.render(rc)


class _Text(_Node):
    __slots__ = ("size", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.size = len(text)

    def render(self, rc: _Render) -> None:
        rc.out.append(self.text)
        rc.size += self.size


class _Literal(_Expr):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def eval(self, rc: _Render) -> Any:
        return self.value


class _Interpolated(_Expr):
    """A double-quoted string with references or directives in it."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: list[_Node]) -> None:
        self.nodes = nodes

    def eval(self, rc: _Render) -> Any:
        saved_out, saved_size = rc.out, rc.size
        rc.out, rc.size = [], 0
        try:
            _render_all(self.nodes, rc)
            if rc.size > rc.limits.max_output:
                rc.over()
            return "".join(rc.out)
        finally:
            rc.out, rc.size = saved_out, saved_size


class _ListExpr(_Expr):
    __slots__ = ("items",)

    def __init__(self, items: list[_Expr]) -> None:
        self.items = items

    def eval(self, rc: _Render) -> Any:
        return JavaList([item.eval(rc) for item in self.items])


class _RangeExpr(_Expr):
    __slots__ = ("end", "start")

    def __init__(self, start: _Expr, end: _Expr) -> None:
        self.start = start
        self.end = end

    def eval(self, rc: _Render) -> Any:
        a, b = self.start.eval(rc), self.end.eval(rc)
        if isinstance(a, str):
            a = _parse_int(a)
        if isinstance(b, str):
            b = _parse_int(b)
        if not (isinstance(a, int) and isinstance(b, int)) or isinstance(a, bool) \
                or isinstance(b, bool):
            return None
        if abs(b - a) + 1 > rc.limits.max_range:
            raise TemplateLimitError(f"range [{a}..{b}] has more than "
                                     f"{rc.limits.max_range} elements")
        return JavaList(range(a, b + 1) if a <= b else range(a, b - 1, -1))


def _parse_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


class _MapExpr(_Expr):
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[_Expr, _Expr]]) -> None:
        self.items = items

    def eval(self, rc: _Render) -> Any:
        return {k.eval(rc): v.eval(rc) for k, v in self.items}


class _Not(_Expr):
    __slots__ = ("operand",)

    def __init__(self, operand: _Expr) -> None:
        self.operand = operand

    def eval(self, rc: _Render) -> Any:
        return not _truthy(self.operand.eval(rc))


class _Negate(_Expr):
    __slots__ = ("operand",)

    def __init__(self, operand: _Expr) -> None:
        self.operand = operand

    def eval(self, rc: _Render) -> Any:
        value = self.operand.eval(rc)
        return _number(-value) if _is_number(value) else None


class _Binary(_Expr):
    __slots__ = ("left", "op", "right")

    def __init__(self, op: str, left: _Expr, right: _Expr) -> None:
        self.op = op
        self.left = left
        self.right = right

    def eval(self, rc: _Render) -> Any:
        op = self.op
        if op == "&&":
            return _truthy(self.left.eval(rc)) and _truthy(self.right.eval(rc))
        if op == "||":
            return _truthy(self.left.eval(rc)) or _truthy(self.right.eval(rc))
        left, right = self.left.eval(rc), self.right.eval(rc)
        if op == "==":
            return _equals(left, right)
        if op == "!=":
            return not _equals(left, right)
        if op in ("<", ">", "<=", ">="):
            return _compare(op, left, right)
        return _arith(op, left, right, rc)


# References: a root name and a chain of property, method and index steps.

_PROP, _CALL, _INDEX = 0, 1, 2


class _Ref(_Expr):
    __slots__ = ("name", "source", "steps")

    def __init__(self, name: str, steps: list[tuple[int, str, Any]], source: str) -> None:
        self.name = name
        self.steps = steps
        self.source = source

    def eval(self, rc: _Render) -> Any:
        value = rc.vars.get(self.name)
        if not self.steps:
            return value
        for kind, name, arg in self.steps:
            if value is None:
                return None
            if kind == _PROP:
                # the common cases first, without a call: a map's key, an AWS object
                if type(value) is dict:
                    value = value.get(name)
                elif isinstance(value, VtlObject):
                    value = value.vtl_get(name)
                else:
                    value = get_property(value, name)
            elif kind == _CALL:
                value = call_method(value, name, [a.eval(rc) for a in arg], rc)
            else:
                value = get_index(value, arg.eval(rc))
        return value

    def assign(self, rc: _Render, value: Any) -> None:
        if not self.steps:
            rc.vars[self.name] = value
            return
        target = rc.vars.get(self.name)
        for kind, name, arg in self.steps[:-1]:
            if target is None:
                return
            if kind == _PROP:
                target = get_property(target, name)
            elif kind == _CALL:
                target = call_method(target, name, [a.eval(rc) for a in arg], rc)
            else:
                target = get_index(target, arg.eval(rc))
        if target is None:
            return  # Velocity logs "left side of #set is null" and carries on
        kind, name, arg = self.steps[-1]
        key = name if kind == _PROP else arg.eval(rc)
        set_property(target, key, value)


class _Output(_Node):
    """``$ref`` in text: rendered quietly (``null`` renders as nothing, as on AWS)."""

    __slots__ = ("ref",)

    def __init__(self, ref: _Ref) -> None:
        self.ref = ref

    def render(self, rc: _Render) -> None:
        value = self.ref.eval(rc)
        if value is None:
            return
        text = value if type(value) is str else to_text(value, 0, rc.limits)
        rc.size += len(text)
        if rc.size > rc.limits.max_output:
            rc.over()
        rc.out.append(text)


class _Set(_Node):
    __slots__ = ("target", "value")

    def __init__(self, target: _Ref, value: _Expr) -> None:
        self.target = target
        self.value = value

    def render(self, rc: _Render) -> None:
        value = self.value.eval(rc)
        if value is None:
            return  # Velocity 1.7: a null right-hand side leaves the target unchanged
        self.target.assign(rc, value)


class _If(_Node):
    __slots__ = ("branches", "otherwise")

    def __init__(self, branches: list[tuple[_Expr, list[_Node]]],
                 otherwise: list[_Node] | None) -> None:
        self.branches = branches
        self.otherwise = otherwise

    def render(self, rc: _Render) -> None:
        for condition, body in self.branches:
            if _truthy(condition.eval(rc)):
                for node in body:
                    node.render(rc)
                return
        if self.otherwise is not None:
            _render_all(self.otherwise, rc)


class _ForeachState(VtlObject):
    """``$foreach``: ``hasNext``, ``index``, ``count``, ``first``, ``last``."""

    __slots__ = ("index", "total")

    def __init__(self, total: int) -> None:
        self.index = 0
        self.total = total

    def vtl_get(self, name: str) -> Any:
        if name == "hasNext":
            return self.index + 1 < self.total
        if name == "index":
            return self.index
        if name == "count":
            return self.index + 1
        if name == "first":
            return self.index == 0
        if name == "last":
            return self.index + 1 >= self.total
        return None

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        if not args and name in ("hasNext", "isFirst", "isLast", "getIndex", "getCount"):
            key = {"isFirst": "first", "isLast": "last", "getIndex": "index",
                   "getCount": "count"}.get(name, name)
            return self.vtl_get(key)
        return MISSING


class _Foreach(_Node):
    __slots__ = ("body", "iterable", "var")

    def __init__(self, var: str, iterable: _Expr, body: list[_Node]) -> None:
        self.var = var
        self.iterable = iterable
        self.body = body

    def render(self, rc: _Render) -> None:
        items = _iterable(self.iterable.eval(rc))
        if items is None:
            return
        limit = rc.limits.foreach_limit
        if len(items) > limit:
            items = items[:limit]
        variables = rc.vars
        saved = {k: variables[k] for k in (self.var, "foreach", "velocityCount")
                 if k in variables}
        state = _ForeachState(len(items))
        variables["foreach"] = state
        body = self.body
        try:
            for index, item in enumerate(items):
                rc.tick()
                state.index = index
                variables["velocityCount"] = index + 1
                if item is None:
                    variables.pop(self.var, None)
                else:
                    variables[self.var] = item
                try:
                    for node in body:
                        node.render(rc)
                except _Break:
                    break
        finally:
            for key in (self.var, "foreach", "velocityCount"):
                if key in saved:
                    variables[key] = saved[key]
                else:
                    variables.pop(key, None)


def _iterable(value: Any) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple, range)):
        return list(value)
    if isinstance(value, VtlObject):
        items = value.vtl_call("iterator", [])
        return list(items) if isinstance(items, (list, tuple)) else None
    return None


class _Control(_Node):
    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def render(self, rc: _Render) -> None:
        raise _Break() if self.kind == "break" else _Stop()


# -- Java methods on plain values --------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise TemplateRenderError(message)


def _java_regex(pattern: Any) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        _fail("a regular expression must be a string")
    try:
        return _compiled(pattern)
    except re.error as e:
        _fail(f"invalid regular expression {pattern!r}: {e}")


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _REGEX_CACHE.get(pattern)
    if found is None:
        # Java's possessive/atomic syntax is rare in templates; Python's re is close
        # enough to Java's for what templates do (character classes, groups, anchors).
        found = re.compile(pattern)
        if len(_REGEX_CACHE) < 256:
            _REGEX_CACHE[pattern] = found
    return found


_JAVA_GROUP = re.compile(r"\\(.)|\$(\d)|\$\{(\w+)\}")


def _java_replacement(replacement: str) -> Callable[[re.Match[str]], str]:
    """Java's ``Matcher.replaceAll`` replacement: ``$1``/``${name}`` groups, ``\\x``
    escapes."""
    def expand(match: re.Match[str]) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) is not None:
                return m.group(1)
            group = m.group(2) or m.group(3)
            try:
                return match.group(int(group) if group.isdigit() else group) or ""
            except (IndexError, error_type):
                _fail(f"no group {group} in the regular expression")
        return _JAVA_GROUP.sub(one, replacement)
    return expand


error_type = re.error


def _java_split(text: str, pattern: Any, limit: int = 0) -> list[str]:
    regex = _java_regex(pattern)
    parts = regex.split(text, maxsplit=limit - 1 if limit > 0 else 0)
    if regex.groups:
        parts = parts[::regex.groups + 1]
    if parts and parts[0] == "" and len(text) > 0:
        first = regex.search(text)
        if first is not None and first.start() == 0 and first.end() == 0:
            parts = parts[1:]  # Java 8+: no leading empty string for a zero-width match
    if limit == 0:
        while parts and parts[-1] == "":
            parts.pop()
    return JavaList(parts if text else [""])


def _int_arg(args: list[Any], i: int) -> int:
    value = args[i]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            parsed = _parse_int(value)
            if parsed is not None:
                return parsed
        _fail(f"argument {i + 1} must be a number")
    return int(value)


def _str_arg(args: list[Any], i: int) -> str:
    value = args[i]
    if value is None:
        _fail(f"argument {i + 1} is null")
    return to_text(value)


def _string_method(s: str, name: str, args: list[Any], rc: _Render) -> Any:
    n = len(args)
    if n == 0:
        if name in ("toString", "trim", "toLowerCase", "toUpperCase", "length", "size",
                    "isEmpty", "hashCode", "strip", "isBlank", "intern"):
            if name in ("toString", "intern"):
                return s
            if name == "trim":
                return s.strip("".join(chr(c) for c in range(33)))
            if name == "strip":
                return s.strip()
            if name == "toLowerCase":
                return s.lower()
            if name == "toUpperCase":
                return s.upper()
            if name in ("length", "size"):
                return len(s)
            if name == "isEmpty":
                return s == ""
            if name == "isBlank":
                return s.strip() == ""
            h = 0
            for ch in s:
                h = (31 * h + ord(ch)) & 0xFFFFFFFF
            return h - (1 << 32) if h >= (1 << 31) else h
        return MISSING
    if name == "contains" and n == 1:
        return _str_arg(args, 0) in s
    if name == "equals" and n == 1:
        return isinstance(args[0], str) and args[0] == s
    if name == "equalsIgnoreCase" and n == 1:
        return isinstance(args[0], str) and args[0].lower() == s.lower()
    if name == "startsWith" and n in (1, 2):
        return s.startswith(_str_arg(args, 0), _int_arg(args, 1) if n == 2 else 0)
    if name == "endsWith" and n == 1:
        return s.endswith(_str_arg(args, 0))
    if name == "indexOf" and n in (1, 2):
        return s.find(_str_arg(args, 0), max(_int_arg(args, 1), 0) if n == 2 else 0)
    if name == "lastIndexOf" and n == 1:
        return s.rfind(_str_arg(args, 0))
    if name == "charAt" and n == 1:
        i = _int_arg(args, 0)
        if not 0 <= i < len(s):
            _fail(f"charAt({i}) out of range for a string of length {len(s)}")
        return s[i]
    if name == "substring" and n in (1, 2):
        begin = _int_arg(args, 0)
        end = _int_arg(args, 1) if n == 2 else len(s)
        if begin < 0 or end > len(s) or begin > end:
            _fail(f"substring({begin}, {end}) out of range for a string of length {len(s)}")
        return s[begin:end]
    if name == "concat" and n == 1:
        return rc.check_string(s + _str_arg(args, 0))
    if name == "replace" and n == 2:
        old, new = _str_arg(args, 0), _str_arg(args, 1)
        if old == "" and len(s) * (len(new) + 1) > rc.limits.max_output:
            _fail("replace would build too long a string")
        if old and s.count(old) * len(new) > rc.limits.max_output:
            raise TemplateLimitError("replace would build too long a string")
        return rc.check_string(s.replace(old, new))
    if name in ("replaceAll", "replaceFirst") and n == 2:
        regex = _java_regex(args[0])
        replacement = _str_arg(args, 1)
        try:
            result = regex.sub(_java_replacement(replacement), s,
                               count=1 if name == "replaceFirst" else 0)
        except RecursionError:
            _fail("regular expression too complex")
        return rc.check_string(result)
    if name == "matches" and n == 1:
        return _java_regex(args[0]).fullmatch(s) is not None
    if name == "split" and n in (1, 2):
        return _java_split(s, args[0], _int_arg(args, 1) if n == 2 else 0)
    if name == "compareTo" and n == 1:
        other = _str_arg(args, 0)
        return (s > other) - (s < other)
    return MISSING


def _map_method(m: dict[Any, Any], name: str, args: list[Any], rc: _Render) -> Any:
    n = len(args)
    if name == "get" and n == 1:
        return m.get(args[0])
    if name == "put" and n == 2:
        previous = m.get(args[0])
        set_property(m, args[0], args[1])
        return previous
    if name == "putAll" and n == 1 and isinstance(args[0], dict):
        for k, v in args[0].items():
            set_property(m, k, v)
        return None
    if name == "containsKey" and n == 1:
        return args[0] in m
    if name == "containsValue" and n == 1:
        return any(_equals(v, args[0]) for v in m.values())
    if name == "remove" and n == 1:
        return m.pop(args[0], None)
    if name == "getOrDefault" and n == 2:
        return m.get(args[0], args[1])
    if n == 0:
        if name == "keySet":
            return JavaList(m.keys())
        if name == "values":
            return JavaList(m.values())
        if name == "entrySet":
            return JavaList(_Entry(k, v) for k, v in m.items())
        if name == "size":
            return len(m)
        if name == "isEmpty":
            return not m
        if name == "toString":
            return to_text(m, 0, rc.limits)
        if name == "clear":
            m.clear()
            return None
    return MISSING


def _list_method(items: list[Any], name: str, args: list[Any], rc: _Render) -> Any:
    n = len(args)
    if name == "get" and n == 1:
        i = _int_arg(args, 0)
        if not 0 <= i < len(items):
            _fail(f"get({i}) out of range for a list of size {len(items)}")
        return items[i]
    if name == "add" and n == 1:
        if len(items) >= rc.limits.max_range:
            raise TemplateLimitError("list grew too long")
        items.append(args[0])
        return True
    if name == "add" and n == 2:
        i = _int_arg(args, 0)
        if not 0 <= i <= len(items):
            _fail(f"add({i}, ...) out of range for a list of size {len(items)}")
        items.insert(i, args[1])
        return None
    if name == "set" and n == 2:
        i = _int_arg(args, 0)
        if not 0 <= i < len(items):
            _fail(f"set({i}, ...) out of range for a list of size {len(items)}")
        previous = items[i]
        items[i] = args[1]
        return previous
    if name == "contains" and n == 1:
        return any(_equals(v, args[0]) for v in items if v is not None or args[0] is None)
    if name == "indexOf" and n == 1:
        for i, v in enumerate(items):
            if v == args[0]:
                return i
        return -1
    if name == "remove" and n == 1:
        if isinstance(args[0], int) and not isinstance(args[0], bool):
            i = args[0]
            if not 0 <= i < len(items):
                _fail(f"remove({i}) out of range for a list of size {len(items)}")
            return items.pop(i)
        if args[0] in items:
            items.remove(args[0])
            return True
        return False
    if name == "addAll" and n == 1 and isinstance(args[0], list):
        if len(items) + len(args[0]) > rc.limits.max_range:
            raise TemplateLimitError("list grew too long")
        items.extend(args[0])
        return True
    if n == 0:
        if name == "size":
            return len(items)
        if name == "isEmpty":
            return not items
        if name == "toString":
            return to_text(items, 0, rc.limits)
        if name == "clear":
            items.clear()
            return None
    return MISSING


class _Entry(VtlObject):
    """A ``Map.Entry`` from ``entrySet()``: ``.key``, ``.value``, renders ``k=v``."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key = key
        self.value = value

    def vtl_get(self, name: str) -> Any:
        if name == "key":
            return self.key
        if name == "value":
            return self.value
        return None

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        if not args and name in ("getKey", "getValue"):
            return self.key if name == "getKey" else self.value
        if not args and name == "toString":
            return self.vtl_text()
        return MISSING

    def vtl_text(self) -> str:
        key = _java_str(self.key, 1, DEFAULT_LIMITS)
        return f"{key}={_java_str(self.value, 1, DEFAULT_LIMITS)}"


def call_method(target: Any, name: str, args: list[Any], rc: _Render) -> Any:
    """``target.name(args)`` with Java's behaviour; an unknown method is ``null``."""
    if isinstance(target, str):
        result = _string_method(target, name, args, rc)
    elif isinstance(target, dict):
        result = _map_method(target, name, args, rc)
    elif isinstance(target, list):
        result = _list_method(target, name, args, rc)
    elif isinstance(target, VtlObject):
        result = target.vtl_call(name, args)
    elif name == "toString" and not args:
        result = to_text(target, 0, rc.limits)
    elif _is_number(target) and not args and name in ("intValue", "longValue"):
        result = int(target) if not isinstance(target, float) or math.isfinite(target) \
            else 0
    elif _is_number(target) and not args and name == "doubleValue":
        result = float(target)
    elif isinstance(target, bool) and not args and name == "booleanValue":
        result = target
    else:
        result = MISSING
    if result is MISSING:
        return None
    if isinstance(result, str):
        rc.check_string(result)
    return result


_BEAN_METHODS = {"empty": "isEmpty", "class": "getClass", "bytes": "getBytes",
                 "keySet": "keySet", "values": "values", "entrySet": "entrySet"}


def get_property(target: Any, name: str) -> Any:
    """``$target.name``: a map's key, else a getter (``$list.empty`` is ``isEmpty()``)."""
    if isinstance(target, dict):
        return target.get(name)
    if isinstance(target, VtlObject):
        return target.vtl_get(name)
    if isinstance(target, (str, list)) and name in ("empty",):
        return len(target) == 0
    return None


def walk(value: Any, names: Sequence[str]) -> Any:
    """``value`` followed through the properties ``names`` (``$value.a.b``)."""
    for name in names:
        if value is None:
            return None
        if type(value) is dict:
            value = value.get(name)
        elif isinstance(value, VtlObject):
            value = value.vtl_get(name)
        else:
            value = get_property(value, name)
    return value


def get_index(target: Any, key: Any) -> Any:
    """``$target[key]``: list position, map key or object index."""
    if isinstance(target, dict):
        return target.get(key)
    if isinstance(target, list):
        if isinstance(key, str):
            key = _parse_int(key)
        if isinstance(key, int) and not isinstance(key, bool) and -len(target) <= key \
                < len(target):
            return target[key]
        return None
    if isinstance(target, VtlObject):
        return target.vtl_index(key)
    return None


def set_property(target: Any, key: Any, value: Any) -> None:
    """``#set($target.key = value)`` / ``#set($target[key] = value)`` / ``.put``."""
    if isinstance(target, dict):
        target[key] = value
    elif isinstance(target, list):
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < len(target):
            target[key] = value
        else:
            _fail(f"index {key!r} out of range for a list of size {len(target)}")
    elif isinstance(target, VtlObject):
        target.vtl_set(key, value)
    else:
        _fail(f"cannot assign {key!r} on a {type(target).__name__}")


# -- the parser --------------------------------------------------------------------------------

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789_-")
_WS = " \t\r\n"
_DIRECTIVES = ("set", "if", "elseif", "else", "end", "foreach", "break", "stop")
_UNSUPPORTED = ("macro", "parse", "include", "evaluate", "define")
_NEWLINE_RE = re.compile(r"[ \t]*(\r\n|\n|\r)")
_WORD_OPS = {"eq": "==", "ne": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">=",
             "and": "&&", "or": "||"}


class _Parser:
    """Recursive descent over the template source; see :class:`Template`."""

    def __init__(self, source: str) -> None:
        self.s = source
        self.pos = 0
        self.depth = 0

    def error(self, message: str, pos: int | None = None) -> NoReturn:
        raise TemplateSyntaxError(message, self.s, self.pos if pos is None else pos)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.error(f"template nests deeper than {MAX_NESTING} levels")

    # -- text and directives --

    def parse_block(self, ends: tuple[str, ...], in_string: bool = False
                    ) -> tuple[list[_Node], str | None]:
        """Nodes up to one of the directives ``ends`` (consumed), which is returned."""
        s = self.s
        nodes: list[_Node] = []
        text: list[str] = []

        def flush() -> None:
            if text:
                joined = "".join(text)
                if nodes and isinstance(nodes[-1], _Text):
                    nodes[-1] = _Text(nodes[-1].text + joined)
                else:
                    nodes.append(_Text(joined))
                text.clear()

        n = len(s)
        while self.pos < n:
            ch = s[self.pos]
            if ch == "$":
                ref = self.try_reference()
                if ref is None:
                    text.append("$")
                    self.pos += 1
                else:
                    flush()
                    nodes.append(_Output(ref))
                continue
            if ch == "#":
                start = self.pos
                if s.startswith("##", start):
                    end = s.find("\n", start)
                    self.pos = n if end < 0 else end + 1
                    continue
                if s.startswith("#*", start):
                    end = s.find("*#", start + 2)
                    if end < 0:
                        self.error("unterminated #* comment", start)
                    self.pos = end + 2
                    continue
                if s.startswith("#[[", start):
                    end = s.find("]]#", start + 3)
                    if end < 0:
                        self.error("unterminated #[[ ]]# block", start)
                    text.append(s[start + 3:end])
                    self.pos = end + 3
                    continue
                name, after = self.directive_name(start)
                if name is None:
                    text.append("#")
                    self.pos += 1
                    continue
                if name in _UNSUPPORTED:
                    self.error(f"#{name} is not supported in mapping templates", start)
                if name == "set" and all(c in " \t" for chunk in text for c in chunk):
                    # Velocity 1.x eats the blanks before #set when nothing but blanks
                    # separate it from the previous directive or reference (or the start
                    # of its block); blanks that follow other text stay.
                    text.clear()
                flush()
                self.pos = after
                if name in ends:
                    if name in ("else", "end", "break", "stop"):
                        self.eat_newline()
                    return nodes, name
                if name in ("else", "elseif", "end"):
                    self.error(f"#{name} without a matching #if or #foreach", start)
                nodes.append(self.directive(name, start))
                continue
            if ch == "\\" and self.pos + 1 < n and s[self.pos + 1] in "$#":
                # \$ref and \#directive: the escaped text is emitted literally
                j = self.pos + 1
                while j < n and s[j] == "\\":
                    j += 1
                text.append(s[self.pos + 1])
                self.pos += 2
                continue
            # plain text up to the next special character
            j = self.pos + 1
            while j < n and s[j] not in "$#\\":
                j += 1
            text.append(s[self.pos:j])
            self.pos = j
        flush()
        if ends and not in_string:
            self.error(f"missing #{ends[-1]}", n)
        return nodes, None

    def directive_name(self, start: int) -> tuple[str | None, int]:
        s = self.s
        i = start + 1
        braced = i < len(s) and s[i] == "{"
        if braced:
            i += 1
        j = i
        while j < len(s) and s[j].isalpha():
            j += 1
        name = s[i:j]
        if braced:
            if j >= len(s) or s[j] != "}":
                return None, start
            j += 1
        elif j < len(s) and (s[j].isalnum() or s[j] == "_"):
            return None, start
        if name in _DIRECTIVES or name in _UNSUPPORTED:
            return name, j
        return None, start

    def eat_newline(self) -> None:
        m = _NEWLINE_RE.match(self.s, self.pos)
        if m is not None:
            self.pos = m.end()

    def open_paren(self, name: str) -> None:
        s = self.s
        while self.pos < len(s) and s[self.pos] in " \t":
            self.pos += 1
        if self.pos >= len(s) or s[self.pos] != "(":
            self.error(f"#{name} needs (")
        self.pos += 1

    def close_paren(self, name: str) -> None:
        self.skip_ws()
        if self.pos >= len(self.s) or self.s[self.pos] != ")":
            self.error(f"#{name}( ... ) is not closed")
        self.pos += 1
        self.eat_newline()

    def directive(self, name: str, start: int) -> _Node:
        self.nest()
        try:
            if name == "set":
                self.open_paren(name)
                self.skip_ws()
                if not self.s.startswith("$", self.pos):
                    self.error("#set needs a $reference to assign to")
                target = self.try_reference(in_directive=True)
                if target is None:
                    self.error("#set needs a $reference to assign to")
                self.skip_ws()
                if not self.s.startswith("=", self.pos):
                    self.error("#set needs =")
                self.pos += 1
                value = self.expression()
                self.close_paren(name)
                return _Set(target, value)
            if name == "if":
                self.open_paren(name)
                condition = self.expression()
                self.close_paren(name)
                branches: list[tuple[_Expr, list[_Node]]] = []
                otherwise: list[_Node] | None = None
                body, end = self.parse_block(("elseif", "else", "end"))
                branches.append((condition, body))
                while end == "elseif":
                    self.open_paren("elseif")
                    condition = self.expression()
                    self.close_paren("elseif")
                    body, end = self.parse_block(("elseif", "else", "end"))
                    branches.append((condition, body))
                if end == "else":
                    otherwise, end = self.parse_block(("end",))
                return _If(branches, otherwise)
            if name == "foreach":
                self.open_paren(name)
                self.skip_ws()
                var = self.try_reference(in_directive=True)
                if var is None or var.steps:
                    self.error("#foreach needs a $variable")
                self.skip_ws()
                if not self.s.startswith("in", self.pos):
                    self.error("#foreach needs 'in'")
                self.pos += 2
                iterable = self.expression()
                self.close_paren(name)
                body, _end = self.parse_block(("end",))
                return _Foreach(var.name, iterable, body)
            if name in ("break", "stop"):
                self.eat_newline()
                return _Control(name)
            self.error(f"unexpected #{name}", start)
        finally:
            self.depth -= 1

    # -- references --

    def identifier(self) -> str | None:
        s = self.s
        i = self.pos
        if i >= len(s) or s[i] not in _IDENT_START:
            return None
        j = i + 1
        while j < len(s) and s[j] in _IDENT_CHARS:
            j += 1
        # a trailing '-' belongs to the text, not the name (e.g. "$a-" in "$a-$b")
        while j > i + 1 and s[j - 1] == "-":
            j -= 1
        self.pos = j
        return s[i:j]

    def try_reference(self, in_directive: bool = False) -> _Ref | None:
        """``$name``, ``$!name``, ``${name...}`` with its chain, or ``None`` (text)."""
        s = self.s
        start = self.pos
        i = start + 1
        if i < len(s) and s[i] == "!":
            i += 1
        braced = i < len(s) and s[i] == "{"
        if braced:
            i += 1
        self.pos = i
        name = self.identifier()
        if name is None:
            self.pos = start
            return None
        steps: list[tuple[int, str, Any]] = []
        self.nest()
        try:
            while self.pos < len(s):
                ch = s[self.pos]
                if ch == "." and self.pos + 1 < len(s) and s[self.pos + 1] in _IDENT_START:
                    self.pos += 1
                    member = self.identifier()
                    assert member is not None
                    if self.pos < len(s) and s[self.pos] == "(":
                        self.pos += 1
                        args = self.arguments(")")
                        steps.append((_CALL, member, args))
                    else:
                        steps.append((_PROP, member, None))
                elif ch == "[":
                    self.pos += 1
                    key = self.expression()
                    self.skip_ws()
                    if not s.startswith("]", self.pos):
                        self.error("index is not closed with ]")
                    self.pos += 1
                    steps.append((_INDEX, "", key))
                else:
                    break
        finally:
            self.depth -= 1
        if braced:
            if not s.startswith("}", self.pos):
                if in_directive:
                    self.error("${ is not closed with }")
                self.pos = start
                return None
            self.pos += 1
        return _Ref(name, steps, s[start:self.pos])

    def arguments(self, close: str) -> list[_Expr]:
        args: list[_Expr] = []
        self.skip_ws()
        if self.s.startswith(close, self.pos):
            self.pos += 1
            return args
        while True:
            args.append(self.expression())
            self.skip_ws()
            if self.s.startswith(",", self.pos):
                self.pos += 1
                continue
            if self.s.startswith(close, self.pos):
                self.pos += 1
                return args
            self.error(f"expected , or {close}")

    # -- expressions --

    def skip_ws(self) -> None:
        s = self.s
        while self.pos < len(s) and s[self.pos] in _WS:
            self.pos += 1

    def expression(self) -> _Expr:
        self.nest()
        try:
            return self.binary(0)
        finally:
            self.depth -= 1

    _LEVELS: tuple[tuple[str, ...], ...] = (
        ("||",), ("&&",), ("==", "!="), ("<=", ">=", "<", ">"), ("+", "-"), ("*", "/", "%"))

    def operator(self, level: int) -> str | None:
        self.skip_ws()
        s = self.s
        for op in self._LEVELS[level]:
            if s.startswith(op, self.pos):
                if op in ("<", ">") and s.startswith("=", self.pos + 1):
                    continue
                self.pos += len(op)
                return op
        for word, op in _WORD_OPS.items():
            if op in self._LEVELS[level] and s.startswith(word, self.pos):
                end = self.pos + len(word)
                if end >= len(s) or not (s[end].isalnum() or s[end] == "_"):
                    self.pos = end
                    return op
        return None

    def binary(self, level: int) -> _Expr:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            op = self.operator(level)
            if op is None:
                return left
            right = self.binary(level + 1)
            left = _Binary(op, left, right)

    def unary(self) -> _Expr:
        self.skip_ws()
        s = self.s
        if s.startswith("!", self.pos) and not s.startswith("!=", self.pos):
            self.pos += 1
            self.nest()
            try:
                return _Not(self.unary())
            finally:
                self.depth -= 1
        if s.startswith("not", self.pos) and (self.pos + 3 >= len(s) or
                                               not s[self.pos + 3].isalnum()):
            self.pos += 3
            self.nest()
            try:
                return _Not(self.unary())
            finally:
                self.depth -= 1
        if s.startswith("-", self.pos) and self.pos + 1 < len(s) and \
                not s[self.pos + 1].isdigit():
            self.pos += 1
            self.nest()
            try:
                return _Negate(self.unary())
            finally:
                self.depth -= 1
        return self.primary()

    def primary(self) -> _Expr:
        self.skip_ws()
        s = self.s
        if self.pos >= len(s):
            self.error("expected a value")
        ch = s[self.pos]
        if ch == "$":
            ref = self.try_reference(in_directive=True)
            if ref is None:
                self.error("expected a reference after $")
            return ref
        if ch == "'":
            end = s.find("'", self.pos + 1)
            if end < 0:
                self.error("unterminated string")
            value = s[self.pos + 1:end]
            self.pos = end + 1
            return _Literal(value)
        if ch == '"':
            return self.double_quoted()
        if ch.isdigit() or ch == "-":
            m = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?").match(s, self.pos)
            if m is None:
                self.error("expected a number")
            self.pos = m.end()
            text = m.group(0)
            if s.startswith("..", self.pos):
                if m.group(1) is not None or m.group(2) is not None:
                    self.error("a range's bounds must be integers")
                return _Literal(_number(int(text)))
            if m.group(1) is None and m.group(2) is None:
                return _Literal(_number(int(text)))
            return _Literal(float(text))
        if ch == "(":
            self.pos += 1
            inner = self.expression()
            self.skip_ws()
            if not s.startswith(")", self.pos):
                self.error("( is not closed")
            self.pos += 1
            return inner
        if ch == "[":
            self.pos += 1
            self.nest()
            try:
                self.skip_ws()
                if s.startswith("]", self.pos):
                    self.pos += 1
                    return _ListExpr([])
                first = self.expression()
                self.skip_ws()
                if s.startswith("..", self.pos):
                    self.pos += 2
                    last = self.expression()
                    self.skip_ws()
                    if not s.startswith("]", self.pos):
                        self.error("range is not closed with ]")
                    self.pos += 1
                    return _RangeExpr(first, last)
                items = [first]
                while True:
                    self.skip_ws()
                    if s.startswith(",", self.pos):
                        self.pos += 1
                        items.append(self.expression())
                        continue
                    if s.startswith("]", self.pos):
                        self.pos += 1
                        return _ListExpr(items)
                    self.error("expected , or ]")
            finally:
                self.depth -= 1
        if ch == "{":
            self.pos += 1
            self.nest()
            try:
                pairs: list[tuple[_Expr, _Expr]] = []
                self.skip_ws()
                if s.startswith("}", self.pos):
                    self.pos += 1
                    return _MapExpr(pairs)
                while True:
                    key = self.expression()
                    self.skip_ws()
                    if not s.startswith(":", self.pos):
                        self.error("expected : in a map")
                    self.pos += 1
                    pairs.append((key, self.expression()))
                    self.skip_ws()
                    if s.startswith(",", self.pos):
                        self.pos += 1
                        continue
                    if s.startswith("}", self.pos):
                        self.pos += 1
                        return _MapExpr(pairs)
                    self.error("expected , or }")
            finally:
                self.depth -= 1
        keywords: tuple[tuple[str, Any], ...] = (("true", True), ("false", False),
                                                 ("null", None))
        for word, value in keywords:
            if s.startswith(word, self.pos):
                end = self.pos + len(word)
                if end >= len(s) or not (s[end].isalnum() or s[end] == "_"):
                    self.pos = end
                    return _Literal(value)
        self.error(f"unexpected {ch!r}")

    def double_quoted(self) -> _Expr:
        """``"..."``: ``""`` is a quote; ``$refs`` and directives are interpolated."""
        s = self.s
        start = self.pos + 1
        i = start
        while True:
            end = s.find('"', i)
            if end < 0:
                self.error("unterminated string", self.pos)
            if s.startswith('""', end):
                i = end + 2
                continue
            break
        raw = s[start:end].replace('""', '"')
        self.pos = end + 1
        if "$" not in raw and "#" not in raw:
            return _Literal(raw)
        inner = _Parser(raw)
        inner.depth = self.depth
        try:
            nodes, _ = inner.parse_block((), in_string=True)
        except TemplateSyntaxError as e:
            raise TemplateSyntaxError(f"in a string: {e}", s, start) from None
        if all(isinstance(node, _Text) for node in nodes):
            return _Literal("".join(node.text for node in nodes  # type: ignore[attr-defined]
                                    ))
        return _Interpolated(nodes)


# -- compiling the tree to Python -------------------------------------------------------------
#
# Walking the tree costs a method call and several attribute reads per node; for the
# request path the tree is translated once into Python source (one function per template,
# one per interpolated string) that calls the same helpers as the interpreter above.  The
# interpreter stays: it is the fallback when the generated code would exceed Python's own
# nesting limits, and the reference the tests compare the compiled form against.


def _h_prop(value: Any, name: str) -> Any:
    """``value.name`` when ``value`` is not a plain ``dict`` (the generated code reads a
    map's key itself)."""
    if value is None:
        return None
    if isinstance(value, VtlObject):
        return value.vtl_get(name)
    return get_property(value, name)


def _h_path(value: Any, names: tuple[str, ...]) -> Any:
    """``value.a.b...`` when ``value`` is not a plain ``dict``: an AWS object resolves
    the whole chain itself."""
    if value is None:
        return None
    if isinstance(value, VtlObject):
        return value.vtl_get_path(names)
    return walk(value, names)


def _h_call(value: Any, name: str, args: list[Any], rc: _Render) -> Any:
    """``value.name(args)`` with arguments already evaluated (they have no effects)."""
    if value is None:
        return None
    if isinstance(value, VtlObject):  # $input, $util, $context: straight to the object
        result = value.vtl_call(name, args)
        if result is MISSING:
            return None
        if type(result) is str and len(result) > rc.limits.max_output:
            rc.check_string(result)
        return result
    return call_method(value, name, args, rc)


def _h_call_late(value: Any, name: str, args: Callable[[], list[Any]], rc: _Render) -> Any:
    """``value.name(args)`` whose arguments are evaluated only when ``value`` is not null
    (as Velocity does: they may have effects)."""
    if value is None:
        return None
    return _h_call(value, name, args(), rc)


def _h_index(value: Any, key: Any) -> Any:
    if value is None:
        return None
    return get_index(value, key() if callable(key) else key)


def _h_text(value: Any, rc: _Render) -> str:
    """A non-null, non-``str`` value as text: numbers without the generic dispatch."""
    kind = type(value)
    if kind is float:
        if 1e-3 <= value < 1e7 or -1e7 < value <= -1e-3:
            return repr(value)  # java_double's common case, without the call
        return java_double(value)
    if kind is int:
        return str(value)
    return to_text(value, 0, rc.limits)


def _h_late(rc: _Render) -> NoReturn:
    raise TemplateLimitError(
        f"template rendering took longer than {rc.limits.max_seconds} seconds")


_HELPERS: dict[str, Any] = {
    "_P": _h_prop, "_PP": _h_path, "_C": _h_call, "_CL": _h_call_late, "_I": _h_index,
    "_TX": _h_text, "_T": _truthy,
    "_EQ": _equals, "_CMP": _compare, "_AR": _arith,
    "_JL": JavaList, "_IT": _iterable, "_FS": _ForeachState, "_NO": MISSING,
    "_SP": set_property,
    "_BR": _Break, "_ST": _Stop, "_LATE": _h_late, "_MONO": time.monotonic,
    "_J": "".join,
}


def _is_pure(expr: _Expr) -> bool:
    """No side effects and cheap: safe to evaluate even when the target is null."""
    if isinstance(expr, _Literal):
        return True
    if isinstance(expr, _Ref):
        return all(kind == _PROP for kind, _n, _a in expr.steps)
    return False


#: The prefix of the typed entry's root arguments (``_R0``, ``_R1``, ...: not a name a
#: template's variables compile to).
_TYPED_ARG = "_R"

#: The most values one run of text and references appends at once (:meth:`_Compiler.run`).
_RUN = 8

#: Operators whose result is a Python ``bool`` (``#if`` tests them directly).
_BOOLEAN_OPS = frozenset({"==", "!=", "<", ">", "<=", ">=", "&&", "||"})

#: ``$foreach.<name>`` as an expression over the loop state ``S`` (what
#: :meth:`_ForeachState.vtl_get` answers).
_FOREACH_INLINE = {"hasNext": "S.index + 1 < S.total", "index": "S.index",
                   "count": "S.index + 1", "first": "S.index == 0",
                   "last": "S.index + 1 >= S.total"}

#: The same over the innermost loop's index ``I`` and length ``N``, where no state object
#: is needed (:attr:`_Compiler.foreach_static`).
_FOREACH_STATIC = {"hasNext": "(I + 1 < N)", "index": "I", "count": "(I + 1)",
                   "first": "(I == 0)", "last": "(I + 1 >= N)"}

#: The ``$foreach`` properties that are booleans (``#if`` tests them directly).
_FOREACH_BOOLEANS = frozenset({"hasNext", "first", "last"})

#: Literal values a compiled template may share between renders (nothing can change them).
_IMMUTABLE = (str, int, float, bool, type(None))


def _is_pure_output(node: _Node) -> bool:
    return isinstance(node, _Output) and _is_pure(node.ref)


def _children(obj: object) -> Iterable[object]:
    """The nodes and expressions directly inside ``obj``."""
    if isinstance(obj, _Output):
        return (obj.ref,)
    if isinstance(obj, _Set):
        return (obj.target, obj.value)
    if isinstance(obj, _If):
        found: list[object] = []
        for condition, body in obj.branches:
            found.append(condition)
            found.extend(body)
        found.extend(obj.otherwise or ())
        return found
    if isinstance(obj, _Foreach):
        return (obj.iterable, *obj.body)
    if isinstance(obj, _Interpolated):
        return obj.nodes
    if isinstance(obj, _ListExpr):
        return obj.items
    if isinstance(obj, _RangeExpr):
        return (obj.start, obj.end)
    if isinstance(obj, _MapExpr):
        return [part for pair in obj.items for part in pair]
    if isinstance(obj, (_Not, _Negate)):
        return (obj.operand,)
    if isinstance(obj, _Binary):
        return (obj.left, obj.right)
    if isinstance(obj, _Ref):
        inner: list[object] = []
        for kind, _name, arg in obj.steps:
            if kind == _CALL:
                inner.extend(arg)
            elif kind == _INDEX:
                inner.append(arg)
        return inner
    return ()


class _Names:
    """The variable names of a whole template (nested strings included), found before
    compiling it: which locals the generated function needs and what ``$foreach`` is."""

    def __init__(self, nodes: Sequence[_Node]) -> None:
        #: every name a reference starts with (``$name...``)
        self.used: set[str] = set()
        #: names that ``#set($name = ...)`` or ``#foreach($name in ...)`` replace
        self.assigned: set[str] = set()
        #: every ``$foreach`` reads one of :data:`_FOREACH_INLINE`'s properties first
        self.foreach_inline = True
        stack: list[object] = list(nodes)
        while stack:
            obj = stack.pop()
            if isinstance(obj, _Ref):
                self.used.add(obj.name)
                if obj.name == "foreach" and not (
                        obj.steps and obj.steps[0][0] == _PROP
                        and obj.steps[0][1] in _FOREACH_INLINE):
                    self.foreach_inline = False
            elif isinstance(obj, _Set) and not obj.target.steps:
                self.assigned.add(obj.target.name)
            elif isinstance(obj, _Foreach):
                self.assigned.add(obj.var)
            stack.extend(_children(obj))


def names_in(obj: object) -> set[str]:
    """Every variable name read or written anywhere inside ``obj``."""
    found: set[str] = set()
    for item in _walk((obj,)):
        if isinstance(item, _Ref):
            found.add(item.name)
        elif isinstance(item, _Foreach):
            found.add(item.var)
    return found


def _walk(roots: Iterable[object]) -> Iterator[object]:
    """Every node and expression in ``roots`` and inside them."""
    stack = list(roots)
    while stack:
        item = stack.pop()
        yield item
        stack.extend(_children(item))


#: A deferred variable (:func:`deferred_sets`): the typed root and the method whose
#: call its ``#set`` holds, the call's literal arguments, and each read's leading
#: property names -> the reader :meth:`VtlObject.vtl_compile_deferred` gave and how many
#: of those names it answers.
Deferred = tuple[str, str, tuple[Any, ...],
                 dict[tuple[str, ...], tuple[Callable[[Any], Any], int]]]


def _call_shape(value: _Expr, types: Mapping[str, type[VtlObject]]
                ) -> tuple[str, str, tuple[Any, ...]] | None:
    """``$root.method(literals...)`` on a typed root, as (root, method, values)."""
    if not (isinstance(value, _Ref) and value.name in types and len(value.steps) == 1
            and value.steps[0][0] == _CALL):
        return None
    _kind, method, args = value.steps[0]
    if not all(isinstance(a, _Literal) and isinstance(a.value, _IMMUTABLE) for a in args):
        return None
    return value.name, method, tuple(a.value for a in args)


def deferred_sets(nodes: Sequence[_Node], types: Mapping[str, type[VtlObject]],
                  excluded: Iterable[str] = ()) -> dict[str, Deferred]:
    """The variables whose ``#set($v = $root.m(literals))`` need not make the call's
    result: every assignment of ``$v`` is that one call on a typed root (of ``types``),
    ``$v`` is never a loop variable, written through or read but as ``$v.a.b...`` that
    the root's class answers without the result (:meth:`VtlObject.
    vtl_compile_deferred`), and nothing else can reach the result: no bare ``$root``,
    index or property ``m`` of it, and no other ``$root.m(...)`` of that arity unless
    its arguments are literals that differ.  ``excluded``: names that must stay real
    (held in the variables dict)."""
    bad = set(excluded) | set(types) | {"foreach", "velocityCount"}
    calls: dict[str, set[tuple[str, str, tuple[Any, ...]]]] = {}
    sets: dict[str, list[_Set]] = {}
    for obj in _walk(nodes):
        if isinstance(obj, _Set):
            target = obj.target
            shape = None if target.steps else _call_shape(obj.value, types)
            if shape is None:
                bad.add(target.name)
            else:
                calls.setdefault(target.name, set()).add(shape)
                sets.setdefault(target.name, []).append(obj)
        elif isinstance(obj, _Foreach):
            bad.add(obj.var)
    found: dict[str, Deferred] = {}
    candidates = {var for var, shapes in calls.items() if var not in bad and len(shapes) == 1}
    while candidates:
        # the target and value of each candidate's #set are not uses; a #set whose
        # variable is not deferred makes the call, so it counts as one
        skip = {id(part) for var in candidates for node in sets[var]
                for part in (node.target, node.value)}
        reads: dict[str, list[list[tuple[int, str, Any]]]] = {}
        escaped: set[str] = set()  # roots handed out whole
        touched: list[tuple[str, str, int, tuple[Any, ...] | None]] = []  # root.m(...)
        for obj in _walk(nodes):
            if not isinstance(obj, _Ref) or id(obj) in skip:
                continue
            steps = obj.steps
            if obj.name in types:
                if not steps or steps[0][0] == _INDEX:
                    escaped.add(obj.name)
                elif steps[0][0] == _PROP:
                    touched.append((obj.name, steps[0][1], -1, None))
                else:
                    shape = _call_shape(_Ref(obj.name, steps[:1], ""), types)
                    touched.append((obj.name, steps[0][1], len(steps[0][2]),
                                    shape[2] if shape is not None else None))
            elif obj.name in candidates:
                reads.setdefault(obj.name, []).append(steps)
        found = {}
        for var in candidates:
            ((root, method, args),) = calls[var]
            if root in escaped or any(
                    other == root and name == method and (arity == -1 or (
                        arity == len(args) and (values is None or values == args)))
                    for other, name, arity, values in touched):
                continue
            if types[root].vtl_compile_deferred(method, args, ()) is None:
                continue  # the call must be made (effects, errors)
            readers: dict[tuple[str, ...], tuple[Callable[[Any], Any], int]] = {}
            for steps in reads.get(var, ()):
                count = 0
                while count < len(steps) and steps[count][0] == _PROP:
                    count += 1
                names = tuple(name for _k, name, _a in steps[:count])
                reader = types[root].vtl_compile_deferred(method, args, names) \
                    if names else None
                if reader is None or not 0 < reader[1] <= count:
                    break
                readers[names] = reader
            else:
                found[var] = (root, method, args, readers)
        if found.keys() == candidates:
            break
        candidates = set(found)
    return found


class _Compiler:
    """Python source for a template: one function for the template, one per
    interpolated string.

    In the template's own function every variable lives in a Python local (read from
    the variables once, at the start) unless something else must see it in the
    variables dict: an interpolated string's function or a node left to the tree
    interpreter (:attr:`needs_v` collects those names; :func:`_compile_tree` compiles
    again with them in ``dynamic`` when the first pass met new ones).  Roots with a
    declared type (``types``) are tested once per render, and their properties and
    methods that the type compiles (:meth:`VtlObject.vtl_compile_get`,
    :meth:`VtlObject.vtl_compile_call`) are called directly while the test holds.
    """

    def __init__(self, nodes: Sequence[_Node], dynamic: frozenset[str],
                 types: Mapping[str, type[VtlObject]]) -> None:
        self.consts: list[Any] = []
        self.functions: list[str] = []
        self.counter = 0
        self.names = _Names(nodes)
        self.dynamic = dynamic
        self.types = types
        #: names met where only the variables dict can hold them
        self.needs_v: set[str] = set()
        #: the generated code may change the variables dict (else a render may hand it
        #: the caller's own)
        self.writes_v = False
        #: variable name -> its Python local, in the template's own function
        self.local: dict[str, str] = {}
        #: typed root -> (the local holding "its type is the declared one", that type)
        self.guards: dict[str, tuple[str, type[VtlObject]]] = {}
        #: (index, length) locals of the loops around the code being compiled, innermost
        #: last (template function only)
        self.loops: list[tuple[str, str]] = []
        self.in_main = False
        #: the name of the typed entry: the main function with the typed roots as
        #: arguments after ``V`` (in the order of their sorted names), if there is one
        self.typed_entry: str | None = None
        names = self.names
        #: ``$foreach`` is only ever read as ``$foreach.hasNext`` and friends in the
        #: template's own function: computed from the loop index, no state object
        self.foreach_static = ("foreach" not in dynamic and "foreach" not in names.assigned
                               and names.foreach_inline)
        #: variables whose ``#set`` defers its call (:func:`deferred_sets`), and the local
        #: holding the typed root once such a ``#set`` ran (``None`` before, or when the
        #: root's guard failed and the call was made)
        self.deferred: dict[str, Deferred] = {}
        self.held: dict[str, str] = {}

    def const(self, value: Any) -> str:
        """A global name bound to ``value`` (a global read is cheaper than ``K[i]``)."""
        self.consts.append(value)
        return f"_k{len(self.consts) - 1}"

    def new(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def fallback(self, obj: _Node | _Expr) -> str:
        """A tree node the generated code hands to the interpreter: it reads and writes
        the variables dict, so every name in it must live there."""
        self.needs_v.update(names_in(obj))
        self.writes_v = True  # an interpolated string in it may #set
        return self.const(obj)

    def root(self, name: str) -> str:
        """The code reading variable ``name``."""
        if self.in_main and name in self.local:
            return self.local[name]
        self.needs_v.add(name)
        return f"V.get({name!r})"

    def assign(self, name: str, value: str) -> str:
        """The statement setting variable ``name`` to the code ``value``."""
        if self.in_main and name in self.local:
            return f"{self.local[name]} = {value}"
        self.needs_v.add(name)
        self.writes_v = True
        return f"V[{name!r}] = {value}"

    def main(self, nodes: Sequence[_Node]) -> str:
        """The template's function: its output goes to ``rc.out`` (kept when ``#stop``
        leaves early)."""
        names = self.names
        wanted = sorted((names.used | names.assigned) - self.dynamic)
        self.local = {name: f"L{i}" for i, name in enumerate(wanted)}
        prologue = [f" {self.local[name]} = V.get({name!r})" for name in wanted]
        # the typed entry (:attr:`typed_entry`): the typed roots arrive as arguments, of their
        # declared types, so their guards hold: it is compiled with each guard the
        # constant True, and Python drops the generic branches
        order = sorted(self.types)
        typed = [f" {self.local[name]} = {_TYPED_ARG}{order.index(name)}"
                 if name in self.types else line
                 for name, line in zip(wanted, prologue, strict=True)]
        for name, kind in sorted(self.types.items()):
            if name in self.local and name not in names.assigned:
                guard = self.new("G")
                self.guards[name] = (guard, kind)
                prologue.append(f" {guard} = type({self.local[name]}) is {self.const(kind)}")
        self.deferred = deferred_sets(
            nodes, {name: kind for name, (_g, kind) in self.guards.items()}, self.dynamic)
        for var in sorted(self.deferred):
            held = self.held[var] = self.new("P")
            prologue.append(f" {held} = None")
            typed.append(f" {held} = None")
        self.in_main = True
        try:
            function = self.function(nodes, prologue=prologue)
            if order and not self.dynamic & self.types.keys():
                # (a typed root left in the variables dict, read there by a string or
                # the interpreter, gets no typed entry)
                general = self.guards
                self.guards = {name: ("True", kind) for name, (_g, kind) in general.items()}
                try:
                    self.typed_entry = self.function(
                        nodes, prologue=typed,
                        args=[f"{_TYPED_ARG}{i}" for i in range(len(order))])
                finally:
                    self.guards = general
        finally:
            self.in_main = False
        return function

    def function(self, nodes: Sequence[_Node], string: bool = False,
                 prologue: Sequence[str] = (), args: Sequence[str] = ()) -> str:
        """A function rendering ``nodes``: the template's appends its output to
        ``rc.out``; an interpolated string's (``string``) returns its text.  ``size``
        counts what was appended, for the output bound.  ``args``: more parameters."""
        name = self.new("_f")
        lines = [f"def {name}({', '.join(['rc', 'V', *args])}):",
                 " out = []; size = 0" if string else " out = rc.out; size = rc.size",
                 " MAX = rc.limits.max_output; DL = rc.deadline",
                 " LIMIT = rc.limits.foreach_limit", *prologue]
        if string:
            self.writes_v = True  # its own loops and #set use the variables dict
            saved = self.in_main, self.loops
            self.in_main, self.loops = False, []
            try:
                self.block(nodes, lines, 1)
            finally:
                self.in_main, self.loops = saved
            lines += [" if size > MAX: rc.over()",
                      " return ''.join(out)"]
        else:
            lines.append(" try:")
            self.block(nodes, lines, 2)
            lines += ["  pass",
                      " finally:",
                      "  rc.size = size",
                      " if size > MAX: rc.over()"]
        self.functions.append("\n".join(lines))
        return name

    def to_str(self, v: str) -> str:
        """The statement making the non-``str`` value in ``v`` its text."""
        # (its type read once; None, the rarest, tested last)
        return (f"if (TY := type({v})) is not str: {v} = str({v}) if TY is int else "
                f"repr({v}) if TY is float and (1e-3 <= {v} < 1e7 or -1e7 < {v} <= -1e-3) "
                f"else '' if {v} is None else _TX({v}, rc)")

    def run(self, nodes: Sequence[_Node], lines: list[str], pad: str) -> None:
        """Text and pure references (``$a.b``: no calls, so no effects and no errors but
        limit ones) appended at once: ``out += (text, v1, text, v2, ...)``, one size
        check; with several values, joined first (one ``len`` for the run instead of one
        per value).  At most :data:`_RUN` values, so at most that many wait for the
        check."""
        parts: list[str] = []
        sizes: list[str] = []
        static = 0
        reads: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                parts.append(self.const(node.text))
                static += node.size
            else:
                assert isinstance(node, _Output)
                v = self.new("v")
                reads.append(f"{pad}{v} = {self.expr(node.ref)}")
                reads.append(f"{pad}{self.to_str(v)}")
                parts.append(v)
                sizes.append(f"len({v})")
        lines.extend(self.dict_tests_once(reads, pad))
        if len(sizes) > 1:
            s = self.new("s")
            lines.append(f"{pad}{s} = _J(({', '.join(parts)},)); out.append({s})")
            lines.append(f"{pad}size += len({s})")
        else:
            lines.append(f"{pad}out += ({', '.join(parts)},)")
            lines.append(f"{pad}size += {' + '.join([str(static), *sizes])}")
        lines.append(f"{pad}if size > MAX: rc.over()")

    def dict_tests_once(self, reads: list[str], pad: str) -> list[str]:
        """``reads`` with each local that they test for being a map two or more times
        tested once, before them (``$item.a ... $item.b`` in one run; not typed roots,
        whose test runs only when their type is not the declared one): nothing in a run
        rebinds a local (pure references only; helpers cannot reach this frame's
        locals), so the answer holds for the whole run."""
        if not self.in_main:
            return reads
        code = "\n".join(reads)
        first: list[str] = []
        for name, local in self.local.items():
            if name in self.guards:
                continue  # tested only when the declared type fails: rarely
            test = f"type({local}) is dict"
            if code.count(test) >= 2:
                flag = self.new("D")
                first.append(f"{pad}{flag} = {test}")
                code = code.replace(test, flag)
        return [*first, code] if first else reads

    def condition(self, condition: _Expr) -> str | None:
        """``condition`` as code that is a Python ``bool``, when it is one already."""
        if isinstance(condition, _Not) or (isinstance(condition, _Binary)
                                           and condition.op in _BOOLEAN_OPS):
            return self.expr(condition)  # comparisons, ! && ||
        if (isinstance(condition, _Ref) and len(condition.steps) == 1
                and condition.steps[0][0] == _PROP
                and condition.steps[0][1] in _FOREACH_BOOLEANS):
            static = self.static_foreach(condition)
            if static is not None:
                return static
        return None

    def block(self, nodes: Sequence[_Node], lines: list[str], depth: int) -> None:
        pad = " " * depth
        nodes = list(nodes)
        at = 0
        while at < len(nodes):
            # a run of text and pure references, from here
            j, values = at, 0
            while j < len(nodes) and values < _RUN and (
                    isinstance(nodes[j], _Text) or _is_pure_output(nodes[j])):
                values += isinstance(nodes[j], _Output)
                j += 1
            if values:
                self.run(nodes[at:j], lines, pad)
                at = j
                continue
            node = nodes[at]
            at += 1
            if isinstance(node, _Text):
                # static text: checked with the next value, iteration or at the end
                lines.append(f"{pad}out.append({self.const(node.text)}); size += {node.size}")
            elif isinstance(node, _Output):
                v = self.new("v")
                lines.append(f"{pad}{v} = {self.expr(node.ref)}")
                lines.append(f"{pad}if type({v}) is str:")  # the common case first
                lines.append(f"{pad} out.append({v}); size += len({v})")
                lines.append(f"{pad} if size > MAX: rc.over()")
                lines.append(f"{pad}elif {v} is not None:")
                lines.append(f"{pad} {v} = str({v}) if type({v}) is int else _TX({v}, rc)")
                lines.append(f"{pad} out.append({v}); size += len({v})")
                lines.append(f"{pad} if size > MAX: rc.over()")
            elif isinstance(node, _Set) and self.in_main and not node.target.steps \
                    and node.target.name in self.held:
                # a deferred call (deferred_sets): the root kept for the reads, unless
                # its guard fails
                root = self.deferred[node.target.name][0]
                lines.append(f"{pad}if {self.guards[root][0]}: "
                             f"{self.held[node.target.name]} = {self.local[root]}")
                v = self.new("v")
                lines.append(f"{pad}else:")
                lines.append(f"{pad} {v} = {self.expr(node.value)}")
                lines.append(f"{pad} if {v} is not None: {self.assign(node.target.name, v)}")
            elif isinstance(node, _Set):
                v = self.new("v")
                lines.append(f"{pad}{v} = {self.expr(node.value)}")
                target = node.target
                if target.steps and target.steps[-1][0] != _CALL:
                    # what _Ref.assign does: the target's owner, then its key
                    kind, name, arg = target.steps[-1]
                    owner = self.expr(_Ref(target.name, target.steps[:-1], target.source))
                    t = self.new("t")
                    key = repr(name) if kind == _PROP else self.expr(arg)
                    lines.append(f"{pad}if {v} is not None:")
                    inner = f"{pad} "
                    setter = self.typed_set(target)
                    if setter is not None:  # the type's own setter while its guard holds
                        guard = self.guards[target.name][0]
                        lines.append(f"{pad} if {guard}: "
                                     f"{self.const(setter)}({self.local[target.name]}, {v})")
                        lines.append(f"{pad} else:")
                        inner = f"{pad}  "
                    lines.append(f"{inner}{t} = {owner}")
                    # a map's key set here (set_property's first case, without its
                    # call); anything else through set_property
                    lines.append(f"{inner}if isinstance({t}, dict): {t}[{key}] = {v}")
                    lines.append(f"{inner}elif {t} is not None: _SP({t}, {key}, {v})")
                elif target.steps:
                    lines.append(f"{pad}if {v} is not None: "
                                 f"{self.fallback(target)}.assign(rc, {v})")
                else:
                    lines.append(f"{pad}if {v} is not None: {self.assign(target.name, v)}")
            elif isinstance(node, _If):
                for i, (condition, body) in enumerate(node.branches):
                    keyword = "if" if i == 0 else "elif"
                    test = self.condition(condition)
                    if test is not None:
                        lines.append(f"{pad}{keyword} {test}:")
                    else:
                        t = self.new("c")
                        lines.append(f"{pad}{keyword} ({t} := {self.expr(condition)}) is not "
                                     f"None and {t} is not False:")
                    self.block(body, lines, depth + 1)
                    lines.append(f"{pad} pass")
                if node.otherwise is not None:
                    lines.append(f"{pad}else:")
                    self.block(node.otherwise, lines, depth + 1)
                    lines.append(f"{pad} pass")
            elif isinstance(node, _Foreach):
                self.foreach(node, lines, pad, depth)
            elif isinstance(node, _Control):
                error = "_BR" if node.kind == "break" else "_ST"
                lines.append(f"{pad}raise {error}()")
            else:
                raise TypeError(f"cannot compile {type(node).__name__}")

    def foreach(self, node: _Foreach, lines: list[str], pad: str, depth: int) -> None:
        """``#foreach``: the loop variable, ``$foreach`` and ``$velocityCount`` are set for
        the body and restored afterwards; those held in locals cost a local each, those
        nothing reads cost nothing."""
        items, index, size, item = (self.new(n) for n in ("items", "i", "n", "x"))
        iterable = node.iterable
        if isinstance(iterable, _ListExpr) and all(
                isinstance(e, _Literal) and isinstance(e.value, _IMMUTABLE)
                for e in iterable.items):
            # a literal list of literals: the same tuple every time
            source = self.const(tuple(e.value for e in iterable.items))  # type: ignore[attr-defined]
        else:
            t = self.new("t")
            source = f"(list({t}) if type({t} := {self.expr(iterable)}) is list else _IT({t}))"
        lines.append(f"{pad}{items} = {source}")
        lines.append(f"{pad}if {items} is not None:")
        lines.append(f"{pad} if len({items}) > LIMIT: {items} = {items}[:LIMIT]")
        lines.append(f"{pad} {size} = len({items})")
        used = self.names.used
        restore: list[tuple[str, str]] = []   # (saved local, variable): V-held ones
        local_restore: list[tuple[str, str]] = []   # (saved local, local)
        per_item: list[str] = []

        def keep(name: str) -> None:
            saved = self.new("sv")
            if self.in_main and name in self.local:
                lines.append(f"{pad} {saved} = {self.local[name]}")
                local_restore.append((saved, self.local[name]))
            else:
                self.needs_v.add(name)
                self.writes_v = True
                lines.append(f"{pad} {saved} = V.get({name!r}, _NO)")
                restore.append((saved, name))

        var_local = self.in_main and node.var in self.local
        keep(node.var)
        loop_item = self.local[node.var] if var_local else item
        if not var_local:
            per_item.append(f"if {item} is None: V.pop({node.var!r}, None)")
            per_item.append(f"else: V[{node.var!r}] = {item}")
        static = self.in_main and self.foreach_static
        if "foreach" in used and not static:
            keep("foreach")
            state = self.new("st")
            lines.append(f"{pad} {state} = {self.assign('foreach', f'_FS({size})')}")
            per_item.append(f"{state}.index = {index}")
        if "velocityCount" in used:
            keep("velocityCount")
            per_item.append(self.assign("velocityCount", f"{index} + 1"))
        inner = pad + ("   " if restore else "  ")
        if restore:
            lines.append(f"{pad} try:")
        lines.append(f"{inner[:-1]}for {index}, {loop_item} in enumerate({items}):")
        lines.append(f"{inner}if size > MAX: rc.over()")
        # the clock every 16 iterations: a body between two reads is bounded
        # (template size, string bound; inner loops read it themselves)
        lines.append(f"{inner}if not {index} & 15 and _MONO() > DL: _LATE(rc)")
        lines.extend(f"{inner}{line}" for line in per_item)
        # always: a #break may also come from an interpolated string
        lines.append(f"{inner}try:")
        if static:
            self.loops.append((index, size))
        try:
            self.block(node.body, lines, len(inner) + 1)
        finally:
            if static:
                self.loops.pop()
        lines.append(f"{inner} pass")
        lines.append(f"{inner}except _BR:")
        lines.append(f"{inner} break")
        if restore:
            lines.append(f"{pad} finally:")
            for saved, key in restore:  # as they were before the loop
                lines.append(f"{pad}  if {saved} is _NO: V.pop({key!r}, None)")
                lines.append(f"{pad}  else: V[{key!r}] = {saved}")
        for saved, local in local_restore:
            lines.append(f"{pad} {local} = {saved}")

    def props(self, code: str, names: Sequence[str]) -> str:
        """``code`` followed through the properties ``names``, a map's key inline."""
        for name in names:
            if code.isidentifier():
                code = (f"({code}.get({name!r}) if type({code}) is dict "
                        f"else _P({code}, {name!r}))")
                continue
            t = self.new("t")
            code = (f"({t}.get({name!r}) if type({t} := {code}) is dict "
                    f"else _P({t}, {name!r}))")
        return code

    def static_foreach(self, e: _Ref) -> str | None:
        """``$foreach.<name>`` over the innermost loop's index, when that is what it is."""
        if (self.in_main and self.foreach_static and self.loops and e.name == "foreach"
                and e.steps and e.steps[0][0] == _PROP and e.steps[0][1] in _FOREACH_STATIC):
            index, size = self.loops[-1]
            return _FOREACH_STATIC[e.steps[0][1]].replace("I", index).replace("N", size)
        return None

    def ref(self, e: _Ref) -> str:
        steps = e.steps
        if e.name == "foreach" and steps and steps[0][0] == _PROP \
                and steps[0][1] in _FOREACH_INLINE:
            static = self.static_foreach(e)
            if static is not None:
                return self.steps(static, steps[1:])
            # $foreach.hasNext and friends: read from the loop state directly
            root = self.new("t")
            fast = _FOREACH_INLINE[steps[0][1]].replace("S", root)
            code = (f"({fast} if type({root} := {self.root(e.name)}) is _FS "
                    f"else _P({root}, {steps[0][1]!r}))")
            return self.steps(code, steps[1:])
        if self.in_main and e.name in self.held:
            # a deferred call's result read: its reader while the root is held
            count = 0
            while count < len(steps) and steps[count][0] == _PROP:
                count += 1
            reader, count = self.deferred[e.name][3][tuple(n for _k, n, _a in steps[:count])]
            held = self.held[e.name]
            generic = self.steps(self.local[e.name], steps[:count])
            return self.steps(f"({self.const(reader)}({held}) if {held} is not None "
                              f"else {generic})", steps[count:])
        if self.in_main and e.name in self.guards and steps:
            typed = self.typed(e.name, steps)
            if typed is not None:
                fast, count = typed
                generic = self.steps(self.local[e.name], steps[:count])
                return self.steps(f"({fast} if {self.guards[e.name][0]} else {generic})",
                                  steps[count:])
        return self.steps(self.root(e.name), steps)

    def typed(self, name: str, steps: list[tuple[int, str, Any]]) -> tuple[str, int] | None:
        """The code for the first steps of ``$name...`` when ``name`` has its declared
        type, and how many steps it covers; ``None`` when the type compiles none."""
        kind = self.guards[name][1]
        base = self.local[name]
        if steps[0][0] == _PROP:
            count = 0
            while count < len(steps) and steps[count][0] == _PROP:
                count += 1
            getter = kind.vtl_compile_get(tuple(n for _k, n, _a in steps[:count]))
            if getter is None:
                return None
            return f"{self.const(getter)}({base})", count
        if steps[0][0] == _CALL:
            _kind, method, args = steps[0]
            shape = tuple(a.value if isinstance(a, _Literal) else COMPUTED for a in args)
            call = kind.vtl_compile_call(method, shape)
            if call is None:
                return None
            code = f"{self.const(call)}({', '.join([base, *(self.expr(a) for a in args)])})"
            t = self.new("t")
            # the string bound, as for every method result
            return (f"({t} if type({t} := {code}) is not str or len({t}) <= MAX "
                    f"else rc.check_string({t}))"), 1
        return None

    def typed_set(self, target: _Ref) -> Callable[[Any, Any], None] | None:
        """The setter a typed root's class compiles for ``#set($root.a.b = ...)``
        (properties only, at least two; :meth:`VtlObject.vtl_compile_set`), if any."""
        if not (self.in_main and target.name in self.guards and len(target.steps) > 1
                and all(kind == _PROP for kind, _n, _a in target.steps)):
            return None
        kind = self.guards[target.name][1]
        return kind.vtl_compile_set(tuple(n for _k, n, _a in target.steps[:-1]),
                                    target.steps[-1][1])

    def steps(self, code: str, steps: Sequence[tuple[int, str, Any]]) -> str:
        """``code`` followed through ``steps``."""
        run = 0
        while run < len(steps) and steps[run][0] == _PROP:
            run += 1
        if run >= 2:
            # $root.a.b: inline reads when the root is a map, else one call for
            # the whole chain (an AWS object resolves it in one lookup)
            names = tuple(name for _k, name, _a in steps[:run])
            if code.isidentifier():
                root, test = code, code
            else:
                root = self.new("t")
                test = f"{root} := {code}"
            inline = self.props(f"{root}.get({names[0]!r})", names[1:])
            code = f"({inline} if type({test}) is dict else _PP({root}, {names!r}))"
            steps = steps[run:]
        for kind, name, arg in steps:
            if kind == _PROP:
                # a map's key without a call; anything else through the helper
                code = self.props(code, (name,))
            elif kind == _CALL:
                args = "[" + ", ".join(self.expr(a) for a in arg) + "]"
                if all(_is_pure(a) for a in arg):
                    code = f"_C({code}, {name!r}, {args}, rc)"
                else:
                    code = f"_CL({code}, {name!r}, lambda: {args}, rc)"
            else:
                key = self.expr(arg)
                if not _is_pure(arg):
                    key = f"(lambda: {key})"
                code = f"_I({code}, {key})"
        return code

    def expr(self, e: _Expr) -> str:
        if isinstance(e, _Literal):
            value = e.value
            if value is None or isinstance(value, (bool, str)) or (
                    isinstance(value, int)):
                return repr(value)
            return self.const(value)
        if isinstance(e, _Ref):
            return self.ref(e)
        if isinstance(e, _Interpolated):
            return f"{self.function(e.nodes, string=True)}(rc, V)"
        if isinstance(e, _ListExpr):
            return "_JL([" + ", ".join(self.expr(i) for i in e.items) + "])"
        if isinstance(e, _MapExpr):
            return "{" + ", ".join(f"{self.expr(k)}: {self.expr(v)}"
                                   for k, v in e.items) + "}"
        if isinstance(e, _Not):
            return f"(not _T({self.expr(e.operand)}))"
        if isinstance(e, _Binary):
            left, right = self.expr(e.left), self.expr(e.right)
            if e.op == "&&":
                return f"(_T({left}) and _T({right}))"
            if e.op == "||":
                return f"(_T({left}) or _T({right}))"
            if e.op in ("==", "!="):
                equal = f"_EQ({left}, {right})"
                for one, other in ((e.right, left), (e.left, right)):
                    if isinstance(one, _Literal) and type(one.value) is str:
                        # against a string: plain == when the other side is one too
                        # (_equals is symmetric; the literal has no effects)
                        t = self.new("t")
                        equal = (f"(({t} == {one.value!r}) if type({t} := {other}) is str "
                                 f"else _EQ({t}, {one.value!r}))")
                        break
                return equal if e.op == "==" else f"(not {equal})"
            if e.op in ("<", ">", "<=", ">="):
                return f"_CMP({e.op!r}, {left}, {right})"
            return f"_AR({e.op!r}, {left}, {right}, rc)"
        # ranges, negation and anything rare: evaluate through the tree node
        return f"{self.fallback(e)}.eval(rc)"


def _compile_tree(nodes: Sequence[_Node], types: Mapping[str, type[VtlObject]] | None = None
                  ) -> tuple[Callable[[_Render, dict[str, Any]], None] | None, bool,
                             Callable[..., None] | None]:
    """The template as a Python function, or ``None`` when Python cannot compile it
    (nesting beyond its static-block limit): the interpreter then renders it; whether
    the function may change the variables dict it is given; and its typed entry (the
    typed roots as arguments, see :meth:`Template.render_typed`), if it has one.

    No template text reaches the generated source as code: names, method names and
    string keys go in through ``repr`` of identifiers, every other value (static text
    included) through a global constant ``_k<i>`` bound to it.
    """
    dynamic: frozenset[str] = frozenset()
    try:
        while True:
            compiler = _Compiler(nodes, dynamic, types or {})
            main = compiler.main(nodes)
            if compiler.needs_v <= dynamic:
                break
            # names an interpolated string or the interpreter also reads: compile again
            # with them kept in the variables dict (a second pass adds no new ones)
            dynamic = dynamic | frozenset(compiler.needs_v)
        source = "\n\n".join(compiler.functions)
        namespace: dict[str, Any] = dict(_HELPERS)
        namespace.update((f"_k{i}", value) for i, value in enumerate(compiler.consts))
        exec(compile(source, "<vtl template>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None, True, None
    function: Callable[[_Render, dict[str, Any]], None] = namespace[main]
    typed = namespace[compiler.typed_entry] if compiler.typed_entry is not None else None
    return function, compiler.writes_v, typed


# -- partial evaluation ------------------------------------------------------------------------
#
# A caller that knows some values are the same on every render of a template for a while (a
# route's stage name and resource path, its stage variables) gets a specialised copy with
# them folded in: references to them become literals, adjacent text merges, ``#if`` on a
# constant keeps only its branch, and a ``#foreach`` over a literal list whose body then
# depends on nothing but the loop becomes the text it renders.  The result is an ordinary
# tree, compiled as any other, so every bound is enforced by the same code.

#: The most items and the most characters an unrolled ``#foreach`` may have (beyond that
#: the loop is kept: its text would only make the compiled template larger).
_UNROLL_ITEMS = 64
_UNROLL_CHARS = 16 * 1024

#: Operators folded when both sides are literals (pure; no bound can break).
_FOLD_OPS = frozenset({"==", "!=", "<", ">", "<=", ">=", "&&", "||"})

#: Literal values that render as constant text.
_CONSTANT_TEXT = (str, int, bool)


def foldable_roots(nodes: Sequence[_Node], constants: Mapping[str, Mapping[
        tuple[str, ...], Any]], writable: Mapping[str, frozenset[str]]) -> set[str]:
    """The roots of ``constants`` whose values a template cannot change: never assigned
    or a loop variable, never referenced bare or through a call or index (which could
    hand the object to code that changes it), and never the target of ``#set`` except
    through a first property in ``writable[root]`` (``$context.requestOverride...``)."""
    ok = set(constants)
    for obj in _walk(nodes):
        if isinstance(obj, _Ref) and obj.name in ok:
            steps = obj.steps
            if not steps or steps[0][0] != _PROP or (
                    steps[0][1] not in writable.get(obj.name, ())
                    and any(kind != _PROP for kind, _n, _a in steps)):
                ok.discard(obj.name)
        elif isinstance(obj, _Set):
            target = obj.target
            if target.name in ok and not (
                    target.steps and target.steps[0][0] == _PROP
                    and target.steps[0][1] in writable.get(target.name, ())):
                ok.discard(target.name)
        elif isinstance(obj, _Foreach):
            ok.discard(obj.var)
    return ok


class _Folder:
    """Folds a tree against constant values (see :meth:`Template.specialised`)."""

    def __init__(self, constants: Mapping[str, Mapping[tuple[str, ...], Any]]) -> None:
        self.constants = constants
        #: the unrolled loops around the code being folded: (variable, item, index, total)
        self.loops: list[tuple[str, Any, int, int]] = []
        #: the most items of an unrolled loop (the render's ``foreach_limit`` must allow it)
        self.unrolled = 0

    def constant(self, e: _Ref) -> Any:
        """The value of ``e`` when it is known, else :data:`MISSING`."""
        steps = e.steps
        for var, item, index, total in reversed(self.loops):
            if e.name == "foreach" and len(steps) == 1 and steps[0][0] == _PROP:
                name = steps[0][1]
                if name not in _FOREACH_STATIC:
                    return MISSING
                return {"hasNext": index + 1 < total, "index": index, "count": index + 1,
                        "first": index == 0, "last": index + 1 >= total}[name]
            if e.name == "velocityCount" and not steps:
                return index + 1
            if e.name == var:
                return item if not steps else MISSING
            if e.name in ("foreach", "velocityCount"):
                return MISSING
        known = self.constants.get(e.name)
        if known is None or not steps or any(kind != _PROP for kind, _n, _a in steps):
            return MISSING
        return known.get(tuple(name for _k, name, _a in steps), MISSING)

    def expr(self, e: _Expr) -> _Expr:
        if isinstance(e, _Ref):
            value = self.constant(e)
            if value is not MISSING:
                return _Literal(value)
            if any(kind != _PROP for kind, _n, _a in e.steps):
                steps = [(kind, name, [self.expr(a) for a in arg] if kind == _CALL
                          else self.expr(arg) if kind == _INDEX else arg)
                         for kind, name, arg in e.steps]
                return _Ref(e.name, steps, e.source)
            return e
        if isinstance(e, _Interpolated):
            nodes = self.block(e.nodes)
            if all(isinstance(n, _Text) for n in nodes):
                return _Literal("".join(n.text for n in nodes))  # type: ignore[attr-defined]
            return _Interpolated(nodes)
        if isinstance(e, _ListExpr):
            return _ListExpr([self.expr(i) for i in e.items])
        if isinstance(e, _MapExpr):
            return _MapExpr([(self.expr(k), self.expr(v)) for k, v in e.items])
        if isinstance(e, _Not):
            operand = self.expr(e.operand)
            if isinstance(operand, _Literal):
                return _Literal(not _truthy(operand.value))
            return _Not(operand)
        if isinstance(e, _Negate):
            return _Negate(self.expr(e.operand))
        if isinstance(e, _RangeExpr):
            return _RangeExpr(self.expr(e.start), self.expr(e.end))
        if isinstance(e, _Binary):
            left, right = self.expr(e.left), self.expr(e.right)
            if e.op in _FOLD_OPS and isinstance(left, _Literal) \
                    and isinstance(right, _Literal) \
                    and isinstance(left.value, _IMMUTABLE) \
                    and isinstance(right.value, _IMMUTABLE):
                try:
                    return _Literal(_Binary(e.op, left, right).eval(
                        _Render({}, DEFAULT_LIMITS)))
                except TemplateError:
                    pass  # the render raises it
            return _Binary(e.op, left, right)
        return e

    def block(self, nodes: Sequence[_Node]) -> list[_Node]:
        """``nodes`` folded, adjacent text merged."""
        out: list[_Node] = []
        for node in nodes:
            self.node(node, out)
        merged: list[_Node] = []
        for node in out:
            if isinstance(node, _Text) and merged and isinstance(merged[-1], _Text):
                merged[-1] = _Text(merged[-1].text + node.text)
            elif not (isinstance(node, _Text) and not node.text):
                merged.append(node)
        return merged

    def node(self, node: _Node, out: list[_Node]) -> None:
        if isinstance(node, _Output):
            value = self.constant(node.ref)
            if value is None:
                return  # a null renders as nothing
            if isinstance(value, _CONSTANT_TEXT):
                out.append(_Text(to_text(value)))
                return
            ref = self.expr(node.ref)
            if isinstance(ref, _Ref):
                out.append(_Output(ref))
            else:  # a literal the text form of which is not plain
                out.append(_Output(node.ref))
        elif isinstance(node, _Set):
            target = node.target
            target = _Ref(target.name, self.expr(_Ref("", target.steps, "")).steps  # type: ignore[attr-defined]
                          if target.steps else [], target.source)
            out.append(_Set(target, self.expr(node.value)))
        elif isinstance(node, _If):
            branches: list[tuple[_Expr, list[_Node]]] = []
            for condition, body in node.branches:
                folded = self.expr(condition)
                if isinstance(folded, _Literal):
                    if not _truthy(folded.value):
                        continue  # never taken
                    if not branches:  # always taken, and nothing before it
                        out.extend(self.block(body))
                        return
                    out.append(_If(branches, self.block(body)))
                    return
                branches.append((folded, self.block(body)))
            otherwise = self.block(node.otherwise) if node.otherwise is not None else None
            if not branches:
                out.extend(otherwise or ())
            else:
                out.append(_If(branches, otherwise))
        elif isinstance(node, _Foreach):
            unrolled = self.unroll(node)
            if unrolled is not None:
                out.append(unrolled)
            else:
                out.append(_Foreach(node.var, self.expr(node.iterable), self.block(node.body)))
        else:
            out.append(node)

    def unroll(self, node: _Foreach) -> _Text | None:
        """A loop over a literal list whose body folds to text for every item: that text
        (``None`` when it is not one)."""
        iterable = self.expr(node.iterable)
        if not (isinstance(iterable, _ListExpr) and len(iterable.items) <= _UNROLL_ITEMS
                and all(isinstance(i, _Literal) and isinstance(i.value, _CONSTANT_TEXT)
                        for i in iterable.items)):
            return None
        values = [i.value for i in iterable.items]  # type: ignore[attr-defined]
        parts: list[str] = []
        chars = 0
        for index, value in enumerate(values):
            self.loops.append((node.var, value, index, len(values)))
            try:
                body = self.block(node.body)
            finally:
                self.loops.pop()
            if not all(isinstance(n, _Text) for n in body):
                return None
            text = "".join(n.text for n in body)  # type: ignore[attr-defined]
            chars += len(text)
            if chars > _UNROLL_CHARS:
                return None
            parts.append(text)
        self.unrolled = max(self.unrolled, len(values))
        return _Text("".join(parts))


# -- the public API ----------------------------------------------------------------------------


class Template:
    """A parsed template; :meth:`render` it as often as needed (it keeps no state).

    ``types`` names the class of root variables the caller always passes (``$context``
    is a ``ContextObject``): the compiled form tests that once per render and then calls
    what the class compiles for its properties and methods (:meth:`VtlObject.
    vtl_compile_get`), with the generic path kept for anything else.

    :raises TemplateSyntaxError: the source cannot be parsed, or is larger than
        :data:`MAX_TEMPLATE_BYTES`.
    """

    __slots__ = ("_copy", "_function", "_general", "_typed", "_typed_names", "_types",
                 "_unrolled", "nodes", "reads", "source")

    def __init__(self, source: str, *, max_bytes: int = MAX_TEMPLATE_BYTES,
                 compiled: bool = True,
                 types: Mapping[str, type[VtlObject]] | None = None) -> None:
        if len(source.encode("utf-8")) > max_bytes:
            raise TemplateSyntaxError(
                f"the template is larger than {max_bytes // 1024} KB (API Gateway's limit)")
        self.source = source
        parser = _Parser(source)
        try:
            self.nodes, _ = parser.parse_block(())
        except RecursionError:
            raise TemplateSyntaxError("template nests too deeply", source,
                                      parser.pos) from None
        self._types = types
        self._typed_names = tuple(sorted(types or ()))
        #: the root names the template reads or sets anywhere (strings included): a
        #: caller may leave the others out of the variables
        self.reads = frozenset(names_in(_Interpolated(self.nodes)))
        self._function, self._copy, self._typed = _compile_tree(self.nodes, types) \
            if compiled else (None, True, None)
        self._general: Template | None = None
        self._unrolled = 0

    def specialised(self, constants: Mapping[str, Mapping[tuple[str, ...], Any]],
                    writable: Mapping[str, frozenset[str]] | None = None) -> Template:
        """This template with values known in advance folded in (partial evaluation).

        ``constants`` maps a root name to ``{(property, ...): value}``: ``$root.a.b``
        renders ``value`` on every render of the copy.  A root is folded only when the
        template cannot change what it reads (:func:`foldable_roots`; ``writable`` names
        the first properties through which ``#set`` may write without touching them).
        Only immutable values are folded.  The copy renders exactly what this template
        renders with variables holding those values; a render whose ``foreach_limit`` is
        below a loop the copy unrolled is rendered by this template instead.
        """
        known = {root: {names: value for names, value in values.items()
                        if isinstance(value, _IMMUTABLE)}
                 for root, values in constants.items()}
        roots = foldable_roots(self.nodes, known, writable or {})
        folder = _Folder({root: known[root] for root in roots})
        copy = Template.__new__(Template)
        copy.source = self.source
        copy.nodes = folder.block(self.nodes)
        copy.reads = frozenset(names_in(_Interpolated(copy.nodes)))
        copy._types = self._types
        copy._typed_names = self._typed_names
        copy._function, copy._copy, copy._typed = _compile_tree(copy.nodes, self._types) \
            if self._function is not None else (None, True, None)
        copy._general = self
        copy._unrolled = folder.unrolled
        return copy

    @property
    def is_compiled(self) -> bool:
        """True when rendering runs generated Python rather than the tree interpreter."""
        return self._function is not None

    def render(self, variables: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
        """Render with ``variables`` as the top-level names (``#set`` adds to a copy).

        :raises TemplateLimitError: a bound of ``limits`` was broken.
        :raises TemplateRenderError: anything else went wrong.
        """
        return self.render_typed((), (), variables, limits)

    def render_typed(self, names: tuple[str, ...], roots: tuple[Any, ...],
                     variables: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> str:
        """:meth:`render` with the typed roots given apart: ``roots`` holds the values of
        ``names``; when ``names`` are the sorted names of ``types``, each value must be
        an instance of exactly its declared type (the caller vouches for that: the
        typed calls are made without testing it).  ``variables`` holds the other names.
        Renders what :meth:`render` renders with all of them in one dict, without that
        dict and the per-render type tests.
        """
        if self._unrolled > limits.foreach_limit and self._general is not None:
            return self._general.render_typed(names, roots, variables, limits)
        function = self._typed
        if function is None or names != self._typed_names:
            # the general entry, every name in the variables
            if names:
                variables = dict(variables)
                variables.update(zip(names, roots, strict=True))
            function, roots = self._function, ()
        # a copy for #set to change, unless the compiled form changes none; the render
        # state made here with the slots _Render.__init__ sets (one frame less a render)
        rc = _new_render(_Render)
        rc.vars = dict(variables) if self._copy else variables
        rc.out = []
        rc.size = 0
        rc.limits = limits
        rc.deadline = _monotonic() + limits.max_seconds
        try:
            try:
                if function is not None:
                    function(rc, rc.vars, *roots)
                else:
                    _render_all(self.nodes, rc)
            except (_Stop, _Break):
                pass
            if rc.size > limits.max_output:
                rc.over()
        except Exception as e:  # a bug or an odd value: never a bare exception
            _render_failed(e)
        return "".join(rc.out)

    def typed_renderer(self, names: tuple[str, ...], limits: Limits = DEFAULT_LIMITS
                       ) -> Callable[..., str]:
        """``render_typed`` with ``names`` and ``limits`` fixed, as one function
        ``(variables, *roots) -> str`` (``roots`` hold the values of ``names``, as
        :meth:`render_typed` takes them).

        What each :meth:`render_typed` call works out from the template and the limits
        (which entry, whether the variables need a copy, the bounds) is worked out here,
        once: a caller that renders one template many times (the mapping plugin keeps
        one per route, stage and method) keeps the function.
        """
        function = self._typed
        if function is None or names != self._typed_names or (
                self._unrolled > limits.foreach_limit and self._general is not None):

            def general(variables: dict[str, Any], *roots: Any) -> str:
                return self.render_typed(names, roots, variables, limits)
            return general
        return _renderer_factory(len(names))(function, self._copy, limits)


def render(source: str, variables: dict[str, Any] | None = None,
           limits: Limits = DEFAULT_LIMITS) -> str:
    """Parse and render once (tests and one-off use)."""
    return Template(source).render(variables or {}, limits)


def iter_nodes(template: Template) -> Iterable[object]:
    """The top-level nodes (for debugging and tests)."""
    return iter(template.nodes)
