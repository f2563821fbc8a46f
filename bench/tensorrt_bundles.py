"""TensorRT bundles for the real models, without a GPU: the issue's matrix, measured.

For YOLOv8n, PP-OCRv4 det/rec/cls x (jetson-orin-nano, jetson-agx-orin, nvidia-t4) x
(fp16, int8): ``deploycomp.build`` (``no_fail`` so that a missed budget is reported, not
hidden), then the bundle's typed ONNX is parsed again by NVIDIA's parser (tensorrt-rtx)
and run in onnxruntime on the evaluation samples against ORT fp32 on the original model:
cosine and the task metrics of bench/int8.py. Engine latency needs a GPU and is not
measured here; the roofline estimate from the target profile is shown instead.

Usage: python bench/tensorrt_bundles.py [--models ...] [--targets ...] [--precisions ...]
Writes bench/results/tensorrt_bundles.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from deploycomp.examples import EXAMPLES, fetch_example
from deploycomp.sample_data import samples_for

from int8 import fidelity  # bench/ is on sys.path when run as a script
from save import save_json, save_table

HERE = Path(__file__).resolve().parent


def one(name: str, target: str, precision: str, wd: Path) -> dict:
    import onnx

    import deploycomp
    from deploycomp.backends.onnxruntime import ORTRunner
    from deploycomp.backends.tensorrt import parser as nvparser

    ex, model = EXAMPLES[name], fetch_example(name)
    out = wd / f"{name}-{target}-{precision}"
    t = time.perf_counter()
    try:
        runner = deploycomp.build(model, out, target=target, precision=precision, inputs={ex.input_name: ex.shape},
                                  sample_kind=ex.inputs, no_fail=True)
    except Exception as e:  # noqa: BLE001 - reported in the table
        return {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
    seconds = time.perf_counter() - t
    m = runner.manifest
    parsed = nvparser.parse_onnx(onnx.load(out / "model.onnx").SerializeToString())
    evals = samples_for(ex.inputs, ex.input_name, ex.shape)
    # QDQ as written (basic optimizations only), as the build's own validation runs it:
    # TensorRT's int8 is that arithmetic, ORT's fused int8 kernels are not
    ref, got = ORTRunner(model), ORTRunner(out / "model.onnx", arithmetic="exact_qdq")
    first = lambda r, s: next(iter(r.run(s).values()))  # noqa: E731
    fid = fidelity(name, [first(ref, s) for s in evals], [first(got, s) for s in evals])
    q = m.get("quantization") or {}
    return {"ok": True, "seconds": seconds, "validation_ok": m["validation"]["ok"],
            "parser": parsed.parser if parsed else None, "parsed": bool(parsed and parsed.ok),
            "fidelity": fid, "bytes": (out / "model.onnx").stat().st_size,
            "float_layers": len(q.get("float_layers", [])) if q else None,
            "roofline_ms": m["validation"]["latency_estimate"]["estimate_ms"],
            "dla": json.loads((out / "build_plan.json").read_text())["dla_core"]}


def markdown(results: dict) -> str:
    lines = ["| model | target | precision | parses (NVIDIA) | task fidelity vs fp32 | min cosine | budget | float layers | ONNX MB | build s | roofline ms | DLA |",
             "|---|---|---|---|---|---:|---|---:|---:|---:|---:|---|"]
    for key, r in results.items():
        name, target, precision = key.split("|")
        if not r["ok"]:
            lines.append(f"| {name} | {target} | {precision} | FAILED: {r['error']} | | | | | | | | |")
            continue
        lines.append(f"| {name} | {target} | {precision} | {'yes' if r['parsed'] else 'NO'} | {r['fidelity']['text']} "
                     f"| {r['fidelity']['min_cosine']:.4f} | {'met' if r['validation_ok'] else 'missed'} "
                     f"| {r['float_layers'] if r['float_layers'] is not None else '-'} | {r['bytes'] / 1e6:.2f} "
                     f"| {r['seconds']:.0f} | {r['roofline_ms']:.2f} | {'core 0' if r['dla'] is not None else '-'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(EXAMPLES)[:4])
    ap.add_argument("--targets", nargs="*", default=["jetson-orin-nano", "jetson-agx-orin", "nvidia-t4"])
    ap.add_argument("--precisions", nargs="*", default=["fp16", "int8"])
    ap.add_argument("--json", type=Path, default=HERE / "results" / "tensorrt_bundles.json")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for target in args.targets:
                for precision in args.precisions:
                    results[f"{name}|{target}|{precision}"] = one(name, target, precision, Path(tmp))
                    print(name, target, precision, results[f"{name}|{target}|{precision}"].get("fidelity", {}).get("text"),
                          flush=True)
                    save_json(args.json, results)
    save_table(args.json, markdown(results))


if __name__ == "__main__":
    main()
