"""REST resource policies, ``x-amazon-apigateway-policy`` (aws-apigw-spec.md §5.9).

Statements are checked for ``execute-api:Invoke`` on the method ARN
``arn:aws:execute-api:{region}:{account}:{apiId}/{stage}/{METHOD}/{path}``; a resource
``execute-api:/...`` expands to ``arn:aws:execute-api:{region}:{account}:{apiId}/...`` as
on import.  Conditions: ``IpAddress`` and ``NotIpAddress`` on ``aws:SourceIp`` (IPv4 and
IPv6 addresses and CIDRs), and ``StringEquals``, ``StringNotEquals``, ``StringLike`` and
``StringNotLike`` on ``aws:SourceVpce``: the ``vpce`` id of the listener the request came
in on, the on-prem stand-in for the VPC endpoint of a private API (a listener without one
has no ``aws:SourceVpce``, so only the negated operators match it, as in IAM).  Any other
condition is refused (500 and an execution-log line), never ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from .lambda_auth import matches

__all__ = ["ResourcePolicy", "PolicyError", "parse", "anonymous_denied"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_OPERATORS = ("IpAddress", "NotIpAddress")
_STRING_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike")


class PolicyError(ValueError):
    """The policy uses something twistgw does not evaluate."""


@attrs.frozen
class _Statement:
    effect: str
    principal_any: bool
    principals: tuple[str, ...]
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...]
    not_resources: tuple[str, ...] | None
    ip: tuple[tuple[bool, tuple[Network, ...]], ...]  # (negated, networks)
    #: aws:SourceVpce conditions: (operator, values).
    vpce: tuple[tuple[str, tuple[str, ...]], ...] = ()


@attrs.frozen
class ResourcePolicy:
    statements: tuple[_Statement, ...]

    def evaluate(self, arn: str, source_ip: str, caller_arn: str | None = None,
                 action: str = "execute-api:Invoke", vpce: str | None = None) -> str:
        """``"Deny"`` (explicit), ``"Allow"`` or ``""`` (no statement applies)."""
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = \
                ipaddress.ip_address(source_ip)
        except ValueError:
            ip = None
        allowed = False
        for st in self.statements:
            if not st.principal_any and (caller_arn is None or not any(
                    p == caller_arn or matches(p, caller_arn) for p in st.principals)):
                continue
            if st.not_actions is not None:
                if any(matches(a, action) for a in st.not_actions):
                    continue
            elif not any(matches(a, action) for a in st.actions):
                continue
            if st.not_resources is not None:
                if any(matches(r, arn) for r in st.not_resources):
                    continue
            elif not any(matches(r, arn) for r in st.resources):
                continue
            if not all(_ip_matches(ip, negated, nets) for negated, nets in st.ip):
                continue
            if not all(_vpce_matches(vpce, op, values) for op, values in st.vpce):
                continue
            if st.effect == "Deny":
                return "Deny"
            allowed = True
        return "Allow" if allowed else ""


def _ip_matches(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, negated: bool,
                nets: tuple[Network, ...]) -> bool:
    inside = ip is not None and any(ip.version == n.version and ip in n for n in nets)
    return not inside if negated else inside


def _vpce_matches(vpce: str | None, op: str, values: tuple[str, ...]) -> bool:
    """IAM string operators; a missing key matches only the negated ones."""
    if vpce is None:
        return op.startswith("StringNot")
    if op.endswith("Like"):
        found = any(matches(v, vpce) for v in values)
    else:
        found = vpce in values
    return not found if op.startswith("StringNot") else found


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) for i in items):
        raise PolicyError(f"{where} must be a string or a list of strings")
    return tuple(items)


def parse(doc: Any, *, region: str, account: str, api_id: str) -> ResourcePolicy:
    """Read a policy document (a mapping, or the JSON string AWS stores)."""
    if isinstance(doc, str):
        import json

        try:
            doc = json.loads(doc)
        except ValueError as e:
            raise PolicyError(f"not JSON: {e}") from None
    if not isinstance(doc, Mapping):
        raise PolicyError("the policy must be a mapping with a Statement list")
    raw = doc.get("Statement")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, Mapping) else None
    if items is None:
        raise PolicyError("Statement is missing")
    prefix = f"arn:aws:execute-api:{region}:{account}:{api_id}/"
    out = []
    for n, st in enumerate(items):
        where = f"Statement[{n}]"
        if not isinstance(st, Mapping):
            raise PolicyError(f"{where} must be a mapping")
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"{where}.Effect must be Allow or Deny")
        if "NotPrincipal" in st:
            raise PolicyError(f"{where}.NotPrincipal is not supported")
        principal = st.get("Principal", "*")
        principal_any = principal == "*"
        principals: tuple[str, ...] = ()
        if isinstance(principal, Mapping):
            aws = principal.get("AWS")
            if set(principal) != {"AWS"} or aws is None:
                raise PolicyError(f"{where}.Principal supports only '*' and AWS")
            principals = _strings(aws, f"{where}.Principal.AWS")
            principal_any = "*" in principals
        elif not principal_any:
            raise PolicyError(f"{where}.Principal supports only '*' and AWS")

        def resources(key: str, st: Mapping[str, Any] = st, where: str = where
                      ) -> tuple[str, ...]:
            return tuple(prefix + r[len("execute-api:/"):] if r.startswith("execute-api:/")
                         else r for r in _strings(st[key], f"{where}.{key}"))

        ip: list[tuple[bool, tuple[Network, ...]]] = []
        vpce: list[tuple[str, tuple[str, ...]]] = []
        condition = st.get("Condition") or {}
        if not isinstance(condition, Mapping):
            raise PolicyError(f"{where}.Condition must be a mapping")
        for op, keys in condition.items():
            if op in _STRING_OPERATORS and isinstance(keys, Mapping):
                for key, value in keys.items():
                    if str(key).lower() != "aws:sourcevpce":
                        raise PolicyError(f"{where}.Condition.{op}.{key}: string conditions "
                                          "are supported on aws:SourceVpce only")
                    vpce.append((op, _strings(value, f"{where}.Condition.{op}.{key}")))
                continue
            if op not in _OPERATORS or not isinstance(keys, Mapping):
                raise PolicyError(f"{where}.Condition.{op}: only IpAddress and NotIpAddress "
                                  "(aws:SourceIp) and StringEquals, StringNotEquals, "
                                  "StringLike and StringNotLike (aws:SourceVpce) are "
                                  "supported")
            for key, value in keys.items():
                if str(key).lower() != "aws:sourceip":
                    raise PolicyError(f"{where}.Condition.{op}.{key}: only aws:SourceIp is "
                                      "supported")
                try:
                    nets = tuple(ipaddress.ip_network(v, strict=False)
                                 for v in _strings(value, f"{where}.Condition.{op}.{key}"))
                except ValueError as e:
                    raise PolicyError(f"{where}.Condition.{op}.{key}: {e}") from None
                ip.append((op == "NotIpAddress", nets))
        out.append(_Statement(
            effect=str(effect), principal_any=principal_any, principals=principals,
            actions=_strings(st.get("Action", []), f"{where}.Action"),
            not_actions=_strings(st["NotAction"], f"{where}.NotAction")
            if "NotAction" in st else None,
            resources=resources("Resource") if "Resource" in st else (),
            not_resources=resources("NotResource") if "NotResource" in st else None,
            ip=tuple(ip), vpce=tuple(vpce)))
    return ResourcePolicy(statements=tuple(out))


def anonymous_denied(arn: str, explicit: bool, user: str = "anonymous") -> str:
    """AWS's ACCESS_DENIED message for a resource-policy refusal."""
    tail = " with an explicit deny" if explicit else ""
    return f"User: {user} is not authorized to perform: execute-api:Invoke on resource: " \
           f"{arn}{tail}"

