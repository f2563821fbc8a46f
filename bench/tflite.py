"""deploycomp's TFLite lowering side by side with onnx2tf, in one run, on the real models.

For each example model (YOLOv8n 1x3x320x320, PP-OCRv4 det 1x3x640x640, rec 1x3x48x320,
cls 1x3x48x192) and precision (fp32, fp16, int8):

* ``ours``    - conversion: ``deploycomp.pipeline.prepare`` (load + optimize) and the TFLite
  lowering, timed alone (what onnx2tf does); build: the whole ``deploycomp.build`` for
  ``raspberry-pi-5`` (also validates in LiteRT; for int8 also calibrates on the built-in
  calibration set and searches the float layers).
* ``onnx2tf`` - onnx2tf 1.29.24 in its own venv (``bench/onnx2tf_side.py``; TensorFlow's
  converter path), int8 = its ``integer_quant`` (float I/O) calibrated on the SAME samples.

Both ``.tflite`` files then run in LiteRT's interpreter (XNNPACK, 2 threads) on the same
evaluation samples (bench/int8.py's larger set, ``eval_sets.evaluation_samples``: the built-in
validation samples plus 18 YOLO images, 11 det images, 55 text lines; disjoint from
calibration; latency is timed on the first sample), interleaved in rotated rounds
with ONNX Runtime fp32 (2 threads); ratio = median over rounds of block medians vs ORT. Task
fidelity vs ORT fp32 on the original model uses bench/int8.py's metrics (YOLO detection recall,
det mask IoU, rec sequence agreement, cls top-1). TRANSPOSE ops are counted in each file.

Usage: python bench/tflite.py [--models ...] [--precisions fp32 fp16 int8] [--o2t-python PATH]
Writes bench/results/tflite.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deploycomp.examples import EXAMPLES, fetch_example
from deploycomp.sample_data import calibration_samples_for

from eval_sets import evaluation_samples  # bench/ is on sys.path when run as a script
from int8 import fidelity
from save import save_json, save_table
from timing import cpu_snapshot, other_load, time_block

THREADS = 2
HERE = Path(__file__).resolve().parent


class LiteRT:
    """A .tflite in LiteRT, fed ONNX-layout arrays: inputs and its single output permuted as needed."""

    def __init__(self, path: Path, onnx_in_shape: tuple, onnx_out_shape: tuple):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=THREADS)
        self.it.allocate_tensors()
        (self.inp,), self.out = self.it.get_input_details(), self.it.get_output_details()[0]
        self.in_perm = _perm_to(onnx_in_shape, tuple(self.inp["shape"]))
        self.out_perm = np.argsort(_perm_to(onnx_out_shape, tuple(self.out["shape"])))
        self.transposes = sum(op["op_name"] == "TRANSPOSE" for op in self.it._get_ops_details())

    def run(self, feeds: dict) -> np.ndarray:
        x = next(iter(feeds.values()))
        self.it.set_tensor(self.inp["index"], np.ascontiguousarray(np.transpose(x, self.in_perm)))
        self.it.invoke()
        return np.transpose(self.it.get_tensor(self.out["index"]), self.out_perm)


def _perm_to(onnx_shape: tuple, stored: tuple) -> tuple:
    """The perm p with onnx_shape[p] == stored (identity, NHWC, or last-two swapped first)."""
    rank = len(onnx_shape)
    candidates = [tuple(range(rank)), (0, *range(2, rank), 1), (*range(rank - 2), rank - 1, rank - 2)]
    for p in candidates:
        if tuple(onnx_shape[i] for i in p) == tuple(stored):
            return p
    raise ValueError(f"cannot map stored shape {stored} to ONNX shape {onnx_shape}")


def ours(name: str, precision: str, wd: Path) -> dict:
    import deploycomp
    from deploycomp.backends.tflite.lowering import Lowering
    from deploycomp.pipeline import prepare
    from deploycomp.targets import load_target

    ex, model = EXAMPLES[name], fetch_example(name)
    res: dict = {"ok": False}
    try:
        if precision != "int8":
            t = time.perf_counter()
            prep = prepare(model, load_target("raspberry-pi-5"), [(ex.input_name, ex.shape)])
            Lowering(prep.model, precision).run()
            res["convert_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        runner = deploycomp.build(model, wd / f"ours-{precision}", target="raspberry-pi-5", precision=precision,
                                  inputs={ex.input_name: ex.shape}, sample_kind=ex.inputs, no_fail=True)
        res["build_seconds"] = time.perf_counter() - t
        res.setdefault("convert_seconds", res["build_seconds"])
        res.update(ok=True, tflite=str(wd / f"ours-{precision}" / "model.tflite"),
                   validation_ok=runner.manifest["validation"]["ok"],
                   executed=runner.manifest["backend"]["lowered"].get("executed_precision", precision))
        if precision == "int8":
            res["float_layers"] = len(runner.manifest["quantization"]["float_layers"])
    except Exception as e:  # noqa: BLE001 - reported in the table
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return res


def onnx2tf(name: str, precision: str, wd: Path, python: str) -> dict:
    ex, model = EXAMPLES[name], fetch_example(name)
    cmd = [python, str(HERE / "onnx2tf_side.py"), "--model", str(model), "--precision", precision,
           "--shape", f"{ex.input_name}:{'x'.join(map(str, ex.shape))}", "--out", str(wd / f"o2t-{name}-{precision}")]
    if precision == "int8":
        calib = wd / f"calib-{name}.npz"
        samples = calibration_samples_for(ex.inputs, ex.input_name, ex.shape)
        np.savez(calib, **{ex.input_name: np.concatenate([s[ex.input_name] for s in samples])})
        cmd += ["--calibration", str(calib)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    out = json.loads(lines[-1])
    return {"ok": bool(out["ok"]), "convert_seconds": out["seconds"], "tflite": out.get("tflite"),
            "error": out.get("error")}


def evaluate(name: str, entries: dict, rounds: int, block_ms: float) -> dict:
    from deploycomp.backends.onnxruntime import ORTRunner

    ex, model = EXAMPLES[name], fetch_example(name)
    evals = evaluation_samples(ex.inputs, ex.input_name, ex.shape)
    ref = ORTRunner(model, threads=THREADS)
    first = lambda feeds: next(iter(ref.run(feeds).values()))  # noqa: E731
    refs = [first(s) for s in evals]
    runners = {"ort-fp32": first}
    for key, e in entries.items():
        if e["ok"]:
            r = LiteRT(Path(e["tflite"]), ex.shape, refs[0].shape)
            runners[key] = r.run
            e.update(bytes=Path(e["tflite"]).stat().st_size, transposes=r.transposes,
                     fidelity=fidelity(name, refs, [r.run(s) for s in evals]))
    feeds = evals[0]
    warm = {k: statistics.median(time_block(run, feeds, 3)) for k, run in runners.items()}
    k = max(2, round(block_ms / max(warm.values())))
    keys = list(runners)
    times, blocks = {key: [] for key in keys}, {key: [] for key in keys}
    snap = cpu_snapshot()
    for rnd in range(rounds):
        for key in keys[rnd % len(keys):] + keys[: rnd % len(keys)]:
            t = time_block(runners[key], feeds, k)
            times[key] += t
            blocks[key].append(statistics.median(t))
    load = other_load(snap, cpu_snapshot())
    for key in keys:
        if key == "ort-fp32":
            continue
        ratios = [b / o for b, o in zip(blocks[key], blocks["ort-fp32"])]
        entries[key]["latency"] = {"median_ms": statistics.median(times[key]), "ratio": statistics.median(ratios),
                                   "ratio_p10": float(np.percentile(ratios, 10)),
                                   "ratio_p90": float(np.percentile(ratios, 90))}
    entries["_ref"] = {"median_ms": statistics.median(times["ort-fp32"]), "other_load": load, "k": k,
                       "rounds": rounds, "eval_samples": len(evals), "onnx_bytes": model.stat().st_size}
    return entries


def markdown(results: dict) -> str:
    lines = ["| model | precision | tool | convert s | build s | size MB | TRANSPOSE | latency vs ORT fp32 | task fidelity | min cosine |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for name, entries in results.items():
        ref = entries.get("_ref", {})
        for key, e in entries.items():
            if key.startswith("_"):
                continue
            tool, precision = key.split(":")
            if not e["ok"]:
                lines.append(f"| {name} | {precision} | {tool} | FAILED: {e.get('error')} | | | | | | |")
                continue
            lat = e.get("latency", {})
            build = f"{e['build_seconds']:.1f}" if "build_seconds" in e else "-"
            lines.append(
                f"| {name} | {precision} | {tool} | {e['convert_seconds']:.1f} | {build} | {e['bytes'] / 1e6:.2f} "
                f"| {e['transposes']} | {lat.get('ratio', float('nan')):.2f} ({lat.get('ratio_p10', 0):.2f}-"
                f"{lat.get('ratio_p90', 0):.2f}) | {e['fidelity']['text']} | {e['fidelity']['min_cosine']:.4f} |")
        if ref:
            lines.append(f"| {name} | | ORT fp32 | | | {ref['onnx_bytes'] / 1e6:.2f} | | {ref['median_ms']:.1f} ms"
                         f" (other load {ref['other_load']:.0%}) | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(EXAMPLES)[:4])
    ap.add_argument("--precisions", nargs="*", default=["fp32", "fp16", "int8"])
    ap.add_argument("--o2t-python", default="/work/venv-o2t/bin/python")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--block-ms", type=float, default=400)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "tflite.json")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        for name in args.models:
            entries = {}
            for precision in args.precisions:
                entries[f"ours:{precision}"] = ours(name, precision, wd / name)
                entries[f"onnx2tf:{precision}"] = onnx2tf(name, precision, wd, args.o2t_python)
                print(name, precision, {k: v.get("convert_seconds", v.get("error")) for k, v in entries.items()
                                        if k.endswith(precision)}, file=sys.stderr, flush=True)
            results[name] = evaluate(name, entries, args.rounds, args.block_ms)
            save_json(args.json, results)
    save_table(args.json, markdown(results))


if __name__ == "__main__":
    main()
