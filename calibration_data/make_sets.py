"""Regenerate the small calibration sets in this folder (run from the repo root).

    python calibration_data/make_sets.py

photos/      8 JPEGs from scikit-image's bundled sample data (skimage.data), scaled to
             at most 320 px: rocket, hubble_deep_field, retina, immunohistochemistry,
             and crops/mirrors of astronaut and camera. Sources and licences: scikit-image's
             skimage/data/README.txt (public domain or CC0 / free to use; astronaut is a
             NASA public-domain photo, camera is the scikit-image cameraman, CC0).
text-lines/  12 PNG text lines (48 x 320) rendered with Pillow's bundled font (Aileron,
             SIL OFL) from deploycomp.sample_data.CALIBRATION_TEXT_LINES.

Each folder has the calibration.yaml spec its models need; they are disjoint from the
validation samples deploycomp builds use (deploycomp.sample_data.SAMPLERS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deploycomp.sample_data import CALIBRATION_TEXT_LINES, photos, render_text

HERE = Path(__file__).parent


def _save(img: np.ndarray, path: Path) -> None:
    pil = Image.fromarray(np.ascontiguousarray(img))
    pil.thumbnail((320, 320))
    pil.save(path, quality=88)


def main() -> None:
    photo_dir = HERE / "photos"
    photo_dir.mkdir(exist_ok=True)
    astronaut, camera, rocket, hubble, retina, ihc = photos(
        ("astronaut", "camera", "rocket", "hubble_deep_field", "retina", "immunohistochemistry"))
    views = {"rocket": rocket, "hubble": hubble, "retina": retina, "ihc": ihc,
             "astronaut-crop": astronaut[100:, 100:], "astronaut-mirror": astronaut[:, ::-1][50:450, :400],
             "camera-crop": camera[100:500, 50:450], "camera-mirror": camera[:, ::-1]}
    for name, img in views.items():
        _save(img, photo_dir / f"{name}.jpg")
    lines = HERE / "text-lines"
    lines.mkdir(exist_ok=True)
    for i, text in enumerate(CALIBRATION_TEXT_LINES):
        Image.fromarray(render_text(text, 48, 320)).save(lines / f"line-{i:02d}.png")


if __name__ == "__main__":
    main()
