"""Keep credentials out of every log: Authorization, API keys, tokens, signatures, cookies.

Two layers, both cheap when there is nothing to hide:

* :func:`redact_event` rewrites a log event in place before any observer formats it:
  fields whose *name* says secret (``authorization``, ``x-api-key``, ``cookie``,
  ``token``, ``secret``, ``password``, ``signature`` ...) become ``[REDACTED]``, and
  every string field, nested ones included, goes through :func:`redact_text`.
  :func:`install_redaction` puts it in front of twistd's observers (``--logfile``,
  ``--syslog``, ``--logger``), so what a plugin or a Lambda handler prints is covered
  too.
* :func:`redact_text` finds ``name: value`` / ``name=value`` / ``"name": "value"``
  pairs with such a name, ``Bearer`` credentials and JSON Web Tokens in free text.

Access-log fields that carry credentials by design are masked where the line is built
(:func:`access_log_getter`), because a file destination never passes through the log
publisher.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from twisted.logger import globalLogPublisher

if TYPE_CHECKING:
    from .variables import Getter

__all__ = ["REDACTED", "redact_text", "redact_value", "redact_event", "install_redaction",
           "is_secret_name", "access_log_getter"]

REDACTED = "[REDACTED]"

_NAMES = (r"(?:proxy-)?authorization|set-cookie|cookie|x-api-key|api[_-]?key"
          r"|x-amz-security-token|x-amz-signature|signature"
          r"|(?:access|id|refresh|session|auth|bearer)[_-]?token|token"
          r"|client[_-]?secret|secret|password|passwd")
#: Cheap first pass: most log lines contain none of these and skip the rest.
_HINT = re.compile(r"(?i)author|cookie|key|token|secret|passw|signature|eyJ|bearer")
#: ``name: value``, ``name=value``, ``"name": "value"``, ``'name', 'value'`` (a repr'd
#: header pair).  A quoted value is replaced whole; an unquoted one up to a delimiter,
#: with an auth scheme (``Bearer x``) taken as part of it.
_PAIR = re.compile(
    rf"""(?ix)
    (?P<key>["']?\b(?:{_NAMES})\b["']?\s*(?:[:=]|(?<=["'])\s*,)\s*)
    (?P<value>\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'
       |(?:(?:Bearer|Basic|Digest|Negotiate|AWS4-HMAC-SHA256)\s+)?[^\s"',;&}}\[\])]+)
    """)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_SECRET_NAME = re.compile(rf"(?i)^(?:{_NAMES})$|token|secret|passw|authorization|cookie"
                          r"|api[_-]?key|signature")
_MAX_DEPTH = 6


def _pair(m: re.Match[str]) -> str:
    value = m.group("value")
    if REDACTED in value:
        return m.group(0)  # already redacted: keep redaction idempotent
    if value[:1] == "[":
        return f'{m.group("key")}["{REDACTED}"]'
    if value[:1] in ("'", '"'):
        return f"{m.group('key')}{value[0]}{REDACTED}{value[0]}"
    return f"{m.group('key')}{REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with credential values replaced by ``[REDACTED]``."""
    if not _HINT.search(text):
        return text
    text = _PAIR.sub(_pair, text)
    text = _JWT.sub(REDACTED, text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def is_secret_name(name: str) -> bool:
    """Whether a field or header named ``name`` carries a credential."""
    return bool(_SECRET_NAME.search(name))


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with secrets removed: strings scanned, mappings by key name, sequences
    item by item (bounded depth; anything deeper is left to the text pass)."""
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_name(k) and v
                    else redact_value(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if (len(value) == 2 and isinstance(value[0], str) and is_secret_name(value[0])
                and isinstance(value[1], str | bytes)):
            pair = [value[0], REDACTED]  # a (name, value) header pair
            return tuple(pair) if isinstance(value, tuple) else pair
        items = [redact_value(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, bytes):
        return redact_text(value.decode("latin-1")).encode("latin-1")
    return value


def redact_event(event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Redact a log event's fields in place (``log_*`` keys are Twisted's own, except
    ``log_format``, whose literal text may hold a secret too)."""
    for key in list(event):
        if key.startswith("log_") and key != "log_format":
            continue
        value = event[key]
        if is_secret_name(key) and value:
            event[key] = REDACTED
        elif value is not None and not isinstance(value, int | float | bool):
            event[key] = redact_value(value)
    return event


def _redacting_observer(event: dict[str, Any]) -> None:
    redact_event(event)


def install_redaction() -> None:
    """Redact every event published from now on, before twistd's observers see it.

    The observer is added to the global publisher before twistd starts logging, so it
    comes first; it changes events in place.  Idempotent.
    """
    publisher: Any = globalLogPublisher
    observers = getattr(publisher, "_observers", None)
    if observers is not None and _redacting_observer in observers:
        return
    if observers is not None:
        observers.insert(0, _redacting_observer)  # ahead of observers already added
    else:
        publisher.addObserver(_redacting_observer)


def access_log_getter(name: str, getter: Getter) -> Getter:
    """The getter an access-log format uses for ``$context.<name>``.

    ``identity.apiKey`` is the caller's API key itself: always ``[REDACTED]`` (log
    ``identity.apiKeyId`` to tell callers apart).  ``authorizer.*`` values are whatever
    an authorizer returned and go through :func:`redact_text`.
    """
    if name == "identity.apiKey":
        def masked(c: Any, f: Any) -> Any:
            return REDACTED if getter(c, f) else None

        return masked
    if name.startswith("authorizer."):
        def scanned(c: Any, f: Any) -> Any:
            value = getter(c, f)
            return redact_text(value) if isinstance(value, str) else value

        return scanned
    return getter

