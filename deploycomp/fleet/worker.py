"""One fleet build, as a worker process or a Ray task runs it, and what it reports.

:func:`build_job` runs ``deploycomp build`` for a :class:`~deploycomp.fleet.spec.Job` into a
folder and returns a small, JSON-able result: whether a bundle was built, whether it met
every budget, its error and exit code otherwise, and the figures the fleet index shows.
A bundle that misses a budget is kept (``--no-fail``): the index shows how far it is,
and the fleet's exit code says that not everything held.

:func:`pack` / :func:`unpack` move a bundle (or a model and its data) between machines as
bytes: a Ray task on another node returns its bundle that way, so a cluster needs no
shared file system.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

from deploycomp.fleet.spec import RULE_PARSERS, Job

__all__ = ["build_job", "engine_step", "pack", "summarize_bundle", "unpack"]


def summarize_bundle(bundle: Path) -> dict[str, Any]:
    """The index's figures of a built bundle (from its manifest)."""
    from deploycomp.digest import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    val, measured = manifest["validation"], manifest.get("measured", {})
    latency = measured.get("latency")
    failed = [c["budget"] for c in val["budgets"] + measured.get("budgets", []) if not c["ok"]]
    quant = manifest.get("quantization") or {}
    return {
        "ok": bool(val["ok"]),
        "manifest_sha256": sha256_file(bundle / "manifest.json"),
        "fidelity": round(min(o["cosine"] for o in val["outputs"].values()), 6) if val["outputs"] else None,
        "latency_ms": latency["median_ms"] if latency else val["latency_estimate"]["estimate_ms"],
        "latency_kind": "measured" if latency else "roofline estimate",
        # (timed while other processes, such as the fleet's other workers, used this share of the CPUs)
        **({"latency_busy": latency["busy_elsewhere"]} if latency and "busy_elsewhere" in latency else {}),
        "size_mb": round(sum(a["bytes"] for a in manifest["artifacts"]) / 1e6, 3),
        "executed_precision": manifest["backend"]["runtime"].get("executed_precision"),
        "backend": manifest["backend"]["name"],
        "budgets_missed": failed,
        "validation_source": (val.get("data") or {}).get("source"),
        **({"int8_layers": quant["int8_layers"], "float_layers": len(quant["float_layers"]),
            "int8_mac_share": quant.get("int8_mac_share")} if quant else {}),
        **({"dynamic_layers": len(quant["dynamic_layers"])} if quant and quant.get("dynamic_layers") else {}),
        **({"auto_chose": manifest["auto"]["chosen"]} if manifest.get("auto") else {}),
    }


def _parsed(options: dict[str, Any]) -> dict[str, Any]:
    """A spec's options as :class:`deploycomp.pipeline.BuildOptions` takes them: its rules
    (:data:`RULE_PARSERS`, lists of the command line's strings) parsed."""
    return {**options, **{k: parse()(options[k]) for k, parse in RULE_PARSERS.items() if k in options}}


def build_job(job: Job, folder: str | Path) -> dict[str, Any]:
    """Build ``job`` into ``folder/bundle``; never raises for a failed build (only interrupts)."""
    from deploycomp.errors import DeployError, environment_problem
    from deploycomp.pipeline import BuildOptions, build

    folder = Path(folder)
    started = time.perf_counter()
    opts = BuildOptions(
        model=job.path, out=folder / "bundle", target=job.target, precision=job.precision,
        inputs=[(n, tuple(s)) for n, s in job.inputs], calibration=job.calibration,
        validation_data=job.validation, preprocess=job.preprocess, freeze=dict(job.freeze),
        min_cosine=job.min_cosine, min_top1=job.min_top1, min_box_iou=job.min_box_iou, min_mask_iou=job.min_mask_iou,
        min_text_similarity=job.min_text_similarity,
        no_fail=True, force=True,
        **_parsed(job.options),
    )
    try:
        build(opts)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - a failed build is a result, not a crash of the fleet
        e = environment_problem(e) or e
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        return {"ok": False, "ok_built": False, "exit_code": e.exit_code if isinstance(e, DeployError) else 1,
                "error": line if isinstance(e, DeployError) else f"internal error ({type(e).__name__}): {line}",
                "seconds": round(time.perf_counter() - started, 2)}
    summary = summarize_bundle(folder / "bundle")
    missed = summary["budgets_missed"]
    return {**summary, "ok_built": True, "exit_code": 0 if summary["ok"] else 8,
            "error": f"missed {', '.join(missed)}" if missed else None,
            "seconds": round(time.perf_counter() - started, 2)}


def pack(folder: Path) -> bytes:
    """A folder as an uncompressed tar in memory (artifacts are already dense)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            tar.add(f, arcname=f.relative_to(folder).as_posix(), recursive=False)
    return buf.getvalue()


def unpack(data: bytes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(folder, filter="data")  # no absolute paths, links or escapes
    return folder


def engine_step(bundle_tar: bytes) -> dict[str, Any]:
    """The device-side step of a TensorRT bundle (``deploycomp engine``), run where the
    target's GPU is: returns the bundle with its engine (packed), or the error."""
    import tempfile

    from deploycomp.engine import build_bundle_engine
    from deploycomp.errors import DeployError

    with tempfile.TemporaryDirectory(prefix="deploycomp-engine-") as tmp:
        bundle = unpack(bundle_tar, Path(tmp) / "bundle")
        try:
            manifest = build_bundle_engine(bundle)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            code = e.exit_code if isinstance(e, DeployError) else 1
            return {"ok": False, "exit_code": code, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
        family = manifest["target"].get("family") or {}
        return {"ok": True, "exit_code": 0, "bundle": pack(bundle),
                "gpu": manifest["backend"]["lowered"]["engine"].get("gpu"),
                "member": (family.get("device") or {}).get("member")}
