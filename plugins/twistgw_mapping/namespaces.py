"""The objects AWS hands mapping templates: ``$input``, ``$util``, ``$context``,
``$stageVariables`` (aws-apigw-spec.md §3.6), over :mod:`twistgw.vtl`.

They reproduce what templates observe on AWS, where these are Java objects: JSON objects
from ``$input.path`` are maps that render ``{k=v}``, arrays render as compact JSON, an
empty body is ``{}``, ``$input.params(x)`` searches path, then query string, then header.
``$context`` resolves names through :func:`twistgw.variables.getter_for`, the resolver the
access log and gateway responses use, so a variable means the same thing everywhere; its
``requestOverride`` and ``responseOverride`` maps live in :class:`Overrides`, which the
plugin keeps in the request's stash so the response template sees what the request
template set.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, unquote_plus

import attrs

from twistgw.pipeline import INGRESS_DROPPED_HEADERS
from twistgw.variables import Finish, getter_for, names
from twistgw.vtl import MISSING, JsonList, TemplateRenderError, VtlObject, to_json, to_text

if TYPE_CHECKING:
    from twistgw import Context

__all__ = ["Overrides", "OverrideMap", "InputObject", "UtilObject", "ContextObject", "UTIL",
           "parse_json", "json_path", "template_variables", "escape_javascript",
           "url_encode"]


def parse_json(text: str) -> Any:
    """JSON as the Java objects AWS gives templates (objects are maps; arrays plain
    lists, which :mod:`twistgw.vtl` renders as JSON).

    :raises TemplateRenderError: not JSON (or nested beyond Python's parser).
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise TemplateRenderError(f"invalid JSON: {str(e)[:200]}") from None


# -- JSONPath (the subset templates use) -------------------------------------------------------

_STEP_RE = re.compile(
    r"""\.\.(?P<deep>[A-Za-z_$][\w$-]*|\*)"""
    r"""|\.(?P<name>[A-Za-z_$@][\w$@-]*|\*)"""
    r"""|\[\s*(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<idx>-?\d+)|(?P<star>\*))\s*\]""")


@attrs.frozen
class _Path:
    steps: tuple[tuple[str, Any], ...]
    definite: bool


_PATHS: dict[str, _Path] = {}


def _compile_path(path: str) -> _Path:
    found = _PATHS.get(path)
    if found is not None:
        return found
    text = path.strip()
    if not text.startswith("$"):
        text = "$." + text if text else "$"
    pos = 1
    steps: list[tuple[str, Any]] = []
    while pos < len(text):
        m = _STEP_RE.match(text, pos)
        if m is None:
            raise TemplateRenderError(f"unsupported JSONPath {path!r}")
        pos = m.end()
        if m.group("deep") is not None:
            steps.append(("deep", m.group("deep")))
        elif m.group("name") is not None:
            name = m.group("name")
            steps.append(("all", None) if name == "*" else ("key", name))
        elif m.group("sq") is not None or m.group("dq") is not None:
            steps.append(("key", m.group("sq") if m.group("sq") is not None
                          else m.group("dq")))
        elif m.group("idx") is not None:
            steps.append(("index", int(m.group("idx"))))
        else:
            steps.append(("all", None))
    compiled = _Path(tuple(steps), all(kind in ("key", "index") for kind, _ in steps))
    if len(_PATHS) < 1024:
        _PATHS[path] = compiled
    return compiled


def _descend(value: Any, name: str) -> list[Any]:
    out: list[Any] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if name == "*":
                out.extend(node.values())
            elif name in node:
                out.append(node[name])
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            if name == "*":
                out.extend(node)
            stack.extend(reversed(node))
    return out


def json_path(document: Any, path: str) -> Any:
    """Evaluate ``path`` like Jayway JsonPath: one value (``None`` when missing) for a
    definite path, a list of matches for one with ``*`` or ``..``."""
    compiled = _compile_path(path)
    current = [document]
    for kind, arg in compiled.steps:
        nxt: list[Any] = []
        for node in current:
            if kind == "key":
                if isinstance(node, dict) and arg in node:
                    nxt.append(node[arg])
            elif kind == "index":
                if isinstance(node, list) and -len(node) <= arg < len(node):
                    nxt.append(node[arg])
            elif kind == "all":
                if isinstance(node, dict):
                    nxt.extend(node.values())
                elif isinstance(node, list):
                    nxt.extend(node)
            else:
                nxt.extend(_descend(node, arg))
        current = nxt
    if compiled.definite:
        return current[0] if current else None
    return JsonList(current)


# -- $input --------------------------------------------------------------------------------------


def _params(ctx: Context) -> dict[str, dict[str, str]]:
    headers: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for key, value in ctx.request.headers.items:
        lname = key.lower()
        if lname in INGRESS_DROPPED_HEADERS:
            continue
        headers[spelled.setdefault(lname, key)] = value
    return {"path": dict(ctx.path_params), "querystring": dict(ctx.request.query),
            "header": headers}


class InputObject(VtlObject):
    """``$input`` over a payload (the method request's, or the integration response's)
    with the method request's parameters."""

    __slots__ = ("_params", "_parsed", "ctx", "raw")

    def __init__(self, body: bytes, ctx: Context) -> None:
        self.raw = body
        self.ctx = ctx
        self._parsed: Any = MISSING
        self._params: dict[str, dict[str, str]] | None = None

    @property
    def body(self) -> str:
        """The payload as text; an empty payload is ``{}`` (recorded on AWS)."""
        return self.raw.decode("utf-8", "replace") if self.raw else "{}"

    def document(self) -> Any:
        """The payload parsed as JSON (once)."""
        if self._parsed is MISSING:
            self._parsed = parse_json(self.body)
        return self._parsed

    def params(self) -> dict[str, dict[str, str]]:
        """``{"path": {...}, "querystring": {...}, "header": {...}}`` (last values)."""
        if self._params is None:
            self._params = _params(self.ctx)
        return self._params

    def param(self, name: str) -> str:
        """Path, then query string, then header (case-insensitive); ``""`` if absent."""
        params = self.params()
        for kind in ("path", "querystring"):
            if name in params[kind]:
                return params[kind][name]
        headers = params["header"]
        if name in headers:
            return headers[name]
        lname = name.lower()
        for key, value in headers.items():
            if key.lower() == lname:
                return value
        return ""

    def vtl_get(self, name: str) -> Any:
        if name == "body":
            return self.body
        return None

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        if name == "params":
            if not args:
                return self.params()
            if len(args) == 1:
                return self.param(to_text(args[0]))
            return MISSING
        if name in ("path", "json") and len(args) == 1:
            path = to_text(args[0]) or "$"
            value = json_path(self.document(), path)
            if name == "path":
                return value
            return to_json("" if value is None else value)
        if name == "getBody" and not args:
            return self.body
        return MISSING


# -- $util ---------------------------------------------------------------------------------------

_JS_ESCAPES = {"'": "\\'", '"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b",
               "\n": "\\n", "\t": "\\t", "\f": "\\f", "\r": "\\r"}


_JS_TABLE = str.maketrans(_JS_ESCAPES)
_JS_OTHER = re.compile(r"[^\x20-\x7e]")


def _js_unicode(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04X}\\u{0xDC00 + (code & 0x3FF):04X}"
    return f"\\u{code:04X}"


def escape_javascript(text: str) -> str:
    """``StringEscapeUtils.escapeJavaScript`` (commons-lang 2): quotes, backslash and
    ``/`` escaped, control and non-ASCII characters as upper-case ``\\uXXXX`` (UTF-16)."""
    escaped = text.translate(_JS_TABLE)
    return _JS_OTHER.sub(_js_unicode, escaped)


def url_encode(text: str) -> str:
    """``java.net.URLEncoder.encode(s, "UTF-8")``: space is ``+``; ``.-*_`` kept."""
    return quote_plus(text, safe="*").replace("~", "%7E")


class UtilObject(VtlObject):
    """``$util``; a ``null`` argument gives ``null``."""

    __slots__ = ()

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        if len(args) != 1:
            return MISSING
        value = args[0]
        if value is None:
            return None
        if name == "parseJson":
            return parse_json(to_text(value))
        text = to_text(value)
        if name == "escapeJavaScript":
            return escape_javascript(text)
        if name == "urlEncode":
            return url_encode(text)
        if name == "urlDecode":
            return unquote_plus(text, errors="replace")
        if name == "base64Encode":
            return base64.b64encode(text.encode("utf-8")).decode("ascii")
        if name == "base64Decode":
            try:
                return base64.b64decode(text.encode("utf-8"), validate=False).decode(
                    "utf-8", "replace")
            except (binascii.Error, ValueError):
                raise TemplateRenderError("base64Decode: invalid base64") from None
        return MISSING


UTIL = UtilObject()


# -- $context ------------------------------------------------------------------------------------


class OverrideMap(dict[Any, Any]):
    """A map of overrides that refuses a second assignment of one key in one template
    (AWS answers 5XX then, apigateway-override-request-response-parameters)."""

    __slots__ = ("assigned",)

    def __init__(self) -> None:
        super().__init__()
        self.assigned: set[Any] = set()

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self.assigned:
            raise TemplateRenderError(f"the override {key!r} is set twice in one template")
        self.assigned.add(key)
        super().__setitem__(key, value)


@attrs.define
class Overrides:
    """``$context.requestOverride`` and ``$context.responseOverride`` of one request.

    Maps, so every VTL assignment form works on them (``#set(... .header.X = v)``,
    ``.put``, ``["k"]``) and custom keys survive, as recorded on AWS.
    """

    request: dict[str, Any] = attrs.field(factory=lambda: {
        "header": OverrideMap(), "querystring": OverrideMap(), "path": OverrideMap()})
    response: dict[str, Any] = attrs.field(factory=lambda: _response_map())
    #: ``#set($context.custom = ...)``: kept for the response template too.
    custom: dict[str, Any] = attrs.field(factory=dict)

    def begin_template(self) -> None:
        """A new template starts: each override may be set once again."""
        for top in (self.request, self.response):
            if isinstance(top, OverrideMap):
                top.assigned.clear()
            for value in top.values():
                if isinstance(value, OverrideMap):
                    value.assigned.clear()


def _response_map() -> OverrideMap:
    response = OverrideMap()
    dict.__setitem__(response, "header", OverrideMap())
    return response


_PREFIXES = frozenset(
    ".".join(name.split(".")[:i]) for name in names() for i in range(1, name.count(".") + 1)
) | {"authorizer", "authorizer.claims"}


#: ``$context`` name -> its getter, :data:`_BRANCH` for a partial name, ``None`` if unknown.
_GETTER_CACHE: dict[str, Any] = {}
_BRANCH: Any = object()


class _ContextBranch(VtlObject):
    """A partial ``$context`` name (``$context.identity``) awaiting its next part."""

    __slots__ = ("prefix", "root")

    def __init__(self, root: ContextObject, prefix: str) -> None:
        self.root = root
        self.prefix = prefix

    def vtl_get(self, name: str) -> Any:
        return self.root.lookup(f"{self.prefix}.{name}")


class ContextObject(VtlObject):
    """``$context``: variables from :mod:`twistgw.variables` plus the override maps."""

    __slots__ = ("ctx", "fin", "overrides")

    def __init__(self, ctx: Context, overrides: Overrides, fin: Finish | None = None
                 ) -> None:
        self.ctx = ctx
        self.fin = fin
        self.overrides = overrides

    def lookup(self, name: str) -> Any:
        """The value of ``$context.<name>``; a branch object for a partial name."""
        getter = _GETTER_CACHE.get(name, MISSING)
        if getter is MISSING:
            getter = _BRANCH if name in _PREFIXES else getter_for(name)
            if len(_GETTER_CACHE) < 4096:
                _GETTER_CACHE[name] = getter
        if getter is None:
            return None
        if getter is _BRANCH:
            return _ContextBranch(self, name)
        value = getter(self.ctx, self.fin)
        if isinstance(value, (dict, list)) or value is None or isinstance(
                value, (str, int, float)):
            return value
        return to_text(value)

    def vtl_get(self, name: str) -> Any:
        if name == "requestOverride":
            return self.overrides.request
        if name == "responseOverride":
            return self.overrides.response
        if name in self.overrides.custom:
            return self.overrides.custom[name]
        return self.lookup(name)

    def vtl_set(self, name: Any, value: Any) -> None:
        if name in ("requestOverride", "responseOverride"):
            raise TemplateRenderError(f"$context.{name} cannot be replaced; set its keys")
        self.overrides.custom[to_text(name)] = value


def template_variables(ctx: Context, body: bytes, overrides: Overrides,
                       fin: Finish | None = None) -> dict[str, Any]:
    """The top-level names of a mapping template rendered for ``ctx`` over ``body``."""
    return {
        "input": InputObject(body, ctx),
        "util": UTIL,
        "context": ContextObject(ctx, overrides, fin),
        "stageVariables": dict(ctx.stage_variables),
    }
