"""``--preprocess SPEC``: one spec turns images into the model's inputs, as the model expects."""

from __future__ import annotations

import numpy as np
import pytest

from deploycomp.errors import InputDataError
from deploycomp.preprocess import PreprocessSpec, load_spec

IMG = np.zeros((20, 40, 3), np.uint8)
IMG[..., 0], IMG[..., 1], IMG[..., 2] = 200, 100, 50  # R, G, B


def test_defaults_are_the_guess_made_without_a_spec():
    x = PreprocessSpec().apply(IMG, (1, 3, 10, 20))
    assert x.shape == (1, 3, 10, 20) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 5, 10], [200 / 255, 100 / 255, 50 / 255], rtol=1e-6)


def test_bgr_mean_std_nhwc_and_stretch():
    spec = load_spec("{channel_order: bgr, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], layout: nhwc, resize: resize}")
    x = spec.apply(IMG, (1, 8, 8, 3))
    assert x.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(x[0, 0, 0], [(50 / 255 - 0.5) / 0.5, (100 / 255 - 0.5) / 0.5, (200 / 255 - 0.5) / 0.5],
                               rtol=1e-5)


def test_letterbox_pads_with_grey_and_gray_inputs_get_luminance():
    x = PreprocessSpec().apply(IMG, (1, 3, 40, 40))  # 20x40 into 40x40: bands above and below
    np.testing.assert_allclose(x[0, :, 0, 0], [114 / 255] * 3, rtol=1e-6)
    g = PreprocessSpec(scale=1.0).apply(IMG, (1, 1, 10, 20))
    assert g.shape == (1, 1, 10, 20)
    np.testing.assert_allclose(g[0, 0, 5, 10], 0.299 * 200 + 0.587 * 100 + 0.114 * 50, rtol=1e-5)


def test_spec_from_a_file_and_its_errors(tmp_path):
    (tmp_path / "p.yaml").write_text("scale: 1.0\ndtype: uint8\nlayout: nhwc\n")
    x = load_spec(tmp_path / "p.yaml").apply(IMG, (1, 20, 40, 3))
    assert x.dtype == np.uint8 and x[0, 0, 0, 0] == 200
    with pytest.raises(InputDataError, match="unknown key 'colour'"):
        load_spec("{colour: yes}")
    with pytest.raises(InputDataError, match="std may not contain 0"):
        load_spec({"std": [1, 0, 1]})
    with pytest.raises(InputDataError, match="missing.yaml: preprocessing spec not found"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(InputDataError, match="is a mapping"):
        load_spec("just text")
    with pytest.raises(InputDataError, match="mean has 2 values for 3 channel"):
        PreprocessSpec(mean=(0.1, 0.2)).apply(IMG, (1, 3, 8, 8))
    with pytest.raises(InputDataError, match="needs a rank-4 input"):
        PreprocessSpec().apply(IMG, (1, 3, 8))


def test_a_spec_with_only_arrays_given_says_it_is_not_applied(tiny_conv, tmp_path, caplog):
    """--preprocess with .npz data: the arrays are the model's inputs as they are, and the
    spec had been ignored without a word."""
    import logging

    import deploycomp

    np.savez(tmp_path / "val.npz", x=np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="deploycomp"):
        deploycomp.build(tiny_conv, tmp_path / "b", preprocess="scale: 0.5", validation_data=tmp_path / "val.npz")
    assert any("--preprocess applies to image folders and built-in samples; val.npz holds the model's inputs as "
               "they are: not applied" in r.getMessage() for r in caplog.records)
