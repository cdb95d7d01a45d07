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
