"""``deploycomp fleet SPEC --out DIR``: every build of a spec, cached, spread, indexed.

The order of work: read and check the whole spec (one-line errors before anything is
built); key every build (:mod:`deploycomp.fleet.cache`); take what the cache has; hand
the rest to the executor (:mod:`deploycomp.fleet.executors`), publishing each result in
the cache as it finishes, so an interrupted fleet keeps what it finished; copy every
bundle to ``DIR/<model>/<target>-<precision>/`` (unless the same bundle is already there);
run device steps where the executor can (Ray, with nodes advertising the target); sign
what changed (``--sign-key``); write ``DIR/index.json`` and ``DIR/fleet.html``.

A failed build is recorded with its error and exit code and the others go on. The exit
code is 0 when every build held (built, every budget met), else 13.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from deploycomp.errors import DeployError, EnvironmentProblem, OutputExistsError
from deploycomp.fleet.cache import BuildCache, build_key, toolchain_versions
from deploycomp.fleet.index import FORMAT, INDEX, write_index
from deploycomp.fleet.spec import Job, load_spec

__all__ = ["FleetResult", "run_fleet"]


class FleetResult:
    def __init__(self, index: dict[str, Any], out: Path):
        self.index, self.out = index, out

    @property
    def ok(self) -> bool:
        return all(e["ok"] for e in self.index["entries"])

    @property
    def exit_code(self) -> int:
        """0 when every build held; the environment's code (10) when a build failed for the
        machine (a full cache volume, memory): the run says nothing of the models and a CI
        job can retry elsewhere (every cell had read as a failed build, 13); else 13."""
        if self.ok:
            return 0
        environment = EnvironmentProblem.exit_code
        return environment if any(e.get("exit_code") == environment for e in self.index["entries"]) else FLEET_NOT_HELD


FLEET_NOT_HELD = 13
"""Exit code: the fleet ran, and at least one build failed or missed a budget (index.json says which)."""


def _check_out(out: Path) -> Path:
    out = Path(os.path.abspath(out))
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not (out / INDEX).is_file():
            raise OutputExistsError(f"{out}: exists and is not a deploycomp fleet folder (no {INDEX}); "
                                    "give --out a new or empty folder, or a previous fleet's")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _manifest_sha(bundle: Path) -> str | None:
    from deploycomp.digest import sha256_file

    try:
        return sha256_file(bundle / "manifest.json")
    except OSError:
        return None


def _same_bundle(dest: Path, sha: str | None) -> bool:
    return sha is not None and _manifest_sha(dest) == sha


def _copy_problem(e: OSError | shutil.Error) -> OSError:
    """The OS error behind a failed copy: ``copytree`` gathers its files' errors into one
    ``shutil.Error`` of (source, destination, message) triples, which an internal error
    had reported (a fleet's disk filling while it placed its bundles)."""
    if isinstance(e, shutil.Error):
        for _, where, why in e.args[0] if e.args and isinstance(e.args[0], list) else ():
            number = next((n for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EIO)
                           if os.strerror(n) in str(why)), None)
            if number is not None:
                return OSError(number, os.strerror(number), where)
        return OSError(errno.EIO, f"copy failed: {str(e)[:200]}")
    return e


def _place(src: Path, dest: Path) -> None:
    """Copy a bundle to ``dest``, replacing what is there, by a rename of a whole copy."""
    from deploycomp.bundle import process_tag, remove_abandoned, replace_folder

    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(dest)  # a copy a killed fleet run left
    staged = dest.parent / f".{dest.name}.fleet-{process_tag()}"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        shutil.copytree(src, staged)
    except (OSError, shutil.Error) as e:  # (a full disk: the machine's answer, and no half copy left)
        shutil.rmtree(staged, ignore_errors=True)
        raise _copy_problem(e) from e
    if dest.exists() and not (dest / "manifest.json").is_file() and any(dest.iterdir()):
        shutil.rmtree(staged)
        raise OutputExistsError(f"{dest}: exists and is not a bundle; not replaced")
    replace_folder(staged, dest)


@contextlib.contextmanager
def _removed_if_made(out: Path):
    """On an interrupt or a failure, ``out`` removed if this run made it: the bundles it
    placed have no index to describe them (a fleet that filled the disk while placing had
    left six bundles and no ``index.json``, and its retry was refused: "not a deploycomp
    fleet folder"). A folder that was there before keeps its previous run's index, and
    what this run placed is checked against it on the next."""
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def run_fleet(spec_path: str | os.PathLike, out: str | os.PathLike, *, jobs: int | None = None,
              executor: str = "local", ray_address: str | None = None, cache_dir: str | os.PathLike | None = None,
              sign_key: str | os.PathLike | None = None, device_timeout: float = 900.0,
              ray_resources: dict[str, float] | None = None,
              progress: Callable[[str], None] = lambda line: None) -> FleetResult:
    from deploycomp.examples import cache_dir as default_cache

    started = time.perf_counter()
    spec_path = Path(spec_path)
    _, work = load_spec(spec_path)
    if executor not in ("local", "ray"):
        raise DeployError(f"unknown executor {executor!r}; known: local, ray")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        # before the cache is read: a run that had listed every cell "held (cached)" then stopped
        from deploycomp.errors import BackendUnavailable

        raise BackendUnavailable('--executor ray needs Ray: pip install "deploycomp[ray]"')
    # a bad key (a public one, an encrypted one without its password) stops the run before
    # any build: found after placing, it had left unsigned bundles and no index
    key_id = _signing_key_id(Path(sign_key)) if sign_key is not None else None
    with _removed_if_made(Path(os.path.abspath(out))):
        out = _check_out(Path(out))
        cache = BuildCache(Path(cache_dir) if cache_dir else default_cache() / "builds")
        versions = toolchain_versions()
        memo: dict[Path, str] = {}
        keyed = [(job, *build_key(job, versions, memo, cache.locations_of)) for job in work]
        results: dict[str, dict] = {}
        misses: list[tuple[Job, str, dict]] = []
        for job, key, inputs in keyed:
            hit = cache.lookup(key)
            if hit is not None:
                results[job.label] = hit | {"cached": True, "key": key}
            else:
                misses.append((job, key, inputs))
        total = len(keyed)
        for label, r in results.items():
            progress(f"{label}: {'held' if r.get('ok') else 'failed' if not r.get('ok_built') else 'missed a budget'} (cached)")

        if executor == "ray":
            from deploycomp.fleet.executors import RayExecutor

            runner = RayExecutor(ray_address, jobs, cache.root / "ray", device_timeout, ray_resources)
        else:
            from deploycomp.fleet.executors import LocalExecutor, local_jobs

            runner = LocalExecutor(local_jobs([j for j, _, _ in misses], jobs))
        staged: dict[str, Path] = {}
        built_seconds = 0.0
        try:
            plan = []
            for job, key, inputs in misses:
                folder = cache.staging()
                staged[job.label] = folder
                plan.append((job, folder))
            keys = {job.label: (key, inputs) for job, key, inputs in misses}
            done = len(results)
            for job, result in runner.run(plan):
                key, inputs = keys[job.label]
                built_seconds += result.get("seconds", 0.0)
                record = result | {"key_inputs": inputs}
                if cache.cacheable(result):
                    record = cache.publish(key, staged.pop(job.label), record)
                elif result.get("ok_built"):
                    record = record | {"bundle": str(staged[job.label] / "bundle")}
                results[job.label] = {k: v for k, v in record.items() if k != "key_inputs"} | {"cached": False, "key": key}
                done += 1
                status = "held" if result.get("ok") else result.get("error") or "failed"
                progress(f"[{done}/{total}] {job.label}: {status} ({result.get('seconds', 0):.1f} s)")

            entries, previous = [], _previous_entries(out)
            for job, key, _ in keyed:
                r = results[job.label]
                dest = out / job.folder
                entry = {"model": job.model, "target": job.target_name,
                         "precision": job.precision, "bundle": job.folder, "key": key,
                         **{k: r.get(k) for k in ("ok", "ok_built", "exit_code", "error", "cached", *DESCRIBES_BUNDLE)
                            if k in r}}
                if job.not_applied:
                    entry["options_not_applied"] = list(job.not_applied)
                if r.get("ok_built"):
                    before = previous.get(job.folder) or {}
                    held = (_held_signature(dest) if before.get("key") == key
                            and _same_bundle(dest, before.get("placed_sha256")) else False)
                    if held is not False:
                        # the same build already in place (with its engine, if a device step ran), whole: kept
                        # as is, and described as it is (a rebuild of the same key had lent the index its
                        # manifest digest and timings)
                        entry |= {k: before[k] for k in (*DESCRIBES_BUNDLE, "device_step") if k in before}
                        if key_id is not None and held != key_id:  # unsigned, or another key's (a rotation)
                            held = _sign(dest, Path(sign_key), key_id)
                    else:
                        _place(Path(r["bundle"]), dest)
                        device = runner.device_step(job, dest)
                        if device is not None:
                            entry["device_step"] = device
                        held = _sign(dest, Path(sign_key), key_id) if key_id is not None else None
                    entry["signed"] = held is not None
                    if held is not None:
                        entry["signed_by"] = held
                    entry["placed_sha256"] = _manifest_sha(dest)
                else:
                    entry["bundle"] = None
                    if dest.is_dir() and (dest / "manifest.json").is_file():
                        shutil.rmtree(dest)  # an old bundle of a build that now fails would mislead
                entries.append(entry)
            for stale in set(previous) - {e["bundle"] for e in entries if e["bundle"]}:
                if (out / stale / "manifest.json").is_file():
                    shutil.rmtree(out / stale, ignore_errors=True)
        finally:
            runner.close()
            for folder in staged.values():
                shutil.rmtree(folder, ignore_errors=True)

        index = {
            "format": FORMAT, "spec": str(spec_path.resolve()), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "executor": f"{runner.name} ({runner.jobs} worker{'s' if runner.jobs != 1 else ''})",
            "cache": str(cache.root), "versions": versions,
            "summary": {"builds": total, "cached": total - len(misses), "built": len(misses),
                        "held": sum(1 for e in entries if e["ok"]), "seconds": round(time.perf_counter() - started, 2),
                        "build_seconds": round(built_seconds, 2)},
            "entries": entries,
        }
        write_index(out, index)
        return FleetResult(index, out)


def _previous_entries(out: Path) -> dict[str, dict]:
    """The previous index's entries by bundle folder (what is in place, and how it got there)."""
    try:
        return {e["bundle"]: e for e in json.loads((out / INDEX).read_text(encoding="utf-8"))["entries"] if e.get("bundle")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


DESCRIBES_BUNDLE = ("seconds", "fidelity", "latency_ms", "latency_kind", "latency_busy", "size_mb", "manifest_sha256",
                    "executed_precision", "backend", "budgets_missed", "int8_layers", "float_layers", "dynamic_layers",
                    "int8_mac_share", "auto_chose", "validation_source")
"""An index entry's fields that describe its build's bundle (from the build's result)."""


def _password() -> bytes | None:
    return (os.environ.get("DEPLOYCOMP_KEY_PASSWORD") or "").encode() or None


def _signing_key_id(key: Path) -> str:
    from deploycomp.signing import signing_key_id

    return signing_key_id(key, _password())


def _sign(bundle: Path, key: Path, key_id: str) -> str:
    from deploycomp.signing import sign_bundle

    sign_bundle(bundle, key, _password())
    return key_id


def _held_signature(bundle: Path) -> str | None | bool:
    """What the bundle in place holds, checked whole (:func:`deploycomp.signing.verify_bundle`):
    the key id that signed it, None if unsigned, or False where it is not whole (a file
    changed or removed, a signature that no longer matches): then it is placed again."""
    from deploycomp.signing import verify_bundle

    try:
        return verify_bundle(bundle)["key_id"]
    except DeployError:
        return False
