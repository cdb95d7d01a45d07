"""Lambda integrations: ``AWS_PROXY`` events and responses, warm Python workers.

A shipped plugin (entry point ``lambda``).  The hooks live in :mod:`.plugin`; the worker
client in :mod:`.worker` runs in every function process, which is why importing this
package in a worker (``_TWISTGW_LAMBDA_WORKER=1``, set by the pool) skips the hooks and
with them Twisted and twistgw: the handler's process loads only what the handler asks for.
"""

from __future__ import annotations

import os

if os.environ.get("_TWISTGW_LAMBDA_WORKER") != "1":
    from .plugin import (
        configure,
        integrate,
        map_response,
        prepare_reload,
        register,
        shutdown,
        startup,
    )

    __all__ = ["register", "configure", "startup", "shutdown", "prepare_reload", "integrate",
               "map_response"]
