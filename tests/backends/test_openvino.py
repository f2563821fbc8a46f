"""The OpenVINO adapter: what a bundle executes is what its precision promises."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import deploycomp


def test_an_fp16_bundle_never_executes_bf16(tiny_conv, tmp_path):
    """OpenVINO's CPU plugin runs an f16 hint as bf16 on CPUs with AVX512-BF16 but no
    native f16 (AMD Zen 4): 8 mantissa bits where fp16 has 11, and PP-OCRv3 det fell to
    cosine 0.9908 against the fp16 budget's 0.999. An fp16 bundle executes fp16 where the
    CPU has it and fp32 (on its f16 weights) everywhere else."""
    import openvino as ov

    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="fp16")
    runtime = runner.manifest["backend"]["runtime"]
    native = "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert runtime["executed_precision"] == ("fp16" if native else "fp32")
    assert not [layer for layer in runtime["compute_layer_precisions"] if ":bf16:" in layer]
    assert runner.manifest["backend"]["lowered"]["weights"] == "f16"


def test_an_fp16_bundle_executes_on_the_target_what_was_validated_here(tiny_conv, tmp_path, monkeypatch):
    """Built on a CPU without native f16 for one with it (an intel-xeon-amx fp16 bundle
    built on an AMD EPYC), the bundle was validated executing f32 on its f16 weights but
    said nothing of it in its files: loaded on the target, it asked for f16 execution,
    which nothing had validated. The f32 execution is kept in the bundle and said."""
    from deploycomp.backends.openvino import adapter

    real = adapter._cpu_hint
    monkeypatch.setattr(adapter, "_cpu_hint", lambda core, device, precision:  # this machine: no native f16
                        "f32" if precision == "fp16" else real(core, device, precision))
    runner = deploycomp.build(tiny_conv, tmp_path / "b", target="intel-xeon-amx", precision="fp16")
    manifest = runner.manifest
    assert manifest["backend"]["lowered"]["execute"] == "f32"
    assert ("f16 execution, where intel-xeon-amx's CPU has it, was not validated here: the bundle executes f32 there "
            "too") in manifest["fp16"]["executes_fp32"]
    monkeypatch.setattr(adapter, "_cpu_hint", lambda core, device, precision:  # the target: native f16
                        "f16" if precision == "fp16" else real(core, device, precision))
    on_target = deploycomp.load(tmp_path / "b")
    on_target.run({"x": np.ones(manifest["io"]["inputs"][0]["shape"], np.float32)})
    assert on_target.info["executed_precision"] == "fp32"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the signal stack is checked on Linux (mincore)")
def test_a_signal_after_runtimes_released_out_of_order_is_handled(tiny_conv, tmp_path):
    """OpenVINO's CPU plugin restores, as each engine goes, the alternate signal stack it
    found; released out of order (the first runtime last, as ``--precision auto``'s timing
    and the int8 search do) the thread was left on a freed stack, and the next SIGTERM or
    Ctrl-C killed the process with SIGSEGV, silently (exit 139, the other candidates left
    beside --out)."""
    deploycomp.build(tiny_conv, tmp_path / "b")
    script = textwrap.dedent("""
        import gc, os, signal, sys
        import deploycomp
        first, second = deploycomp.load(sys.argv[1]), deploycomp.load(sys.argv[1])
        del first; gc.collect()
        third = deploycomp.load(sys.argv[1])
        del second; gc.collect()
        del third; gc.collect()
        signal.signal(signal.SIGUSR1, lambda *_: print("handled"))
        os.kill(os.getpid(), signal.SIGUSR1)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "b")], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout.split()) == (0, ["handled", "ok"]), done.stderr[-500:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore tells mapped pages on Linux")
def test_the_signal_stack_check_tells_mapped_memory_from_freed():
    import ctypes
    import mmap

    from deploycomp.backends.openvino import signal_stack

    region = mmap.mmap(-1, 3 * mmap.PAGESIZE)
    buffer = ctypes.c_char.from_buffer(region)
    address = ctypes.addressof(buffer)
    assert signal_stack.mapped(address + 10, 2 * mmap.PAGESIZE)
    del buffer
    region.close()  # (munmap: the freed signal stack OpenVINO had restored)
    assert not signal_stack.mapped(address + 10, 2 * mmap.PAGESIZE)


def test_the_hint_follows_the_build_precision():
    import openvino as ov

    from deploycomp.backends.openvino.adapter import _cpu_hint

    core = ov.Core()
    assert _cpu_hint(core, "CPU", "fp32") == "f32" and _cpu_hint(core, "CPU", "int8") == "f32"
    assert _cpu_hint(core, "CPU", "bf16") == "bf16"
    assert _cpu_hint(core, "CPU", "fp16") in ("f16", "f32")


def _loop_with_a_passthrough(path):
    """y = x + 3 * w, as a 3-step Loop that carries w through its body unchanged (the body's
    output for w is its input for w, as Paddle2ONNX writes loop-invariant weights)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "w_in"], ["acc_out"])],
        "body",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []),
         vi("acc_in", TensorProto.FLOAT, [1, 4]), vi("w_in", TensorProto.FLOAT, [1, 4])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", TensorProto.FLOAT, [1, 4]),
         vi("w_in", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x", "w"], ["y", "w_final"], body=body, name="loop")],
        "passthrough", [vi("x", TensorProto.FLOAT, [1, 4])], [vi("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond"),
         numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_loop_that_carries_a_value_through_unchanged_builds_for_openvino(tmp_path):
    """OpenVINO's ONNX frontend refuses a Loop whose body passes a carried value straight
    from input to output (SLANet's decoder: "canonical inputs size (41), does not match
    ... (25)"); the adapter writes such values through an Identity, and the bundle
    computes what ONNX Runtime does."""
    import numpy as np

    model = _loop_with_a_passthrough(tmp_path / "loop.onnx")  # OpenVINO 2026.4 refuses this file as it is
    runner = deploycomp.build(model, tmp_path / "b", precision="fp32")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(runner.run({"x": x})["y"], x + 3 * np.arange(4, dtype=np.float32).reshape(1, 4))
    assert runner.manifest["validation"]["ok"]


def test_each_run_returns_arrays_of_its_own(tiny_conv, tmp_path):
    """The runner hands out OpenVINO's copies of its outputs (no second copy): a later
    run must not change what an earlier one returned (a search keeps the outputs of
    every judged sample)."""
    import numpy as np

    runner = deploycomp.build(tiny_conv, tmp_path / "b", precision="fp32")
    a = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    first = runner.run({"x": a})
    kept = {k: v.copy() for k, v in first.items()}
    runner.run({"x": -a})
    assert all(np.array_equal(first[k], kept[k]) for k in kept)
    assert not np.array_equal(runner.run({"x": -a})["probs"], kept["probs"])


def _lstm(tmp_path, peepholes, **attributes):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)
             for name, shape in (("W", (1, 16, 8)), ("R", (1, 16, 4)), ("B", (1, 32)))]
    inits.append(numpy_helper.from_array(rng.standard_normal((1, 12)).astype(np.float32) * peepholes, "P"))
    node = helper.make_node("LSTM", ["x", "W", "R", "B", "", "", "", "P"], ["y"], hidden_size=4, name="lstm",
                            **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [20, 1, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [20, 1, 1, 4])], inits)
    path = tmp_path / f"lstm{peepholes}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


def test_an_lstm_with_peepholes_runs_as_a_scan_of_its_cell(tmp_path):
    """OpenVINO converts an LSTM's peephole weights yet computes without them (a madmom
    beat tracker validated to cosine 0.125): the host pipeline writes such an LSTM as a
    Scan of its cell, which OpenVINO computes exactly; one it cannot rewrite (here with
    ``clip``) is refused by name, and all-zero peepholes are no peepholes and stay an LSTM."""
    import pytest

    from deploycomp.errors import UnsupportedError

    built = deploycomp.build(_lstm(tmp_path, 1.0), tmp_path / "a", precision="fp32")
    assert built.manifest["validation"]["outputs"]["y"]["cosine"] > 0.99999
    assert any(p["name"] == "PeepholeLSTMToScanPass" and p["modified"] for p in built.manifest["passes"])
    with pytest.raises(UnsupportedError, match="LSTM with peephole weights.*computes as if they were not there"):
        deploycomp.build(_lstm(tmp_path, 1.0, clip=5.0), tmp_path / "b")
    runner = deploycomp.build(_lstm(tmp_path, 0.0), tmp_path / "c", precision="fp32")
    assert runner.manifest["validation"]["outputs"]["y"]["cosine"] > 0.9999
    assert not any(p["name"] == "PeepholeLSTMToScanPass" and p["modified"] for p in runner.manifest["passes"])


def _resize(tmp_path, size: int, mode: str, antialias: int):
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode=mode, antialias=antialias)], "r",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 32, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, size, size])],
        [numpy_helper.from_array(np.array([1, 8, size, size], np.int64), "sizes")])
    path = tmp_path / f"resize-{size}-{mode}-{antialias}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


def test_an_antialiased_downscale_is_refused_by_name(tmp_path):
    """OpenVINO 2026.4 converts Resize's ``antialias=1`` and resizes as if it were not set (a
    probe's images up to 0.45 off ONNX Runtime; its fp16 and int8 bundles validated, their
    model ending in a global pool): refused where it shrinks, as the TFLite backend does.
    Without the attribute, or when enlarging, it changes nothing and builds."""
    from deploycomp.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="Resize with antialias when downscaling"):
        deploycomp.build(_resize(tmp_path, 16, "linear", 1), tmp_path / "a", precision="fp16")
    for size, mode, antialias in ((16, "linear", 0), (64, "linear", 1)):
        runner = deploycomp.build(_resize(tmp_path, size, mode, antialias), tmp_path / f"b{size}{mode}{antialias}",
                                  precision="fp32")
        assert runner.manifest["validation"]["ok"], (size, mode, antialias)


@pytest.mark.parametrize("shape, axis, runs", [((1, 64, 8, 2), 1, True), ((1, 4, 64, 8, 2), 2, False)])
def test_a_dft_whose_axis_openvino_misreads_is_refused_by_name(tmp_path, shape, axis, runs):
    """OpenVINO 2026.4 reads an opset-20 DFT's axis input as 1 whatever it holds. The
    spectral pass writes one over the last signal axis as a MatMul; one over another axis
    stays, and builds only where that axis is 1 (over axis 2 it had validated to cosine
    -0.07 where not rewritten)."""
    import onnx
    from onnx import helper, numpy_helper

    from deploycomp.errors import UnsupportedError

    graph = helper.make_graph([helper.make_node("DFT", ["x", "", "axis"], ["y"])], "dft",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(shape))],
                              [numpy_helper.from_array(np.array(axis, np.int64), "axis")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), tmp_path / "dft.onnx")
    feeds = [{"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}]
    if runs:
        runner = deploycomp.build(tmp_path / "dft.onnx", tmp_path / "a", precision="fp32", validation_data=feeds)
        assert runner.manifest["validation"]["outputs"]["y"]["cosine"] > 0.99999
    else:
        with pytest.raises(UnsupportedError, match="DFT over an axis OpenVINO misreads"):
            deploycomp.build(tmp_path / "dft.onnx", tmp_path / "b", precision="fp32", validation_data=feeds)


def test_an_input_port_with_two_names_is_fed_by_the_graph_input_s(tmp_path):
    """OpenVINO folds a Convert that reads a graph input into the compiled input, whose port
    then carries that Convert's output name too, and ``get_any_name`` may pick it (a Keras
    CRNN's "image" came back as ".../Cast:0": every run failed with a KeyError). The
    runner feeds a port by whichever of its names the caller gave."""
    import numpy as np
    import onnx
    import openvino as ov
    from onnx import TensorProto as T, helper, numpy_helper

    from deploycomp.backends.openvino.adapter import OpenVINORunner

    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["a/Cast:0"], to=T.FLOAT),
         helper.make_node("Transpose", ["a/Cast:0"], ["t"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["t", "w"], ["y"])],
        "g", [helper.make_tensor_value_info("image", T.FLOAT, [1, 8, 8, 3])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    model = ov.Core().read_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                 .SerializeToString(), b"")
    ov.save_model(model, tmp_path / "m.xml")
    runner = OpenVINORunner(tmp_path / "m.xml", "CPU", "fp32", output_names=["y"])
    assert sorted(runner.compiled.inputs[0].get_names()) == ["a/Cast:0", "image"]  # the case at hand
    got = runner.run({"image": np.ones((1, 8, 8, 3), np.float32)})["y"]
    np.testing.assert_allclose(got, np.full((1, 4, 6, 6), 27.0, np.float32))


def test_int8_layers_the_plugin_runs_float_behind_their_qdq_are_recorded(tmp_path):
    """OpenVINO 2026.4's CPU plugin runs a 1-D ConvTranspose on a zero-pointed (u8,
    asymmetric) input in f32, QDQ or not: the quantization record, which counts what was
    placed, names it (``executed_float_behind_qdq``), so the manifest's two sections agree
    (a probe's EEG U-Net: 29 int8 layers recorded, 25 run int8)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1], name="conv"),
             helper.make_node("ConvTranspose", ["c", "wt"], ["y"], strides=[2], name="up")]
    graph = helper.make_graph(nodes, "up1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.standard_normal((8, 4, 3)).astype(np.float32), "w"),
                               numpy_helper.from_array(rng.standard_normal((8, 4, 2)).astype(np.float32), "wt")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "up.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 4, 64)).astype(np.float32))
    runner = deploycomp.build(tmp_path / "up.onnx", tmp_path / "out", precision="int8",
                              calibration=tmp_path / "calib.npz")
    runtime, quant = runner.manifest["backend"]["runtime"], runner.manifest["quantization"]
    assert any(k.startswith("Deconvolution:fp32") for k in runtime["compute_layer_precisions"])
    assert quant["executed_float_behind_qdq"] == ["up"] and quant["float_layers"] == []
    # the placed share counts it int8; what runs does not
    assert quant["int8_mac_share"] == 1.0 and 0 < quant["executed_int8_mac_share"] < 1.0


def test_a_runtime_name_of_a_fused_node_stands_for_the_compute_layer_before_it():
    """OpenVINO fuses attention's ``q @ k`` with the ``Mul`` by its scale and names the
    fused layer after the ``Mul``: that is the MatMul, two of them in all."""
    from tests.passes._harness import model_from_text
    from deploycomp.pipeline import _compute_layers_named

    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 8] q, float[1, 8, 4] k, float[1, 4, 8] v) => (float[1, 4, 8] o) {
        s = MatMul(q, k)
        ss = Mul(s, scale)
        p = Softmax <axis = -1> (ss)
        o = MatMul(p, v)
    }"""
    import numpy as np
    import onnx_ir as ir

    model = ir.from_proto(model_from_text(text, scale=np.array(0.5, np.float32)))
    for i, n in enumerate(model.graph):
        n.name = f"{n.op_type}_{i}"
    # the fused Mul and the MatMul named by its output; a Softmax is no part of a MatMul
    assert _compute_layers_named(model.graph, ["Mul_1", "o", "Softmax_2"], ("MatMul",)) == ["MatMul_0", "MatMul_3"]


def test_a_recurrent_layer_in_an_int8_model_is_said_to_run_float(tmp_path):
    """No QDQ enters an LSTM: OpenVINO runs it float (an ``RNNSeq``), and the bundle says
    the model executes int8 *and* fp32, the summary the share of MACs int8 and the
    recurrent layers (a GRU name encoder with one int8 layer said "executes int8")."""
    import numpy as np
    import onnx
    from click.testing import CliRunner
    from onnx import TensorProto, helper, numpy_helper

    from deploycomp.cli import main

    rng = np.random.default_rng(0)
    hidden, width = 16, 8
    nodes = [helper.make_node("LSTM", ["x", "w", "r"], ["seq"], hidden_size=hidden, name="lstm"),
             helper.make_node("Squeeze", ["seq", "axis"], ["h"]),
             helper.make_node("MatMul", ["h", "m"], ["y"], name="fc")]
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, width)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.3, "r"),
             numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32), "m"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    graph = helper.make_graph(nodes, "lstm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "lstm.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 6, 1, width)).astype(np.float32))
    result = CliRunner().invoke(main, ["build", str(tmp_path / "lstm.onnx"), "--precision", "int8", "--calibration",
                                       str(tmp_path / "calib.npz"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "executes int8 (1 of 2 OpenVINO compute layers) + fp32" in result.output
    assert "int8: 1 layers int8, 0 float (" in result.output and "; 1 recurrent layer runs float" in result.output


def test_a_refusal_from_openvinos_own_transformations_names_the_op(tmp_path):
    """A length computed from the data (``ConstantOfShape`` of a rounded sum) times a
    scalar: OpenVINO's BroadcastTransition throws and its message names no converted op;
    the refusal had said "cannot run op(s) ?"."""
    import numpy as np
    import onnx
    import pytest
    from onnx import TensorProto, helper, numpy_helper

    from deploycomp.errors import UnsupportedError

    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Round", ["s"], ["r"]),
             helper.make_node("Cast", ["r"], ["n"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["n", "one"], ["n1"]),
             helper.make_node("ConstantOfShape", ["n1"], ["ones"],
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0), helper.make_node("Mul", ["ones", "m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["L"])],
                              [numpy_helper.from_array(np.array([1], np.int64), "one"),
                               numpy_helper.from_array(np.full((64, 1), 100.0, np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "length.onnx")
    with pytest.raises(UnsupportedError, match=r"cannot run op\(s\) Multiply \(node 'y'\)"):
        deploycomp.build(tmp_path / "length.onnx", tmp_path / "out", target="host",
                         validation_data=[{"x": np.full((1, 64), 2.0, np.float32)}])


def test_a_conversion_failure_is_told_by_the_earliest_node_that_failed():
    """OpenVINO validates every node and reports those after a refused one too (an STFT it
    could not convert, and the ReduceSumSquare reading its output): the reason quoted is
    the earliest node's, not the first block of the message."""
    from deploycomp.backends.openvino.adapter import _conversion_reason

    message = ("Model wasn't fully converted. Failed operations detailed log:\n"
               "-- ReduceSumSquare-17 with a message:\n"
               "While validating ONNX node '<Node(ReduceSumSquare): spectrogram>':\n"
               "Check 'x' failed at a.cpp:1:\nUnsupported input type dynamic\n"
               "-- STFT-17 with a message:\n"
               "While validating ONNX node '<Node(STFT): spectrum>':\n"
               "Check 'y' failed at b.cpp:2:\nShape of signal input must be static with the rank equal to 3.\n")
    order = {"spectrum": 3, "spectrogram": 4}
    assert _conversion_reason(message, order).endswith("'<Node(STFT): spectrum>': Shape of signal input must be "
                                                       "static with the rank equal to 3.")
    assert "ReduceSumSquare" in _conversion_reason(message)  # without the graph's order: the first block


def test_a_plugin_that_throws_compiling_is_a_refusal_naming_the_node(tiny_conv, tmp_path, monkeypatch):
    """OpenVINO's CPU plugin threw inside a low-precision transformation while compiling an
    fp16 search candidate of an ONNX Runtime-quantized PP-OCR recognizer
    ([MultiplyPartialTransformation] ... index '0' out of range): an internal error. It is a
    refusal naming the node and the transformation (which the fp16 and int8 searches take
    as a missed candidate)."""
    import pytest

    import openvino

    from deploycomp.backends.openvino.adapter import OpenVINORunner
    from deploycomp.errors import UnsupportedError

    deploycomp.build(tiny_conv, tmp_path / "b", target="host")
    message = ("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/core/src/pass/graph_rewrite.cpp"
               ":298:\n[MultiplyPartialTransformation] END: node: opset1::Multiply p2o.Mul.0 (...) -> (f32[1]) CALLBACK "
               "HAS THROWN: Check 'index < m_inputs.size()' failed at src/core/src/node.cpp:304:\nindex '0' out of range\n")

    def throws(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(openvino.Core, "compile_model", throws)
    with pytest.raises(UnsupportedError, match=r"cannot compile it: Multiply \(node 'p2o.Mul.0'\) in its "
                                               r"MultiplyPartialTransformation: index '0' out of range"):
        OpenVINORunner(tmp_path / "b" / "model.xml", "CPU", "fp16")


@pytest.mark.parametrize("target", ["host", "jetson-orin-nano"])
def test_an_input_that_is_also_an_output_builds_and_runs(tmp_path, target):
    """A graph output that is its input unchanged: OpenVINO's conversion renamed the input
    ("a_1") and the build failed with a raw KeyError (an internal error) finding the input
    fed as "a". Written through an Identity, it builds and runs on every backend."""
    import onnx
    from onnx import TensorProto as T, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "W"], ["o"])], "g",
                              [helper.make_tensor_value_info("a", T.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("o", T.FLOAT, [2, 4]),
                               helper.make_tensor_value_info("a", T.FLOAT, [2, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "p.onnx")
    runner = deploycomp.build(tmp_path / "p.onnx", tmp_path / "b", target=target)
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = runner.run({"a": a})
    assert list(out) == ["o", "a"]
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_allclose(out["o"], 2 * a)


def test_an_einsum_in_an_int8_model_is_said_to_run_float(tmp_path):
    """No int8 encoding takes an Einsum: a denoiser's summary said "3 layers int8, 0
    float" where its Einsums ran fp32, named nowhere. The summary names them as it names
    recurrent layers. (On host, OpenVINO 2026.4's CPU plugin refuses this int8 MatMul
    before an Einsum in its ReshapeTransformation, and the search keeps it float: the
    summary is the same.)"""
    import onnx
    from click.testing import CliRunner
    from onnx import TensorProto, helper, numpy_helper

    from deploycomp.cli import main

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "m"], ["h"], name="fc"),
             helper.make_node("Einsum", ["h", "g"], ["y"], equation="bij,bij->bi", name="gate")]
    inits = [numpy_helper.from_array(rng.random((8, 8), dtype=np.float32), "m"),
             numpy_helper.from_array(rng.random((1, 6, 8), dtype=np.float32), "g")]
    graph = helper.make_graph(nodes, "e", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "e.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.random((8, 1, 6, 8), dtype=np.float32))
    result = CliRunner().invoke(main, ["build", str(tmp_path / "e.onnx"), "--precision", "int8", "--calibration",
                                       str(tmp_path / "calib.npz"), "--out", str(tmp_path / "out"), "--no-fail"])
    assert result.exit_code == 0, result.output
    assert "; 1 Einsum runs float" in result.output, result.output


def test_the_manifest_says_how_to_compile_the_ir_natively(tiny_conv, tmp_path):
    """OpenVINO's CPU defaults to bf16 where the CPU has it: a program loading model.xml
    with OpenVINO's own API ran something else than was validated (an fp32 bundle missed
    its fp32 budget). The manifest gives the compile configuration, and with it OpenVINO
    alone computes what the bundle's runner does."""
    import openvino as ov

    runner = deploycomp.build(tiny_conv, tmp_path / "b", inputs={"x": (1, 3, 16, 16)})
    config = runner.manifest["backend"]["runtime"]["compile_config"]
    assert config["INFERENCE_PRECISION_HINT"] == "f32"
    compiled = ov.Core().compile_model(str(tmp_path / "b" / "model.xml"), "CPU", config)
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(compiled(x)[0], runner.run({"x": x})["probs"])


def _conv_over_any_size(tmp_path):
    """Conv + Relu over 1x3xHxW, H and W dynamic: a fully convolutional net (a detector's
    backbone, a text recognizer's line) that applications feed at the image's own size."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, "H", "W"])], [w, b])
    path = tmp_path / "fcn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_profile_keeps_an_ir_dynamic_within_its_bounds(tmp_path, precision):
    """``--profile`` on host: the IR's dims are bounded to MIN..MAX (it had been refused as
    TensorRT's alone, and the bundle took its OPT shape only); the bundle runs every shape
    inside as ONNX Runtime does, refuses one outside naming the range, and int8 builds
    calibrate on data of one size inside it."""
    import onnxruntime as ort
    import openvino as ov

    from deploycomp.errors import InputDataError

    model = _conv_over_any_size(tmp_path)
    rng = np.random.default_rng(1)
    extra = {}
    if precision == "int8":
        np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 24, 24)).astype(np.float32))
        extra["calibration"] = tmp_path / "calib.npz"
    runner = deploycomp.build(model, tmp_path / "b", precision=precision, profiles=["x:1x3x8x8:1x3x16x16:1x3x32x32"],
                              **extra)
    assert runner.manifest["io"]["profiles"]["x"] == {"min": [1, 3, 8, 8], "opt": [1, 3, 16, 16], "max": [1, 3, 32, 32]}
    # the output's shape at both ends too, where an application sizes its buffers (OPT's alone had been said)
    (out,) = runner.manifest["io"]["outputs"]
    assert out["shape_at_profile_ends"] == {"min": [1, 8, 8, 8], "max": [1, 8, 32, 32]}
    from click.testing import CliRunner

    from deploycomp.cli import main

    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "b")]).output
    assert f"output y: float32 [1, 8, 8, 8] to [1, 8, 32, 32] (validated at {out['shape']})" in shown
    shape = ov.Core().read_model(str(tmp_path / "b" / "model.xml")).inputs[0].get_partial_shape()
    assert str(shape) == "[1,3,8..32,8..32]"
    reference = ort.InferenceSession(str(model))
    loaded = deploycomp.load(tmp_path / "b")
    for h, w in ((8, 8), (24, 20), (32, 32)):
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        (want,), got = reference.run(None, {"x": x}), loaded.run({"x": x})["y"]
        assert got.shape == want.shape
        if precision == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        else:  # int8 arithmetic: close, not equal
            assert float(np.dot(got.ravel(), want.ravel()) / np.linalg.norm(got) / np.linalg.norm(want)) > 0.99
    with pytest.raises(InputDataError, match=r"shape \[1, 3, 40, 40\] given, the bundle was built for shapes from "
                                             r"\[1, 3, 8, 8\] to \[1, 3, 32, 32\]"):
        loaded.run({"x": np.zeros((1, 3, 40, 40), np.float32)})
    # timed at both ends of the range too, where it runs (the budget stays OPT's)
    ends = runner.manifest["measured"]["latency_at_profile_ends"]
    assert ends["min"]["shapes"] == {"x": [1, 3, 8, 8]} and ends["max"]["shapes"] == {"x": [1, 3, 32, 32]}
    assert ends["min"]["median_ms"] > 0 and ends["max"]["median_ms"] > 0
    from deploycomp.cli import _per_batch

    # int8: validated (and timed) at its held-out calibration samples' own shape, and said
    # so (it had been said to be OPT)
    where = (r"at its --profile's OPT" if precision == "fp32"
             else r"at the validated shape \(x 1x3x24x24\) inside its --profile")
    assert re.fullmatch(rf" {where} \(MIN [\d.]+ ms, MAX [\d.]+ ms\)", _per_batch(runner.manifest, 1.0))
    report = (tmp_path / "b" / "report.html").read_text()
    assert re.search(r"Across its --profile: MIN \(1x3x8x8\) [\d.]+ ms; MAX \(1x3x32x32\) [\d.]+ ms", report)


def test_the_memory_budget_holds_at_a_profiles_max_too(tmp_path):
    """An application may feed a ``--profile``'s MAX: the bundle's peak memory there is
    measured and held to the memory budget as OPT's is (it had been checked at OPT alone,
    and a range whose MAX needs far more passed)."""
    import deploycomp

    model = _conv_over_any_size(tmp_path)
    target = tmp_path / "small.yaml"  # a CPU with 200 MB for the model
    target.write_text("extends: intel-core-avx2\nname: small-cpu\nbudgets: {max_memory_mb: 200}\n")
    runner = deploycomp.build(model, tmp_path / "b", target=str(target), no_fail=True,
                              profiles=["x:1x3x8x8:1x3x16x16:1x3x1536x1536"])
    measured = runner.manifest["measured"]
    at_max = measured["peak_memory_at_profile_max"]
    assert at_max["shapes"] == {"x": [1, 3, 1536, 1536]}
    # a 1536x1536 input (27 MB) and its 8-channel output (75 MB) at the least, on top of OPT's peak
    assert at_max["mb"] >= measured["peak_memory_mb"] + 100
    checks = {b["budget"]: b for b in measured["budgets"]}
    assert checks["peak_memory"]["ok"] and checks["peak_memory"]["value"] < 200
    assert not checks["peak_memory_at_profile_max"]["ok"] and checks["peak_memory_at_profile_max"]["limit"] == 200
    assert not runner.manifest["validation"]["ok"]


def test_a_profile_may_start_at_an_empty_past(tmp_path):
    """A decoder step with a cache: its past is 0 long on the first step of every loop. A
    profile's MIN of 0 builds (it had been refused as "MIN, OPT and MAX must each be a
    shape"), and the bundle runs at 0 as ONNX Runtime does; OPT and MAX stay positive."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from deploycomp.errors import InputDataError
    from deploycomp.shapes import parse_profile_spec

    graph = helper.make_graph(  # the new step appended to the past; the mean over the cache
        [helper.make_node("Concat", ["past", "x"], ["present"], axis=1, name="append"),
         helper.make_node("ReduceMean", ["present"], ["y"], axes=[1], keepdims=0, name="mean")], "kv",
        [helper.make_tensor_value_info("past", onnx.TensorProto.FLOAT, [1, "P", 4]),
         helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4])],
        [helper.make_tensor_value_info("present", onnx.TensorProto.FLOAT, [1, "T", 4]),
         helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "kv.onnx")
    with pytest.raises(InputDataError, match=r"^--profile 'past:1x2x4:0x8x4:1x16x4': OPT: every dim must be positive "
                                             r"\(MIN may be 0\)"):
        parse_profile_spec("past:1x2x4:0x8x4:1x16x4")
    runner = deploycomp.build(tmp_path / "kv.onnx", tmp_path / "b", profiles=["past:1x0x4:1x8x4:1x16x4"],
                              inputs=["x:1x1x4"])
    present = next(o for o in runner.manifest["io"]["outputs"] if o["name"] == "present")
    assert present["shape_at_profile_ends"] == {"min": [1, 1, 4], "max": [1, 17, 4]}
    reference = ort.InferenceSession(str(tmp_path / "kv.onnx"))
    loaded = deploycomp.load(tmp_path / "b")
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    for length in (0, 1, 5):
        feeds = {"past": np.ones((1, length, 4), np.float32), "x": x}
        got, (want_present, want_y) = loaded.run(feeds), reference.run(None, feeds)
        np.testing.assert_allclose(got["present"], want_present)
        np.testing.assert_allclose(got["y"], want_y, rtol=1e-6)


def test_a_graph_models_indices_cut_to_a_profiles_end_are_not_blamed_on_the_range(tmp_path):
    """A graph model's edges index its nodes: cut to MIN with the nodes, the sample's edges
    point past them, and the run there fails in the sample, not in the range, which the
    model runs (a chemistry GNN's build had been refused "does not run at its MIN ... give a
    range the model runs at", OpenVINO's source location its only reason). That end is not
    run and the assumptions say why; the other is."""
    import onnx
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Gather", ["e", "zero"], ["src"], axis=0, name="src"),
             helper.make_node("Gather", ["e", "one"], ["dst"], axis=0, name="dst"),
             helper.make_node("Gather", ["x", "src"], ["msg"], axis=0, name="message"),
             helper.make_node("Unsqueeze", ["dst", "axis1"], ["dst1"], name="dst_col"),
             helper.make_node("Shape", ["msg"], ["msg_shape"], name="msg_shape"),
             helper.make_node("Expand", ["dst1", "msg_shape"], ["dsti"], name="dst_rows"),
             helper.make_node("ScatterElements", ["x", "dsti", "msg"], ["y"], axis=0, reduction="add", name="sum")]
    consts = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    graph = helper.make_graph(nodes, "gnn", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4]),
                                             helper.make_tensor_value_info("e", onnx.TensorProto.INT64, [2, "E"])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "gnn.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "graphs.npz", x=rng.standard_normal((3, 12, 4)).astype(np.float32),
             e=rng.integers(0, 12, (3, 2, 20)).astype(np.int64))
    runner = deploycomp.build(tmp_path / "gnn.onnx", tmp_path / "b", validation_data=tmp_path / "graphs.npz",
                              profiles=["x:4x4:12x4:40x4", "e:2x8:2x20:2x80"])
    manifest = runner.manifest
    assert manifest["validation"]["ok"]
    said = next(a for a in manifest["assumptions"] if a.startswith("not run at its --profile's MIN (x 4x4, e 2x8)"))
    assert "integer input(s) e cut or repeated to that size are no input the model takes" in said
    assert "indices" in said  # OpenVINO's or ONNX Runtime's reason, not a source location
    assert set(manifest["measured"]["latency_at_profile_ends"]) == {"max"}
    assert manifest["io"]["outputs"][0]["shape_at_profile_ends"] == {"max": [40, 4]}


def test_an_input_at_a_profiles_end_holds_the_samples_own_values():
    """Cropped, or padded by repeating itself: what an application feeds, at that size."""
    from deploycomp.pipeline import _at_shape

    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_array_equal(_at_shape(x, (1, 2, 2)), [[[0, 1], [3, 4]]])
    np.testing.assert_array_equal(_at_shape(x, (1, 1, 7)), [[[0, 1, 2, 0, 1, 2, 0]]])


def test_int8_calibrates_and_validates_at_two_shapes_of_a_profile_where_the_file_fixes_a_dim(tmp_path):
    """PP-OCRv3 rec declares its batch as a literal -1: its reference was pinned at the
    validation data's whole shape, and calibration lines of another width inside the
    profile were refused ("Got: 320 Expected: 640"). The profiled dims stay dynamic there."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3, 8, "W"])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [-1, 8, 8, "W"])], [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((8, 1, 3, 8, 24)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((4, 1, 3, 8, 16)).astype(np.float32))
    runner = deploycomp.build(model, tmp_path / "b", precision="int8", profiles=["x:1x3x8x8:1x3x8x16:1x3x8x32"],
                              calibration=tmp_path / "calib.npz", validation_data=tmp_path / "val.npz")
    assert runner.manifest["validation"]["ok"] and runner.manifest["io"]["inputs"][0]["shape"] == [1, 3, 8, 16]


def test_a_profile_for_an_input_the_model_lacks_names_it(tmp_path):
    """It had been an internal error (KeyError) beside an ``--input``, and otherwise the
    data's or the dynamic dims' error, which did not say that no such input exists."""
    from deploycomp.errors import InputDataError

    model = _conv_over_any_size(tmp_path)
    np.savez(tmp_path / "val.npz", x=np.zeros((2, 1, 3, 16, 16), np.float32))
    for extra in ({"inputs": ["x:1x3x16x16"]}, {"validation_data": tmp_path / "val.npz"}, {}):
        with pytest.raises(InputDataError, match=r"^--profile y: the model has no input named 'y' \(inputs: x\)$"):
            deploycomp.build(model, tmp_path / "b", profiles=["y:1x3x8x8:1x3x16x16:1x3x32x32"], **extra)


def _even_sizes_only(tmp_path):
    """x + upsample(conv_stride2(x)) over 1x3xHxW: runs where H and W are even only (a
    detector's FPN wants multiples of 32 the same way)."""
    import onnx
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1], name="down"),
             helper.make_node("Resize", ["c", "", "scales"], ["u"], mode="nearest", name="up"),
             helper.make_node("Add", ["x", "u"], ["y"], name="skip")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])], [w, scales])
    path = tmp_path / "even.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_shapes_inside_a_profile_the_model_cannot_run_are_input_errors(tmp_path):
    """A range whose MIN the model cannot run is refused by name when the build times it
    (an internal error after the whole build, before); a bundle fed a shape inside its range
    that the model cannot run says so in one line (an internal error from the runtime)."""
    from deploycomp.errors import InputDataError

    model = _even_sizes_only(tmp_path)
    with pytest.raises(InputDataError, match=r"^--profile: the model does not run at its MIN \(x 1x3x9x9\): .*"
                                             r"give a range the model runs at$"):
        deploycomp.build(model, tmp_path / "odd", profiles=["x:1x3x9x9:1x3x16x16:1x3x32x32"])
    assert not (tmp_path / "odd").exists()
    deploycomp.build(model, tmp_path / "b", profiles=["x:1x3x8x8:1x3x16x16:1x3x32x32"])
    loaded = deploycomp.load(tmp_path / "b")
    assert loaded.run({"x": np.ones((1, 3, 12, 20), np.float32)})["y"].shape == (1, 3, 12, 20)
    with pytest.raises(InputDataError, match=r"^the bundle's runtime cannot run 'x' at 1x3x9x9 \(inside its --profile; "
                                             r"validated at 1x3x16x16\): ") as e:
        loaded.run({"x": np.ones((1, 3, 9, 9), np.float32)})
    assert "\n" not in str(e.value)
