"""Immutable values that flow through the request pipeline and into hooks.

Hooks never see Twisted's ``Request``: they get these frozen attrs objects and return
changed copies made with :func:`attrs.evolve`.  That keeps plugins testable without a
reactor and lets the transport change underneath them.  Header values are ``str`` (latin-1
round-trip of the wire bytes), which is what Lambda events and mapping templates need.

The classes built on every request (``Headers``, ``InboundRequest``, ``Context``,
``IntegrationRequest``, ``IntegrationResponse``, ``Response``) keep their attributes in a
``__dict__`` rather than slots: a frozen slotted attrs class sets each field through
``object.__setattr__``, a dict-backed one stores into the dict, which made a MOCK request
~2 % cheaper.  ``Headers``, ``Context``, ``IntegrationRequest``, ``IntegrationResponse``
and ``Response`` have their ``__init__`` written out, so that a converter (a Python call)
runs only for a value that needs converting; ``tests/core/test_models.py`` checks each against the
``__init__`` attrs would generate.  The core constructs some of them with positional
arguments (cheaper than keywords; the same tests pin the order): add new fields at the
end, and to the written-out ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import attrs

if TYPE_CHECKING:
    from .definition import ApiDefinition, Integration, Operation
    from .deployment import ApiDeployment, Route, StageDeployment
    from .errors import GatewayError
    from .http import Handover

__all__ = [
    "Headers",
    "InboundRequest",
    "TlsInfo",
    "IntegrationRequest",
    "IntegrationResponse",
    "Response",
    "Principal",
    "Allow",
    "Deny",
    "Context",
    "Stash",
    "StashKey",
    "EMPTY_MAPPING",
    "freeze_mapping",
]

T = TypeVar("T")

EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})

#: ``object.__new__``: an instance without running ``__init__`` (:meth:`Headers.with_set`).
_new_object = object.__new__


def freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of a copy of ``value`` (attrs converter for mapping fields)."""
    if type(value) is MappingProxyType:  # the common case on the request path
        return value
    if not value:
        return EMPTY_MAPPING
    return MappingProxyType(dict(value))


@attrs.frozen(eq=True, slots=False, init=False)  # see the module docstring
class Headers:
    """An immutable, case-insensitive multi-map of header names to ``str`` values.

    Order and the sender's spelling of names are kept (REST Lambda events show header
    names as sent).  ``get`` returns the **last** value, API Gateway's rule for
    single-value views (aws-apigw-spec.md §11 q7); ``get_all`` returns every value.
    """

    items: tuple[tuple[str, str], ...] = ()
    #: Lower-cased name -> values, built on first lookup (headers are read several times
    #: per request; a scan with ``lower()`` per item each time was measurable).
    _index: dict[str, list[str]] | None = attrs.field(default=None, init=False, eq=False,
                                                        repr=False)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Written out: attrs' converter was one more Python call per Headers, and a
        # proxied request builds four.
        d = self.__dict__
        d["items"] = items if isinstance(items, tuple) else tuple(items)
        d["_index"] = None

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for key, value in self.items:
                lname = key.lower()
                found = index.get(lname)
                if found is None:
                    index[lname] = [value]
                else:
                    found.append(value)
            object.__setattr__(self, "_index", index)
        return index

    @classmethod
    def indexed(cls, items: tuple[tuple[str, str], ...], index: dict[str, list[str]]
                ) -> Headers:
        """Build from pairs and their lower-cased index (``name.lower()`` -> values in
        order), computed together by the HTTP layer in one pass; ``index`` must not be
        modified afterwards."""
        headers = cls(items)
        object.__setattr__(headers, "_index", index)
        return headers

    @classmethod
    def of(cls, mapping: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
        """Build from a dict or an iterable of pairs."""
        if isinstance(mapping, Mapping):
            return cls(tuple(mapping.items()))
        return cls(tuple(mapping))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The last value of ``name`` (case-insensitive), or ``default``."""
        index = self._index
        if index is None:
            index = self._lookup()
        found = index.get(name.lower())
        return found[-1] if found else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in the order received."""
        return list(self._lookup().get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name.lower() in self._lookup()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def lower_names(self) -> Iterable[str]:
        """The distinct names, lower-cased (a cheap view for membership tests)."""
        index = self._index
        if index is None:
            index = self._lookup()
        return index.keys()

    def names(self) -> list[str]:
        """Distinct names, first spelling seen wins, in order of first appearance."""
        seen: dict[str, str] = {}
        for k, _ in self.items:
            seen.setdefault(k.lower(), k)
        return list(seen.values())

    def with_added(self, name: str, value: str) -> Headers:
        """A copy with one more ``name: value`` line."""
        return Headers((*self.items, (name, value)))

    def with_set(self, name: str, value: str) -> Headers:
        """A copy where ``name`` has exactly the one value ``value``: these lines without
        ``name`` (case-insensitive), then ``name: value``.

        The copy's lines are worked out when first read (``items``, or anything reading
        them): a copy nothing reads, such as a MOCK integration request with a mapping
        template's ``requestOverride`` header, costs no pass over the lines.  A copy of
        a copy not yet read is made at once, so a chain of them never recurses.
        """
        if type(self) is _SetHeaders and "items" not in self.__dict__:
            # self is such a copy, not read yet
            return Headers((*self.without(name).items, (name, value)))
        headers: Headers = _new_object(_SetHeaders)
        d = headers.__dict__
        d["_index"] = None
        d["_set"] = (self, name, value)
        return headers

    def without(self, *names: str) -> Headers:
        """A copy without any of ``names``."""
        drop = {n.lower() for n in names}
        return Headers(tuple((k, v) for k, v in self.items if k.lower() not in drop))

    def to_dict_last(self) -> dict[str, str]:
        """``{name: last value}``, names as first spelled."""
        out: dict[str, str] = {}
        spelled: dict[str, str] = {}
        for k, v in self.items:
            key = spelled.setdefault(k.lower(), k)
            out[key] = v
        return out


class _SetHeaders(Headers):
    """:meth:`Headers.with_set`'s copy: a :class:`Headers` whose lines are worked out
    when first read.

    A class apart, because a class with ``__getattr__`` loses CPython's fast attribute
    reads on all its instances: every other :class:`Headers` keeps them.  Compares,
    hashes and prints as the :class:`Headers` of the same lines.
    """

    if not TYPE_CHECKING:  # (for mypy, no attribute is missing)
        def __getattr__(self, attribute):
            # Only called for an attribute not in __dict__: ``items`` the first time
            # it is read.
            d = self.__dict__
            if attribute == "items":
                pending = d.get("_set")
                if pending is not None:
                    base, name, value = pending
                    lname = name.lower()
                    d["items"] = (*[line for line in base.items
                                    if line[0].lower() != lname], (name, value))
                    d.pop("_set", None)  # (the base is no longer needed)
                if "items" in d:  # made here, or by another thread meanwhile
                    return d["items"]
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {attribute!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.items == other.items

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self.items != other.items

    __hash__ = Headers.__hash__

    def __repr__(self) -> str:
        return f"Headers(items={self.items!r})"


@attrs.frozen
class TlsInfo:
    """What the TLS layer learned about the client (mTLS listeners fill the cert fields)."""

    protocol: str = ""
    cipher: str = ""
    server_name: str | None = None
    client_cert_pem: str | None = None
    subject_dn: str | None = None
    issuer_dn: str | None = None
    serial_number: str | None = None
    not_before: str | None = None
    not_after: str | None = None


@attrs.frozen(slots=False)  # see the module docstring
class InboundRequest:
    """The method request as the client sent it, after the HTTP layer's checks.

    :ivar raw_path: the request-target path exactly as sent (percent-encoding kept).
    :ivar raw_query: the query string as sent (without ``?``).
    :ivar query: form-decoded ``(name, value)`` pairs in order; ``;`` splits like ``&``.
    :ivar body: the whole body (bounded by ``limits.max_body_bytes``).
    :ivar received_at: epoch seconds when the request line arrived.
    """

    method: str
    raw_path: str
    raw_query: str = ""
    query: tuple[tuple[str, str], ...] = ()
    headers: Headers = attrs.field(factory=Headers)
    body: bytes = b""
    client_ip: str = "127.0.0.1"
    client_port: int = 0
    listener: str = "default"
    scheme: str = "http"
    server_port: int = 0
    http_version: str = "HTTP/1.1"
    received_at: float = 0.0
    tls: TlsInfo | None = None

    @property
    def host(self) -> str:
        """The Host header (empty if absent, which the HTTP layer only allows on 1.0)."""
        return self.headers.get("host") or ""


@attrs.frozen(slots=False, init=False)  # see the module docstring
class IntegrationRequest:
    """What the gateway sends to the integration (the AWS "integration request").

    ``map_request`` impls return evolved copies.  ``uri`` is the integration URI after
    stage-variable substitution; Lambda integrations keep the function ARN there.
    ``extras`` carries integration-specific data, e.g. the Lambda event built for
    ``AWS_PROXY``.
    """

    method: str
    uri: str
    headers: Headers = attrs.field(factory=Headers)
    query: tuple[tuple[str, str], ...] = ()
    path_params: Mapping[str, str] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    body: bytes = b""
    timeout: float = 29.0
    extras: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)

    def __init__(self, method: str, uri: str, headers: Headers | None = None,
                 query: tuple[tuple[str, str], ...] = (),
                 path_params: Mapping[str, str] | None = EMPTY_MAPPING, body: bytes = b"",
                 timeout: float = 29.0, extras: Mapping[str, Any] | None = EMPTY_MAPPING
                 ) -> None:
        # Written out (see the module docstring): the converters are only called for a
        # mapping that is not already frozen.
        d = self.__dict__
        d["method"] = method
        d["uri"] = uri
        d["headers"] = Headers() if headers is None else headers
        d["query"] = query
        d["path_params"] = path_params if type(path_params) is MappingProxyType \
            else freeze_mapping(path_params)
        d["body"] = body
        d["timeout"] = timeout
        d["extras"] = extras if type(extras) is MappingProxyType else freeze_mapping(extras)

    def with_body(self, body: bytes, headers: Headers | None = None,
                  extras: Mapping[str, Any] | None = None) -> IntegrationRequest:
        """``attrs.evolve(self, body=body)`` (and ``headers``, ``extras`` when given):
        the other fields are already what ``__init__`` would store, so their dict is
        copied as it is (about half the constructor's cost, on every mapped request)."""
        d = self.__dict__.copy()
        d["body"] = body
        if headers is not None:
            d["headers"] = headers
        if extras is not None:
            d["extras"] = extras if type(extras) is MappingProxyType \
                else freeze_mapping(extras)
        new = _new_object(type(self))
        object.__setattr__(new, "__dict__", d)
        return new

    def with_body_later(
            self, body: bytes,
            make: Callable[[IntegrationRequest, T], tuple[Headers, Mapping[str, Any]]],
            arg: T) -> IntegrationRequest:
        """A copy with ``body`` whose ``headers`` and ``extras`` are ``make(self, arg)``,
        worked out when either is first read.

        For a change only some integrations read: a mapping template's
        ``requestOverride`` header travels in both, and a MOCK integration reads
        neither (building them was about 1.3 µs of a templated MOCK request).  ``make``
        must not fail (check what can fail first) and must return the same for the same
        arguments; other fields read at once, and the copy compares, prints and copies
        (:meth:`with_body`, :func:`attrs.evolve`) as the request of the same fields.
        A subclass's copy is made at once (of its class, as :meth:`with_body` makes it).
        """
        if type(self) is not IntegrationRequest and type(self) is not _LaterRequest:
            headers, extras = make(self, arg)
            return self.with_body(body, headers, extras)
        d = self.__dict__.copy()
        d["body"] = body
        d.pop("headers", None)  # (absent when self is such a copy, not read yet)
        d.pop("extras", None)
        d["_later"] = (self, make, arg)
        new = _new_object(_LaterRequest)
        object.__setattr__(new, "__dict__", d)
        return new


class _LaterRequest(IntegrationRequest):
    """:meth:`IntegrationRequest.with_body_later`'s copy: an :class:`IntegrationRequest`
    whose ``headers`` and ``extras`` are worked out when first read.

    A class apart for the reason :class:`_SetHeaders` is one (``__getattr__`` slows
    every instance's attribute reads).  Compares and prints as the
    :class:`IntegrationRequest` of the same fields.
    """

    if not TYPE_CHECKING:  # (for mypy, no attribute is missing)
        def __getattr__(self, attribute):
            # Only called for an attribute not in __dict__: ``headers`` or ``extras``
            # the first time either is read.
            d = self.__dict__
            if attribute == "headers" or attribute == "extras":
                later = d.get("_later")
                if later is not None:
                    base, make, arg = later
                    headers, extras = make(base, arg)
                    # (a field set since, by with_body's headers, stays)
                    d.setdefault("headers", headers)
                    d.setdefault("extras", extras if type(extras) is MappingProxyType
                                 else freeze_mapping(extras))
                    d.pop("_later", None)  # (the base is no longer needed)
                if attribute in d:  # made here, or by another thread meanwhile
                    return d[attribute]
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {attribute!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntegrationRequest):
            return NotImplemented
        return _request_fields(self) == _request_fields(other)

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, IntegrationRequest):
            return NotImplemented
        return _request_fields(self) != _request_fields(other)

    __hash__ = IntegrationRequest.__hash__

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}"
                           for f in attrs.fields(IntegrationRequest))
        return f"IntegrationRequest({fields})"


def _request_fields(request: IntegrationRequest) -> tuple[Any, ...]:
    """An integration request's fields in order (what attrs' ``__eq__`` compares)."""
    return tuple(getattr(request, f.name) for f in attrs.fields(IntegrationRequest))


@attrs.frozen(slots=False, init=False)  # see the module docstring
class IntegrationResponse:
    """What the integration answered (the AWS "endpoint response").

    :ivar metadata: integration facts for later phases, e.g. ``{"function_error":
        "Unhandled", "error_message": "..."}`` for Lambda, ``latency_ms`` for all.
    """

    status: int = 200
    headers: Headers = attrs.field(factory=Headers)
    body: bytes = b""
    metadata: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    #: Switch protocols instead of answering: see :attr:`Response.upgrade`.
    upgrade: Callable[[Handover], None] | None = attrs.field(default=None, eq=False)

    def __init__(self, status: int = 200, headers: Headers | None = None, body: bytes = b"",
                 metadata: Mapping[str, Any] | None = EMPTY_MAPPING,
                 upgrade: Callable[[Handover], None] | None = None) -> None:
        # Written out (see the module docstring).
        d = self.__dict__
        d["status"] = status
        d["headers"] = Headers() if headers is None else headers
        d["body"] = body
        d["metadata"] = metadata if type(metadata) is MappingProxyType \
            else freeze_mapping(metadata)
        d["upgrade"] = upgrade


@attrs.frozen(slots=False, init=False)  # see the module docstring
class Response:
    """The method response written to the client.

    :ivar upgrade: with status 101, the server writes nothing and calls
        ``upgrade(handover)`` instead: the connection is the plugin's from then on
        (a WebSocket).  The request went through resolution, ``authorize`` and
        ``integrate`` like any other, so refusals are ordinary responses; the core
        carries ``upgrade`` from the integration response to the response.
    """

    status: int = 200
    headers: Headers = attrs.field(factory=Headers)
    body: bytes = b""
    upgrade: Callable[[Handover], None] | None = attrs.field(default=None, eq=False)

    def __init__(self, status: int = 200, headers: Headers | None = None, body: bytes = b"",
                 upgrade: Callable[[Handover], None] | None = None) -> None:
        # Written out (see the module docstring): attrs' generated one took about twice
        # as long (its frozen-class setattr lookup and the factory default's test).
        d = self.__dict__
        d["status"] = status
        d["headers"] = Headers() if headers is None else headers
        d["body"] = body
        d["upgrade"] = upgrade


@attrs.frozen
class Principal:
    """Who the caller is, as an ``authorize`` impl established it.

    ``context`` becomes ``$context.authorizer.*`` (stringified primitives for REST).
    ``usage_identifier_key`` is the API key value an authorizer names (apiKeySource
    AUTHORIZER) or the one the API-key check accepted; ``api_key_id`` is set only once an
    API key was accepted, and fills ``$context.identity.apiKeyId`` / ``apiKey``.  A
    principal of ``kind == "api_key"`` only names a key (no authorizer ran), so it fills
    no ``$context.authorizer.*``; nor does one of ``kind == "iam"`` (a SigV4 caller), whose
    ``context`` holds ``accessKey``, ``accountId``, ``caller``, ``user`` and ``userArn`` for
    ``$context.identity.*``.
    """

    id: str
    kind: str = "custom"
    claims: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    context: Mapping[str, Any] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    usage_identifier_key: str | None = None
    api_key_id: str | None = None


@attrs.frozen
class Allow:
    """An ``authorize`` verdict letting the request through, optionally naming the caller."""

    principal: Principal | None = None


@attrs.frozen
class Deny:
    """An ``authorize`` verdict stopping the request with ``error``'s gateway response."""

    error: GatewayError


class StashKey(Generic[T]):
    """A typed key for :class:`Stash`; create one per module at import time."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    """Per-request storage for plugins, keyed by :class:`StashKey` (pytest's design).

    The only mutable member of :class:`Context`: it lets a plugin hand data from one of
    its hooks to a later one (e.g. a timer started in ``request_started``) without name
    collisions between plugins.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], object] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StashKey[T], default: T) -> T:
        """The value under ``key`` or ``default``.

        ``dict.get`` rather than catching ``KeyError``: a miss is the common case on some
        routes (the trace header's first lookup on every proxied request), and raising and
        catching cost five times a lookup."""
        return self._data.get(key, default)  # type: ignore[return-value]

    def setdefault(self, key: StashKey[T], default: T) -> T:
        """Like :meth:`dict.setdefault`."""
        return cast(T, self._data.setdefault(key, default))

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


@attrs.frozen(slots=False, init=False)  # see the module docstring
class Context:
    """Everything known about one request, handed to every request-path hook.

    Fields after ``request`` are ``None`` until the pipeline has resolved them (an error
    raised before routing sees no route).  ``path`` is the resource path the client asked
    for without stage or base path, exactly as AWS puts it in the Lambda event's
    ``path``; ``request_path`` is ``requestContext.path`` (with the stage).
    """

    request: InboundRequest
    request_id: str
    extended_request_id: str
    received_at: float
    deployment_api: ApiDeployment | None = None
    stage: StageDeployment | None = None
    route: Route | None = None
    method: str = ""
    path: str = ""
    request_path: str = ""
    path_params: Mapping[str, str] = attrs.field(default=EMPTY_MAPPING, converter=freeze_mapping)
    principal: Principal | None = None
    domain_name: str = ""
    base_path_matched: str | None = None
    trace_id: str | None = None
    stash: Stash = attrs.field(factory=Stash, eq=False)

    def __init__(self, request: InboundRequest, request_id: str, extended_request_id: str,
                 received_at: float, deployment_api: ApiDeployment | None = None,
                 stage: StageDeployment | None = None, route: Route | None = None,
                 method: str = "", path: str = "", request_path: str = "",
                 path_params: Mapping[str, str] | None = EMPTY_MAPPING,
                 principal: Principal | None = None, domain_name: str = "",
                 base_path_matched: str | None = None, trace_id: str | None = None,
                 stash: Stash | None = None) -> None:
        # Written out (see the module docstring).
        d = self.__dict__
        d["request"] = request
        d["request_id"] = request_id
        d["extended_request_id"] = extended_request_id
        d["received_at"] = received_at
        d["deployment_api"] = deployment_api
        d["stage"] = stage
        d["route"] = route
        d["method"] = method
        d["path"] = path
        d["request_path"] = request_path
        d["path_params"] = path_params if type(path_params) is MappingProxyType \
            else freeze_mapping(path_params)
        d["principal"] = principal
        d["domain_name"] = domain_name
        d["base_path_matched"] = base_path_matched
        d["trace_id"] = trace_id
        d["stash"] = Stash() if stash is None else stash

    @property
    def api(self) -> ApiDefinition | None:
        """The API definition being served (``None`` before API resolution)."""
        return self.deployment_api.definition if self.deployment_api is not None else None

    @property
    def operation(self) -> Operation | None:
        """The matched operation (``None`` before routing)."""
        return self.route.operation if self.route is not None else None

    @property
    def integration(self) -> Integration | None:
        """The matched operation's ``x-amazon-apigateway-integration``."""
        return self.route.operation.integration if self.route is not None else None

    @property
    def stage_variables(self) -> Mapping[str, str]:
        """The stage's variables (empty before stage resolution)."""
        return self.stage.variables if self.stage is not None else EMPTY_MAPPING

    @property
    def query_last(self) -> dict[str, str]:
        """Query parameters, last value wins (``queryStringParameters``)."""
        return dict(self.request.query)

    def plugin_settings(self, name: str) -> Mapping[str, Any]:
        """The ``plugins.settings.<name>`` section of the gateway config."""
        if self.deployment_api is None:
            return EMPTY_MAPPING
        return self.deployment_api.gateway.plugin_settings(name)
