"""``deploycomp.load(bundle).run(feeds)``: the bundle's artifact behind the original model's I/O.

Whatever a backend did inside (renamed tensors, NHWC layout, int8 I/O, fp16 I/O), the
runner takes and returns arrays under the *original* ONNX names, dtypes and layout,
as recorded in the manifest's ``io`` section. Feeds are checked first, so a wrong name
or shape is one clear error instead of a backend's stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from deploycomp.backends import get_backend
from deploycomp.bundle import read_manifest
from deploycomp.errors import InputDataError, few
from deploycomp.sample_data import castable, within_profile

__all__ = ["BundleRunner", "load"]


class BundleRunner:
    def __init__(self, bundle: str | os.PathLike, verify: bool = True):
        self.path = Path(bundle)
        self.manifest = read_manifest(self.path)
        if verify:  # every artifact's size and sha256 against the manifest, before a backend reads one
            from deploycomp.signing import check_digests

            check_digests(self.path, self.manifest)
        io = self.manifest["io"]
        self.inputs: dict[str, dict[str, Any]] = {i["name"]: i for i in io["inputs"]}
        # a TensorRT bundle keeps a dynamic dim within its optimization profile (MIN..MAX)
        self.profiles: dict[str, dict[str, list[int]]] = io.get("profiles") or {}
        self.outputs: dict[str, dict[str, Any]] = {o["name"]: o for o in io["outputs"]}
        backend = get_backend(self.manifest["backend"]["name"])
        self._runner = backend.load(self.path, self.manifest["backend"]["lowered"])

    @property
    def info(self) -> dict[str, Any]:
        return self._runner.info

    def _prepare(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        unknown = sorted(set(feeds) - set(self.inputs))
        if unknown:
            raise InputDataError(f"unknown input(s) {few(unknown)}; the model takes {few(self.inputs, 6)}")
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise InputDataError(f"missing input(s) {few(missing)}")
        prepared = {}
        for name, spec in self.inputs.items():
            arr = np.asarray(feeds[name])
            if not castable(arr.dtype, spec["dtype"]):
                raise InputDataError(f"input '{name}': dtype {arr.dtype} given, the model takes {spec['dtype']}")
            if list(arr.shape) != spec["shape"] and not self._in_profile(name, arr.shape):
                profile = self.profiles.get(name)
                built = (f"shapes from {profile['min']} to {profile['max']}" if profile
                         else f"{spec['shape']}")
                raise InputDataError(f"input '{name}': shape {list(arr.shape)} given, the bundle was built for {built}")
            if "index_range" in spec and arr.size:
                lo, hi = spec["index_range"]
                low, high = int(arr.min()), int(arr.max())
                if low < lo or high >= hi:
                    raise InputDataError(f"input '{name}': values {low}..{high} given; they index a table of {spec.get('index_rows', hi)} "
                                         f"rows (node '{spec.get('index_table', '?')}'): {lo}..{hi - 1}")
            prepared[name] = np.require(arr.astype(spec["dtype"], copy=False), requirements="C")  # a scalar stays 0-d
        return prepared

    def _in_profile(self, name: str, shape: tuple[int, ...]) -> bool:
        profile = self.profiles.get(name)
        return profile is not None and within_profile(shape, profile["min"], profile["max"])

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        raw = self._runner.run(self._prepare(feeds))
        return {name: self._output(np.asarray(raw[name]), spec) for name, spec in self.outputs.items()}

    @staticmethod
    def _output(value: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
        """A backend's output as the original model gives it: its dtype, and a classifier's
        string label for the label's position the bundle computes (``labels``; see
        :mod:`deploycomp.passes.ml_labels`)."""
        if "labels" in spec:
            return np.asarray(spec["labels"])[value.astype(np.int64)]
        return value.astype(spec["dtype"], copy=False)


def load(bundle: str | os.PathLike, verify: bool = True) -> BundleRunner:
    """Open a bundle written by ``deploycomp build`` and return its runner.

    ``verify`` (default) first checks every artifact's size and sha256 against the manifest
    (VerificationError, exit 11, naming the first that differs; ~0.1-0.25 s per 100 MB here);
    ``verify=False`` skips it. A signature is checked by ``deploycomp verify``, not here.
    A runner holds one inference request of its runtime: run it from one thread at a time,
    or load one per thread (OpenVINO says "Infer Request is busy", LiteRT refuses a second
    invoke while the first holds its buffers)."""
    return BundleRunner(bundle, verify=verify)
