"""The fleet command side by side with itself: cache reuse, local scaling, Ray's overhead.

A spec of 2 real models (YOLOv8n 1x3x320x320 from the nudenet wheel, PP-OCRv4 rec 1x3x48x320
from rapidocr's) x 3 targets (host, android-arm64, jetson-orin-nano) x fp16, each model
validated on its built-in real samples written to an .npz, is built in one run:

* ``local, jobs=J`` for J = 1 .. --max-jobs, each with an empty cache (scaling);
* the same spec again on the last cache (every bundle reused: the ratio to the first run,
  and whether the bundles are byte-identical);
* one model's file changed (a metadata field, so the weights and outputs stay the same):
  which builds run again;
* ``ray, jobs=2`` (a local Ray cluster started by the command) with an empty cache: its
  overhead per build against the local pool with the same number of workers.

Every run is ``python -m deploycomp fleet`` as a subprocess (the way CI calls it), timed
wall clock; the other-load column is the CPU other processes used meanwhile.

Usage: python bench/fleet.py [--max-jobs 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from save import save_json  # noqa: E402
from timing import cpu_snapshot, other_load  # noqa: E402

MODELS = ("yolov8n", "ppocr-rec")


def _setup(work: Path) -> Path:
    import onnx

    from deploycomp.examples import EXAMPLES, fetch_example
    from deploycomp.sample_data import samples_for

    lines = ["models:"]
    for name in MODELS:
        ex = EXAMPLES[name]
        src = fetch_example(name)
        shutil.copy2(src, work / f"{name}.onnx")
        samples = samples_for(ex.inputs, ex.input_name, ex.shape)
        np.savez(work / f"{name}-val.npz", **{ex.input_name: np.concatenate([s[ex.input_name] for s in samples])})
        shape = ", ".join(map(str, ex.shape))
        lines += [f"  - name: {name}", f"    path: {name}.onnx", f"    inputs: {{{ex.input_name}: [{shape}]}}",
                  f"    validation: {name}-val.npz"]
    lines += ["targets: [host, android-arm64, jetson-orin-nano]", "precisions: [fp16]"]
    (work / "fleet.yaml").write_text("\n".join(lines) + "\n")
    onnx.load(work / f"{MODELS[0]}.onnx")  # readable
    return work / "fleet.yaml"


def _run(spec: Path, out: Path, cache: Path, *extra: str) -> dict:
    before = cpu_snapshot()
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deploycomp", "fleet", str(spec), "--out", str(out), "--cache",
                           str(cache), "--json", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 13):
        raise SystemExit(f"fleet failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1]}")
    data = json.loads(proc.stdout)
    return {"wall_s": round(wall, 2), "other_load": round(other_load(before, cpu_snapshot()), 2),
            "built": data["summary"]["built"], "cached": data["summary"]["cached"], "held": data["summary"]["held"],
            "rebuilt": sorted(e["bundle"] for e in data["entries"] if not e.get("cached"))}


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("index.json", "fleet.html")):
        h.update(f.relative_to(out).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-jobs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        spec = _setup(work)
        for jobs in range(1, args.max_jobs + 1):
            rows[f"local jobs={jobs}"] = _run(spec, work / f"out{jobs}", work / f"cache{jobs}", "--jobs", str(jobs))
            print(f"local jobs={jobs}: {rows[f'local jobs={jobs}']}", flush=True)
        last = args.max_jobs
        first_digest = _digest(work / f"out{last}")
        rows["rerun (cached)"] = _run(spec, work / f"out{last}", work / f"cache{last}")
        rows["rerun (cached)"]["byte_identical"] = _digest(work / f"out{last}") == first_digest
        import onnx

        m = onnx.load(work / f"{MODELS[1]}.onnx")
        m.producer_version = (m.producer_version or "") + "+changed"
        onnx.save(m, work / f"{MODELS[1]}.onnx")
        rows["one model changed"] = _run(spec, work / f"out{last}", work / f"cache{last}")
        try:
            import ray  # noqa: F401

            rows["ray jobs=2"] = _run(spec, work / "out-ray", work / "cache-ray", "--executor", "ray", "--jobs", "2")
        except ImportError:
            rows["ray jobs=2"] = {"skipped": "ray not installed"}
    first = rows[f"local jobs={last}"]["wall_s"]
    print("\n| run | wall | builds run | reused | held | other CPU load | note |\n|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if "skipped" in r:
            print(f"| {name} | - | - | - | - | - | {r['skipped']} |")
            continue
        note = ""
        if name == "rerun (cached)":
            note = f"{first / r['wall_s']:.0f}x faster than the first run; bundles byte-identical: {r['byte_identical']}"
        elif name == "one model changed":
            note = "rebuilt: " + ", ".join(r["rebuilt"])
        elif name.startswith("ray"):
            same = rows.get("local jobs=2", rows[f"local jobs={last}"])
            note = f"overhead vs local pool: {(r['wall_s'] - same['wall_s']) / max(r['built'], 1):+.1f} s per build"
        print(f"| {name} | {r['wall_s']:.1f} s | {r['built']} | {r['cached']} | {r['held']} | {r['other_load']:.2f} | {note} |")
    if args.json:
        save_json(args.json, rows)


if __name__ == "__main__":
    main()
