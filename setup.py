"""Package discovery for the three source roots (the metadata lives in pyproject.toml).

``deploycomp/`` installs as itself, ``backends/`` as ``deploycomp.backends`` and
``targets/`` as ``deploycomp.profiles`` (the design card keeps the latter two at the top
level). ``[tool.setuptools.packages.find]`` cannot map several roots onto one import
prefix, so discovery runs here: every folder with an ``__init__.py`` under a root is a
package, and a new subpackage can never be left out of the wheel.
"""

from setuptools import find_packages, setup

ROOTS = {"deploycomp": "deploycomp", "deploycomp.backends": "backends", "deploycomp.profiles": "targets"}


def _discover() -> list[str]:
    packages = []
    for prefix, folder in ROOTS.items():
        packages.append(prefix)
        packages += [f"{prefix}.{sub}" for sub in find_packages(folder)]
    return sorted(set(packages))


setup(packages=_discover())
