"""Target profiles: every shipped one validates; bad ones fail naming the field."""

from __future__ import annotations

import pytest
import yaml

from deploycomp.errors import ProfileError
from deploycomp.targets import list_targets, load_target

SHIPPED = [
    "intel-core-avx2", "intel-xeon-avx512-vnni", "intel-xeon-amx", "jetson-orin-nano", "jetson-orin-nx",
    "jetson-agx-orin", "nvidia-t4", "nvidia-l4", "raspberry-pi-5", "android-arm64", "coral-edgetpu",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_validate(name):
    prof = load_target(name)
    assert prof.name == name
    assert prof.compute.source.startswith("http")
    assert set(prof.precisions) <= set(prof.fidelity)


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
