"""twistgw: Amazon API Gateway definitions served on-prem, on Twisted.

The public API for plugin authors: the ``hookimpl`` marker, the values hooks receive and
return, and the errors that become AWS gateway responses.
"""

from __future__ import annotations

from .answer import Answer
from .errors import (
    AccessDenied,
    ApiConfigurationError,
    AuthorizerConfigurationError,
    BadRequestBody,
    BadRequestParameters,
    ConfigError,
    GatewayError,
    IntegrationFailure,
    IntegrationTimeout,
    InvalidApiKey,
    MissingAuthenticationToken,
    PluginError,
    QuotaExceeded,
    RequestTooLarge,
    Throttled,
    Unauthorized,
    UnsupportedMediaType,
)
from .hookspecs import hookimpl
from .models import (
    Allow,
    Context,
    Deny,
    Headers,
    InboundRequest,
    IntegrationRequest,
    IntegrationResponse,
    Principal,
    Response,
    Stash,
    StashKey,
)
from .registry import Registry

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "hookimpl",
    "Registry",
    "Answer",
    "Allow",
    "Context",
    "Deny",
    "Headers",
    "InboundRequest",
    "IntegrationRequest",
    "IntegrationResponse",
    "Principal",
    "Response",
    "Stash",
    "StashKey",
    "AccessDenied",
    "ApiConfigurationError",
    "AuthorizerConfigurationError",
    "BadRequestBody",
    "BadRequestParameters",
    "ConfigError",
    "GatewayError",
    "IntegrationFailure",
    "IntegrationTimeout",
    "InvalidApiKey",
    "MissingAuthenticationToken",
    "PluginError",
    "QuotaExceeded",
    "RequestTooLarge",
    "Throttled",
    "Unauthorized",
    "UnsupportedMediaType",
]
