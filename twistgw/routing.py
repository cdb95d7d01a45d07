"""Route matching and API/stage resolution, exactly as API Gateway does them.

Routes compile once per deployment into a segment trie, so a lookup walks the request's
path segments and never the route list: the cost does not grow with the number of routes.
The rules (aws-apigw-spec.md §A.1-§A.5):

* a literal segment beats ``{param}``, which beats ``{proxy+}``; when a branch fails
  further down, matching backs off to the next candidate (as AWS's resource tree does);
* a specific method beats ``ANY``; ``ANY`` means exactly DELETE GET HEAD OPTIONS PATCH POST
  PUT (HEAD is not implied by GET);
* a trailing slash is ignored for matching; doubled slashes inside the path are kept and
  reach a greedy parameter as they are; parameter values are *not* URL-decoded;
* HTTP APIs fall back to the ``$default`` route.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar
from urllib.parse import unquote_plus

import attrs

from .definition import ANY_METHODS

__all__ = [
    "RouteTable",
    "Match",
    "split_path",
    "parse_query",
    "ResolvedTarget",
]

R = TypeVar("R")

#: Bound on :meth:`RouteTable.match`'s cache (entries; paths longer than
#: :data:`MATCH_CACHE_MAX_PATH` are never cached): paths are client-chosen, so the cache
#: is emptied when full rather than allowed to grow.
MATCH_CACHE_SIZE = 2048
MATCH_CACHE_MAX_PATH = 256


@attrs.frozen
class Match(Generic[R]):
    """A matched route with its raw path parameters."""

    route: R
    params: Mapping[str, str]


#: The parameters of a match without any (read-only, shared).
_EMPTY: Mapping[str, str] = MappingProxyType({})


class _Node(Generic[R]):
    """One resource in the trie."""

    __slots__ = (
        "greedy_methods",
        "greedy_name",
        "literals",
        "methods",
        "param",
        "param_name",
    )

    def __init__(self) -> None:
        self.literals: dict[str, _Node[R]] = {}
        self.param: _Node[R] | None = None
        self.param_name: str | None = None
        self.greedy_name: str | None = None
        self.greedy_methods: dict[str, R] = {}
        self.methods: dict[str, R] = {}


def split_path(path: str) -> list[str]:
    """Split a resource path into segments, ignoring one trailing slash.

    ``/a/b/`` -> ``["a", "b"]``; ``/`` -> ``[]``; ``/a//b`` -> ``["a", "", "b"]``.
    """
    if path.endswith("/"):
        path = path[:-1]
    if not path:
        return []
    if path.startswith("/"):
        path = path[1:]
    return path.split("/")


def _pick(methods: Mapping[str, R], method: str) -> R | None:
    route = methods.get(method)
    if route is None and method in ANY_METHODS:
        route = methods.get("ANY")
    return route


class RouteTable(Generic[R]):
    """A compiled set of ``(method, path) -> route`` entries.

    :param default_route: the HTTP API ``$default`` route, used when nothing else matches.
    """

    def __init__(self, entries: Iterable[tuple[str, str, R]], default_route: R | None = None
                 ) -> None:
        self._root: _Node[R] = _Node()
        self._default = default_route
        self._count = 0
        #: (method, path) -> the match or ``None``; see :data:`MATCH_CACHE_SIZE`.
        self._cache: dict[tuple[str, str], Match[R] | None] = {}
        for method, path, route in entries:
            self._add(method.upper(), path, route)

    def __len__(self) -> int:
        return self._count + (1 if self._default is not None else 0)

    def _add(self, method: str, path: str, route: R) -> None:
        node = self._root
        segments = split_path(path)
        for i, seg in enumerate(segments):
            if seg.startswith("{") and seg.endswith("+}"):
                if i != len(segments) - 1:
                    raise ValueError(f"greedy parameter must be last: {path}")
                name = seg[1:-2]
                if node.greedy_name not in (None, name):
                    raise ValueError(f"conflicting greedy parameters at {path}")
                node.greedy_name = name
                if method in node.greedy_methods:
                    raise ValueError(f"duplicate route {method} {path}")
                node.greedy_methods[method] = route
                self._count += 1
                return
            if seg.startswith("{") and seg.endswith("}"):
                name = seg[1:-1]
                if node.param is None:
                    node.param = _Node()
                    node.param_name = name
                elif node.param_name != name:
                    raise ValueError(
                        f"{path}: parameter {{{name}}} conflicts with {{{node.param_name}}} "
                        "at the same position (API Gateway allows one name per position)")
                node = node.param
            else:
                nxt = node.literals.get(seg)
                if nxt is None:
                    nxt = node.literals[seg] = _Node()
                node = nxt
        if method in node.methods:
            raise ValueError(f"duplicate route {method} {path}")
        node.methods[method] = route
        self._count += 1

    def match(self, method: str, path: str) -> Match[R] | None:
        """Match ``method`` and the raw (undecoded) resource ``path``.

        Results are cached per ``(method, path)`` (a walk per request was measurable):
        the table never changes, and a :class:`Match` is immutable.
        """
        key = (method, path)
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        found = self._walk(self._root, split_path(path), 0, method, {})
        if found is None and self._default is not None:
            found = Match(self._default, _EMPTY)
        if len(path) <= MATCH_CACHE_MAX_PATH:
            if len(cache) >= MATCH_CACHE_SIZE:
                cache.clear()
            cache[key] = found
        return found

    def _walk(self, node: _Node[R], segments: list[str], i: int, method: str,
              params: dict[str, str]) -> Match[R] | None:
        if i == len(segments):
            route = _pick(node.methods, method)
            if route is not None:
                return Match(route, MappingProxyType(dict(params)) if params else _EMPTY)
            return None
        seg = segments[i]
        if seg:
            nxt = node.literals.get(seg)
            if nxt is not None:
                found = self._walk(nxt, segments, i + 1, method, params)
                if found is not None:
                    return found
            if node.param is not None:
                assert node.param_name is not None
                params[node.param_name] = seg
                found = self._walk(node.param, segments, i + 1, method, params)
                del params[node.param_name]
                if found is not None:
                    return found
        if node.greedy_name is not None:
            route = _pick(node.greedy_methods, method)
            if route is not None:
                rest = "/".join(segments[i:])
                if rest:
                    return Match(route, MappingProxyType({**params, node.greedy_name: rest}))
        return None


def parse_query(raw_query: str) -> tuple[tuple[str, str], ...]:
    """Form-decode a query string into ordered pairs (§A.5).

    ``+`` is a space, ``%XX`` is decoded (UTF-8, invalid bytes replaced), and a literal
    ``;`` separates like ``&`` (API Gateway's documented quirk).  Keys without ``=`` get
    an empty value.
    """
    if not raw_query:
        return ()
    out: list[tuple[str, str]] = []
    for part in raw_query.replace(";", "&").split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        out.append((unquote_plus(key, errors="replace"),
                    unquote_plus(value, errors="replace") if sep else ""))
    return tuple(out)


@attrs.frozen
class ResolvedTarget(Generic[R]):
    """Which API and stage a request addresses, and the resource path left over.

    :ivar path: the resource path to match (stage or base path removed).
    :ivar request_path: AWS's ``requestContext.path``: the path as the client sent it.
    """

    api: R
    stage: str | None
    path: str
    request_path: str
    base_path_matched: str | None = None
