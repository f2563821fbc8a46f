"""Graph optimizers side by side: deploycomp vs onnxslim vs onnxsim vs onnxscript's optimizer.

Each real example model is optimized by four contestants in one run, all with the same
static input shape (the example's, e.g. YOLOv8n ``images`` 1x3x320x320):

* ``deploycomp`` - ``deploycomp.optimize(src, out, inputs={name: shape})`` (file in, file out);
* ``onnxslim``   - ``onnxslim.slim(src, input_shapes=["name:1,3,320,320"])``, then ``onnx.save``;
* ``onnxsim``    - ``onnx.load``, ``onnxsim.simplify(m, overwrite_input_shapes={name: shape})``,
  ``onnx.save`` (a failed self-check counts as an error);
* ``onnxscript`` - ``onnx.load``, the graph input's dims set to the shape in the proto,
  ``onnxscript.optimizer.optimize(m)``, ``onnx.save``.

Method
  * Every run gets a fresh copy of the original file in its own temporary folder, so no
    contestant can see another's (or its own previous run's) output.
  * Time = median wall time of 3 in-process runs of exactly the calls above, i.e. each
    tool's own load + optimize + save; the file copy is not timed. Tools are imported
    lazily, so the first run also pays the import; the median discards that outlier.
  * Nodes = nodes of the output's main graph (``graph.node``; subgraph nodes and
    initializers are not counted). onnxslim/onnxsim/onnxscript keep some constants as
    ``Constant`` nodes where others make them initializers, so two counts are reported:
    ``non-Constant / total``. The non-Constant count is the headline.
  * Fidelity = ONNX Runtime (CPU) on the optimized model vs on the original, 3 real samples
    (``deploycomp.sample_data``): max over samples and outputs of max|a-b| / max|a|.
  * A contestant that raises gets ``error: <one line>`` in its cell; the run goes on.

Usage (models are fetched into $DEPLOYCOMP_CACHE):
  python bench/optimize.py [--models yolov8n ppocr-det ...] [--json bench/results/optimize.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import deploycomp
from deploycomp.examples import EXAMPLES, fetch_example
from deploycomp.sample_data import samples_for

DEFAULT_MODELS = ("yolov8n", "ppocr-det", "ppocr-rec", "ppocr-cls")
RUNS, SAMPLES = 3, 3


def run_deploycomp(src: Path, dst: Path, name: str, shape: tuple[int, ...]) -> None:
    deploycomp.optimize(src, dst, inputs={name: shape})


def run_onnxslim(src: Path, dst: Path, name: str, shape: tuple[int, ...]) -> None:
    import onnxslim
    onnx.save(onnxslim.slim(str(src), input_shapes=[f"{name}:{','.join(map(str, shape))}"]), dst)


def run_onnxsim(src: Path, dst: Path, name: str, shape: tuple[int, ...]) -> None:
    import onnxsim
    model, ok = onnxsim.simplify(onnx.load(src), overwrite_input_shapes={name: list(shape)})
    if not ok:
        raise RuntimeError("onnxsim: simplified model failed its own check")
    onnx.save(model, dst)


def run_onnxscript(src: Path, dst: Path, name: str, shape: tuple[int, ...]) -> None:
    import onnxscript.optimizer
    model = onnx.load(src)
    (inp,) = [i for i in model.graph.input if i.name == name]
    inp.type.tensor_type.shape.ClearField("dim")
    for v in shape:
        inp.type.tensor_type.shape.dim.add().dim_value = v
    onnx.save(onnxscript.optimizer.optimize(model), dst)


CONTESTANTS = {"deploycomp": run_deploycomp, "onnxslim": run_onnxslim,
               "onnxsim": run_onnxsim, "onnxscript": run_onnxscript}


def node_counts(path: Path) -> dict:
    nodes = onnx.load(path, load_external_data=False).graph.node
    const = sum(n.op_type == "Constant" for n in nodes)
    return {"nodes": len(nodes) - const, "nodes_total": len(nodes), "constants": const}


def run_ort(path: Path, samples: list[dict]) -> list[list[np.ndarray]]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [sess.run(None, s) for s in samples]


def max_rel_err(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    worst = 0.0
    for r_outs, g_outs in zip(ref, got):
        if len(r_outs) != len(g_outs):
            raise ValueError(f"{len(g_outs)} outputs, the original has {len(r_outs)}")
        for a, b in zip(r_outs, g_outs):
            if a.shape != b.shape:
                raise ValueError(f"output shape {list(b.shape)}, the original gives {list(a.shape)}")
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            worst = max(worst, float(np.max(np.abs(a64 - b64)) / max(float(np.max(np.abs(a64))), 1e-30)))
    return worst


def one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:160] if text else type(e).__name__


def bench_model(name: str, tmp: Path) -> dict:
    ex = EXAMPLES[name]
    src = fetch_example(name)
    samples = samples_for(ex.inputs, ex.input_name, ex.shape)[:SAMPLES]
    ref = run_ort(src, samples)
    res = {"model": name, "shape": list(ex.shape), "samples": len(samples), "original": node_counts(src),
           "contestants": {}}
    for cname, fn in CONTESTANTS.items():
        entry: dict = {}
        times, out = [], None
        try:
            for i in range(RUNS):
                d = tmp / name / cname / f"run{i}"
                d.mkdir(parents=True)
                shutil.copyfile(src, d / src.name)
                out = d / "optimized.onnx"
                t0 = time.perf_counter()
                fn(d / src.name, out, ex.input_name, ex.shape)
                times.append(time.perf_counter() - t0)
            entry.update(times_s=times, time_s=statistics.median(times), **node_counts(out))
        except Exception as e:  # a crashing contestant is a result, not a reason to stop
            entry.update(error=one_line(e), traceback=traceback.format_exc())
            print(f"[{name}] {cname} failed:\n{entry['traceback']}", file=sys.stderr)
        if "error" not in entry:
            try:
                entry["max_rel_err"] = max_rel_err(ref, run_ort(out, samples))
            except Exception as e:
                entry["fidelity_error"] = one_line(e)
        res["contestants"][cname] = entry
        print(f"[{name}] {cname}: {cell(entry)}", file=sys.stderr)
    return res


def cell(e: dict) -> str:
    return f"error: {e['error']}" if "error" in e else f"{e['nodes']} / {e['nodes_total']} ({e['time_s']:.2f} s)"


def err_cell(e: dict) -> str:
    if "error" in e or "fidelity_error" in e:
        return "-" if "error" in e else f"error: {e['fidelity_error']}"
    return f"{e['max_rel_err']:.2e}"


def verdict(r: dict) -> str:
    c = r["contestants"]
    dc = c["deploycomp"]
    if "error" in dc:
        return f"- {r['model']}: deploycomp failed ({dc['error']})"
    ok = {k: v for k, v in c.items() if "error" not in v}
    others = {k: v for k, v in ok.items() if k != "deploycomp"}
    parts = []
    for key, label in (("nodes", "non-Constant nodes"), ("nodes_total", "total nodes")):
        if others:
            best = min(others, key=lambda k: others[k][key])
            yes = dc[key] <= others[best][key]
            parts.append(f"{label} {dc[key]} <= best other {others[best][key]} ({best}): {'yes' if yes else 'NO'}")
    fastest = min(ok, key=lambda k: ok[k]["time_s"])
    yes = dc["time_s"] <= 2 * ok[fastest]["time_s"]
    parts.append(f"time {dc['time_s']:.2f} s within 2x of fastest {ok[fastest]['time_s']:.2f} s ({fastest}): "
                 f"{'yes' if yes else 'NO'}")
    return f"- {r['model']}: " + "; ".join(parts)


def markdown(results: list[dict]) -> str:
    names = list(CONTESTANTS)
    lines = ["cells: non-Constant / total nodes of the main graph (median wall time of 3 runs, incl. load + save)", "",
             "| model | " + " | ".join(f"{n} nodes (time s)" if n == "deploycomp" else n for n in names)
             + " | max rel err (deploycomp) |",
             "|---|" + "---:|" * len(names) + "---:|"]
    for r in results:
        o = r["original"]
        label = f"{r['model']} {'x'.join(map(str, r['shape']))} (orig {o['nodes']} / {o['nodes_total']})"
        c = r["contestants"]
        lines.append(f"| {label} | " + " | ".join(cell(c[n]) for n in names) + f" | {err_cell(c['deploycomp'])} |")
    lines += ["", *(verdict(r) for r in results), "",
              f"fidelity of every contestant (max rel err vs the original, ORT CPU, {SAMPLES} real samples):", "",
              "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {r['model']} | " + " | ".join(err_cell(r["contestants"][n]) for n in names) + " |" for r in results]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="names, space- or comma-separated")
    ap.add_argument("--json", type=Path, help="also write the raw results here (e.g. bench/results/optimize.json)")
    args = ap.parse_args()
    models = [m for arg in args.models for m in arg.split(",") if m]
    unknown = [m for m in models if m not in EXAMPLES]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(EXAMPLES)}")
    versions = {p: md.version(p) for p in ("deploycomp", "onnxslim", "onnxsim", "onnxscript", "onnx", "onnxruntime")}
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as tmp:
        results = [bench_model(m, Path(tmp)) for m in models]
    print(" | ".join(f"{k} {v}" for k, v in versions.items()) + "\n\n" + markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"versions": versions, "results": results}, indent=2))


if __name__ == "__main__":
    main()
