"""Whether the installed dependencies are the versions deploycomp declares.

Read only when a command fails with an internal error: an environment that holds an older
onnx-ir or onnxscript than the package needs had failed with ``internal error
(AttributeError): 'Model' object has no attribute 'clone'``, naming nothing a user could
act on (the forty-fifth probe, on the floors pyproject.toml then declared). pip enforces
the floors at install time; an environment assembled otherwise (``--no-deps``, conda, a
later downgrade) does not.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["mismatched"]


def mismatched(dist: str = "deploycomp") -> list[str]:
    """Each installed requirement of ``dist`` outside the versions it declares, e.g.
    ``onnx-ir 0.1.10 (deploycomp needs >=1.0)``; a missing core requirement too. An
    extra's requirement is judged only where it is installed; one whose platform marker
    excludes this machine not at all. Empty where the metadata cannot be read."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement

        declared = metadata.requires(dist) or []
    except (ImportError, metadata.PackageNotFoundError):
        return []
    extras = metadata.metadata(dist).get_all("Provides-Extra") or []
    out = []
    for text in declared:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        extra_only = req.marker is not None and not req.marker.evaluate({"extra": ""})
        if req.marker is not None and extra_only and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue  # (another platform's)
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            if not extra_only:
                out.append(f"{req.name} not installed ({dist} needs {req.specifier or 'it'})")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            line = f"{req.name} {installed} ({dist} needs {req.specifier})"
            if line not in out:  # (an extra lists a requirement the core or another extra lists too)
                out.append(line)
    return out
