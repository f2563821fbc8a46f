"""Transposes merge, cancel, and move through elementwise ops until they cancel."""

from __future__ import annotations

import numpy as np

from tests.passes._harness import model_from_text, optimize_and_compare, rng

X = {"x": rng().standard_normal((1, 3, 4, 5)).astype(np.float32)}


def _ops(tmp_path, body: str, out="1, 3, 4, 5", inputs="float[1, 3, 4, 5] x"):
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g ({inputs}) => (float[{out}] y) {{ {body} }}
    """
    feeds = {"x": X["x"]} if "b" not in inputs else {"x": X["x"], "b": rng(1).standard_normal((1, 3, 4, 5)).astype(np.float32)}
    return optimize_and_compare(tmp_path, model_from_text(text), feeds)


def test_inverse_pair_cancels(tmp_path):
    body = "a = Transpose<perm = [0, 2, 3, 1]>(x)\n b = Transpose<perm = [0, 3, 1, 2]>(a)\n y = Relu(b)"
    assert _ops(tmp_path, body) == {"Relu": 1}


def test_chain_merges_into_one(tmp_path):
    body = "a = Transpose<perm = [0, 2, 3, 1]>(x)\n y = Transpose<perm = [0, 2, 3, 1]>(a)"
    assert _ops(tmp_path, body, out="1, 5, 3, 4") == {"Transpose": 1}


def test_unary_between_inverse_transposes_cancels(tmp_path):
    body = ("a = Transpose<perm = [0, 2, 3, 1]>(x)\n r = Sigmoid(a)\n"
            " y = Transpose<perm = [0, 3, 1, 2]>(r)")
    assert _ops(tmp_path, body) == {"Sigmoid": 1}


def test_binary_of_alike_transposes_needs_one(tmp_path):
    body = ("a = Transpose<perm = [0, 2, 3, 1]>(x)\n c = Transpose<perm = [0, 2, 3, 1]>(b)\n"
            " y = Add(a, c)")
    ops = _ops(tmp_path, body, out="1, 4, 5, 3", inputs="float[1, 3, 4, 5] x, float[1, 3, 4, 5] b")
    assert ops == {"Add": 1, "Transpose": 1}


def test_different_perms_stay(tmp_path):
    body = ("a = Transpose<perm = [0, 1, 3, 2]>(x)\n c = Transpose<perm = [0, 1, 3, 2]>(b)\n"
            " d = Transpose<perm = [0, 2, 3, 1]>(c)\n y = Relu(d)")
    ops = _ops(tmp_path, body, out="1, 5, 4, 3", inputs="float[1, 3, 4, 5] x, float[1, 3, 4, 5] b")
    assert ops["Transpose"] == 1 and ops["Relu"] == 1
