"""``#set($q = $input.params())`` deferred: when ``$q`` is only read as
``$q.<map>.<name>``, the compiled template reads that one value from the request instead
of making the three maps (``InputObject.vtl_compile_deferred``, ``vtl.deferred_sets``).
It must answer exactly what the maps would, and fall back to them whenever the maps can
be observed otherwise."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import twistgw_mapping
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twistgw_mapping import namespaces
from twistgw_mapping.namespaces import (
    ROOT_NAMES,
    InputObject,
    template_roots,
    template_variables,
)

from twistgw.models import Headers
from twistgw.testing import make_context, make_inbound
from twistgw.vtl import Template, TemplateError, deferred_sets

_NAMES = ["a", "A", "p", "X-H", "x-h", "Content-Length", "host", "Host", "none"]
_KINDS = ["path", "querystring", "header", "other"]

_READS = [f"$q.{kind}.{name}" for kind in _KINDS for name in _NAMES] + [
    "$!q.path.p", "$q.querystring.a.length()", "#if($q.header.X-H)Y#else-#end",
    "#if($q.querystring.a == '1')one#end", "$r.header.X-H", "$r.querystring.none.x",
]

#: What makes the maps observable (or ``$q`` something else): each must turn the
#: deferral off, or keep it correct.
_ESCAPES = [
    "$q", "$q.header", "$q.querystring.put('a', 'put')", "$q.header.keySet()",
    "#set($q.querystring.a = 'set')", "#set($z = $q)$z.querystring.a",
    "#foreach($k in $q.header.keySet())$k;#end", "$q.querystring['a']",
    "$input.params().querystring.put('a', 'other')", "$input.params()",
    "$input.params().header.put('X-H', 'put')", '#set($s = "$q.querystring.a")$s',
    "#set($q = 'x')", "#set($i = $input)$i.params().querystring.put('a', 'i')",
    "$input", "$input['params']", "$input.params", "#foreach($q in [1])$q#end",
    "#set($r = $input.params())$r.querystring.put('a', 'r')",
    "#set($m = $input.params())$m.path.put('p', 'm')",
    "#set($q = $input.params('a'))", "#set($context.custom = $input.params())",
]

_PIECES = st.sampled_from([
    "#set($q = $input.params())", "#set($r = $input.params())",
    "#if($input.body == '{}')#set($q = $input.params())#end",
    "$input.params('a')", "$input.params('X-H')", "$input.params('p')", " ", "|",
    *_READS, *_ESCAPES,
])

_LINES = st.lists(st.tuples(
    st.sampled_from(["X-H", "x-h", "X-h", "Content-Length", "content-length", "Host",
                     "HOST", "A", "a", "Accept"]),
    st.sampled_from(["1", "2", "v", ""])), max_size=6)
_QUERY = st.lists(st.tuples(st.sampled_from(["a", "A", "b"]),
                            st.sampled_from(["1", "2", ""])), max_size=4)
_PATH = st.dictionaries(st.sampled_from(["p", "a"]), st.sampled_from(["x", "y"]),
                        max_size=2)


def _ctx(lines: list[tuple[str, str]], query: list[tuple[str, str]],
         path: dict[str, str]) -> Any:
    inbound = attrs.evolve(make_inbound("POST", "/prod/x", body=b"{}"),
                           headers=Headers(tuple(lines)), query=tuple(query))
    return make_context(inbound, method="POST", path_params=path)


def _outcome(template: Template, lines: list[tuple[str, str]],
             query: list[tuple[str, str]], path: dict[str, str], typed: bool) -> Any:
    ctx = _ctx(lines, query, path)
    try:
        if typed:  # the plugin's entry
            return template.render_typed(ROOT_NAMES, template_roots(ctx, b"{}"), {})
        return template.render(template_variables(ctx, b"{}"))
    except TemplateError as e:
        return ("error", str(e))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_PIECES, max_size=8), lines=_LINES, query=_QUERY, path=_PATH)
@example(pieces=["#set($q = $input.params())", "$q.header.X-H"],
         lines=[("x-h", "1"), ("X-H", "2")], query=[], path={})
@example(pieces=["#set($q = $input.params())", "$q.header.Content-Length"],
         lines=[("Content-Length", "2")], query=[], path={})
@example(pieces=["#set($q = $input.params())", "$q.header.Host"],
         lines=[("Host", "h")], query=[], path={})
@example(pieces=["#set($q = $input.params())", "$q.querystring.a"],
         lines=[], query=[("a", "1"), ("a", "2")], path={})
@example(pieces=["#set($q = $input.params())", "$q.querystring.a",
                 "$input.params().querystring.put('a', 'other')", "$q.querystring.a"],
         lines=[], query=[("a", "1")], path={})
def test_deferred_params_answer_like_the_maps(
        pieces: list[str], lines: list[tuple[str, str]], query: list[tuple[str, str]],
        path: dict[str, str]) -> None:
    """Random templates over ``$input.params()`` and requests with names repeated in any
    case and headers API Gateway drops: the compiled template (deferring where it can)
    renders what the tree interpreter (which always makes the maps) renders."""
    source = "".join(pieces)
    try:
        reference = Template(source, compiled=False)
    except TemplateError:
        return
    compiled = Template(source, types=twistgw_mapping.ROOT_TYPES)
    expected = _outcome(reference, lines, query, path, typed=False)
    assert _outcome(compiled, lines, query, path, typed=True) == expected
    assert _outcome(compiled, lines, query, path, typed=False) == expected


@pytest.mark.parametrize(("source", "deferred"), [
    ("#set($q = $input.params())$q.querystring.source", {"q"}),
    ("#set($q = $input.params())$q.header.X-A$q.path.p$input.params('a')", {"q"}),
    ("#set($q = $input.params())#set($r = $input.params())$q.path.p$r.header.h",
     {"q", "r"}),
    ("#set($q = $input.params())", {"q"}),
    *[("#set($q = $input.params())$q.querystring.a" + escape, set())
      # (a string reading $q leaves it in the variables dict: ``excluded`` below)
      for escape in _ESCAPES if ("$q" in escape or "$input" in escape)
      and '"' not in escape],
])
def test_which_sets_are_deferred(source: str, deferred: set[str]) -> None:
    template = Template(source, types=twistgw_mapping.ROOT_TYPES)
    types = dict(twistgw_mapping.ROOT_TYPES)
    assert set(deferred_sets(template.nodes, types)) == deferred
    # a name kept in the variables dict (read by a string or the interpreter) is not
    assert deferred_sets(template.nodes, types, excluded={"q", "r"}) == {}


def test_deferred_params_make_no_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's response template reads ``$q.querystring.source`` without making the
    maps (the point of deferring); a template that hands ``$q`` out makes them."""
    made: list[InputObject] = []
    real = namespaces._params

    def counting(ctx: Any) -> Any:
        made.append(ctx)
        return real(ctx)
    monkeypatch.setattr(namespaces, "_params", counting)
    ctx = _ctx([("X-H", "1")], [("source", "web")], {})
    deferred = Template("#set($q = $input.params())$q.querystring.source|$q.header.X-H",
                        types=twistgw_mapping.ROOT_TYPES)
    assert deferred.render_typed(ROOT_NAMES, template_roots(ctx, b"{}"), {}) == "web|1"
    assert made == []
    eager = Template("#set($q = $input.params())$q.querystring.source|$q.header.size()",
                     types=twistgw_mapping.ROOT_TYPES)
    assert eager.render_typed(ROOT_NAMES, template_roots(ctx, b"{}"), {}) == "web|1"
    assert len(made) == 1
