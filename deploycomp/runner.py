"""``deploycomp.load(bundle).run(feeds)``: the bundle's artifact behind the original model's I/O.

Whatever a backend did inside (renamed tensors, NHWC layout, int8 I/O, fp16 I/O), the
runner takes and returns arrays under the *original* ONNX names, dtypes and layout,
as recorded in the manifest's ``io`` section. Feeds are checked first, so a wrong name
or shape is one clear error instead of a backend's stack trace.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from deploycomp.backends import get_backend
from deploycomp.bundle import MANIFEST, read_manifest
from deploycomp.errors import DeployError, InputDataError, VerificationError, few, runtime_message
from deploycomp.sample_data import castable, within_profile

log = logging.getLogger(__name__)

PLAIN_PRECISIONS = frozenset({"f32", "f16", "bf16", "fp32", "fp16", "int8"})
"""Executed precisions named alone (OpenVINO's inference precision), which a bundle's
manifest and its runner's info can be compared by."""

__all__ = ["BundleRunner", "load"]


LOAD_ATTEMPTS = 5
"""How often a load starts over where the bundle was replaced while it loaded (a build
with ``--force`` into the same folder): after that, the folder is changing too often to
be read, and the load says so."""


def _stamp(bundle: Path) -> tuple | None:
    """The manifest file's identity: a replaced bundle's is another file (None: none there)."""
    try:
        st = os.stat(bundle / MANIFEST)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class BundleRunner:
    def __init__(self, bundle: str | os.PathLike, verify: bool = True):
        """Reads the bundle as one version of it: a build with ``--force`` replaces the
        folder by two renames, and a load in between had verified the old files and then
        read the new model (a runner whose manifest is not its model's), or found no
        folder at all (a raw FileNotFoundError). A load during which the manifest changed
        starts over."""
        self.path = Path(bundle)
        for attempt in range(LOAD_ATTEMPTS):
            before = _stamp(self.path)
            try:
                self._open(verify)
            except Exception:
                replaced = _stamp(self.path) != before or (before is None and not self.path.exists())
                if not replaced or attempt + 1 == LOAD_ATTEMPTS:
                    raise
            else:
                if _stamp(self.path) == before:
                    return
            time.sleep(0.01 * 2 ** attempt)
        raise VerificationError(f"{self.path}: the bundle was replaced while it loaded, {LOAD_ATTEMPTS} times over; "
                                "load it once its build is done")

    def _open(self, verify: bool) -> None:
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
        try:
            self._runner = backend.load(self.path, self.manifest["backend"]["lowered"])
        except (ValueError, RuntimeError) as e:  # (a runtime's own words on a damaged artifact, verify=False)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VerificationError(f"{self.path}: {backend.name} cannot read the bundle's artifact: {first}") from e
        recorded = (self.manifest["backend"].get("runtime") or {}).get("executed_precision")
        now = self._runner.info.get("executed_precision")
        if recorded in PLAIN_PRECISIONS and now in PLAIN_PRECISIONS and recorded != now:
            # (a 0.1.0 fp16 bundle validated executing bf16 on a CPU without native f16 runs f32
            # here now: its outputs moved by 0.85 on a probability map, with nothing said)
            log.warning("%s was validated executing %s and executes %s here (this deploycomp or this machine "
                        "runs it otherwise): its outputs differ from its validation's; build it again to "
                        "validate what runs", self.path, recorded, now)
        # one inference request: calls from several threads take turns (OpenVINO's request and
        # LiteRT's interpreter hold their buffers between a run and reading its outputs, and
        # a second thread's run in between had handed one caller another request's result)
        self._turn = threading.Lock()

    @property
    def info(self) -> dict[str, Any]:
        return self._runner.info

    def _without_frozen(self, feeds: Mapping[str, Any]) -> Mapping[str, Any]:
        """``feeds`` without the inputs built as constants (``--freeze``) where they hold the
        value built (an application feeds them as it fed the model: Silero's package passes
        ``sr`` every call, and ``unknown input(s) sr`` had refused it); another value is
        refused, naming the one the bundle was built for."""
        frozen = (self.manifest.get("io") or {}).get("frozen") or {}
        given = [n for n in feeds if n in frozen and n not in self.inputs]
        if not given:
            return feeds
        for name in given:
            record, arr = frozen[name], np.asarray(feeds[name])
            if "values" in record:
                same = arr.size == len(record["values"]) and np.array_equal(
                    arr.ravel().astype(np.float64), np.asarray(record["values"], np.float64))
                built = record["values"][0] if len(record["values"]) == 1 else record["values"]
            else:
                from deploycomp.digest import array_sha256

                same = array_sha256(arr.astype(record["dtype"])) == record["sha256"]
                built = f"the {len(record['shape']) and 'x'.join(map(str, record['shape']))} tensor it was given"
            if not same:
                raise InputDataError(f"input '{name}' was built as a constant (--freeze {name}={built}): this "
                                     f"bundle computes only that; given another value, build one for it")
        return {k: v for k, v in feeds.items() if k not in given}

    def _prepare(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise InputDataError(f"feeds are a mapping of input name to array ({few(self.inputs, 6)}); "
                                 f"{type(feeds).__name__} given")
        feeds = self._without_frozen(feeds)
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
            if "value_range" in spec and arr.size:
                lo, hi = spec["value_range"]
                low, high = int(arr.min()), int(arr.max())
                if low < lo or high > hi:
                    raise InputDataError(f"input '{name}': values {low}..{high} given; this bundle takes {lo}..{hi} "
                                         f"({spec.get('value_range_why', 'its runtime computes it in fewer bits')})")
            with np.errstate(over="ignore", invalid="ignore"):  # (said below, as the input's own problem)
                value = np.require(arr.astype(spec["dtype"], copy=False), requirements="C")  # a scalar stays 0-d
            if value.dtype.kind == "f" and value.size and not spec.get("accepts_nan"):
                low, high = value.min(), value.max()  # (NaN and Inf show in the extremes: no mask)
                if not (np.isfinite(low) and np.isfinite(high)):
                    found = "NaN" if np.isnan(low) or np.isnan(high) else "Inf"
                    beyond = f" (past {spec['dtype']}'s range)" if found == "Inf" and np.isfinite(arr).all() else ""
                    raise InputDataError(f"input '{name}': contains {found}{beyond}; the model does not test this "
                                         "input for NaN")
            prepared[name] = value
        return prepared

    def _in_profile(self, name: str, shape: tuple[int, ...]) -> bool:
        profile = self.profiles.get(name)
        return profile is not None and within_profile(shape, profile["min"], profile["max"])

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        prepared = self._prepare(feeds)
        with self._turn:
            try:
                raw = self._runner.run(prepared)
            except (MemoryError, DeployError):
                raise
            except Exception as e:
                if not (moved := self._off_validated_shapes(prepared)):
                    raise
                # inside the --profile, at shapes the build did not validate: the model may not
                # run there (PP-OCRv5 det at a height not a multiple of 32; two inputs that share
                # a dim fed at two sizes), which the runtime says as an internal failure
                raise InputDataError(f"the bundle's runtime cannot run {moved} (inside its --profile; validated at "
                                     f"{self._validated_shapes()}): {runtime_message(e)}") from e
            return {name: self._output(np.asarray(raw[name]), spec) for name, spec in self.outputs.items()}

    def _off_validated_shapes(self, prepared: Mapping[str, np.ndarray]) -> str:
        """The profiled inputs fed at shapes other than the validated ones, said ('' if none)."""
        return ", ".join(f"'{n}' at {'x'.join(map(str, a.shape))}" for n, a in prepared.items()
                         if n in self.profiles and list(a.shape) != self.inputs[n]["shape"])

    def _validated_shapes(self) -> str:
        return ", ".join("x".join(map(str, self.inputs[n]["shape"])) for n in self.profiles if n in self.inputs)

    @staticmethod
    def _output(value: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
        """A backend's output as the original model gives it: its dtype, and a classifier's
        string label for the label's position the bundle computes (``labels``; see
        :mod:`deploycomp.passes.ml_labels`)."""
        if "labels" in spec:  # (an object array of str, as ONNX Runtime gives string outputs)
            return np.asarray(spec["labels"], dtype=object)[value.astype(np.int64)]
        # (an NHWC bundle's output transposed back is a view: C order, as ONNX Runtime gives it)
        return np.ascontiguousarray(value.astype(spec["dtype"], copy=False))


def load(bundle: str | os.PathLike, verify: bool = True) -> BundleRunner:
    """Open a bundle written by ``deploycomp build`` and return its runner.

    ``verify`` (default) first checks every artifact's size and sha256 against the manifest
    (VerificationError, exit 11, naming the first that differs; ~0.1-0.25 s per 100 MB here);
    ``verify=False`` skips it. A signature is checked by ``deploycomp verify``, not here.
    A runner holds one inference request of its runtime: calls from several threads take
    turns; for runs side by side, load one runner per thread. Feeds are checked first
    (names, dtypes, shapes, table ids, NaN or Inf in an input the model does not test for
    NaN): InputDataError (exit 4) naming the input."""
    return BundleRunner(bundle, verify=verify)
