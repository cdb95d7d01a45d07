"""``template_roots`` and the plugin's renders (which make ``$context`` and ``$input``
without their ``__init__``, twice per request) hand templates what the constructors
make."""

from __future__ import annotations

from typing import Any

import pytest
from twistgw_mapping import _render
from twistgw_mapping.namespaces import (
    MISSING,
    OVERRIDES,
    UTIL,
    ContextObject,
    InputObject,
    Overrides,
    template_roots,
)

from twistgw.testing import make_context, make_inbound
from twistgw.variables import Finish
from twistgw.vtl import Template


def _slots(obj: object) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in type(obj).__slots__}


@pytest.mark.parametrize("stashed", [False, True])
@pytest.mark.parametrize("given", ["missing", "none", "overrides"])
@pytest.mark.parametrize("fin", [None, Finish(integration_status=200)])
def test_template_roots_hold_what_the_constructors_store(
        stashed: bool, given: str, fin: Finish | None) -> None:
    ctx = make_context(make_inbound("POST", "/prod/x", body=b"{}"))
    if stashed:
        ctx.stash[OVERRIDES] = Overrides()
    overrides = {"missing": MISSING, "none": None, "overrides": Overrides()}[given]
    body = b'{"a": 1}'
    context, data, util = template_roots(ctx, body, fin, overrides)
    assert type(context) is ContextObject and type(data) is InputObject and util is UTIL
    expected = ContextObject(ctx, fin) if overrides is MISSING \
        else ContextObject(ctx, fin, overrides)
    assert _slots(context) == _slots(expected)
    assert _slots(data) == _slots(InputObject(body, ctx))
    # and they work as the constructed ones do
    assert data.document() == InputObject(body, ctx).document() == {"a": 1}
    assert context.overrides is context.overrides


@pytest.mark.parametrize("overrides", [None, Overrides()])
@pytest.mark.parametrize("fin", [None, Finish(integration_status=200)])
def test_the_plugins_renders_hold_what_the_constructors_store(
        monkeypatch: pytest.MonkeyPatch, overrides: Overrides | None,
        fin: Finish | None) -> None:
    """The plugin's ``_render`` makes the roots itself (no constructor frames, twice per
    request): what the template gets must be what the constructors make."""
    seen: list[tuple[Any, ...]] = []

    def spy(self: Template, names: tuple[str, ...], roots: tuple[Any, ...],
            variables: dict[str, Any], *rest: Any) -> str:
        seen.append(roots)
        return "x"
    monkeypatch.setattr(Template, "render_typed", spy)
    ctx = make_context(make_inbound("POST", "/prod/x", body=b"{}"))
    body = b'{"a": 1}'
    out, left = _render(ctx, Template("$input.body"), body, "request", fin, None, overrides)
    assert (out, left) == (b"x", overrides)
    [(context, data, util)] = seen
    assert type(context) is ContextObject and type(data) is InputObject and util is UTIL
    assert _slots(context) == _slots(ContextObject(ctx, fin, overrides))
    assert _slots(data) == _slots(InputObject(body, ctx))
