"""Target profiles: every shipped one validates; bad ones fail naming the field."""

from __future__ import annotations

import re

import pytest
import yaml

from deploycomp.errors import ProfileError
from deploycomp.targets import list_targets, load_target

SHIPPED = [
    "intel-core-avx2", "intel-xeon-avx512-vnni", "intel-xeon-amx", "jetson-orin-nano", "jetson-orin-nano-super",
    "jetson-orin-nx",
    "jetson-agx-orin", "nvidia-t4", "nvidia-l4", "raspberry-pi-5", "android-arm64", "coral-edgetpu",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_validate(name):
    prof = load_target(name)
    assert prof.name == name
    assert prof.compute.source.startswith("http")
    assert set(prof.precisions) <= set(prof.fidelity)


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-orin-nano-super", "jetson-orin-nx", "jetson-agx-orin",
                                  "nvidia-l4"])
def test_fp32_on_tensor_core_gpus_is_estimated_at_tf32(name):
    """TensorRT runs fp32 convolutions and products as TF32 on the tensor cores by default
    from Ampere on: the fp32 peak of those profiles is half their fp16 one, not the CUDA
    cores' (YOLO11 fp32 on the Orins had been estimated 2.2-5.5x slower than published).
    The T4 (Turing) has no TF32."""
    peaks = load_target(name).compute.peak_tops
    assert peaks["fp32"] == pytest.approx(peaks["fp16"] / 2, rel=0.01)
    t4 = load_target("nvidia-t4").compute.peak_tops
    assert t4["fp32"] < t4["fp16"] / 4


def test_list_includes_host_and_all_shipped():
    assert set(list_targets()) == {"host", *SHIPPED}


def test_host_resolves_to_an_x86_openvino_profile():
    host = load_target("host")
    assert host.name == "host"
    assert host.backend == "openvino"
    assert host.resolved_from in {"intel-core-avx2", "intel-xeon-avx512-vnni", "intel-xeon-amx"}


def test_unknown_target():
    with pytest.raises(ProfileError, match="unknown target 'jetson-orin-mega'"):
        load_target("jetson-orin-mega")


def _write(tmp_path, data, name="custom.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_user_profile_extends_a_shipped_one(tmp_path):
    path = _write(tmp_path, {"extends": "jetson-orin-nx", "name": "orin-nx-8gb", "dla_cores": 1,
                              "budgets": {"max_memory_mb": 1024}})
    prof = load_target(path)
    base = load_target("jetson-orin-nx")
    assert (prof.name, prof.dla_cores, prof.budgets.max_memory_mb) == ("orin-nx-8gb", 1, 1024)
    assert prof.compute == base.compute and prof.budgets.max_artifact_mb == base.budgets.max_artifact_mb
    assert prof.digest() != base.digest()


def test_missing_field_is_named(tmp_path):
    data = load_target("nvidia-t4").model_dump(exclude={"source_file", "resolved_from"})
    del data["backend"]
    with pytest.raises(ProfileError, match=r"field 'backend': Field required"):
        load_target(_write(tmp_path, data))


def test_wrong_type_is_named(tmp_path):
    data = load_target("nvidia-t4").model_dump(exclude={"source_file", "resolved_from"})
    data["compute"]["memory_bandwidth_gbps"] = "fast"
    with pytest.raises(ProfileError, match=r"field 'compute.memory_bandwidth_gbps'"):
        load_target(_write(tmp_path, data))


def test_unknown_key_and_inconsistent_precision(tmp_path):
    data = load_target("nvidia-t4").model_dump(exclude={"source_file", "resolved_from"})
    with pytest.raises(ProfileError, match="field 'colour'"):
        load_target(_write(tmp_path, data | {"colour": "green"}))
    with pytest.raises(ProfileError, match="preferred_precision 'bf16'"):
        load_target(_write(tmp_path, data | {"preferred_precision": "bf16"}))


def test_not_yaml_and_extends_cycle(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_target(bad)
    with pytest.raises(ProfileError, match="a profile must be a YAML mapping"):
        load_target(_write(tmp_path, ["a", "b"], "list.yaml"))
    with pytest.raises(ProfileError, match="extends unknown profile"):
        load_target(_write(tmp_path, {"extends": "nope"}, "ext.yaml"))


def test_host_offers_bf16_where_the_cpu_computes_it(monkeypatch):
    """An AVX-512 VNNI CPU with AVX512-BF16 but no AMX (AMD Zen 4) resolves to the VNNI
    profile, which lists no bf16; host adds it, with the shipped bf16 budget. Without the
    flag it does not."""
    from deploycomp import targets

    vnni = {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"}
    for flags, offered in ((vnni | {"avx512_bf16"}, True), (vnni, False)):
        monkeypatch.setattr(targets, "cpu_features", lambda flags=flags: flags)
        monkeypatch.setattr(targets.platform, "machine", lambda: "x86_64")
        host = targets._host_profile.__wrapped__()
        assert host.resolved_from == "intel-xeon-avx512-vnni"
        assert ("bf16" in host.precisions) is offered
        if offered:
            assert host.precisions == ["fp32", "fp16", "bf16", "int8"] and host.fidelity["bf16"].min_cosine == 0.995
            # estimated at AVX512-BF16's dot-product rate, twice fp32's (it had taken fp32's, unsaid)
            assert host.compute.peak_tops["bf16"] == 2 * host.compute.peak_tops["fp32"]
            assert host.digest() != targets.load_profile_file(targets._profiles_dir()
                                                              / "intel-xeon-avx512-vnni.yaml").digest()


def test_listing_targets_loads_neither_onnx_nor_a_backend_sdk():
    """`deploycomp targets` reads profiles and which backends are installed, nothing else:
    a support-report helper had pulled in onnx-ir (and with it sympy), 0.22 -> 0.78 s a call."""
    import subprocess
    import sys

    code = ("import sys; from deploycomp.cli import main\n"
            "try:\n    main(['targets'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('onnx', 'onnx_ir', 'onnxruntime', 'openvino', 'ai_edge_litert') "
            "if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr


@pytest.mark.parametrize("extra, needle", [
    ({"runs_here": True}, "field 'runs_here' is set by deploycomp, not by a profile file"),
    ({"family_members": ["a", "b"]}, "field 'family_members' is set by deploycomp"),
    ({"compute": {"peak_tops": {"fp32": -1.0}}}, "field 'compute.peak_tops.fp32': Input should be greater than 0"),
    ({"pipeline": "tflitee"}, "field 'pipeline': Input should be"),
    ({"max_opset": -3}, "field 'max_opset'"),
])
def test_what_a_profile_file_may_not_say_is_refused_when_it_loads(tmp_path, extra, needle):
    """A probe's own profiles: ``runs_here: true`` held this machine's time to a device's
    latency budget; ``family_members`` and an empty or negative ``peak_tops`` were internal
    errors or silent nonsense after validation; a ``pipeline`` typo failed only at build."""
    path = _write(tmp_path, {"extends": "raspberry-pi-5", **extra})
    with pytest.raises(ProfileError, match=needle.replace("(", r"\(").replace(")", r"\)")) as e:
        load_target(path)
    assert "\n" not in str(e.value)


def test_every_precision_needs_its_peak(tmp_path):
    """An fp16 peak left out had been estimated at the fp32 one, unsaid."""
    data = load_target("raspberry-pi-5").model_dump(exclude={"source_file", "resolved_from"})
    del data["compute"]["peak_tops"]["fp16"]
    with pytest.raises(ProfileError, match=r"compute.peak_tops has no peak for precision\(s\) \['fp16'\]"):
        load_target(_write(tmp_path, data))


def test_a_key_given_twice_in_a_profile_is_refused(tmp_path):
    (tmp_path / "dup.yaml").write_text("extends: raspberry-pi-5\nbudgets: {max_artifact_mb: 1}\n"
                                       "budgets: {max_memory_mb: 100}\n")
    with pytest.raises(ProfileError, match="key 'budgets' given twice in one mapping"):
        load_target(tmp_path / "dup.yaml")


def test_extends_takes_a_path_relative_to_the_profile(tmp_path):
    """A company base profile shared by its boards: ``extends: ../base.yaml`` (a path had
    been read as a shipped name); a cycle through files is named; an upper-case suffix is a file."""
    (tmp_path / "boards").mkdir()
    _write(tmp_path, {"extends": "raspberry-pi-5", "budgets": {"max_memory_mb": 3000}}, "base.yaml")
    board = _write(tmp_path / "boards", {"extends": "../base.yaml", "name": "pi-board"}, "pi.YAML")
    prof = load_target(str(board))
    assert prof.name == "pi-board" and prof.budgets.max_memory_mb == 3000 and prof.backend == "tflite"
    _write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    _write(tmp_path, {"extends": "a.yaml"}, "b.yaml")
    with pytest.raises(ProfileError, match="'extends' cycle"):
        load_target(tmp_path / "a.yaml")
    with pytest.raises(ProfileError, match=r"extends unknown profile 'nope' \(a shipped profile's name, or a YAML"):
        load_target(_write(tmp_path, {"extends": "nope"}, "c.yaml"))


def test_the_pipeline_names_a_profile_may_give_are_the_optimizers():
    from deploycomp.passes.pipelines import PIPELINES
    from deploycomp.targets import PIPELINE_NAMES

    assert set(PIPELINE_NAMES) == set(PIPELINES)


def test_max_opset_is_held_to(tiny_conv, tmp_path):
    """``max_opset`` had been read by nothing: a profile saying 11 built opset-17 bundles."""
    import deploycomp
    from deploycomp.errors import UnsupportedError

    path = _write(tmp_path, {"extends": "raspberry-pi-5", "max_opset": 11}, "old.yaml")
    with pytest.raises(UnsupportedError, match=r"takes ONNX opsets up to 11 \(max_opset\); the model is at opset"):
        deploycomp.build(tiny_conv, tmp_path / "out", target=str(path))
    assert not (tmp_path / "out").exists()


def test_a_bundle_says_where_its_profile_came_from(tiny_conv, tmp_path, caplog):
    """The ``extends`` chain is in the manifest, nearest first, and ``target.shipped`` says
    whether the profile is one deploycomp ships; a file that takes a shipped target's name
    is warned about (its bundles had read as that target's, with nothing saying otherwise)."""
    import json
    import logging

    import deploycomp

    (tmp_path / "boards").mkdir()
    _write(tmp_path, {"extends": "raspberry-pi-5", "budgets": {"max_memory_mb": 3000}}, "base.yaml")
    board = _write(tmp_path / "boards", {"extends": "../base.yaml", "name": "pi-board"}, "pi.yaml")
    assert load_target(str(board)).extended_from == ["../base.yaml", "raspberry-pi-5"]
    assert load_target("raspberry-pi-5").extended_from == [] and load_target("host").extended_from == []
    with caplog.at_level(logging.WARNING, logger="deploycomp.targets"):
        impostor = load_target(_write(tmp_path, {"extends": "../base.yaml"}, "boards/jetson-orin-nano.yaml"))
    assert impostor.name == "jetson-orin-nano" and impostor.backend == "tflite"
    assert "calls itself 'jetson-orin-nano', a shipped target's name" in caplog.text
    # (the chain is provenance, not content: the same values give the same digest)
    flat = _write(tmp_path, {**yaml.safe_load((tmp_path / "base.yaml").read_text()), "name": "pi-board"}, "flat.yaml")
    assert load_target(str(flat)).digest() == load_target(str(board)).digest()
    with pytest.raises(ProfileError, match="field 'extended_from' is set by deploycomp"):
        load_target(_write(tmp_path, {"extends": "raspberry-pi-5", "extended_from": ["x"]}, "forged.yaml"))

    for target, shipped, chain in ((str(board), False, ["../base.yaml", "raspberry-pi-5"]),
                                   ("raspberry-pi-5", True, []), ("jetson", True, [])):
        out = tmp_path / f"out-{shipped}-{len(chain)}-{target[-5:]}"
        deploycomp.build(tiny_conv, out, target=target)
        record = json.loads((out / "manifest.json").read_text())["target"]
        assert (record["shipped"], record["profile"]["extended_from"]) == (shipped, chain), target


@pytest.mark.parametrize("extra,error", [
    ({"unsupported_ops": ["conv"]}, r"field 'unsupported_ops': not an ONNX op type: 'conv' \(did you mean 'Conv'\?\)"),
    ({"device": "EDGETPUU"}, r"device 'EDGETPUU' is not one a tflite profile names \(CPU, DSP, EDGETPU, GPU, NPU\)"),
])
def test_a_profiles_free_text_fields_are_checked(tiny_conv, tmp_path, extra, error):
    """``unsupported_ops: [conv]`` matched no node and a profile meant to refuse convolutions
    built them; a device typo built a plain CPU bundle for an Edge TPU profile."""
    import deploycomp

    with pytest.raises(ProfileError, match=error):
        deploycomp.build(tiny_conv, tmp_path / "out", target=str(_write(tmp_path, {"extends": "raspberry-pi-5", **extra},
                                                                         "typo.yaml")))
    assert not (tmp_path / "out").exists()
    # `targets show`, where a user checks a profile, refuses it the same way (it had shown it)
    from click.testing import CliRunner

    from deploycomp.cli import main

    shown = CliRunner().invoke(main, ["targets", "show", str(tmp_path / "typo.yaml")])
    assert shown.exit_code == 5 and re.search(error, shown.output), shown.output
    assert load_target(_write(tmp_path, {"extends": "intel-core-avx2", "device": "GPU.1"}, "gpu.yaml")).device == "GPU.1"


def test_a_profile_path_that_is_no_file_or_no_text_is_refused(tmp_path):
    """``--target /dev/zero`` had filled 23 GB of memory until the kernel killed it; a FIFO
    hung; a binary file was an internal error (UnicodeDecodeError)."""
    import os

    os.mkfifo(tmp_path / "fifo.yaml")
    for path in ("/dev/zero", str(tmp_path / "fifo.yaml")):
        with pytest.raises(ProfileError, match="the profile is not a regular file"):
            load_target(path)
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ProfileError, match="not a text file, so no YAML profile"):
        load_target(str(tmp_path / "bin.yaml"))
    (tmp_path / "big.yaml").write_text(f"name: {'9' * 5000}\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_target(str(tmp_path / "big.yaml"))


def test_an_edited_base_profile_is_read_again_in_the_same_process(tmp_path):
    """A profile is read once per process, but per version of every file of its ``extends``
    chain: a service's later build had kept a base's old budgets after the base was edited
    (the cache was keyed on the named file's version alone)."""
    import os

    base, board = tmp_path / "base.yaml", tmp_path / "board.yaml"
    base.write_text("extends: raspberry-pi-5\nname: base\nbudgets: {max_artifact_mb: 0.05}\n")
    board.write_text("extends: base.yaml\nname: board\n")
    assert load_target(str(board)).budgets.max_artifact_mb == 0.05
    assert load_target(str(board)) is load_target(str(board))  # read once while nothing changes
    base.write_text("extends: raspberry-pi-5\nname: base\nbudgets: {max_artifact_mb: 150}\n")
    os.utime(base, ns=(base.stat().st_atime_ns, base.stat().st_mtime_ns + 1_000_000_000))  # (a coarse clock)
    assert load_target(str(board)).budgets.max_artifact_mb == 150
