"""TensorRT backend: profiles for it load and validate; lowering is not implemented yet.

The adapter exists so that ``deploycomp targets show`` and ``build --target`` for
its targets explain what is missing instead of failing on an import.
"""

from __future__ import annotations

from deploycomp.backends.base import SupportReport
from deploycomp.errors import BackendUnavailable

__all__ = ["BACKEND"]


class _PendingBackend:
    name = "tensorrt"
    requires: tuple[str, ...] = ()
    extra = "deploycomp"

    def unavailable_reason(self) -> str:
        return "the TensorRT lowering is not implemented yet in this version of deploycomp"

    def check(self, model, target) -> SupportReport:
        raise BackendUnavailable(f"target {target.name}: {self.unavailable_reason()}")

    def lower(self, model, target, precision, out_dir):
        return self.check(model, target)

    def load(self, bundle_dir, lowered):
        raise BackendUnavailable(self.unavailable_reason())


BACKEND = _PendingBackend()
