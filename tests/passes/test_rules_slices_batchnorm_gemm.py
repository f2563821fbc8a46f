"""Slice pairs -> Split, BatchNorm -> Conv, MatMul + Add -> Gemm, duplicates merged."""

from __future__ import annotations

import numpy as np

from tests.passes._harness import model_from_text, optimize_and_compare, rng


def test_partitioning_slices_become_split(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 10] x) => (float[1, 1, 10] y) {
        s0 = Constant<value = int64[1] {0}>()
        s1 = Constant<value = int64[1] {1}>()
        e = Constant<value = int64[1] {4}>()
        ax = Constant<value = int64[1] {1}>()
        a = Slice(x, s0, s1, ax)
        b = Slice(x, s1, e, ax)
        rs = Constant<value = int64[1] {1}>()
        bs = ReduceSum<keepdims = 1>(b, rs)
        y = Sub(bs, a)
    }
    """
    feeds = {"x": rng().standard_normal((1, 4, 10)).astype(np.float32)}
    ops = optimize_and_compare(tmp_path, model_from_text(text), feeds)
    assert ops["Split"] == 1 and "Slice" not in ops


def test_overlapping_slices_stay(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 10] x) => (float[1, 2, 10] y) {
        s0 = Constant<value = int64[1] {0}>()
        s1 = Constant<value = int64[1] {2}>()
        e = Constant<value = int64[1] {4}>()
        m = Constant<value = int64[1] {3}>()
        ax = Constant<value = int64[1] {1}>()
        a = Slice(x, s0, s1, ax)
        b = Slice(x, m, e, ax)
        y = Sub(a, b)
    }
    """.replace("float[1, 2, 10] y", "float[1, 2, 10] y")
    feeds = {"x": rng().standard_normal((1, 4, 10)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, model_from_text(text), feeds)["Slice"] == 2


def test_conv_batchnorm_folds(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3, 8, 8] x, float[4, 3, 3, 3] w, float[4] g, float[4] b, float[4] m, float[4] v) => (float[1, 4, 6, 6] y) {
        c = Conv(x, w)
        y = BatchNormalization(c, g, b, m, v)
    }
    """
    r = rng()
    weights = {k: r.standard_normal(4).astype(np.float32) for k in "gbm"}
    model = model_from_text(text, w=r.standard_normal((4, 3, 3, 3)).astype(np.float32), v=r.random(4).astype(np.float32) + 0.1, **weights)
    feeds = {"x": r.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, model, feeds, rtol=1e-4, atol=1e-4) == {"Conv": 1}


def test_matmul_add_becomes_gemm(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 8] x, float[8, 4] w, float[4] b) => (float[2, 4] y) {
        m = MatMul(x, w)
        y = Add(m, b)
    }
    """
    r = rng()
    model = model_from_text(text, w=r.standard_normal((8, 4)).astype(np.float32), b=r.standard_normal(4).astype(np.float32))
    feeds = {"x": r.standard_normal((2, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, model, feeds) == {"Gemm": 1}


def test_common_subexpressions_and_duplicate_weights_merge(tmp_path):
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 8] x, float[8] w1, float[8] w2) => (float[2, 8] y) {
        a = Mul(x, w1)
        b = Mul(x, w2)
        ra = Relu(a)
        rb = Relu(b)
        y = Add(ra, rb)
    }
    """
    w = rng().standard_normal(8).astype(np.float32)
    model = model_from_text(text, w1=w, w2=w.copy())
    feeds = {"x": rng(1).standard_normal((2, 8)).astype(np.float32)}
    assert optimize_and_compare(tmp_path, model, feeds) == {"Mul": 1, "Relu": 1, "Add": 1}
