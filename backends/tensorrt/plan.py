"""``build_plan.json``: everything the engine build on the device needs besides the ONNX.

An engine is tied to the GPU architecture and the TensorRT version it was built with,
so a bundle made in CI carries the *plan* and the engine is built where it will run
(``deploycomp engine BUNDLE``). The plan pins what must not vary between machines:
optimization profiles, workspace, builder optimization level, DLA use, the timing
cache file, and the TensorRT versions the ONNX was checked against.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploycomp.errors import UnsupportedError
from deploycomp.targets import TargetProfile

__all__ = ["PLAN_FILE", "BuildPlan", "make_plan", "read_plan", "version_ok"]

PLAN_FILE = "build_plan.json"
TRT_VERSIONS = ">=10.0,<12"
"""Strongly typed networks and explicit (QDQ) quantization: TensorRT 10 and 11."""


@dataclass
class BuildPlan:
    onnx: str
    precision: str
    profiles: list[dict[str, dict[str, list[int]]]]
    """One optimization profile: input name -> {min, opt, max} shapes."""
    workspace_mb: int
    builder_optimization_level: int = 3
    strongly_typed: bool = True
    dla_core: int | None = None
    gpu_fallback: bool = False
    timing_cache: str = "timing.cache"
    engine: str = "model.engine"
    tensorrt_versions: str = TRT_VERSIONS
    target: str = ""
    notes: list[str] = field(default_factory=list)
    dla_devices: list[str] | None = None
    """For a family's plan that plans the DLA: the members that have one (elsewhere the
    engine is built for the GPU alone; ``--useDLACore`` there fails)."""
    precision_flags: str = ("none: the network is strongly typed (the ONNX tensors' types are the precisions); "
                            "trtexec takes --stronglyTyped, not --fp16/--int8")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"trtexec": self.trtexec()}

    def trtexec(self) -> str:
        """The same engine build as a ``trtexec`` command line, for a device team that builds
        without deploycomp (``deploycomp engine`` runs this plan through TensorRT's Python API)."""
        parts = [f"trtexec --onnx={self.onnx} --saveEngine={self.engine} --timingCacheFile={self.timing_cache}",
                 "--stronglyTyped" if self.strongly_typed else "",
                 f"--memPoolSize=workspace:{self.workspace_mb}M --builderOptimizationLevel={self.builder_optimization_level}"]
        # the inputs a profile varies (a static input takes no shape: trtexec refuses one)
        shapes = {n: s for n, s in (self.profiles[0] if self.profiles else {}).items() if s["min"] != s["max"]}
        for flag, key in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max")):
            if shapes:
                parts.append(f"{flag}=" + ",".join(f"{name}:{'x'.join(map(str, s[key]))}" for name, s in shapes.items()))
        if self.dla_core is not None:
            parts.append(f"--useDLACore={self.dla_core}" + (" --allowGPUFallback" if self.gpu_fallback else ""))
        return " ".join(p for p in parts if p)


def make_plan(onnx_name: str, target: TargetProfile, precision: str,
              profiles: dict[str, dict[str, list[int]]]) -> BuildPlan:
    notes = []
    workspace = int(max(256, min(4096, (target.budgets.max_memory_mb or 2048) // 2)))
    dla = None
    if target.dla_cores > 0 and precision in ("fp16", "int8"):
        dla = 0
        notes.append("DLA core 0 with GPU fallback: layers the DLA cannot run go to the GPU")
    elif target.dla_cores > 0:
        notes.append(f"DLA not used: it runs fp16/int8 only, not {precision}")
    with_dla = None
    if dla is not None and target.family_members:  # (a Jetson family plan had asked an Orin Nano for DLA core 0)
        from deploycomp.targets import load_target

        with_dla = [m for m in target.family_members if load_target(m).dla_cores > 0]
        without = [m for m in target.family_members if m not in with_dla]
        if without:
            notes.append(f"the DLA only on {', '.join(with_dla) or 'none of the members'}; {', '.join(without)} "
                         f"{'has' if len(without) == 1 else 'have'} none: build there for the GPU alone (no "
                         "--useDLACore; deploycomp engine decides on the device)")
    return BuildPlan(onnx=onnx_name, precision=precision, profiles=[profiles], workspace_mb=workspace,
                     dla_core=dla, gpu_fallback=dla is not None, target=target.name, notes=notes, dla_devices=with_dla)


def read_plan(bundle: Path) -> BuildPlan:
    path = Path(bundle) / PLAN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("trtexec", None)  # (derived: the same plan as a command line)
        return BuildPlan(**data)
    except (OSError, ValueError, TypeError) as e:
        raise UnsupportedError(f"{path}: not a readable TensorRT build plan ({e})") from None


def version_ok(version: str, spec: str = TRT_VERSIONS) -> bool:
    """``version`` ("10.13.0.35") within ``spec`` (">=10.0,<12"), compared by numeric parts."""
    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.split(".") if p.isdigit())

    have = parts(version)
    for clause in spec.split(","):
        clause = clause.strip()
        op = clause[:2] if clause[:2] in (">=", "<=", "==") else clause[:1]
        bound = parts(clause[len(op):])
        n = len(bound)
        ok = {">=": have[:n] >= bound, "<=": have[:n] <= bound, "==": have[:n] == bound,
              "<": have[:n] < bound, ">": have[:n] > bound}[op]
        if not ok:
            return False
    return True
