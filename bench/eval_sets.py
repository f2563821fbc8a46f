"""Larger evaluation sets for the int8 benchmark, disjoint from the calibration sets.

The built-in validation samples (``deploycomp.sample_data.samples_for``) are small on
purpose: every build runs them. As a benchmark's evaluation set they are too small to
rank methods: 8 text lines (one line is 0.125 of PP-OCR rec's exact-string score), 3
det images, 7 YOLO images with 6 fp32 detections. These sets add, per model kind, real
inputs from what ships offline:

* text lines (rec, cls): phrases of the Zen of Python (CPython's ``this`` module),
  cut at word boundaries to at most 22 characters, rendered like the built-in lines
  (cls: every second line turned 180 degrees);
* OCR det: scikit-image's scanned page (``page``) and sign (``text``), whole and
  cropped, and texture photos (brick, grass, gravel) with Zen phrases drawn on them;
* YOLO: faces from scikit-image's Labeled Faces in the Wild subset (``lfw_subset``,
  200 faces of 25x25), 1 to 9 to an image, and images without people (logo, coins,
  brick).

None of these images or strings is in ``calibration_samples_for``'s sets.
Licences: scikit-image's ``skimage/data/README.txt`` (page, text: public domain scans
from the scikit-image project; brick/grass/gravel: CC0; LFW: research use, as shipped
with scikit-image); the Zen of Python is part of CPython (PSF licence).
"""

from __future__ import annotations

import codecs
import textwrap
from pathlib import Path

import numpy as np

from deploycomp import sample_data as sd


def zen_lines(max_chars: int = 22) -> list[str]:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing ``this`` prints the Zen
        import this
    text = codecs.decode(this.s, "rot13")
    lines = [line for aphorism in text.splitlines()[2:]
             for line in textwrap.wrap(aphorism, max_chars, break_on_hyphens=False, break_long_words=False)]
    banned = set(sd.CALIBRATION_TEXT_LINES) | set(sd.TEXT_LINES)
    return [ln for ln in dict.fromkeys(lines) if ln not in banned]


def _gray_to_rgb(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.uint8) if img.dtype != np.uint8 else img
    return np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3]


def _det(shape) -> list[np.ndarray]:
    from PIL import Image, ImageDraw, ImageFont
    from skimage import data

    _, _, h, w = shape
    page, sign = _gray_to_rgb(data.page()), _gray_to_rgb(data.text())
    images = [page, page[:, :192], page[95:, 192:], sign, sign[:, 224:]]
    zen = zen_lines()
    for i, name in enumerate(("brick", "grass", "gravel")):
        canvas = Image.fromarray(sd.resize_image(_gray_to_rgb(getattr(data, name)()), h, w))
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=max(12, h // (12 + 4 * i)))
        for j in range(3 + i):
            draw.text((w // 12 + 20 * j, h // 10 + j * h // (4 + i)), zen[(5 * i + j) % len(zen)],
                      fill=(255, 255, 255) if i % 2 else (0, 0, 0), font=font)
        images.append(np.asarray(canvas))
    return [sd.det_input(sd.resize_image(np.ascontiguousarray(img), h, w)) for img in images]


def _faces(shape) -> list[np.ndarray]:
    from skimage import data

    _, _, h, w = shape
    faces = np.load(Path(data.__file__).parent / "lfw_subset.npy")  # (200, 25, 25) in 0..1
    out = []
    for k, cells in enumerate((2, 2, 3, 3, 1, 1, 2, 3)):  # faces per side: four scales
        size = 640 // cells
        canvas = np.full((640, 640, 3), 114, np.uint8)
        for i in range(cells * cells):
            face = (faces[(k * 9 + i * 7) % len(faces)] * 255).astype(np.uint8)
            face = sd.resize_image(_gray_to_rgb(face), size - 8, size - 8)
            r, c = divmod(i, cells)
            canvas[r * size + 4 : (r + 1) * size - 4, c * size + 4 : (c + 1) * size - 4] = face
        out.append(canvas)
    out += [data.logo()[..., :3], _gray_to_rgb(data.coins()), _gray_to_rgb(data.brick())]
    return [sd._nchw(sd.letterbox(np.ascontiguousarray(img), h, w)) / 255.0 for img in out]


EXTRA = {
    "ocr-rec": lambda shape: sd.text_line_inputs(zen_lines(), shape),
    "ocr-cls": lambda shape: sd._half_turned(sd.text_line_inputs(zen_lines(), shape)),
    "ocr-det": _det,
    "yolo": _faces,
}


def evaluation_samples(kind: str, name: str, shape: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """The built-in validation samples plus this module's, as feeds."""
    extra = EXTRA.get(kind)
    return sd.samples_for(kind, name, shape) + (sd._as_samples(name, extra(shape), shape) if extra else [])
