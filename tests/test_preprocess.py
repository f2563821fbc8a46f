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


def test_a_grey_input_takes_luminance_whatever_the_channel_order():
    """Pure red is 0.299 of white in luminance, pure blue 0.114, under ``bgr`` too (the
    flip came first and swapped their weights)."""
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    for order in ("rgb", "bgr"):
        g = PreprocessSpec(channel_order=order).apply(red, (1, 1, 8, 8))
        np.testing.assert_allclose(g[0, 0, 0, 0], 0.299, rtol=1e-5)


def _saved(tmp_path, name, array, mode=None, **save):
    from PIL import Image

    path = tmp_path / name
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path, **save)
    return path


def test_images_are_read_as_a_viewer_shows_them(tmp_path):
    """A 16-bit greyscale PNG at its full range (PIL's RGB conversion had clipped it
    white), a transparent PNG on white (its hidden pixels had made black text on clear a
    black image), a JPEG turned upright by its EXIF orientation (read on its side)."""
    from PIL import Image
    from skimage import data

    from deploycomp.quant.data import read_image

    camera = data.camera()  # 512 x 512 uint8
    wide = _saved(tmp_path, "camera16.png", camera.astype(np.uint16) * 257)
    assert Image.open(wide).mode.startswith("I")
    got = read_image(wide)
    assert got.shape == (512, 512, 3) and abs(int(got[..., 0].astype(int).mean()) - int(camera.mean())) <= 1
    text = np.zeros((20, 40, 4), np.uint8)
    text[5:15, 10:30, 3] = 255  # black strokes on a clear background
    got = read_image(_saved(tmp_path, "text.png", text))
    assert got[0, 0].tolist() == [255, 255, 255] and got[10, 20].tolist() == [0, 0, 0]
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # a bright top band
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown turned 90 degrees clockwise
    got = read_image(_saved(tmp_path, "tall.jpg", tall, exif=exif.tobytes(), quality=95))
    assert got.shape == (20, 40, 3) and got[:, -5:].mean() > 200 and got[:, :5].mean() < 50


def test_a_folder_skips_what_is_not_an_image_and_names_a_file_too_large(tmp_path, caplog):
    """macOS resource forks (``._a.jpg``) and notes are left out and said; an image past
    PIL's decompression-bomb limit is the documented input error naming the file (it had
    been an internal error)."""
    import logging

    from PIL import Image

    from deploycomp.quant.data import load_samples

    folder = tmp_path / "imgs"
    folder.mkdir()
    _saved(folder, "a.png", np.full((16, 16, 3), 128, np.uint8))
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (folder / "README.txt").write_text("photos")
    with caplog.at_level(logging.WARNING):
        samples = load_samples(folder, {"x": (1, 3, 8, 8)}, {"x": np.dtype("float32")}, PreprocessSpec())
    assert len(samples) == 1 and "2 entries that are not images" in caplog.text
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 100  # (a 16 x 16 image is then over twice the limit)
        with pytest.raises(InputDataError, match=r"a.png: image too large to read safely"):
            load_samples(folder, {"x": (1, 3, 8, 8)}, {"x": np.dtype("float32")}, PreprocessSpec())
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_a_spec_of_another_dtype_than_the_input_is_named(tmp_path):
    from deploycomp.quant.data import load_samples

    folder = tmp_path / "imgs"
    folder.mkdir()
    _saved(folder, "a.png", np.full((16, 16, 3), 128, np.uint8))
    half = load_samples(folder, {"x": (1, 3, 8, 8)}, {"x": np.dtype("float16")}, PreprocessSpec())
    assert half[0]["x"].dtype == np.float16  # float to float: as the model takes it
    with pytest.raises(InputDataError, match="the preprocessing spec makes uint8 inputs; input 'x' takes float32"):
        load_samples(folder, {"x": (1, 3, 8, 8)}, {"x": np.dtype("float32")}, PreprocessSpec(dtype="uint8"))


def test_pad_keeps_a_text_lines_aspect_and_pads_its_right_with_zeros():
    """PP-OCR's recognisers take a line at the input's height, as wide as its aspect
    makes it (up to the input's width), the rest 0 after normalising: ``resize: pad``."""
    from deploycomp.sample_data import render_text

    line = render_text("deploycomp 2026", 32, 160)  # 32 x 160: 5:1
    spec = load_spec("{resize: pad, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}")
    x = spec.apply(line, (1, 3, 48, 320))
    assert x.shape == (1, 3, 48, 320)
    assert np.all(x[..., 240:] == 0) and x[..., :240].max() == pytest.approx(1.0)  # 48 x 240, then zeros
    wide = spec.apply(np.concatenate([line] * 3, axis=1), (1, 3, 48, 320))  # 15:1: squeezed to the width
    assert x.shape == wide.shape and not np.any(wide[0, :, :, -1] == 0)


def test_a_folders_own_spec_passed_over_for_preprocess_is_said(tmp_path, caplog):
    import logging

    from deploycomp.quant.data import load_samples

    folder = tmp_path / "imgs"
    folder.mkdir()
    _saved(folder, "a.png", np.full((16, 16, 3), 128, np.uint8))
    (folder / "calibration.yaml").write_text("channel_order: bgr\n")
    with caplog.at_level(logging.WARNING):
        load_samples(folder, {"x": (1, 3, 8, 8)}, {"x": np.dtype("float32")}, PreprocessSpec())
    assert "--preprocess is used; the folder's own calibration.yaml is not" in caplog.text
    # said once a process (an auto build reads its folders once a candidate: it had come four times)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_samples(folder, {"x": (1, 3, 8, 8)}, {"x": np.dtype("float32")}, PreprocessSpec())
    assert "--preprocess is used" not in caplog.text


def test_the_bundle_records_the_preprocessing_its_inputs_were_made_with(real_model, tmp_path):
    """Whoever feeds a bundle needs the preprocessing its validation inputs were made with:
    --preprocess, or an image folder's own calibration.yaml, is in the manifest
    (``validation.preprocess``); it had been nowhere in the bundle."""
    import deploycomp

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        _saved(folder, f"{i}.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    model = real_model("yolov8n")
    given = deploycomp.build(model, tmp_path / "a", inputs={"images": (1, 3, 320, 320)}, validation_data=folder,
                             preprocess="resize: letterbox")
    assert given.manifest["validation"]["preprocess"]["resize"] == "letterbox"
    (folder / "calibration.yaml").write_text("resize: resize\nchannel_order: bgr\n")
    own = deploycomp.build(model, tmp_path / "b", inputs={"images": (1, 3, 320, 320)}, validation_data=folder)
    assert own.manifest["validation"]["preprocess"]["channel_order"] == "bgr"
