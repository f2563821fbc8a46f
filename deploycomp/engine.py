"""``deploycomp engine BUNDLE``: build the TensorRT engine of a bundle on the device.

The bundle was made anywhere (CI, a workstation) with the TensorRT-ready ONNX, its
build plan and one reference input/output pair; this step runs on the Jetson or GPU
server that will execute it, because engines are tied to the GPU and TensorRT version.
It builds the engine, checks it against the reference with the target's fidelity
budget, and records TensorRT/GPU/driver versions in the manifest. On failure the
bundle is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deploycomp.bundle import artifact_entries, read_manifest
from deploycomp.errors import BudgetError, DeployError, OutputExistsError
from deploycomp.report import write_manifest_and_report

__all__ = ["build_bundle_engine", "judged_as_built", "read_reference"]


def _reference_parts(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The reference file's parts, read once: ``input``, ``output`` (ONNX Runtime fp32) and
    ``angle`` (each element's turn, for the outputs holding angles), each by tensor name."""
    parts: dict[str, dict[str, np.ndarray]] = {"input": {}, "output": {}, "angle": {}}
    with np.load(path) as data:
        for key in data.files:
            part, _, name = key.partition("/")
            if part in parts:
                parts[part][name] = data[key]
    return parts


def judged_as_built(manifest: dict[str, Any], want: dict[str, np.ndarray], got: dict[str, np.ndarray],
                    angles: dict[str, np.ndarray]) -> dict[str, dict]:
    """``got`` against ``want`` as the build judged its outputs: integer levels as numbers,
    angles to the nearest turn, ``--judge-where`` outputs where their score passes,
    ``--judge-channels`` channels apart, ``--judge-boxes`` boxes by their overlap,
    ``--judge-mask`` maps by the mask cut from them, ``--judge-ctc`` scores by the text they
    decode to (the manifest's ``io`` and ``validation`` say which). An engine judged on a dense detector's whole regression maps, where the build
    judged them under its heatmap, would miss a budget its bundle met."""
    from deploycomp.boxes import parse_boxes
    from deploycomp.ctc import parse_ctc
    from deploycomp.masks import parse_masks
    from deploycomp.validate import compare_outputs

    levels = {o["name"] for o in manifest.get("io", {}).get("outputs", []) if o.get("judged_as") == "levels"}
    validation = manifest.get("validation", {})
    where = {k: (v[0], float(v[1])) for k, v in (validation.get("judge_where") or {}).items()}
    boxes = parse_boxes(r["rule"] for r in (validation.get("judge_boxes") or {}).values())
    masks = parse_masks((validation.get("judge_masks") or {}).values())
    ctc = parse_ctc((validation.get("judge_ctc") or {}).values())
    return compare_outputs([want], [got], levels=levels, angles=angles, where=where or None,
                           channels=validation.get("judge_channels") or None, boxes=boxes or None, masks=masks or None,
                           ctc=ctc or None)


def read_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The reference file's input and its ONNX Runtime fp32 outputs."""
    parts = _reference_parts(path)
    return parts["input"], parts["output"]


def build_bundle_engine(bundle: str | os.PathLike, force: bool = False, trt=None, cudart=None) -> dict[str, Any]:
    from deploycomp.backends.tensorrt.engine import TensorRTRunner, build_engine, require_engine_builder
    from deploycomp.backends.tensorrt.plan import read_plan
    from deploycomp.targets import Fidelity
    from deploycomp.validate import fidelity_failures

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest["backend"]["name"] != "tensorrt":
        raise DeployError(f"{bundle}: its backend is {manifest['backend']['name']}; engines are built for TensorRT "
                          "bundles only")
    plan = read_plan(bundle)
    if (bundle / plan.engine).exists() and not force:
        raise OutputExistsError(f"{bundle / plan.engine} exists (use --force to rebuild)")
    from deploycomp.signing import check_digests

    # never compile a tampered model.onnx or plan: the files CI built, as its manifest lists them
    check_digests(bundle, {"artifacts": [a for a in manifest["artifacts"] if a["path"] not in (plan.engine, plan.timing_cache)]})
    trt, gpu = require_engine_builder(trt, cudart)  # before any work: a clear error without TensorRT or a GPU
    previous = {p: (bundle / p).read_bytes() for p in (plan.engine, plan.timing_cache) if (bundle / p).is_file()}
    try:
        info = build_engine(bundle, plan, trt) | {"gpu": gpu}
        runner = TensorRTRunner(bundle / plan.engine, trt, cudart)
        reference = _reference_parts(bundle / manifest["backend"]["lowered"]["reference"])
        inputs, want, angles = reference["input"], reference["output"], reference["angle"]
        metrics = judged_as_built(manifest, want, runner.run(inputs), angles)
        budget = Fidelity(**manifest["target"]["profile"]["fidelity"][manifest["precision"]])
        failed = fidelity_failures(metrics, budget)
        if failed:
            raise BudgetError(f"the engine misses its fidelity budget against ONNX Runtime fp32: "
                              f"{failed[0].describe()}; engine discarded")
    except BaseException:
        for name in (plan.engine, plan.timing_cache):
            path = bundle / name
            if name in previous:
                path.write_bytes(previous[name])
            else:
                path.unlink(missing_ok=True)
        raise
    lowered = manifest["backend"]["lowered"]
    lowered["engine"] = info
    family = manifest["target"].get("family")
    if family:  # a family bundle (--target jetson): which member this device is
        from deploycomp.targets import member_for_device

        family["device"] = {"gpu": gpu, "member": member_for_device(family["name"], gpu)}
    manifest["engine_validation"] = {"outputs": metrics, "min_cosine": budget.min_cosine, "ok": True}
    files = [bundle / a["path"] for a in manifest["artifacts"] if a["path"] not in (plan.engine, plan.timing_cache)]
    manifest["artifacts"] = artifact_entries(bundle, files + [bundle / plan.engine, bundle / plan.timing_cache])
    write_manifest_and_report(bundle, manifest)
    return manifest
