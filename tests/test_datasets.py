"""Which inputs a build validates on, and what it calls them.

The user's data whenever there is any (a part of --calibration held out when there is no
--validation-data), built-in samples only otherwise, and "guessed" said plainly.
"""

from __future__ import annotations

import numpy as np
import pytest

import deploycomp
from deploycomp.datasets import DataSet, built_in_validation, split_held_out, spread, validation_set
from deploycomp.preprocess import PreprocessSpec

SHAPES = {"x": (1, 3, 16, 16)}
DTYPES = {"x": np.dtype("float32")}


def _set(n: int) -> DataSet:
    return DataSet([{"x": np.full((1, 3, 16, 16), i, np.float32)} for i in range(n)], f"calib.npz ({n} samples)", "user")


def test_a_quarter_is_held_out_spread_over_the_set():
    kept, held = split_held_out(_set(16))
    ids = [int(s["x"][0, 0, 0, 0]) for s in held.samples]
    assert ids == [0, 5, 10, 15] and len(kept.samples) == 12  # spread: a set sorted by class keeps every class
    assert not {int(s["x"][0, 0, 0, 0]) for s in kept.samples} & set(ids)  # never calibrated on
    assert held.source == "held-out" and "held out of calibration" in held.label
    assert kept.label == "calib.npz (16 samples), 4 held out for validation"
    assert len(split_held_out(_set(100))[1].samples) == 16  # at most 16
    assert spread(3, 8) == [0, 1, 2]


def test_a_single_sample_serves_both_and_says_so():
    kept, held = split_held_out(_set(1))
    assert kept.samples == held.samples and "also calibrated on" in held.label


def test_precedence(tmp_path):
    np.savez(tmp_path / "val.npz", x=np.ones((2, 3, 16, 16), np.float32))
    val, calib = validation_set(tmp_path / "val.npz", _set(8), SHAPES, DTYPES, None, None)
    assert val.source == "user" and len(calib.samples) == 8  # nothing held out when validation data is given
    val, calib = validation_set(None, _set(8), SHAPES, DTYPES, None, None)
    assert val.source == "held-out" and len(calib.samples) == 6
    val, _ = validation_set(None, None, SHAPES, DTYPES, PreprocessSpec(), None)
    assert val.source == "built-in" and not val.guessed and "preprocessed by --preprocess" in val.label
    val, _ = validation_set(None, None, SHAPES, DTYPES, None, None)
    assert val.source == "guessed" and val.guessed
    val, _ = validation_set(None, None, {"t": (1, 7)}, {"t": np.dtype("float32")}, None, None)
    assert val.source == "random" and val.guessed


def test_built_in_photos_follow_the_users_spec():
    spec = PreprocessSpec(channel_order="bgr", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    data = built_in_validation(SHAPES, DTYPES, None, spec)
    x = data.samples[0]["x"]
    assert x.shape == (1, 3, 16, 16) and x.min() < -1.5 and x.max() > 1.5  # (0..1 - 0.5) / 0.25


def test_built_in_samples_take_the_inputs_float_type():
    """A float16 export with no data of the user's: the photos (guessed or through the
    user's spec) arrive as float16, as the model takes them; ONNX Runtime had refused
    float32 ones, blamed on inputs the user never gave."""
    half = {"x": np.dtype("float16")}
    for spec in (None, PreprocessSpec()):
        x = built_in_validation(SHAPES, half, None, spec).samples[0]["x"]
        assert x.dtype == np.float16 and x.shape == (1, 3, 16, 16)
    assert built_in_validation(SHAPES, DTYPES, None, None).samples[0]["x"].dtype == np.float32


def test_a_build_with_calibration_validates_on_held_out_user_data(tiny_conv, tmp_path):
    """--calibration and no --validation-data, at fp16: the user's data, not built-in photos."""
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).random((8, 3, 16, 16), dtype=np.float32))
    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="fp16", calibration=tmp_path / "c.npz")
    data = runner.manifest["validation"]["data"]
    assert data["source"] == "held-out" and data["samples"] == 2 and not data["guessed"]


def test_data_of_another_size_than_the_model_declares_says_how_to_take_it(tmp_path):
    """A fully convolutional model exported at a dummy size (a super-resolution net that
    declares 1x3x4x4) given 128x128 images: the error names the ``--input`` that takes them."""
    from deploycomp.errors import InputDataError
    from deploycomp.sample_data import load_npz_samples

    np.savez(tmp_path / "val.npz", input=np.zeros((6, 1, 3, 128, 128), np.float32))
    with pytest.raises(InputDataError, match=r"expected \[1, 3, 4, 4\].*\(if the model takes that size: "
                                             r"--input input:1x3x128x128\)"):
        load_npz_samples(tmp_path / "val.npz", {"input": (1, 3, 4, 4)}, {"input": np.dtype(np.float32)})


def test_every_input_of_another_size_is_in_the_hint(tmp_path):
    """ICLabel's three inputs each hold a batch of 4 per sample: the hint gave the first
    input's --input alone, and the user who passed it met the next error."""
    from deploycomp.errors import InputDataError
    from deploycomp.sample_data import load_npz_samples

    shapes = {"topo": (1, 1, 32, 32), "psds": (1, 1, 1, 100), "autocorr": (1, 1, 1, 100)}
    np.savez(tmp_path / "val.npz", **{n: np.zeros((6, 4, *s[1:]), np.float32) for n, s in shapes.items()})
    with pytest.raises(InputDataError, match=r"input 'topo' has shape \[6, 4, 1, 32, 32\].*\(2 more input\(s\) "
                                             r"likewise\) \(if the model takes that size: --input topo:4x1x32x32 "
                                             r"--input psds:4x1x1x100 --input autocorr:4x1x1x100\)$") as e:
        load_npz_samples(tmp_path / "val.npz", shapes, {n: np.dtype(np.float32) for n in shapes})
    assert "\n" not in str(e.value)


def test_the_misfit_hint_says_samples_of_a_batch_come_in_multiples_of_it(tmp_path):
    """A bundle of batch 4 given 6 rows: the hint had said "N x [32]", which 6 x 32 is; the
    rows come 4 to a sample."""
    from deploycomp.errors import InputDataError
    from deploycomp.sample_data import load_npz_samples

    np.savez(tmp_path / "val.npz", ids=np.zeros((6, 32), np.int64))
    with pytest.raises(InputDataError, match=r"holds 6 samples of \[32\], not a whole number of batches of 4 "
                                             r"\(the batch of \[4, 32\]\): give a multiple of 4"):
        load_npz_samples(tmp_path / "val.npz", {"ids": (4, 32)}, {"ids": np.dtype(np.int64)}, resizable=False)
    np.savez(tmp_path / "val.npz", ids=np.zeros((8, 32), np.int64))
    assert len(load_npz_samples(tmp_path / "val.npz", {"ids": (4, 32)}, {"ids": np.dtype(np.int64)})) == 2


def test_a_large_set_is_read_spread_over_not_whole(tmp_path, monkeypatch):
    """A folder of many images: calibration reads at most MAX_CALIBRATION_SAMPLES of them,
    spread over the set, validation at most MAX_VALIDATION_SAMPLES (the others are not
    read at all: 520 images had taken 1.2 GB), and the label says how many of how many."""
    from PIL import Image

    import deploycomp.datasets as datasets
    from deploycomp.datasets import calibration_set

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(folder / f"{i:02d}.png")
    monkeypatch.setattr(datasets, "MAX_CALIBRATION_SAMPLES", 5)
    calib = calibration_set(folder, SHAPES, DTYPES, PreprocessSpec(), None)
    assert len(calib.samples) == 5 and calib.label == "imgs (5 of 12 samples, spread over the set)"
    levels = [round(float(s["x"][0, 0, 0, 0]) * 255) for s in calib.samples]
    assert levels[0] == 0 and levels[-1] == 220  # the first and the last image: spread over
    val, _ = validation_set(folder, None, SHAPES, DTYPES, PreprocessSpec(), None)
    assert len(val.samples) == 12 and val.label == "imgs (12 samples)"  # (under 16: every one)
    np.savez(tmp_path / "many.npz", x=np.random.default_rng(0).random((12, 3, 16, 16), dtype=np.float32))
    assert len(calibration_set(tmp_path / "many.npz", SHAPES, DTYPES, None, None).samples) == 5
    # the user may validate on more, or on every one (a rare flip shows only over many)
    every, _ = validation_set(folder, None, SHAPES, DTYPES, PreprocessSpec(), None, most=None)
    assert len(every.samples) == 12 and every.label == "imgs (12 samples)"
    assert len(validation_set(folder, None, SHAPES, DTYPES, PreprocessSpec(), None, most=0)[0].samples) == 12
    assert len(validation_set(tmp_path / "many.npz", None, SHAPES, DTYPES, None, None, most=10)[0].samples) == 10
    calib = calibration_set(tmp_path / "many.npz", SHAPES, DTYPES, None, None)
    held, kept = validation_set(None, calib, SHAPES, DTYPES, None, None, most=None)
    assert len(held.samples) + len(kept.samples) == 5 and len(held.samples) == 1  # (a quarter of 5, uncapped)


def test_validation_samples_reach_the_build(tiny_conv, tmp_path):
    """``--validation-samples 0``: every one of 20 samples validated (16 by default)."""
    import json

    from tests.test_cli import cli

    np.savez(tmp_path / "v.npz", x=np.random.default_rng(0).random((20, 1, 3, 16, 16), dtype=np.float32))
    for flag, count in (("8", 8), ("0", 20), (None, 16)):
        code, stdout, stderr = cli("build", tiny_conv, "--input", "x:1x3x16x16", "--validation-data", tmp_path / "v.npz",
                                   *(("--validation-samples", flag) if flag else ()), "--out", tmp_path / f"b{flag}", "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["validation_data"]["samples"] == count


def test_a_constant_float_input_beside_varying_ids_is_data():
    """A text model's float attention mask of ones beside token ids that vary: calibrated
    on, not refused as constant data."""
    from deploycomp.datasets import data_notes

    rng = np.random.default_rng(0)
    samples = [{"ids": rng.integers(0, 1000, (1, 16)), "mask": np.ones((1, 16), np.float32)} for _ in range(6)]
    notes = data_notes(DataSet(samples, "text.npz (6 samples)", "user"), DataSet(samples[:2], "held", "held-out"))
    assert not any("distinct" in n for n in notes)
    with pytest.raises(deploycomp.errors.InputDataError, match="constant in every sample"):
        zeros = [{"ids": np.zeros((1, 16), np.int64), "mask": np.ones((1, 16), np.float32)} for _ in range(6)]
        data_notes(DataSet(zeros, "zeros.npz (6 samples)", "user"), DataSet(zeros[:2], "held", "held-out"))


def _declaring(path, shape):
    """An .npz whose one array 'x' declares ``shape`` and holds no data (what a few MB of
    compressed zeros expand to, without making them)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", header.getvalue())
    return path


def test_an_array_is_judged_by_its_header_before_it_is_read(tmp_path):
    """A 3 MB .npz of compressed zeros declaring 64x1x3x2048x2048 had taken 3.2 GB before
    its shape was refused; one declaring terabytes ended in an out-of-memory exit (10,
    "retry elsewhere") instead of a data error."""
    from deploycomp.errors import InputDataError
    from deploycomp.sample_data import load_npz_samples

    shapes, dtypes = {"x": (1, 3, 32, 32)}, {"x": np.dtype(np.float32)}
    with pytest.raises(InputDataError, match=r"input 'x' has shape \[64, 1, 3, 2048, 2048\], expected"):
        load_npz_samples(_declaring(tmp_path / "misfit.npz", (64, 1, 3, 2048, 2048)), shapes, dtypes)
    with pytest.raises(InputDataError, match=r"declares shape 100000x1x3x32000x32000 .* more than half this machine"):
        load_npz_samples(_declaring(tmp_path / "huge.npz", (100000, 1, 3, 32000, 32000)), shapes, dtypes)


def test_a_few_validation_samples_say_how_little_a_pass_bounds(caplog):
    """A budget met on 6 samples still lets up to 39% of inputs like them miss it (95%): a
    CenterFace int8 build met 0.98 on 6 photos and fell to 0.955 on one of 13 fresh ones.
    The data notes say so under 14 samples; the manifest records the bound for any set of
    the user's."""
    from deploycomp.datasets import data_notes, miss_share_bound

    rng = np.random.default_rng(0)
    samples = [{"x": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(24)]
    calibration = DataSet(samples[:8], "calib.npz (8 samples)", "user")
    with caplog.at_level("WARNING"):
        notes = data_notes(calibration, DataSet(samples[8:14], "val.npz (6 samples)", "user"))
    assert not caplog.records  # said (summary, report, manifest), not a warning on stderr: a CI tool stays quiet
    assert notes == ["validation data: 6 samples: even where each meets the budget, up to 39% of inputs like them "
                     "could miss it (95% confidence; 30 samples bound it at 10%)"]
    assert data_notes(calibration, DataSet(samples[8:24], "val.npz (16 samples)", "user")) == []
    assert data_notes(None, DataSet(samples[:2], "built-in", "built-in")) == []  # (built-in: said otherwise)
    assert round(miss_share_bound(6), 3) == 0.393 and round(miss_share_bound(59), 3) == 0.05
    assert DataSet(samples[8:14], "val.npz (6 samples)", "user").to_json()["miss_share_95"] == 0.393
    # one input given six times is one input, in the record as in the note
    assert DataSet([samples[8]] * 6, "val.npz (6 samples)", "user").to_json()["miss_share_95"] == 0.95
    assert "miss_share_95" not in DataSet(samples[:2], "photos", "guessed").to_json()


def test_a_batched_sample_counts_its_rows_as_inputs():
    """At batch 32 the 32 photos of a validation set are one sample of the build: they had
    read "1 sample: up to 95% of inputs like them could miss"; they are 32 inputs."""
    from deploycomp.datasets import data_notes, items

    rng = np.random.default_rng(0)
    batch = {"x": rng.random((32, 3, 8, 8), dtype=np.float32)}
    assert len(items([batch])) == 32 and len(items([{"x": batch["x"][:1]}])) == 1
    assert len(items([{"x": batch["x"][:4], "n": np.array([4, 4, 4])}])) == 1  # (axes that differ: no batch)
    validation = DataSet([batch], "val.npz (32 samples)", "user")
    assert data_notes(None, validation) == [] and validation.to_json()["miss_share_95"] == 0.089
    few = DataSet([{"x": batch["x"][:8]}], "val.npz (8 samples)", "user")
    assert data_notes(None, few)[0].startswith("validation data: 8 samples: even where each meets")


def test_rows_that_are_not_whole_batches_are_said_so():
    """5 samples for a build at batch 8 had been refused with a hint to pass the --input
    already given; the count is what is wrong."""
    from deploycomp.sample_data import samples_from_arrays

    shapes, dtypes = {"x": (8, 3, 4, 4)}, {"x": np.dtype(np.float32)}
    with pytest.raises(deploycomp.errors.InputDataError,
                       match=r"^val.npz: input 'x' holds 5 samples of \[3, 4, 4\], not a whole number of batches of 8 "
                             r"\(the batch of \[8, 3, 4, 4\]\): give a multiple of 8$"):
        samples_from_arrays({"x": np.zeros((5, 3, 4, 4), np.float32)}, "val.npz", shapes, dtypes)
    assert len(samples_from_arrays({"x": np.zeros((16, 3, 4, 4), np.float32)}, "val.npz", shapes, dtypes)) == 2
