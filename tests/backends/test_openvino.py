"""The OpenVINO adapter: what a bundle executes is what its precision promises."""

from __future__ import annotations

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


def test_the_hint_follows_the_build_precision():
    import openvino as ov

    from deploycomp.backends.openvino.adapter import _cpu_hint

    core = ov.Core()
    assert _cpu_hint(core, "CPU", "fp32") == "f32" and _cpu_hint(core, "CPU", "int8") == "f32"
    assert _cpu_hint(core, "CPU", "bf16") == "bf16"
    assert _cpu_hint(core, "CPU", "fp16") in ("f16", "f32")
