"""``requestParameters`` of Lambda ``AWS`` integrations: headers of the Invoke API call.

On AWS the integration request of a Lambda non-proxy integration *is* an Invoke API call,
so ``integration.request.header.NAME`` mappings become its headers; the one that changes
what happens is ``X-Amz-Invocation-Type`` (``Event`` queues the function and answers 202,
``DryRun`` answers 204, ``RequestResponse`` is the default; aws-apigw-spec.md §3.7 and the
developer guide's set-up-lambda-integration-async).  Sources are resolved by the HTTP
plugin's compiler (:mod:`twistgw_http.params`, the same §3.2 rules); path and query string
targets would rewrite the Invoke API URL and are refused at load time, as are HTTP API
mappings (``overwrite:header.x``: not implemented for Lambda integrations).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twistgw_http.params import check_parameters, compile_parameters

from twistgw import ConfigError

if TYPE_CHECKING:
    from twistgw import Context
    from twistgw.definition import Integration

__all__ = ["invocation_type", "check_invoke_parameters", "mapped_headers",
           "INVOCATION_TYPE_HEADER"]

INVOCATION_TYPE_HEADER = "x-amz-invocation-type"


def check_invoke_parameters(integration: Integration) -> None:
    """Raise :class:`ConfigError` for a mapping a Lambda ``AWS`` integration cannot have:
    an invalid one by §3.2, or one that targets the path or the query string."""
    check_parameters(integration)
    for key in integration.request_parameters:
        if not key.startswith("integration.request.header."):
            file, _, path = integration.where.partition(": ")
            raise ConfigError(file, f"{path}.requestParameters.{key}",
                              "a Lambda integration's request is the Invoke API call; only "
                              "integration.request.header.NAME mappings (e.g. "
                              "X-Amz-Invocation-Type) apply; HTTP API mappings "
                              "(overwrite:, append:, remove:) and path or query string "
                              "targets are not implemented for Lambda; remove this one")


def mapped_headers(ctx: Context, integration: Integration
                   ) -> tuple[dict[str, str], list[tuple[str, str]], list[tuple[str, str]]]:
    """``(path, query, headers)`` the integration's mappings give this request."""
    return compile_parameters(integration).apply(ctx)


def invocation_type(ctx: Context, integration: Integration | None) -> str:
    """The ``X-Amz-Invocation-Type`` the mappings give this request (default
    ``RequestResponse``, also when the mapped source is absent, as AWS leaves the header
    unset)."""
    if integration is None or not integration.request_parameters:
        return "RequestResponse"
    _path, _query, headers = mapped_headers(ctx, integration)
    for name, value in reversed(headers):
        if name.lower() == INVOCATION_TYPE_HEADER:
            return value.strip() or "RequestResponse"
    return "RequestResponse"
