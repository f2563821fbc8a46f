"""The artifact bundle: its layout, its manifest, and writing it atomically.

A bundle is a folder: the backend's artifact files, ``manifest.json`` and
``report.html``. It is assembled in a hidden sibling folder and renamed into place
only when complete, so an interrupted or failed build never leaves a half bundle at
``--out`` (and ``--force`` replaces an old bundle only once the new one is whole).

The manifest records everything that determines the output (source sha256, target
profile and its hash, precision, input shapes, pass log, tool and runtime versions)
so that the same inputs give the same artifact bytes, and the same manifest apart
from ``created`` and the ``measured`` section (timings and memory, which vary run to
run on any machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from deploycomp.errors import DeployError, OutputExistsError
from deploycomp.ir import sha256_file

__all__ = ["MANIFEST", "FORMAT", "artifact_entries", "read_manifest", "staged_bundle", "write_json"]

MANIFEST = "manifest.json"
FORMAT = "deploycomp-bundle/1"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def artifact_entries(folder: Path, files: list[Path]) -> list[dict[str, Any]]:
    return [
        {"path": f.relative_to(folder).as_posix(), "sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(files)
    ]


def read_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise DeployError(f"{bundle}: not a deploycomp bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DeployError(f"{path}: corrupt manifest ({e})") from e
    if manifest.get("format") != FORMAT:
        raise DeployError(f"{path}: unsupported bundle format {manifest.get('format')!r} (expected {FORMAT})")
    for entry in manifest.get("artifacts", []):
        f = Path(bundle) / entry["path"]
        if not f.is_file():
            raise DeployError(f"{bundle}: artifact {entry['path']} listed in the manifest is missing")
    return manifest


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: output exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")


@contextlib.contextmanager
def staged_bundle(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it becomes ``out``, on any error it vanishes."""
    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
