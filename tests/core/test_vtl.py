"""The VTL engine (twistgw.vtl): Velocity 1.7 syntax and whitespace, Java rendering of
values, AWS's quiet nulls, and the bounds (template size, output, time, #foreach cap)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twistgw.vtl import (
    COMPUTED,
    DEFAULT_LIMITS,
    FOREACH_LIMIT,
    MAX_TEMPLATE_BYTES,
    JavaList,
    JsonList,
    Limits,
    Template,
    TemplateError,
    TemplateLimitError,
    TemplateRenderError,
    TemplateSyntaxError,
    VtlObject,
    foldable_roots,
    java_double,
    render,
    set_property,
    to_json,
    to_text,
    walk,
)


def r(source: str, **variables: Any) -> str:
    return render(source, variables)


# -- rendering values like Java -------------------------------------------------------------


def test_maps_render_java_style() -> None:
    assert r("$m", m={"foo": "bar"}) == "{foo=bar}"
    assert r("$m", m={"bigger": "dict", "to": "test", "with": "separators"}) \
        == "{bigger=dict, to=test, with=separators}"
    assert r("$m.toString()", m={"foo": "bar"}) == "{foo=bar}"
    assert r("$m", m={"a": None, "b": True, "c": 1.5, "d": {"e": 1}}) \
        == "{a=null, b=true, c=1.5, d={e=1}}"


def test_json_lists_render_compact_json() -> None:
    assert r("$l", l=JsonList([{"foo": "bar"}])) == '[{"foo":"bar"}]'
    assert r("$m", m={"foo": JsonList([{"nested": "bar"}])}) == '{foo=[{"nested":"bar"}]}'
    assert r("$l", l=JsonList([])) == "[]"
    assert r("$l[0]", l=JsonList([{"foo": "bar"}])) == "{foo=bar}"


def test_vtl_lists_render_like_java_lists() -> None:
    assert r('#set($l = [1, "a", true])$l') == "[1, a, true]"
    assert r("#set($m = {})$m.keySet()") == "[]"


def test_nulls_render_quietly() -> None:
    assert r('{"body": $result, "x": $!result, "y": ${result}}') \
        == '{"body": , "x": , "y": }'
    assert r("$a.b.c().d") == ""


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1.0"), (1.5, "1.5"), (0.001, "0.001"), (1e7, "1.0E7"), (1.5e-5, "1.5E-5"),
    (123456789.0, "1.23456789E8"), (-2.5, "-2.5"), (0.0, "0.0"),
    (float("inf"), "Infinity"), (float("nan"), "NaN"),
])
def test_doubles_render_like_java(value: float, text: str) -> None:
    assert java_double(value) == text


def test_to_text_and_to_json() -> None:
    assert to_text(None) == ""
    assert to_text(True) == "true"
    assert to_json({"a": [1, "x", None, False]}) == '{"a":[1,"x",null,false]}'
    assert to_json("caf\u00e9") == '"caf\u00e9"'


# -- syntax ---------------------------------------------------------------------------------


def test_references_and_chains() -> None:
    data = {"a": {"b": JsonList([{"c": "deep"}])}, "k": "b"}
    assert r("$d.a.b[0].c", d=data) == "deep"
    assert r("${d.a.b[0].c}x", d=data) == "deepx"
    assert r("$d.a[$d.k].size()", d=data) == "1"
    assert r("$d['a']['b'][0]['c']", d=data) == "deep"
    assert r("$d.a.", d=data) == "{b=[{\"c\":\"deep\"}]}."


def test_literal_dollars_and_hashes() -> None:
    assert r("cost: $5 # not a directive #notone $") == "cost: $5 # not a directive #notone $"
    assert r("\\$x and \\#if", x="X") == "$x and #if"
    assert r('#[[#if($x) raw $y]]#') == "#if($x) raw $y"


def test_comments() -> None:
    assert r("a## line comment\nb") == "ab"
    assert r("a#* block\n comment *#b") == "ab"


def test_set_and_interpolation() -> None:
    assert r('#set($name = "World")Hello, $name!') == "Hello, World!"
    assert r('#set($a = "x")#set($b = "<$a-${a}>")$b') == "<x-x>"
    assert r("#set($s = 'no $interpolation')$s") == "no $interpolation"
    assert r('#set($q = "say ""hi""")$q') == 'say "hi"'


def test_set_with_null_keeps_the_old_value() -> None:
    """Velocity 1.7: a null right-hand side does not assign."""
    assert r('#set($x = "old")#set($x = $missing)$x') == "old"


def test_numbers_and_operators() -> None:
    assert r("#set($x = 7 / 2)$x") == "3"
    assert r("#set($x = -7 / 2)$x") == "-3"
    assert r("#set($x = -7 % 3)$x") == "-1"
    assert r("#set($x = 7.0 / 2)$x") == "3.5"
    assert r("#set($x = 2 + 3 * 4)$x") == "14"
    assert r("#set($x = (2 + 3) * 4)$x") == "20"
    assert r("#set($x = 1 / 0)[$x]") == "[]"
    assert r('#set($x = "a" + 1)$x') == "a1"
    assert r("#set($x = 9223372036854775807 + 1)$x") == "9.223372036854776E18"


def test_conditions() -> None:
    assert r("#if(1 < 2 && !(2 < 1))yes#end") == "yes"
    assert r("#if(1 lt 2 and not false)yes#end") == "yes"
    assert r("#if($x)yes#else no#end") == " no"
    assert r('#if("")empty string is true#end') == "empty string is true"
    assert r("#if($a == 1)one#elseif($a == 2)two#{else}other#end", a=2) == "two"
    assert r("#if($a == 1)one#elseif($a == 2)two#{else}other#end", a=3) == "other"
    assert r('#if("1" == 1)loose#end') == "loose"


def test_null_equals_empty_string() -> None:
    """Recorded on AWS (§3.6): a missing value compares equal to $null and to ""."""
    assert r('#if($missing == "")yes#end') == "yes"
    assert r("#if($missing == $null)yes#end") == "yes"
    assert r('#if($missing != "")no#else yes#end') == " yes"
    assert r('#if("x" == $null)no#end') == ""


def test_foreach() -> None:
    assert r("#foreach($i in [1, 2, 3])$i#if($foreach.hasNext),#end#end") == "1,2,3"
    assert r("#foreach($i in [1..3])$velocityCount:$foreach.index #end") == "1:0 2:1 3:2 "
    assert r("#foreach($i in [3..1])$i#end") == "321"
    assert r("#foreach($v in $m)$v#end", m={"a": 1, "b": 2}) == "12"
    assert r("#foreach($i in $missing)x#end") == ""
    assert r("#foreach($i in [1..5])#if($i == 3)#break#end$i#end") == "12"
    assert r('#set($i = "kept")#foreach($i in [1])#end$i') == "kept"


def test_foreach_stops_after_1000_iterations() -> None:
    assert FOREACH_LIMIT == 1000
    assert r("#foreach($i in [1..5000])x#end") == "x" * 1000


def test_stop() -> None:
    assert r("a#stop b") == "a"


def test_velocity_17_whitespace() -> None:
    """Directive lines eat their newline; blanks between two directives before #set go."""
    template = "<ul>\n#foreach( $p in [\"a\", \"b\"] )\n    <li>$p</li>\n#end\n</ul>"
    assert r(template) == "<ul>\n    <li>a</li>\n    <li>b</li>\n</ul>"
    assert r("#set($a = 1)\n    #set($b = 2)\n$a$b\n") == "12\n"
    assert r("#if(true)\nyes\n#else\nno\n#end\nafter") == "yes\nafter"
    assert r("  #if(true)x#end") == "  x"


def test_map_and_list_methods() -> None:
    assert r('#set($m = {"a": 1})#set($x = $m.put("b", 2))$m $m.size() $m.containsKey("b")') \
        == "{a=1, b=2} 2 true"
    assert r('#set($m = {"a": 1})#foreach($e in $m.entrySet())$e.key=$e.value#end') == "a=1"
    assert r('#set($m = {"a": 1})$m.get("a") $m.values() $m.isEmpty() $m.size()') \
        == "1 [1] false 1"
    # On a map, .empty is the key "empty" (Velocity's map getter wins over isEmpty()).
    assert r('#set($m = {"a": 1})[$m.empty] #set($l = [])$l.empty') == "[] true"
    assert r('#set($l = [])$l.add("x") $l.size() $l.get(0) $l.contains("x") $l.isEmpty()') \
        == "true 1 x true false"


def test_map_assignment_forms() -> None:
    template = ('#set($m = {"q": {}})#set($name = "k1")#set($m.q[$name] = "a")'
                '$m.q.put("k2", "b")#set($m["q"]["k3"] = "c")#set($m.q.k4 = "d")$m')
    assert r(template) == "{q={k1=a, k2=b, k3=c, k4=d}}"


@pytest.mark.parametrize(("template", "out"), [
    ('"$s.length()"', '"11"'),
    ("$s.toUpperCase()", "HELLO WORLD"),
    ("$s.toLowerCase()", "hello world"),
    ("$s.substring(6)", "World"),
    ("$s.substring(0, 5)", "Hello"),
    ('$s.indexOf("o")', "4"),
    ('$s.indexOf("o", 5)', "7"),
    ('$s.contains("World")', "true"),
    ('$s.startsWith("Hell")', "true"),
    ('$s.endsWith("x")', "false"),
    ('$s.replace("l", "L")', "HeLLo WorLd"),
    ('$s.replaceAll("(\\w+) (\\w+)", "$2 $1")', "World Hello"),
    ('$s.replaceFirst("l", "")', "Helo World"),
    ('$s.matches("H.*d")', "true"),
    ('$s.matches("H")', "false"),
    ('$s.split(" ")', "[Hello, World]"),
    ('$s.equals("Hello World")', "true"),
    ("$s.isEmpty()", "false"),
    ("$s.toString()", "Hello World"),
    ('#set($t = "  pad  ")[$t.trim()]', "[pad]"),
    ('$s.charAt(1)', "e"),
])
def test_string_methods(template: str, out: str) -> None:
    assert r(template, s="Hello World") == out


def test_escaped_quote_replace_of_the_developer_guide() -> None:
    """The DG's fix for escapeJavaScript's invalid-JSON \\' : .replaceAll("\\\\'","'")."""
    assert r("""$s.replaceAll("\\\\'","'")""", s="it\\'s") == "it's"


def test_unknown_methods_and_properties_are_null() -> None:
    assert r("[$s.nope()][$s.nope][$n.foo]", s="x", n=1) == "[][][]"


def test_method_errors_are_render_errors() -> None:
    with pytest.raises(TemplateRenderError):
        r("$s.substring(5)", s="abc")
    with pytest.raises(TemplateRenderError):
        r('$s.matches("(")', s="abc")


@pytest.mark.parametrize("source", [
    "#if($x)", "#foreach($i in $l)x", "#end", "#else", "#set($x = )", "#set(x = 1)",
    "#if($x", '#set($x = "unterminated)', "#* open comment", "$x.y(", "#macro(m)#end",
    "#parse('other.vm')", "#include('x')", "#foreach($i of $l)#end", "#set($x = [1, 2)",
])
def test_syntax_errors(source: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        Template(source)


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(TemplateSyntaxError, match="line 2, column 1"):
        Template("ok\n#end")


# -- bounds ---------------------------------------------------------------------------------


def test_template_size_limit() -> None:
    assert MAX_TEMPLATE_BYTES == 300 * 1024
    Template("x" * MAX_TEMPLATE_BYTES)
    with pytest.raises(TemplateSyntaxError, match="300 KB"):
        Template("x" * (MAX_TEMPLATE_BYTES + 1))


def test_output_limit() -> None:
    limits = Limits(max_output=1000)
    with pytest.raises(TemplateLimitError):
        Template("#foreach($i in [1..1000])xx#end").render({}, limits)


def test_doubling_string_is_stopped() -> None:
    template = Template('#set($s = "ab")#foreach($i in [1..100])#set($s = "$s$s")#end$s')
    with pytest.raises(TemplateLimitError):
        template.render({}, Limits(max_output=100_000))
    template = Template('#set($s = "ab")#foreach($i in [1..100])#set($s = $s + $s)#end')
    with pytest.raises(TemplateLimitError):
        template.render({}, Limits(max_output=100_000))


def test_time_limit() -> None:
    template = Template("#foreach($a in [1..1000])#foreach($b in [1..1000])"
                        "#foreach($c in [1..1000])#end#end#end")
    with pytest.raises(TemplateLimitError, match="longer than"):
        template.render({}, Limits(max_seconds=0.05))


def test_range_limit() -> None:
    with pytest.raises(TemplateLimitError):
        r("#foreach($i in [1..100000000])#end")


def test_fractional_range_bound_is_a_syntax_error() -> None:
    # Found by the hypothesis comparison below: "3.5.." crashed the parser with ValueError.
    with pytest.raises(TemplateSyntaxError, match="integers"):
        Template("#foreach($i in [1.5..3])$i#end")
    with pytest.raises(TemplateSyntaxError):
        Template("#set($x = 3.5..")
    assert r("#foreach($i in [1..3])$i#end") == "123"


def test_self_containing_list_is_a_limit_error() -> None:
    with pytest.raises(TemplateLimitError):
        r("#set($l = [])#set($x = $l.add($l))$l")


def test_deep_nesting_is_a_syntax_error() -> None:
    with pytest.raises(TemplateSyntaxError):
        Template("#if(true)" * 200 + "#end" * 200)
    with pytest.raises(TemplateSyntaxError):
        Template("#set($x = " + "(" * 500 + "1" + ")" * 500 + ")")


def test_templates_are_reusable() -> None:
    template = Template("#set($x = $x + 1)$x")
    assert template.render({"x": 1}) == "2"
    assert template.render({"x": 1}) == "2"


# -- properties: no template or input crashes the renderer or escapes its bounds -----------

_PIECES = st.sampled_from([
    "$", "#", "$x", "$!x", "${x}", "$x.y", "$x[0]", "$x.get('a')", "$m", "$l", "$s",
    "#set($x = ", "#set($m.k = 1)", "#if(", "#elseif(", "#else", "#end", "#foreach($i in ",
    "#break", "#stop", ")", "(", "[", "]", "{", "}", "'", '"', ",", "..", "1", "-2", "3.5",
    "==", "!=", "<", ">=", "&&", "||", "!", "+", "-", "*", "/", "%", "true", "null",
    " in ", "$l", "[1..3]", "[1..10]", "$s.replaceAll('a', 'bb')", "$s.split(',')",
    "$m.put('k', $m)", "$l.add($l)", "$l.add(1)", "$s.substring(1)", "\n", " ", "x",
    "##", "#*", "*#", "#[[", "]]#", "\\", "\\$x", "$velocityCount", "$foreach.hasNext",
    "$x.y.z", "$m.a.b", "#set($x.y.z = 2)", "#set($m.a.b = 3)", "$foreach.index",
    "#set($foreach = 1)", "$foreach.last",
])

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4).map(JsonList)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_PIECES, max_size=40), x=_VALUES, s=st.text(max_size=30))
def test_random_templates_never_crash(pieces: list[str], x: Any, s: str) -> None:
    source = "".join(pieces)
    limits = Limits(max_output=20_000, max_seconds=0.5, max_range=1000)
    try:
        template = Template(source)
    except TemplateSyntaxError:
        return
    variables = {"x": x, "s": s, "m": {"a": 1}, "l": JsonList([1, "two"])}
    try:
        out = template.render(variables, limits)
    except TemplateError:
        return
    assert len(out) <= limits.max_output


@settings(max_examples=200, deadline=None)
@given(source=st.text(max_size=200))
def test_arbitrary_text_never_crashes(source: str) -> None:
    try:
        out = Template(source).render({"x": "v"}, Limits(max_output=10_000, max_seconds=0.5))
    except TemplateError:
        return
    assert len(out) <= 10_000


# -- the compiled form renders exactly like the tree interpreter ----------------------------


def _outcome(template: Template, variables: dict[str, Any]) -> tuple[str, str]:
    try:
        return ("ok", template.render(variables, Limits(max_output=20_000, max_seconds=2.0,
                                                        max_range=1000)))
    except TemplateLimitError as e:
        return ("limit", type(e).__name__)
    except TemplateError as e:
        return ("error", str(e))


def _fresh() -> dict[str, Any]:
    return {"x": {"a": [1, {"b": "c"}], "s": "text"}, "s": "Hello, World",
            "m": {"a": 1}, "l": JsonList([1, "two", None])}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_PIECES, max_size=40))
def test_compiled_templates_match_the_interpreter(pieces: list[str]) -> None:
    source = "".join(pieces)
    try:
        compiled = Template(source)
    except TemplateSyntaxError:
        return
    interpreted = Template(source, compiled=False)
    assert compiled.is_compiled
    assert _outcome(compiled, _fresh()) == _outcome(interpreted, _fresh())


def test_deep_templates_fall_back_to_the_interpreter() -> None:
    """Python refuses more than 20 nested loops; such a template is interpreted."""
    source = "#foreach($i in [1])" * 30 + "x" + "#end" * 30
    template = Template(source)
    assert not template.is_compiled
    assert template.render({}) == "x"


def test_set_whitespace_of_velocity_1() -> None:
    """Velocity's own space-gobbling test (set.vtl) in its 1.x-compatible mode."""
    source = ("#set($foo = 'foo')\n #set($foo = 'foo')\n#set($foo = 'foo') postfix\n"
              " #set($foo = 'foo') postfix\nprefix #set($foo = 'foo')\n"
              "prefix #set($foo = 'foo') postfix\n")
    expected = " postfix\n  postfix\nprefix prefix  postfix\n"
    assert r(source) == expected
    assert Template(source, compiled=False).render({}) == expected


def test_set_keeps_blanks_that_follow_text() -> None:
    """Velocity 1.x: blanks before #set go only when nothing but blanks separate it from
    the previous directive or reference; after text (a newline included) they stay."""
    assert r("{\n  #set($a = 1)\n  \"a\": $a\n}") == "{\n    \"a\": 1\n}"
    assert r("#if(true)\n  #set($a = 1)\n  x$a\n#end") == "  x1\n"
    assert r("$s  #set($a = 1)!", s="S") == "S!"


# -- what the compiled form does differently, checked against the interpreter --------------


def _both(source: str, variables: dict[str, Any], limits: Limits = DEFAULT_LIMITS
          ) -> tuple[tuple[str, str], tuple[str, str]]:
    def outcome(template: Template) -> tuple[str, str]:
        try:
            return ("ok", template.render(dict(variables), limits))
        except TemplateLimitError as e:
            return ("limit", type(e).__name__)
        except TemplateError as e:
            return ("error", str(e))

    compiled = Template(source)
    assert compiled.is_compiled
    return outcome(compiled), outcome(Template(source, compiled=False))


@pytest.mark.parametrize("source", [
    # runs of text and references appended at once, longer than one run
    "".join(f"<$m.a{i}>" for i in range(20)),
    "a$m.k.k b$m.missing.k c$!m.k d${m.k}e",
    # #set through a chain, onto null owners and through an index
    "#set($m.k.k = 5)$m.k.k|#set($m.none.k = 1)$m.none|#set($l[0] = 9)$l",
    # $foreach.* read directly from the loop state, and after $foreach is replaced
    "#foreach($i in [1, 2, 3])$foreach.index$foreach.count$foreach.first$foreach.last"
    "$foreach.hasNext;#end",
    "#foreach($i in [1, 2])#set($foreach = 'x')$foreach.hasNext$foreach;#end$foreach",
    # boolean conditions tested directly, others by Velocity's truth
    "#if($m.k == 1 && !$missing)a#end#if($m.k + 1)b#end#if($l.isEmpty())c#else d#end",
    # numbers and other values in runs
    "$m.k $m.f $m.t $m.n $m.l $m.j",
])
def test_compiled_forms_match_the_interpreter(source: str) -> None:
    variables = {"m": {"k": {"k": 1}, "f": 16.49, "t": True, "n": None,
                       "l": JsonList([1, {"a": "b"}]), "j": JavaList([1, "x"]),
                       **{f"a{i}": i for i in range(20)}},
                 "l": JsonList([1, 2])}
    compiled, interpreted = _both(source, variables)
    assert compiled == interpreted
    assert compiled[0] == "ok"


def test_output_bound_holds_for_runs_of_references() -> None:
    """A run appends several values before its one check: the bound still holds."""
    source = "$s$s$s$s$s$s$s$s$s$s"
    limits = Limits(max_output=35)
    assert _both(source, {"s": "0123456789"}, limits) == (("limit", "TemplateLimitError"),) * 2
    assert _both(source, {"s": "012"}, limits)[0] == ("ok", "012" * 10)


def test_render_time_bound_holds_with_the_clock_read_every_16_iterations() -> None:
    """The compiled loop reads the clock on its first iteration and every 16th."""
    template = Template("#foreach($i in [1..3])x#end")
    with pytest.raises(TemplateLimitError, match="longer than"):
        template.render({}, Limits(max_seconds=-1.0))
    nested = Template("#foreach($i in [1..1000])#foreach($j in [1..1000])#end#end")
    with pytest.raises(TemplateLimitError, match="longer than"):
        nested.render({}, Limits(max_seconds=0.05))


def test_walk_reads_each_property_in_turn() -> None:
    class Obj(VtlObject):
        def vtl_get(self, name: str) -> Any:
            return {"inner": {"k": name}} if name == "a" else None

    assert walk({"a": {"b": 1}}, ("a", "b")) == 1
    assert walk({"a": None}, ("a", "b")) is None
    assert walk(Obj(), ("a", "inner", "k")) == "a"
    assert walk("text", ("empty",)) is False
    assert Obj().vtl_get_path(("a", "inner", "k")) == "a"
    assert render("$o.a.inner.k|$o.b.c", {"o": Obj()}) == "a|"


# -- variables in Python locals, $foreach from the loop index, typed roots ------------------

_LOCAL_PIECES = st.sampled_from([
    "$x", "$i", "$j", "$s", "$m.a", "$i.b", "${i}", "$!j", "#set($x = ", "#set($i = ",
    "#set($m.a = $i)", "#foreach($i in $l)", "#foreach($j in [1, 'two', 3.5])",
    "#foreach($i in [1..3])", "#end", "#if(", "#else", ")", "(", "#break", "#stop",
    '"$i"', '"#set($x = $i)"', '"#foreach($k in [1,2])$foreach.index#end"', "[$i..3]",
    "-$i", "$velocityCount", "$foreach.hasNext", "$foreach.index", "$foreach.count",
    "$foreach.first", "$foreach.last", "$foreach", "$foreach.hasNext()",
    "#set($foreach = 1)", "$i == 'a'", "'two' != $j", "$x.get('k')", "$l.add($i)", "1",
    ",", " ", "\n", "x", "]", "[",
])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_LOCAL_PIECES, max_size=30), i=_VALUES)
def test_variables_in_locals_match_the_interpreter(pieces: list[str], i: Any) -> None:
    """Loop variables, ``#set`` targets and roots kept in Python locals, ``$foreach``
    computed from the loop index: the same output as the interpreter's dict of
    variables, whatever mix of strings, fallbacks and loops reads them."""
    _compare_with_locals("".join(pieces), i)


_COMMON_ATOMS = st.sampled_from([
    "$x", "$i", "$j", "$k", "$s", "$m.a", "$i.b", "$!j", "$velocityCount",
    "$foreach.hasNext", "$foreach.index", "$foreach.count", "$foreach.first",
    "$foreach.last", "#set($x = $i)", "#set($i = 'set')", "#set($m.a = $j)", "#break",
    ",", " ", "x",
])
#: rarer: each keeps $foreach or a variable out of the locals for the whole template
_RARE_ATOMS = st.sampled_from([
    "$foreach", "$foreach.hasNext()", "#set($foreach = 1)", "#set($x = [$i..2])",
    "#set($x = -$j)", "$l.add($i)",
])
_LOCAL_ATOMS = st.one_of(*[_COMMON_ATOMS] * 8, _RARE_ATOMS)


def _nest_plain(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Loops and conditions only: ``$foreach`` from the loop index, every variable a
    local."""
    loops = st.sampled_from(["#foreach($i in $l)", "#foreach($j in [1, 'two', 3.5])",
                             "#foreach($x in [$i, $j])", "#foreach($k in $m)"])
    conditions = st.sampled_from(["$foreach.hasNext", "$foreach.last", "!$foreach.first",
                                  "$j == 'two'"])
    return st.one_of(
        st.tuples(loops, inner).map(lambda t: f"{t[0]}{t[1]}#end"),
        st.lists(inner, max_size=4).map("".join),
        st.tuples(conditions, inner, inner).map(lambda t: f"#if({t[0]}){t[1]}#else{t[2]}#end"))


def _nest(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    loops = st.sampled_from(["#foreach($i in $l)", "#foreach($j in [1, 'two', 3.5])",
                             "#foreach($i in [1..3])", "#foreach($k in $m)",
                             "#foreach($x in [$i, $j])"])
    conditions = st.sampled_from(["$i", "$foreach.hasNext", "$foreach.last", "$j == 'two'",
                                  "!$foreach.first", "$x"])
    loop = st.tuples(loops, inner).map(lambda t: f"{t[0]}{t[1]}#end")
    sequence = st.lists(inner, max_size=4).map("".join)
    return st.one_of(
        loop, loop, sequence, sequence,
        st.tuples(conditions, inner, inner).map(lambda t: f"#if({t[0]}){t[1]}#else{t[2]}#end"),
        # an interpolated string: its own function over the variables dict
        inner.map(lambda body: '#set($y = "' + body.replace('"', '""') + '")$y'),
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.recursive(_COMMON_ATOMS, _nest_plain, max_leaves=20)
       | st.recursive(_LOCAL_ATOMS, _nest, max_leaves=25), i=_VALUES)
def test_nested_loops_and_strings_match_the_interpreter(source: str, i: Any) -> None:
    """The same over well-formed nests of loops, conditions and strings."""
    _compare_with_locals(source, i)


def _compare_with_locals(source: str, i: Any) -> None:
    """The compiled and interpreted ``source`` agree, with ``$i`` and the loop names
    set before the template starts."""
    try:
        compiled = Template(source)
    except TemplateSyntaxError:
        return
    assert compiled.is_compiled

    def fresh() -> dict[str, Any]:
        return {**_fresh(), "i": i, "foreach": "outer", "velocityCount": 7}

    assert _outcome(compiled, fresh()) == _outcome(Template(source, compiled=False), fresh())


@pytest.mark.parametrize("source", [
    # the loop variable and $foreach/$velocityCount are restored after the loop
    "#set($i = 'before')#foreach($i in [1, 2])$i$velocityCount#end$i$velocityCount",
    "#foreach($i in [1, 2])#foreach($j in ['a', 'b'])$foreach.index$foreach.hasNext"
    "#end$foreach.index$foreach.last;#end$foreach",
    # read and written by an interpolated string (the variables dict) and the template
    '#set($x = 1)#set($y = "#set($x = 2)")$x#foreach($i in [1])"$i"#set($z = "$i")$z#end',
    # a literal list is shared between renders: nothing may change it
    "#foreach($i in [1, 2])#set($i = 5)$i#end",
    # ranges and negation (the interpreter's nodes) see the locals' values
    "#set($n = 2)#foreach($i in [1..$n])$i#end#set($m = -$n)$m",
    # #break from the loop and from a string inside it
    '#foreach($i in [1, 2, 3])$i#if($i == 2)#break#end#end'
    '#foreach($i in [1, 2])"#break"$i#end|',
])
def test_variables_in_locals_forms_match_the_interpreter(source: str) -> None:
    template = Template(source)
    first = _outcome(template, {"foreach": "F", "velocityCount": "V"})
    assert first == _outcome(Template(source, compiled=False),
                             {"foreach": "F", "velocityCount": "V"})
    assert first[0] == "ok"
    assert _outcome(template, {"foreach": "F", "velocityCount": "V"}) == first


_MAP_KEYS = st.sampled_from(["a", "b", "size", "class", "empty"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(_VALUES | st.dictionaries(_MAP_KEYS, _VALUES, max_size=3), max_size=4),
       names=st.lists(_MAP_KEYS, min_size=2, max_size=4), root=_VALUES)
def test_repeated_map_tests_in_a_run_match_the_interpreter(
        items: list[Any], names: list[str], root: Any) -> None:
    """A run reading several properties of one variable (tested for being a map once,
    before the run) renders as the interpreter does, whatever the variable holds: maps,
    lists, strings, numbers, null; in a loop (the variable changes per item) and at
    the top level, after a #set."""
    reads = ",".join(f"$it.{n}" for n in names)
    tops = ",".join(f"$r.{n}" for n in names)
    source = (f"#foreach($it in $items)[{reads}]#if($foreach.hasNext);#end#end"
              f"|{tops}|#set($r = $items)[{tops}]$it")
    compiled = Template(source)
    assert compiled.is_compiled

    def fresh() -> dict[str, Any]:
        return {"items": JsonList(items), "r": root, "it": "before"}

    assert _outcome(compiled, fresh()) == _outcome(Template(source, compiled=False), fresh())


class _Counted(VtlObject):
    """A root whose compiled shortcuts count their calls."""

    calls: list[str] = []
    label = ""

    def vtl_get(self, name: str) -> Any:
        return f"get:{name}{self.label}"

    def vtl_call(self, name: str, args: list[Any]) -> Any:
        return f"call:{name}{args}" if name != "big" else "x" * 100

    @classmethod
    def vtl_compile_get(cls, names: tuple[str, ...]) -> Any:
        if names[0] == "generic":
            return None

        def get(obj: _Counted) -> Any:
            cls.calls.append("get")
            return obj.vtl_get(names[0]) if len(names) == 1 else obj.vtl_get_path(names)
        return get

    @classmethod
    def vtl_compile_call(cls, name: str, args: tuple[Any, ...]) -> Any:
        def call(obj: _Counted, *values: Any) -> Any:
            cls.calls.append(f"call{args}")
            return obj.vtl_call(name, list(values))
        return call

    @classmethod
    def vtl_compile_set(cls, names: tuple[str, ...], key: str) -> Any:
        if names[0] == "generic":
            return None

        def set_(obj: _Counted, value: Any) -> None:
            cls.calls.append(f"set{names}")
            owner = obj.vtl_get(names[0]) if len(names) == 1 else obj.vtl_get_path(names)
            set_property(owner, key, value)
        return set_


def test_typed_roots_call_what_their_class_compiles() -> None:
    source = "$o.a|$o.a.b|$o.generic|$o.m(1, $s)|$o.m('k').length()|$!o.m($nothing)"
    template = Template(source, types={"o": _Counted})
    _Counted.calls.clear()
    out = template.render({"o": _Counted(), "s": "S"})
    assert out == Template(source, compiled=False).render({"o": _Counted(), "s": "S"})
    assert out == "get:a||get:generic|call:m[1, 'S']|11|call:m[None]"
    assert _Counted.calls == ["get", "get", f"call{(1, COMPUTED)}", "call('k',)",
                              f"call{(COMPUTED,)}"]


def test_typed_roots_of_another_type_take_the_generic_path() -> None:
    template = Template("$o.a|$o.m(1)", types={"o": _Counted})
    _Counted.calls.clear()
    assert template.render({"o": {"a": "map"}}) == "map|"
    assert template.render({}) == "|"
    assert _Counted.calls == []
    # a root the template replaces is never trusted to keep its type
    replaced = Template("#set($o = {'a': 1})$o.a", types={"o": _Counted})
    assert replaced.render({"o": _Counted()}) == "1"
    assert _Counted.calls == []


_TYPED_ENTRY_PIECES = st.sampled_from([
    "$o.a", "$o.a.b", "$o.generic", "$o.m(1, $s)", "$o.m('k').length()", "$!o.m($nothing)",
    "$p.a", "$p.m($o.a)", '"$o.a"', '#set($s = "$p.a")', "#set($o = {'a': 1})",
    "#set($s = $o.a)", "$s", "#foreach($i in [1, 2])$o.m($i)$p.a#end", "#if($o.a)y#end",
    "#set($p.a = 2)", "#set($o.a.b = 1)", "#set($o.m = {})", "#set($o.generic.x = 1)",
    "$o", "#stop", " ", "|",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_TYPED_ENTRY_PIECES, max_size=12))
def test_the_typed_entry_renders_what_render_renders(pieces: list[str]) -> None:
    """``render_typed`` (typed roots as arguments, no guards) renders, fails and calls
    the typed roots exactly as ``render`` with every root in the variables, whether the
    template has a typed entry or not (a root read by a string or replaced by ``#set``);
    with other names, or for a template without types, it renders through ``render``."""
    source = "".join(pieces)
    template = Template(source, types={"p": _Counted, "o": _Counted})

    def outcome(typed: bool, names: tuple[str, ...] = ("o", "p"),
                used: Template = template) -> tuple[Any, ...]:
        _Counted.calls.clear()
        roots = (_Counted(), _Counted())
        roots[1].label = "'"  # which root is which shows in the output
        try:
            if typed:
                out = used.render_typed(names, roots, {"s": "S"})
            else:
                out = used.render({**dict(zip(names, roots, strict=True)), "s": "S"})
        except TemplateError as e:
            out = f"error: {e}"
        return out, list(_Counted.calls)

    assert outcome(True) == outcome(False)
    assert outcome(True, ("p", "o")) == outcome(False, ("p", "o"))
    untyped = Template(source)
    assert outcome(True, used=untyped) == outcome(False, used=untyped)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_TYPED_ENTRY_PIECES | st.sampled_from([
           "#foreach($i in [1, 2, 3])$i$c.a#end", "#foreach($i in ['x'])[$i]#end",
           "#set($s = $c.a)", "$c.a", "#set($t = 'T')$t", '#set($s = "new")', '"$s"',
           "#break", "static text, longer than twelve", '#set($t = "[$s]")', "#if($o.a)",
           "#end"]), max_size=12),
       limits=st.sampled_from([DEFAULT_LIMITS, Limits(max_output=12), Limits(foreach_limit=1),
                               Limits(foreach_limit=0)]))
@example(pieces=["$o.a", '#set($s = "new")', '#set($t = "[$s]")'], limits=DEFAULT_LIMITS)
@example(pieces=["#if($o.a)", "static text, longer than twelve", "#end", "#stop"],
         limits=Limits(max_output=12))
@example(pieces=["$o.a", "#break", "$o.a"], limits=DEFAULT_LIMITS)
@example(pieces=["#foreach($i in [1, 2, 3])$i$c.a#end"], limits=Limits(foreach_limit=1))
def test_a_typed_renderer_renders_what_render_typed_renders(
        pieces: list[str], limits: Limits) -> None:
    """``Template.typed_renderer(names, limits)`` (the entry, copy and bounds worked out
    once) renders, fails, calls the typed roots and leaves the caller's variables exactly
    as ``render_typed`` with the same names and limits: for the general template and its
    specialised copy (whose unrolled loop a low ``foreach_limit`` sends back to the
    general one), with the names in either order (the other order takes the generic
    entry), and for a template without types."""
    source = "".join(pieces)
    try:
        general = Template(source, types={"p": _Counted, "o": _Counted})
    except TemplateSyntaxError:  # ("#break" + "#end" ends nothing)
        return

    def outcome(render: Any) -> tuple[Any, ...]:
        _Counted.calls.clear()
        roots = (_Counted(), _Counted())
        roots[1].label = "'"  # which root is which shows in the output
        variables = {"s": "S", "c": {"a": "A"}}
        try:
            out = render(variables, roots)
        except TemplateError as e:
            out = f"{type(e).__name__}: {e}"
        return out, list(_Counted.calls), variables

    for template in (general, general.specialised({"c": {("a",): "A"}}), Template(source)):
        for names in (("o", "p"), ("p", "o")):
            renderer = template.typed_renderer(names, limits)
            assert outcome(lambda v, roots, f=renderer: f(v, *roots)) == outcome(
                lambda v, roots, t=template, n=names: t.render_typed(n, roots, v, limits))


def test_typed_method_results_keep_the_string_bound() -> None:
    template = Template("#set($x = $o.big())done", types={"o": _Counted})
    with pytest.raises(TemplateLimitError):
        template.render({"o": _Counted()}, Limits(max_output=50))


@pytest.mark.parametrize("source", [
    "#set($x = 2)#set($y = 3)$x$y",
    '#set($y = "#set($x = 5)")$x',
    "#foreach($x in [1, 2])$x#end#set($z = [1..$x])",
    "#foreach($x in [1, 2])#set($s = \"$x\")#end",
])
def test_rendering_never_changes_the_callers_variables(source: str) -> None:
    variables = {"x": 1, "s": "s"}
    for compiled in (True, False):
        Template(source, compiled=compiled).render(variables)
        assert variables == {"x": 1, "s": "s"}


def test_floats_render_like_java_in_runs_and_alone() -> None:
    values = [16.49, 0.001, 9999999.0, 1e7, 1e-4, -0.5, -1e7, 0.0, -0.0, 1e300,
              float("nan"), float("inf"), 2.5e-3, 123456.789]
    source = "#foreach($v in $l)$v|$v.toString()|#end"
    expected = "".join(f"{java_double(v)}|{java_double(v)}|" for v in values)
    for compiled in (True, False):
        assert Template(source, compiled=compiled).render({"l": JsonList(values)}) == expected


# -- partial evaluation: a specialised copy renders what the template renders ----------------

_CONSTANT_ROOTS = {"c": {("a",): "A", ("b",): 2, ("t",): True, ("n",): None,
                         ("f",): 1.5, ("d", "x"): "deep"},
                   "sv": {("x",): "X", ("y",): "y'\"$"}}

_SPEC_ATOMS = st.sampled_from([
    "$c.a", "$c.b", "$c.t", "$c.n", "$c.f", "$!c.n", "$c.d.x", "$c.d", "$c.other", "$c.a.length()",
    "$sv.x", "$sv.y", "$sv.z", "$i", "$j", "$x", "$foreach.hasNext", "$foreach.index",
    "$foreach.count", "$foreach.first", "$foreach.last", "$foreach", "$velocityCount",
    '"$c.a-$sv.x"', '#set($y = "$c.a$i")$y', "#set($x = $c.b)", "#set($c.a = 'set')",
    "#set($c.r.k = 1)", "#set($sv.x = 'w')", "$sv.put('x', 'p')", "#set($k = $c)$k.a",
    "#set($c = {'a': 'new'})", "#break", "#stop", ",", " ", "\n", "x",
])


def _spec_nest(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    loops = st.sampled_from([
        "#foreach($i in ['p', 'q', 'r'])", "#foreach($j in [1, 'two', true])",
        "#foreach($i in [$c.a, $sv.x])", "#foreach($i in [])", "#foreach($j in [1.5, 2])",
        "#foreach($i in $l)", "#foreach($c in ['shadow'])", "#foreach($i in [null, 'n'])",
        "#foreach($i in [1..3])"])
    conditions = st.sampled_from([
        "$c.t", "$c.n", "$c.a == 'A'", "$c.b > 1", "!$c.t", "$sv.x != 'X'", "$i",
        "$foreach.hasNext", "$foreach.last", "$j == 'two'", "$c.a == $sv.x",
        "$c.t && $i", "$c.b < 'z'"])
    return st.one_of(
        st.tuples(loops, inner).map(lambda t: f"{t[0]}{t[1]}#end"),
        st.lists(inner, max_size=4).map("".join),
        st.tuples(conditions, inner, inner).map(
            lambda t: f"#if({t[0]}){t[1]}#else{t[2]}#end"),
        st.tuples(conditions, conditions, inner, inner).map(
            lambda t: f"#if({t[0]}){t[2]}#elseif({t[1]}){t[3]}#end"),
    )


#: atoms that fold to text inside a loop over a literal list (the loops that unroll)
_CONSTANT_ATOMS = st.sampled_from([
    "$i", "$j", "$c.a", "$c.b", "$c.t", "$c.n", "$sv.y", "$foreach.hasNext",
    "$foreach.index", "$foreach.count", "$foreach.first", "$foreach.last",
    "$velocityCount", "#if($foreach.hasNext),#end", "#if($foreach.last)L#else-#end",
    "#if($i == 'q')Q#end", '"$i$c.a"', ",", " ", "\n", "x",
])


def _spec_variables(i: Any) -> dict[str, Any]:
    return {"c": {"a": "A", "b": 2, "t": True, "n": None, "f": 1.5, "r": {},
                  "d": {"x": "deep"}},
            "sv": {"x": "X", "y": "y'\"$"}, "i": i, "l": JsonList(["l1", 2]),
            "foreach": "outer", "velocityCount": 7}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.recursive(_SPEC_ATOMS, _spec_nest, max_leaves=20)
       | st.recursive(_CONSTANT_ATOMS, _spec_nest, max_leaves=12), i=_VALUES,
       limit=st.sampled_from([1000, 2, 0]))
def test_specialised_templates_render_what_the_template_renders(
        source: str, i: Any, limit: int) -> None:
    """Constants folded in (references, ``#if`` on them, loops over literal lists
    unrolled, text merged) change nothing the template renders -- output, errors,
    bounds -- compiled or interpreted, also where the template writes to a constant's
    root (then that root is not folded) or a loop's limit is below an unrolled loop."""
    try:
        general = Template(source)
    except TemplateSyntaxError:
        return
    limits = Limits(max_output=20_000, max_seconds=2.0, max_range=1000, foreach_limit=limit)

    def outcome(template: Template) -> tuple[str, str]:
        try:
            return "ok", template.render(_spec_variables(i), limits)
        except TemplateLimitError as e:
            return "limit", type(e).__name__
        except TemplateError as e:
            return "error", str(e)

    writable = {"c": frozenset({"r"})}
    expected = outcome(Template(source, compiled=False))
    assert outcome(general) == expected
    specialised = general.specialised(_CONSTANT_ROOTS, writable)
    assert specialised.is_compiled
    assert outcome(specialised) == expected
    interpreted = Template(source, compiled=False).specialised(_CONSTANT_ROOTS, writable)
    assert not interpreted.is_compiled
    assert outcome(interpreted) == expected


def test_specialising_folds_constants_loops_and_conditions() -> None:
    """What the folding is for: the response template of bench/mapping.py keeps only its
    per-request holes."""
    source = ('{"s": "$c.a", "id": "$id",\n#if($c.a == "A")  "k": 1,\n#else  "k": 2,\n#end'
              '#foreach($r in ["x", "y"])  {"r": "$r"}#if($foreach.hasNext),#end\n#end}')
    folded = Template(source).specialised({"c": {("a",): "A"}})
    assert [type(n).__name__ for n in folded.nodes] == ["_Text", "_Output", "_Text"]
    assert folded.render({"id": 7, "c": {"a": "A"}}) == \
        Template(source).render({"id": 7, "c": {"a": "A"}})


@pytest.mark.parametrize("source", [
    "#set($c.a = 'mine')$c.a", "#set($k = $c)#set($k.a = 'mine')$c.a",
    "$c.put('a', 'mine')$c.a", "#foreach($c in [{'a': 'loop'}])$c.a#end",
    "#set($c = {'a': 'new'})$c.a", '#set($s = "#set($c.a = 1)")$c.a', "$c['a']",
])
def test_a_root_the_template_may_change_is_not_folded(source: str) -> None:
    assert foldable_roots(Template(source).nodes, {"c": {("a",): "A"}}, {}) == set()
    folded = Template(source).specialised({"c": {("a",): "A"}})
    assert folded.render({"c": {"a": "A"}}) == Template(source).render({"c": {"a": "A"}})
