"""Real inputs for validation when the user gives none: photos and rendered text.

Fidelity measured on random noise says little about a detector or an OCR model, so
validation prefers, in order: the user's ``--validation-data`` file; real samples
matched to the model's kind (photos for detectors, rendered text lines for OCR,
a synthetic voiced signal for VAD); for an unknown image-shaped input, photos with
generic 0..1 scaling; and only then seeded random data, labelled as such in the
manifest and report.

Photos come from scikit-image's bundled ``skimage.data`` (public domain / CC0 per its
``skimage/data/README.txt``); text is rendered with Pillow's bundled font.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from deploycomp.errors import InputDataError, few
from deploycomp.paths import DEVICE_OR_PIPE

log = logging.getLogger(__name__)

__all__ = ["CALIBRATION_SAMPLERS", "SAMPLERS", "Samples", "batch_size", "calibration_samples_for", "castable",
           "check_finite",
           "det_input", "letterbox", "load_npz_samples", "photos", "render_text", "resize_image", "sample_layout",
           "samples_for", "samples_from_arrays", "text_line_inputs", "within_profile"]

Samples = list[dict[str, np.ndarray]]


class NpzSamples(list):
    """Samples read from an ``.npz``, with how the file held them: ``stacked`` when its
    arrays had a new leading axis (``N x 10 x 85`` for a ``10 x 85`` input), so outputs of
    several samples are given back joined the same way (stacked, else concatenated)."""

    stacked: bool = False

PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry")

TEXT_LINES = (
    "deploycomp 2026",
    "Hello, World!",
    "OpenVINO TFLite",
    "edge inference",
    "batch size 1",
    "model.onnx -> IR",
    "latency 4.2 ms",
    "quick brown fox",
)


def photos(names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError as e:
        raise InputDataError("real sample photos need scikit-image (pip install 'deploycomp[examples]')") from e
    images = []
    for name in names:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append(img[..., :3].astype(np.uint8))
    return images


def resize_image(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def letterbox(img: np.ndarray, h: int, w: int) -> np.ndarray:
    scale = min(h / img.shape[0], w / img.shape[1])
    nh, nw = max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale))
    out = np.full((h, w, 3), 114, np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = resize_image(img, nh, nw)
    return out


def _nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None].astype(np.float32))


def render_text(text: str, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(h * 0.6))
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = max(2, (w - (right - left)) // 2 - left) if right - left < w else 2
    draw.text((x, (h - (bottom - top)) // 2 - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def yolo_samples(shape: tuple[int, ...]) -> list[np.ndarray]:
    """People and scenes without people; mirrored and cropped views add faces at new
    positions and scales (the bundled YOLOv8n, NudeNet's, detects faces and body parts)."""
    _, _, h, w = shape
    astronaut, camera, coffee, chelsea = photos(("astronaut", "camera", "coffee", "chelsea"))
    views = [astronaut, camera, astronaut[:, ::-1], astronaut[:300, 50:400], camera[:320, 128:448], coffee, chelsea]
    return [_nchw(letterbox(np.ascontiguousarray(img), h, w)) / 255.0 for img in views]


_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def det_input(rgb: np.ndarray) -> np.ndarray:
    """An RGB image (already at the input size) as PP-OCR det reads it: BGR, NCHW, DB-style
    ImageNet mean/std."""
    return (_nchw(rgb[..., ::-1]) / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD


def text_line_inputs(lines, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Rendered text lines as PP-OCR rec/cls read them: BGR, NCHW, (x/255 - 0.5) / 0.5."""
    _, _, h, w = shape
    return [(_nchw(render_text(t, h, w)[..., ::-1]) / 255.0 - 0.5) / 0.5 for t in lines]


def ocr_det_samples(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Photos with text drawn over them plus a page scan, DB-style normalisation (BGR)."""
    from PIL import Image, ImageDraw, ImageFont

    _, _, h, w = shape
    out = []
    for i, img in enumerate(photos()[:3]):
        canvas = Image.fromarray(resize_image(img, h, w))
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=max(12, h // 16))
        for j in range(4):
            draw.text((w // 10, h // 8 + j * h // 5), TEXT_LINES[(i + j) % len(TEXT_LINES)], fill=(255, 255, 255), font=font)
        out.append(det_input(np.asarray(canvas)))
    return out


def ocr_line_samples(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Rendered text lines, PaddleOCR rec/cls normalisation ((x/255 - 0.5) / 0.5)."""
    return text_line_inputs(TEXT_LINES, shape)


def _half_turned(samples: list[np.ndarray]) -> list[np.ndarray]:
    """Every second line turned 180 degrees: what a text-direction classifier is for."""
    return [s[:, :, ::-1, ::-1].copy() if i % 2 else s for i, s in enumerate(samples)]


def ocr_cls_samples(shape: tuple[int, ...]) -> list[np.ndarray]:
    return _half_turned(ocr_line_samples(shape))


def ocr_cls_calibration(shape: tuple[int, ...]) -> list[np.ndarray]:
    return _half_turned(ocr_line_calibration(shape))


CALIBRATION_TEXT_LINES = (
    "int8 calibration",
    "Jetson Orin Nano",
    "OCR 0123456789",
    "tensor rank four",
    "edge AI models",
    "Raspberry Pi 5",
    "quantize, then run",
    "validate on device",
    "layout: NHWC",
    "ABCDEFGHIJKLM",
    "nopqrstuvwxyz",
    "100 km/h (62 mph)",
)


def yolo_calibration(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Other photos and other views of the people in them than validation uses."""
    _, _, h, w = shape
    astronaut, camera, rocket, hubble, retina, ihc = photos(
        ("astronaut", "camera", "rocket", "hubble_deep_field", "retina", "immunohistochemistry"))
    small = np.full((1024, 1024, 3), 114, np.uint8)
    small[256:768, 256:768] = astronaut
    views = [astronaut[100:, 100:], camera[:, ::-1], astronaut[:, ::-1][50:450, 0:400], small,
             camera[100:500, 50:450], rocket, hubble, retina, ihc, astronaut[:256, 128:384]]
    return [_nchw(letterbox(np.ascontiguousarray(img), h, w)) / 255.0 for img in views]


def ocr_det_calibration(shape: tuple[int, ...]) -> list[np.ndarray]:
    from PIL import Image, ImageDraw, ImageFont

    _, _, h, w = shape
    out = []
    # photos with text drawn over them, none of them in the validation set. Eight, not four:
    # with four, ranges fitted to them clipped the validation images' activations (TensorRT
    # int8 det met the budget on the calibration images and missed it on validation)
    names = ("rocket", "hubble_deep_field", "retina", "chelsea", "immunohistochemistry", "coins", "clock", "moon")
    for i, img in enumerate(photos(names)):
        canvas = Image.fromarray(resize_image(img, h, w))
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=max(12, h // 14))
        for j in range(3):
            draw.text((w // 8, h // 6 + j * h // 4), CALIBRATION_TEXT_LINES[(2 * i + j) % 12], fill=(255, 255, 0), font=font)
        out.append(det_input(np.asarray(canvas)))
    return out


def ocr_line_calibration(shape: tuple[int, ...]) -> list[np.ndarray]:
    return text_line_inputs(CALIBRATION_TEXT_LINES, shape)


def generic_image_calibration(shape: tuple[int, ...]) -> list[np.ndarray]:
    _, c, h, w = shape
    out = []
    for img in photos(("rocket", "hubble_deep_field", "retina", "immunohistochemistry")):
        x = _nchw(resize_image(img, h, w)) / 255.0
        out.append(x[:, :1] if c == 1 else x)
    return out


def generic_image_samples(shape: tuple[int, ...]) -> list[np.ndarray]:
    _, c, h, w = shape
    out = []
    for img in photos():
        x = _nchw(resize_image(img, h, w)) / 255.0
        out.append(x[:, :1] if c == 1 else x)
    return out


def _as_samples(name: str, arrays: list[np.ndarray], shape: tuple[int, ...]) -> Samples:
    """The arrays (one input each) in batches of the shape's first dim, the last batch filled
    by taking the first arrays again: at batch 8 the 6 built-in photos had made no sample,
    and a build with nothing to validate on stopped with an internal error."""
    batch = max(1, shape[0])
    if not arrays:
        return []
    count = -(-len(arrays) // batch) * batch
    cycled = [arrays[i % len(arrays)] for i in range(count)]
    return [{name: np.concatenate(cycled[i : i + batch]).astype(np.float32)} for i in range(0, count, batch)]


SAMPLERS: dict[str, Callable[[tuple[int, ...]], list[np.ndarray]]] = {
    "yolo": yolo_samples,
    "ocr-det": ocr_det_samples,
    "ocr-rec": ocr_line_samples,
    "ocr-cls": ocr_cls_samples,
    "image": generic_image_samples,
}


CALIBRATION_SAMPLERS: dict[str, Callable[[tuple[int, ...]], list[np.ndarray]]] = {
    "yolo": yolo_calibration,
    "ocr-det": ocr_det_calibration,
    "ocr-rec": ocr_line_calibration,
    "ocr-cls": ocr_cls_calibration,
    "image": generic_image_calibration,
}
"""Built-in calibration sets: disjoint from the validation samples above (other photos,
other views, other text), so int8 fidelity is never judged on what it was fit to."""


def _voiced(n: int, sr: int, f0: float) -> np.ndarray:
    """A synthetic vowel (harmonics of a gliding pitch under an envelope): no speech
    corpus ships in a wheel, and a voiced signal exercises a VAD's speech path."""
    t = np.arange(n) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * np.hanning(n)
    return (0.3 * wave).astype(np.float32)[None]


VAD_STEPS = 16
"""Chunks of the built-in VAD stream: silence, three vowels, silence between (0.51 s)."""


def vad_samples(shapes: dict[str, tuple[int, ...]]) -> Samples:
    """Silero VAD as its package feeds it (``silero_vad.OnnxWrapper``): consecutive chunks
    of one stream, each the last 64 samples of the chunk before (32 at 8 kHz) and 512 new
    ones (256), from a zero state and silence; with ``--feedback stateN=state`` every step
    after the first takes the state the step before returned. 16 kHz for chunks of 512
    and more (576 with the context), else 8 kHz."""
    width = shapes["input"][-1]
    sr = 16000 if width >= 512 else 8000
    context = 64 if sr == 16000 else 32
    hop = max(1, width - context) if width > context else width
    steps = [np.zeros(hop, np.float32)] * 2
    for f0 in (110.0, 170.0, 240.0):  # each vowel over three chunks, then a chunk of silence
        steps += list(_voiced(3 * hop, sr, f0)[0].reshape(3, hop)) + [np.zeros(hop, np.float32)]
    stream = np.concatenate(steps + [np.zeros(hop, np.float32)] * (VAD_STEPS - len(steps)))
    stream = np.concatenate([np.zeros(width - hop, np.float32), stream])
    state = np.zeros(shapes.get("state", (2, 1, 128)), np.float32)
    return [{"input": stream[i * hop:i * hop + width][None], "state": state, "sr": np.array(sr, np.int64)}
            for i in range(VAD_STEPS)]


MULTI_INPUT_SAMPLERS: dict[str, Callable[[dict[str, tuple[int, ...]]], Samples]] = {"vad": vad_samples}


def check_finite(samples: Samples, source: str, nan_ok: Collection[str] = ()) -> None:
    """Refuse NaN and Inf in float inputs, except NaN in ``nan_ok``: inputs the model
    tests for NaN (:func:`deploycomp.analysis.nan_inputs`, a tree ensemble's missing
    features)."""
    for i, feeds in enumerate(samples):
        for name, arr in feeds.items():
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                if np.isinf(arr).any():
                    raise InputDataError(f"{source}: input '{name}' sample {i} contains Inf")
                if name not in nan_ok:
                    raise InputDataError(f"{source}: input '{name}' sample {i} contains NaN (the model does not "
                                         "test this input for NaN)")


def load_npz_samples(path: str | Path, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype],
                     nan_ok: Collection[str] = (), resizable: bool = True, batched: bool = True,
                     profiles: Mapping[str, Mapping[str, Sequence[int]]] | None = None) -> Samples:
    """Samples from an ``.npz`` (one array per input) or ``.npy`` (single-input model).

    Each array is either one sample of exactly the input's shape, several samples
    concatenated on the first axis (``N x C x H x W`` for a ``1 x C x H x W`` input), or
    several samples stacked on a new leading axis (``N x 10 x 85`` for a ``10 x 85``
    input: a graph's node features, a sequence without a batch axis). An array that
    reads both ways (a ``1 x ...`` input given ``N x 1 x ...``) means the same either way.
    """
    path = Path(path)
    if not path.is_file():
        kind = "a folder, not an .npz or .npy file" if path.is_dir() else DEVICE_OR_PIPE if path.exists() else "no such file"
        raise InputDataError(f"{path}: {kind}")
    declared = _check_declared_sizes(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        # numpy takes any file that is neither for a pickle, and says so: not what the user made
        why = "neither a .npz nor a .npy" if "pickled" in str(e) else str(e)
        raise InputDataError(f"{path}: not a readable .npz/.npy file ({why})") from e
    if isinstance(loaded, np.ndarray):
        if len(shapes) != 1:
            raise InputDataError(f"{path}: a .npy serves single-input models; this one has inputs {few(shapes)}")
        arrays = {next(iter(shapes)): loaded}
    else:
        arrays = {}
        for k in loaded.files:
            if k in shapes and k in declared and _layout(declared[k][0], shapes[k], batched,
                                                          (profiles or {}).get(k)) is None:
                # refused for its shape without reading it: a view of the declared shape holding
                # nothing (3.2 GB of a 3 MB file's zeros had been read first)
                arrays[k] = np.broadcast_to(np.zeros((), declared[k][1]), declared[k][0])
                continue
            try:
                arrays[k] = loaded[k]
            # read on access: an object array, a damaged member (a bad CRC: BadZipFile)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise unreadable_array(path, k, OBJECTS if "allow_pickle" in str(e) else str(e)) from e
    return samples_from_arrays(arrays, str(path), shapes, dtypes, nan_ok, resizable, batched, profiles)


def _declared(f) -> tuple[tuple[int, ...], np.dtype] | None:
    """An .npy stream's declared shape and dtype, from its header alone (None: no .npy)."""
    try:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
        return shape, dtype
    except (ValueError, OSError, EOFError):
        return None


def sample_memory_limit() -> int | None:
    """The most one array of data (or one sample of an input) may take: half this machine's
    memory (None where it cannot be read). Past it, the data are refused for their size
    (exit 4) before anything is read or made, rather than running out of memory (exit 10,
    which says a job may be retried elsewhere)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return None


def _check_declared_sizes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Refuse, before reading, an array whose header declares more than half this machine's
    memory: a 3 MB .npz of compressed zeros declaring 64x1x3x2048x2048 had taken 3.2 GB
    before its shape was refused, and a 336-byte one an out-of-memory exit, which says a
    job may be retried elsewhere. Returns each array's declared shape and dtype."""
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    if (limit := sample_memory_limit()) is None:
        return found
    try:
        members = []
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    with z.open(info) as f:
                        members.append((info.filename.removesuffix(".npy"), _declared(f)))
        else:
            with open(path, "rb") as f:
                members.append((path.name, _declared(f)))
    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError):
        return found  # (np.load says what is wrong with the file)
    for name, declared in members:
        if declared is None or declared[1].hasobject:
            continue
        shape, dtype = declared
        size = math.prod(shape) * dtype.itemsize
        if size > limit:
            raise InputDataError(f"{path}: array '{name}' declares shape {'x'.join(map(str, shape))} "
                                 f"({size / 1e9:.1f} GB of {dtype}), more than half this machine's memory")
        found[name] = declared
    return found


def _layout(array_shape: tuple[int, ...], shape: tuple[int, ...], batched: bool,
            profile: Mapping[str, Sequence[int]] | None) -> str | None:
    """How an array of ``array_shape`` holds samples of ``shape`` (:func:`sample_layout`),
    or of a shape the bundle's ``profile`` takes: ``one``, ``stacked``, or ``rows`` (samples
    of batch 1 concatenated, where the profile takes batch 1: 5 images for a bundle built at
    its profile's batch 2 had been refused as one batch of 5, past the profile's 4, where a
    bundle built at batch 1 of the same profile took them); None: it holds none."""
    layout = sample_layout(array_shape, shape, batched)
    if layout is None and profile is not None:
        if within_profile(array_shape, profile["min"], profile["max"]):
            return "one"
        if len(array_shape) == len(shape) + 1 and within_profile(array_shape[1:], profile["min"], profile["max"]):
            return "stacked"
        if batched and len(array_shape) == len(shape) and within_profile((1, *array_shape[1:]), profile["min"],
                                                                         profile["max"]):
            return "rows"
    return layout


OBJECTS = "an array of Python objects; save arrays of numbers"


def unreadable_array(path, name: str, why: str) -> InputDataError:
    """The one error for an array of a data file that cannot be read (:data:`OBJECTS`)."""
    return InputDataError(f"{path}: array '{name}' cannot be read ({why})")


def sample_layout(array_shape: tuple[int, ...], shape: tuple[int, ...], batched: bool = True) -> str | None:
    """How an array holds samples of ``shape``: ``one`` sample, several ``concatenated`` on
    the first axis (``N x C x H x W`` for ``1 x C x H x W``), several ``stacked`` on a new
    leading axis, or None (it holds none). An array that reads both ways (``1 x ...``
    samples stacked) is taken as concatenated: the same samples either way. ``batched``:
    whether the first axis is a batch axis at all (:func:`batch_size`); if not, samples are
    never cut out of it."""
    array_shape, shape = tuple(array_shape), tuple(shape)
    if array_shape == shape:
        return "one"
    if (batched and len(array_shape) == len(shape) and shape and array_shape[1:] == shape[1:] and shape[0] > 0
            and array_shape[0] % shape[0] == 0):
        return "concatenated"
    if len(array_shape) == len(shape) + 1 and array_shape[1:] == shape:
        return "stacked"
    return None


def batch_size(inputs: Mapping[str, Sequence[int]], outputs: Mapping[str, Sequence[int]]) -> int | None:
    """The size of a bundle's batch axis: the first axis of every input, when they all have
    the same size there and every output has an axis of that size (the first, or a
    time-major output's second); else None, and the first axis is the model's own (a key
    detector's frames in, one key out: cut into two runs, its answer became two keys)."""
    firsts = {tuple(s)[0] if len(s) else None for s in inputs.values()}
    if len(firsts) != 1 or (size := firsts.pop()) is None:
        return None
    return size if all(size in tuple(s) for s in outputs.values()) else None


def within_profile(shape, lo, hi) -> bool:
    """Whether ``shape`` lies inside a profile's MIN..MAX, dim by dim (here, beside
    the other data-shape rules, so that a bundle's runner imports no ONNX to ask)."""
    return len(shape) == len(lo) == len(hi) and all(a <= d <= b for d, a, b in zip(shape, lo, hi))


def castable(given: np.dtype, wanted: np.dtype) -> bool:
    """Whether data of dtype ``given`` is taken for an input of ``wanted`` (and cast): the
    same kind (float64 for float32, int32 for int64) or integers for a float input (an
    image's uint8 pixels); not floats for an integer input, which would truncate ids (the
    Python runner had cast 3.7 to 3 where ``run`` and ``build`` refused it)."""
    given, wanted = np.dtype(given), np.dtype(wanted)
    if given == wanted:
        return True
    if wanted.kind == "f":
        return given.kind in "fiu"
    if wanted.kind in "iu":
        return given.kind in "iu"
    return False


def samples_from_arrays(arrays: Mapping[str, np.ndarray], source: str, shapes: dict[str, tuple[int, ...]],
                        dtypes: dict[str, np.dtype], nan_ok: Collection[str] = (), resizable: bool = True,
                        batched: bool = True,
                        profiles: Mapping[str, Mapping[str, Sequence[int]]] | None = None) -> Samples:
    """Samples from one array per input, laid out as :func:`load_npz_samples` reads them
    (an ``.npz``'s contents, or the same as a dict from Python); ``source`` names them in errors.
    ``resizable``: whether a misfit's hint may offer ``--input`` (a build's; a bundle's shape
    is fixed, and ``run`` has no such flag). ``profiles``: a TensorRT bundle's inputs' MIN..MAX
    shapes, any of which is one sample (or, on a new leading axis, several)."""
    path = source
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    missing = [n for n in shapes if n not in arrays]
    if missing:
        raise InputDataError(f"{path}: no array for input(s) {few(missing)} (has: {few(arrays) or 'none'})")
    if extra := [k for k in arrays if k not in shapes]:  # a renamed input, or a typo: not silently
        log.warning("%s: array(s) %s match no input of the model and are not used (its inputs: %s)", path,
                    few(extra), few(shapes))
    per_input: dict[str, list[np.ndarray]] = {}
    stacked = False
    misfits: list[tuple[str, tuple, tuple, tuple | None]] = []  # (input, array shape, expected, its sample shape)
    for name, shape in shapes.items():
        arr = arrays[name]
        layout = _layout(tuple(arr.shape), shape, batched, (profiles or {}).get(name))
        if layout == "one":
            chunks = [arr]
        elif layout == "rows":
            chunks = [arr[i : i + 1] for i in range(arr.shape[0])]
        elif layout == "concatenated":
            chunks = [arr[i : i + shape[0]] for i in range(0, arr.shape[0], shape[0])]
        elif layout == "stacked":
            chunks = [np.asarray(a) for a in arr]  # (a scalar input's samples as 0-d arrays, not numpy scalars)
            stacked = stacked or name == next(iter(shapes))
        else:
            # the data's own sample shape, where it differs only in size: a fully convolutional
            # model exported at a dummy size (a super-resolution net declared 1x3x4x4) takes others
            sample = (tuple(arr.shape[1:]) if arr.ndim == len(shape) + 1 else
                      (shape[0], *arr.shape[1:]) if arr.ndim == len(shape) else None)
            misfits.append((name, tuple(arr.shape), shape, sample if sample and len(sample) == len(shape) else None))
            continue
        want = dtypes[name]
        if not castable(arr.dtype, want):
            raise InputDataError(f"{path}: input '{name}' has dtype {arr.dtype}, the model takes {want}")
        if arr.dtype.kind in "iu" and want.kind == "f" and arr.size and int(arr.max()) > 1:
            # (raw pixels for a model that takes 0..1 validated ok, and made a bundle that finds nothing)
            log.warning("%s: input '%s' given as %s (%d..%d) for a %s input: taken as those numbers, unscaled; if the "
                        "model expects 0..1, divide by 255 (or give an image folder with --preprocess)", path, name, arr.dtype,
                        int(arr.min()), int(arr.max()), want)
        per_input[name] = [c.astype(want) for c in chunks]
    if misfits:  # every input that does not fit named in the hint: a user who fixes one should not meet the next
        name, got, shape, sample = misfits[0]
        if batched and sample is not None and tuple(sample) == tuple(shape) and len(got) == len(shape) and shape[0] > 1:
            # rows of the right shape, not a whole number of batches (the hint had offered the
            # --input already given)
            raise InputDataError(f"{path}: input '{name}' holds {got[0]} samples of {list(shape[1:])}, not a whole "
                                 f"number of batches of {shape[0]} (the batch of {list(shape)}): give a multiple of "
                                 f"{shape[0]}")
        flags = " ".join(f"--input {n}:{'x'.join(map(str, s))}" for n, _, _, s in misfits if s)
        also = f" ({len(misfits) - 1} more input(s) likewise)" if len(misfits) > 1 else ""
        hint = f" (if the model takes that size: {flags})" if flags and resizable else ""
        if sample and len(shape) == 4 and tuple(sample) == (shape[0], shape[2], shape[3], shape[1]):
            hint = " (the data is channels-last, NHWC; the model takes NCHW: transpose it)"
        if not batched:
            raise InputDataError(f"{path}: input '{name}' has shape {list(got)}, expected {list(shape)} or N x "
                                 f"{list(shape)}{also} (its first axis is the model's own, not a batch: the "
                                 f"outputs do not follow it; the bundle was built for {list(shape)})")
        profile = (profiles or {}).get(name)
        expected = (f"shapes from {list(profile['min'])} to {list(profile['max'])} (the bundle's --profile)"
                    f" or N x such a shape" if profile else
                    f"{list(shape)}, {'' if not shape or shape[0] == 1 else shape[0]}N x {list(shape[1:])} or N x "
                    f"{list(shape)}")
        raise InputDataError(f"{path}: input '{name}' has shape {list(got)}, expected {expected}{also}{hint}")
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise InputDataError(f"{path}: inputs have different sample counts "
                             f"({', '.join(f'{n}: {len(v)}' for n, v in per_input.items())})")
    samples = NpzSamples({n: per_input[n][i] for n in shapes} for i in range(counts.pop()))
    samples.stacked = stacked
    check_finite(samples, str(path), nan_ok)
    return samples


def samples_for(kind: str, name: str, shape: tuple[int, ...]) -> Samples:
    return _as_samples(name, SAMPLERS[kind](shape), shape)


def calibration_samples_for(kind: str, name: str, shape: tuple[int, ...]) -> Samples:
    return _as_samples(name, CALIBRATION_SAMPLERS[kind](shape), shape)
