"""Errors: AWS gateway-response types raised on the request path, and config errors.

A request-path failure is raised as a :class:`GatewayError` naming one of API Gateway's
gateway-response types (aws-apigw-spec.md §4.1).  The core turns it into the response AWS
would give, after applying the API's ``x-amazon-apigateway-gateway-responses``.  Plugins
raise the same classes, so a plugin's refusal looks exactly like a builtin's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = [
    "GatewayError",
    "GATEWAY_RESPONSE_TYPES",
    "ResponseType",
    "AccessDenied",
    "ApiConfigurationError",
    "AuthorizerConfigurationError",
    "AuthorizerFailure",
    "BadRequestBody",
    "BadRequestParameters",
    "ExpiredToken",
    "IntegrationFailure",
    "IntegrationTimeout",
    "InvalidApiKey",
    "InvalidSignature",
    "MissingAuthenticationToken",
    "QuotaExceeded",
    "RequestTooLarge",
    "ResourceNotFound",
    "Throttled",
    "Unauthorized",
    "UnsupportedMediaType",
    "WafFiltered",
    "StageNotFound",
    "HttpApiNotFound",
    "PluginError",
    "ConfigError",
]


class _Default(enum.Enum):
    DEFAULT = "default"


_DEFAULT = _Default.DEFAULT


class ResponseType:
    """Static description of one gateway-response type (§4.1)."""

    __slots__ = ("error_type", "message", "name", "status")

    def __init__(self, name: str, status: int, error_type: str, message: str | None) -> None:
        self.name = name
        self.status = status
        self.error_type = error_type
        self.message = message

    def __repr__(self) -> str:
        return f"ResponseType({self.name!r}, {self.status})"


#: Every REST gateway-response type with AWS's default status, ``x-amzn-ErrorType`` and
#: message (aws-apigw-spec.md §4.1).  DEFAULT_4XX / DEFAULT_5XX carry no status of their own.
GATEWAY_RESPONSE_TYPES: dict[str, ResponseType] = {
    rt.name: rt
    for rt in (
        ResponseType("ACCESS_DENIED", 403, "AccessDeniedException",
                     "User is not authorized to access this resource with an explicit deny"),
        ResponseType("API_CONFIGURATION_ERROR", 500, "InternalServerErrorException",
                     "Internal server error"),
        ResponseType("AUTHORIZER_CONFIGURATION_ERROR", 500, "AuthorizerConfigurationException",
                     None),
        ResponseType("AUTHORIZER_FAILURE", 500, "AuthorizerFailureException",
                     "Internal server error"),
        ResponseType("BAD_REQUEST_PARAMETERS", 400, "BadRequestException",
                     "Missing required request parameters"),
        ResponseType("BAD_REQUEST_BODY", 400, "BadRequestException", "Invalid request body"),
        ResponseType("EXPIRED_TOKEN", 403, "ExpiredTokenException",
                     "The security token included in the request is expired"),
        ResponseType("INTEGRATION_FAILURE", 504, "InternalServerErrorException",
                     "Internal server error"),
        ResponseType("INTEGRATION_TIMEOUT", 504, "InternalServerErrorException",
                     "Endpoint request timed out"),
        ResponseType("INVALID_API_KEY", 403, "ForbiddenException", "Forbidden"),
        ResponseType(
            "INVALID_SIGNATURE", 403, "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided."
            " Check your AWS Secret Access Key and signing method. Consult the service"
            " documentation for details.",
        ),
        ResponseType("MISSING_AUTHENTICATION_TOKEN", 403, "MissingAuthenticationTokenException",
                     "Missing Authentication Token"),
        ResponseType("QUOTA_EXCEEDED", 429, "LimitExceededException", "Limit Exceeded"),
        ResponseType("REQUEST_TOO_LARGE", 413, "BadRequestException", "Request Too Long"),
        ResponseType("RESOURCE_NOT_FOUND", 404, "ResourceNotFoundException", "Not Found"),
        ResponseType("THROTTLED", 429, "TooManyRequestsException", "Too Many Requests"),
        ResponseType("UNAUTHORIZED", 401, "UnauthorizedException", "Unauthorized"),
        ResponseType("UNSUPPORTED_MEDIA_TYPE", 415, "BadRequestException",
                     "Unsupported Media Type"),
        ResponseType("WAF_FILTERED", 403, "ForbiddenException", "Forbidden"),
    )
}

#: Types that may appear as keys of ``x-amazon-apigateway-gateway-responses``.
CUSTOMIZABLE_RESPONSE_TYPES = frozenset(GATEWAY_RESPONSE_TYPES) | {"DEFAULT_4XX", "DEFAULT_5XX"}


class GatewayError(Exception):
    """A request-path failure that ends in a gateway response.

    :param message: the ``$context.error.message``; ``None`` renders as JSON ``null``.
    :param status: overrides the type's default status (e.g. 502 for Lambda failures,
        which AWS reports as INTEGRATION_FAILURE with status 502).
    :param headers: extra response headers (e.g. ``WWW-Authenticate``).
    :param spaced: render the default body as ``{"message": "..."}`` with a space, which
        AWS does for integration-side errors (the recorded 36-byte 5xx body, §4.2).
    """

    response_type: str = "API_CONFIGURATION_ERROR"
    spaced_default: bool = False

    def __init__(
        self,
        message: str | _Default | None = _DEFAULT,
        *,
        status: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        spaced: bool | None = None,
        validation_error: str | None = None,
    ) -> None:
        rt = GATEWAY_RESPONSE_TYPES[self.response_type]
        self.message: str | None = rt.message if isinstance(message, _Default) else message
        self.status = rt.status if status is None else status
        self.error_type = rt.error_type
        self.headers = tuple(headers)
        self.spaced = self.spaced_default if spaced is None else spaced
        self.validation_error = validation_error
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class AccessDenied(GatewayError):
    """403 ACCESS_DENIED: an authorizer, IAM or a resource policy said no."""

    response_type = "ACCESS_DENIED"


class ApiConfigurationError(GatewayError):
    """500 API_CONFIGURATION_ERROR: the API definition cannot serve this request."""

    response_type = "API_CONFIGURATION_ERROR"
    spaced_default = True


class AuthorizerConfigurationError(GatewayError):
    """500 AUTHORIZER_CONFIGURATION_ERROR: the authorizer could not produce a decision."""

    response_type = "AUTHORIZER_CONFIGURATION_ERROR"
    spaced_default = True  # AWS renders {"message": null} (aws-apigw-spec.md §4.2)


class AuthorizerFailure(GatewayError):
    """500 AUTHORIZER_FAILURE."""

    response_type = "AUTHORIZER_FAILURE"


class BadRequestBody(GatewayError):
    """400 BAD_REQUEST_BODY: the body failed the request validator's model."""

    response_type = "BAD_REQUEST_BODY"


class BadRequestParameters(GatewayError):
    """400 BAD_REQUEST_PARAMETERS: required request parameters missing or blank."""

    response_type = "BAD_REQUEST_PARAMETERS"


class ExpiredToken(GatewayError):
    """403 EXPIRED_TOKEN."""

    response_type = "EXPIRED_TOKEN"


class IntegrationFailure(GatewayError):
    """504 INTEGRATION_FAILURE (502 for Lambda failures; pass ``status=502``)."""

    response_type = "INTEGRATION_FAILURE"
    spaced_default = True


class IntegrationTimeout(GatewayError):
    """504 INTEGRATION_TIMEOUT: the integration exceeded timeoutInMillis."""

    response_type = "INTEGRATION_TIMEOUT"
    spaced_default = True


class InvalidApiKey(GatewayError):
    """403 INVALID_API_KEY."""

    response_type = "INVALID_API_KEY"


class InvalidSignature(GatewayError):
    """403 INVALID_SIGNATURE: SigV4 verification failed."""

    response_type = "INVALID_SIGNATURE"


class MissingAuthenticationToken(GatewayError):
    """403 MISSING_AUTHENTICATION_TOKEN: no resource or method matched (REST)."""

    response_type = "MISSING_AUTHENTICATION_TOKEN"


class QuotaExceeded(GatewayError):
    """429 QUOTA_EXCEEDED."""

    response_type = "QUOTA_EXCEEDED"


class RequestTooLarge(GatewayError):
    """413 REQUEST_TOO_LARGE: payload too large for the integration."""

    response_type = "REQUEST_TOO_LARGE"


class ResourceNotFound(GatewayError):
    """404 RESOURCE_NOT_FOUND."""

    response_type = "RESOURCE_NOT_FOUND"


class Throttled(GatewayError):
    """429 THROTTLED."""

    response_type = "THROTTLED"


class Unauthorized(GatewayError):
    """401 UNAUTHORIZED."""

    response_type = "UNAUTHORIZED"


class UnsupportedMediaType(GatewayError):
    """415 UNSUPPORTED_MEDIA_TYPE."""

    response_type = "UNSUPPORTED_MEDIA_TYPE"


class WafFiltered(GatewayError):
    """403 WAF_FILTERED."""

    response_type = "WAF_FILTERED"


class StageNotFound(GatewayError):
    """403 ``{"message":"Forbidden"}`` for a REST API path whose stage does not exist.

    AWS answers this before any API definition applies, so gateway-response
    customisation does not reach it (aws-apigw-spec.md §A.2 step 1).
    """

    response_type = "MISSING_AUTHENTICATION_TOKEN"

    def __init__(self) -> None:
        super().__init__("Forbidden")
        self.error_type = "ForbiddenException"


class HttpApiNotFound(GatewayError):
    """404 ``{"message":"Not Found"}``: no stage or route of an HTTP API matched (§4.4)."""

    response_type = "RESOURCE_NOT_FOUND"


class PluginError(GatewayError):
    """A plugin's hook implementation raised something other than a GatewayError.

    The client gets a 500 gateway response; the log names the plugin and the hook.
    """

    response_type = "API_CONFIGURATION_ERROR"
    spaced_default = True

    def __init__(self, plugin: str, hook: str) -> None:
        super().__init__()
        self.plugin = plugin
        self.hook = hook


class ConfigError(Exception):
    """A configuration problem found at load time.

    The message always names the file, the path inside it and what to do, e.g.
    ``gateway.yaml: apis[0].stages[1].name: 'pr od' is not a valid stage name; use
    letters, digits, '-' and '_' (at most 128)``.
    """

    def __init__(self, file: str, path: str, problem: str) -> None:
        self.file = file
        self.path = path
        self.problem = problem
        where = f"{file}: {path}" if path else file
        super().__init__(f"{where}: {problem}")
