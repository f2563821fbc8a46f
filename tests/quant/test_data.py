"""Calibration data readers and the one-line error for each bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploycomp.errors import InputDataError
from deploycomp.quant.data import load_calibration

SHAPES = {"x": (1, 3, 8, 8)}
DTYPES = {"x": np.dtype(np.float32)}


def test_npz_stacked_samples(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((5, 3, 8, 8), np.float32))
    assert len(load_calibration(tmp_path / "c.npz", SHAPES, DTYPES)) == 5


def test_npz_samples_on_a_new_leading_axis(tmp_path):
    """An input without a batch axis (a graph's 10 nodes x 85 features; its 2 x 18 edge
    list) takes its samples stacked on a new axis; the first axis's chunks still work, and
    a 1 x ... input reads the same either way."""
    shapes = {"feat": (10, 85), "edges": (2, 18), "x": (1, 3, 8, 8)}
    dtypes = {"feat": np.dtype(np.float32), "edges": np.dtype(np.int64), "x": np.dtype(np.float32)}
    rng = np.random.default_rng(0)
    feat, edges = rng.random((3, 10, 85), dtype=np.float32), rng.integers(0, 10, (3, 2, 18))
    x = rng.random((3, 1, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "g.npz", feat=feat, edges=edges.reshape(6, 18), x=x)
    samples = load_calibration(tmp_path / "g.npz", shapes, dtypes)
    assert len(samples) == 3
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(s["feat"], feat[i])
        np.testing.assert_array_equal(s["edges"], edges[i])  # 6 x 18: chunks of 2 rows
        np.testing.assert_array_equal(s["x"], x[i])


def test_npy_for_single_input(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((3, 3, 8, 8), np.float32))
    samples = load_calibration(tmp_path / "c.npy", SHAPES, DTYPES)
    assert len(samples) == 3 and samples[0]["x"].shape == (1, 3, 8, 8)


def test_image_folder_with_spec(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "calibration.yaml").write_text("resize: resize\nchannel_order: bgr\nscale: 0.5\nmean: [1, 1, 1]\n")
    samples = load_calibration(tmp_path, SHAPES, DTYPES)
    assert len(samples) == 3
    assert samples[2]["x"].shape == (1, 3, 8, 8) and np.allclose(samples[2]["x"], 80 * 0.5 - 1)


def test_iterable_from_python():
    samples = load_calibration(({"x": np.zeros((1, 3, 8, 8), np.float32)} for _ in range(2)), SHAPES, DTYPES)
    assert len(samples) == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.savez(p / "c.npz", x=np.full((2, 3, 8, 8), np.nan, np.float32)), "contains NaN"),
        (lambda p: np.savez(p / "c.npz", x=np.zeros((2, 3, 9, 8), np.float32)), "expected [1, 3, 8, 8]"),
        (lambda p: np.savez(p / "c.npz", y=np.zeros((1, 3, 8, 8), np.float32)), "no array for input(s) x"),
        (lambda p: np.savez(p / "c.npz", x=np.zeros((1, 3, 8, 8), np.bool_)), "dtype bool"),
    ],
)
def test_bad_npz(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(InputDataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_calibration(tmp_path / "c.npz", SHAPES, DTYPES)


def test_bad_folders(tmp_path):
    with pytest.raises(InputDataError, match="needs a preprocessing spec: --preprocess SPEC or calibration.yaml"):
        load_calibration(tmp_path, SHAPES, DTYPES)
    (tmp_path / "calibration.yaml").write_text("layout: nchw\n")
    with pytest.raises(InputDataError, match="no images"):
        load_calibration(tmp_path, SHAPES, DTYPES)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputDataError, match="broken.png: unreadable image"):
        load_calibration(tmp_path, SHAPES, DTYPES)
    (tmp_path / "calibration.yaml").write_text("colour: yes\n")
    with pytest.raises(InputDataError, match="unknown key"):
        load_calibration(tmp_path, SHAPES, DTYPES)


def test_missing_and_wrong_kind(tmp_path):
    with pytest.raises(InputDataError, match="no such file"):
        load_calibration(tmp_path / "nope.npz", SHAPES, DTYPES)
    (tmp_path / "c.txt").write_text("1 2 3")
    with pytest.raises(InputDataError, match="must be .npz, .npy or a folder"):
        load_calibration(tmp_path / "c.txt", SHAPES, DTYPES)
    with pytest.raises(InputDataError, match="calibration data is empty"):
        load_calibration([], SHAPES, DTYPES)


def test_shipped_calibration_sets_read():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "calibration_data"
    photos = load_calibration(root / "photos", {"images": (1, 3, 320, 320)}, {"images": np.dtype(np.float32)})
    assert len(photos) == 8 and all(0.0 <= s["images"].min() and s["images"].max() <= 1.0 for s in photos)
    lines = load_calibration(root / "text-lines", {"x": (1, 3, 48, 192)}, {"x": np.dtype(np.float32)})
    assert len(lines) == 12 and lines[0]["x"].min() >= -1.0 and lines[0]["x"].max() <= 1.0


def test_one_dict_of_stacked_arrays_from_python_reads_as_an_npz_would():
    """``calibration={"x": array}`` from Python (an .npz's contents): the samples an .npz of
    the same arrays gives (it raised an AttributeError)."""
    from deploycomp.quant.data import load_samples

    x = np.random.default_rng(1).random((5, 3, 8, 8), dtype=np.float32)
    samples = load_samples({"x": x}, {"x": (1, 3, 8, 8)}, {"x": np.dtype(np.float32)})
    assert len(samples) == 5 and all(np.array_equal(s["x"], x[i : i + 1]) for i, s in enumerate(samples))


def test_python_samples_may_leave_out_a_batch_axis_of_one():
    """Samples from Python without the batch axis of 1 (``[3, 8, 8]`` for ``[1, 3, 8, 8]``),
    as an .npz may stack them: taken with it (they were refused)."""
    samples = load_calibration(({"x": np.zeros((3, 8, 8), np.float32)} for _ in range(2)), SHAPES, DTYPES)
    assert [s["x"].shape for s in samples] == [(1, 3, 8, 8)] * 2
    with pytest.raises(InputDataError, match=r"shape \[3, 8\], expected \[1, 3, 8, 8\]"):
        load_calibration([{"x": np.zeros((3, 8), np.float32)}], SHAPES, DTYPES)


def test_a_misfit_says_channels_last_and_offers_input_only_where_it_can_be_used(tmp_path):
    """NHWC data for an NCHW model is named as such (the hint had offered --input of the
    NHWC shape, which then failed); ``run``'s bundle has a fixed shape, so no --input."""
    from deploycomp.sample_data import load_npz_samples

    np.savez(tmp_path / "nhwc.npz", x=np.zeros((4, 1, 8, 8, 3), np.float32))
    with pytest.raises(InputDataError, match=r"channels-last, NHWC; the model takes NCHW"):
        load_calibration(tmp_path / "nhwc.npz", SHAPES, DTYPES)
    np.savez(tmp_path / "big.npz", x=np.zeros((4, 1, 3, 9, 9), np.float32))
    with pytest.raises(InputDataError, match=r"--input x:1x3x9x9"):
        load_calibration(tmp_path / "big.npz", SHAPES, DTYPES)
    with pytest.raises(InputDataError) as refused:
        load_npz_samples(tmp_path / "big.npz", SHAPES, DTYPES, resizable=False)
    assert "--input" not in str(refused.value)


def test_arrays_no_input_reads_are_said_and_an_empty_file_is_named(tmp_path, caplog):
    """An extra array (a renamed input, a typo) was silently ignored by build and run while
    the Python runner refused it; an empty file's error did not name the file."""
    import logging

    np.savez(tmp_path / "extra.npz", x=np.zeros((2, 3, 8, 8), np.float32), z=np.zeros(3, np.float32))
    with caplog.at_level(logging.WARNING, logger="deploycomp.sample_data"):
        assert len(load_calibration(tmp_path / "extra.npz", SHAPES, DTYPES)) == 2
    assert any("array(s) z match no input" in r.getMessage() for r in caplog.records)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3, 8, 8), np.float32))
    with pytest.raises(InputDataError, match=r"empty.npz: calibration data is empty"):
        load_calibration(tmp_path / "empty.npz", SHAPES, DTYPES)
