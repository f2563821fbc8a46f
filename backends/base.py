"""The one interface every backend adapter implements, and the types it exchanges.

An adapter is thin: ``check`` says what of a model the backend can take, ``lower``
writes artifact files into a folder, ``load`` turns those files back into a runner.
It imports its SDK only inside these methods, so that the core and the CLI work with
any subset of SDKs installed (Polygraphy's lazy backends do the same); a missing SDK
surfaces as :class:`~deploycomp.errors.BackendUnavailable` with the pip command.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from deploycomp.errors import BackendUnavailable, UnsupportedError, few, node_label

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir

    from deploycomp.targets import TargetProfile

__all__ = ["Backend", "Lowered", "Runner", "SupportReport", "ensure_available", "require_modules", "unsupported_node"]


PREQUANTIZED_OPS = frozenset({"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM",
                              "DynamicQuantizeMatMul", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                              "QGemm", "QAttention", "MatMulIntegerToFloat"})
"""Ops of models that ``onnxruntime.quantization`` already quantized (dynamic or QOperator
format): only ONNX Runtime runs them; a deployment compiler wants the float original."""


def unsupported_node(node: "ir.Node", op: str | None = None) -> dict[str, str]:
    """A :class:`SupportReport` entry: the node's name, op (``op``: what to call it
    instead) and first output, so a message can name it as the user's file does
    (:func:`~deploycomp.errors.node_label`)."""
    from deploycomp.ir import LEFT_BECAUSE  # (here: `deploycomp targets` reads this module without onnx-ir)

    output = next((v.name for v in node.outputs if v is not None and v.name), "")
    entry = {"node": node.name or "", "op": op or node.op_type, "output": output}
    if why := node.metadata_props.get(LEFT_BECAUSE):  # a rewrite that would have made it run says why it did not
        entry["why"] = why
    return entry


@dataclass
class SupportReport:
    backend: str
    unsupported: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsupported

    def raise_if_unsupported(self, target: str) -> None:
        if self.unsupported:
            ops = sorted({u["op"] for u in self.unsupported})
            first = self.unsupported[0]
            label = node_label(first["node"], first["op"], first.get("output", ""))
            # (the node and the backend's own reason both: TensorRT's parser's reason alone had
            # named no node: "cannot run op(s) Resize; (antialias == 0) && ...")
            where = f" ({len(self.unsupported)} node(s), first: {label})" + (f"; {self.notes[0]}" if self.notes else "")
            why = next((u["why"] for u in self.unsupported if u.get("why")), None)
            where += f"; left as it is: {why}" if why else ""
            hint = ("; the model is quantized already (ONNX Runtime's own int8 ops): build its float original, "
                    "--precision int8 quantizes it for this target" if set(ops) & PREQUANTIZED_OPS else "")
            raise UnsupportedError(f"target {target} ({self.backend}) cannot run op(s) {few(ops, 6)}{where}{hint}")

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "ok": self.ok, "unsupported": self.unsupported, "notes": self.notes}


@dataclass
class Lowered:
    files: list[Path]
    info: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """Runs an artifact: arrays in, arrays out, keyed by the backend's tensor names."""

    info: dict[str, Any]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str
    requires: tuple[str, ...]
    """Top-level modules the SDK provides (checked without importing them)."""
    extra: str
    """pip extra or package that provides them, for the error message."""

    def check(self, model: ir.Model, target: TargetProfile) -> SupportReport: ...

    def lower(self, model: ir.Model, target: TargetProfile, precision: str, out_dir: Path,
              options: Mapping[str, Any] | None = None) -> Lowered:
        """``options``: backend-specific build choices (e.g. TFLite's ``io_layout``); others ignore them.
        ``trial=True``: the artifact only serves to judge a candidate (the int8 search) and is
        thrown away, so a backend may skip work that only a shipped artifact needs."""
        ...

    def load(self, bundle_dir: Path, lowered: Mapping[str, Any]) -> Runner: ...

    # Optional, looked up with getattr by the pipeline:
    # ``fp16_compute``: what an fp16 artifact computes in half precision: "tensors" (fp16
    # arithmetic, any chosen tensor kept fp32: TensorRT), "whole" (fp16 arithmetic for every
    # node or none: OpenVINO's CPU plugin), "weights" (f16 weights, f32 arithmetic: TFLite);
    # the pipeline keeps tensors past fp16's range fp32 for the first two;
    # ``f32_execution(lowered) -> dict | None``: the lowered info of the same fp16 files
    # executed f32 (f16 weights kept), where the runtime has such a mode (OpenVINO);
    # ``fp16_reference(model, fp32_tensors)`` and ``source_runner(source, target, names)``;
    # ``int64_range``: (lo, hi, why) where the runtime computes int64 in fewer bits (the
    # bundle's int64 inputs then say so and its runner refuses values outside);
    # ``dynamic_shapes``: True where the runtime takes inputs of shapes within a range (a
    # ``--profile``; its lowering's ``options["profiles"]``), so dims may stay dynamic;
    # ``fallback_lowerings``: option mappings for :meth:`lower`, each another way to lower
    # the same model that the pipeline tries, in turn, where the bundle misses its fidelity
    # budget (kept if it comes closer; ``lowered_as`` in its info says what it was).


def ensure_available(backend: Backend, context: str = "") -> None:
    """Raise BackendUnavailable if the backend's SDK is missing or it cannot lower yet."""
    try:
        require_modules(backend.name, backend.requires, backend.extra)
    except BackendUnavailable as e:
        raise BackendUnavailable(f"{context}{e}") from None
    reason = getattr(backend, "unavailable_reason", lambda: None)()
    if reason:
        raise BackendUnavailable(f"{context}{reason}")


def require_modules(backend: str, modules: tuple[str, ...], install: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(
            f"backend {backend} is unavailable: module(s) {', '.join(missing)} not installed (pip install {install})"
        )
