"""``$context`` names whose getter reads one attribute (``variables.ATTRIBUTES``) are
compiled into a direct attribute read: it must answer what the getter, and the generic
``$context`` path, answer."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twistgw_mapping.namespaces import ContextObject, Overrides

from twistgw.testing import make_context, make_inbound
from twistgw.variables import ATTRIBUTES, getter_for

#: What the attributes may hold: text (their declared type), and values a plugin could
#: put there anyway, which templates see through ``_plain``.
_VALUES = st.one_of(st.text(max_size=8), st.none(), st.integers(), st.floats(),
                    st.builds(object), st.lists(st.integers(), max_size=2))


def _context(values: list[Any]) -> Any:
    ctx = make_context(make_inbound("POST", "/prod/x"))
    for path, value in zip(ATTRIBUTES.values(), values, strict=True):
        *owners, last = path.split(".")
        obj = ctx
        for owner in owners:
            obj = getattr(obj, owner)
        object.__setattr__(obj, last, value)  # (frozen attrs classes)
    return ctx


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_VALUES, min_size=len(ATTRIBUTES), max_size=len(ATTRIBUTES)),
       shadow=st.sampled_from([None, "requestId", "identity", "other"]),
       custom=_VALUES)
@example(values=["ext", "id", "10.0.0.1", "v1"], shadow="requestId", custom="mine")
@example(values=[1, None, object(), None], shadow=None, custom=None)
def test_attribute_names_read_what_their_getters_read(
        values: list[Any], shadow: str | None, custom: Any) -> None:
    ctx = _context(values)
    overrides = None
    if shadow is not None:  # #set($context.<shadow> = ...) by an earlier template
        overrides = Overrides()
        overrides.custom[shadow] = {"sourceIp": custom} if shadow == "identity" else custom
    obj = ContextObject(ctx, None, overrides)
    for name, path in ATTRIBUTES.items():
        getter = getter_for(name)
        assert getter is not None
        read: Any = ctx
        for part in path.split("."):
            read = getattr(read, part)
        assert getter(ctx, None) is read  # the table names what the getter reads
        names = tuple(name.split("."))
        compiled = ContextObject.vtl_compile_get(names)
        assert compiled is not None and compiled.__name__ == "get_attribute"
        generic = obj.vtl_get(names[0]) if len(names) == 1 else obj.vtl_get_path(names)
        found = compiled(obj)
        assert type(found) is type(generic) and (found == generic or found is generic)
