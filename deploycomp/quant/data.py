"""Calibration and validation data a user gives: where the samples come from.

Accepted (``--calibration PATH``, ``--validation-data PATH`` or ``deploycomp.build(...)``):

* ``.npz`` with one array per model input, samples stacked on the first axis
  (``N x C x H x W`` for a ``1 x C x H x W`` input) or on a new leading one (``N x 10 x
  85`` for a ``10 x 85`` input); ``.npy`` for single-input models;
* a folder of images, turned into inputs by a preprocessing spec
  (:mod:`deploycomp.preprocess`): ``--preprocess SPEC``, or ``calibration.yaml`` in the
  folder;
* from Python, any iterable of ``{input name: array}`` dicts, or one ``{input name: array}``
  of stacked samples, laid out as an ``.npz`` holds them.

Everything is checked before use: shapes, dtypes, NaN/Inf, empty folders, unreadable
images; each error names the file and what is wrong.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Collection, Iterable, Mapping

import numpy as np

from deploycomp.errors import InputDataError, environment_problem, few
from deploycomp.paths import DEVICE_OR_PIPE, device_or_pipe
from deploycomp.preprocess import SPEC_FILE, PreprocessSpec, load_spec
from deploycomp.sample_data import check_finite, load_npz_samples, samples_from_arrays

__all__ = ["IMAGE_SUFFIXES", "SPEC_FILE", "is_image_file", "load_calibration", "load_samples"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


_SAID_OVERRIDDEN: set[Path] = set()
"""Folders whose own spec ``--preprocess`` overrode, said once a process (an ``auto`` build
reads its folders once per candidate: the line had come four times)."""


def _folder_spec(folder: Path, spec: PreprocessSpec | None) -> PreprocessSpec:
    if spec is not None:
        if (folder / SPEC_FILE).is_file() and (where := folder.resolve()) not in _SAID_OVERRIDDEN:  # (passed over without a word)
            _SAID_OVERRIDDEN.add(where)
            log.warning("%s: --preprocess is used; the folder's own %s is not", folder, SPEC_FILE)
        return spec
    path = folder / SPEC_FILE
    if not path.is_file():
        raise InputDataError(f"{folder}: an image folder needs a preprocessing spec: --preprocess SPEC or "
                             f"{SPEC_FILE} in the folder (see docs)")
    return load_spec(path)


def _as_rgb(img) -> np.ndarray:
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        wide = np.asarray(img, dtype=np.float64)
        top = 65535.0 if wide.max(initial=0) > 255 else 255.0
        return np.repeat(np.clip(wide / top * 255 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(img.convert("RGB"))


def read_image(path: Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array, as a viewer shows it: turned upright by
    its EXIF orientation (a phone's portrait photo had been read on its side), a 16-bit
    one at its full range (PIL's RGB conversion clipped it white), a transparent one on
    white (its hidden pixels, black text on clear, had made every sample black)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # (a large photo: read, not a bomb)
            with Image.open(path) as img:
                return _as_rgb(img)
    except Image.DecompressionBombError as e:
        raise InputDataError(f"{path}: image too large to read safely ({str(e).split(',')[0]})") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if (env := environment_problem(e)) is not None:  # permission denied: the machine's, as for a model (exit 10)
            raise env from None
        raise InputDataError(f"{path}: unreadable image ({e})") from e


def is_image_file(p: Path) -> bool:
    """Whether a folder's entry is one of its images (what a build reads, and a fleet's
    cache key hashes): hidden files (macOS's ``._`` resource forks) are not."""
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """The folder's image files (:func:`is_image_file`); anything else (sub-folders, notes)
    left out, and said."""
    files, other = [], []
    for p in sorted(folder.iterdir()):
        if is_image_file(p):
            files.append(p)
        elif p.name != SPEC_FILE:
            other.append(p.name)
    if other and files:
        log.warning("%s: %d entries that are not images read as such left out (%s)", folder, len(other), few(other))
    return files


def _image_samples(folder: Path, shapes: Mapping[str, tuple[int, ...]], spec: PreprocessSpec | None,
                   dtypes: Mapping[str, np.dtype], limit: int | None, counted: list[int]) -> list[dict[str, np.ndarray]]:
    if len(shapes) != 1:
        raise InputDataError(f"{folder}: image folders serve single-input models; inputs: {few(shapes)}")
    (name, shape), = shapes.items()
    spec = _folder_spec(folder, spec)
    if len(shape) != 4:
        raise InputDataError(f"{folder}: input '{name}' has rank {len(shape)}, images need rank 4")
    files = _image_files(folder)
    if not files:
        raise InputDataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    counted.append(len(files))
    if limit is not None and len(files) > limit:  # (the others are not read)
        from deploycomp.datasets import spread

        files = [files[i] for i in spread(len(files), limit)]
    want = dtypes.get(name)
    if want is not None and np.dtype(spec.dtype) != want:
        if not (np.issubdtype(want, np.floating) and np.issubdtype(np.dtype(spec.dtype), np.floating)):
            raise InputDataError(f"{folder}: the preprocessing spec makes {spec.dtype} inputs; input '{name}' takes "
                                 f"{want} (set dtype: {want} in the spec)")
    samples = []
    for f in files:
        x = spec.apply(read_image(f), shape)
        if want is not None and x.dtype != want:  # (float16 or float32 as the model takes it)
            x = x.astype(want)
        samples.append({name: np.concatenate([x] * shape[0]) if shape[0] > 1 else x})
    return samples


def load_samples(source: str | Path | Iterable[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple[int, ...]],
                 dtypes: Mapping[str, np.dtype], spec: PreprocessSpec | None = None,
                 what: str = "calibration data", nan_ok: Collection[str] = (), limit: int | None = None,
                 counted: list[int] | None = None) -> list[dict[str, np.ndarray]]:
    """Samples from a user's ``source`` (see the module docstring); ``what`` names it in
    errors; inputs in ``nan_ok`` may hold NaN (:func:`deploycomp.sample_data.check_finite`).
    ``limit``: at most that many, spread over the set (an image folder's other files are
    not read); ``counted`` receives how many the source holds."""
    counted = [] if counted is None else counted
    if isinstance(source, (str, Path)):
        path = Path(source)
        if device_or_pipe(path):
            raise InputDataError(f"{path}: the {what} is {DEVICE_OR_PIPE}")
        if path.is_dir():
            samples = _image_samples(path, shapes, spec, dtypes, limit, counted)
        elif path.suffix.lower() in (".npz", ".npy"):
            samples = load_npz_samples(path, dict(shapes), dict(dtypes), nan_ok)
        elif not path.exists():
            raise InputDataError(f"{path}: {what} not found")
        else:
            raise InputDataError(f"{path}: {what} must be .npz, .npy or a folder of images")
    elif isinstance(source, Mapping):  # one array per input, as an .npz holds them
        samples = samples_from_arrays(source, what, dict(shapes), dict(dtypes), nan_ok)
    elif isinstance(source, np.ndarray):  # a single-input model's samples stacked, as an .npy holds them
        if len(shapes) != 1:
            raise InputDataError(f"{what}: an array serves single-input models; this one has inputs {few(shapes)}: "
                                 "give {input: array}")
        samples = samples_from_arrays({next(iter(shapes)): source}, what, dict(shapes), dict(dtypes), nan_ok)
    else:
        try:
            given = list(source)
        except TypeError:
            raise InputDataError(f"{what}: a path, {{input: array}}, an array or samples ({{input: array}} each) "
                                 f"are taken; {type(source).__name__} given") from None
        odd = next((i for i, s in enumerate(given) if not isinstance(s, Mapping)), None)
        if odd is not None:
            raise InputDataError(f"{what} sample {odd}: {type(given[odd]).__name__} given; each sample is "
                                 "{input: array}")
        samples = [{k: np.asarray(v) for k, v in s.items()} for s in given]  # (a float for a scalar input)
        for i, s in enumerate(samples):
            missing = [n for n in shapes if n not in s]
            if missing:
                raise InputDataError(f"{what} sample {i}: missing input(s) {few(missing)}")
            for n, shape in shapes.items():
                if len(shape) and shape[0] == 1 and tuple(np.shape(s[n])) == tuple(shape[1:]):
                    s[n] = s[n][None]  # a sample without its batch axis of 1, as an .npz may hold them
                if tuple(np.shape(s[n])) != tuple(shape):
                    raise InputDataError(f"{what} sample {i}: input '{n}' has shape {list(np.shape(s[n]))}, "
                                         f"expected {list(shape)}")
    if not samples:
        raise InputDataError(f"{source}: {what} is empty" if isinstance(source, (str, Path)) else f"{what} is empty")
    if not counted:  # (arrays: read whole, then spread over)
        counted.append(len(samples))
        if limit is not None and len(samples) > limit:
            from deploycomp.datasets import spread

            samples = [samples[i] for i in spread(len(samples), limit)]
    check_finite(samples, str(source) if isinstance(source, (str, Path)) else what, nan_ok)
    return samples


def load_calibration(source, shapes, dtypes, spec: PreprocessSpec | None = None) -> list[dict[str, np.ndarray]]:
    return load_samples(source, shapes, dtypes, spec, "calibration data")
