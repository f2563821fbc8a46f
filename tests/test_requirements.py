"""After an internal error, a dependency outside the versions deploycomp declares is named:
on the floors pyproject.toml had declared, every int8 build failed with ``internal error
(AttributeError): 'Model' object has no attribute 'clone'`` (onnx-ir 0.1.10)."""

from __future__ import annotations

from importlib import metadata

import pytest

from deploycomp import requirements


@pytest.fixture
def environment(monkeypatch):
    declared = ["onnx-ir>=1.0", "numpy>=1.24", "click>=8.1", "ai-edge-litert>=1.4; extra == \"tflite\"",
                "ai-edge-litert>=1.4; extra == \"test\"", "ray>=2.40; extra == \"ray\"",
                "tensorrt-rtx>=1.7; (platform_system == \"Nowhere\") and extra == \"test\""]
    installed = {"onnx-ir": "0.1.10", "numpy": "2.0.0", "ai-edge-litert": "1.2.0", "tensorrt-rtx": "1.0"}

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    class Meta:
        @staticmethod
        def get_all(key):
            return ["tflite", "test", "ray"] if key == "Provides-Extra" else None

    monkeypatch.setattr(requirements.metadata, "requires", lambda dist: declared)
    monkeypatch.setattr(requirements.metadata, "version", version)
    monkeypatch.setattr(requirements.metadata, "metadata", lambda dist: Meta())
    return installed


def test_older_and_missing_requirements_are_named_once_extras_only_where_installed(environment):
    assert requirements.mismatched() == [
        "onnx-ir 0.1.10 (deploycomp needs >=1.0)",  # older than declared
        "click not installed (deploycomp needs >=8.1)",  # a core requirement missing
        "ai-edge-litert 1.2.0 (deploycomp needs >=1.4)",  # an extra's, installed too old: once for two extras
    ]  # ray (an extra, not installed) and tensorrt-rtx (another platform's) are not judged


def test_an_internal_error_names_them(environment, capsys):
    from deploycomp.cli import _fail

    with pytest.raises(SystemExit) as info:
        _fail(AttributeError("'Model' object has no attribute 'clone'"), verbose=False)
    line = capsys.readouterr().err
    assert info.value.code == 1 and line.count("\n") == 1
    assert "internal error (AttributeError)" in line and "installed: onnx-ir 0.1.10 (deploycomp needs >=1.0)" in line
