"""int8 post-training quantization side by side: deploycomp vs ONNX Runtime vs NNCF.

For each real example model (YOLOv8n 1x3x320x320, PP-OCRv4 det 1x3x640x640, rec 1x3x48x320,
cls 1x3x48x192) one run quantizes with every method on the SAME calibration set
(``deploycomp.sample_data.calibration_samples_for``) and judges them on the SAME evaluation
set (``bench/eval_sets.py``: the built-in validation samples plus more real inputs of each
kind, 18 YOLO images, 11 det images, 55 text lines; disjoint from calibration):

* ``ours``        - ``deploycomp.build(target="host", precision="int8", sample_kind=..., no_fail=True)``;
  OpenVINO IR with QDQ. Note: deploycomp holds the last min(4, n//4) calibration samples
  out for its layer-sensitivity search, so it fits ranges on fewer samples.
* ``ort-minmax`` / ``ort-percentile`` - ``onnxruntime.quantization.quantize_static``: QDQ,
  per-channel, activations QUInt8, weights QInt8, after static input shape, opset >= 13
  (``onnx.version_converter``, PP-OCR is opset 11/12) and ``quant_pre_process``; runs in ORT CPU.
  ``ort-minmax-fphead`` (YOLO only) also leaves the Detect head (``/model.22/*``) in float.
* ``nncf``        - ``nncf.quantize`` (default settings) on ``ov.convert_model(onnx, input=[shape])``.
* reference       - ONNX Runtime fp32 (CPU) on the original model.

Each (model, method) quantization runs in its own subprocess (``--only METHOD --model NAME``)
so imports and peaks don't pollute each other; it reports wall time of the quantization step
(ours: the whole ``build`` call, which also validates and times the bundle, plus the manifest's
``measured.calibration_seconds``), the artifact bytes, RSS just before the step and the peak RSS
(VmHWM) of the process. For ours it is repeated with the calibration set doubled (the same
samples twice, via an .npz) to check that peak memory stays flat as the set grows.

Metrics, on the evaluation set, against the fp32 reference outputs:
* YOLO (output0 [1,22,2100] = cx,cy,w,h + 18 class scores): detections = max class score
  > 0.25 after per-class NMS at IoU 0.45; recall = share of fp32 detections matched one to one
  (greedy, by score) by an int8 detection of the same class with IoU > 0.5; precision likewise.
* OCR det (sigmoid [1,1,640,640]): IoU of maps binarised at 0.3 (mean over samples).
* OCR rec (softmax [1,T,6625]): CTC greedy decode (argmax, collapse repeats, drop blank 0);
  seq-agree = share of samples decoding to fp32's exact index sequence; char agreement =
  mean of 1 - edit distance / max(len).
* cls ([1,2]): top-1 agreement. The JSON also keeps the raw-output cosine.
* Latency: every runner on 2 threads (ORT intra_op_num_threads=2, OpenVINO
  INFERENCE_NUM_THREADS=2 via ``OpenVINORunner``; int8 IRs with the f32 precision hint),
  interleaved with the fp32 reference in rotated rounds of K calls on one real sample;
  ratio = median over rounds of (method block median / ORT fp32 block median). < 1 is faster.

Usage: python bench/int8.py [--models yolov8n ppocr-det ppocr-rec ppocr-cls] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from deploycomp.examples import EXAMPLES, fetch_example
from deploycomp.sample_data import calibration_samples_for

from eval_sets import evaluation_samples  # bench/ is on sys.path when run as a script
from timing import cpu_snapshot, other_load, time_block

DEFAULT_MODELS = ("yolov8n", "ppocr-det", "ppocr-rec", "ppocr-cls")
THREADS = 2


def methods_for(model: str) -> list[str]:
    return ["ours", "ort-minmax", "ort-percentile"] + (["ort-minmax-fphead"] if model == "yolov8n" else []) + ["nncf"]


def rss_mb(field: str) -> float:  # VmRSS (now) or VmHWM (peak) of this process
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else '(no message)'}"[:300]


# ---------------------------------------------------------------- quantization (child process)
def quant_ours(ex, model: Path, wd: Path, calib_npz: Path | None) -> dict:
    import deploycomp

    kw = {"calibration": calib_npz} if calib_npz else {}  # else build makes the same built-in set itself
    out, rss0, t0 = wd / f"{ex.name}-ours{'2x' if calib_npz else ''}", rss_mb("VmRSS"), time.perf_counter()
    runner = deploycomp.build(model, out, target="host", precision="int8", inputs={ex.input_name: ex.shape},
                              sample_kind=ex.inputs, force=True, no_fail=True, **kw)
    seconds, m = time.perf_counter() - t0, runner.manifest
    q = m["quantization"]
    return {"seconds": seconds, "rss_before_mb": rss0, "artifacts": [str(out / a["path"]) for a in m["artifacts"]],
            "xml": str(out / m["backend"]["lowered"]["xml"]), "calibration_seconds": m.get("measured", {}).get("calibration_seconds", q.get("calibration_seconds")),
            "calibration_samples": q.get("calibration_samples"), "float_layers": q.get("float_layers"),
            "executed_precision": m["backend"]["runtime"]["executed_precision"]}


def quant_ort(ex, model: Path, wd: Path, calib, method: str) -> dict:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    rss0, t0, notes = rss_mb("VmRSS"), time.perf_counter(), []
    m = onnx.load(str(model))
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        m = version_converter.convert_version(m, 17)
        notes.append(f"opset {opset} -> 17")
    for d, v in zip(m.graph.input[0].type.tensor_type.shape.dim, ex.shape):
        d.Clear()
        d.dim_value = v
    for o in m.graph.output:  # symbolic output dims would clash with the now static input
        for d in o.type.tensor_type.shape.dim:
            d.Clear()
    src, pre = wd / f"{ex.name}-{method}-in.onnx", wd / f"{ex.name}-{method}-pre.onnx"
    onnx.save(m, str(src))
    for skip_symbolic in (False, True):  # ORT's symbolic shape inference trips on some Paddle exports
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic)
            break
        except Exception as e:  # noqa: BLE001 - record, retry without it, else quantize the unprocessed model
            notes.append(f"quant_pre_process(skip_symbolic_shape={skip_symbolic}) failed: {one_line(e)}")
    else:
        pre = src
    exclude = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith("/model.22/")] \
        if method.endswith("fphead") else []
    out = wd / f"{ex.name}-{method}.onnx"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                    calibrate_method=CalibrationMethod.Percentile if "percentile" in method else CalibrationMethod.MinMax)
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": rss0, "artifacts": [str(out)], "onnx": str(out),
            "notes": notes + ([f"{len(exclude)} head nodes kept float"] if exclude else [])}


def quant_nncf(ex, model: Path, wd: Path, calib) -> dict:
    import nncf
    import openvino as ov

    name = ex.input_name
    rss0, t0 = rss_mb("VmRSS"), time.perf_counter()
    q = nncf.quantize(ov.convert_model(str(model), input=[ex.shape]), nncf.Dataset(calib, lambda s: s[name]))
    xml = wd / f"{ex.name}-nncf.xml"
    ov.save_model(q, str(xml), compress_to_fp16=False)  # int8 weights stay int8, as in ours
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": rss0, "xml": str(xml),
            "artifacts": [str(xml), str(xml.with_suffix(".bin"))], "nncf": nncf.__version__}


def child(method: str, name: str, wd: Path) -> None:
    ex, model = EXAMPLES[name], fetch_example(name)
    calib = calibration_samples_for(ex.inputs, ex.input_name, ex.shape)
    n_calib = len(calib) * (2 if method == "ours2x" else 1)
    try:
        if method.startswith("ours"):
            npz = wd / f"{name}-calib2x.npz" if method == "ours2x" else None
            if npz:  # the same calibration samples twice, handed over as an .npz
                np.savez(npz, **{ex.input_name: np.concatenate([s[ex.input_name] for s in calib] * 2)})
            del calib  # not held by this process during the build: only the build's own memory counts
            res = quant_ours(ex, model, wd, npz)
        elif method.startswith("ort"):
            res = quant_ort(ex, model, wd, calib, method)
        else:
            res = quant_nncf(ex, model, wd, calib)
        res.update(ok=True, bytes=sum(os.path.getsize(p) for p in res["artifacts"]))
    except Exception as e:  # noqa: BLE001
        res = {"ok": False, "error": one_line(e),
               "traceback": traceback.format_exc()}
    res.update(peak_rss_mb=rss_mb("VmHWM"), calibration_set=n_calib)
    (wd / f"{name}-{method}.json").write_text(json.dumps(res, indent=1))


def run_child(method: str, name: str, wd: Path) -> dict:
    print(f"[{name}] quantize: {method} ...", flush=True)
    cmd = [sys.executable, __file__, "--only", method, "--model", name, "--workdir", str(wd)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = wd / f"{name}-{method}.json"
    if out.is_file():
        res = json.loads(out.read_text())
    else:
        res = {"ok": False, "error": f"child exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}",
               "stderr_tail": proc.stderr[-3000:]}
    print(f"[{name}]   {method}: " + (f"{res['seconds']:.1f} s, peak {res['peak_rss_mb']:.0f} MB" if res["ok"]
                                      else f"FAILED {res['error']}"), flush=True)
    return res


# ---------------------------------------------------------------- task metrics
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # xyxy [N,4] x [M,4] -> [N,M]
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def yolo_detections(out: np.ndarray, conf=0.25, iou=0.45):
    pred = out[0].T  # [2100, 22]
    scores, cls = pred[:, 4:].max(1), pred[:, 4:].argmax(1)
    keep = scores > conf
    xywh, scores, cls = pred[keep, :4], scores[keep], cls[keep]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    kept = []
    for c in np.unique(cls):  # per-class greedy NMS
        idx = np.where(cls == c)[0][np.argsort(-scores[cls == c])]
        while len(idx):
            kept.append(idx[0])
            idx = idx[1:][box_iou(boxes[idx[:1]], boxes[idx[1:]])[0] <= iou]
    kept = sorted(kept, key=lambda i: -scores[i])
    return boxes[kept], cls[kept]


def yolo_match(ref, test) -> int:
    (rb, rc), (tb, tc) = ref, test
    used, hits = set(), 0
    ious = box_iou(rb, tb) if len(rb) and len(tb) else np.zeros((len(rb), len(tb)))
    for i in range(len(rb)):
        cands = [j for j in np.argsort(-ious[i]) if j not in used and tc[j] == rc[i] and ious[i, j] > 0.5]
        if cands:
            used.add(cands[0])
            hits += 1
    return hits


def ctc_decode(probs: np.ndarray) -> list[int]:
    ids = probs[0].argmax(-1)
    return [int(c) for i, c in enumerate(ids) if c != 0 and (i == 0 or c != ids[i - 1])]


def edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def fidelity(name: str, refs: list[np.ndarray], outs: list[np.ndarray]) -> dict:
    cos = [float(np.dot(r.ravel(), o.ravel()) / (np.linalg.norm(r) * np.linalg.norm(o) + 1e-12)) for r, o in zip(refs, outs)]
    res: dict = {"min_cosine": min(cos)}
    if name == "yolov8n":
        ref, test = [yolo_detections(r) for r in refs], [yolo_detections(o) for o in outs]
        hits = sum(yolo_match(r, t) for r, t in zip(ref, test))
        n_ref, n_test = sum(len(r[0]) for r in ref), sum(len(t[0]) for t in test)
        res.update(recall=hits / max(n_ref, 1), precision=hits / max(n_test, 1), fp32_dets=n_ref, int8_dets=n_test)
        res["text"] = f"recall {res['recall']:.3f} ({hits}/{n_ref}), precision {res['precision']:.3f}"
    elif name == "ppocr-det":
        ious = [np.logical_and(r > 0.3, o > 0.3).sum() / max(np.logical_or(r > 0.3, o > 0.3).sum(), 1)
                for r, o in zip(refs, outs)]
        res.update(mask_iou=float(np.mean(ious)), mask_iou_min=float(np.min(ious)))
        res["text"] = f"mask IoU {res['mask_iou']:.3f} (min {res['mask_iou_min']:.3f})"
    elif name == "ppocr-rec":
        pairs = [(ctc_decode(r), ctc_decode(o)) for r, o in zip(refs, outs)]
        res.update(seq_agree=float(np.mean([a == b for a, b in pairs])),
                   char_agree=float(np.mean([1 - edit_distance(a, b) / max(len(a), len(b), 1) for a, b in pairs])),
                   fp32_lengths=[len(a) for a, _ in pairs])
        res["text"] = f"seq-agree {res['seq_agree']:.3f}, char-agree {res['char_agree']:.3f}"
    else:
        res["top1_agree"] = float(np.mean([r.argmax() == o.argmax() for r, o in zip(refs, outs)]))
        res["text"] = f"top-1 agree {res['top1_agree']:.3f}"
    return res


# ---------------------------------------------------------------- evaluation + latency (parent)
def evaluate(name: str, quant: dict, rounds: int, block_ms: float) -> dict:
    from deploycomp.backends.onnxruntime import ORTRunner
    from deploycomp.backends.openvino.adapter import OpenVINORunner

    ex, model = EXAMPLES[name], fetch_example(name)
    evals = evaluation_samples(ex.inputs, ex.input_name, ex.shape)
    runners = {"fp32": ORTRunner(model, threads=THREADS)}
    for method, q in quant.items():
        if q["ok"] and method != "ours2x":  # the doubled build is only there for its memory
            runners[method] = ORTRunner(q["onnx"], threads=THREADS) if "onnx" in q else \
                OpenVINORunner(Path(q["xml"]), "CPU", "int8", threads=THREADS)
            q["runtime_precision"] = "QDQ in ORT CPU" if "onnx" in q else runners[method].info["executed_precision"]
    first = lambda r, s: next(iter(r.run(s).values()))  # noqa: E731 - all four models have one output
    refs = [first(runners["fp32"], s) for s in evals]
    for method in runners:
        if method != "fp32":
            quant[method]["fidelity"] = fidelity(name, refs, [first(runners[method], s) for s in evals])
    feeds, warm = evals[0], {}
    for key, r in runners.items():
        t0, ts = time.perf_counter(), []
        while len(ts) < 5 or time.perf_counter() - t0 < 1.0:
            ts += time_block(r.run, feeds, 1)
        warm[key] = statistics.median(ts[len(ts) // 2:])
    k = max(2, round(block_ms / max(warm.values())))
    keys, blocks = list(runners), {key: [] for key in runners}
    times, snap = {key: [] for key in runners}, cpu_snapshot()
    for rnd in range(rounds):
        for key in keys[rnd % len(keys):] + keys[: rnd % len(keys)]:
            t = time_block(runners[key].run, feeds, k)
            times[key] += t
            blocks[key].append(statistics.median(t))
    end = cpu_snapshot()
    load = other_load(snap, end)
    for key in keys:
        entry = {"median_ms": statistics.median(times[key]), "p10_ms": float(np.percentile(times[key], 10)),
                 "p90_ms": float(np.percentile(times[key], 90))}
        ratios = [b / o for b, o in zip(blocks[key], blocks["fp32"])]
        entry.update(ratio=statistics.median(ratios), ratio_p10=float(np.percentile(ratios, 10)),
                     ratio_p90=float(np.percentile(ratios, 90)))
        (quant[key] if key != "fp32" else quant.setdefault("_fp32", {})).update(latency=entry)
    quant["_fp32"].update(bytes=model.stat().st_size, eval_samples=len(evals), k=k, rounds=rounds, other_load=load)
    return quant


def markdown(results: dict) -> str:
    lines = ["| model | method | task fidelity | latency ratio vs ORT fp32 | size MB | quantize time s | peak RSS MB |",
             "|---|---|---|---:|---:|---:|---:|"]
    details = ["| model | method | runs as | min cosine | median ms (p10-p90) | ratio p10-p90 | RSS before step MB |",
               "|---|---|---|---:|---:|---:|---:|"]
    mem = []
    for name, res in results.items():
        ref = res["_fp32"]
        lines.append(f"| {name} | ORT fp32 (reference) | - | 1.00 | {ref['bytes'] / 1e6:.2f} | - | - |")
        for method, q in res.items():
            if method.startswith("_") or method == "ours2x":
                continue
            if not q["ok"]:
                lines.append(f"| {name} | {method} | FAILED: {q['error'][:150]} | - | - | - | - |")
                continue
            lat, fid = q["latency"], q["fidelity"]
            secs = f"{q['seconds']:.1f}" + (f" (calib {q['calibration_seconds']:.1f})" if q.get("calibration_seconds") is not None else "")
            lines.append(f"| {name} | {method} | {fid['text']} | {lat['ratio']:.2f} | {q['bytes'] / 1e6:.2f} "
                         f"| {secs} | {q['peak_rss_mb']:.0f} |")
            details.append(f"| {name} | {method} | {q['runtime_precision']} | {fid['min_cosine']:.4f} "
                           f"| {lat['median_ms']:.2f} ({lat['p10_ms']:.2f}-{lat['p90_ms']:.2f}) "
                           f"| {lat['ratio_p10']:.2f}-{lat['ratio_p90']:.2f} | {q['rss_before_mb']:.0f} |")
        fl = ref["latency"]
        details.append(f"| {name} | ORT fp32 | fp32 | 1 | {fl['median_ms']:.2f} ({fl['p10_ms']:.2f}-{fl['p90_ms']:.2f}) "
                       f"| other CPU load {ref['other_load']:.0%} | - |")
        one, two = res.get("ours", {}), res.get("ours2x", {})
        if one.get("ok") and two.get("ok"):
            mem.append(f"{name}: {one['peak_rss_mb']:.0f} MB ({one['calibration_set']} samples) -> "
                       f"{two['peak_rss_mb']:.0f} MB ({two['calibration_set']} samples, "
                       f"{two['peak_rss_mb'] / one['peak_rss_mb'] - 1:+.1%}); build {one['seconds']:.0f} s -> {two['seconds']:.0f} s, "
                       f"calibration {one['calibration_seconds']} s -> {two['calibration_seconds']} s")
        elif two:
            mem.append(f"{name}: doubled run failed: {two.get('error')}")
    return "\n".join(lines + ["", *details, "", "Peak RSS of ours as the calibration set doubles: " + "; ".join(mem)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "int8.json")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block-ms", type=float, default=200.0)
    ap.add_argument("--only", help=argparse.SUPPRESS)  # child mode: one (model, method) quantization
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        return child(args.only, args.model, args.workdir)

    import onnxruntime
    import openvino

    started, results = time.perf_counter(), {}
    models = [m for arg in args.models for m in arg.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="dc-int8-") as tmp:
        for name in models:
            fetch_example(name)
            quant = {m: run_child(m, name, Path(tmp)) for m in methods_for(name) + ["ours2x"]}
            print(f"[{name}] evaluating and timing ...", flush=True)
            results[name] = evaluate(name, quant, args.rounds, args.block_ms)
    total = time.perf_counter() - started
    md = markdown(results)
    import nncf

    env = {"onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(), "nncf": nncf.__version__,
           "threads": THREADS, "cpu_count": os.cpu_count(), "total_seconds": total}
    print(f"\n{md}\n\nTotal run time {total:.0f} s; ORT {env['onnxruntime']}, OpenVINO {env['openvino']}, NNCF {env['nncf']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "results": results, "markdown": md}, indent=1, default=str))
        args.json.with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
