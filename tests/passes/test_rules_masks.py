"""A large additive mask is added after a bias that does not depend on the inputs.

The specification: ``scores + (bias + (1 - mask) * K)`` becomes ``(scores + bias) + (1 -
mask) * K`` when the bias is computed from constants and ``|K|`` is mask-sized; ONNX
Runtime gives the same outputs bit for bit on 0/1 masks, and OpenVINO's CPU plugin with
static shapes, which dropped the bias from the original order, now matches it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from deploycomp.ir import load_model
from deploycomp.passes import build_pipeline, run_passes
from tests.passes._harness import _run, model_from_text, rng

HEADS, N = 2, 8


def _attention(k: float = -3.4028234663852886e38, bias_from_input: bool = False) -> onnx.ModelProto:
    """Softmax over scores plus a position bias (a constant table, unsqueezed as T5's
    export does, or an input) plus a padding mask scaled by ``k``."""
    bias = "b = Unsqueeze(pos_in, zero)" if bias_from_input else "b = Unsqueeze(table, zero)"
    extra = f", float[{HEADS}, {N}, {N}] pos_in" if bias_from_input else ""
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, {HEADS}, {N}, {N}] scores, float[1, {N}] mask{extra}) => (float[1, {HEADS}, {N}, {N}] y) {{
        zero = Constant<value = int64[1] {{0}}>()
        axes = Constant<value = int64[2] {{1, 2}}>()
        one = Constant<value = float {{1.0}}>()
        k = Constant<value = float {{{k!r}}}>()
        {bias}
        m = Unsqueeze(mask, axes)
        keep = Sub(one, m)
        t = Mul(keep, k)
        bt = Add(b, t)
        x = Add(scores, bt)
        y = Softmax<axis = -1>(x)
    }}
    """
    table = rng(1).standard_normal((HEADS, N, N)).astype(np.float32) * 4
    return model_from_text(text, **({} if bias_from_input else {"table": table}))


def _feeds(bias_from_input: bool = False) -> dict:
    mask = np.zeros((1, N), np.float32)
    mask[0, :5] = 1  # five tokens, three padding
    feeds = {"scores": rng(2).standard_normal((1, HEADS, N, N)).astype(np.float32), "mask": mask}
    if bias_from_input:
        feeds["pos_in"] = rng(3).standard_normal((HEADS, N, N)).astype(np.float32)
    return feeds


def _optimized(tmp_path, model: onnx.ModelProto, feeds: dict):
    src = tmp_path / "before.onnx"
    onnx.save(model, src)
    optimized, _ = run_passes(load_model(src).model, build_pipeline("default", {k: v.shape for k, v in feeds.items()}))
    return optimized


def _scores_add(model):
    """The Add that reads the scores input."""
    (node,) = [n for n in model.graph if n.op_type == "Add" and any(v.name == "scores" for v in n.inputs)]
    return node


def test_the_mask_term_is_added_last_with_the_same_outputs(tmp_path):
    from deploycomp.ir import save_model

    feeds = _feeds()
    optimized = _optimized(tmp_path, _attention(), feeds)
    first = _scores_add(optimized)
    other = next(v for v in first.inputs if v.name != "scores")
    assert other.producer() is None or other.producer().op_type != "Mul"  # the bias, not the mask term
    (last,) = [u for u, _ in first.outputs[0].uses()]
    assert last.op_type == "Add" and any(v.producer() is not None and v.producer().op_type == "Mul" for v in last.inputs)
    save_model(optimized, tmp_path / "after.onnx")
    before, after = _run(tmp_path / "before.onnx", feeds), _run(tmp_path / "after.onnx", feeds)
    np.testing.assert_array_equal(after[0], before[0])  # bit for bit on a 0/1 mask


@pytest.mark.parametrize("k, bias_from_input", [(-2.0, False), (-3.4028234663852886e38, True)],
                         ids=["small-scale", "bias-from-input"])
def test_the_order_stays_where_nothing_could_merge(tmp_path, k, bias_from_input):
    """A Mul by -2 is no mask; a bias read from an input is no constant a runtime folds."""
    feeds = _feeds(bias_from_input)
    optimized = _optimized(tmp_path, _attention(k, bias_from_input), feeds)
    inner = next(v for v in _scores_add(optimized).inputs if v.name != "scores").producer()
    assert inner.op_type == "Add"  # scores + (bias + mask term), as written


def test_an_openvino_build_keeps_the_bias(tmp_path):
    """End to end on host with static shapes: OpenVINO 2026.4 merged the mask's constant
    into the folded bias (bias + K is K) and computed softmax(scores + mask) instead."""
    import deploycomp

    onnx.save(_attention(), tmp_path / "attention.onnx")
    np.savez(tmp_path / "val.npz", **{k: np.concatenate([v, v[:, ::-1] if v.ndim == 4 else v]) for k, v in _feeds().items()})
    runner = deploycomp.build(tmp_path / "attention.onnx", tmp_path / "b", target="host", precision="fp32",
                              validation_data=tmp_path / "val.npz", min_cosine=0.99999)
    assert runner.manifest["validation"]["ok"]
    got = runner.run(_feeds())["y"]
    np.testing.assert_allclose(got, _run(tmp_path / "attention.onnx", _feeds())[0], atol=1e-6)
