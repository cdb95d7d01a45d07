"""``IntegrationRequest.with_body``: the dict-copying fast copy answers as ``attrs.evolve``.

The mapping plugin makes every mapped request's integration request with it (instead of
the constructor), so it must give the same value, of the same class, and leave the
request it copies as it was.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from twistgw.models import Headers, IntegrationRequest

_TEXT = st.text(alphabet="abXY-1", max_size=4)
_MAPS = st.dictionaries(_TEXT, _TEXT, max_size=3)


class _Sub(IntegrationRequest):
    """A subclass: its copies stay of it."""


@settings(max_examples=200, deadline=None)
@given(sub=st.booleans(), body=st.binary(max_size=8), old_body=st.binary(max_size=8),
       headers=st.none() | st.lists(st.tuples(_TEXT, _TEXT), max_size=3),
       extras=st.none() | _MAPS, frozen=st.booleans(), old_extras=_MAPS,
       params=_MAPS, query=st.lists(st.tuples(_TEXT, _TEXT), max_size=2),
       timeout=st.sampled_from([29.0, 1.5]))
def test_with_body_is_evolve(sub: bool, body: bytes, old_body: bytes,
                             headers: list[tuple[str, str]] | None,
                             extras: dict[str, Any] | None, frozen: bool,
                             old_extras: dict[str, Any], params: dict[str, str],
                             query: list[tuple[str, str]], timeout: float) -> None:
    cls = _Sub if sub else IntegrationRequest
    old = cls("POST", "http://x/y", Headers((("A", "1"),)), tuple(query), params, old_body,
              timeout, old_extras)
    before = attrs.asdict(old, recurse=False)
    changes: dict[str, Any] = {"body": body}
    new_headers = None if headers is None else Headers(tuple(headers))
    if new_headers is not None:
        changes["headers"] = new_headers
    new_extras: Any = None
    if extras is not None:
        new_extras = MappingProxyType(dict(extras)) if frozen else extras
        changes["extras"] = new_extras
    got = old.with_body(body, new_headers, new_extras)
    want = attrs.evolve(old, **changes)
    assert type(got) is type(want) is cls
    assert got == want and vars(got) == vars(want)
    assert type(got.extras) is MappingProxyType and type(got.path_params) is MappingProxyType
    if extras is not None and not frozen:
        extras["later"] = "x"  # the copy keeps its own view, as the constructor's
        assert "later" not in got.extras
    assert attrs.asdict(old, recurse=False) == before  # the original is untouched
    assert got is not old and vars(got) is not vars(old)


# -- with_body_later: headers and extras worked out when first read ----------------------

_READS = st.sampled_from(["headers", "extras", "eq", "repr", "evolve", "with_body",
                          "with_body_headers", "later"])


def _make(request: IntegrationRequest, arg: tuple[str, str]
          ) -> tuple[Headers, dict[str, Any]]:
    """A ``make`` as the mapping plugin's: the base's headers and extras with ``arg``."""
    name, value = arg
    calls.append(arg)
    return (request.headers.with_set(name, value),
            {**request.extras, "request_override": {"header": {name: value}}})


calls: list[tuple[str, str]] = []


def _eager(request: IntegrationRequest, body: bytes, arg: tuple[str, str]
           ) -> IntegrationRequest:
    """What ``with_body_later(body, _make, arg)`` stands for, made at once."""
    headers, extras = _make(request, arg)
    return attrs.evolve(request, body=body, headers=Headers(headers.items), extras=extras)


@settings(max_examples=300, deadline=None)
@given(sub=st.booleans(), old_extras=_MAPS, steps=st.lists(
    st.tuples(st.binary(max_size=4), st.tuples(_TEXT, _TEXT), st.lists(_READS, max_size=3)),
    min_size=1, max_size=3))
def test_with_body_later_answers_as_the_request_it_stands_for(
        sub: bool, old_extras: dict[str, Any],
        steps: list[tuple[bytes, tuple[str, str], list[str]]]) -> None:
    """A ``with_body_later`` copy (of a request, or of such a copy read or not), read
    in any order and copied on (``with_body``, ``evolve``, another ``with_body_later``)
    answers every field as the request made at once, compares equal both ways, prints
    alike, calls ``make`` only when ``headers`` or ``extras`` is first read, and once."""
    cls = _Sub if sub else IntegrationRequest
    request: IntegrationRequest = cls(
        "POST", "http://x/y", Headers((("A", "1"), ("x-order", "0"))), (("q", "1"),),
        {"p": "v"}, b"old", 29.0, old_extras)
    expected: IntegrationRequest = request
    for body, arg, reads in steps:
        calls.clear()
        request = request.with_body_later(body, _make, arg)
        expected = _eager(expected, body, arg)
        calls.clear()
        assert request.body == body and request.uri == "http://x/y"
        assert request.query == (("q", "1"),) and dict(request.path_params) == {"p": "v"}
        assert not calls  # nothing worked out yet
        for read in reads:
            if read == "headers":
                assert request.headers.items == expected.headers.items
            elif read == "extras":
                assert type(request.extras) is MappingProxyType
                assert dict(request.extras) == dict(expected.extras)
            elif read == "eq":
                assert request == expected and expected == request
                assert not (request != expected) and not (expected != request)
            elif read == "repr":
                assert repr(request) == repr(expected)
            elif read == "evolve":
                request = attrs.evolve(request, timeout=29.0)
            elif read == "with_body":
                request = request.with_body(body)
            elif read == "with_body_headers":
                request = request.with_body(body, Headers((("Z", "z"),)))
                expected = attrs.evolve(expected, headers=Headers((("Z", "z"),)))
        assert len(calls) <= 1  # at most once per copy
        assert isinstance(request, cls)
        assert attrs.asdict(request, recurse=False) == attrs.asdict(expected, recurse=False)
        assert request == expected and repr(request) == repr(expected)
        other = attrs.evolve(expected, body=body + b"!")
        assert request != other and not (request == other) and not (other == request)
        assert "_later" not in vars(request)  # worked out: the base let go
    assert len(calls) <= 1


def test_with_body_later_copy_read_again_while_its_fields_are_worked_out() -> None:
    """Another reader of the same copy while ``make`` runs (another thread) and the
    base's own fields: each gets the fields, without an error; any other missing
    attribute is an AttributeError."""
    base = IntegrationRequest("GET", "u", Headers((("A", "1"),)), extras={"e": 1})
    seen: list[Any] = []
    inner = [True]

    def make(request: IntegrationRequest, arg: int) -> tuple[Headers, dict[str, Any]]:
        if inner:  # the other reader comes while the first is working
            inner.clear()
            seen.append(copy.extras)
        return request.headers.with_set("B", "2"), {"n": arg}

    copy = base.with_body_later(b"x", make, 7)
    assert copy.headers.items == (("A", "1"), ("B", "2"))
    assert dict(copy.extras) == {"n": 7} and dict(seen[0]) == {"n": 7}
    assert dict(base.extras) == {"e": 1} and base.headers.items == (("A", "1"),)
    assert not hasattr(copy, "missing")
    bare = object.__new__(type(copy))
    assert not hasattr(bare, "headers")
