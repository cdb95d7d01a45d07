"""The request's first override, when it is one request header, is kept as
``Overrides.pending`` (no maps made) until something reads the maps: everything a
template or the plugin observes must be what the maps made up front give."""

from __future__ import annotations

from typing import Any

import twistgw_mapping
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twistgw_mapping.namespaces import OVERRIDES, ContextObject, Overrides

from twistgw.definition import Integration
from twistgw.errors import ApiConfigurationError
from twistgw.models import Context, Headers, IntegrationRequest
from twistgw.testing import make_context, make_inbound
from twistgw.vtl import TemplateRenderError

_KEYS = st.sampled_from(["X-Order", "x-order", "Host", "K"])
_VALUES = st.sampled_from(["v", "w", 7, None])

#: One step of a template: set an override (``#set($context.<names>.<key> = value)``
#: through the compiled setter), read one through the compiled getter, read
#: ``$context.requestOverride`` whole, or put into its header map.
_STEPS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([("requestOverride", "header"),
                                               ("requestOverride", "querystring"),
                                               ("responseOverride", "header")]),
              _KEYS, _VALUES),
    st.tuples(st.just("get"), st.sampled_from([("requestOverride", "header"),
                                               ("requestOverride",),
                                               ("responseOverride", "header")]),
              _KEYS, st.none()),
    st.tuples(st.just("whole"), st.just(()), st.just(""), st.none()),
    st.tuples(st.just("put"), st.just(()), _KEYS, _VALUES),
)


def _run(templates: list[list[tuple[str, Any, str, Any]]], eager: bool) -> list[Any]:
    """What each step of ``templates`` (one :class:`ContextObject` each, the overrides
    handed on through the stash as the plugin does) answers, then what the plugin
    makes of the overrides; ``eager``: a request header is set the general way, into
    the map made first (so none is ever pending)."""
    ctx: Context = make_context(make_inbound("POST", "/prod/x"))
    seen: list[Any] = []
    for steps in templates:
        obj = ContextObject(ctx, None, ctx.stash.get(OVERRIDES, None))  # type: ignore[arg-type]
        for kind, names, key, value in steps:
            try:
                if kind == "set":
                    if eager and names == ("requestOverride", "header"):
                        # the general rule: the map made, then set (once per template)
                        obj.overrides.request["header"][key] = value
                    else:
                        setter = ContextObject.vtl_compile_set(names, key)
                        assert setter is not None
                        setter(obj, value)
                    seen.append("set")
                elif kind == "get":
                    getter = ContextObject.vtl_compile_get((*names, key) if len(names) == 2
                                                           else names)
                    assert getter is not None
                    seen.append(repr(getter(obj)))
                elif kind == "whole":
                    seen.append(repr(obj.vtl_get("requestOverride")))
                else:
                    obj.vtl_get("requestOverride")["header"][key] = value
                    seen.append("put")
            except TemplateRenderError as e:
                seen.append(("error", str(e)))
        overrides = ctx.stash.get(OVERRIDES, None)  # type: ignore[arg-type]
        if overrides is None:
            seen.append(None)
            continue
        request = IntegrationRequest(method="POST", uri="http://x/",
                                     headers=Headers((("x-order", "1"), ("A", "2"))),
                                     query=(("q", "1"),), path_params={}, extras={"e": 1})
        try:
            got = twistgw_mapping._apply_request_overrides(
                ctx, Integration(type="HTTP", uri="http://x/"), request, b"b", overrides)
            seen.append((got.headers.items, got.query, dict(got.path_params), got.body,
                         dict(got.extras)))
        except ApiConfigurationError:
            seen.append("500")
    # (made() makes the request side: only at the end, as the plugin's response phase)
    overrides = ctx.stash.get(OVERRIDES, None)  # type: ignore[arg-type]
    if overrides is not None:
        assert isinstance(overrides, Overrides)
        seen.append(repr(overrides.made()))
    return seen


@settings(max_examples=400, deadline=None)
@given(templates=st.lists(st.lists(_STEPS, max_size=5), min_size=1, max_size=3))
@example(templates=[[("set", ("requestOverride", "header"), "X-Order", "v"),
                     ("get", ("requestOverride", "header"), "X-Order", None),
                     ("set", ("requestOverride", "header"), "X-Order", "w")]])
@example(templates=[[("set", ("requestOverride", "header"), "X-Order", "v")],
                    [("whole", (), "", None),
                     ("set", ("requestOverride", "header"), "X-Order", "w")]])
@example(templates=[[("set", ("requestOverride", "header"), "X-Order", "v"),
                     ("put", (), "X-Order", "w")]])
@example(templates=[[("set", ("requestOverride", "header"), "X-Order", 7)]])
@example(templates=[[("set", ("requestOverride", "header"), "X-Order", "v"),
                     ("set", ("requestOverride", "header"), "K", "w")]])
@example(templates=[[("set", ("requestOverride", "header"), "X-Order", "v")]])
def test_a_pending_header_answers_like_the_maps(
        templates: list[list[tuple[str, Any, str, Any]]]) -> None:
    """Reads back (one header, the whole map), a second set or put in the same template
    (refused) or the next one (allowed), the plugin's integration request and
    ``made()``: the same whether the header was pending or the maps were made first."""
    assert _run(templates, eager=False) == _run(templates, eager=True)


def test_one_header_set_first_makes_no_maps() -> None:
    """The fast path is taken: the header waits in ``pending``, no map exists, and the
    plugin applies it from there."""
    ctx = make_context(make_inbound("POST", "/prod/x"))
    obj = ContextObject(ctx)
    setter = ContextObject.vtl_compile_set(("requestOverride", "header"), "X-Order")
    assert setter is not None
    setter(obj, "42")
    overrides = ctx.stash[OVERRIDES]
    assert overrides.pending == ("X-Order", "42") and overrides._request is None
    request = IntegrationRequest(method="POST", uri="http://x/", headers=Headers(()))
    got = twistgw_mapping._apply_request_overrides(
        ctx, Integration(type="MOCK"), request, b"b", overrides)
    assert overrides._request is None
    assert got.headers.items == (("X-Order", "42"),)
    assert dict(got.extras) == {"request_override": {
        "header": {"X-Order": "42"}, "querystring": {}, "path": {}}}
