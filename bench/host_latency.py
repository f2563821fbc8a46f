"""Host CPU latency: ONNX Runtime fp32 on the original model vs deploycomp's ``host`` bundle.

For each real example model this builds ``host`` bundles (OpenVINO IR, fp32 and fp16, and
bf16 where the host profile offers it) in a temporary folder, then times the runners side
by side in one process:

* ``ort``  - ONNX Runtime (CPU provider, fp32) on the *original* ONNX file: the baseline;
* ``fp32`` / ``fp16`` / ``bf16`` - each bundle's ``model.xml`` in OpenVINO, executed as the
  bundle says (an fp16 bundle executes f32 on a CPU without native f16, or where f32 was
  measured faster at build: "executed precision" column).

Method
  * Same thread budget: ORT ``intra_op_num_threads = N`` and OpenVINO
    ``INFERENCE_NUM_THREADS = N`` (default N = os.cpu_count()). OpenVINO is opened with
    ``OpenVINORunner`` directly (not ``deploycomp.load``) so the thread count can be passed.
  * Real inputs: the first sample from ``deploycomp.sample_data`` (photo / rendered text),
    the same array for every runner and every call.
  * Warm-up, then R rounds; in each round every runner, in an order rotated per round,
    runs K back-to-back inferences (each timed alone). K is chosen from the warm-up so a
    block lasts ~``--block-ms``. Interleaving puts any drift (frequency scaling, a noisy
    neighbour, other tests on the box) on all runners alike instead of on whichever ran last.
  * Latency = median per-inference ms over all R*K calls, with p10-p90 as the spread.
    Ratio = median over rounds of (bundle block median / ORT block median in the same round):
    a paired estimate that cancels drift between rounds. Below 1 the bundle is faster;
    speedup = 1 / ratio.
  * Also recorded: bundle build wall time (includes deploycomp's own validation and latency
    measurement), artifact bytes vs the ONNX file, and the CPU share used by *other*
    processes while timing (/proc/stat minus our own CPU time): on a shared box a high value
    means the spreads are wide and only the ratios are worth quoting.

Reading it: the ratio is the result; one whose p10-p90 (details table) straddles 1.0 means
"no measurable difference" here. Quote ms only with the CPU and threads printed above it.

Usage (models are fetched into $DEPLOYCOMP_CACHE):
  python bench/host_latency.py [--models yolov8n,ppocr-det,ppocr-rec,ppocr-cls]
                               [--threads N] [--rounds R] [--json bench/results/host_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import deploycomp
from deploycomp.backends.onnxruntime import ORTRunner
from deploycomp.backends.openvino.adapter import OpenVINORunner
from deploycomp.bundle import read_manifest
from deploycomp.examples import EXAMPLES, fetch_example
from deploycomp.sample_data import samples_for

from timing import cpu_snapshot, other_load, time_block  # bench/ is on sys.path when run as a script

DEFAULT_MODELS = ("yolov8n", "ppocr-det", "ppocr-rec", "ppocr-cls")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")] \
        if info.is_file() else []
    return names[0] if names else platform.processor() or platform.machine()


def host_precisions() -> list[str]:
    """fp32 and fp16, and bf16 where the host profile offers it (CPUs with AMX or AVX512-BF16)."""
    from deploycomp.targets import load_target

    return ["fp32", "fp16"] + (["bf16"] if "bf16" in load_target("host").precisions else [])


def build_bundle(model: Path, ex, precision: str, out: Path) -> dict:
    t0 = time.perf_counter()
    runner = deploycomp.build(model, out, target="host", precision=precision, inputs={ex.input_name: ex.shape},
                              sample_kind=ex.inputs, force=True, no_fail=True)  # a missed budget is a result
    seconds = time.perf_counter() - t0
    del runner  # its OpenVINO model was compiled with default threads; we open our own
    manifest = read_manifest(out)
    lowered = manifest["backend"]["lowered"]
    return {"xml": out / lowered["xml"], "device": lowered["device"], "precision": lowered["precision"],
            "execute": lowered.get("execute"),
            "build_s": seconds, "bytes": sum(a["bytes"] for a in manifest["artifacts"]),
            "ok": manifest["validation"]["ok"],
            "min_cosine": min((o["cosine"] for o in manifest["validation"]["outputs"].values() if o.get("cosine") is not None),
                              default=None),
            "resolved_from": manifest["target"]["resolved_from"]}


def bench_model(name: str, threads: int, rounds: int, block_ms: float, warmup: int, tmp: Path) -> dict:
    ex = EXAMPLES[name]
    model = fetch_example(name)
    feeds = samples_for(ex.inputs, ex.input_name, ex.shape)[0]
    print(f"[{name}] building host bundles ...", flush=True)
    bundles = {p: build_bundle(model, ex, p, tmp / f"{name}-{p}") for p in host_precisions()}
    runners = {"ort": ORTRunner(model, threads=threads)}
    for p, b in bundles.items():  # executed as the bundle says (an fp16 bundle may execute f32)
        runners[p] = OpenVINORunner(b["xml"], b["device"], b["precision"], threads=threads, execute=b["execute"])

    warm = {}
    for key, r in runners.items():  # >= `warmup` calls and >= 1 s each, so lazy init and caches settle
        t0, ts = time.perf_counter(), []
        while len(ts) < warmup or time.perf_counter() - t0 < 1.0:
            ts += time_block(r.run, feeds, 1)
        warm[key] = statistics.median(ts[len(ts) // 2:])
    k = max(2, round(block_ms / max(warm.values())))  # same K for all: equal calls per block
    print(f"[{name}] warm-up ms {', '.join(f'{k_}={v:.1f}' for k_, v in warm.items())}; "
          f"{rounds} rounds x {k} calls", flush=True)

    keys = list(runners)
    times: dict[str, list[float]] = {key: [] for key in keys}
    block_median: dict[str, list[float]] = {key: [] for key in keys}
    snap = cpu_snapshot()
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[: r % len(keys)]
        for key in order:
            t = time_block(runners[key].run, feeds, k)
            times[key] += t
            block_median[key].append(statistics.median(t))
    load = other_load(snap, cpu_snapshot())

    result = {"model": name, "shape": list(ex.shape), "onnx_bytes": model.stat().st_size, "k": k, "other_load": load, "runners": {}}
    for key in keys:
        ts = times[key]
        entry = {"median_ms": statistics.median(ts), "p10_ms": pct(ts, 10), "p90_ms": pct(ts, 90), "calls": len(ts),
                 "executed_precision": runners[key].info["executed_precision"]}
        if key != "ort":
            ratios = [b / o for b, o in zip(block_median[key], block_median["ort"])]
            entry.update(ratio=statistics.median(ratios), ratio_p10=pct(ratios, 10), ratio_p90=pct(ratios, 90),
                         build_s=bundles[key]["build_s"], artifact_bytes=bundles[key]["bytes"],
                         budget_met=bundles[key]["ok"], min_cosine=bundles[key]["min_cosine"],
                         layer_precisions=runners[key].info.get("compute_layer_precisions"))
            entry["speedup"] = 1 / entry["ratio"]
        result["runners"][key] = entry
    result["resolved_from"] = bundles["fp32"]["resolved_from"]
    del runners
    return result


def mb(n: int) -> str:
    return f"{n / 1e6:.{1 if n >= 1e7 else 2}f} MB"


def markdown(results: list[dict]) -> str:
    precs = [p for p in ("fp32", "fp16", "bf16") if any(p in r["runners"] for r in results)]
    lines = ["| model | ORT fp32 ms | " + " | ".join(f"deploycomp {p} ms (ratio)" for p in precs)
             + " | size ONNX -> IR fp16 | executed precision (" + " / ".join(precs) + " bundle) |",
             "|---|---:|" + "---:|" * len(precs) + "---:|---|"]
    for res in results:
        o, h = res["runners"]["ort"], res["runners"]["fp16"]
        cells = [(f"{e['median_ms']:.2f} ({e['ratio']:.2f}x)" + ("" if e.get("budget_met", True) else
                  f", missed its budget: cosine {e['min_cosine']:.4f}")) if (e := res["runners"].get(p)) else ""
                 for p in precs]
        lines.append(f"| {res['model']} {'x'.join(map(str, res['shape']))} | {o['median_ms']:.2f} | "
                     + " | ".join(cells) + f" | {mb(res['onnx_bytes'])} -> {mb(h['artifact_bytes'])} | "
                     + " / ".join(res["runners"][p]["executed_precision"] for p in precs if p in res["runners"]) + " |")
    lines += ["", "| model | runner | p10-p90 ms | ratio p10-p90 | speedup | build s | artifact | other CPU load |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for key, e in res["runners"].items():
            extra = (f"{e['ratio_p10']:.2f}-{e['ratio_p90']:.2f} | {e['speedup']:.2f}x | {e['build_s']:.1f} "
                     f"| {mb(e['artifact_bytes'])}" if key != "ort" else f"- | 1.00x | - | {mb(res['onnx_bytes'])}")
            load = f"{res['other_load']:.0%}" if key == "ort" else ""
            lines.append(f"| {res['model']} | {key} | {e['p10_ms']:.2f}-{e['p90_ms']:.2f} | {extra} | {load} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block-ms", type=float, default=300.0, help="target duration of one runner's block")
    ap.add_argument("--warmup", type=int, default=5, help="minimum warm-up calls per runner (and >= 1 s)")
    ap.add_argument("--json", type=Path, help="also write the raw results here (e.g. bench/results/...)")
    args = ap.parse_args()

    import onnxruntime
    import openvino

    env = {"cpu": cpu_model(), "threads": args.threads, "cpu_count": os.cpu_count(), "rounds": args.rounds,
           "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(), "python": platform.python_version()}
    results = []
    with tempfile.TemporaryDirectory(prefix="dc-bench-") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            results.append(bench_model(name, args.threads, args.rounds, args.block_ms, args.warmup, Path(tmp)))
    env["host_profile"] = results[0]["resolved_from"] if results else None

    print(f"\nCPU: {env['cpu']} | threads {env['threads']} (ORT intra_op = OpenVINO INFERENCE_NUM_THREADS) "
          f"| ORT {env['onnxruntime']} | OpenVINO {env['openvino']} | host -> {env['host_profile']} "
          f"| {env['rounds']} interleaved rounds; ratio = bundle / ORT, lower is better\n")
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "results": results}, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
