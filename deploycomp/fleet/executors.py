"""Where fleet builds run: a local process pool, or a Ray cluster. No scheduler of our own.

**Local** (``--executor local``): a ``concurrent.futures`` process pool (spawned workers:
ONNX Runtime and OpenVINO own threads that a fork would copy mid-flight), as many workers
as ``--jobs`` or the cores, and no more than the memory allows: each build is estimated
at :func:`estimate_bytes` (int8 builds of large models need GBs) against the machine's
available memory.

**Ray** (``--executor ray``, ``pip install "deploycomp[ray]"``): each build is a Ray task
declaring its CPUs and memory, so Ray places it; inputs travel through the object store
and bundles come back as bytes, so nodes need no shared file system. Device-side steps
run where the device is: after a TensorRT bundle is built, ``deploycomp engine`` runs as
a task that requires the custom resource named after the target (``{"jetson-orin-nano":
1}``); a cluster whose Jetson nodes advertise it (``ray start --resources
'{"jetson-orin-nano": 1}'``) builds engines there while x86 nodes do the rest. A step no
node can take (the resource is advertised nowhere) is reported at once, not left pending;
one that waits past ``device_timeout`` is cancelled and reported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

from deploycomp.fleet.spec import Job
from deploycomp.memory import available_bytes
from deploycomp.fleet.worker import build_job, engine_step, pack, unpack

__all__ = ["LocalExecutor", "RayExecutor", "estimate_bytes", "local_jobs"]

log = logging.getLogger(__name__)

GB = 1 << 30


def estimate_bytes(job: Job) -> int:
    """Memory a build may need: the runtimes and Python (~1 GB) plus a multiple of the
    model's size (weights held by the reference, the optimizer and the backend; an int8
    build also holds calibration statistics and candidate models; the float tensors its
    ranking keeps size themselves to a quarter of the memory free when it starts (the least
    of the machine's, the cgroup's and ``ulimit -v``'s: :mod:`deploycomp.memory`), see
    :func:`deploycomp.quant.downstream.tap_budget`)."""
    size = job.path.stat().st_size
    return int(1.0 * GB + size * (16 if job.precision in ("int8", "auto") else 8))


def local_jobs(jobs: list[Job], requested: int | None) -> int:
    """Workers for the local pool: ``requested`` or the cores, no more than memory allows."""
    n = requested or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    available = available_bytes()
    if available and jobs:
        n = min(n, max(1, available // max(estimate_bytes(j) for j in jobs)))
    return max(1, n)


def _end_with_parent(parent: int) -> None:
    """Pool worker initializer: a SIGTERM to this worker when the fleet's process ends,
    however it ends (Linux's parent-death signal). Killed outright (SIGKILL, the
    out-of-memory killer), the fleet had left its workers waiting for work under PID 1 for
    good, holding the job's output pipes open: a CI runner waiting for them hung."""
    import ctypes
    import signal
    import sys

    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1  # (<linux/prctl.h>)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    global _parent
    _parent = parent
    if os.getppid() != parent:  # (it ended before the signal was asked for)
        os._exit(128 + int(signal.SIGTERM))


_parent: int | None = None
"""The fleet's process, in a pool worker (:func:`_end_with_parent`)."""


def _build_in(job: Job, folder: str) -> dict[str, Any]:
    """Process-pool entry point (module level: picklable). A worker the run terminates (an
    interrupted fleet) unwinds as an interrupted build does, so that its build's temporary
    folders go too (they stayed in $TMPDIR)."""
    import signal

    from deploycomp import privacy

    from deploycomp.quiet import own_process

    global _building
    signal.signal(signal.SIGTERM, _interrupted)
    privacy.install()
    own_process()
    _building = True
    try:
        return build_job(job, folder)
    finally:
        _building = False
        if _parent is not None and os.getppid() != _parent:
            # the fleet's process is gone (its death's SIGTERM unwound this build): no one
            # reads the result, and the pool's queues would keep this worker waiting for good
            os._exit(128 + signal.SIGTERM)


_building = False
"""Whether this pool worker is inside a build (else it waits for one)."""


def _interrupted(signum, frame):
    """A worker told to stop: a build unwinds (its temporary folders go); an idle worker
    ends quietly (each had printed a KeyboardInterrupt traceback from the pool's queue,
    where the run promises one line). Both unwind: the pool's queues hold locks shared
    with the other workers (a worker ended outright while it held one left the next
    blocked for good)."""
    if not _building:
        raise SystemExit(128 + signum)
    raise KeyboardInterrupt


class LocalExecutor:
    name = "local"

    def __init__(self, jobs: int):
        self.jobs = jobs

    def run(self, work: list[tuple[Job, Path]]) -> Iterator[tuple[Job, dict]]:
        """Build each (job, staging folder); yields (job, result) as builds finish."""
        if not work:
            return
        if self.jobs == 1:  # no pool: one build at a time in this process
            for job, folder in work:
                yield job, build_job(job, folder)
            return
        pool = ProcessPoolExecutor(self.jobs, mp_context=get_context("spawn"), initializer=_end_with_parent,
                                   initargs=(os.getpid(),))
        try:
            futures = {pool.submit(_build_in, job, str(folder)): job for job, folder in work}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield futures[f], f.result()
        except BaseException:
            # Ctrl-C or SIGTERM (a cancelled CI job): stop the workers too, not after their
            # builds (a SIGTERM reaches only this process, and shutdown would wait for them)
            processes = list(getattr(pool, "_processes", {}).values())
            for process in processes:
                process.terminate()
            for process in processes:  # (each unwinds its build first: the run then removes their folders)
                process.join(timeout=10)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()

    def device_step(self, job: Job, bundle: Path) -> dict | None:
        return None  # engines are built on the device (``deploycomp engine``)

    def close(self) -> None:
        pass


def _ray_build(job: Job, inputs: dict[str, Any]) -> tuple[dict, bytes | None]:
    """Ray task: materialize the job's inputs here, build, return (result, packed bundle).
    ``inputs`` holds object refs (shared by a model's jobs; Ray resolves only top-level
    arguments, so they are fetched here)."""
    import ray

    from deploycomp import privacy

    from deploycomp.quiet import own_process

    privacy.install()
    own_process()  # (a Ray worker is the fleet's: native log lines stay out of its logs)
    inputs = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in inputs.items()}
    with tempfile.TemporaryDirectory(prefix="deploycomp-fleet-") as tmp:
        root = Path(tmp)
        local = _localize(job, inputs, root / "in")
        result = build_job(local, root / "out")
        return result, (pack(root / "out" / "bundle") if result.get("ok_built") else None)


def _localize(job: Job, inputs: dict[str, bytes], root: Path) -> Job:
    """The job with its files unpacked under ``root`` (the model with its external data;
    calibration / validation files or folders)."""
    from dataclasses import replace

    paths = {}
    for key, data in inputs.items():
        folder = unpack(data, root / key)
        entries = list(folder.iterdir())
        paths[key] = folder if key in ("calibration", "validation") and len(entries) != 1 else entries[0]
    return replace(job, path=paths["model"] / job.path.name if paths["model"].is_dir() else paths["model"],
                   calibration=paths.get("calibration"), validation=paths.get("validation"))


def _pack_inputs(job: Job) -> dict[str, bytes]:
    """The job's files as tars: ``model`` (the .onnx and its external data), and calibration
    and validation (a file, or a folder's files)."""
    import onnx

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        shutil.copy2(job.path, model_dir / job.path.name)
        proto = onnx.load(str(job.path), load_external_data=False)
        for t in proto.graph.initializer:
            for e in t.external_data:
                if e.key == "location" and (job.path.parent / e.value).is_file():
                    dest = model_dir / e.value
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(job.path.parent / e.value, dest)
        out["model"] = pack(model_dir)
        for key in ("calibration", "validation"):
            src = getattr(job, key)
            if src is None:
                continue
            holder = Path(tmp) / key
            if src.is_dir():
                shutil.copytree(src, holder / src.name)
                out[key] = pack(holder / src.name)
            else:
                holder.mkdir()
                shutil.copy2(src, holder / src.name)
                out[key] = pack(holder)
    return out


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None, jobs: int | None, temp_dir: Path, device_timeout: float = 900.0,
                 resources: dict[str, float] | None = None):
        try:
            import ray
        except ImportError:
            from deploycomp.errors import BackendUnavailable

            raise BackendUnavailable('--executor ray needs Ray: pip install "deploycomp[ray]"') from None
        from deploycomp import privacy

        privacy.install()
        self.ray = ray
        self.device_timeout = device_timeout
        self._temp = None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            kwargs["address"] = address
        else:
            # Ray >= 2.5x starts local clusters with token authentication and saves a generated
            # token to ~/.ray/auth_token; a token of our own in the environment (inherited by
            # Ray's processes, gone with them) keeps the authentication and writes nothing
            if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
                import secrets

                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
            # a cluster of this machine alone, its session files removed at the end: in the
            # cache, TMPDIR or /tmp, the first short enough for Ray's unix sockets (107 bytes
            # with ~65 of session and socket names below it)
            base = next((str(d) for d in (temp_dir, tempfile.gettempdir(), "/tmp") if len(str(d)) <= 36), "/tmp")
            if base == str(temp_dir):
                temp_dir.mkdir(parents=True, exist_ok=True)
            self._temp = Path(tempfile.mkdtemp(prefix="r", dir=base))
            kwargs |= {"_temp_dir": str(self._temp), "num_cpus": jobs or os.cpu_count(),
                       **({"resources": resources} if resources else {})}
        if not logging.getLogger("deploycomp").isEnabledFor(logging.INFO):
            logging.getLogger("ray").setLevel(logging.ERROR)  # its notices, unless -v
        ray.init(**kwargs)
        self._build = ray.remote(_ray_build)
        self._engine = ray.remote(engine_step)
        self.jobs = int(ray.cluster_resources().get("CPU", 1))

    def run(self, work: list[tuple[Job, Path]]) -> Iterator[tuple[Job, dict]]:
        ray = self.ray
        shipped: dict[tuple, Any] = {}
        refs = {}
        for job, folder in work:
            key = (job.path, job.calibration, job.validation)
            if key not in shipped:
                shipped[key] = {k: ray.put(v) for k, v in _pack_inputs(job).items()}
            task = self._build.options(num_cpus=1, memory=estimate_bytes(job), max_retries=0)
            refs[task.remote(job, shipped[key])] = (job, folder)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            job, folder = refs[done[0]]
            try:
                result, bundle = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a task that died (out of memory, node lost)
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                yield job, {"ok": False, "ok_built": False, "exit_code": 1,
                            "error": f"ray task failed: {lines[-1] if lines else type(e).__name__}"}
                continue
            if bundle is not None:
                unpack(bundle, Path(folder) / "bundle")
            yield job, result

    def device_step(self, job: Job, bundle: Path) -> dict | None:
        """``deploycomp engine`` on a node advertising the target's resource (TensorRT
        bundles only); None when there is nothing to do on a device."""
        import json

        from deploycomp.targets import load_target

        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        if manifest["backend"]["name"] != "tensorrt":
            return None
        profile = load_target(job.target)
        names = [job.target, *profile.family_members, *([profile.resolved_from] if profile.resolved_from else [])]
        available = self.ray.cluster_resources()
        resource = next((n for n in names if available.get(n, 0) >= 1), None)
        if resource is None:
            return {"status": "no-node", "ok": False,
                    "note": f"no node advertises resource {job.target!r}: run deploycomp engine on the device"}
        ref = self._engine.options(resources={resource: 1}, num_cpus=1, max_retries=0).remote(pack(bundle))
        done, _ = self.ray.wait([ref], timeout=self.device_timeout)
        if not done:
            self.ray.cancel(ref, force=True)
            return {"status": "timeout", "ok": False, "resource": resource,
                    "note": f"no node with resource {resource!r} took the engine step in {self.device_timeout:g} s"}
        result = self.ray.get(ref)
        if not result["ok"]:
            return {"status": "failed", "ok": False, "resource": resource, "exit_code": result["exit_code"],
                    "error": result["error"]}
        staged = bundle.with_name(bundle.name + ".engine")
        shutil.rmtree(staged, ignore_errors=True)
        unpack(result["bundle"], staged)
        shutil.rmtree(bundle)
        os.replace(staged, bundle)
        return {"status": "built", "ok": True, "resource": resource, "gpu": result.get("gpu"),
                "member": result.get("member")}

    def close(self) -> None:
        self.ray.shutdown()
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
