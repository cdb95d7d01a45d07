"""The ``twistgw`` command: check a config, print its route table.

``twistgw validate CONFIG`` does everything the daemon does before binding (loads plugins,
parses every definition, checks that every feature used is implemented) and exits 0 or
prints the error (file, key, fix) and exits 1.  ``twistgw routes CONFIG`` prints each
API's routes with the URL prefixes they are served under.  ``twistgw usage --config
CONFIG [--key ID]`` prints current usage per API key from the shared (Redis) store.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import demo_config_path, load_config
from .deployment import Deployment, build_deployment
from .errors import ConfigError
from .plugins import describe, make_plugin_manager

__all__ = ["main", "route_table"]


def _load(path: str | None) -> Deployment:
    config = load_config(path or str(demo_config_path()))
    pm = make_plugin_manager(config.plugins, source=config.source)
    deployment = build_deployment(config, pm)
    deployment.close()
    return deployment


def route_table(deployment: Deployment) -> list[str]:
    """Human-readable lines: one header per API, one line per route."""
    lines: list[str] = []
    for api in deployment.apis.values():
        cfg = api.config
        stages = ", ".join(api.stages)
        lines.append(f"API {cfg.id} ({cfg.type}, {api.definition.title or 'untitled'}) "
                     f"stages: {stages}; listeners: {', '.join(cfg.listeners) or '-'}")
        ops = sorted(api.definition.operations,
                     key=lambda o: (o.is_default_route, o.path, o.method))
        width = max((len(o.method) for o in ops), default=3)
        for op in ops:
            integ = op.integration
            target = "(no integration)"
            if integ is not None:
                target = integ.type + (f" {integ.uri}" if integ.uri else "")
            key = "$default" if op.is_default_route else f"{op.method:<{width}} {op.path}"
            lines.append(f"  {key:<40} -> {target}")
    return lines


def _usage(path: str, keys: list[str] | None, as_json: bool) -> int:
    """``twistgw usage``: the access plugin's report (it owns the store's layout)."""
    try:
        from twistgw_access import cli as access_cli
    except ImportError:
        print("error: the access plugin (twistgw_access) is not installed", file=sys.stderr)
        return 1
    try:
        return access_cli.main(load_config(path), keys, as_json)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twistgw`` console script."""
    parser = argparse.ArgumentParser(prog="twistgw", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a gateway config without serving it")
    v.add_argument("config", nargs="?", help="gateway config file (default: the demo)")
    r = sub.add_parser("routes", help="print the route table of a gateway config")
    r.add_argument("config", nargs="?", help="gateway config file (default: the demo)")
    u = sub.add_parser("usage", help="current usage per API key, from the shared store "
                       "(the access plugin's; docs/config.rst)")
    u.add_argument("--config", required=True, help="gateway config file")
    u.add_argument("--key", action="append", help="only this API key id (repeatable)")
    u.add_argument("--json", action="store_true", help="print /usage's JSON instead")
    args = parser.parse_args(argv)
    if args.command == "usage":
        return _usage(args.config, args.key, args.json)
    try:
        deployment = _load(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for warning in deployment.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.command == "validate":
        apis = len(deployment.apis)
        routes = sum(len(a.table) for a in deployment.apis.values())
        pm = make_plugin_manager(deployment.config.plugins, source=deployment.config.source)
        print(f"{deployment.config.source}: OK ({apis} API{'s' if apis != 1 else ''}, "
              f"{routes} route{'s' if routes != 1 else ''}; plugins: "
              f"{', '.join(describe(pm))})")
    else:
        print("\n".join(route_table(deployment)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
