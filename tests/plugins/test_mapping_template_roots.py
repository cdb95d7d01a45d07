"""``template_roots`` makes ``$context`` and ``$input`` without their ``__init__`` (the
plugin calls it on every render): each object must hold what its constructor stores."""

from __future__ import annotations

from typing import Any

import pytest
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
