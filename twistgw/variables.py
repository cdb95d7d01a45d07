"""``$context`` variables: one resolver shared by access logs, gateway responses, mappings.

Each name (``requestId``, ``identity.sourceIp``, ``error.messageString``...) maps to a
getter over the request's :class:`~twistgw.models.Context` and, once known, the
:class:`Finish` facts (status, response length, latencies, error).  Formats that use these
names compile once (per deployment) into a list of getters, so rendering a line is a few
attribute reads and a join.  An unset value is ``None``; the access log prints it as
``-`` like AWS (aws-apigw-spec.md §6.9).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .tracing import trace_root

if TYPE_CHECKING:
    from .errors import GatewayError
    from .models import Context

__all__ = ["Finish", "lookup", "Getter", "getter_for", "request_time", "ACCOUNT_ID",
           "ATTRIBUTES"]

#: The account id reported in ``$context.accountId`` and ARNs: configurable later; a fixed
#: 12-digit placeholder keeps ARNs well-formed.
ACCOUNT_ID = "000000000000"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")


@attrs.define
class Finish:
    """Facts known only after the response: what the access log and metrics report."""

    status: int | None = None
    response_length: int | None = None
    response_latency_ms: int | None = None
    integration_latency_ms: int | None = None
    integration_status: int | None = None
    error: GatewayError | None = None
    #: ``(phase, started, ended)`` in epoch seconds for the ``authorize`` and
    #: ``integrate`` phases that ran: what tracing exporters turn into spans.
    phases: list[tuple[str, float, float]] = attrs.field(factory=list)


Getter = Callable[["Context", "Finish | None"], Any]


_last_time: list[Any] = [-1, ""]


def request_time(epoch: float) -> str:
    """CLF time as AWS prints ``$context.requestTime``: ``04/Mar/2020:19:15:17 +0000``.

    The text of the last second is cached: every access-log line needs it.
    """
    second = int(epoch)
    cached = _last_time
    if cached[0] == second:
        return cached[1]  # type: ignore[no-any-return]
    t = time.gmtime(second)
    text = (f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
    cached[0], cached[1] = second, text
    return text


#: Principal kinds that name a caller without an authorizer: an API key alone, or IAM
#: (SigV4), whose caller fills ``$context.identity.*`` and no ``$context.authorizer.*``.
NOT_AUTHORIZERS = frozenset({"api_key", "iam"})


def _iam_identity(ctx: Context, field: str) -> Any:
    """``$context.identity.<field>`` of an IAM caller (``Principal.context``), else None."""
    p = ctx.principal
    return p.context.get(field) if p is not None and p.kind == "iam" else None


def _vpce_id(ctx: Context) -> str | None:
    """``$context.identity.vpceId``: the ``vpce`` id of the listener the request came in
    on (the on-prem stand-in for the interface VPC endpoint, docs/auth.rst), else None."""
    api = ctx.deployment_api
    if api is None:
        return None
    try:
        value = api.gateway.listener(ctx.request.listener).options.get("vpce")
    except KeyError:
        return None
    return value if isinstance(value, str) else None


def _api_type(ctx: Context) -> str | None:
    return ctx.deployment_api.config.type if ctx.deployment_api is not None else None


def _error_message_string(ctx: Context, fin: Finish | None) -> str | None:
    err = fin.error if fin is not None else None
    if err is None:
        return None
    text = json.dumps(err.message)
    return f" {text}" if err.spaced else text


def _route_key(ctx: Context, fin: Finish | None) -> str | None:
    if ctx.route is None:
        return None
    return ctx.route.operation.route_key


def _authorize_latency(ctx: Context, fin: Finish | None) -> int | None:
    for phase, started, ended in fin.phases if fin is not None else ():
        if phase == "authorize":
            return int((ended - started) * 1000)
    return None


def _integration_error(ctx: Context, fin: Finish | None) -> str | None:
    err = fin.error if fin is not None else None
    if err is None or err.status < 500:
        return None
    return err.message


_GETTERS: dict[str, Getter] = {
    "accountId": lambda c, f: ACCOUNT_ID,
    "apiId": lambda c, f: c.deployment_api.config.id if c.deployment_api else None,
    "awsEndpointRequestId": lambda c, f: None,
    "domainName": lambda c, f: c.domain_name or None,
    "domainPrefix": lambda c, f: c.domain_name.split(".", 1)[0] if c.domain_name else None,
    "extendedRequestId": lambda c, f: c.extended_request_id,
    "httpMethod": lambda c, f: c.method or c.request.method,
    "path": lambda c, f: c.request_path or c.request.raw_path,
    "protocol": lambda c, f: "HTTP/1.1",
    "requestId": lambda c, f: c.request_id,
    "requestTime": lambda c, f: request_time(c.received_at),
    "requestTimeEpoch": lambda c, f: int(c.received_at * 1000),
    "resourceId": lambda c, f: c.route.resource_id if c.route else None,
    "resourcePath": lambda c, f: c.route.operation.path if c.route else None,
    "routeKey": _route_key,
    "stage": lambda c, f: c.stage.name if c.stage else None,
    "endpointType": lambda c, f: c.deployment_api.config.endpoint_type
    if c.deployment_api else None,
    "isCanaryRequest": lambda c, f: None,
    "xrayTraceId": lambda c, f: trace_root(c),
    "customDomain.basePathMatched": lambda c, f: c.base_path_matched,
    "identity.sourceIp": lambda c, f: c.request.client_ip,
    "identity.userAgent": lambda c, f: c.request.headers.get("user-agent"),
    "identity.caller": lambda c, f: _iam_identity(c, "caller"),
    "identity.user": lambda c, f: _iam_identity(c, "user"),
    "identity.userArn": lambda c, f: _iam_identity(c, "userArn"),
    "identity.accountId": lambda c, f: _iam_identity(c, "accountId"),
    "identity.accessKey": lambda c, f: _iam_identity(c, "accessKey"),
    "identity.apiKey": lambda c, f: c.principal.usage_identifier_key
    if c.principal is not None and c.principal.api_key_id is not None else None,
    "identity.apiKeyId": lambda c, f: c.principal.api_key_id if c.principal else None,
    "identity.cognitoAuthenticationProvider": lambda c, f: None,
    "identity.cognitoAuthenticationType": lambda c, f: None,
    "identity.cognitoIdentityId": lambda c, f: None,
    "identity.cognitoIdentityPoolId": lambda c, f: None,
    "identity.principalOrgId": lambda c, f: None,
    "identity.vpcId": lambda c, f: None,
    "identity.vpceId": lambda c, f: _vpce_id(c),
    "identity.clientCert.clientCertPem": lambda c, f: c.request.tls.client_cert_pem
    if c.request.tls else None,
    "identity.clientCert.subjectDN": lambda c, f: c.request.tls.subject_dn
    if c.request.tls else None,
    "identity.clientCert.issuerDN": lambda c, f: c.request.tls.issuer_dn
    if c.request.tls else None,
    "identity.clientCert.serialNumber": lambda c, f: c.request.tls.serial_number
    if c.request.tls else None,
    "identity.clientCert.validity.notBefore": lambda c, f: c.request.tls.not_before
    if c.request.tls else None,
    "identity.clientCert.validity.notAfter": lambda c, f: c.request.tls.not_after
    if c.request.tls else None,
    "authorizer.principalId": lambda c, f: c.principal.id
    if c.principal is not None and c.principal.kind not in NOT_AUTHORIZERS else None,
    "error.message": lambda c, f: f.error.message if f and f.error else None,
    "error.messageString": _error_message_string,
    "error.responseType": lambda c, f: f.error.response_type if f and f.error else None,
    "error.validationErrorString": lambda c, f: f.error.validation_error
    if f and f.error else None,
    "status": lambda c, f: f.status if f else None,
    "responseLength": lambda c, f: f.response_length if f else None,
    "responseLatency": lambda c, f: f.response_latency_ms if f else None,
    "integrationLatency": lambda c, f: f.integration_latency_ms if f else None,
    "authorize.latency": _authorize_latency,
    "integrationStatus": lambda c, f: f.integration_status if f else None,
    "integration.latency": lambda c, f: f.integration_latency_ms if f else None,
    "integration.status": lambda c, f: f.integration_status if f else None,
    "integration.integrationStatus": lambda c, f: f.integration_status if f else None,
    "integration.error": _integration_error,
    "integrationErrorMessage": _integration_error,
    "dataProcessed": lambda c, f: (len(c.request.body) + (f.response_length or 0))
    if f else None,
    "apiType": lambda c, f: _api_type(c),
}

#: Names whose getter (above) reads one attribute of the request's :class:`Context` (a
#: dotted path): a caller reading one on every request may read it with
#: ``operator.attrgetter(path)`` (one C call instead of the getter's Python frame).  The
#: getters stay written out (the access log calls them); a test holds the two equal.
ATTRIBUTES: dict[str, str] = {
    "extendedRequestId": "extended_request_id",
    "requestId": "request_id",
    "identity.sourceIp": "request.client_ip",
    "customDomain.basePathMatched": "base_path_matched",
}


def _authorizer_getter(key: str) -> Getter:
    def get(c: Context, f: Finish | None) -> Any:
        if c.principal is None or c.principal.kind in NOT_AUTHORIZERS:
            return None
        if key.startswith("claims."):
            return c.principal.claims.get(key[len("claims."):])
        value = c.principal.context.get(key)
        return value

    return get


def getter_for(name: str) -> Getter | None:
    """The getter for ``$context.<name>``, or ``None`` if the name is unknown."""
    found = _GETTERS.get(name)
    if found is not None:
        return found
    if name.startswith("authorizer.") and len(name) > len("authorizer."):
        return _authorizer_getter(name[len("authorizer."):])
    return None


def lookup(ctx: Context, name: str, fin: Finish | None = None) -> Any:
    """The value of ``$context.<name>`` for this request (``None`` when unset/unknown)."""
    getter = getter_for(name)
    return getter(ctx, fin) if getter is not None else None


def names() -> list[str]:
    """Every fixed variable name (for docs and tests)."""
    return sorted(_GETTERS)
