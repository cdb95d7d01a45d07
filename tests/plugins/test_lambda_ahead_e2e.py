"""Events sent ahead with real shipped workers (``python -m twistgw_lambda.worker``): the
same results as without them, a worker's death gives back what it had not started, the
function's timeout counts from the start, a free worker takes an event waiting behind a
slow invoke, and one whose caller gave up never runs.  Pools need the real reactor and
real processes, so each runs in a child interpreter that prints what it saw (as in
``test_lambda_ric``); the workers import the same ``twistgw_lambda`` as the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HANDLER = '''
import json, os, time


def handler(event, context):
    remaining = context.get_remaining_time_in_millis()
    with open(os.path.join(os.environ["MARKS"], "ran-" + event["tag"]), "a") as f:
        f.write("%d\\n" % os.getpid())
    time.sleep(event.get("s", 0))
    if event.get("die"):
        os._exit(3)
    return {"tag": event["tag"], "pid": os.getpid(), "remaining": remaining,
            "id": context.aws_request_id, "arn": context.invoked_function_arn,
            "trace": os.environ.get("_X_AMZN_TRACE_ID"), "event": event,
            "extension": os.environ.get("_TWISTGW_LAMBDA_AHEAD_FDS")}
'''

DRIVER = '''
import json, sys
from pathlib import Path
from twisted.internet import defer, reactor, task
import twistgw_lambda
from twistgw_lambda import runtime as rt
from twistgw_lambda.functions import FunctionConfig

code, scenario = Path(sys.argv[1]), sys.argv[2]
ARN = "arn:aws:lambda:us-east-1:123456789012:function:Ahead"
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1;Sampled=0"
ENV = {"PYTHONPATH": str(Path(twistgw_lambda.__file__).parent.parent), "MARKS": str(code)}
sent, done = [], []
_send_ahead = rt.Worker.send_ahead


def send_ahead(self, inv):  # [the event, the one it waits behind]
    sent.append([json.loads(inv.payload)["tag"], json.loads(self.current.payload)["tag"]])
    _send_ahead(self, inv)


rt.Worker.send_ahead = send_ahead


def pool(command=None, **kw):
    kw.setdefault("timeout", 5)
    cfg = FunctionConfig(name="Ahead", handler="app.handler", code=code, environment=ENV,
                         **kw)
    return rt.FunctionPool(cfg, reactor, "us-east-1", command)


def call(p, tag, **event):
    d = p.invoke(json.dumps({"tag": tag, **event}).encode(), ARN, TRACE)

    def seen(r):
        done.append(tag)
        return {"tag": tag, "error": r.function_error, "id": r.request_id,
                "payload": json.loads(r.payload)}

    return d.addCallbacks(seen, lambda f: {"tag": tag, "failure": f.type.__name__})


async def main():
    out = {}
    if scenario == "same":
        plain = [sys.executable, "-c", "import sys; from twistgw_lambda.worker import main;"
                 " sys.exit(main())"]
        for name, command in (("ahead", None), ("plain", plain)):
            del sent[:]
            p = pool(command, max_workers=1)
            out[name] = await defer.gatherResults([call(p, "t%d" % i, i=i, s=0.05)
                                                   for i in range(6)])
            out[name + "-sent"] = list(sent)
            await p.stop()
    elif scenario == "die":
        p = pool(max_workers=1)
        out["results"] = await defer.gatherResults(
            [call(p, "d", die=True, s=0.5), call(p, "a"), call(p, "b")])
        await p.stop()
    elif scenario == "started":
        p = pool(max_workers=1)
        out["results"] = await defer.gatherResults([call(p, "a", s=0.3),
                                                    call(p, "d", die=True)])
        out["after"] = await call(p, "c")
        await p.stop()
    elif scenario == "started2":
        p = pool(max_workers=1)
        out["results"] = await defer.gatherResults([call(p, "a", s=0.3), call(p, "b"),
                                                    call(p, "d", die=True)])
        out["after"] = await call(p, "c")
        await p.stop()
    elif scenario == "timeout":
        p = pool(max_workers=1, timeout=2)
        out["results"] = await defer.gatherResults([call(p, "a", s=1.2), call(p, "b", s=1.2)])
        await p.stop()
    elif scenario == "idle":
        p = pool(min_workers=2, max_workers=2)
        await defer.gatherResults(p.keep_warm())
        await task.deferLater(reactor, 0.1, lambda: None)  # both polls held
        out["results"] = await defer.gatherResults(
            [call(p, "x", s=2), call(p, "y", s=0.3), call(p, "z")])
        await p.stop()
    elif scenario == "cancel":
        p = pool(max_workers=1)
        a = call(p, "a", s=0.6)
        b = call(p, "b")
        await task.deferLater(reactor, 0.2, lambda: None)
        b.cancel()
        out["results"] = [await a, await b, await call(p, "c")]
        await p.stop()
    out["sent"], out["done"] = sent, done
    return out


def go():
    d = defer.ensureDeferred(main())
    d.addCallback(lambda out: print(json.dumps(out)))
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())


reactor.callWhenRunning(go)
reactor.callLater(50, reactor.stop)
reactor.run()
'''


def _run(tmp_path: Path, scenario: str) -> dict[str, Any]:
    (tmp_path / "app.py").write_text(HANDLER, encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path), scenario],
                          capture_output=True, timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def _ran(tmp_path: Path, tag: str) -> list[str]:
    path = tmp_path / f"ran-{tag}"
    return path.read_text().split() if path.exists() else []


def _by_tag(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["tag"]: r for r in results}


def test_events_sent_ahead_give_what_the_plain_runtime_api_gives(tmp_path: Path) -> None:
    out = _run(tmp_path, "same")
    assert out["ahead-sent"] and not out["plain-sent"]  # sent ahead only when offered
    for name in ("ahead", "plain"):
        for r in out[name]:
            assert r["error"] is None, r
            doc = r["payload"]
            assert doc["tag"] == r["tag"] and doc["id"] == r["id"]
            assert doc["event"] == {"tag": r["tag"], "i": int(r["tag"][1:]), "s": 0.05}
            assert doc["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:Ahead"
            assert doc["trace"] == "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1;" \
                                   "Sampled=0"
            assert 4000 < doc["remaining"] <= 5000  # a 5 s timeout, counted from the start
            assert doc["extension"] is None  # the worker's own, not the handler's
    assert sorted(r["tag"] for r in out["ahead"]) == [f"t{i}" for i in range(6)]
    assert all(len(_ran(tmp_path, f"t{i}")) == 2 for i in range(6))  # once in each pool


def test_a_worker_that_dies_gives_back_the_event_it_had_not_started(tmp_path: Path) -> None:
    out = _run(tmp_path, "die")
    results = _by_tag(out["results"])
    assert results["d"]["error"] == "Unhandled"
    assert results["d"]["payload"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in results["d"]["payload"]["errorMessage"]
    assert ["a", "d"] in out["sent"]  # a waited in the dying worker, not started
    assert results["a"]["error"] is None and results["b"]["error"] is None
    died = _ran(tmp_path, "d")
    assert len(died) == 1 and _ran(tmp_path, "a") == [str(results["a"]["payload"]["pid"])]
    assert died != _ran(tmp_path, "a") and len(_ran(tmp_path, "b")) == 1


def test_a_worker_that_dies_in_the_event_it_started_fails_that_one_only(
        tmp_path: Path) -> None:
    out = _run(tmp_path, "started")
    results = _by_tag(out["results"])
    assert ["d", "a"] in out["sent"]
    assert results["a"]["error"] is None and results["a"]["payload"]["tag"] == "a"
    assert results["d"]["error"] == "Unhandled"
    assert "exit status 3" in results["d"]["payload"]["errorMessage"]
    assert out["after"]["error"] is None  # a new worker serves the next invoke
    assert len(_ran(tmp_path, "d")) == 1


def test_a_worker_that_ran_both_events_sent_ahead_and_died_in_the_second(
        tmp_path: Path) -> None:
    """b and d both wait ahead behind a (two per worker); the worker runs a and b, writes
    their results and dies in d: a and b get their results, d fails, each ran once."""
    out = _run(tmp_path, "started2")
    results = _by_tag(out["results"])
    assert ["b", "a"] in out["sent"] and ["d", "a"] in out["sent"]
    assert [results[t]["error"] for t in "ab"] == [None, None]
    assert [results[t]["payload"]["tag"] for t in "ab"] == ["a", "b"]
    assert results["d"]["error"] == "Unhandled"
    assert "exit status 3" in results["d"]["payload"]["errorMessage"]
    assert out["after"]["error"] is None
    assert [len(_ran(tmp_path, t)) for t in "abd"] == [1, 1, 1]


def test_the_timeout_of_an_event_sent_ahead_counts_from_its_start(tmp_path: Path) -> None:
    out = _run(tmp_path, "timeout")
    results = _by_tag(out["results"])
    assert ["b", "a"] in out["sent"]
    # Both run 1.2 s of a 2 s timeout; b was sent while a ran (2.4 s before b ended).
    assert results["a"]["error"] is None and results["b"]["error"] is None
    assert results["b"]["payload"]["remaining"] > 1500


def test_a_free_worker_takes_the_event_waiting_behind_a_slow_invoke(tmp_path: Path) -> None:
    out = _run(tmp_path, "idle")
    results = _by_tag(out["results"])
    assert ["z", "x"] in out["sent"]  # behind x, the 2 s invoke
    assert all(r["error"] is None for r in out["results"])
    pids = {tag: results[tag]["payload"]["pid"] for tag in "xyz"}
    assert pids["z"] == pids["y"] != pids["x"]
    assert out["done"].index("z") < out["done"].index("x")
    assert len(_ran(tmp_path, "z")) == 1


def test_an_event_sent_ahead_whose_caller_gave_up_never_runs(tmp_path: Path) -> None:
    out = _run(tmp_path, "cancel")
    a, b, c = out["results"]
    assert ["b", "a"] in out["sent"]
    assert a["error"] is None and b == {"tag": "b", "failure": "CancelledError"}
    assert c["error"] is None and c["payload"]["pid"] == a["payload"]["pid"]
    assert _ran(tmp_path, "b") == []
