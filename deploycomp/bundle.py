"""The artifact bundle: its layout, its manifest, and writing it atomically.

A bundle is a folder: the backend's artifact files, ``manifest.json`` and
``report.html``. It is assembled in a hidden sibling folder and renamed into place
only when complete, so an interrupted or failed build never leaves a half bundle at
``--out`` (and ``--force`` replaces an old bundle only once the new one is whole).

``--force`` replaces only what a build may own: a previous bundle (a folder whose
``manifest.json`` is a deploycomp manifest) or an empty folder; anything else is
refused, so a mistyped ``--out`` cannot delete a user's files. The current folder (or
one that contains it) is never replaced.

The manifest records everything that determines the output (source sha256, target
profile and its hash, precision, input shapes, pass log, tool and runtime versions)
so that the same inputs give the same artifact bytes, and the same manifest apart
from ``created``, the ``measured`` section (timings and memory, which vary run to
run on any machine) and the digest of ``report.html``, which shows both.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from deploycomp.errors import DeployError, EnvironmentProblem, OutputExistsError, VerificationError, few
from deploycomp.digest import sha256_file
from deploycomp.paths import device_or_pipe

__all__ = ["MANIFEST", "REPORT", "FORMAT", "artifact_entries", "check_output", "check_structure", "is_bundle", "read_manifest", "replace_folder",
           "json_text", "placed", "process_alive", "process_tag", "remove_abandoned", "remove_abandoned_scratch",
           "replaced_file", "scratch_folder", "signals_deferred",
           "staged_bundle", "write_json"]

MANIFEST = "manifest.json"
REPORT = "report.html"
FORMAT = "deploycomp-bundle/1"


def json_text(data: Any) -> str:
    """``data`` as strict JSON: NaN and Inf (an fp16 candidate's error on an output it
    turned to NaN) become null, which every JSON reader accepts; Python's bare ``NaN`` is
    not JSON, and a manifest a fleet tool cannot parse is no manifest."""
    return json.dumps(_finite(data), indent=2, sort_keys=True, default=str, allow_nan=False)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    if type(data).__module__ == "numpy" and getattr(data, "ndim", None) == 0:  # a numpy scalar (no numpy import here)
        return _finite(data.item())
    return data


def write_json(path: Path, data: Any) -> None:
    path.write_text(json_text(data) + "\n", encoding="utf-8")


def artifact_entries(folder: Path, files: list[Path]) -> list[dict[str, Any]]:
    return [
        {"path": f.relative_to(folder).as_posix(), "sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(files)
    ]


MAX_MANIFEST_BYTES = 200_000_000
"""No manifest is larger (a 500-layer model's is under 2 MB)."""


def read_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        if Path(bundle).name == MANIFEST and Path(bundle).is_file():
            raise DeployError(f"{bundle}: a bundle's manifest; give its folder, {Path(bundle).parent}")
        raise DeployError(f"{bundle}: not a deploycomp bundle (no {MANIFEST})")
    # whatever is wrong inside the manifest fails the bundle's verification (exit 11), as
    # `verify` says of the same file (run and diff had said 2)
    if path.stat().st_size > MAX_MANIFEST_BYTES:  # (a regular file: said above where it is not)
        raise VerificationError(f"{path}: not a manifest (over {MAX_MANIFEST_BYTES // 10**6} MB)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    # (a file written over it: not text at all; nested 100000 deep: RecursionError; a
    # 5000-digit number: ValueError, past Python's digits limit; all had been internal errors)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise VerificationError(f"{path}: corrupt manifest ({str(e)[:200] or type(e).__name__})") from None
    if not isinstance(manifest, dict):
        raise VerificationError(f"{path}: corrupt manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != FORMAT:
        raise VerificationError(f"{path}: unsupported bundle format {manifest.get('format')!r} (expected {FORMAT})")
    check_structure(path, manifest)
    for entry in manifest["artifacts"]:
        f = Path(bundle) / entry["path"]
        if not f.is_file():
            raise VerificationError(f"{bundle}: artifact {entry['path']} listed in the manifest is missing")
    return manifest


def check_structure(path: Path, manifest: dict[str, Any]) -> None:
    """The parts of a manifest that running a bundle reads, of the kinds they must be: a
    damaged one is refused in one line (exit 11), as ``verify`` refuses a changed artifact.
    ``run`` had failed with a KeyError or TypeError on a manifest ``verify`` passed, and
    one without ``artifacts`` had skipped every checksum."""
    import numpy as np

    def bad(what: str) -> VerificationError:
        return VerificationError(f"{path}: damaged manifest ({what})")

    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, list) or not artifacts or not all(
            isinstance(a, dict) and isinstance(a.get("path"), str) for a in artifacts):
        raise bad("'artifacts' is not a list of files")
    io, backend = manifest.get("io"), manifest.get("backend")
    if not isinstance(io, dict) or not all(
            isinstance(io.get(k), list) and all(isinstance(v, dict) and "name" in v for v in io[k])
            for k in ("inputs", "outputs")):
        raise bad("'io' does not list the inputs and outputs")
    for spec in io["inputs"] + io["outputs"]:
        try:
            np.dtype(spec.get("dtype", "float32")) if spec.get("dtype") != "str" else None
        except TypeError:
            raise bad(f"'{spec['name']}' has dtype {spec.get('dtype')!r}") from None
    if not isinstance(backend, dict) or not isinstance(backend.get("name"), str) or not isinstance(
            backend.get("lowered"), dict):
        raise bad("'backend' does not name the backend and its lowering")
    from deploycomp.backends import BACKENDS

    if backend["name"] not in BACKENDS:  # (a raw KeyError from load)
        raise bad(f"backend {backend['name']!r} is none of {', '.join(BACKENDS)}")


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` holds a deploycomp bundle (its manifest names our format)."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format", "").startswith("deploycomp-bundle/")
    except (OSError, ValueError, AttributeError):
        return False


def _writable_parent(out: Path) -> Path:
    """The nearest existing ancestor of ``out``, once a probe folder could be made in it: a
    one-line error before any work if not (``os.access`` is not enough: root passes it on
    folders the kernel still refuses, such as read-only mounts)."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
    except OSError as e:
        raise EnvironmentProblem(f"{out}: cannot write into {parent} ({e.strerror or e})") from None
    return parent


NAME_MAX = 255
"""The longest file or folder name Linux, macOS and Windows file systems take, in bytes."""


def check_output(out: str | os.PathLike, force: bool) -> Path:
    """``out`` as an absolute path, once it is known the build may write there: fails
    before any work is done, so a refused ``--out`` costs nothing."""
    out = Path(os.path.abspath(out))
    if any(len(os.fsencode(part)) > NAME_MAX for part in out.parts):  # (an internal error, ENAMETOOLONG)
        raise OutputExistsError(f"{str(out)[:80]}...: a name in it is longer than file systems take ({NAME_MAX} bytes)")
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise OutputExistsError(f"{out}: is the current folder (or contains it); give --out a folder for the bundle")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputExistsError(f"{out}: exists and is not a folder")
        if not force:
            raise OutputExistsError(f"{out}: output exists; pass --force to replace it")
        if not is_bundle(out) and any(out.iterdir()):
            raise OutputExistsError(f"{out}: exists and is not a deploycomp bundle; --force replaces only a "
                                    "previous bundle or an empty folder")
        if foreign := _not_the_bundles(out):  # (a user's files in a bundle folder had been deleted with it)
            raise OutputExistsError(f"{out}: holds files no build wrote ({few(foreign)}); --force replaces only "
                                    "a bundle: move them, or give another --out")
    _writable_parent(out)
    return out


BUNDLE_FILES = (MANIFEST, REPORT, "signature.json")
"""The files of a bundle besides the artifacts its manifest lists."""


def _not_the_bundles(out: Path) -> list[str]:
    """Files in bundle folder ``out`` that are neither its manifest's artifacts nor its
    own files (:data:`BUNDLE_FILES`), as paths relative to it."""
    try:
        listed = {a["path"] for a in json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("artifacts", [])
                  if isinstance(a, dict) and isinstance(a.get("path"), str)}
    except (OSError, ValueError, AttributeError):
        return []
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink())
    return [p for p in found if p not in listed and p not in BUNDLE_FILES]


placed: list[Path] = []
"""Every folder :func:`replace_folder` has put in place in this process, as it was named:
what a signal after it was written whole names (the line had said "nothing was written"
of a bundle placed a moment before)."""


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held while the block runs, then acted on as they would have been:
    a placement or a clean-up that a signal must not cut in half (``out`` moved aside and the
    new bundle not yet in its place; a staging or candidate folder half removed and left
    beside ``out``). In the main thread only (where Python runs its handlers)."""
    names = [getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread() or not names:
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in names}
    if None in previous.values():  # (a handler set outside Python: not ours to put back)
        yield
        return
    for s in names:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            signal.raise_signal(held[0])  # (the handler restored acts on it now, after the block)


def replace_folder(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out`` (a checked old bundle there is swapped
    out by rename, then deleted): readers see the old bundle or the new one, never a mix,
    and a signal waits until it is done (:func:`signals_deferred`)."""
    with signals_deferred():
        if out.exists():
            old = out.parent / f".{out.name}.old-{process_tag()}"
            os.replace(out, old)
            os.replace(new, out)
            placed.append(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(new, out)
            placed.append(out)


def process_tag() -> str:
    """This host and process, in the names of the folders a build works in: ``out`` may be
    on a file system other machines write to too (a fleet's workers)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (another user's counts: not ours to judge)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _left_by_a_gone_process(pid: str) -> bool:
    """Whether ``pid`` (as a left-over's name gives it) names another process of this host
    that no longer runs."""
    return pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid))


def remove_abandoned(out: Path) -> None:
    """Staging, swap and fleet-copy folders and temporary files (:func:`replaced_file`)
    next to ``out`` left by a process on this host that is gone: a process killed outright
    (SIGKILL, the out-of-memory killer, a crash inside a native library such as OpenVINO's
    converter) cannot clean up after itself. Those of live processes, and of other hosts,
    are left alone."""
    host = socket.gethostname()
    for kind in ("staging", "old", "fleet", "tmp", "auto"):
        for left in out.parent.glob(f".{glob.escape(out.name)}.{kind}-{glob.escape(host)}-*"):
            if not _left_by_a_gone_process(left.name.rsplit("-", 1)[-1].split(".", 1)[0]):  # (a file may keep a suffix)
                continue
            if left.is_dir() and not left.is_symlink():
                shutil.rmtree(left, ignore_errors=True)
            else:
                left.unlink(missing_ok=True)


SCRATCH_PREFIX = "deploycomp-"
"""The start of every scratch folder's name in ``$TMPDIR`` (:func:`scratch_folder`)."""


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder in ``$TMPDIR`` (a trial's artifact, a model saved for a converter),
    removed when the block ends; named for this host and process, so that a later build
    removes one a killed process left (:func:`remove_abandoned_scratch`)."""
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{process_tag()}-") as folder:
        yield Path(folder)


def remove_abandoned_scratch() -> None:
    """Scratch folders in ``$TMPDIR`` left by a process of this host that is gone (SIGKILL
    had left a trial's ``model.xml``/``model.bin`` and a converter's ``model.onnx`` there for
    good); those of live processes, and of other hosts, are left alone."""
    head = f"{SCRATCH_PREFIX}{socket.gethostname()}-"
    try:
        found = list(Path(tempfile.gettempdir()).glob(f"{glob.escape(head)}*"))
    except OSError:
        return
    for left in found:
        if _left_by_a_gone_process(left.name[len(head):].split("-", 1)[0]) and left.is_dir():
            shutil.rmtree(left, ignore_errors=True)


@contextlib.contextmanager
def replaced_file(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``target`` to write it at (named for this host and
    process, ending in ``suffix`` for writers that insist on one, as ``np.savez`` does);
    once the block succeeds it replaces ``target`` in one rename, so readers see the old
    file or the new one; on any error or interrupt it is removed. Left-overs of killed
    processes of this host are removed first (:func:`remove_abandoned`): inside a bundle a
    stray file would fail its verification."""
    target = Path(target)
    remove_abandoned(target)
    tmp = target.with_name(f".{target.name}.tmp-{process_tag()}{suffix}")
    try:
        yield tmp
        if device_or_pipe(target):  # (/dev/null, /dev/stdout, a FIFO): written into, not renamed over
            with open(tmp, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_bundle(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it becomes ``out``, on any error or interrupt
    it vanishes (and ``out``, if it existed, is untouched). What an earlier build into the
    same ``out`` could not remove (its process killed) is removed first."""
    out = check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out)
    remove_abandoned_scratch()
    stage = out.parent / f".{out.name}.staging-{process_tag()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        check_output(out, force)  # still ours to replace after a long build?
        replace_folder(stage, out)
    except BaseException:
        with signals_deferred():
            shutil.rmtree(stage, ignore_errors=True)
        raise
