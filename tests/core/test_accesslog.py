"""Access log: AWS's ``$context`` formats (§6.9), presets, destinations, per-stage override."""

from __future__ import annotations

import io
import json
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import (
    FileLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    formatEvent,
    textFileLogObserver,
)

from twistgw import hookimpl
from twistgw.accesslog import AccessLog, compile_format, speed_up_observers
from twistgw.config import ACCESS_LOG_PRESETS, AccessLogConfig
from twistgw.errors import ConfigError, Throttled
from twistgw.jsonlog import format_json
from twistgw.models import Context
from twistgw.pipeline import Exchange
from twistgw.redaction import RedactedLineLogger, redacted_line
from twistgw.testing import make_context, make_inbound
from twistgw.variables import Finish, request_time

if TYPE_CHECKING:
    from conftest import Builders, HarnessFactory, LogCapture

    from twistgw.testing import GatewayHarness

CLF = ACCESS_LOG_PRESETS["clf"]
JSON = ACCESS_LOG_PRESETS["json"]


def harness(make_harness: HarnessFactory, b: Builders, access_log: Any,
            stages: list[Any] | None = None) -> GatewayHarness:
    doc = b.openapi({"/pets/{id}": {"get": b.mock_op(200, '{"id": 1}')}})
    return make_harness(doc, config=b.gateway_config(access_log=access_log, stages=stages))


def run(h: GatewayHarness, method: str, path: str, **kw: Any) -> Exchange:
    result = h.exchange(method, path, **kw)
    assert isinstance(result, Exchange)
    return result


def lines(log_events: LogCapture) -> list[str]:
    return [e["line"] for e in log_events.namespace("twistgw.access")]


def test_presets_are_awss_examples() -> None:
    assert CLF == ('$context.identity.sourceIp $context.identity.caller $context.identity.user '
                   '[$context.requestTime] "$context.httpMethod $context.resourcePath '
                   '$context.protocol" $context.status $context.responseLength '
                   '$context.requestId $context.extendedRequestId')
    assert JSON == ('{ "requestId":"$context.requestId", "extendedRequestId":'
                    '"$context.extendedRequestId", "ip": "$context.identity.sourceIp", '
                    '"caller":"$context.identity.caller", "user":"$context.identity.user", '
                    '"requestTime":"$context.requestTime", "httpMethod":"$context.httpMethod", '
                    '"resourcePath":"$context.resourcePath", "status":"$context.status", '
                    '"protocol":"$context.protocol", "responseLength":"$context.responseLength" }')


def test_request_time_format() -> None:
    assert request_time(1583349317.0) == "04/Mar/2020:19:15:17 +0000"
    assert request_time(1583349317.999) == "04/Mar/2020:19:15:17 +0000"
    assert request_time(0) == "01/Jan/1970:00:00:00 +0000"


def test_unit_render_with_unset_values() -> None:
    access = AccessLog(AccessLogConfig(format=CLF))
    ctx = make_context(make_inbound("POST", "/prod/x", client_ip="10.1.2.3"),
                       received_at=1583349317.0, method="POST")
    line = access.render(ctx, Finish(status=403, response_length=42))
    assert line == ('10.1.2.3 - - [04/Mar/2020:19:15:17 +0000] "POST - HTTP/1.1" 403 42 '
                    'c6af9ac6-7b61-11e6-9a41-93e8deadbeef EXqgWgXxSK4EJug=')


def test_unknown_variables_render_a_dash() -> None:
    pieces = compile_format("a $context.nosuch b $context.requestId")
    assert pieces[1] == "-"
    access = AccessLog(AccessLogConfig(format="$context.nosuch|$context.stage|"
                                              "$context.authorizer.claims.sub"))
    assert access.render(make_context(), Finish()) == "-|-|-"


def test_clf_preset(make_harness: HarnessFactory, b: Builders,
                    log_events: LogCapture) -> None:
    h = harness(make_harness, b, {"format": "clf"})
    ex = run(h, "GET", "/prod/pets/7", client_ip="192.0.2.9")
    ctx = ex.ctx
    assert lines(log_events) == [
        f'192.0.2.9 - - [{request_time(ctx.received_at)}] "GET /pets/{{id}} HTTP/1.1" 200 9 '
        f"{ctx.request_id} {ctx.extended_request_id}"]


def test_clf_is_the_default_format(make_harness: HarnessFactory, b: Builders,
                                   log_events: LogCapture) -> None:
    doc = b.openapi({"/pets/{id}": {"get": b.mock_op(200, '{"id": 1}')}})
    config = b.gateway_config()
    del config["access_log"]
    h = make_harness(doc, config=config)
    ex = run(h, "GET", "/prod/nope")
    assert lines(log_events) == [
        f'127.0.0.1 - - [{request_time(ex.ctx.received_at)}] "GET - HTTP/1.1" 403 42 '
        f"{ex.ctx.request_id} {ex.ctx.extended_request_id}"]


def test_json_preset(make_harness: HarnessFactory, b: Builders,
                     log_events: LogCapture) -> None:
    h = harness(make_harness, b, {"format": "json"})
    ex = run(h, "GET", "/prod/pets/7")
    (line,) = lines(log_events)
    assert json.loads(line) == {
        "requestId": ex.ctx.request_id, "extendedRequestId": ex.ctx.extended_request_id,
        "ip": "127.0.0.1", "caller": "-", "user": "-",
        "requestTime": request_time(ex.ctx.received_at), "httpMethod": "GET",
        "resourcePath": "/pets/{id}", "status": "200", "protocol": "HTTP/1.1",
        "responseLength": "9"}
    assert line.startswith('{ "requestId":"')


def test_custom_format(make_harness: HarnessFactory, b: Builders,
                       log_events: LogCapture) -> None:
    fmt = ("$context.apiId $context.stage $context.routeKey $context.path "
           "$context.status $context.error.responseType $context.error.message "
           "$context.integrationStatus $context.authorizer.principalId $context.domainName "
           "$context.identity.userAgent")
    h = harness(make_harness, b, {"format": fmt})
    run(h, "GET", "/prod/pets/7?x=1", headers={"User-Agent": "curl/8"})
    run(h, "GET", "/prod/nope")
    assert lines(log_events) == [
        "testapi prod GET /pets/{id} /prod/pets/7 200 - - 200 - localhost curl/8",
        "testapi prod - /prod/nope 403 MISSING_AUTHENTICATION_TOKEN Missing Authentication "
        "Token - - localhost -",
    ]


def test_error_message_string_in_the_log(make_harness: HarnessFactory, b: Builders,
                                         log_events: LogCapture) -> None:
    class Slow:
        @hookimpl
        def authorize(self, ctx: Context) -> None:
            raise Throttled()

    doc = b.openapi({"/x": {"get": b.mock_op()}})
    h = make_harness(doc, plugins=[("slow", Slow())], config=b.gateway_config(
        access_log={"format": "$context.status $context.error.messageString"}))
    h.request("GET", "/prod/x")
    assert lines(log_events) == ['429 "Too Many Requests"']


def test_access_log_off(make_harness: HarnessFactory, b: Builders,
                        log_events: LogCapture) -> None:
    h = harness(make_harness, b, False)
    assert h.gateway.deployment.access_log is None
    run(h, "GET", "/prod/pets/7")
    assert lines(log_events) == []


def test_access_log_format_off(make_harness: HarnessFactory, b: Builders,
                               log_events: LogCapture) -> None:
    h = harness(make_harness, b, {"format": "off"})
    run(h, "GET", "/prod/pets/7")
    assert lines(log_events) == []


def test_file_destination(make_harness: HarnessFactory, b: Builders, tmp_path: Path,
                          log_events: LogCapture) -> None:
    h = harness(make_harness, b, {"format": "$context.requestId $context.status",
                                  "path": "logs/access.log"})
    (tmp_path / "logs").mkdir()
    target = tmp_path / "logs" / "access.log"
    first = run(h, "GET", "/prod/pets/1")
    second = run(h, "GET", "/prod/nope")
    h.clock.advance(1)
    assert target.read_text(encoding="utf-8") == (
        f"{first.ctx.request_id} 200\n{second.ctx.request_id} 403\n")
    third = run(h, "GET", "/prod/pets/2")
    h.gateway.deployment.close()
    assert target.read_text(encoding="utf-8").splitlines()[-1] == f"{third.ctx.request_id} 200"
    assert lines(log_events) == []


def test_stage_level_override(make_harness: HarnessFactory, b: Builders, tmp_path: Path,
                              log_events: LogCapture) -> None:
    stages = [
        {"name": "prod"},
        {"name": "beta", "access_log": {"format": "json", "path": "beta.log"}},
        {"name": "quiet", "access_log": False},
        {"name": "gamma", "access_log": {"format": "$context.stage $context.status"}},
    ]
    h = harness(make_harness, b, {"format": "$context.stage default"}, stages=stages)
    for stage in ("prod", "beta", "quiet", "gamma"):
        run(h, "GET", f"/{stage}/pets/1")
    h.gateway.deployment.close()
    assert lines(log_events) == ["prod default", "gamma 200"]
    (line,) = (tmp_path / "beta.log").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["status"] == "200"


def test_stage_override_inherits_the_format(make_harness: HarnessFactory, b: Builders,
                                            tmp_path: Path, log_events: LogCapture) -> None:
    stages = [{"name": "prod", "access_log": {"path": "prod.log"}}]
    h = harness(make_harness, b, {"format": "$context.stage $context.httpMethod"},
                stages=stages)
    run(h, "PUT", "/prod/pets/1")
    h.gateway.deployment.close()
    assert (tmp_path / "prod.log").read_text(encoding="utf-8") == "prod PUT\n"
    assert lines(log_events) == []


@pytest.mark.parametrize(("access_log", "path", "words"), [
    ({"format": "no variables here"}, "access_log.format", "must use $context variables"),
    ({"format": "$context.requestId\n$context.status"}, "access_log.format", "single line"),
    ({"format": "clf", "destination": "x"}, "access_log.destination", "unknown key"),
])
def test_access_log_config_errors(make_harness: HarnessFactory, b: Builders, tmp_path: Path,
                                  access_log: Any, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        harness(make_harness, b, access_log)
    assert info.value.file == str(tmp_path / "gateway.yaml")
    assert info.value.path == path
    assert words in info.value.problem


# -- through the gateway's log: twistd's own observers ------------------------------------

LINES = ["GET /pets 200", "ünï ☃ {curly} %s", "", "   ", "two\nlines", "x" * 20000]


def _line_events(lines: list[str]) -> list[dict[str, Any]]:
    """Events as the access log publishes them, at times around second boundaries
    (Twisted's format rounds to the microsecond, so .9999996 prints the next second)."""
    captured: list[dict[str, Any]] = []
    logger = RedactedLineLogger(namespace="twistgw.access", observer=captured.append)
    base = float(int(time.time()))
    events = []
    for i, frac in enumerate((0.0, 0.5, 0.999999, 0.9999994, 0.9999996, 1.25, 86400.5)):
        for line in lines:
            logger.line(line)
            event = captured.pop()
            event["log_time"] = base + i + frac
            events.append(event)
    return events


def _twistd_observer(tmp_path: Path, logfile: str) -> tuple[FileLogObserver, Callable[[], str]]:
    """The observer twistd installs for ``-n`` (``logfile=""``) or ``--logfile``."""
    from twisted.scripts._twistd_unix import UnixAppLogger

    previous = signal.getsignal(signal.SIGUSR1)
    try:
        path = str(tmp_path / logfile) if logfile else ""
        observer = UnixAppLogger({"nodaemon": True, "logfile": path})._getLogObserver()
    finally:
        signal.signal(signal.SIGUSR1, previous)  # --logfile's rotation handler
    assert isinstance(observer, FileLogObserver)
    if logfile:
        return observer, lambda: (tmp_path / logfile).read_text(encoding="utf-8")
    out = io.StringIO()
    observer._outFile = out  # -n writes to sys.stdout, which pytest captures
    return observer, out.getvalue


@pytest.mark.parametrize("logfile", ["", "twistd.log"])
def test_twistd_text_observer_writes_access_lines_as_twisted_formats_them(
        tmp_path: Path, logfile: str) -> None:
    observer, written = _twistd_observer(tmp_path, logfile)
    publisher = LogPublisher(observer)
    assert speed_up_observers(publisher) == 1
    assert speed_up_observers(publisher) == 0  # once only
    reference = io.StringIO()
    classic = textFileLogObserver(reference)  # Twisted's own formatting, untouched
    other = {"log_format": "started {n}", "n": 1, "log_level": LogLevel.warn,
             "log_namespace": "x", "log_time": time.time()}
    for event in [*_line_events(LINES), other]:
        publisher(dict(event))
        classic(dict(event))
    text = written()
    assert text == reference.getvalue()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[twistgw\.access#info\] "
                     r"GET /pets 200$", text, re.M)


def test_observers_without_the_classic_text_format_are_left_alone() -> None:
    observers = [
        textFileLogObserver(io.StringIO(), timeFormat="%H:%M:%S.%f"),  # sub-second time
        FileLogObserver(io.StringIO(), lambda e: f"{formatEvent(e)} (suffix)\n"),
    ]
    formats = [o.formatEvent for o in observers]
    assert speed_up_observers(LogPublisher(*observers)) == 0
    assert [o.formatEvent for o in observers] == formats


def test_json_observer_writes_access_lines_as_its_general_path() -> None:
    out = io.StringIO()
    observer = FileLogObserver(out, format_json)  # what --logger twistgw.jsonlog.observer gives
    assert speed_up_observers(LogPublisher(observer)) == 1
    expected = []
    for event in _line_events([line for line in LINES if line.strip()]):
        general = {**event, "log_logger": Logger()}  # not recognised: formatted field by field
        assert redacted_line(event) is not None and redacted_line(general) is None
        expected.append(format_json(general))
        assert format_json(event) == expected[-1]
        observer(event)
        doc = json.loads(expected[-1])
        assert set(doc) == {"time", "level", "namespace", "message", "line"}
    assert out.getvalue() == "".join(expected)


class _Writes(io.StringIO):
    """A log file counting its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class _Reactor:
    """What the access lines' batching uses of a reactor."""

    running = True

    def __init__(self) -> None:
        self.clock = Clock()
        self.triggers: list[tuple[str, str, Callable[[], None]]] = []

    def callLater(self, delay: float, f: Callable[[], None]) -> Any:
        return self.clock.callLater(delay, f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], None]) -> None:
        self.triggers.append((phase, event, f))


def _batching() -> tuple[LogPublisher, _Writes, _Reactor, Callable[[str], None]]:
    out, reactor = _Writes(), _Reactor()
    publisher = LogPublisher(textFileLogObserver(out))
    assert speed_up_observers(publisher, reactor) == 1
    return publisher, out, reactor, RedactedLineLogger(namespace="twistgw.access",
                                                       observer=publisher).line


def test_access_lines_are_written_together_after_a_tenth_of_a_second() -> None:
    publisher, out, reactor, line = _batching()
    reference = io.StringIO()
    classic = textFileLogObserver(reference)
    publisher.addObserver(classic)
    for n in range(3):
        line(f"GET /pets/{n} 200")
    reactor.clock.advance(0.099)
    assert out.writes == 0 and out.getvalue() == ""
    reactor.clock.advance(0.001)
    assert out.writes == 1 and out.getvalue() == reference.getvalue()
    assert out.getvalue().count("[twistgw.access#info] GET /pets/") == 3
    line("GET /pets/3 200")
    Logger(namespace="x", observer=publisher).warn("something else")  # keeps the order
    assert out.writes == 2 and out.getvalue() == reference.getvalue()
    reactor.clock.advance(1)
    assert out.writes == 2


def test_held_access_lines_are_bounded_and_written_at_shutdown() -> None:
    _publisher, out, reactor, line = _batching()
    for _ in range(1000):
        line("x" * 199)
    # 64 KiB or less wait: the ~250 byte lines go out about 260 at a time
    assert out.writes == 1000 * 250 // 65536 and len(out.getvalue()) >= 3 * 65536
    ((phase, event, flush),) = reactor.triggers
    assert (phase, event) == ("after", "shutdown")
    flush()  # the reactor stops: no line is left behind
    assert out.getvalue().count("x" * 199) == 1000


def test_access_lines_are_written_at_once_without_a_running_reactor_or_thread() -> None:
    _publisher, out, reactor, line = _batching()
    reactor.running = False
    line("GET / 200")
    assert out.writes == 1
    reactor.running = True
    thread = threading.Thread(target=line, args=("GET /other-thread 200",))
    thread.start()
    thread.join()
    assert out.writes == 2 and "GET /other-thread 200" in out.getvalue()
