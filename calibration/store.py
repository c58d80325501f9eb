"""Recorded calibration data: the real inputs each component saw while a pipeline ran.

A data folder holds one ``<component>.npz`` per component (arrays named
``<record>.<input>``, records numbered from 0) and ``index.json`` (the quantize step adds ``<component>.<method>.ranges.json``, the activation ranges
it computed from the records)::

    {"format": "edge-calibration/1", "family", "variant", "steps", "frames", "samples",
     "heldout_samples": [sample indices kept out of calibration, used by the report],
     "components": {name: {"file": "<name>.npz", "inputs": [names],
                           "records": [{"sample": int, ...facts such as "timestep"}]}}}

``RecordingSession`` wraps any :class:`runtime.backends.Session` and appends the
feeds it receives to a :class:`Recorder`; the runtime pipelines need no change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from runtime.bundle import Component
from runtime.backends import Session, prepare_feeds

FORMAT = "edge-calibration/1"
INDEX = "index.json"
RANGES_SUFFIX = ".ranges.json"

# facts(feeds) -> extra per-record facts worth keeping in the index (e.g. the UNet's timestep).
Facts = Callable[[Mapping[str, np.ndarray]], dict[str, Any]]


class CalibrationDataError(ValueError):
    """Calibration data that is missing, empty or does not match the bundle."""


@dataclass
class Recorder:
    """Collects feeds per component; ``sample`` says which calibration sample is running."""

    sample: int = 0
    feeds: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    facts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, component: str, feeds: Mapping[str, np.ndarray], facts: Mapping[str, Any]) -> None:
        self.feeds.setdefault(component, []).append({k: np.array(v) for k, v in feeds.items()})
        self.facts.setdefault(component, []).append({"sample": self.sample, **facts})


class RecordingSession:
    """A Session that records every feed (cast as the backend sees it) before running the wrapped one."""

    def __init__(self, inner: Session, recorder: Recorder, facts: Facts | None = None):
        self.inner = inner
        self.component: Component = inner.component
        self._recorder = recorder
        self._facts = facts

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = prepare_feeds(self.component, feeds)
        self._recorder.add(self.component.name, prepared, self._facts(prepared) if self._facts else {})
        return self.inner.run(prepared)


def write_data(out: Path, recorder: Recorder, header: Mapping[str, Any]) -> Path:
    """Write one npz per recorded component and ``index.json``; returns the index path."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"*{RANGES_SUFFIX}"):  # ranges computed from the records this folder held before
        stale.unlink()
    components = {}
    for name, records in recorder.feeds.items():
        arrays = {f"{i}.{key}": value for i, feeds in enumerate(records) for key, value in feeds.items()}
        np.savez_compressed(out / f"{name}.npz", **arrays)
        components[name] = {"file": f"{name}.npz", "inputs": list(records[0]), "records": recorder.facts[name]}
    index = {"format": FORMAT, **header, "components": components}
    path = out / INDEX
    path.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return path


@dataclass(frozen=True)
class CalibrationData:
    """An opened data folder."""

    root: Path
    index: Mapping[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> "CalibrationData":
        root = Path(root)
        path = root / INDEX
        if not path.is_file():
            raise CalibrationDataError(
                f"{root} is not a calibration data folder: {INDEX} not found. Record one with "
                "`python -m calibration collect BUNDLE --out DIR`.")
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            raise CalibrationDataError(f"{path} has format {index.get('format')!r}, expected {FORMAT!r}")
        return cls(root, index)

    @property
    def components(self) -> list[str]:
        return list(self.index["components"])

    def ranges_path(self, component: str, method: str) -> Path:
        """Where the quantize step keeps the activation ranges it computed from these records (ONNX Runtime's
        calibration cache), so quantizing again with other exclusions skips the calibration runs."""
        return self.root / f"{component}.{method}{RANGES_SUFFIX}"

    def check_bundle(self, family: str, variant: str) -> None:
        found = (self.index.get("family"), self.index.get("variant"))
        if found != (family, variant):
            raise CalibrationDataError(
                f"{self.root} was recorded on a {found[0]} {found[1]} bundle, but this bundle is {family} {variant}; "
                "record data with this bundle")

    def records(self, component: str, split: str = "all") -> Iterator[dict[str, np.ndarray]]:
        """Feeds of ``component``; ``split`` is ``calibration`` (not held out), ``heldout`` or ``all``."""
        entry = self.index["components"].get(component)
        if entry is None:
            raise CalibrationDataError(f"{self.root} has no records of '{component}'; it has {self.components}")
        heldout = set(self.index.get("heldout_samples", ()))
        keep = {"all": lambda s: True, "calibration": lambda s: s not in heldout, "heldout": lambda s: s in heldout}
        if split not in keep:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(keep)}")
        with np.load(self.root / entry["file"]) as arrays:
            for i, facts in enumerate(entry["records"]):
                if keep[split](facts["sample"]):
                    yield {name: arrays[f"{i}.{name}"] for name in entry["inputs"]}
