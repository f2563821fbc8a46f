"""Target hardware profiles: schema, loading, inheritance and host detection.

A profile is data (``targets/*.yaml``, installed as ``deploycomp.profiles``) that says
what one device can run and what a build for it must meet: the backend that lowers
for it, the precisions it executes, ops it lacks, whether it needs static shapes,
peak compute and memory bandwidth (for the roofline latency estimate when we cannot
measure on the device), and the budgets (fidelity per precision, artifact size,
memory, latency) that validation checks.

A profile may ``extends: <other-profile>``; its own keys override the base's,
recursively for mappings, so a variant states only what differs (TVM's tag registry
does the same for its target tags).

``host`` is not a file: it resolves to the best shipped x86 OpenVINO profile whose
``cpu_features`` this machine's CPU has, so a build "for here" picks up AVX-512 VNNI
or AMX where they exist and plain AVX2 otherwise; its description then names this
machine's CPU, not the profile's reference part.

A profile may name its ``family`` (``jetson``, ``nvidia``, ``android``, ``raspberry-pi``,
``coral``, ``intel``): ``--target jetson`` builds one bundle for every member. That
works because the artifact does not depend on the member (a TensorRT bundle is the same
for every Jetson Orin module until ``deploycomp engine`` runs on the device; an OpenVINO
IR is the same for every x86 CPU): the family profile takes the precisions all members
run, the tightest budget and fidelity of any member, and the slowest member's peaks for
the roofline estimate; DLA is planned where a member has one, and the engine step uses
it only where the device does. The manifest records the family, its members and what
was built for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import platform
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploycomp.errors import ProfileError
from deploycomp.yamlfile import read_mapping

__all__ = [
    "PRECISIONS",
    "Budgets",
    "Compute",
    "Fidelity",
    "TargetProfile",
    "cpu_features",
    "check_op_names",
    "cpu_name",
    "families",
    "is_profile_path",
    "is_shipped",
    "list_targets",
    "load_target",
    "member_for_device",
    "merge_mappings",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
Precision = Literal["fp32", "fp16", "bf16", "int8"]
Backend = Literal["openvino", "tflite", "tensorrt", "onnxruntime"]


PIPELINE_NAMES = ("default", "onnxruntime", "openvino", "tensorrt", "tflite")
"""The named pass pipelines (:data:`deploycomp.passes.pipelines.PIPELINES`, which a test
holds this to: importing them here would load the optimizer for every profile read)."""

LOADER_FIELDS = ("source_file", "resolved_from", "family_members", "runs_here", "extended_from")
"""Fields the loader sets: a profile file that sets one is refused (``runs_here: true`` on a
TFLite profile had held this machine's time to the device's latency budget)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fidelity(_Strict):
    """Minimum agreement with the fp32 ONNX Runtime reference, per output."""

    min_cosine: float = Field(gt=0, le=1)
    max_rel_error: float | None = Field(default=None, gt=0)
    min_top1_agreement: float | None = Field(default=None, gt=0, le=1)
    min_box_iou: float | None = Field(default=None, gt=0, le=1, description=(
        "for outputs judged by their boxes (--judge-boxes); unset: implied by min_cosine "
        "(deploycomp.boxes.box_iou_limit)"))
    min_mask_iou: float | None = Field(default=None, gt=0, le=1, description=(
        "for outputs judged by the mask cut from them (--judge-mask); unset: implied by min_cosine "
        "(deploycomp.masks.mask_iou_limit)"))
    min_text_similarity: float | None = Field(default=None, gt=0, le=1, description=(
        "for outputs judged by the text they decode to (--judge-ctc): 1 - edits / characters over the lines "
        "(1 - character error rate); unset: min_cosine's number (deploycomp.ctc.text_limit)"))


class Compute(_Strict):
    """Datasheet peaks, used by the roofline estimate (never as a measurement)."""

    peak_tops: dict[Precision, Annotated[float, Field(gt=0)]] = Field(
        min_length=1, description="dense peak tera-operations/s per precision (1 MAC = 2 ops)"
    )
    memory_bandwidth_gbps: float = Field(gt=0, description="DRAM bandwidth in GB/s")
    efficiency: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="fraction of peak a real network reaches; scales the estimate",
    )
    memory_efficiency: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="fraction of the bandwidth a real network reaches (``efficiency`` unless given)",
    )
    on_chip_mb: float | None = Field(
        default=None,
        gt=0,
        description="an accelerator that keeps activations and this many MB of weights on chip: only "
        "inputs, outputs and the weights beyond it cross memory_bandwidth_gbps each inference",
    )
    kernel_overhead_us: float = Field(
        default=0.0,
        ge=0,
        description="fixed time per kernel (a fused group of ops) the roofline adds: launch and "
        "small-kernel costs a batch-1 network pays on a GPU; fitted to published measurements",
    )
    source: str = Field(description="where the numbers come from (datasheet URL)")


class Budgets(_Strict):
    max_artifact_mb: float | None = Field(default=None, gt=0)
    max_memory_mb: float | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)


class DeviceMatch(_Strict):
    """How ``deploycomp engine`` recognises this device among its family's members, from
    the CUDA properties of GPU 0 (a Jetson module is not named in them: every Orin reports
    "Orin"; multiprocessors and memory tell the modules apart)."""

    gpu_name: str = Field(description="substring of the CUDA device name, e.g. 'Orin' or 'T4'")
    multiprocessors: int | None = Field(default=None, gt=0)
    memory_gb: float | None = Field(default=None, gt=0, description="nominal memory; matched within 25%")

    def matches(self, gpu: dict[str, Any]) -> bool:
        if self.gpu_name.lower() not in str(gpu.get("name", "")).lower():
            return False
        if self.multiprocessors is not None and gpu.get("multiprocessors") not in (None, 0, self.multiprocessors):
            return False
        memory = gpu.get("memory_gb") or 0
        return self.memory_gb is None or not memory or abs(memory - self.memory_gb) <= 0.25 * self.memory_gb


DEVICES: dict[str, frozenset[str]] = {
    "openvino": frozenset({"CPU", "GPU", "NPU", "AUTO", "HETERO", "MULTI"}),  # (GPU.1, AUTO:GPU,CPU: by prefix)
    "tflite": frozenset({"CPU", "GPU", "NPU", "DSP", "EDGETPU"}),
    "tensorrt": frozenset({"GPU", "DLA"}),
    "onnxruntime": frozenset({"CPU", "GPU"}),
}
"""The device strings each backend's profiles may name: a typo (``EDGETPUU``) had built,
as a plain CPU, a bundle the Edge TPU's compiler maps otherwise."""


def check_op_names(profile: "TargetProfile") -> None:
    """A profile's ``unsupported_ops`` as ONNX names its op types: ``conv`` had matched no
    node, and a profile meant to refuse convolutions built them. Checked where a build or a
    fleet uses the profile (ONNX's op schemas are not loaded to list targets)."""
    import onnx.defs

    for field_name in ("unsupported_ops", "cpu_fallback_ops"):
        unknown = [op for op in getattr(profile, field_name)
                   if not any(onnx.defs.has(op, d) for d in ("", "ai.onnx.ml"))]
        if unknown:
            known = {s.name.lower(): s.name for s in onnx.defs.get_all_schemas()}
            hints = [f"'{op}'" + (f" (did you mean '{known[op.lower()]}'?)" if op.lower() in known else "")
                     for op in unknown]
            raise ProfileError(f"{profile.source_file or profile.name}: field '{field_name}': not an ONNX op type: "
                               + ", ".join(hints))


class TargetProfile(_Strict):
    name: str
    description: str
    backend: Backend
    device: str = Field(description="backend device string, e.g. CPU, GPU, DLA")
    pipeline: Literal[PIPELINE_NAMES] | None = Field(  # type: ignore[valid-type]
        default=None, description="named pass pipeline; default: the backend's")
    precisions: list[Precision] = Field(min_length=1)
    preferred_precision: Precision
    static_shapes: bool = False
    unsupported_ops: list[str] = Field(default_factory=list)
    cpu_fallback_ops: list[str] = Field(
        default_factory=list, description="ONNX ops the device's compiler leaves to the host CPU, and every op "
        "after the first of them (the Edge TPU compiler splits a graph once): built, and said")
    max_opset: int | None = Field(default=None, ge=1)
    cpu_features: list[str] = Field(
        default_factory=list, description="CPU flags a host must have for this profile"
    )
    dla_cores: int = 0
    family: str | None = Field(default=None, description="device family this profile belongs to (--target FAMILY)")
    detect: DeviceMatch | None = Field(default=None, description="how the device step recognises this device")
    compute: Compute
    budgets: Budgets = Budgets()
    fidelity: dict[Precision, Fidelity]
    source_file: str | None = Field(default=None, description="set by the loader")
    resolved_from: str | None = Field(default=None, description="set when 'host' or a family resolved")
    family_members: list[str] = Field(default_factory=list, description="set when a family resolved")
    runs_here: bool = Field(default=False, description="set for 'host': the build measures on this machine")
    extended_from: list[str] = Field(default_factory=list, description="set by the loader: the profiles this one "
                                     "extends, nearest first, as each file names its base")

    @model_validator(mode="after")
    def _consistent(self) -> "TargetProfile":
        if self.device.split(".")[0].split(":")[0] not in DEVICES[self.backend]:
            raise ValueError(f"device {self.device!r} is not one a {self.backend} profile names "
                             f"({', '.join(sorted(DEVICES[self.backend]))})")
        if self.preferred_precision not in self.precisions:
            raise ValueError(
                f"preferred_precision {self.preferred_precision!r} is not in precisions {self.precisions}"
            )
        missing = [p for p in self.precisions if p not in self.fidelity]
        if missing:
            raise ValueError(f"fidelity has no budget for precision(s) {missing}")
        peakless = [p for p in self.precisions if p not in self.compute.peak_tops]
        if peakless:  # (an fp16 peak left out had been estimated at the fp32 one, unsaid)
            raise ValueError(f"compute.peak_tops has no peak for precision(s) {peakless}")
        return self

    @property
    def pipeline_name(self) -> str:
        return self.pipeline or self.backend

    def digest(self) -> str:
        """sha256 of the profile's content (not its file path), for the manifest."""
        data = self.model_dump(exclude={"source_file", "description", "extended_from"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _profiles_dir() -> Path:
    return Path(str(resources.files("deploycomp.profiles")))


def _read_yaml(path: Path) -> dict[str, Any]:
    """A profile file's mapping, refused if it sets a field only the loader sets."""
    data = read_mapping(path, ProfileError, "profile")
    if set_by_loader := [k for k in LOADER_FIELDS if data.get(k)]:  # (their defaults, as a dump has them, are fine)
        raise ProfileError(f"{path}: field '{set_by_loader[0]}' is set by deploycomp, not by a profile file")
    return data


def merge_mappings(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``: mappings merged key by key, lists and scalars replaced (``extends``)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = value
    return out


def is_profile_path(text: str) -> bool:
    """Whether ``--target`` or ``extends`` names a YAML file rather than a shipped profile."""
    return text.lower().endswith((".yaml", ".yml")) or "/" in text


def _resolve(data: dict[str, Any], path: Path, seen: tuple[str, ...] = (), read: list[Path] | None = None
             ) -> dict[str, Any]:
    """``extends``: a shipped profile's name, or a YAML file's path relative to the file that
    extends it (a company's base profile shared by its boards: a path had been read as a
    name, and joined onto the shipped profiles' folder). The chain, nearest first, is the
    result's ``extended_from`` (the manifest's record of where a profile's values came from);
    ``read`` receives every base file read."""
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base_name = str(base_name)
    base_path = (path.parent / base_name if is_profile_path(base_name) else _profiles_dir() / f"{base_name}.yaml")
    key = str(base_path.resolve())
    if key in seen:
        raise ProfileError(f"{path}: 'extends' cycle through {base_name}")
    if not base_path.is_file():
        raise ProfileError(f"{path}: extends unknown profile {base_name!r} (a shipped profile's name, or a YAML "
                           "file's path relative to this one)")
    if read is not None:
        read.append(base_path)
    base = _resolve(_read_yaml(base_path), base_path, seen + (str(path.resolve()), key), read)
    base.pop("name", None)
    chain = [base_name, *base.pop("extended_from", [])]
    return merge_mappings(base, data) | {"extended_from": chain}


def _validate(data: dict[str, Any], path: Path) -> TargetProfile:
    data.setdefault("name", path.stem)
    if not is_shipped(path) and (data["name"] == "host" or (_profiles_dir() / f"{data['name']}.yaml").is_file()):
        # (a bundle's manifest then names a shipped target it was not checked against: said
        # once per file, and the manifest's ``target.shipped`` is false)
        log.warning("target profile %s calls itself %r, a shipped target's name: its bundles say %r but are "
                    "checked against this file's values", path, data["name"], data["name"])
    data["source_file"] = str(path)
    try:
        return TargetProfile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        field = ".".join(str(p) for p in err["loc"])  # (none: a check across fields, whose message names them)
        raise ProfileError(f"{path}: field '{field}': {msg}" if field else f"{path}: {msg}") from e


_PROFILES: dict[str, tuple[tuple[tuple[Path, int | None], ...], TargetProfile]] = {}
"""Profiles read, by resolved path: the files of each one's ``extends`` chain with their
modification times when read, and the (immutable) profile."""


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def load_profile_file(path: str | Path) -> TargetProfile:
    """A profile file, read once per process and per version of every file of its
    ``extends`` chain: a service's next build had kept a base profile's old budgets after
    the base was edited (the cache was keyed on the named file's version alone)."""
    path = Path(path)
    key = str(path.resolve()) if path.exists() else str(path)
    cached = _PROFILES.get(key)
    if cached is not None and all(_stamp(f) == stamp for f, stamp in cached[0]):
        return cached[1]
    read = [path]
    profile = _validate(_resolve(_read_yaml(path), path, read=read), path)
    if len(_PROFILES) >= 256:  # (a service reading generated profiles: bounded)
        _PROFILES.pop(next(iter(_PROFILES)))
    _PROFILES[key] = (tuple((f, _stamp(f)) for f in read), profile)
    return profile


def is_shipped(path: str | Path | None) -> bool:
    """Whether a profile file is one deploycomp ships (``host`` and families resolve from them)."""
    return path is not None and Path(path).resolve().parent == _profiles_dir().resolve()


def list_targets() -> list[str]:
    names = sorted(p.stem for p in _profiles_dir().glob("*.yaml"))
    return ["host", *names]


@functools.lru_cache(maxsize=None)
def families() -> dict[str, list[str]]:
    """Family name -> its member profiles (shipped profiles with ``family:``), smallest first."""
    members: dict[str, list[TargetProfile]] = {}
    for name in list_targets()[1:]:
        prof = load_profile_file(_profiles_dir() / f"{name}.yaml")
        if prof.family:
            members.setdefault(prof.family, []).append(prof)
    return {fam: [p.name for p in sorted(profs, key=_size)] for fam, profs in sorted(members.items())}


def _size(p: TargetProfile) -> tuple:
    """Order members smallest first: memory budget, then peak compute."""
    return (p.budgets.max_memory_mb or float("inf"), max(p.compute.peak_tops.values()), p.name)


def _tightest(values: list) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def member_for_device(family: str, gpu: dict[str, Any]) -> str | None:
    """The member of ``family`` whose ``detect`` block matches ``gpu`` (see
    :func:`deploycomp.backends.tensorrt.engine.gpu_info`), or None."""
    for name in families().get(family, []):
        prof = load_profile_file(_profiles_dir() / f"{name}.yaml")
        if prof.detect is not None and prof.detect.matches(gpu):
            return name
    return None


def _family_profile(family: str) -> TargetProfile:
    members = [load_profile_file(_profiles_dir() / f"{n}.yaml") for n in families()[family]]
    backends = {m.backend for m in members}
    if len(backends) != 1:
        raise ProfileError(f"family {family!r}: members use different backends ({', '.join(sorted(backends))})")
    smallest = members[0]
    precisions = [p for p in smallest.precisions if all(p in m.precisions for m in members)]
    fidelity = {}
    for p in precisions:
        budgets = [m.fidelity[p] for m in members]
        fidelity[p] = Fidelity(min_cosine=max(b.min_cosine for b in budgets),
                               max_rel_error=_tightest([b.max_rel_error for b in budgets]),
                               min_top1_agreement=max((b.min_top1_agreement for b in budgets if b.min_top1_agreement),
                                                      default=None),
                               min_box_iou=max((b.min_box_iou for b in budgets if b.min_box_iou), default=None),
                               min_mask_iou=max((b.min_mask_iou for b in budgets if b.min_mask_iou), default=None),
                               min_text_similarity=max((b.min_text_similarity for b in budgets
                                                        if b.min_text_similarity), default=None))
    budgets = Budgets(**{k: _tightest([getattr(m.budgets, k) for m in members]) for k in Budgets.model_fields})
    preferred = smallest.preferred_precision if smallest.preferred_precision in precisions else precisions[0]
    names = [m.name for m in members]
    dla = max(m.dla_cores for m in members)
    description = (f"{family} family: one bundle for {', '.join(names)} ({smallest.backend}); tightest budgets of "
                   f"any member, {smallest.name}'s peaks for estimates"
                   + ("; DLA planned, used where the device has one" if dla else ""))
    return smallest.model_copy(update={
        "name": family, "description": description, "precisions": precisions, "preferred_precision": preferred,
        "static_shapes": any(m.static_shapes for m in members),
        "unsupported_ops": sorted({op for m in members for op in m.unsupported_ops}),
        "cpu_fallback_ops": sorted({op for m in members for op in m.cpu_fallback_ops}),
        "max_opset": _tightest([m.max_opset for m in members]), "dla_cores": dla, "budgets": budgets,
        "fidelity": fidelity, "resolved_from": smallest.name, "family_members": names, "family": family,
        "detect": None, "source_file": None,
    })


def cpu_features() -> set[str]:
    """The CPU flags of this machine (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.lru_cache(maxsize=None)
def _host_profile() -> TargetProfile:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise ProfileError(
            f"target 'host': no shipped profile for a {platform.machine()} host; "
            "pass --target NAME or a profile YAML"
        )
    flags = cpu_features()
    candidates = []
    for path in _profiles_dir().glob("*.yaml"):
        prof = load_profile_file(path)
        if prof.backend == "openvino" and prof.cpu_features and set(prof.cpu_features) <= flags:
            candidates.append(prof)
    if not candidates:
        raise ProfileError("target 'host': this CPU has none of the feature sets of the x86 profiles (needs avx2)")
    best = max(candidates, key=lambda p: (len(p.cpu_features), p.name))
    update: dict[str, Any] = {"name": "host", "resolved_from": best.name, "runs_here": True,
                              "description": _host_description(best, flags)}
    if flags & BF16_FLAGS and "bf16" not in best.precisions:
        # this CPU computes bf16 though the profile it resolved to (by its int8 features:
        # AMD Zen 4 has AVX512-BF16 and VNNI, no AMX) does not list it: host offers it
        order = ["fp32", "fp16", "bf16", "int8"]
        update["precisions"] = sorted([*best.precisions, "bf16"], key=order.index)
        update["fidelity"] = {**best.fidelity, "bf16": Fidelity(min_cosine=BF16_MIN_COSINE)}
        # and a bf16 peak for the estimate: AVX512-BF16's dot product (VDPBF16PS) does two
        # bf16 multiply-adds per fp32 lane, twice fp32's FMA rate (it had been estimated at
        # fp32's peak, unsaid, where the profile's schema asks a peak for every precision)
        tops = best.compute.peak_tops
        update["compute"] = best.compute.model_copy(update={"peak_tops": {**tops, "bf16": 2 * tops["fp32"]}})
    return best.model_copy(update=update)


BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""x86 flags of native bf16 arithmetic, which OpenVINO's CPU plugin uses for a bf16 hint."""

BF16_MIN_COSINE = 0.995
"""The shipped profiles' bf16 fidelity budget, for a ``host`` that adds bf16."""


def cpu_name() -> str:
    """This machine's CPU model (``/proc/cpuinfo``'s "model name" on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_description(profile: TargetProfile, flags: set[str]) -> str:
    """What ``host`` is, true of this machine (not of the profile's reference part)."""
    import os

    cpu = cpu_name()
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
             if f in flags]
    return (f"this machine: {cpu}, {os.cpu_count()} cores ({', '.join(shown) or 'no AVX2'}) via OpenVINO CPU; "
            f"budgets and int8 policy of {profile.name}")


def load_target(target: str | Path) -> TargetProfile:
    """A profile by name ('host', 'jetson-orin-nano'), family ('jetson') or path to a YAML file."""
    text = str(target)
    if text == "host":
        return _host_profile()
    if is_profile_path(text):
        return load_profile_file(text)
    path = _profiles_dir() / f"{text}.yaml"
    if path.is_file():
        return load_profile_file(path)
    if text in families():
        return _family_profile(text)
    raise ProfileError(f"unknown target {text!r}; known: {', '.join(list_targets())}; "
                       f"families: {', '.join(families())}")
