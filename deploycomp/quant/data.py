"""Calibration data: where the samples int8 ranges are measured on come from.

Accepted (``--calibration PATH`` or ``deploycomp.build(calibration=...)``):

* ``.npz`` with one array per model input, samples stacked on the first axis
  (``N x C x H x W`` for a ``1 x C x H x W`` input); ``.npy`` for single-input models;
* a folder of images with a preprocessing spec, ``calibration.yaml`` in the folder::

      resize: letterbox        # or "resize" (stretch)
      channel_order: rgb       # or bgr
      scale: 0.00392156862     # multiply 0..255 pixels by this first
      mean: [0.0, 0.0, 0.0]    # then subtract, per channel
      std: [1.0, 1.0, 1.0]     # then divide, per channel
      layout: nchw             # or nhwc
      dtype: float32

* from Python, any iterable of ``{input name: array}`` dicts.

Everything is checked before use: shapes, dtypes, NaN/Inf, empty folders, unreadable
images; each error names the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import yaml

from deploycomp.errors import InputDataError
from deploycomp.sample_data import check_finite, load_npz_samples

__all__ = ["IMAGE_SUFFIXES", "SPEC_FILE", "load_calibration"]

SPEC_FILE = "calibration.yaml"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_SPEC_KEYS = {"resize", "channel_order", "scale", "mean", "std", "layout", "dtype"}


def _read_spec(folder: Path) -> dict:
    path = folder / SPEC_FILE
    if not path.is_file():
        raise InputDataError(f"{folder}: an image folder needs a preprocessing spec {SPEC_FILE} (see docs)")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputDataError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise InputDataError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    return spec


def _image_samples(folder: Path, shapes: Mapping[str, tuple[int, ...]]) -> list[dict[str, np.ndarray]]:
    from PIL import Image, UnidentifiedImageError

    from deploycomp.sample_data import letterbox, resize_image

    if len(shapes) != 1:
        raise InputDataError(f"{folder}: image folders serve single-input models; inputs: {', '.join(shapes)}")
    (name, shape), = shapes.items()
    spec = _read_spec(folder)
    layout = spec.get("layout", "nchw")
    if len(shape) != 4:
        raise InputDataError(f"{folder}: input '{name}' has rank {len(shape)}, images need rank 4")
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputDataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    mean = np.asarray(spec.get("mean", [0.0, 0.0, 0.0]), np.float32)
    std = np.asarray(spec.get("std", [1.0, 1.0, 1.0]), np.float32)
    samples = []
    for f in files:
        try:
            img = np.asarray(Image.open(f).convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise InputDataError(f"{f}: unreadable image ({e})") from e
        img = letterbox(img, h, w) if spec.get("resize", "letterbox") == "letterbox" else resize_image(img, h, w)
        if spec.get("channel_order", "rgb") == "bgr":
            img = img[..., ::-1]
        x = (img.astype(np.float32) * float(spec.get("scale", 1 / 255)) - mean) / std
        x = x.transpose(2, 0, 1)[None] if layout == "nchw" else x[None]
        samples.append({name: np.ascontiguousarray(x.astype(spec.get("dtype", "float32")))})
    return samples


def load_calibration(source: str | Path | Iterable[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]],
                     dtypes: Mapping[str, np.dtype]) -> list[dict[str, np.ndarray]]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            samples = _image_samples(path, shapes)
        elif path.suffix in (".npz", ".npy"):
            samples = load_npz_samples(path, dict(shapes), dict(dtypes))
        elif not path.exists():
            raise InputDataError(f"{path}: calibration data not found")
        else:
            raise InputDataError(f"{path}: calibration data must be .npz, .npy or a folder of images")
    else:
        samples = [dict(s) for s in source]
        for i, s in enumerate(samples):
            missing = [n for n in shapes if n not in s]
            if missing:
                raise InputDataError(f"calibration sample {i}: missing input(s) {', '.join(missing)}")
            for n, shape in shapes.items():
                if tuple(np.shape(s[n])) != tuple(shape):
                    raise InputDataError(f"calibration sample {i}: input '{n}' has shape {list(np.shape(s[n]))}, expected {list(shape)}")
    if not samples:
        raise InputDataError("calibration data is empty")
    check_finite(samples, str(source) if isinstance(source, (str, Path)) else "calibration data")
    return samples
