"""Signed, verifiable bundles (deploycomp.signing): what sign and verify promise.

Every test works on a copy of a real bundle built from the tiny conv net (OpenVINO for
``host``; typed ONNX + build plan for ``jetson-orin-nano``), with keys generated here by
``cryptography``. A verification failure is a VerificationError (exit code 11) whose
one-line message names the first file, in sorted path order, that is wrong.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("cryptography")  # deploycomp[sign]; in deploycomp[test] too

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402

import deploycomp  # noqa: E402
from deploycomp.errors import DeployError, VerificationError  # noqa: E402
from deploycomp.signing import SIGNATURE, BundleVerificationError, check_digests, sign_bundle, verify_bundle  # noqa: E402


# -- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def _built(tmp_path_factory):
    """Bundles built once per module, by target; each test gets its own copy."""
    return {"root": tmp_path_factory.mktemp("built")}


def _bundle(built, tiny_conv, tmp_path, target: str) -> Path:
    src = built["root"] / target
    if not src.exists():
        deploycomp.build(tiny_conv, src, target=target)
    dst = tmp_path / "b"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def bundle(_built, tiny_conv, tmp_path) -> Path:
    """An OpenVINO bundle: manifest.json, model.bin, model.xml, report.html."""
    return _bundle(_built, tiny_conv, tmp_path, "host")


@pytest.fixture
def trt_bundle(_built, tiny_conv, tmp_path) -> Path:
    """A TensorRT bundle as CI builds it: model.onnx, build_plan.json, reference.npz, ..."""
    return _bundle(_built, tiny_conv, tmp_path, "jetson-orin-nano")


def _write_pair(folder: Path, name: str, key, password: bytes | None = None) -> tuple[Path, Path]:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """name -> (private PEM path, public PEM path)."""
    folder = tmp_path_factory.mktemp("keys")
    return {
        "ci": _write_pair(folder, "ci", ed25519.Ed25519PrivateKey.generate()),
        "other": _write_pair(folder, "other", ed25519.Ed25519PrivateKey.generate()),
        "device": _write_pair(folder, "device", ec.generate_private_key(ec.SECP256R1())),
        "p384": _write_pair(folder, "p384", ec.generate_private_key(ec.SECP384R1())),
    }


def _files(bundle: Path) -> list[str]:
    return sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())


def _flip_one_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _fails(bundle: Path, public_key: Path | None, path: str | None, problem: str, *words: str) -> str:
    with pytest.raises(BundleVerificationError) as info:
        verify_bundle(bundle, public_key)
    e = info.value
    message = str(e)
    assert isinstance(e, VerificationError) and e.exit_code == 11
    assert "\n" not in message
    assert (e.path, e.problem) == (path, problem), message
    if path:
        assert path in message
    for word in words:
        assert word in message, message
    return message


# -- sign, then verify ---------------------------------------------------------------

def test_sign_then_verify_with_the_public_key(bundle, keys):
    private, public = keys["ci"]
    path = sign_bundle(bundle, private)
    assert path == bundle / SIGNATURE and path.is_file()
    result = verify_bundle(bundle, public)
    assert result["ok"] and result["status"] == "verified" and result["algorithm"] == "ed25519"
    # every file of the bundle is covered except the signature itself
    assert result["files"] == [f for f in _files(bundle) if f != SIGNATURE]
    assert {"manifest.json", "report.html", "model.xml", "model.bin"} <= set(result["files"])
    assert result["key_id"].startswith("sha256:")


@pytest.mark.parametrize("name, algorithm", [("device", "ecdsa-p256-sha256"), ("p384", "ecdsa-p384-sha384")])
def test_ecdsa_keys_sign_and_verify_too(bundle, keys, name, algorithm):
    private, public = keys[name]
    sign_bundle(bundle, private)
    assert verify_bundle(bundle, public)["algorithm"] == algorithm


def test_without_a_key_the_signature_is_checked_against_the_key_it_carries(bundle, keys):
    """Proves the bundle is as some key holder signed it; "signed", not "verified": whose key
    that is, only --public-key says."""
    sign_bundle(bundle, keys["ci"][0])
    result = verify_bundle(bundle)
    assert result["status"] == "signed"
    doc = json.loads((bundle / SIGNATURE).read_text())
    assert result["key_id"] == doc["key_id"]


def test_an_unsigned_bundle_verifies_its_digests_and_says_unsigned(bundle):
    result = verify_bundle(bundle)
    assert result["ok"] and result["status"] == "unsigned" and result["key_id"] is None
    assert result["files"] == _files(bundle)
    # the digests checked: every artifact and the report, not the manifest (the byte count is
    # theirs; "4 files" had been said beside the bytes of 3)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert result["checked"] == len(manifest["artifacts"]) + 1 == len(_files(bundle)) - 1
    assert result["bytes"] == sum(a["bytes"] for a in manifest["artifacts"]) + manifest["report"]["bytes"]
    from deploycomp.cli import main
    from click.testing import CliRunner

    said = CliRunner().invoke(main, ["verify", str(bundle)]).output
    assert f"ok, {result['checked']} files match their digests" in said


def test_resigning_replaces_the_signature(bundle, keys):
    sign_bundle(bundle, keys["ci"][0])
    sign_bundle(bundle, keys["other"][0])
    assert verify_bundle(bundle, keys["other"][1])["status"] == "verified"
    _fails(bundle, keys["ci"][1], SIGNATURE, "wrong-key", "wrong key")
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_failed_signing_leaves_the_old_signature(bundle, keys, tmp_path):
    sign_bundle(bundle, keys["ci"][0])
    before = (bundle / SIGNATURE).read_bytes()
    with pytest.raises(DeployError, match="a public key; sign with the private one"):
        sign_bundle(bundle, keys["other"][1])
    rsa_key = _write_pair(tmp_path, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))[0]
    with pytest.raises(DeployError, match="unsupported key type RSA"):
        sign_bundle(bundle, rsa_key)
    assert (bundle / SIGNATURE).read_bytes() == before


def test_an_encrypted_private_key_needs_its_password(bundle, tmp_path):
    private, public = _write_pair(tmp_path, "enc", ed25519.Ed25519PrivateKey.generate(), password=b"s3cret")
    with pytest.raises(DeployError, match="encrypted"):
        sign_bundle(bundle, private)
    sign_bundle(bundle, private, password=b"s3cret")
    assert verify_bundle(bundle, public)["status"] == "verified"


# -- what verify catches ---------------------------------------------------------------

@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_one_changed_byte_of_an_artifact_fails_naming_it(bundle, keys, signed):
    if signed:
        sign_bundle(bundle, keys["ci"][0])
    _flip_one_byte(bundle / "model.bin")
    message = _fails(bundle, keys["ci"][1] if signed else None, "model.bin", "changed", "sha256")
    assert ("since signing" in message) == signed


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_a_removed_file_fails_naming_it(bundle, keys, signed):
    if signed:
        sign_bundle(bundle, keys["ci"][0])
    (bundle / "model.xml").unlink()
    _fails(bundle, keys["ci"][1] if signed else None, "model.xml", "missing", "missing")


def test_a_removed_report_fails_when_signed(bundle, keys):
    """The signature covers report.html too (the manifest's artifacts do not)."""
    sign_bundle(bundle, keys["ci"][0])
    (bundle / "report.html").unlink()
    _fails(bundle, keys["ci"][1], "report.html", "missing")


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("added", ["notes.txt", "sub/payload.so", ".hidden"])
def test_an_added_file_fails_naming_it(bundle, keys, signed, added):
    if signed:
        sign_bundle(bundle, keys["ci"][0])
    (bundle / added).parent.mkdir(exist_ok=True)
    (bundle / added).write_text("not from the build")
    _fails(bundle, keys["ci"][1] if signed else None, added, "extra", "extra file")


def test_an_edited_manifest_fails_naming_it(bundle, keys):
    sign_bundle(bundle, keys["ci"][0])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["precision"] = "fp16"  # still valid JSON, still a bundle format
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _fails(bundle, keys["ci"][1], "manifest.json", "changed", "since signing")


def test_a_changed_artifact_with_a_matching_manifest_does_not_pass_the_signature(bundle, keys):
    """Rewriting the manifest's digest for a swapped artifact fools the digest check, not
    the signature: manifest.json ('ma...') sorts before model.bin and is named."""
    sign_bundle(bundle, keys["ci"][0])
    _flip_one_byte(bundle / "model.bin")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        if entry["path"] == "model.bin":
            entry["sha256"] = hashlib.sha256((bundle / "model.bin").read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    assert check_digests(bundle)  # the digests alone are fooled
    _fails(bundle, keys["ci"][1], "manifest.json", "changed", "since signing")


def test_unsigned_a_manifest_digest_that_disagrees_with_its_file_fails(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _fails(bundle, None, manifest["artifacts"][0]["path"], "changed")


def test_unsigned_a_changed_or_missing_report_fails_and_an_older_bundles_report_is_not_checked(bundle):
    """The report is what a reviewer reads: an unsigned bundle's ``report.html`` edited
    from PASS to FAIL (or removed) had verified. The manifest now names its digest; a
    bundle written before that (no ``report`` entry) verifies as it did."""
    report = bundle / "report.html"
    text = report.read_text()
    assert "PASS" in text
    report.write_text(text.replace("PASS", "FAIL"))
    _fails(bundle, None, "report.html", "changed")
    report.unlink()
    _fails(bundle, None, "report.html", "missing")
    report.write_text(text)
    assert verify_bundle(bundle)["ok"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["report"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    report.write_text("edited")
    assert verify_bundle(bundle)["ok"]


@pytest.mark.parametrize("part", ["io", "backend"])
def test_verify_refuses_a_manifest_that_run_refuses(bundle, part):
    """A manifest without ``io`` or ``backend`` had verified (exit 0) while ``run``,
    ``inspect`` and ``diff`` refused it as damaged (exit 11): one check for all of them."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest[part]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _fails(bundle, None, "manifest.json", "manifest", "damaged manifest")


def test_a_wrong_public_key_fails(bundle, keys):
    sign_bundle(bundle, keys["ci"][0])
    _fails(bundle, keys["other"][1], SIGNATURE, "wrong-key", "wrong key", str(keys["other"][1]))
    _fails(bundle, keys["device"][1], SIGNATURE, "wrong-key")


def test_a_private_key_given_to_verify_is_a_usage_error(bundle, keys):
    sign_bundle(bundle, keys["ci"][0])
    with pytest.raises(DeployError, match="a private key; verify with the public one") as info:
        verify_bundle(bundle, keys["ci"][0])
    assert not isinstance(info.value, VerificationError)


def test_a_tampered_signature_fails(bundle, keys):
    sign_bundle(bundle, keys["ci"][0])
    doc = json.loads((bundle / SIGNATURE).read_text())
    doc["signed"]["files"][1]["sha256"] = "0" * 64  # a signed digest edited
    (bundle / SIGNATURE).write_text(json.dumps(doc))
    _fails(bundle, keys["ci"][1], SIGNATURE, "signature", "tampered")
    _fails(bundle, None, SIGNATURE, "signature", "tampered")  # the key it carries does not sign that either


def test_a_signature_of_another_bundle_fails(bundle, keys, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    _flip_one_byte(other / "report.html", offset=10)
    sign_bundle(other, keys["ci"][0])
    shutil.copy(other / SIGNATURE, bundle / SIGNATURE)
    _fails(bundle, keys["ci"][1], "report.html", "changed", "since signing")


def test_a_corrupt_signature_file_fails(bundle, keys):
    (bundle / SIGNATURE).write_text("{not json")
    _fails(bundle, None, SIGNATURE, "signature", "corrupt")


def test_a_public_key_but_no_signature_fails(bundle, keys):
    _fails(bundle, keys["ci"][1], SIGNATURE, "unsigned", "unsigned")


def test_the_first_problem_in_sorted_path_order_is_named(bundle, keys):
    sign_bundle(bundle, keys["ci"][0])
    _flip_one_byte(bundle / "model.xml")
    (bundle / "model.bin").unlink()
    (bundle / "zzz.txt").write_text("extra")
    _fails(bundle, keys["ci"][1], "model.bin", "missing")
    (bundle / "aaa.txt").write_text("extra")
    _fails(bundle, keys["ci"][1], "aaa.txt", "extra")


def test_a_symlink_is_not_a_bundle_file(bundle, keys, tmp_path):
    outside = tmp_path / "outside.bin"
    shutil.move(bundle / "model.bin", outside)
    os.symlink(outside, bundle / "model.bin")
    _fails(bundle, None, "model.bin", "not-a-file", "symbolic link")
    with pytest.raises(BundleVerificationError, match="not a regular file"):
        sign_bundle(bundle, keys["ci"][0])


def test_a_manifest_path_outside_the_bundle_fails(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][0]["path"] = "../../etc/passwd"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _fails(bundle, None, "manifest.json", "manifest", "not a file inside the bundle")


def test_not_a_bundle(tmp_path):
    """A folder without a manifest is no bundle: exit 2, as run, engine, diff and load say
    (verify and sign said 11, a failed verification)."""
    (tmp_path / "x").mkdir()
    with pytest.raises(DeployError, match="not a deploycomp bundle") as info:
        verify_bundle(tmp_path / "x")
    assert info.value.exit_code == 2
    with pytest.raises(DeployError, match="no such bundle folder"):
        verify_bundle(tmp_path / "nowhere")


# -- signing only what deploycomp built ------------------------------------------------

def test_sign_refuses_a_bundle_that_does_not_match_its_manifest(bundle, keys):
    _flip_one_byte(bundle / "model.xml")
    with pytest.raises(BundleVerificationError, match="model.xml: changed"):
        sign_bundle(bundle, keys["ci"][0])
    assert not (bundle / SIGNATURE).exists()


def test_sign_refuses_files_that_are_not_part_of_the_bundle(bundle, keys):
    (bundle / "notes.txt").write_text("mine")
    with pytest.raises(BundleVerificationError, match="notes.txt: not part of the bundle"):
        sign_bundle(bundle, keys["ci"][0])
    assert not (bundle / SIGNATURE).exists()


# -- TensorRT: the engine is added on the device ---------------------------------------

def _add_engine_as_deploycomp_engine_does(bundle: Path) -> None:
    """What ``deploycomp engine`` leaves (deploycomp/engine.py): model.engine and
    timing.cache written, the manifest's artifacts listing them, manifest.json replaced."""
    from deploycomp.bundle import MANIFEST, artifact_entries, read_manifest, write_json

    (bundle / "model.engine").write_bytes(b"serialized engine")
    (bundle / "timing.cache").write_bytes(b"timing cache")
    manifest = read_manifest(bundle)
    files = [bundle / a["path"] for a in manifest["artifacts"]] + [bundle / "model.engine", bundle / "timing.cache"]
    manifest["artifacts"] = artifact_entries(bundle, files)
    write_json(bundle / MANIFEST, manifest)


def test_tensorrt_engine_after_signing_is_named_as_not_covered_then_the_device_signs(trt_bundle, keys):
    ci_private, ci_public = keys["ci"]
    device_private, device_public = keys["device"]
    sign_bundle(trt_bundle, ci_private)
    assert verify_bundle(trt_bundle, ci_public)["status"] == "verified"  # on the device, before `engine`

    _add_engine_as_deploycomp_engine_does(trt_bundle)
    message = _fails(trt_bundle, ci_public, "model.engine", "unsigned-files", "model.engine, timing.cache",
                     "not covered by the signature", "deploycomp sign")
    assert "deploycomp engine" in message
    assert check_digests(trt_bundle)["artifacts"] == 5  # the manifest itself is consistent: load() runs it

    sign_bundle(trt_bundle, device_private)  # the device's own signature replaces CI's
    result = verify_bundle(trt_bundle, device_public)
    assert {"model.engine", "timing.cache", "model.onnx", "manifest.json"} <= set(result["files"])
    _fails(trt_bundle, ci_public, SIGNATURE, "wrong-key")


# -- the digest check load() runs ------------------------------------------------------

def test_check_digests_passes_and_names_the_first_changed_artifact(bundle):
    result = check_digests(bundle)
    assert result["artifacts"] == 2 and result["bytes"] > 0
    (bundle / "notes.txt").write_text("not looked at: extras are verify's job")
    assert check_digests(bundle)["artifacts"] == 2
    _flip_one_byte(bundle / "model.xml")
    (bundle / "model.bin").write_bytes((bundle / "model.bin").read_bytes() + b"\0")
    with pytest.raises(BundleVerificationError, match=r"model.bin: changed: \d+ bytes, manifest.json lists \d+"):
        check_digests(bundle)


def test_check_digests_takes_the_manifest_already_read(bundle):
    from deploycomp.bundle import read_manifest

    manifest = read_manifest(bundle)
    assert check_digests(bundle, manifest)["artifacts"] == len(manifest["artifacts"])


def test_the_file_names_are_the_bundle_modules():
    """signing.py keeps its own copies (deploycomp.bundle imports ONNX, seconds at start-up)."""
    from deploycomp import bundle, signing

    assert (signing.MANIFEST, signing.BUNDLE_FORMAT, signing.REPORT) == (bundle.MANIFEST, bundle.FORMAT, bundle.REPORT)


def test_importing_signing_loads_neither_onnx_nor_cryptography():
    import subprocess
    import sys

    code = "import sys, deploycomp.signing; print(sorted(m for m in ('onnx', 'cryptography') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- once wired: the commands and load(verify=True) ------------------------------------

def _commands() -> set[str]:
    from deploycomp.cli import main

    return set(main.commands)


@pytest.mark.skipif(not {"sign", "verify"} <= _commands(), reason="sign/verify are not wired into the CLI yet")
def test_cli_sign_and_verify(bundle, keys):
    from tests.test_cli import cli

    rc, out, err = cli("sign", bundle, "--key", keys["ci"][0])
    assert rc == 0, err
    rc, out, err = cli("verify", bundle, "--public-key", keys["ci"][1])
    assert rc == 0 and "verified" in out, err
    _flip_one_byte(bundle / "model.bin")
    rc, out, err = cli("verify", bundle, "--public-key", keys["ci"][1])
    assert rc == 11 and len(err.strip().splitlines()) == 1 and "model.bin" in err
    rc, out, err = cli("verify", bundle, "--public-key", keys["other"][1])
    assert rc == 11 and "wrong key" in err
    rc, out, err = cli("verify", bundle, "--json")  # a script reading stdout gets the failure too
    assert rc == 11 and json.loads(out) == {"bundle": str(bundle), "ok": False, "exit_code": 11,
                                            "error": err.strip().removeprefix("deploycomp: error: ")}


@pytest.mark.skipif("verify" not in inspect.signature(deploycomp.load).parameters,
                    reason="load(verify=...) is not wired yet")
def test_load_checks_digests_unless_told_not_to(bundle):
    deploycomp.load(bundle)
    _flip_one_byte(bundle / "model.bin")
    with pytest.raises(VerificationError, match="model.bin: changed"):
        deploycomp.load(bundle)
    deploycomp.load(bundle, verify=False)


def test_a_signature_left_half_written_by_a_killed_process_does_not_break_the_next(bundle, keys):
    """Killed mid-write, ``sign`` leaves its temporary file in the bundle, which
    ``verify`` would report as an extra file; signing again removes it."""
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (bundle / f".{SIGNATURE}.tmp-{socket.gethostname()}-{gone.pid}").write_text("{")
    private, public = keys["ci"]
    sign_bundle(bundle, private)
    assert verify_bundle(bundle, public)["ok"]


def test_a_key_path_that_is_a_device_or_a_pipe_is_refused(bundle, tmp_path):
    """``sign --key /dev/zero`` had read 5 GB before failing; a FIFO hung for ever."""
    from deploycomp.errors import DeployError
    from deploycomp.signing import sign_bundle

    os.mkfifo(tmp_path / "key.pem")
    with pytest.raises(DeployError, match=r"not a regular file \(a device or a pipe\), so no private key file"):
        sign_bundle(bundle, tmp_path / "key.pem")
    with pytest.raises(DeployError, match="not a regular file"):
        sign_bundle(bundle, "/dev/zero")
