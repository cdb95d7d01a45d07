"""The daemon freezes its start-up objects out of the garbage collector's reach and
spaces young-generation collections out."""

from __future__ import annotations

import gc
from pathlib import Path

from twisted.internet.task import Clock

from twistgw.config import load_config
from twistgw.gateway import GC_YOUNG_THRESHOLD, Gateway
from twistgw.testing import write_config

DEFINITION = {
    "openapi": "3.0.1",
    "info": {"title": "t", "version": "1"},
    "paths": {"/x": {"get": {"x-amazon-apigateway-integration": {
        "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {"statusCode": "200"}}}}}},
}


def _gateway(tmp_path: Path) -> Gateway:
    path = write_config(tmp_path, {
        "listeners": [{"name": "public", "endpoint": "tcp:0:interface=127.0.0.1"}],
        "apis": [{"id": "a1", "definition": "api.yaml", "stages": ["prod"]}],
        "plugins": {"enabled": ["mock"]},
        "access_log": False,
    }, {"api.yaml": DEFINITION})
    return Gateway(load_config(path), reactor=Clock())


def test_daemon_freezes_startup_objects_once_serving(tmp_path: Path) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    gateway = _gateway(tmp_path)
    gateway.handle_signals = True  # what twistd apigw sets
    try:
        gateway._opened(None)
        assert gateway.ready
        assert gc.get_freeze_count() > 0
        # Young collections wait for GC_YOUNG_THRESHOLD net allocations; the older
        # generations keep their thresholds.
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_in_process_gateways_leave_the_collector_alone(tmp_path: Path) -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    gateway = _gateway(tmp_path)
    gateway._opened(None)
    assert gateway.ready
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
