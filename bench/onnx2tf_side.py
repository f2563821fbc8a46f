"""onnx2tf side of the TFLite comparison benchmark (benchmark-only; never a deploycomp dependency).

Why this exists: to compare deploycomp's TFLite output with the usual community route
(onnx2tf: ONNX -> TF SavedModel -> ``tf.lite.TFLiteConverter``), we need onnx2tf's .tflite for
the same models. onnx2tf pins its own stack (tensorflow 2.19.0, numpy 1.26, onnx 1.19,
onnxruntime 1.23, ...) that conflicts with ours, so it lives in its own venv and this script is
run with that venv's python::

    python3.11 -m venv /work/venv-o2t
    /work/venv-o2t/bin/pip install onnx2tf==1.29.24 sng4onnx==1.0.5 sne4onnx==1.0.15 \
        'scikit-image<0.26' numpy==1.26.4
    /work/venv-o2t/bin/python bench/onnx2tf_side.py --model M.onnx --shape x:1x3x48x320 \
        --precision fp32|fp16|int8 --out DIR [--calibration calib.npz]

It prints ONE JSON line: {"ok", "seconds", "tflite", "error"}. ``seconds`` is the wall time of
the whole onnx2tf subprocess (including its ~5 s TensorFlow import). onnx2tf 1.29.24 has a
single conversion path, TF's converter (no flatbuffer_direct backend). It always writes
``*_float32.tflite`` and ``*_float16.tflite`` (fp16 weights, fp32 I/O); with ``-oiqt`` it also
writes ``*_integer_quant.tflite`` (int8 weights/activations, float32 I/O: what int8 returns
here) and ``*_full_integer_quant.tflite`` (int8 I/O). TFLite I/O is NHWC for 4-D tensors.

Isolation: onnx2tf rewrites its input model in place and downloads sample calibration images
from the internet unless ``calibration_image_sample_data_20x128x128x3_float32.npy`` is in its
working directory, so it runs in a fresh temp dir holding a copy of the model and that file
(20 scikit-image sample photos, or seeded uniform noise if skimage is missing). Node names
that TF rejects as scope names (the PP-OCR cls model's 'Softmax@0') are rewritten in the copy.
``--calibration`` is an .npz of NCHW float32 arrays keyed by input name, already preprocessed;
it is transposed to NHWC and fed with ``-cind NAME FILE [0.0] [1.0]`` (mean 0, std 1).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

SUFFIX = {"fp32": "float32", "fp16": "float16", "int8": "integer_quant"}
SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def sample_images(n=20, size=128):
    try:
        from skimage import data, transform
    except ImportError:
        return np.random.default_rng(0).random((n, size, size, 3), dtype=np.float32)
    names = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
             "immunohistochemistry", "retina", "colorwheel", "camera", "page"]
    imgs = []
    for name in names:
        im = getattr(data, name)()
        im = np.stack([im] * 3, -1) if im.ndim == 2 else im[..., :3]
        h, w = im.shape[:2]
        s = min(h, w)
        for v in (im, im[(h - s) // 2:(h + s) // 2, ::-1][:, (w - s) // 2:(w + s) // 2]):
            imgs.append(transform.resize(v, (size, size), anti_aliasing=True))
    return np.stack(imgs[:n]).astype(np.float32)


def copy_model(model, dst):
    """Copy the model; rename nodes TF rejects as scope names (old paddle2onnx's 'Softmax@0')."""
    m = onnx.load(model)
    bad = [n for n in m.graph.node if n.name and not re.fullmatch(r"[A-Za-z0-9_.\\/>-]*", n.name)]
    for n in bad:
        n.name = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", n.name)
    if bad:
        print(f"onnx2tf_side: renamed {len(bad)} nodes with invalid TF scope names", file=sys.stderr)
        onnx.save(m, dst)
    else:
        shutil.copyfile(model, dst)


def convert(model, shape, precision, out, calibration=None, timeout=3600):
    name, dims = shape.rsplit(":", 1)
    dims = [int(d) for d in dims.lower().split("x")]
    work = tempfile.mkdtemp(prefix="onnx2tf_")
    try:
        src = os.path.join(work, "model.onnx")
        copy_model(model, src)
        np.save(os.path.join(work, SAMPLE), sample_images())
        cmd = [os.path.join(os.path.dirname(sys.executable), "onnx2tf"), "-i", src,
               "-o", os.path.join(work, "out"), "-ois", f"{name}:{','.join(map(str, dims))}"]
        if precision == "int8":
            if calibration is None:
                raise ValueError("int8 needs --calibration NPZ")
            with np.load(calibration) as z:
                for key in z.files:
                    arr = np.asarray(z[key], np.float32)
                    if arr.ndim == 4:
                        arr = arr.transpose(0, 2, 3, 1)
                    path = os.path.join(work, f"calib_{len(cmd)}.npy")
                    np.save(path, arr)
                    cmd += ["-cind", key, path, "[0.0]", "[1.0]"]
            cmd.append("-oiqt")
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
                   CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
        os.makedirs(out, exist_ok=True)
        log_path = os.path.join(out, f"onnx2tf_{precision}.log")
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            rc = subprocess.run(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        seconds = time.perf_counter() - t0
        produced = os.path.join(work, "out", f"model_{SUFFIX[precision]}.tflite")
        if not os.path.isfile(produced):
            return {"ok": False, "seconds": seconds, "tflite": None,
                    "error": f"onnx2tf rc={rc}, no {os.path.basename(produced)}; see {log_path}"}
        stem = os.path.splitext(os.path.basename(model))[0]
        dest = os.path.join(out, f"{stem}_{SUFFIX[precision]}.tflite")
        shutil.copyfile(produced, dest)
        return {"ok": True, "seconds": seconds, "tflite": os.path.abspath(dest), "error": None}
    except Exception as e:  # noqa: BLE001 - one JSON line whatever happens
        return {"ok": False, "seconds": None, "tflite": None, "error": f"{type(e).__name__}: {e}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--shape", required=True, help="INPUT_NAME:1x3xHxW (the ONNX NCHW shape)")
    ap.add_argument("--precision", required=True, choices=sorted(SUFFIX))
    ap.add_argument("--out", required=True)
    ap.add_argument("--calibration", help="npz: NCHW float32 arrays keyed by input name (int8)")
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args()
    print(json.dumps(convert(a.model, a.shape, a.precision, a.out, a.calibration, a.timeout)))


if __name__ == "__main__":
    main()
