"""A content-addressed build cache: a build is done once for what it depends on.

The key of a build is the sha256 of everything its bundle depends on:

* the source model's bytes, and those of every external-data file it names;
* the calibration and validation data (a file's bytes, or every file of a folder, by
  relative path) and the preprocessing spec;
* the resolved target profile (its content digest: ``host`` resolves per machine, so a
  host build on an AVX-512 machine is another key than on an AVX2 one);
* every build option (precision, shapes, frozen inputs, budgets, int8 options);
* the versions of deploycomp and of every toolchain that touches the artifact (onnx,
  onnx-ir, onnxscript, onnxruntime, OpenVINO, LiteRT, flatbuffers, numpy, NVIDIA's parser)
  or makes its inputs (scikit-image, Pillow), and a digest of deploycomp's own files.

Olive keys its cache by model, pass config and accelerator but not tool versions, so an
upgraded converter silently reuses stale outputs; and two models whose configs collide
share an entry (an open issue there). Hashing the bytes and the versions rules both out.

An entry is a folder ``ROOT/<key[:2]>/<key>/`` holding ``result.json`` (ok, error, exit
code, seconds, the key's inputs) and, for a build that produced one, ``bundle/``. It is
assembled in ``ROOT/tmp/`` and renamed into place: readers see a whole entry or none,
and of two concurrent writers of one key (a shared cache on NFS, two CI jobs) the second
rename fails and its copy is dropped, so the entry is never corrupted. Failures that say
something about the inputs (a bad model, an unsupported op, a missed budget: exit codes
3-6, 8) are cached like successes; the machine's own failures (10), interrupts and
internal errors are not.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from deploycomp.bundle import replaced_file
from deploycomp.digest import code_digest
from deploycomp.errors import DeployError
from deploycomp.fleet.spec import INT8_OPTIONS, Job

__all__ = ["CACHEABLE_FAILURES", "FORMAT", "BuildCache", "build_key", "external_locations", "toolchain_versions"]

FORMAT = "deploycomp-cache/1"

CACHEABLE_FAILURES = frozenset({3, 4, 5, 6, 8})
"""Exit codes of failures that follow from the build's inputs alone."""

TOOLCHAIN = ("deploycomp", "onnx", "onnx-ir", "onnxscript", "onnxruntime", "openvino", "ai-edge-litert", "flatbuffers",
             "numpy", "tensorrt-rtx", "tensorrt", "pydantic", "scikit-image", "pillow")
"""The distributions whose versions a build depends on: the toolchain that touches the
artifact, and what makes its inputs (scikit-image's photos are the built-in validation
samples, Pillow resizes image folders: a bundle validated on random data for want of
scikit-image was served from the cache after it was installed)."""


def toolchain_versions() -> dict[str, str]:
    out = {}
    for dist in TOOLCHAIN:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    out["deploycomp-code"] = code_digest()
    return out


def _file_digest(path: Path, memo: dict[Path, str]) -> str:
    from deploycomp.digest import sha256_file

    path = path.resolve()
    if path not in memo:
        memo[path] = sha256_file(path)
    return memo[path]


def _data_digest(path: Path | None, memo: dict[Path, str]) -> str | None:
    """A file's sha256, or an image folder's: the relative path and sha256 of each file a
    build reads there (its images and its preprocessing spec), sorted (a README added
    beside the images had rebuilt every cell of the model, a macOS ``._`` file too)."""
    from deploycomp.quant.data import SPEC_FILE, is_image_file

    if path is None:
        return None
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.iterdir() if is_image_file(p) or (p.is_file() and p.name == SPEC_FILE)):
            h.update(f.relative_to(path).as_posix().encode() + b"\0" + _file_digest(f, memo).encode())
        return h.hexdigest()
    return _file_digest(path, memo)


def external_locations(path: Path) -> list[str]:
    """The external-data files a model names (its protobuf parsed, weights not loaded)."""
    import onnx

    from deploycomp.ir import external_locations as named_in

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a readable model: its build says so (exit 3, a cached failure)
        return []
    return named_in(proto)


def _model_digest(path: Path, memo: dict[Path, str], locations_of) -> str:
    """The model's bytes and those of the external-data files it names."""
    own = _file_digest(path, memo)
    h = hashlib.sha256(own.encode())
    locations = locations_of(own, path)
    for loc in locations:
        f = path.parent / loc
        h.update(loc.encode() + b"\0" + (_file_digest(f, memo) if f.is_file() else "missing").encode())
    return h.hexdigest()


def build_key(job: Job, versions: dict[str, str], memo: dict[Path, str] | None = None,
              locations_of=lambda digest, path: external_locations(path)) -> tuple[str, dict]:
    """(sha256 key, the inputs it was computed from) for ``job`` on this machine.
    ``locations_of(model sha256, path)`` lists a model's external-data files (the cache
    remembers them by the model's digest, so a rerun need not parse the model)."""
    from deploycomp.targets import load_target

    memo = {} if memo is None else memo
    searches_int8 = job.precision in ("int8", "auto")  # (an int8 option changed rebuilt every float cell too)
    preprocess = job.preprocess
    if isinstance(preprocess, str) and Path(preprocess).is_file():
        preprocess = {"file_sha256": _file_digest(Path(preprocess), memo)}
    inputs = {
        "format": FORMAT,
        "model": _model_digest(job.path, memo, locations_of),
        "model_file": job.path.name,  # (the bundle's manifest names its source file)
        "calibration": _data_digest(job.calibration, memo),
        "validation": _data_digest(job.validation, memo),
        "preprocess": preprocess,
        "target": load_target(job.target).digest(),
        "options": {k: ({o: x for o, x in v.items() if o not in INT8_OPTIONS} if k == "options" and not searches_int8
                        else v)
                    for k, v in asdict(job).items()
                    if k not in ("model", "path", "target", "calibration", "validation", "preprocess", "not_applied")},
        "versions": versions,
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), inputs


class BuildCache:
    """``ROOT/<key[:2]>/<key>/{result.json, bundle/}``; see the module docstring."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> dict | None:
        """The cached result (with ``bundle`` set to the cached bundle's path), or None:
        also where the bundle is not whole, its files checked against its manifest (a
        byte changed in a cached model had been placed and reported held, and failed
        ``verify`` on the device); :meth:`publish` then replaces the entry."""
        from deploycomp.signing import check_digests

        entry = self.entry(key)
        try:
            result = json.loads((entry / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if result.get("ok_built"):
            try:
                check_digests(entry / "bundle")
            except (DeployError, OSError):
                return None
        return result | ({"bundle": str(entry / "bundle")} if result.get("ok_built") else {})

    def staging(self) -> Path:
        """A new folder to build into (``tmp/build-HOST-PID-*``); those of processes of this
        host that are gone are removed first (a killed fleet's stayed for good)."""
        from deploycomp.bundle import process_alive, process_tag

        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for left in tmp.glob(f"build-{glob.escape(host)}-*"):
            pid = left.name[len(f"build-{host}-"):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"build-{process_tag()}-", dir=tmp))

    def publish(self, key: str, staged: Path, result: dict) -> dict:
        """Move ``staged`` (holding ``bundle/`` if built) into place with ``result.json``.
        Returns what :meth:`lookup` gives afterwards: ours, or a concurrent writer's."""
        (staged / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n",
                                                 encoding="utf-8")
        entry = self.entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, entry)  # atomic; fails if another writer got there first
        except OSError:
            if self.lookup(key) is None and entry.exists():  # a broken entry (no bundle): ours replaces it
                shutil.rmtree(entry, ignore_errors=True)
                try:
                    os.rename(staged, entry)
                except OSError:
                    shutil.rmtree(staged, ignore_errors=True)
            else:
                shutil.rmtree(staged, ignore_errors=True)
        found = self.lookup(key)
        if found is None and result.get("ok_built"):  # (nothing usable in place: say so, not a KeyError later)
            raise DeployError(f"build cache {entry}: could not put the built bundle in place")
        return found or result

    def locations_of(self, digest: str, path: Path) -> list[str]:
        """A model's external-data files, remembered by its sha256 (``ROOT/models/<sha>.json``)."""
        memo = self.root / "models" / f"{digest}.json"
        try:
            return json.loads(memo.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        locations = external_locations(path)
        memo.parent.mkdir(parents=True, exist_ok=True)
        with replaced_file(memo) as tmp:
            tmp.write_text(json.dumps(locations), encoding="utf-8")
        return locations

    def cacheable(self, result: dict) -> bool:
        return result.get("ok_built", False) or result.get("exit_code") in CACHEABLE_FAILURES
