"""Record engine plans in the bundle's manifest.

Each plan is named ``<component>.<precision>.plan``. A plan outside the bundle
is copied in; its record (TensorRT version, GPU name and compute capability,
precision, profile, size, sha256) replaces any earlier record of the same file,
and the manifest is re-written atomically with every size and hash recomputed.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from engines.profiles import PRECISIONS, plan_name, profile_json, profile_of
from runtime.bundle import Bundle, BundleError, sha256_of, write_manifest
from runtime.backends.trt import LocalTarget


def parse_plan_name(path: Path, components: Iterable[str]) -> tuple[str, str]:
    """``(component, precision)`` from ``<component>.<precision>.plan``, refusing other names."""
    stem, _, suffix = path.name.rpartition(".")
    component, _, precision = stem.rpartition(".")
    known = sorted(components)
    if suffix != "plan" or precision not in PRECISIONS or component not in known:
        raise BundleError(
            f"{path.name}: expected a plan named <component>.<precision>.plan with component one of "
            f"{', '.join(known)} and precision one of {', '.join(PRECISIONS)}; rename the file"
        )
    return component, precision


def engine_record(path: Path, component: str, precision: str, target: LocalTarget,
                  profile: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The manifest's record of one engine file (bundle-relative ``file``)."""
    return {
        "file": plan_name(component, precision),
        "precision": precision,
        "tensorrt": target.tensorrt,
        "gpu": target.gpu,
        "compute_capability": target.compute_capability,
        "profile": dict(profile),
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
        **extra,
    }


def register(root: str | Path, plans: Iterable[str | Path], target: LocalTarget, **extra: Any) -> list[dict]:
    """Copy ``plans`` into the bundle at ``root`` (if elsewhere), record them, re-write the manifest."""
    bundle = Bundle(root)
    manifest = bundle.manifest
    records = []
    for plan in map(Path, plans):
        if not plan.is_file():
            raise BundleError(f"plan file not found: {plan}")
        component, precision = parse_plan_name(plan, manifest.components)
        inside = bundle.root / plan_name(component, precision)
        if plan.resolve() != inside.resolve():
            shutil.copyfile(plan, inside)
        spec = manifest.components[component]
        record = engine_record(inside, component, precision, target, profile_json(profile_of(spec)), **extra)
        kept = [e for e in spec.engines if e.get("file") != record["file"]]
        manifest.components[component] = spec.with_engines([*kept, record])
        manifest.files[record["file"]] = {}
        records.append(record)
    write_manifest(bundle.root, manifest)
    return records
