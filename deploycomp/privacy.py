"""Quiet and private: no telemetry, no network, no files outside the cache and ``--out``.

deploycomp runs in CI jobs and provisioning scripts, so neither it nor anything it
imports may phone home or leave files behind. Our own code opens no connection (the
only network use is ``deploycomp example`` fetching a wheel from the package index,
with pip's own cache pointed into ours). Dependencies need help:

* **OpenVINO** imports ``openvino_telemetry`` whenever ``openvino`` is imported (its
  model converter sends a "general_import" event, writes ``$HOME/intel/openvino_ga_cid``
  and starts a sender that tries to reach the network). Its converter falls back to a
  no-op stub when that package cannot be imported, so we make the import fail before
  OpenVINO is first loaded. Nothing of the telemetry package runs at all.
* **ONNX Runtime** (1.2x and newer on Linux) starts Microsoft's 1DS telemetry when it is
  loaded: it writes ``$HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid``
  and ``onnxruntime.db`` and a ``$TMPDIR/.ses`` session file. ``ORT_DISABLE_TELEMETRY=1``,
  read when the library loads, turns all of it off.
* **Ray** (``deploycomp fleet --executor ray``) reports usage statistics unless
  ``RAY_USAGE_STATS_ENABLED=0``; set here for any Ray started from this process.

:func:`install` runs when ``deploycomp`` is imported (it is cheap: no import of the SDKs
themselves). A process that imported OpenVINO before deploycomp keeps whatever it chose.
"""

from __future__ import annotations

import os
import sys

__all__ = ["BLOCKED_MODULES", "ENVIRONMENT", "install"]

BLOCKED_MODULES = ("openvino_telemetry",)
"""Modules that only send telemetry; importing them is made to fail (``ImportError``)."""


ENVIRONMENT = {"ORT_DISABLE_TELEMETRY": "1", "RAY_USAGE_STATS_ENABLED": "0"}
"""Variables the dependencies read at load time to stay quiet (set before they load)."""


def install() -> None:
    """Block the telemetry modules (unless already imported) and set :data:`ENVIRONMENT`."""
    for name in BLOCKED_MODULES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # "import name" -> ImportError
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)  # a user who set one explicitly keeps their choice
