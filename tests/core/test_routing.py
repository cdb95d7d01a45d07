"""Routing exactly as aws-apigw-spec.md §A.3-§A.5, on the trie and through the pipeline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twistgw.definition import ANY_METHODS
from twistgw.routing import Match, RouteTable, parse_query, split_path

if TYPE_CHECKING:
    from conftest import Builders, EchoProxy, HarnessFactory

    from twistgw.testing import GatewayHarness

SEVEN = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def table(*routes: str, default: str | None = None) -> RouteTable[str]:
    """A route table whose route values are the route keys themselves."""
    entries = [(r.split(" ", 1)[0], r.split(" ", 1)[1], r) for r in routes]
    return RouteTable(entries, default_route=default)


def hit(t: RouteTable[str], method: str, path: str) -> tuple[str, dict[str, str]] | None:
    m = t.match(method, path)
    return None if m is None else (m.route, dict(m.params))


# -- the trie ----------------------------------------------------------------------------------


def test_split_path() -> None:
    assert split_path("/") == []
    assert split_path("") == []
    assert split_path("/a/b") == ["a", "b"]
    assert split_path("/a/b/") == ["a", "b"]
    assert split_path("/a//b") == ["a", "", "b"]


def test_literal_beats_param_beats_greedy() -> None:
    t = table("GET /pets/mine", "GET /pets/{id}", "GET /{proxy+}")
    assert hit(t, "GET", "/pets/mine") == ("GET /pets/mine", {})
    assert hit(t, "GET", "/pets/7") == ("GET /pets/{id}", {"id": "7"})
    assert hit(t, "GET", "/pets/7/toys") == ("GET /{proxy+}", {"proxy": "pets/7/toys"})
    assert hit(t, "GET", "/pets") == ("GET /{proxy+}", {"proxy": "pets"})


def test_backtracking_from_a_literal_to_a_param() -> None:
    t = table("GET /a/b/d", "GET /a/{x}/c")
    assert hit(t, "GET", "/a/b/d") == ("GET /a/b/d", {})
    assert hit(t, "GET", "/a/b/c") == ("GET /a/{x}/c", {"x": "b"})


def test_backtracking_to_a_greedy_parameter() -> None:
    t = table("GET /a/b/c", "GET /a/{x}/y", "GET /a/{rest+}")
    assert hit(t, "GET", "/a/b/c") == ("GET /a/b/c", {})
    assert hit(t, "GET", "/a/b/y") == ("GET /a/{x}/y", {"x": "b"})
    assert hit(t, "GET", "/a/b/x") == ("GET /a/{rest+}", {"rest": "b/x"})
    assert hit(t, "GET", "/a/q/r/s") == ("GET /a/{rest+}", {"rest": "q/r/s"})


def test_backtracking_leaves_no_stale_parameters() -> None:
    t = table("GET /{a}/x/{b}", "GET /{a}/{proxy+}")
    assert hit(t, "GET", "/1/x/2") == ("GET /{a}/x/{b}", {"a": "1", "b": "2"})
    assert hit(t, "GET", "/1/x/2/3") == ("GET /{a}/{proxy+}", {"a": "1", "proxy": "x/2/3"})


def test_method_beats_any() -> None:
    t = table("GET /x", "ANY /x")
    assert hit(t, "GET", "/x") == ("GET /x", {})
    assert hit(t, "POST", "/x") == ("ANY /x", {})
    assert hit(t, "HEAD", "/x") == ("ANY /x", {})


def test_method_beats_any_on_a_greedy_resource() -> None:
    t = table("ANY /{proxy+}", "DELETE /{proxy+}")
    assert hit(t, "DELETE", "/a/b") == ("DELETE /{proxy+}", {"proxy": "a/b"})
    assert hit(t, "PUT", "/a/b") == ("ANY /{proxy+}", {"proxy": "a/b"})


def test_any_matches_exactly_the_seven_methods() -> None:
    assert frozenset(SEVEN) == ANY_METHODS
    t = table("ANY /x")
    for method in SEVEN:
        assert hit(t, method, "/x") == ("ANY /x", {}), method
    for method in ("TRACE", "CONNECT", "PROPFIND", "get", ""):
        assert t.match(method, "/x") is None, method


def test_head_is_not_served_by_get() -> None:
    t = table("GET /x")
    assert t.match("HEAD", "/x") is None
    assert t.match("POST", "/x") is None


def test_trailing_slash_is_ignored_for_matching() -> None:
    t = table("GET /a/b", "GET /{proxy+}")
    assert hit(t, "GET", "/a/b/") == ("GET /a/b", {})
    assert hit(t, "GET", "/proxy-value/") == ("GET /{proxy+}", {"proxy": "proxy-value"})


def test_greedy_needs_at_least_one_segment() -> None:
    t = table("GET /items/{id}", "GET /files/{path+}")
    assert t.match("GET", "/items/") is None
    assert t.match("GET", "/items") is None
    assert t.match("GET", "/items//") is None
    assert t.match("GET", "/files") is None
    assert t.match("GET", "/files/") is None
    assert hit(t, "GET", "/files/a") == ("GET /files/{path+}", {"path": "a"})


def test_root_resource() -> None:
    t = table("GET /", "GET /{proxy+}")
    assert hit(t, "GET", "/") == ("GET /", {})
    assert hit(t, "GET", "") == ("GET /", {})


def test_double_slash_inside_a_greedy_parameter_is_kept() -> None:
    t = table("ANY /{proxy+}")
    assert hit(t, "GET", "/proxy-value//double-slash") == (
        "ANY /{proxy+}", {"proxy": "proxy-value//double-slash"})


def test_empty_segment_never_matches_a_param() -> None:
    t = table("GET /a/{id}/b")
    assert t.match("GET", "/a//b") is None


def test_parameters_are_not_decoded() -> None:
    t = table("GET /users/{email}", "ANY /{proxy+}")
    assert hit(t, "GET", "/users/test%2Balias@gmail.com") == (
        "GET /users/{email}", {"email": "test%2Balias@gmail.com"})
    assert hit(t, "GET", "/users/a%2Fb") == ("GET /users/{email}", {"email": "a%2Fb"})


def test_default_route_catches_everything_else() -> None:
    t = table("GET /pets", default="$default")
    assert hit(t, "GET", "/pets") == ("GET /pets", {})
    assert hit(t, "POST", "/pets") == ("$default", {})
    assert hit(t, "TRACE", "/anything/at/all") == ("$default", {})
    assert len(t) == 2


def test_conflicting_definitions_are_refused() -> None:
    for routes in (("GET /a/{x}", "GET /a/{y}/b"), ("GET /a", "GET /a/"),
                   ("GET /{p+}", "POST /{q+}")):
        try:
            table(*routes)
        except ValueError:
            continue
        raise AssertionError(f"{routes} should be refused")


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from([*SEVEN, "ANY", "TRACE", ""]) | st.text(max_size=8),
       path=st.text(alphabet=st.sampled_from("/ab{}+%.;?#-_~xyz0\x00é"), max_size=40)
       | st.text(max_size=60))
def test_match_never_raises(method: str, path: str) -> None:
    t = table("GET /", "GET /a/b", "ANY /a/{x}", "GET /a/{x}/c", "POST /{proxy+}",
              "GET /b/{y}/{rest+}", default=None)
    result = t.match(method, path)
    assert result is None or isinstance(result, Match)
    t2 = table("GET /a", default="$default")
    assert t2.match(method, path) is not None


def test_five_thousand_routes() -> None:
    def entries(n: int) -> list[tuple[str, str, str]]:
        out: list[tuple[str, str, str]] = []
        for i in range(n):
            kind = i % 4
            if kind == 0:
                path = f"/r{i}/items"
            elif kind == 1:
                path = f"/r{i}/items/{{id}}"
            elif kind == 2:
                path = f"/r{i}/items/{{id}}/parts/{{part}}"
            else:
                path = f"/r{i}/{{proxy+}}"
            out.append(("GET", path, f"route-{i}"))
        return out

    small: RouteTable[str] = RouteTable(entries(10))
    large: RouteTable[str] = RouteTable(entries(5000))
    assert len(small) == 10
    assert len(large) == 5000
    for t, n in ((small, 10), (large, 5000)):
        for i in (0, 1, 2, 3, n - 4, n - 3, n - 2, n - 1):
            kind = i % 4
            if kind == 0:
                expected = (f"route-{i}", {})
                path = f"/r{i}/items"
            elif kind == 1:
                expected = (f"route-{i}", {"id": "42"})
                path = f"/r{i}/items/42"
            elif kind == 2:
                expected = (f"route-{i}", {"id": "7", "part": "x"})
                path = f"/r{i}/items/7/parts/x"
            else:
                expected = (f"route-{i}", {"proxy": "a/b/c"})
                path = f"/r{i}/a/b/c"
            assert hit(t, "GET", path) == expected, (n, path)
        assert t.match("GET", f"/r{n}/items") is None
        assert t.match("POST", "/r0/items") is None


# -- query strings (§A.5) ----------------------------------------------------------------------

#: The recorded request of §A.5; ``#`` starts the fragment, which never reaches the server.
A5_URL_QUERY = ("dateTimeOffset=2023-06-12T18:05:10.123456+00:00&email=test%2Balias@gmail.com"
                "&plus=test+alias@gmail.com&url=https://www.google.com/&whitespace=foo bar"
                "&zhash=abort/#&ignored=...")
A5_EXPECTED = (
    '{"dateTimeOffset": "2023-06-12T18:05:10.123456 00:00", "email": "test+alias@gmail.com",'
    ' "plus": "test alias@gmail.com", "url": "https://www.google.com/", "whitespace": '
    '"foo bar", "zhash": "abort/"}'
)


def test_query_example_of_a5_byte_for_byte() -> None:
    sent = A5_URL_QUERY.partition("#")[0]
    pairs = parse_query(sent)
    assert json.dumps(dict(pairs)) == A5_EXPECTED


def test_query_last_value_and_multi_value() -> None:
    pairs = parse_query("category=electronics&category=books&x=1")
    last = dict(pairs)
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    assert last == {"category": "books", "x": "1"}
    assert multi == {"category": ["electronics", "books"], "x": ["1"]}


def test_semicolon_splits_like_ampersand() -> None:
    assert parse_query("a=1;b=2&c=3") == (("a", "1"), ("b", "2"), ("c", "3"))


def test_query_edge_cases() -> None:
    assert parse_query("") == ()
    assert parse_query("flag&=v&&k=") == (("flag", ""), ("", "v"), ("k", ""))
    assert parse_query("a=%ZZ&b=%e2%82%ac&c=%ff") == (("a", "%ZZ"), ("b", "€"),
                                                      ("c", "\ufffd"))
    assert parse_query("k=a=b") == (("k", "a=b"),)


# -- through the pipeline ----------------------------------------------------------------------


def echo_harness(make_harness: HarnessFactory, b: Builders, paths: dict[str, Any],
                 **kw: Any) -> tuple[GatewayHarness, EchoProxy]:
    echo = b.echo()
    return make_harness(b.openapi(paths), plugins=[("echo", echo)], **kw), echo


def echoed(h: GatewayHarness, method: str, path: str, **kw: Any) -> dict[str, Any]:
    response = h.request(method, path, **kw)
    assert response.status == 200, (response.status, response.body)
    doc: dict[str, Any] = json.loads(response.body)
    return doc


def test_trailing_slash_kept_in_ctx_path(make_harness: HarnessFactory, b: Builders) -> None:
    h, _ = echo_harness(make_harness, b, {"/{proxy+}": {"x-amazon-apigateway-any-method":
                                                        b.proxy_op()}})
    doc = echoed(h, "GET", "/prod/proxy-value/")
    assert doc["params"] == {"proxy": "proxy-value"}
    assert doc["path"] == "/proxy-value/"
    assert doc["request_path"] == "/prod/proxy-value/"


def test_double_slash_after_the_stage_is_collapsed(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    h, _ = echo_harness(make_harness, b, {"/{proxy+}": {"x-amazon-apigateway-any-method":
                                                        b.proxy_op()}})
    doc = echoed(h, "GET", "/prod//proxy-value")
    assert doc["params"] == {"proxy": "proxy-value"}
    assert doc["path"] == "/proxy-value"
    assert doc["request_path"] == "/prod//proxy-value"


def test_inner_double_slash_preserved(make_harness: HarnessFactory, b: Builders) -> None:
    h, _ = echo_harness(make_harness, b, {"/{proxy+}": {"x-amazon-apigateway-any-method":
                                                        b.proxy_op()}})
    doc = echoed(h, "GET", "/prod/proxy-value//double-slash")
    assert doc["params"] == {"proxy": "proxy-value//double-slash"}
    assert doc["path"] == "/proxy-value//double-slash"


def test_raw_path_parameters(make_harness: HarnessFactory, b: Builders) -> None:
    h, _ = echo_harness(make_harness, b, {"/{proxy+}": {"x-amazon-apigateway-any-method":
                                                        b.proxy_op()}})
    raw = "proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com"
    doc = echoed(h, "GET", f"/prod/{raw}")
    assert doc["params"] == {"proxy": raw}
    assert doc["path"] == f"/{raw}"


def test_query_reaches_hooks_form_decoded(make_harness: HarnessFactory, b: Builders) -> None:
    h, echo = echo_harness(make_harness, b, {"/q": {"get": b.proxy_op()}})
    echoed(h, "GET", "/prod/q?" + A5_URL_QUERY.partition("#")[0] + "&category=a&category=b")
    ctx = echo.seen[-1]
    expected = json.loads(A5_EXPECTED)
    expected["category"] = "b"
    assert ctx.query_last == expected
    assert [v for k, v in ctx.request.query if k == "category"] == ["a", "b"]


def test_rest_unknown_path_and_method(make_harness: HarnessFactory, b: Builders) -> None:
    h = make_harness(b.openapi({"/pets": {"get": b.mock_op(200, '{"ok": 1}')}}))
    assert h.request("GET", "/prod/pets").status == 200
    for method, path in (("GET", "/prod/nope"), ("POST", "/prod/pets"), ("HEAD", "/prod/pets"),
                         ("GET", "/prod/pets/1"), ("GET", "/prod")):
        response = h.request(method, path)
        assert response.status == 403, (method, path)
        assert response.body == b'{"message":"Missing Authentication Token"}'
        assert response.headers.get("x-amzn-ErrorType") == "MissingAuthenticationTokenException"


def test_x_http_method_override_selects_the_method(make_harness: HarnessFactory,
                                                   b: Builders) -> None:
    h = make_harness(b.openapi({"/pets": {"delete": b.mock_op(202)}}))
    assert h.request("POST", "/prod/pets",
                     headers={"X-HTTP-Method-Override": "DELETE"}).status == 202
    assert h.request("POST", "/prod/pets").status == 403


# -- HTTP APIs (§A.4) --------------------------------------------------------------------------


def http_harness(make_harness: HarnessFactory, b: Builders, stages: list[Any] | None,
                 default_route: bool = False) -> GatewayHarness:
    paths: dict[str, Any] = {
        "/pets": {"get": b.proxy_op()},
        "/agents/{proxy+}": {"x-amazon-apigateway-any-method": b.proxy_op()},
    }
    if default_route:
        paths["/"] = {"x-amazon-apigateway-any-method": {**b.proxy_op(),
                                                         "isDefaultRoute": True}}
    return make_harness(b.openapi(paths), plugins=[("echo", b.echo())], api_type="HTTP",
                        stages=stages)


def test_http_api_default_stage(make_harness: HarnessFactory, b: Builders) -> None:
    h = http_harness(make_harness, b, None)
    doc = echoed(h, "GET", "/pets")
    assert (doc["stage"], doc["route"], doc["path"]) == ("$default", "GET /pets", "/pets")
    doc = echoed(h, "PATCH", "/agents/1234")
    assert doc["route"] == "ANY /agents/{proxy+}"
    assert doc["params"] == {"proxy": "1234"}


def test_http_api_named_stage_and_default_stage(make_harness: HarnessFactory,
                                                b: Builders) -> None:
    h = http_harness(make_harness, b, [{"name": "dev"}, {"name": "$default"}])
    doc = echoed(h, "GET", "/dev/agents/1234")
    assert (doc["stage"], doc["path"], doc["params"]) == ("dev", "/agents/1234",
                                                          {"proxy": "1234"})
    doc = echoed(h, "GET", "/agents/1234")
    assert (doc["stage"], doc["path"]) == ("$default", "/agents/1234")
    doc = echoed(h, "GET", "/pets")
    assert doc["stage"] == "$default"


def test_http_api_named_stage_only(make_harness: HarnessFactory, b: Builders) -> None:
    h = http_harness(make_harness, b, [{"name": "dev"}])
    assert echoed(h, "GET", "/dev/pets")["stage"] == "dev"
    for path in ("/pets", "/prod/pets", "/"):
        response = h.request("GET", path)
        assert (response.status, response.body) == (404, b'{"message":"Not Found"}'), path


def test_http_api_unmatched_route_is_404(make_harness: HarnessFactory, b: Builders) -> None:
    h = http_harness(make_harness, b, None)
    for method, path in (("POST", "/pets"), ("GET", "/nope"), ("GET", "/agents"),
                         ("HEAD", "/pets")):
        response = h.request(method, path)
        assert response.status == 404, (method, path)
        assert response.body == b'{"message":"Not Found"}'
        assert "apigw-requestid" in response.headers
        assert not [k for k, _ in response.headers if k.lower().startswith("x-amz")]


def test_http_api_default_route_fallback(make_harness: HarnessFactory, b: Builders) -> None:
    h = http_harness(make_harness, b, None, default_route=True)
    assert echoed(h, "GET", "/pets")["route"] == "GET /pets"
    doc = echoed(h, "POST", "/anything/else?x=1")
    assert doc["route"] == "$default"
    assert doc["path"] == "/anything/else"
    assert echoed(h, "DELETE", "/pets")["route"] == "$default"


# -- the match cache ---------------------------------------------------------------------------


def test_match_cache_answers_as_the_trie_and_is_read_only() -> None:
    t = table("GET /pets/{id}", "GET /{proxy+}", default="$default")
    for _ in range(2):  # the second round is answered from the cache
        assert hit(t, "GET", "/pets/7") == ("GET /pets/{id}", {"id": "7"})
        assert hit(t, "GET", "/a/b") == ("GET /{proxy+}", {"proxy": "a/b"})
        assert hit(t, "POST", "/pets/7") == ("$default", {})
    m = t.match("GET", "/pets/8")
    assert m is not None
    try:
        m.params["id"] = "9"  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("a cached match's parameters must be read-only")
    assert hit(t, "GET", "/pets/8") == ("GET /pets/{id}", {"id": "8"})


def test_match_cache_is_bounded() -> None:
    from twistgw import routing

    t = table("GET /pets/{id}")
    for i in range(routing.MATCH_CACHE_SIZE + 10):
        assert hit(t, "GET", f"/pets/{i}") == ("GET /pets/{id}", {"id": str(i)})
    assert len(t._cache) <= routing.MATCH_CACHE_SIZE
    long_path = "/pets/" + "x" * routing.MATCH_CACHE_MAX_PATH
    assert hit(t, "GET", long_path) == ("GET /pets/{id}", {"id": "x" * 256})
    assert ("GET", long_path) not in t._cache
    assert t.match("GET", "/nothing/here") is None
    assert t.match("GET", "/nothing/here") is None
