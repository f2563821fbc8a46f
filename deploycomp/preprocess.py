"""A preprocessing spec: how an image becomes a model input.

One spec, given once (``--preprocess SPEC``, or ``calibration.yaml`` in an image folder),
turns images into the model's input for calibration and for validation, and turns the
built-in sample photos into inputs when the user gives no data of their own. Without it,
deploycomp can only guess (photos scaled to 0..1, RGB, NCHW), and says so.

Fields (all optional; a YAML file, or the same mapping inline:
``--preprocess "{channel_order: bgr, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"``)::

    resize: letterbox        # or "resize" (stretch to the input size), or "pad" (keep the
                             #   aspect ratio, top-left, the rest 0 after normalising: a text
                             #   line for a PP-OCR recogniser)
    channel_order: rgb       # or bgr; a 1-channel input gets luminance
    scale: 0.00392156862     # multiply 0..255 pixels by this first
    mean: [0.0, 0.0, 0.0]    # then subtract, per channel
    std: [1.0, 1.0, 1.0]     # then divide, per channel
    layout: nchw             # or nhwc
    dtype: float32
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploycomp.errors import InputDataError
from deploycomp.paths import not_a_file

__all__ = ["SPEC_FILE", "PreprocessSpec", "load_spec"]

SPEC_FILE = "calibration.yaml"
"""The spec file an image folder may carry (the name predates --preprocess)."""


class PreprocessSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    resize: Literal["letterbox", "resize", "pad"] = "letterbox"
    channel_order: Literal["rgb", "bgr"] = "rgb"
    scale: float = Field(default=1 / 255, gt=0)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: Literal["nchw", "nhwc"] = "nchw"
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"

    @field_validator("std")
    @classmethod
    def _no_zero_std(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(s == 0 for s in v):
            raise ValueError("std may not contain 0")
        return v

    def hw(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(height, width, channels) of a rank-4 input ``shape`` in this spec's layout."""
        if len(shape) != 4:
            raise InputDataError(f"an image preprocessing spec needs a rank-4 input; this one has shape {list(shape)}")
        return (shape[2], shape[3], shape[1]) if self.layout == "nchw" else (shape[1], shape[2], shape[3])

    def apply(self, rgb: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """An HxWx3 uint8 RGB image as one input of ``shape`` (batch 1)."""
        from deploycomp.sample_data import letterbox, resize_image

        h, w, c = self.hw(shape)
        if c not in (1, 3):
            raise InputDataError(f"images give 1 or 3 channels; the input has {c} (shape {list(shape)})")
        width = w
        if self.resize == "letterbox":
            img = letterbox(rgb, h, w)
        elif self.resize == "pad":  # the input's height, as wide as that makes it up to the input's width
            width = max(1, min(w, int(np.ceil(h * rgb.shape[1] / rgb.shape[0]))))
            img = resize_image(rgb, h, width)
        else:
            img = resize_image(rgb, h, w)
        x = img.astype(np.float32)
        if c == 1:  # luminance, from the RGB it is (the channel order is no matter for one channel)
            x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        elif self.channel_order == "bgr":
            x = x[..., ::-1]
        x = (x * np.float32(self.scale) - _per_channel(self.mean, c, "mean")) / _per_channel(self.std, c, "std")
        if width < w:  # "pad": the rest of the line is 0 after normalising
            x = np.concatenate([x, np.zeros((h, w - width, c), np.float32)], axis=1)
        x = x.transpose(2, 0, 1)[None] if self.layout == "nchw" else x[None]
        return np.ascontiguousarray(x.astype(self.dtype))


def _per_channel(values: tuple[float, ...], channels: int, key: str) -> np.ndarray:
    """``values`` for ``channels`` channels: one value for all, one per channel, or (for a
    1-channel input) the average of an RGB triple."""
    arr = np.asarray(values, np.float32)
    if arr.size == channels or arr.size == 1:
        return arr
    if channels == 1 and arr.size == 3:
        return arr.mean(keepdims=True)
    raise InputDataError(f"preprocessing spec: {key} has {arr.size} values for {channels} channel(s)")


def load_spec(spec: str | Path | dict | PreprocessSpec) -> PreprocessSpec:
    """A spec from a YAML file, an inline YAML mapping, a dict, or a spec."""
    import yaml

    if isinstance(spec, PreprocessSpec):
        return spec
    where = "--preprocess"
    data = spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        text = str(spec)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            if (kind := not_a_file(path)) is not None:
                raise InputDataError(f"{path}: preprocessing spec {kind}")
            where, text = str(path), path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputDataError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputDataError(f"{where}: a preprocessing spec is a mapping (e.g. {{scale: 0.0039, layout: nchw}})")
    try:
        return PreprocessSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<spec>"
        if err["type"] == "extra_forbidden":
            raise InputDataError(f"{where}: unknown key '{key}' (known: {', '.join(PreprocessSpec.model_fields)})") from None
        raise InputDataError(f"{where}: {key}: {err['msg']}") from None
