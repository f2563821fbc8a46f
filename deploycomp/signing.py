"""Signed, verifiable bundles: ``deploycomp sign`` / ``deploycomp verify`` and the digest
check ``deploycomp.load()`` runs before it opens a bundle.

Three functions:

- :func:`check_digests` -- every artifact the manifest lists is a regular file inside the
  bundle with the listed size and sha256. No key, no signature, no third-party import:
  cheap enough for every ``load()`` (the cost is sha256 of the artifacts, about 0.15-0.3 s
  per 100 MB on this 2-core machine).
- :func:`sign_bundle` -- writes ``signature.json`` into the bundle, replacing an old one
  atomically.
- :func:`verify_bundle` -- the digests, the signature (if there is one or a key is
  given), and no file more or less than the bundle should hold. It raises
  :class:`BundleVerificationError` (a :class:`~deploycomp.errors.VerificationError`,
  exit code 11) naming the first file, in sorted path order, that is changed, missing
  or extra, or the signature problem.

What the signature covers
-------------------------
Every regular file of the bundle folder, recursively, except ``signature.json`` itself:
the artifacts, ``manifest.json`` and ``report.html``. ``signature.json`` holds::

    {"format": "deploycomp-signature/1",
     "algorithm": "ed25519" | "ecdsa-p256-sha256" | "ecdsa-p384-sha384",
     "key_id": "sha256:<hex sha256 of the public key's DER SubjectPublicKeyInfo>",
     "public_key": "<PEM of that key, for information>",
     "signed": {"format": "deploycomp-signature/1", "bundle_format": "deploycomp-bundle/1",
                "key_id": ..., "signed_at": "<UTC ISO 8601>",
                "files": [{"path": ..., "sha256": ..., "bytes": ...}, ...sorted by path]},
     "signature": "<base64 of the signature>"}

The signed bytes are the canonical JSON of ``signed``: ``json.dumps(signed,
sort_keys=True, separators=(",", ":"), ensure_ascii=True)`` encoded as ASCII (the object
holds only strings and integers, so this form is unique). Ed25519 (RFC 8032) signs
those bytes as they are; ECDSA signs them with SHA-256 (P-256) or SHA-384 (P-384). All
cryptography is the ``cryptography`` package's; nothing here is home-made.

A bundle is signed only as deploycomp built it: :func:`sign_bundle` first checks every
artifact against the manifest and refuses a folder holding anything besides the
manifest's artifacts, ``manifest.json`` and ``report.html``. So a valid signature means
"these are the bytes of that build (and of later manifest-recorded steps, if it was
signed after them)".

Why ``cryptography`` and not OpenSSF ``model-signing``
------------------------------------------------------
``model-signing`` 1.1.1 (PyPI, the newest) was evaluated in a fresh venv on this machine
(Python 3.11, 2 cores). It does sign a folder offline with an EC key (its ``key``
mode: a Sigstore bundle with a DSSE envelope around an in-toto statement of per-file
sha256), verifies it with the public key, writes nothing outside the model folder (a
fresh ``HOME`` stayed empty; run in a network namespace with no network it worked) and
names extra, missing and changed files. But:

- it does not import as installed: its ``sign_certificate`` module imports pyOpenSSL,
  which neither it nor sigstore 4.x declares (``ModuleNotFoundError: No module named
  'OpenSSL'`` on ``import model_signing``); the extra would have to pin that for it;
- weight: 31 packages (sigstore, tuf, requests, rfc3161-client, securesystemslib,
  pyOpenSSL, rich, ...), 69 MB over an empty venv, most of it the keyless Sigstore
  (network) path a key-based, offline signer never uses; ``cryptography`` alone is 3
  packages, 17 MB;
- import: 1.4-2.1 s for ``model_signing.signing`` + ``verifying`` (631 modules), against
  0.12 s for the ``cryptography`` modules used here (deploycomp's own commands start in
  under 0.5 s);
- EC keys only (no Ed25519), "Development Status :: 3 - Alpha", and verification errors
  are one ``ValueError`` whose text lists every difference with raw digest bytes, which
  would have to be parsed to name the first file.

So the signature here is ``cryptography``'s Ed25519 or ECDSA over the canonical file
list above, in the optional extra ``deploycomp[sign]``. ``check_digests`` and unsigned
verification need nothing beyond the standard library.

TensorRT bundles
----------------
``deploycomp engine`` adds ``model.engine`` and ``timing.cache`` on the device and
rewrites ``manifest.json``. A signature made before that covers neither, so
:func:`verify_bundle` fails, naming them as not covered by the signature. The flow on a
device: ``deploycomp verify BUNDLE --public-key CI.pub.pem`` (the bundle as CI built
it), then ``deploycomp engine BUNDLE``, then, if the device should prove the engine
later, ``deploycomp sign BUNDLE --key DEVICE.pem`` (the new signature replaces CI's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path, PurePosixPath
from typing import Any

from deploycomp.bundle import check_structure, remove_abandoned, replaced_file
from deploycomp.errors import BackendUnavailable, DeployError, VerificationError, few
from deploycomp.paths import DEVICE_OR_PIPE, device_or_pipe

__all__ = ["SIGNATURE", "BundleVerificationError", "check_digests", "sign_bundle", "verify_bundle"]

SIGNATURE = "signature.json"
"""The signature file's name, at the top of the bundle."""

SIGNATURE_FORMAT = "deploycomp-signature/1"

# The same names as deploycomp.bundle's (a test checks it): importing that module loads
# ONNX (seconds), which `deploycomp verify` and load()'s check do not need.
MANIFEST = "manifest.json"
BUNDLE_FORMAT = "deploycomp-bundle/1"
REPORT = "report.html"

_ALGORITHMS = {"ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384"}


class BundleVerificationError(VerificationError):
    """A verification failure: ``path`` is the file it names (relative to the bundle, or
    None for the bundle itself) and ``problem`` one of ``changed``, ``missing``,
    ``extra``, ``not-a-file``, ``unsigned-files``, ``signature``, ``wrong-key``,
    ``unsigned``, ``manifest``."""

    def __init__(self, message: str, path: str | None = None, problem: str = ""):
        super().__init__(message)
        self.path = path
        self.problem = problem


# -- hashing -------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+
            return hashlib.file_digest(f, "sha256").hexdigest()
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        return h.hexdigest()


def _short(digest: str) -> str:
    return digest[:12]


def _safe_relpath(bundle: Path, rel: Any, source: str) -> str:
    """``rel`` if it names a file inside the bundle (relative, normalised, no ``..``);
    otherwise a verification error: a manifest must not point a loader outside."""
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or "\\" in rel or any(part in ("", ".", "..") for part in rel.split("/")):
        raise BundleVerificationError(f"{bundle}/{source}: lists a path that is not a file inside the bundle: {rel!r}",
                                      source, "manifest")
    return rel


def row_entries(bundle: Path, listed: Any, source: str) -> dict[str, dict[str, Any]]:
    if not isinstance(listed, list):
        raise BundleVerificationError(f"{bundle}/{source}: its file list is not a list", source, "manifest")
    out: dict[str, dict[str, Any]] = {}
    for entry in listed:
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)):
            raise BundleVerificationError(f"{bundle}/{source}: a file entry lacks path, sha256 or bytes: {entry!r}",
                                          source, "manifest")
        path = _safe_relpath(bundle, entry.get("path"), source)
        if path in out:
            raise BundleVerificationError(f"{bundle}/{source}: lists {path} twice", source, "manifest")
        out[path] = entry
    return out


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _check_entry(bundle: Path, path: str, entry: dict[str, Any], against: str, since: str = "") -> int:
    """Size, then sha256 of one file against ``entry``; the bytes read."""
    f = bundle / path
    if not _exists(f):
        raise BundleVerificationError(f"{bundle}/{path}: missing (listed in {against})", path, "missing")
    if not _is_regular(f):
        raise BundleVerificationError(f"{bundle}/{path}: not a regular file (a symbolic link or other; "
                                      f"a bundle holds regular files only)", path, "not-a-file")
    size = f.stat().st_size
    if size != entry["bytes"]:
        raise BundleVerificationError(f"{bundle}/{path}: changed{since}: {size} bytes, {against} lists {entry['bytes']}",
                                      path, "changed")
    digest = _sha256(f)
    if digest != entry["sha256"]:
        raise BundleVerificationError(f"{bundle}/{path}: changed{since}: sha256 {_short(digest)}..., {against} lists "
                                      f"{_short(entry['sha256'])}...", path, "changed")
    return size


def _read_manifest(bundle: Path) -> tuple[dict[str, Any], bytes]:
    """The parsed manifest and the bytes it was parsed from."""
    path = bundle / MANIFEST
    if not _exists(path):  # (no bundle to verify: exit 2, as every command says of such a folder)
        raise DeployError(f"{bundle}: not a deploycomp bundle (no {MANIFEST})")
    if not _is_regular(path):
        raise BundleVerificationError(f"{path}: not a regular file", MANIFEST, "not-a-file")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleVerificationError(f"{path}: corrupt manifest ({str(e)[:200] or type(e).__name__})", MANIFEST,
                                      "manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleVerificationError(f"{path}: unsupported bundle format {found!r} (expected {BUNDLE_FORMAT})",
                                      MANIFEST, "manifest")
    try:  # (one without `io` or `backend` had verified, and then run, inspect and diff refused it)
        check_structure(path, manifest)
    except VerificationError as e:
        raise BundleVerificationError(str(e), MANIFEST, "manifest") from None
    return manifest, raw


def check_digests(bundle: str | os.PathLike, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check every artifact ``manifest`` lists (read from the bundle if not given): a
    regular file inside the bundle, of the listed size and sha256, in sorted path order.

    Raises :class:`BundleVerificationError` (exit 11) naming the first that is missing
    or changed. Files the manifest does not list are not looked at (that is
    :func:`verify_bundle`'s job). Returns ``{"artifacts": n, "bytes": total, "seconds": t}``.
    """
    bundle = Path(bundle)
    start = time.perf_counter()
    if manifest is None:
        manifest = _read_manifest(bundle)[0]
    artifacts = row_entries(bundle, manifest.get("artifacts", []), MANIFEST)
    total = sum(_check_entry(bundle, path, artifacts[path], MANIFEST) for path in sorted(artifacts))
    return {"artifacts": len(artifacts), "bytes": total, "seconds": round(time.perf_counter() - start, 4)}


def _bundle_files(bundle: Path) -> tuple[list[str], list[str]]:
    """(regular files, anything else) under ``bundle`` as sorted relative POSIX paths,
    the top-level signature excluded; symbolic links are not followed."""
    files, odd = [], []
    for root, dirs, names in os.walk(bundle, followlinks=False):
        rel_root = Path(root).relative_to(bundle)
        for d in list(dirs):
            if os.path.islink(os.path.join(root, d)):
                odd.append((rel_root / d).as_posix())
                dirs.remove(d)
        for name in names:
            rel = (rel_root / name).as_posix()
            if rel == SIGNATURE:
                continue
            (files if _is_regular(Path(root) / name) else odd).append(rel)
    return sorted(files), sorted(odd)


# -- keys ----------------------------------------------------------------------------

def _crypto():
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    except ImportError:
        raise BackendUnavailable("signing needs the cryptography package (pip install 'deploycomp[sign]')") from None
    return exceptions, hashes, serialization, ec, ed25519


def _algorithm(key) -> str:
    _, _, _, ec, ed25519 = _crypto()
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name == "secp256r1":
            return "ecdsa-p256-sha256"
        if key.curve.name == "secp384r1":
            return "ecdsa-p384-sha384"
        raise DeployError(f"unsupported elliptic curve {key.curve.name}; use Ed25519, or ECDSA P-256 or P-384")
    raise DeployError(f"unsupported key type {type(key).__name__.lstrip('_')}; use Ed25519 "
                      "(openssl genpkey -algorithm ed25519), or ECDSA P-256 or P-384")


def _public_der(public_key) -> bytes:
    _, _, serialization, _, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(public_key) -> str:
    return "sha256:" + hashlib.sha256(_public_der(public_key)).hexdigest()


MAX_KEY_BYTES = 1 << 20
"""No PEM key is larger (an Ed25519 or P-256 key is a few hundred bytes)."""


def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    path = Path(path)
    if device_or_pipe(path):  # (/dev/zero had reached 5 GB)
        raise DeployError(f"{path}: {DEVICE_OR_PIPE}, so no {what} file")
    if path.is_file() and path.stat().st_size > MAX_KEY_BYTES:
        raise DeployError(f"{path}: {path.stat().st_size / 1e6:.0f} MB is no {what} file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DeployError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise DeployError(f"{path}: is a folder, not a {what} file") from None


def _load_private_key(path: str | os.PathLike, password: bytes | None):
    _, _, serialization, _, _ = _crypto()
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise DeployError(f"{path}: {str(e).rstrip('.').lower()}") from None
    except ValueError as e:
        if b"PUBLIC KEY" in data:
            raise DeployError(f"{path}: a public key; sign with the private one") from None
        raise DeployError(f"{path}: not a PEM private key ({str(e).splitlines()[0]})") from None
    _algorithm(key)
    return key


def _load_public_key(path: str | os.PathLike):
    _, _, serialization, _, _ = _crypto()
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        if b"PRIVATE KEY" in data:
            raise DeployError(f"{path}: a private key; verify with the public one") from None
        raise DeployError(f"{path}: not a PEM public key ({str(e).splitlines()[0]})") from None
    _algorithm(key)
    return key


def _canonical(signed: dict[str, Any]) -> bytes:
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _sign(key, data: bytes) -> bytes:
    _, hashes, _, ec, _ = _crypto()
    algorithm = _algorithm(key)
    if algorithm == "ed25519":
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256() if algorithm == "ecdsa-p256-sha256" else hashes.SHA384()))


def _signature_valid(public_key, signature: bytes, data: bytes) -> bool:
    exceptions, hashes, _, ec, _ = _crypto()
    try:
        if _algorithm(public_key) == "ed25519":
            public_key.verify(signature, data)
        else:
            algorithm = hashes.SHA256() if _algorithm(public_key) == "ecdsa-p256-sha256" else hashes.SHA384()
            public_key.verify(signature, data, ec.ECDSA(algorithm))
    except exceptions.InvalidSignature:
        return False
    return True


# -- signing -------------------------------------------------------------------------

def signing_key_id(private_key_path: str | os.PathLike, password: bytes | None = None) -> str:
    """The key id (``sha256:`` of the public key) that ``private_key_path`` signs as; a bad
    key (missing, public, encrypted without a password) raises here, before any work."""
    return _key_id(_load_private_key(private_key_path, password).public_key())


def sign_bundle(bundle: str | os.PathLike, private_key_path: str | os.PathLike, password: bytes | None = None) -> Path:
    """Sign every file of ``bundle`` (artifacts, ``manifest.json``, ``report.html``) with
    the PEM private key at ``private_key_path`` (Ed25519, ECDSA P-256 or P-384;
    ``password`` for an encrypted one) and return the path of ``signature.json``.

    The bundle must be as deploycomp wrote it: artifacts matching the manifest and no
    other files (:class:`BundleVerificationError` otherwise, nothing written). An
    existing signature is replaced atomically (a reader sees the old or the new one).
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise DeployError(f"{bundle}: no such bundle folder")
    key = _load_private_key(private_key_path, password)  # a bad key fails before any hashing
    remove_abandoned(bundle / SIGNATURE)  # a signing killed mid-write left its temporary file
    manifest, manifest_bytes = _read_manifest(bundle)
    artifacts = row_entries(bundle, manifest.get("artifacts", []), MANIFEST)
    files, odd = _bundle_files(bundle)
    if odd:
        raise BundleVerificationError(f"{bundle}/{odd[0]}: not a regular file (a bundle holds regular files "
                                      "only); refusing to sign", odd[0], "not-a-file")
    part_of_bundle = set(artifacts) | {MANIFEST, REPORT}
    for path in sorted(set(files) | set(artifacts)):
        if path in artifacts:
            _check_entry(bundle, path, artifacts[path], MANIFEST)
        elif path not in part_of_bundle:
            raise BundleVerificationError(f"{bundle}/{path}: not part of the bundle (manifest.json does not list it); "
                                          "refusing to sign", path, "extra")
    entries = []
    for path in files:
        if path in artifacts:  # just checked: the manifest's digest is this file's
            entries.append({"path": path, "sha256": artifacts[path]["sha256"], "bytes": artifacts[path]["bytes"]})
        elif path == MANIFEST:  # the bytes whose artifact list was checked
            entries.append({"path": path, "sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                            "bytes": len(manifest_bytes)})
        else:
            entries.append({"path": path, "sha256": _sha256(bundle / path), "bytes": (bundle / path).stat().st_size})
    public_key = key.public_key()
    key_id = _key_id(public_key)
    signed = {
        "format": SIGNATURE_FORMAT,
        "bundle_format": BUNDLE_FORMAT,
        "key_id": key_id,
        "signed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": entries,
    }
    _, _, serialization, _, _ = _crypto()
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": _algorithm(key),
        "key_id": key_id,
        "public_key": public_key.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii"),
        "signed": signed,
        "signature": base64.b64encode(_sign(key, _canonical(signed))).decode("ascii"),
    }
    target = bundle / SIGNATURE
    with replaced_file(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return target


# -- verification --------------------------------------------------------------------

def _read_signature(bundle: Path) -> dict[str, Any]:
    path = bundle / SIGNATURE
    if not _is_regular(path):
        raise BundleVerificationError(f"{path}: not a regular file", SIGNATURE, "not-a-file")
    try:
        doc = json.loads(path.read_bytes())
        signed = doc["signed"]
        ok = (isinstance(doc, dict) and doc.get("format") == SIGNATURE_FORMAT and doc.get("algorithm") in _ALGORITHMS
              and isinstance(doc.get("key_id"), str) and isinstance(doc.get("signature"), str)
              and isinstance(signed, dict) and signed.get("format") == SIGNATURE_FORMAT)
        raw = base64.b64decode(doc["signature"], validate=True) if ok else b""
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        ok, raw = False, b""
    if not ok:
        raise BundleVerificationError(f"{path}: corrupt or not a {SIGNATURE_FORMAT} signature", SIGNATURE, "signature")
    doc["_raw_signature"] = raw
    return doc


def _check_signature(bundle: Path, doc: dict[str, Any], public_key_path: str | os.PathLike | None) -> str:
    """Check the signature of ``doc``: against the given public key (status "verified"),
    else against the key ``signature.json`` carries (status "signed": consistent, but
    nothing says whose key that is)."""
    where = f"{bundle}/{SIGNATURE}"
    if public_key_path is not None:
        public_key = _load_public_key(public_key_path)
        status = "verified"
    else:
        _, _, serialization, _, _ = _crypto()
        try:
            public_key = serialization.load_pem_public_key(str(doc.get("public_key", "")).encode("ascii"))
            _algorithm(public_key)
        except (ValueError, UnicodeEncodeError, DeployError):
            raise BundleVerificationError(f"{where}: carries no usable public key; pass --public-key",
                                          SIGNATURE, "signature") from None
        status = "signed"
    key_id = _key_id(public_key)
    valid = (_algorithm(public_key) == doc["algorithm"]
             and _signature_valid(public_key, doc["_raw_signature"], _canonical(doc["signed"])))
    if not valid and public_key_path is not None and key_id != doc["key_id"]:
        raise BundleVerificationError(f"{where}: signed with key {doc['key_id'][:19]}..., not with the given public "
                                      f"key {key_id[:19]}... ({public_key_path}): wrong key", SIGNATURE, "wrong-key")
    if not valid or doc["signed"].get("key_id") != key_id or doc["key_id"] != key_id:
        raise BundleVerificationError(f"{where}: the signature does not match its contents (tampered or corrupt)",
                                      SIGNATURE, "signature")
    return status


def verify_bundle(bundle: str | os.PathLike, public_key_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Verify ``bundle``: every artifact's size and sha256, the signature if the bundle
    has ``signature.json`` or a public key is given, and that the folder holds no file
    more or less than it should.

    Signed, the signature's file list is the authority: every file it lists must be
    there with its size and sha256 (``manifest.json`` included, so the manifest's own
    digests are the signed ones), and any other file is extra. Unsigned, the manifest's
    artifacts must match it, and ``report.html`` its ``report`` entry (a bundle written
    before 2026-12-07 has none: its report is not checked); any other file is extra.

    Raises :class:`BundleVerificationError` (exit 11) for the first problem: a missing,
    corrupt or wrongly keyed signature first (nothing else can be trusted without it);
    then files that the manifest lists but the signature does not (what
    ``deploycomp engine`` adds after signing); then the first path in sorted order that
    is missing, extra, not a regular file or changed. Returns::

        {"bundle", "ok": True, "status": "unsigned" | "signed" | "verified", "key_id",
         "algorithm", "signed_at", "files": [the bundle's files], "checked": how many of them
         had their digests checked, "bytes": their size, "seconds"}

    ``status``: ``unsigned`` -- no signature: the artifacts match the manifest, nothing
    says who built it; ``signed`` -- the signature is valid under the public key it
    carries, but no trusted key was given to say whose that is; ``verified`` -- valid
    under ``public_key_path``.
    """
    bundle = Path(bundle)
    start = time.perf_counter()
    if not bundle.is_dir():
        raise DeployError(f"{bundle}: no such bundle folder")
    if _exists(bundle / SIGNATURE):
        doc = _read_signature(bundle)
        status = _check_signature(bundle, doc, public_key_path)
    elif public_key_path is not None:
        raise BundleVerificationError(f"{bundle}: unsigned (no {SIGNATURE}), but a public key was given to verify it "
                                      "with", SIGNATURE, "unsigned")
    else:
        doc, status = None, "unsigned"

    files, odd = _bundle_files(bundle)
    present = set(files)
    if doc:
        expected = row_entries(bundle, doc["signed"].get("files"), SIGNATURE)
        _files_added_after_signing(bundle, expected, present)
        unlisted_ok: set[str] = set()
    else:
        manifest = _read_manifest(bundle)[0]
        # the report's digest, where the manifest names it (bundles since 2026-12-07)
        listed = manifest.get("artifacts", [])
        if isinstance(listed, list) and isinstance(manifest.get("report"), dict):
            listed = listed + [manifest["report"]]
        expected = row_entries(bundle, listed, MANIFEST)
        unlisted_ok = {MANIFEST, REPORT}

    total = 0
    for path in sorted(present | set(odd) | set(expected)):
        if path in odd:
            raise BundleVerificationError(f"{bundle}/{path}: not a regular file (a symbolic link or other; a bundle "
                                          "holds regular files only)", path, "not-a-file")
        if path in expected:
            if doc:
                total += _check_entry(bundle, path, expected[path], SIGNATURE, " since signing")
            else:
                total += _check_entry(bundle, path, expected[path], MANIFEST)
        elif path not in unlisted_ok:
            why = "not covered by the signature" if doc else f"{MANIFEST} does not list it"
            raise BundleVerificationError(f"{bundle}/{path}: extra file ({why})", path, "extra")
    if doc:  # manifest.json is the signed one: its artifacts must be signed files with the same digests
        manifest, raw = _read_manifest(bundle)
        if MANIFEST not in expected or hashlib.sha256(raw).hexdigest() != expected[MANIFEST]["sha256"]:
            raise BundleVerificationError(f"{bundle}/{MANIFEST}: not the signed manifest (changed while verifying?)",
                                          MANIFEST, "changed")
        artifacts = row_entries(bundle, manifest.get("artifacts", []), MANIFEST)
        for path in sorted(artifacts):
            if path not in expected or (expected[path]["sha256"], expected[path]["bytes"]) != (
                    artifacts[path]["sha256"], artifacts[path]["bytes"]):
                raise BundleVerificationError(f"{bundle}/{path}: {MANIFEST} and {SIGNATURE} disagree about it",
                                              path, "changed")
    return {
        "bundle": str(bundle),
        "ok": True,
        "status": status,
        "key_id": doc["key_id"] if doc else None,
        "algorithm": doc["algorithm"] if doc else None,
        "signed_at": doc["signed"].get("signed_at") if doc else None,
        "files": sorted(set(expected) | (present & unlisted_ok)),
        "checked": len(expected),  # the files whose digests were checked, ``bytes`` between them
        "bytes": total,
        "seconds": round(time.perf_counter() - start, 4),
    }


def _files_added_after_signing(bundle: Path, signed: dict[str, dict[str, Any]], present: set[str]) -> None:
    """If ``manifest.json`` changed since signing and now lists present files the
    signature does not (``deploycomp engine`` adds model.engine and timing.cache), say
    that, rather than only "manifest.json changed"."""
    entry = signed.get(MANIFEST)
    path = bundle / MANIFEST
    if entry is None or MANIFEST not in present:
        return
    if path.stat().st_size == entry["bytes"] and _sha256(path) == entry["sha256"]:
        return
    try:
        listed = json.loads(path.read_bytes()).get("artifacts", [])
        added = sorted({a["path"] for a in listed if isinstance(a, dict) and isinstance(a.get("path"), str)}
                       & present - set(signed))
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError, RecursionError):
        return  # a corrupt manifest is reported as changed by the main loop
    if added:
        raise BundleVerificationError(
            f"{bundle}: {few(added)} not covered by the signature (added after signing, with {MANIFEST} rewritten, "
            f"as `deploycomp engine` does): verify before `deploycomp engine`, then sign again on this device "
            f"(deploycomp sign {bundle} --key DEVICE_KEY.pem)", added[0], "unsigned-files")
