"""The request-path models: the field order the core's positional constructions rely on.

The pipeline and the server build ``Context``, ``InboundRequest``, ``IntegrationRequest``,
``Response``, ``Exchange`` and ``Outcome`` with positional arguments on every request
(keyword arguments were a quarter of a ``Context``'s construction cost).  A field added
in the middle of one of these classes would silently shift every value after it: add new
fields at the end.  These tests fail first if that rule is broken.
"""

from __future__ import annotations

import pickle
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twistgw import IntegrationResponse, hookimpl
from twistgw.models import (
    EMPTY_MAPPING,
    Context,
    Headers,
    InboundRequest,
    IntegrationRequest,
    Principal,
    Response,
    Stash,
    StashKey,
)
from twistgw.pipeline import Exchange, Outcome

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory

#: The leading fields each positional construction passes, in order.
POSITIONAL = {
    Context: ["request", "request_id", "extended_request_id", "received_at",
              "deployment_api", "stage", "route", "method", "path", "request_path",
              "path_params", "principal", "domain_name", "base_path_matched", "trace_id"],
    InboundRequest: ["method", "raw_path", "raw_query", "query", "headers", "body",
                     "client_ip", "client_port", "listener", "scheme", "server_port",
                     "http_version", "received_at", "tls"],
    IntegrationRequest: ["method", "uri", "headers", "query", "path_params", "body",
                         "timeout"],
    Response: ["status", "headers", "body", "upgrade"],
    Exchange: ["ctx", "response", "outcome"],
    Outcome: ["deployment", "access_log"],
}


@pytest.mark.parametrize("cls", list(POSITIONAL), ids=lambda c: c.__name__)
def test_positional_field_order(cls: type) -> None:
    names = [f.name for f in attrs.fields(cls) if f.init]
    expected = POSITIONAL[cls]
    assert names[:len(expected)] == expected
    # Any field after them has a default, so the positional calls stay complete.
    assert all(f.default is not attrs.NOTHING for f in attrs.fields(cls)[len(expected):]
               if f.init)


def test_the_pipelines_context_has_each_value_in_its_field(make_harness: HarnessFactory,
                                                            b: Builders) -> None:
    """Through a real request: every positional value lands in the right field."""
    seen: list[tuple[Context, IntegrationRequest]] = []

    class Spy:
        @hookimpl
        def integrate(self, ctx: Context, request: IntegrationRequest) -> IntegrationResponse:
            seen.append((ctx, request))
            return IntegrationResponse(status=200, body=b"ok")

    doc = b.openapi({"/items/{id}": {"post": b.proxy_op("http://backend.invalid/{id}",
                                                        timeoutInMillis=1234)}})
    h = make_harness(doc, plugins=[("spy", Spy()), ("echo", b.echo())])
    response = h.request("POST", "/prod/items/7?q=1", body=b"payload",
                         headers={"X-Amzn-Trace-Id": "Root=1-abc", "Host": "example.test"})
    assert response.status == 200
    ctx, request = seen[0]
    assert ctx.request.method == "POST" and ctx.request.raw_path == "/prod/items/7"
    assert ctx.request.query == (("q", "1"),) and ctx.request.body == b"payload"
    assert ctx.request_id == response.headers.get("x-amzn-RequestId")
    assert ctx.extended_request_id == response.headers.get("x-amz-apigw-id")
    assert ctx.received_at > 0 and ctx.deployment_api is not None
    assert ctx.stage is not None and ctx.route is not None
    assert (ctx.method, ctx.path, ctx.request_path) == ("POST", "/items/7", "/prod/items/7")
    assert dict(ctx.path_params) == {"id": "7"} and ctx.principal is None
    assert ctx.domain_name == "example.test" and ctx.base_path_matched is None
    assert ctx.trace_id == "Root=1-abc"
    assert (request.method, request.body, request.timeout) == ("POST", b"payload", 1.234)
    assert request.uri == "http://backend.invalid/{id}"
    assert request.query == (("q", "1"),) and dict(request.path_params) == {"id": "7"}
    assert request.headers.get("x-amzn-trace-id") == "Root=1-abc"


# -- the written-out __init__s against the ones attrs would generate ------------------------

_INBOUND = InboundRequest(method="GET", raw_path="/")
#: For each class with a written-out __init__: sample values per field (the first
#: arguments are required), plain dicts included so the converters have work to do.
_SAMPLES: dict[type, dict[str, list[Any]]] = {
    Headers: {"items": [(), (("A", "1"),), [("B", "2"), ("b", "3")]]},
    Context: {
        "request": [_INBOUND], "request_id": ["r1"], "extended_request_id": ["e1"],
        "received_at": [1.5], "deployment_api": [None, "api"], "stage": [None, "stage"],
        "route": [None, "route"], "method": ["", "GET"], "path": ["", "/a"],
        "request_path": ["", "/prod/a"],
        "path_params": [EMPTY_MAPPING, {"id": "7"}, MappingProxyType({"x": "y"}), {}, None],
        "principal": [None, Principal(id="p")], "domain_name": ["", "d"],
        "base_path_matched": [None, "(none)"], "trace_id": [None, "Root=1"],
        "stash": [Stash()]},
    IntegrationRequest: {
        "method": ["POST"], "uri": ["http://x/"], "headers": [Headers((("A", "1"),))],
        "query": [(), (("q", "1"),)], "path_params": [{}, {"a": "b"}, EMPTY_MAPPING],
        "body": [b"", b"x"], "timeout": [29.0, 1.5],
        "extras": [EMPTY_MAPPING, {"event": {"k": 1}}, MappingProxyType({"z": 1}), None]},
    IntegrationResponse: {
        "status": [200, 502], "headers": [Headers((("C", "d"),))], "body": [b"", b"y"],
        "metadata": [EMPTY_MAPPING, {"latency_ms": 3}, {}, None], "upgrade": [None, print]},
    Response: {
        "status": [200, 404], "headers": [Headers((("E", "f"),))], "body": [b"", b"z"],
        "upgrade": [None, print]},
}


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return value if isinstance(value, tuple) else tuple(value)


#: Converters the written-out __init__s apply that the fields no longer declare.
_CONVERTERS = {(Headers, "items"): _pairs}


def _reference(cls: type) -> type:
    """The class attrs would build from the same fields (generated __init__)."""
    fields = {f.name: attrs.field(default=f.default, init=f.init, eq=f.eq, alias=f.alias,
                                  converter=_CONVERTERS.get((cls, f.name), f.converter))
              for f in attrs.fields(cls)}
    return attrs.make_class(f"Reference{cls.__name__}", fields, frozen=True, slots=False)


def _state(obj: Any) -> list[tuple[str, Any]]:
    """Every field's value (a Stash by its type: a factory makes a fresh one)."""
    return [(f.name, type(v) if isinstance(v := getattr(obj, f.name), Stash) else v)
            for f in attrs.fields(type(obj))]


@pytest.mark.parametrize("cls", list(_SAMPLES), ids=lambda c: c.__name__)
def test_written_out_init_matches_the_generated_one(cls: type) -> None:
    reference = _reference(cls)
    samples = _SAMPLES[cls]
    names = [f.alias for f in attrs.fields(cls) if f.init]
    required = [f.alias for f in attrs.fields(cls)
                if f.init and f.default is attrs.NOTHING]

    @settings(max_examples=150, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        given_names = [n for n in names if n in required or data.draw(st.booleans())]
        kwargs = {n: data.draw(st.sampled_from(samples[n])) for n in given_names}
        mine = cls(**kwargs)
        theirs = reference(**kwargs)
        assert _state(mine) == _state(theirs)
        for f in attrs.fields(cls):
            if f.converter is not None:  # converted mappings are read-only
                assert isinstance(getattr(mine, f.name), MappingProxyType)
        # Positionally too, when every argument up to the last given one is given.
        positional = [kwargs[n] for n in names[:len(kwargs)]] \
            if given_names == names[:len(kwargs)] else None
        if positional is not None:
            assert _state(cls(*positional)) == _state(mine)
        assert attrs.evolve(mine) == mine

    check()


def test_stash_get_gives_stored_values_and_the_default_only_on_a_miss() -> None:
    """A stored falsy value (``None``, ``0``) is a hit, not a miss; keys of different
    plugins never collide even when they share a name."""
    first: StashKey[int | None] = StashKey("n")
    second: StashKey[int | None] = StashKey("n")
    stash = Stash()
    assert stash.get(first, 7) == 7
    stash[first] = None
    assert stash.get(first, 7) is None
    assert first in stash and second not in stash
    assert stash.get(second, 5) == 5
    stash[second] = 0
    assert stash.get(second, 5) == 0 and stash[first] is None


# -- Headers.with_set: lines worked out when first read ---------------------------------------

_SET_NAMES = st.sampled_from(["X-Order", "x-order", "X-ORDER", "K", "k", "\u212a", "\u0130",
                              "i\u0307", "I", "i", "Host", "B"])


def _set_eagerly(lines: tuple[tuple[str, str], ...], name: str, value: str
                 ) -> tuple[tuple[str, str], ...]:
    """What ``with_set`` means: the lines without ``name`` (case-insensitive), then it."""
    return (*[(k, v) for k, v in lines if k.lower() != name.lower()], (name, value))


def _answers(headers: Headers) -> list[Any]:
    """Everything a reader can ask of ``headers`` (the lazy copy answers each)."""
    return [headers.items, list(headers), len(headers), headers.get("k"), headers.get("B"),
            headers.get_all("x-order"), "K" in headers, "i" in headers, 7 in headers,
            sorted(headers.lower_names()), headers.names(), headers.to_dict_last(),
            headers.without("b").items, headers.with_added("Z", "z").items, repr(headers),
            hash(headers)]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(_SET_NAMES, st.sampled_from(["1", "2"])), max_size=6),
       sets=st.lists(st.tuples(_SET_NAMES, st.sampled_from(["v", "w"]), st.booleans()),
                     min_size=1, max_size=4),
       indexed=st.booleans())
def test_with_set_copies_answer_as_the_lines_they_stand_for(
        lines: list[tuple[str, str]], sets: list[tuple[str, str, bool]], indexed: bool
        ) -> None:
    """A ``with_set`` copy, read at once or later, through a chain of them (read or not
    in between), answers every question as ``Headers`` of the lines ``with_set`` means,
    compares equal both ways and hashes alike; a copy of a base that is not such an
    unread copy has not worked its lines out until read (it costs no pass over them)."""
    headers = Headers(tuple(lines))
    if indexed:
        headers.get("x")  # the base's index built first
    expected = tuple(lines)
    lazy = False  # (a copy of a copy not read yet is made at once)
    for name, value, read in sets:
        headers = headers.with_set(name, value)
        lazy = not lazy
        expected = _set_eagerly(expected, name, value)
        if lazy:
            assert "items" not in vars(headers)
        if read:
            assert headers.items == expected
            lazy = False
    plain = Headers(expected)
    assert headers == plain and plain == headers
    assert not (headers != plain) and not (plain != headers)
    assert headers != Headers((*expected, ("other", "1")))
    assert _answers(headers) == _answers(plain)
    assert pickle.loads(pickle.dumps(headers.with_set("P", "p"))) == plain.with_set("P", "p")
    assert attrs.evolve(headers, items=()) == Headers(())


def test_with_set_copy_read_again_while_its_lines_are_worked_out() -> None:
    """A copy whose lines are read again while they are being worked out (another thread
    reading the same copy) answers both reads with the same lines, without an error."""
    waiting: list[Headers] = []

    class Interleaved(Headers):
        @property
        def items(self) -> tuple[tuple[str, str], ...]:
            if waiting:  # the other reader, while the first is working
                assert waiting.pop().items == (("B", "2"), ("a", "9"))
            return self.__dict__["items"]  # type: ignore[no-any-return]

    copy = Interleaved((("A", "1"), ("B", "2"))).with_set("a", "9")
    waiting.append(copy)
    assert copy.items == (("B", "2"), ("a", "9"))
    assert not waiting
    # any other missing attribute, or lines never set, is an AttributeError as usual
    bare = object.__new__(type(copy))
    assert not hasattr(bare, "items") and not hasattr(copy, "missing")
