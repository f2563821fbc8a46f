"""Why one backend's int8 loses more than another's: each encoding rule switched off in turn.

For a model of the corpus (``bench/corpus_models.py``), the all-int8 model (no booster, no
float layer) is built under each backend's QDQ policy and under variants of it that drop
one rule, and judged on the model's validation inputs against ONNX Runtime fp32 (QDQ
arithmetic as written). The variants:

* ``tensorrt``: ``-no-add`` (no QDQ on residual Adds), ``-asym-u8`` (u8 asymmetric
  activations, which TensorRT's parser refuses: the cost of its symmetric encoding),
  ``-no-shift`` (one-sided conv inputs not shifted to two-sided);
* ``tflite``: ``-no-outputs`` (compute ops' outputs not requantized), ``-no-eltwise`` (no
  int8 Add/Mul), ``-no-shared`` (scale-preserving ops get their own ranges), ``-no-fixed``
  (Sigmoid/Softmax outputs not pinned to 1/256), ``-no-bias32`` (float biases);
* ``tflite-bare`` (every TFLite rule off) and each of ``+outputs``, ``+eltwise`` alone on it:
  a rule's cost where the others do not mask it (PP-OCRv5 rec: 0.851, 0.493, 0.671);
* then the whole ``quantize()`` (boosters and ``auto`` ranges) per backend, as a build does
  before its float-layer search.

Usage: python bench/int8_encodings.py --model ppocrv3-det [--methods percentile minmax] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_models as cm  # noqa: E402
from save import save_json  # noqa: E402


def main() -> None:
    from deploycomp.pipeline import prepare
    from deploycomp.quant import quantize
    from deploycomp.quant.calibrate import Observers, Statistics, stream_into
    from deploycomp.quant.policy import POLICIES, policy_for
    from deploycomp.quant.qdq import quantizable_tensors
    from deploycomp.quant.sensitivity import ort_outputs, quantized_copy
    from deploycomp.targets import load_target
    from deploycomp.validate import compare_outputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=sorted(cm.CORPUS))
    ap.add_argument("--methods", nargs="+", default=["percentile", "minmax"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    spec = cm.prepare(args.model)
    shapes = list(cm.CORPUS[args.model].inputs.items())
    prep = prepare(spec["model"], load_target("host"), shapes)

    def load(path: str) -> list[dict]:
        with np.load(path) as d:
            n = len(d[d.files[0]]) // shapes[0][1][0]
            return [{k: d[k][i:i + 1] for k in d.files} for i in range(n)]

    calib, val = load(spec["calibration"]), load(spec["validation"])
    refs = ort_outputs(prep.model, val)

    def cosine(model) -> float:
        return round(min(m["cosine"] for m in compare_outputs(refs, ort_outputs(model, val)).values()), 4)

    trt, tfl = POLICIES["tensorrt"], POLICIES["tflite"]
    variants = {
        "openvino (8-bit weights)": POLICIES["openvino"], "tensorrt": trt,
        "tensorrt-no-add": replace(trt, elementwise_ops=()),
        "tensorrt-asym-u8": replace(trt, activation_dtype="uint8", activation_symmetric=False, shift_one_sided=False),
        "tensorrt-no-shift": replace(trt, shift_one_sided=False),
        "tflite": tfl, "tflite-no-outputs": replace(tfl, quantize_outputs=False),
        "tflite-no-eltwise": replace(tfl, elementwise_ops=(), elementwise_with_constants=False),
        "tflite-no-shared": replace(tfl, shared_scale_ops=()), "tflite-no-fixed": replace(tfl, fixed_output_params=()),
        "tflite-no-bias32": replace(tfl, int32_bias=False),
        # every TFLite rule off (OpenVINO's encoding, int8 activations), then each rule alone on it:
        # a rule's cost where the others do not mask it
        "tflite-bare": (bare := replace(tfl, elementwise_ops=(), elementwise_with_constants=False, quantize_outputs=False,
                                        shared_scale_ops=(), fixed_output_params=(), int32_bias=False)),
        "tflite-bare+outputs": replace(bare, quantize_outputs=True),
        "tflite-bare+eltwise": replace(bare, elementwise_ops=tfl.elementwise_ops,
                                       elementwise_with_constants=tfl.elementwise_with_constants),
    }
    rows = {}
    for method in args.methods:
        for name, policy in variants.items():
            obs = Observers(list(quantizable_tensors(prep.model, policy)))
            stream_into(prep.model, [obs], calib)
            ranges = Statistics(obs.observers, len(calib)).ranges(method)
            rows[f"{name}, {method}"] = cosine(quantized_copy(prep.model, policy, ranges, set()))
            print(f"{name:26s} {method:10s} {rows[f'{name}, {method}']}", flush=True)
    held = max(1, min(4, len(calib) // 4))
    for backend in ("openvino", "tensorrt", "tflite"):
        policy = policy_for(backend, load_target("host").cpu_features) if backend == "openvino" else POLICIES[backend]
        t = time.perf_counter()
        result = quantize(prep.model, policy, calib[:-held], calib[-held:], None)
        rows[f"{backend}, quantize() ({result.info['range_method']}, boosters {','.join(result.info['boosters']) or 'none'})"] = \
            cosine(result.model)
        print(f"{backend} quantize(): {cosine(result.model)} ({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"\n| {args.model}: all-int8, worst output's cosine on the validation inputs | |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.4f} |")
    if args.json:
        save_json(args.json, rows)


if __name__ == "__main__":
    main()
