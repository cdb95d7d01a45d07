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
import json.scanner
import re
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import quote_plus, unquote_plus

import attrs
import orjson

from twistgw import StashKey
from twistgw.pipeline import INGRESS_DROPPED_HEADERS
from twistgw.variables import ATTRIBUTES, Finish, getter_for, names
from twistgw.vtl import (
    COMPUTED,
    MISSING,
    JsonList,
    TemplateRenderError,
    VtlObject,
    set_property,
    to_json,
    to_text,
    walk,
)

if TYPE_CHECKING:
    from twistgw import Context

__all__ = ["OVERRIDES", "OVERRIDES_OR_NONE", "Overrides", "OverrideMap", "InputObject",
           "UtilObject", "ContextObject", "UTIL", "parse_json", "parse_json_body",
           "context_value", "json_path",
           "template_variables", "template_roots", "template_others", "ROOT_NAMES",
           "escape_javascript", "url_encode"]


def parse_json(text: str) -> Any:
    """JSON as the Java objects AWS gives templates (objects are maps; arrays plain
    lists, which :mod:`twistgw.vtl` renders as JSON).

    :raises TemplateRenderError: not JSON (or nested beyond Python's parser).
    """
    try:
        # json.loads without its Python layers: the C scanner between two skips of
        # blanks; anything else (an error, trailing text) goes through json.loads for
        # its exact error message
        # (the blanks measured only when there are some: stripping copies the text)
        start = 0 if text and text[0] not in _BLANKS else len(text) - len(text.lstrip(_BLANKS))
        value, end = _SCAN(text, start)
        if end == len(text) or len(text.rstrip(_BLANKS)) == end:  # nothing but blanks after
            return value
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise TemplateRenderError(f"invalid JSON: {str(e)[:200]}") from None


def parse_json_body(raw: bytes) -> Any:
    """A payload parsed as :func:`parse_json` parses its UTF-8 text (invalid bytes as
    U+FFFD), an empty one as ``{}``.

    orjson first (about a third of the time on a typical body): what it accepts it
    parses as ``json.loads`` does, except integers past 64 bits, which it turns into
    floats; a body with 19 digits in a row (every such integer has them) therefore skips
    it.  Everything orjson refuses (invalid UTF-8, a lone surrogate, NaN, 1e400, nesting
    past 1024, any error) goes through :func:`parse_json` on the decoded text, which
    answers as ``json.loads``, errors included.  A hypothesis test holds the two paths
    equal over JSON-like text and raw bytes.
    """
    if not raw:
        return parse_json("{}")
    if raw.translate(_DIGITS_AS_ZERO).find(_NINETEEN_DIGITS) < 0:  # (find: ~70 ns less
        # than "not in", which acquires the needle's buffer on every call in 3.11)
        try:
            return _ORJSON_LOADS(raw)
        except ValueError:  # (orjson.JSONDecodeError)
            pass
    return parse_json(raw.decode("utf-8", "replace"))


#: :func:`parse_json_body`'s guard: every digit as ``0``, then a search for 19 of them
#: (two C passes, ~0.25 us on a 200-byte body, where a regex search took ~1.9 us).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_ORJSON_LOADS = orjson.loads

#: The C scanner ``json.loads`` ends in, and the blanks JSON allows around a value.
# (typeshed declares make_scanner's argument as make_scanner itself, not the decoder)
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder())  # type: ignore[arg-type]
_BLANKS = " \t\n\r"


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
    return _evaluate(document, _compile_path(path))


def _evaluate(document: Any, compiled: _Path) -> Any:
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


#: :data:`INGRESS_DROPPED_HEADERS` as clients usually spell them (lower case, and each
#: word capitalised): :func:`_params` deletes these by name.
_DROPPED_SPELLINGS = INGRESS_DROPPED_HEADERS | frozenset(
    "-".join(word.capitalize() for word in name.split("-"))
    for name in INGRESS_DROPPED_HEADERS)


def _params(ctx: Context) -> dict[str, dict[str, str]]:
    request = ctx.request
    lines = request.headers
    # (lower_names() is the index's keys view, typed only as an Iterable)
    index = lines.lower_names()
    if len(index) == len(lines.items):  # type: ignore[arg-type]
        # no name twice (the HTTP layer's index says so): each line is its own entry
        headers = dict(lines.items)
        dropped = INGRESS_DROPPED_HEADERS.intersection(index)
        if dropped:
            # the dropped names as usually spelled, deleted by name; any other spelling
            # (fewer found than the index holds) filters line by line
            found = _DROPPED_SPELLINGS.intersection(headers)
            if len(found) == len(dropped):
                for name in found:
                    del headers[name]
            else:
                headers = {k: v for k, v in lines.items
                           if k.lower() not in INGRESS_DROPPED_HEADERS}
    else:
        # the first spelling of a name with its last value
        headers = {}
        spelled: dict[str, str] = {}
        for key, value in lines.items:
            lname = key.lower()
            if lname in INGRESS_DROPPED_HEADERS:
                continue
            headers[spelled.setdefault(lname, key)] = value
    path = ctx.path_params  # (dict() of a read-only view goes through its Python
    # mapping protocol even when empty, the usual)
    return {"path": dict(path) if path else {}, "querystring": dict(request.query),
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
            self._parsed = parse_json_body(self.raw)
        return self._parsed

    def params(self) -> dict[str, dict[str, str]]:
        """``{"path": {...}, "querystring": {...}, "header": {...}}`` (last values)."""
        if self._params is None:
            self._params = _params(self.ctx)
        return self._params

    def param(self, name: str) -> str:
        """Path, then query string, then header (case-insensitive); ``""`` if absent."""
        params = self._params
        if params is None:
            # without building every map: the same answers, read from the request
            ctx = self.ctx
            found = ctx.path_params.get(name)
            if found is not None:
                return found
            for key, value in reversed(ctx.request.query):  # the last value wins
                if key == name:
                    return value
            if name.lower() in INGRESS_DROPPED_HEADERS:
                return ""
            return ctx.request.headers.get(name) or ""
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

    @classmethod
    def vtl_compile_get(cls, names: tuple[str, ...]) -> Callable[[Any], Any] | None:
        if names == ("body",):
            return _body
        return None

    @classmethod
    def vtl_compile_call(cls, name: str, args: tuple[Any, ...]) -> Callable[..., Any] | None:
        """``$input.params()``, ``.params(name)``, ``.path(p)``, ``.json(p)`` called
        directly; a literal JSONPath is parsed here, once."""
        if name == "params" and len(args) <= 1:
            if not args:
                return InputObject.params
            return InputObject.param if type(args[0]) is str else _param
        if name in ("path", "json") and len(args) == 1:
            arg = args[0]
            if arg is COMPUTED:
                return _path if name == "path" else _json
            try:
                compiled = _compile_path((arg if type(arg) is str else to_text(arg)) or "$")
            except TemplateRenderError:
                return None  # the render raises it
            if name == "path":
                if not compiled.steps:
                    return _document
                return lambda obj, _arg: _evaluate(obj.document(), compiled)

            def as_json(obj: InputObject, _arg: Any) -> str:
                value = _evaluate(obj.document(), compiled)
                return to_json("" if value is None else value)
            return as_json
        if name == "getBody" and not args:
            return _body
        return None

    @classmethod
    def vtl_compile_deferred(cls, name: str, args: tuple[Any, ...], names: tuple[str, ...]
                             ) -> tuple[Callable[[Any], Any], int] | None:
        """``#set($q = $input.params())`` with ``$q`` read only as ``$q.<map>.<name>``:
        that one value, read from the request, without making the three maps (about half
        their cost is allocating them).  Nothing else in such a template can reach the
        maps (:func:`twistgw.vtl.deferred_sets`), so they would hold the request's
        values."""
        if name != "params" or args or len(names) == 1:
            return None
        if not names:
            return _no_map, 0  # making the maps has no effects: it may be left out
        key = names[1]
        find = _PARAM_FINDERS.get(names[0])
        if find is None:
            return _no_map, 2

        def read(obj: InputObject) -> str | None:
            return find(obj.ctx, key)
        return read, 2

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        if name == "params":
            if not args:
                return self.params()
            if len(args) == 1:
                arg = args[0]
                return self.param(arg if type(arg) is str else to_text(arg))
            return MISSING
        if name in ("path", "json") and len(args) == 1:
            arg = args[0]
            path = (arg if type(arg) is str else to_text(arg)) or "$"
            value = json_path(self.document(), path)
            if name == "path":
                return value
            return to_json("" if value is None else value)
        if name == "getBody" and not args:
            return self.body
        return MISSING


def _path_param(ctx: Context, key: str) -> str | None:
    """``$input.params().path.<key>`` without the maps."""
    path = ctx.path_params
    return path.get(key) if path else None


def _query_param(ctx: Context, key: str) -> str | None:
    """``$input.params().querystring.<key>`` without the maps: the last value."""
    for name, value in reversed(ctx.request.query):
        if name == key:
            return value
    return None


def _header_param(ctx: Context, key: str) -> str | None:
    """``$input.params().header.<key>`` without the maps: the map holds a name as first
    spelled, with its last value, unless API Gateway drops it."""
    lname = key.lower()
    if lname in INGRESS_DROPPED_HEADERS:
        return None
    lines = ctx.request.headers
    last = lines.get(key)
    if last is None:
        return None
    for name, _value in lines.items:
        if name == key:
            return last
        if name.lower() == lname:
            return None  # first spelled otherwise: the map has no key spelled so
    return None


#: ``$input.params().<map>.<key>`` read from the request (:meth:`InputObject.
#: vtl_compile_deferred`).
_PARAM_FINDERS: dict[str, Callable[[Context, str], str | None]] = {
    "path": _path_param, "querystring": _query_param, "header": _header_param}


def _no_map(_obj: InputObject) -> None:
    return None  # $input.params().<anything else>.<key>: no such map


def _body(obj: InputObject) -> str:
    return obj.body


def _document(obj: InputObject, _arg: Any) -> Any:
    # InputObject.document written out (one call less for $input.path('$'))
    parsed = obj._parsed
    if parsed is MISSING:
        parsed = obj._parsed = parse_json_body(obj.raw)
    return parsed


def _param(obj: InputObject, arg: Any) -> str:
    return obj.param(arg if type(arg) is str else to_text(arg))


def _path(obj: InputObject, arg: Any) -> Any:
    return obj.vtl_call("path", [arg])


def _json(obj: InputObject, arg: Any) -> Any:
    return obj.vtl_call("json", [arg])


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
    escaped = _escape_javascript(UTIL, text)
    assert escaped is not None  # (text in, text out)
    return escaped


def url_encode(text: str) -> str:
    """``java.net.URLEncoder.encode(s, "UTF-8")``: space is ``+``; ``.-*_`` kept."""
    return quote_plus(text, safe="*").replace("~", "%7E")


class UtilObject(VtlObject):
    """``$util``; a ``null`` argument gives ``null``."""

    __slots__ = ()

    @classmethod
    def vtl_compile_call(cls, name: str, args: tuple[Any, ...]) -> Callable[..., Any] | None:
        if len(args) != 1:
            return None
        if name == "escapeJavaScript":
            return _escape_javascript
        if name in _UTIL_METHODS:
            return lambda obj, value: obj.vtl_call(name, [value])
        return None

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

_UTIL_METHODS = frozenset({"parseJson", "urlEncode", "urlDecode", "base64Encode",
                           "base64Decode"})


def _escape_javascript(_obj: UtilObject, value: Any) -> str | None:
    """``$util.escapeJavaScript(value)`` (:func:`escape_javascript`; ``null`` stays
    ``null``).  The table's escapes are one ``replace`` per escaped character present:
    an ``in`` test is a C scan without a method call, and most characters are absent
    (``translate`` would look every character up in the table).  The backslash goes
    first; no other replacement writes a character a later one replaces again."""
    if value is None:
        return None
    text = value if type(value) is str else to_text(value)
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "'" in text:
        text = text.replace("'", "\\'")
    if '"' in text:
        text = text.replace('"', '\\"')
    if "/" in text:
        text = text.replace("/", "\\/")
    if text.isascii() and text.isprintable():
        return text  # nothing outside \x20-\x7e: no control character, nothing for the regex
    text = (text.replace("\b", "\\b").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\f", "\\f").replace("\r", "\\r"))
    if text.isascii() and text.isprintable():
        return text  # those were the only ones
    return _JS_OTHER.sub(_js_unicode, text)


# -- $context ------------------------------------------------------------------------------------


class OverrideMap(dict[Any, Any]):
    """A map of overrides that refuses a second assignment of one key in one template
    (AWS answers 5XX then, apigateway-override-request-response-parameters).

    Made by :class:`Overrides`, which hands all its maps one set of what was assigned
    (``(id(map), key)``), so a new template forgets them all with one ``clear()``.
    """

    __slots__ = ("assigned",)

    assigned: set[tuple[int, Any]]

    def __setitem__(self, key: Any, value: Any) -> None:
        # (also written out in ContextObject.vtl_compile_set's setter)
        mark = (id(self), key)
        if mark in self.assigned:
            _set_twice(key)
        self.assigned.add(mark)
        dict.__setitem__(self, key, value)  # (super() costs a lookup per call)


#: In :attr:`Overrides.assigned` while the template that set :attr:`Overrides.pending`
#: renders (the header map it goes into does not exist yet, nor its id).
_PENDING_MARK = (0, None)


def _set_twice(key: Any) -> NoReturn:
    raise TemplateRenderError(f"the override {key!r} is set twice in one template")


class Overrides:
    """``$context.requestOverride`` and ``$context.responseOverride`` of one request.

    Maps, so every VTL assignment form works on them (``#set(... .header.X = v)``,
    ``.put``, ``["k"]``) and custom keys survive, as recorded on AWS.

    :ivar request: ``{"header": ..., "querystring": ..., "path": ...}``.
    :ivar response: ``{"header": ...}`` plus ``status`` once set.
    :ivar custom: ``#set($context.custom = ...)``: kept for the response template too.
    """

    __slots__ = ("_request", "_response", "assigned", "custom", "pending")

    def __init__(self, pending: tuple[str, Any] | None = None) -> None:
        """``pending``: the first override a template set is one request header
        (``(name, value)``, the usual); it goes into the maps only when they are made
        (:attr:`request`), until then it is all :attr:`pending` holds."""
        self.assigned: set[tuple[int, Any]] = set() if pending is None else {_PENDING_MARK}
        self.custom: dict[str, Any] = {}
        # each side's maps are made when a template first reads that side
        self._request: dict[str, Any] | None = None
        self._response: OverrideMap | None = None
        #: The one request header set before the request side's maps were made (then
        #: ``None``): the plugin applies it without making them.
        self.pending = pending

    @property
    def request(self) -> dict[str, Any]:
        found = self._request
        if found is None:
            header, query, path = OverrideMap(), OverrideMap(), OverrideMap()
            header.assigned = query.assigned = path.assigned = self.assigned
            found = self._request = {"header": header, "querystring": query, "path": path}
            pending = self.pending
            if pending is not None:
                # the pending header, set as the template set it: still marked as set
                # if that template is still rendering
                self.pending = None
                dict.__setitem__(header, pending[0], pending[1])
                if _PENDING_MARK in self.assigned:
                    self.assigned.discard(_PENDING_MARK)
                    self.assigned.add((id(header), pending[0]))
        return found

    @property
    def response(self) -> dict[str, Any]:
        found = self._response
        if found is None:
            found, header = OverrideMap(), OverrideMap()
            found.assigned = header.assigned = self.assigned
            dict.__setitem__(found, "header", header)
            self._response = found
        return found

    def made(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The request and response sides, ``None`` for a side no template read (so it
        holds nothing to apply)."""
        if self.pending is not None:
            self.request  # (makes the request side, with the pending header)  # noqa: B018
        return self._request, self._response

    def begin_template(self) -> None:
        """A new template starts: each override may be set once again."""
        self.assigned.clear()


_PREFIXES = frozenset(
    ".".join(name.split(".")[:i]) for name in names() for i in range(1, name.count(".") + 1)
) | {"authorizer", "authorizer.claims"}


#: ``$context`` name -> its getter, :data:`_BRANCH` for a partial name, ``None`` if unknown
#: (every fixed name filled in up front; ``authorizer.*`` ones as they are met).
_GETTER_CACHE: dict[str, Any] = {}
_BRANCH: Any = object()
_GETTER_CACHE.update({name: getter_for(name) for name in names()})
_GETTER_CACHE.update({prefix: _BRANCH for prefix in _PREFIXES})

#: The types a ``$context`` value keeps (anything else renders through ``to_text``).
_PLAIN = frozenset({str, int, float, bool, dict, list})

#: The request's overrides: created by the first template that touches them, read by
#: the plugin after each render and by the response template.
OVERRIDES: StashKey[Overrides] = StashKey("mapping.overrides")
#: The same key typed for ``Stash.get(..., None)``: one call on the request path.
OVERRIDES_OR_NONE = cast("StashKey[Overrides | None]", OVERRIDES)


class _ContextBranch(VtlObject):
    """A partial ``$context`` name (``$context.identity``) awaiting its next part."""

    __slots__ = ("prefix", "root")

    def __init__(self, root: ContextObject, prefix: str) -> None:
        self.root = root
        self.prefix = prefix

    def vtl_get(self, name: str) -> Any:
        return self.root.lookup(f"{self.prefix}.{name}")


class ContextObject(VtlObject):
    """``$context``: variables from :mod:`twistgw.variables` plus the override maps.

    The request's :class:`Overrides` are made (and put in the stash under
    :data:`OVERRIDES`) only when a template touches them, so a request whose templates
    never do costs nothing for them, and the plugin knows there is nothing to apply.
    """

    __slots__ = ("_begun", "_overrides", "ctx", "fin")

    def __init__(self, ctx: Context, fin: Finish | None = None,
                 overrides: Overrides | Any | None = MISSING) -> None:
        self.ctx = ctx
        self.fin = fin
        # ``overrides``: the request's, when the caller has just read them (one stash
        # read per render instead of two)
        self._overrides: Overrides | None = ctx.stash.get(OVERRIDES_OR_NONE, None) \
            if overrides is MISSING else overrides
        self._begun = False

    @property
    def overrides(self) -> Overrides:
        """The request's overrides, made on first use; a new template may set each
        override once again (:meth:`Overrides.begin_template`)."""
        found = self._overrides
        if found is None:
            found = self._overrides = Overrides()
            self.ctx.stash[OVERRIDES] = found
        if not self._begun:
            found.assigned.clear()  # Overrides.begin_template, without its call
            self._begun = True
        return found

    def lookup(self, name: str) -> Any:
        """The value of ``$context.<name>``; a branch object for a partial name."""
        getter = _getter(name)
        if getter is None:
            return None
        if getter is _BRANCH:
            return _ContextBranch(self, name)
        return _plain(getter(self.ctx, self.fin))

    def _shadowed(self, name: str) -> bool:
        """Whether ``name`` is an override map or a custom key rather than a variable."""
        if name == "requestOverride" or name == "responseOverride":
            return True
        found = self._overrides
        return found is not None and name in found.custom

    def vtl_get(self, name: str) -> Any:
        getter = _FIXED.get(name)
        if getter is not None:  # a variable, unless a custom key shadows it
            found = self._overrides
            if found is None or name not in found.custom:
                value = getter(self.ctx, self.fin)
                return value if value is None or type(value) in _PLAIN else _plain(value)
        if name == "requestOverride":
            return self.overrides.request
        if name == "responseOverride":
            return self.overrides.response
        found = self._overrides
        if found is not None and name in found.custom:
            return found.custom[name]
        return self.lookup(name)

    def vtl_get_path(self, names: tuple[str, ...]) -> Any:
        """``$context.identity.sourceIp`` in one lookup (the same answers as reading
        ``identity``, then ``sourceIp``)."""
        if self._shadowed(names[0]):
            return walk(self.vtl_get(names[0]), names[1:])
        plan = _PATH_PLANS.get(names)
        if plan is None:
            plan = _path_plan(names)
            if len(_PATH_PLANS) < 4096:
                _PATH_PLANS[names] = plan
        getter, rest = plan
        if getter is None:
            return None
        if getter is _BRANCH:
            return _ContextBranch(self, ".".join(names))
        value = _plain(getter(self.ctx, self.fin))
        return walk(value, rest) if rest else value

    @classmethod
    def vtl_compile_get(cls, names: tuple[str, ...]) -> Callable[[Any], Any] | None:
        """``$context.<names>`` through its getter directly (or the override maps),
        answering what :meth:`vtl_get` and :meth:`vtl_get_path` do, custom keys
        included; branches and unknown names take the generic path."""
        first, rest = names[0], names[1:]
        if first in ("requestOverride", "responseOverride"):
            request = first == "requestOverride"

            def override(obj: ContextObject) -> Any:
                # obj.overrides once this template has begun with them (the usual
                # second and later reads), without the property's checks; the side's
                # maps without the property once made
                overrides = obj._overrides if obj._begun else obj.overrides
                assert overrides is not None
                value = overrides._request if request else overrides._response
                if value is None:
                    value = overrides.request if request else overrides.response
                if len(rest) == 1:  # (.header): walk's step for a map, inline
                    return value.get(rest[0]) if isinstance(value, dict) \
                        else walk(value, rest)
                return walk(value, rest) if rest else value
            return override
        getter, after = _path_plan(names)
        if getter is None or getter is _BRANCH:
            return None
        path = ATTRIBUTES.get(".".join(names))
        if path is not None:
            read = attrgetter(path)

            def get_attribute(obj: ContextObject) -> Any:
                # (get_whole for a name whose getter reads one attribute: read here)
                found = obj._overrides
                if found is None or first not in found.custom:
                    value = read(obj.ctx)
                    return value if type(value) is str or value is None else _plain(value)
                return walk(found.custom[first], rest)
            return get_attribute

        def get(obj: ContextObject) -> Any:
            found = obj._overrides
            if found is None or first not in found.custom:
                value = getter(obj.ctx, obj.fin)
                if type(value) is not str and value is not None and type(value) not in _PLAIN:
                    value = _plain(value)
                return walk(value, after) if after else value
            return walk(found.custom[first], rest)

        def get_whole(obj: ContextObject) -> Any:
            # (get for a name the getter answers whole: text, the usual, returned at once)
            found = obj._overrides
            if found is None or first not in found.custom:
                value = getter(obj.ctx, obj.fin)
                if type(value) is str or value is None or type(value) in _PLAIN:
                    return value
                return _plain(value)
            return walk(found.custom[first], rest)
        return get if after else get_whole

    @classmethod
    def vtl_compile_set(cls, names: tuple[str, ...], key: str
                        ) -> Callable[[Any, Any], None] | None:
        """``#set($context.requestOverride.header.X = v)`` (and the other override
        maps, ``responseOverride.status``) in one call: what reading the map through
        :meth:`vtl_compile_get` and setting ``X`` on it does, the map's once-per-template
        check included."""
        if names[0] not in ("requestOverride", "responseOverride") or len(names) > 2:
            return None
        request = names[0] == "requestOverride"
        sub = names[1] if len(names) == 2 else None
        # the request's first override is a request header (the usual): recorded as
        # Overrides.pending, no maps made (they are made, with it, when first read)
        lazy = request and sub == "header"

        def set_override(obj: ContextObject, value: Any) -> None:
            if lazy and obj._overrides is None:
                # (ContextObject.overrides' first use, with the header pending)
                found = obj._overrides = Overrides((key, value))
                obj._begun = True
                obj.ctx.stash[OVERRIDES] = found
                return
            overrides = obj._overrides if obj._begun else obj.overrides
            assert overrides is not None
            side = overrides._request if request else overrides._response
            if side is None:
                side = overrides.request if request else overrides.response
            owner = side if sub is None else side.get(sub)
            if type(owner) is OverrideMap:  # OverrideMap.__setitem__, without its call
                mark = (id(owner), key)
                if mark in owner.assigned:
                    _set_twice(key)
                owner.assigned.add(mark)
                dict.__setitem__(owner, key, value)
            elif isinstance(owner, dict):
                owner[key] = value
            elif owner is not None:
                set_property(owner, key, value)
        return set_override

    def vtl_set(self, name: Any, value: Any) -> None:
        if name in ("requestOverride", "responseOverride"):
            raise TemplateRenderError(f"$context.{name} cannot be replaced; set its keys")
        self.overrides.custom[to_text(name)] = value


def _getter(name: str) -> Any:
    """The getter of ``$context.<name>``, :data:`_BRANCH` or ``None`` (cached)."""
    getter = _GETTER_CACHE.get(name, MISSING)
    if getter is MISSING:
        getter = _BRANCH if name in _PREFIXES else getter_for(name)
        if len(_GETTER_CACHE) < 4096:
            _GETTER_CACHE[name] = getter
    return getter


def _plain(value: Any) -> Any:
    """A ``$context`` value as templates see it: anything but maps, lists, strings and
    numbers as its text."""
    if value is None or type(value) in _PLAIN or isinstance(
            value, (dict, list, str, int, float)):
        return value
    return to_text(value)


#: ``names`` -> (the getter the longest leading dotted name reaches, the names after it);
#: ``(_BRANCH, ())`` when all of them only name a branch, ``(None, ())`` when unknown.
_PATH_PLANS: dict[tuple[str, ...], tuple[Any, tuple[str, ...]]] = {}


def _path_plan(names: tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    for i in range(1, len(names) + 1):
        getter = _getter(".".join(names[:i]))
        if getter is not _BRANCH:
            return getter, names[i:]
    return _BRANCH, ()


#: The fixed (non-branch) names and their getters: :meth:`ContextObject.vtl_get`'s fast
#: path.
_FIXED = {name: getter for name, getter in _GETTER_CACHE.items()
          if getter is not None and getter is not _BRANCH}


def context_value(ctx: Context, name: str) -> Any:
    """``$context.<name>`` (a fixed name) from its getter, as a template reads it when no
    custom key shadows it."""
    return _plain(_FIXED[name](ctx, None))


#: The typed roots of a mapping template (:data:`twistgw_mapping.ROOT_TYPES`) in the order
#: :meth:`~twistgw.vtl.Template.render_typed` takes them: their sorted names.
ROOT_NAMES = ("context", "input", "util")

def template_roots(ctx: Context, body: bytes, fin: Finish | None = None,
                   overrides: Overrides | Any | None = MISSING
                   ) -> tuple[ContextObject, InputObject, UtilObject]:
    """``$context``, ``$input`` and ``$util`` of a template rendered for ``ctx`` over
    ``body`` (in :data:`ROOT_NAMES`' order); ``overrides`` as :class:`ContextObject`
    takes them.  (The plugin's own renders make them without the constructors'
    frames, in ``twistgw_mapping._render``.)"""
    return ContextObject(ctx, fin, overrides), InputObject(body, ctx), UTIL


def template_others(ctx: Context, reads: frozenset[str] | None = None) -> dict[str, Any]:
    """The other top-level names: ``$stageVariables`` (a copy of the stage's variables),
    unless ``reads`` (the names the template reads) leaves it out."""
    if reads is None or "stageVariables" in reads:
        return {"stageVariables": dict(ctx.stage_variables)}
    return {}


def template_variables(ctx: Context, body: bytes, fin: Finish | None = None,
                       reads: frozenset[str] | None = None) -> dict[str, Any]:
    """The top-level names of a mapping template rendered for ``ctx`` over ``body``;
    with ``reads`` (the names the template reads), ``$stageVariables`` only if read (a
    copy of the stage's variables per render)."""
    variables = template_others(ctx, reads)
    variables.update(zip(ROOT_NAMES, template_roots(ctx, body, fin), strict=True))
    return variables
