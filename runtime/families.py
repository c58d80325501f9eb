"""The model families, registered once.

A family is one name, used by a package in every layer: ``runtime.<name>`` (its
pipelines; the public names in ``__all__``; ``serving.served_task``, what its Triton pipeline
model serves), ``export.<name>`` (``cli`` with ``add_command`` and ``tiny_bundles``;
``verify_cases`` with ``HANDLERS``), ``benchmarks.<name>`` (``bench``) and ``tests/<name>/``.
``import runtime``, ``python -m export all``, ``verify-reference``, ``python -m benchmarks`` and
the Triton repository writer all discover the families from :data:`FAMILIES`; adding a family is
adding its name here.
"""
from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = ("videocrafter1", "ait", "imagebind")


def family_modules(package: str, module: str = "") -> dict[str, ModuleType]:
    """``{family: <package>.<family>[.<module>]}`` imported, in registration order."""
    suffix = f".{module}" if module else ""
    return {name: importlib.import_module(f"{package}.{name}{suffix}") for name in FAMILIES}
