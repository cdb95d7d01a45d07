"""Which function an integration ``uri`` names.

API Gateway's Lambda URIs wrap a function ARN:
``arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{functionArn}/invocations``;
CloudFormation exports and hand-written definitions also use the bare function ARN.  The
function part may carry an alias or version qualifier (``:live``), and
``${stageVariables.x}`` (already substituted by the core when a request arrives).
"""

from __future__ import annotations

import re

import attrs

__all__ = ["FunctionRef", "parse_function_uri", "function_arn"]

_FUNCTION_ARN = (r"arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z0-9-]*):"
                 r"(?P<account>[0-9]*):function:(?P<name>[^:/]+)(?::(?P<qualifier>[^:/]+))?")
_APIGW_URI_RE = re.compile(r"^arn:aws[a-z-]*:apigateway:(?P<gw_region>[a-z0-9-]*):lambda:path/"
                           r"2015-03-31/functions/" + _FUNCTION_ARN + r"/invocations$")
_BARE_RE = re.compile("^" + _FUNCTION_ARN + "$")


@attrs.frozen
class FunctionRef:
    """A function named by an integration URI."""

    name: str
    region: str
    account: str
    qualifier: str | None = None

    @property
    def arn(self) -> str:
        """The invoked function ARN, as ``context.invoked_function_arn`` reports it."""
        base = f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"
        return f"{base}:{self.qualifier}" if self.qualifier else base


def parse_function_uri(uri: str) -> FunctionRef | None:
    """The function an ``AWS_PROXY`` URI invokes, or ``None`` if it is not a Lambda URI."""
    m = _APIGW_URI_RE.match(uri) or _BARE_RE.match(uri)
    if m is None:
        return None
    return FunctionRef(name=m.group("name"), region=m.group("region") or "us-east-1",
                       account=m.group("account"), qualifier=m.group("qualifier"))


def function_arn(name: str, region: str, account: str) -> str:
    """An unqualified function ARN."""
    return f"arn:aws:lambda:{region}:{account}:function:{name}"
