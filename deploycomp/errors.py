"""The errors a user can cause, each printed by the CLI as one line naming the problem.

Every class maps to a documented exit code, so CI scripts can tell a bad model from a
missed budget without parsing text. Anything else escaping the pipeline is a bug in
deploycomp and exits 1 with a traceback under ``-v``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "BudgetError",
    "DeployError",
    "InputDataError",
    "ModelError",
    "OutputExistsError",
    "ProfileError",
    "UnsupportedError",
]


class DeployError(Exception):
    """Base class: the message is one line and says what to fix."""

    exit_code = 2


class ModelError(DeployError):
    """The ONNX file is unreadable, corrupt, unsafe or malformed."""

    exit_code = 3


class InputDataError(DeployError):
    """--input shapes, calibration or validation data are wrong."""

    exit_code = 4


class ProfileError(DeployError):
    """Unknown target or a profile that fails its schema."""

    exit_code = 5


class UnsupportedError(DeployError):
    """The model needs something the target or backend cannot do."""

    exit_code = 6


class BackendUnavailable(UnsupportedError):
    """The backend's SDK is not installed or the device is absent."""

    exit_code = 7


class BudgetError(DeployError):
    """The build succeeded but missed one of the target's budgets."""

    exit_code = 8


class OutputExistsError(DeployError):
    """The output directory exists and --force was not given."""

    exit_code = 9
