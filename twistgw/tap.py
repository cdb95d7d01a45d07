"""``twistd apigw``: options and service construction.

``twistd -n apigw`` with no option serves the embedded demo config (shipped inside the
package, also readable under ``examples/demo/``).  Config errors are raised from
``postOptions`` as :class:`twisted.python.usage.UsageError`, so twistd prints the file,
key and fix and exits non-zero before daemonizing or binding anything.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from .config import demo_config_path, load_config
from .errors import ConfigError

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """Command-line options of ``twistd apigw``."""

    synopsis = "[--config FILE]"
    longdesc = ("Serve Amazon API Gateway definitions (OpenAPI with x-amazon-apigateway-* "
                "extensions). Without --config, serves the embedded demo API on "
                "http://127.0.0.1:8080/.")
    optParameters = [
        ["config", "c", None, "The gateway config file (YAML or JSON). Default: the demo."],
        ["workers", "w", 1, "Gateway processes sharing each listener, supervised by this "
         "one (docs/deployment.rst). Default: 1, no supervisor.", int],
    ]

    def postOptions(self) -> None:
        """Load and check the config now, so errors stop twistd before it daemonizes."""
        path = self["config"] or str(demo_config_path())
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be 1 or more")
        try:
            config = load_config(path)
            # The gateway's reactor (a leaner event dispatch) unless twistd -r chose one.
            from .reactor import install_if_unchosen

            install_if_unchosen()
            from .gateway import Gateway
            from .workers import check_workers, worker_plugins

            self["gateway"] = Gateway(config, extra_plugins=worker_plugins(),
                                      config_path=os.path.abspath(path))
            self["worker_warnings"] = check_workers(self["gateway"], self["workers"])
            self["config_path"] = os.path.abspath(path)
        except ConfigError as e:
            raise usage.UsageError(f"configuration error: {e}") from None


def makeService(options: Any) -> IService:
    """The service twistd runs: the :class:`~twistgw.gateway.Gateway` built in options,
    or with ``--workers`` > 1 the :class:`~twistgw.workers.Supervisor` of N of them."""
    from .redaction import install_redaction

    install_redaction()
    if options["workers"] > 1:
        from .workers import Supervisor

        return Supervisor(options["gateway"], options["workers"], options["config_path"],
                          warnings=options["worker_warnings"])
    gateway = options["gateway"]
    gateway.handle_signals = True  # SIGHUP reloads, SIGTERM drains and exits 0
    return gateway  # type: ignore[no-any-return]
