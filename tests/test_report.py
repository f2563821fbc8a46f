"""``report.html`` for people: charts that carry information, metrics with their meaning.

Structural checks on a real build's report, and (where Debian's Chromium is installed, as
``.ci/run`` does) a real headless browser renders it to a screenshot that is not blank.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import deploycomp
from deploycomp.report import render_report


@pytest.fixture
def bundle(tiny_conv, tmp_path):
    np.savez(tmp_path / "v.npz", x=np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32))
    deploycomp.build(tiny_conv, tmp_path / "b", validation_data=tmp_path / "v.npz", inputs={"x": (1, 3, 16, 16)})
    return tmp_path / "b"


def test_report_links_the_manifest_and_separates_measurement_from_estimate(bundle):
    page = (bundle / "report.html").read_text()
    assert '<a href="manifest.json">manifest.json</a>' in page and "<pre>" not in page  # linked, not dumped
    assert "Measured on this machine" in page and "Roofline estimate" not in page  # host: measured only
    assert page.count("<h2>Latency") == 1
    assert "Error per output against its budget (log scale" in page and "1e-9" in page
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["measured"] = {k: v for k, v in manifest["measured"].items() if "latency" not in k}  # as for a device
    other = render_report(manifest)
    assert "Roofline estimate for host" in other and "Measured on this machine" not in other
    # both times at the profile's efficiency, said so ("at the device's peak" had been said of
    # 35% of it), and no `engine` command for a bundle that is no TensorRT engine
    efficiency = manifest["target"]["profile"]["compute"]["efficiency"]
    assert f"compute at {efficiency:.0%} of peak" in other and f"memory at {efficiency:.0%} of bandwidth" in other
    assert "deploycomp engine" not in other and "timing the bundle on the device measures" in other
    manifest["backend"]["name"] = "tensorrt"
    manifest["validation"]["latency_estimate"] |= {"kernel_overhead_ms": 0.8, "kernels": 100}
    engine = render_report(manifest)
    assert "<code>deploycomp engine</code> on the device measures" in engine
    assert "100 kernels&#x27; fixed time" in engine and "plus a fixed time per kernel" in engine
    busy = json.loads((bundle / "manifest.json").read_text())
    busy["measured"]["latency"]["p90_ms"] = 5 * busy["measured"]["latency"]["median_ms"]
    for record in ("latency", "reference_latency"):  # (however busy this test machine was)
        busy["measured"][record]["busy_elsewhere"] = 0.0
    assert "Timing unsteady (a p90 5.0x its median)" in render_report(busy)
    busy["measured"]["reference_latency"]["busy_elsewhere"] = 0.5
    assert "Timed while other processes used 50% of this machine" in render_report(busy)


def test_the_report_says_how_to_load_the_artifact_as_validated(bundle):
    """OpenVINO's CPU plugin runs bf16 by default on CPUs that have it: an fp32 bundle
    loaded with stock settings missed its own budget (PP-OCRv3 det 0.9969 on an AMD EPYC),
    and only the manifest said what to pass."""
    page = (bundle / "report.html").read_text()
    assert ("Loaded without deploycomp, compile it with <code>PERFORMANCE_HINT=LATENCY, INFERENCE_PRECISION_HINT=f32"
            "</code> to run what was validated (the CPU plugin's default precision is bf16") in page
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["backend"]["runtime"]["compile_config"]  # (a runtime that records none: TFLite)
    assert "Loaded without deploycomp" not in render_report(manifest)


def test_top1_is_shown_with_whether_it_is_budgeted(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "top1_agreement" in manifest["validation"]["outputs"]["probs"]
    assert "not budgeted" in render_report(manifest)
    manifest["target"]["profile"]["fidelity"]["fp32"]["min_top1_agreement"] = 0.99
    assert "(budget 0.99)" in render_report(manifest)


def test_guessed_inputs_are_flagged(tiny_conv, tmp_path):
    deploycomp.build(tiny_conv, tmp_path / "b", inputs={"x": (1, 3, 16, 16)})
    assert "checked on <b>guessed inputs</b>" in (tmp_path / "b" / "report.html").read_text()


def test_what_the_data_says_of_the_check_is_in_the_report(tiny_conv, tmp_path):
    """The data notes (a validation set of 6 samples: up to 39% of inputs like them could
    miss a budget each met) were in the summary, the manifest and --json, not the report."""
    import numpy as np

    np.savez(tmp_path / "v.npz", x=np.random.default_rng(0).random((6, 1, 3, 16, 16), dtype=np.float32))
    deploycomp.build(tiny_conv, tmp_path / "b", inputs={"x": (1, 3, 16, 16)}, validation_data=tmp_path / "v.npz")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["validation"]["data"]["miss_share_95"] == 0.393
    note = manifest["validation"]["data"]["notes"][0]
    assert note.startswith("validation data: 6 samples: even where each meets the budget, up to 39%")
    assert f'<p class="warn">{note}</p>' in (tmp_path / "b" / "report.html").read_text()


def test_the_report_says_which_shapes_the_bundle_takes_and_what_was_assumed(dynamic_hw_relu, tiny_conv, tmp_path):
    """A TensorRT bundle's profile range and the build's assumptions were in the manifest
    alone (a probe found no shapes, profiles or assumptions in any report)."""
    deploycomp.build(dynamic_hw_relu, tmp_path / "j", target="jetson-orin-nano",
                     profiles=["x:1x3x8x8:1x3x16x16:1x3x32x32"])
    page = (tmp_path / "j" / "report.html").read_text()
    assert ("[1, 3, 8, 8] to [1, 3, 32, 32] (--profile, OPT [1, 3, 16, 16]; validated at [1, 3, 16, 16])"
            in page)
    deploycomp.build(tiny_conv, tmp_path / "h")  # its batch is dynamic: set to 1, and said
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    page = (tmp_path / "h" / "report.html").read_text()
    assert "<code>x</code></td><td>float32</td><td>[1, 3, 16, 16]" in page
    assert manifest["assumptions"] and all(a.replace("'", "&#x27;") in page for a in manifest["assumptions"])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_a_real_browser_renders_it(bundle, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}",
                    (bundle / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    img = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert img.shape == (1400, 1000)
    assert img.std() > 20  # text, tables and bars, not a blank page
    assert (img < 128).mean() > 0.01


def test_the_int8_boosters_say_how_tensors_were_encoded_and_rescaled():
    from deploycomp.report import _boosters_text

    quant = {"equalized": [{"spread_before": 3840.0, "spread_after": 16.0, "explicit_mul": True},
                           {"spread_before": 12.0, "spread_after": 1.0}],
             "per_channel_activations": 13, "bias_corrected_layers": 45,
             "smoothing": {"sites": [{"shift": True}, {"explicit_mul": True}, {}], "kept": True,
                           "nmse_all_int8_without": 0.066, "nmse_all_int8_with": 0.012}}
    text = _boosters_text(quant)
    assert "3 tensors smoothed (1 shifted, 1 through a per-channel Mul of their own), kept" in text
    quant["smoothing"] |= {"kept": False, "budget_fallback": "percentile smoothed had the least judged error but "
                                                             "missed the budget all-int8; percentile met it"}
    assert "dropped: all-int8 NMSE 0.066 without, 0.012 with (percentile smoothed had" in _boosters_text(quant)
    del quant["smoothing"]["budget_fallback"]  # auto ranges record it with the range choice
    assert "0.012 with (the budget's all-int8 check preferred the plain model)" in _boosters_text(quant)
    assert "2 tensors equalized (widest channel spread 3840x &rarr; 16x; 1 through a per-channel Mul" in text
    assert "13 depthwise inputs with a scale per channel" in text and "45 layer biases corrected" in text
    assert _boosters_text({}) == ""


def test_no_share_of_macs_is_said_to_run_fp16_where_the_bundle_executes_f32(bundle, capsys):
    """A host fp16 build whose precision search kept a segment fp32, then executed f32 (no
    native f16 here), had said "96% of MACs fp16" in its summary and report while every
    compute layer ran fp32 kernels."""
    from deploycomp.cli import _print_summary

    manifest = json.loads((bundle / "manifest.json").read_text())
    search = {"met": True, "segments": 14, "fp32_segments": ["s3"], "fp16_mac_share": 0.9559, "ranking": [],
              "judged_on": "the validation inputs"}
    manifest["fp16"] = {"search": search, "judged_on_samples": 3, "fp32_tensors": {}}
    _print_summary(manifest, bundle, as_json=False)
    assert "(96% of MACs fp16)" in capsys.readouterr().out
    assert "96% of the compute layers' MACs run fp16" in render_report(manifest)
    manifest["fp16"]["executes_fp32"] = "no native f16 on this CPU"
    _print_summary(manifest, bundle, as_json=False)
    out = capsys.readouterr().out
    assert "1 of 14 segments kept fp32" in out and "MACs fp16" not in out
    page = render_report(manifest)
    assert "Executes fp32: no native f16 on this CPU" in page and "MACs run fp16" not in page


def test_a_min_top1_budget_is_said_budgeted_in_the_fidelity_table(tiny_conv, tmp_path):
    """``--min-top1 0.9``: the budgets table listed ``top1[probs]`` checked, and the same
    report's fidelity table called top-1 "not budgeted" (it read the profile's only)."""
    np.savez(tmp_path / "v.npz", x=np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32))
    runner = deploycomp.build(tiny_conv, tmp_path / "b", validation_data=tmp_path / "v.npz", min_top1=0.9)
    page = (tmp_path / "b" / "report.html").read_text()
    assert "top1[probs]" in page and "(budget 0.9)" in page and "not budgeted" not in page
    assert runner.manifest["validation"]["outputs"]["probs"]["top1_agreement"] >= 0.9


def test_float_layers_are_counted_as_int8_layers_are():
    """``float_layers`` lists compute layers and the element-wise nodes a search kept float;
    the summary had counted both beside ``int8_layers`` (compute layers only): one TFLite
    build "53 int8, 1 float", another of the same model "0 int8, 70 float"."""
    from deploycomp.report import float_count

    quant = {"int8_layers": 0, "float_layers": ["conv1", "conv2", "add1", "mul1"], "float_compute_layer_count": 2}
    assert float_count(quant) == "2 float + 2 element-wise nodes"
    assert float_count(quant | {"float_compute_layer_count": 4}) == "4 float"
    assert float_count({"float_layers": ["a", "b"]}) == "2 float"  # an older manifest: one count
