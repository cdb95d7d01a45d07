"""Every hook is documented and tested (after datasette's test_plugin_hooks_are_documented).

* docs/hooks.rst has a section per hookspec: a heading that is the hook's name, and a
  signature line ``name(arg1, arg2)`` whose arguments are the spec's argnames, in order.
* Somewhere under tests/ a test function is named ``test_hook_<name>``.

A hook added to twistgw/hookspecs.py without both fails here, naming the hook.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path

import pluggy
import pytest

from twistgw import hookspecs

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
HOOKS_RST = REPO / "docs" / "hooks.rst"

#: reST section underline characters.
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1+\s*$")


def hookspec_argnames() -> dict[str, tuple[str, ...]]:
    """``{hook name: argnames}`` of every hookspec, as pluggy sees them."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    out: dict[str, tuple[str, ...]] = {}
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
            out[name] = tuple(caller.spec.argnames)
    return out


HOOKS = hookspec_argnames()


@cache
def hooks_rst_lines() -> list[str]:
    if not HOOKS_RST.exists():
        pytest.fail(f"{HOOKS_RST.relative_to(REPO)} does not exist: every hook must be "
                    "documented there (a heading and a signature line per hook)")
    return HOOKS_RST.read_text(encoding="utf-8").splitlines()


def documented_headings(lines: list[str]) -> set[str]:
    """Section titles of an reST document (title line followed by an underline)."""
    found: set[str] = set()
    for title, under in itertools.pairwise(lines):
        text = title.strip().strip("`")
        if text and _UNDERLINE.match(under) and len(under.rstrip()) >= len(title.rstrip()):
            found.add(text)
    return found


def documented_signatures(lines: list[str], name: str) -> list[tuple[str, ...]]:
    """Argument names of every ``name(...)`` signature line (bare, ``literal`` or
    ``.. function::``), with annotations and defaults dropped."""
    pattern = re.compile(
        r"^\s*(?:\.\.\s+(?:py:)?function::\s+)?(?:``)?" + re.escape(name)
        + r"\((?P<args>[^()]*)\)(?:\s*->\s*[^`]*)?(?:``)?\s*$")
    out: list[tuple[str, ...]] = []
    for line in lines:
        m = pattern.match(line)
        if m is not None:
            args = [a.split(":")[0].split("=")[0].strip() for a in m.group("args").split(",")]
            out.append(tuple(a for a in args if a))
    return out


@cache
def defined_test_names() -> frozenset[str]:
    """Names of every test function defined in a .py file under tests/."""
    names: set[str] = set()
    pattern = re.compile(r"^\s*(?:async\s+)?def\s+(test_\w+)\s*\(", re.M)
    for path in TESTS.rglob("*.py"):
        names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(names)


def test_the_eleven_hooks_are_specified() -> None:
    # New hooks may come; none of these may silently go.
    assert set(HOOKS) >= {
        "register", "configure", "startup", "shutdown", "authorize", "map_request",
        "integrate", "map_response", "handle_error", "request_started", "request_finished",
    }
    assert set(hookspecs.REQUEST_PATH_HOOKS) <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_a_heading(hook: str) -> None:
    assert hook in documented_headings(hooks_rst_lines()), (
        f"docs/hooks.rst has no section titled {hook!r}")


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    expected = HOOKS[hook]
    signatures = documented_signatures(hooks_rst_lines(), hook)
    wanted = f"{hook}({', '.join(expected)})"
    assert signatures, f"docs/hooks.rst has no signature line {wanted}"
    assert all(sig == expected for sig in signatures), (
        f"docs/hooks.rst documents {hook} with arguments {signatures}; the hookspec says "
        f"{wanted}")


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_has_a_test(hook: str) -> None:
    assert f"test_hook_{hook}" in defined_test_names(), (
        f"no test function named test_hook_{hook} under tests/")
