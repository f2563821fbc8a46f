"""Input shape specs (``--input NAME:SHAPE``) and what a model leaves dynamic.

A spec is ``name:1x3x320x320``; a shape alone (``1x3x320x320``) is accepted for a
single-input model. Specs are checked against the model before any pass runs: the
name must be a graph input and the rank must match, and a fixed dim in the model may
not be contradicted (``3`` channels stays ``3``).
"""

from __future__ import annotations

import re

import onnx_ir as ir

from deploycomp.errors import InputDataError, few

__all__ = ["InputSpec", "check_specs", "dynamic_dims", "input_shapes", "parse_input_spec"]

InputSpec = tuple[str | None, tuple[int, ...]]

_SHAPE = re.compile(r"^\d+(x\d+)*$")


def parse_input_spec(text: str) -> InputSpec:
    name, sep, shape = text.rpartition(":")
    shape = shape.strip().lower().replace(",", "x")
    if not _SHAPE.match(shape):
        raise InputDataError(f"--input {text!r}: shape must look like 1x3x320x320")
    dims = tuple(int(d) for d in shape.split("x"))
    if any(d <= 0 for d in dims):
        raise InputDataError(f"--input {text!r}: every dim must be positive")
    return (name if sep else None), dims


def _is_static(dim: object) -> bool:
    return isinstance(dim, int) and dim >= 0


def dynamic_dims(model: ir.Model) -> dict[str, list[int]]:
    """Input name -> indices of dims that are symbolic or unknown."""
    out: dict[str, list[int]] = {}
    for value in model.graph.inputs:
        if value.shape is None:
            out[value.name] = [-1]
            continue
        dims = [i for i, d in enumerate(value.shape) if not _is_static(d)]
        if dims:
            out[value.name] = dims
    return out


def input_shapes(model: ir.Model) -> dict[str, list[int | str]]:
    """Input name -> shape with symbolic dims as their names (for reports)."""
    shapes: dict[str, list[int | str]] = {}
    for value in model.graph.inputs:
        dims = [] if value.shape is None else list(value.shape)
        shapes[value.name] = [d if _is_static(d) else (getattr(d, "value", None) or "?") for d in dims]
    return shapes


def check_specs(model: ir.Model, specs: list[InputSpec]) -> dict[str, tuple[int, ...]]:
    """Resolve specs to ``{input name: shape}`` or raise naming the mismatch."""
    inputs = {v.name: v for v in model.graph.inputs}
    resolved: dict[str, tuple[int, ...]] = {}
    for name, dims in specs:
        if name is None:
            if len(inputs) != 1:
                raise InputDataError(
                    f"--input {'x'.join(map(str, dims))}: the model has {len(inputs)} inputs "
                    f"({', '.join(inputs)}); write NAME:SHAPE"
                )
            name = next(iter(inputs))
        if name not in inputs:
            raise InputDataError(f"--input {name}: the model has no input named {name!r} (inputs: {few(inputs, 6)})")
        shape = inputs[name].shape
        if shape is not None:
            if len(shape) != len(dims):
                raise InputDataError(
                    f"--input {name}: rank {len(dims)} given, the model's input has rank {len(shape)} "
                    f"({input_shapes(model)[name]})"
                )
            for i, (want, have) in enumerate(zip(dims, shape)):
                if _is_static(have) and have != want:
                    raise InputDataError(f"--input {name}: dim {i} is fixed to {have} in the model, {want} given")
        resolved[name] = dims
    return resolved


ProfileSpec = tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def parse_profile_spec(text: str) -> ProfileSpec:
    """``images:1x3x320x320:4x3x320x320:8x3x320x320`` -> (name, min, opt, max)."""
    parts = text.split(":")
    if len(parts) != 4 or not parts[0]:
        raise InputDataError(f"--profile {text!r}: expected NAME:MIN:OPT:MAX, e.g. images:1x3x320x320:4x3x320x320:8x3x320x320")
    name, *shapes = parts
    dims = [parse_input_spec(f"{name}:{s}")[1] for s in shapes]
    if len({len(d) for d in dims}) != 1:
        raise InputDataError(f"--profile {text!r}: MIN, OPT and MAX must have the same rank")
    lo, opt, hi = dims
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise InputDataError(f"--profile {text!r}: every dim must satisfy MIN <= OPT <= MAX")
    return name, lo, opt, hi
