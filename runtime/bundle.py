"""The bundle: a folder with ``manifest.json`` and the files it names.

The manifest is the one contract between export, calibration, engines and the
runtime. This module reads it, checks it, and writes it atomically; it is the
only place that knows its layout.

Layout (``format`` = ``edge-bundle/1``)::

    {"format", "family", "variant", "note",
     "files": {relpath: {"size": int, "sha256": hex}},
     "components": {name: {"file": relpath,
                           "inputs":  [{"name", "dtype", "shape": [int | str]}],
                           "outputs": [{"name", "dtype", "shape": [int | str]}],
                           "profile": {input: {"min": [..], "opt": [..], "max": [..]}},
                           "engines": [{...}],
                           "ort_graph": relpath  (optional: the graph with ONNX Runtime's fused attention),
                           "int8": {...}  (optional: Q/DQ graph, calibration cache, method)}},
     "pipeline": {constants the runtime needs}}
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

FORMAT = "edge-bundle/1"
MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 22


class BundleError(ValueError):
    """A bundle that is missing, incomplete, damaged or not what the caller expected."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorSpec":
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Component:
    """One exported graph: its file, tensors, supported shape ranges and engines."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile: Mapping[str, Mapping[str, tuple[int, ...]]]
    engines: tuple[Mapping[str, Any], ...] = ()
    extra_files: tuple[str, ...] = ()
    int8: Mapping[str, Any] = field(default_factory=dict)
    ort_graph: str = ""  # the same graph with ONNX Runtime's fused attention (export.ort_attention); same weights

    @property
    def files(self) -> tuple[str, ...]:
        """The files export writes for this component: its graph, the graph's external data, its ONNX Runtime graph."""
        return (self.file, *self.extra_files, *filter(None, [self.ort_graph]))

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> "Component":
        return cls(
            name=name,
            file=str(data["file"]),
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
            profile={
                k: {level: tuple(int(d) for d in dims) for level, dims in v.items()}
                for k, v in data.get("profile", {}).items()
            },
            engines=tuple(data.get("engines", ())),
            extra_files=tuple(data.get("extra_files", ())),
            int8=dict(data.get("int8", {})),
            ort_graph=str(data.get("ort_graph", "")),
        )

    def to_json(self) -> dict[str, Any]:
        optional = {**({"ort_graph": self.ort_graph} if self.ort_graph else {}),
                    **({"int8": dict(self.int8)} if self.int8 else {})}
        return {
            "file": self.file,
            "extra_files": list(self.extra_files),
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "profile": {k: {lvl: list(d) for lvl, d in v.items()} for k, v in self.profile.items()},
            "engines": [dict(e) for e in self.engines],
            **optional,
        }

    def with_engines(self, engines: Iterable[Mapping[str, Any]]) -> "Component":
        """A copy of this component whose ``engines`` list is replaced."""
        return replace(self, engines=tuple(dict(e) for e in engines))

    def check_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Refuse input shapes (of the inputs named in ``shapes``) outside the profile, naming the range."""
        for spec in self.inputs:
            if spec.name not in shapes:
                continue
            found = tuple(int(d) for d in shapes[spec.name])
            if len(found) != len(spec.shape):
                raise BundleError(
                    f"{self.name}: input '{spec.name}' has rank {len(found)} {list(found)}, "
                    f"expected rank {len(spec.shape)} {list(spec.shape)}"
                )
            bounds = self.profile.get(spec.name)
            for axis, (dim, want) in enumerate(zip(found, spec.shape)):
                low, high = (want, want) if isinstance(want, int) else (
                    (bounds["min"][axis], bounds["max"][axis]) if bounds else (1, None)
                )
                if dim < low or (high is not None and dim > high):
                    label = want if isinstance(want, str) else f"axis {axis}"
                    span = f"{low}" if low == high else f"{low}..{high}"
                    raise BundleError(
                        f"{self.name}: input '{spec.name}' {label} is {dim}, but this bundle supports "
                        f"{span} (shape {list(found)}; profile min {list(bounds['min']) if bounds else '-'}, "
                        f"max {list(bounds['max']) if bounds else '-'}). Re-export with a wider range."
                    )


@dataclass
class Manifest:
    family: str
    variant: str
    components: dict[str, Component]
    pipeline: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Manifest":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise BundleError(f"manifest format is {found!r}, expected {FORMAT!r}")
        try:
            return cls(
                family=str(data["family"]),
                variant=str(data["variant"]),
                components={n: Component.from_json(n, c) for n, c in data["components"].items()},
                pipeline=dict(data["pipeline"]),
                files={str(k): dict(v) for k, v in data["files"].items()},
                note=str(data.get("note", "")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise BundleError(f"manifest is malformed: {type(exc).__name__}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "family": self.family,
            "variant": self.variant,
            "note": self.note,
            "files": self.files,
            "components": {n: c.to_json() for n, c in self.components.items()},
            "pipeline": self.pipeline,
        }


class Bundle:
    """An opened bundle folder. File sizes are checked on open, sha256 on first use."""

    def __init__(self, root: str | Path, *, verify_hashes: bool = False, graphs: bool = True):
        """``graphs=False``: the components run elsewhere (a Triton server, see ``runtime.backends.triton``); only
        the bundle's other files (tokenizer, tables) must be here, and ``component_path`` refuses."""
        self.root = Path(root)
        self.graphs = graphs
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(
                f"{self.root} is not a bundle: {MANIFEST} not found. Create one with `python -m export all` "
                "or `python -m export videocrafter1 ...`."
            )
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
        self.manifest = Manifest.from_json(data)
        self._hashed: set[str] = set()
        here = [rel for rel in self.manifest.files if graphs or rel not in self.graph_files()]
        for rel in here:
            self._check_size(rel)
        if verify_hashes:
            for rel in here:
                self.verify(rel)

    @property
    def pipeline(self) -> dict[str, Any]:
        return self.manifest.pipeline

    def component(self, name: str) -> Component:
        try:
            return self.manifest.components[name]
        except KeyError:
            have = ", ".join(sorted(self.manifest.components)) or "none"
            raise BundleError(
                f"bundle {self.root} ({self.manifest.family} {self.manifest.variant}) has no component "
                f"'{name}'; it has: {have}"
            ) from None

    def weight_bytes(self, name: str) -> int:
        """Bytes of a component's graph file and its external weight files, as the manifest lists them."""
        component = self.component(name)
        return sum(int(self._entry(rel)["size"]) for rel in (component.file, *component.extra_files))

    def graph_files(self) -> set[str]:
        """The files the backends load (graphs, their external data, engines, INT8 graphs), not the pipeline's."""
        files = set()
        for component in self.manifest.components.values():
            files |= {*component.files, *(str(e.get("file")) for e in component.engines)}
            files |= {v for v in component.int8.values() if isinstance(v, str) and v in self.manifest.files}
        return files

    def _entry(self, rel: str) -> Mapping[str, Any]:
        entry = self.manifest.files.get(rel)
        if entry is None:
            raise BundleError(f"{rel} is not listed in {self.root / MANIFEST}")
        return entry

    def _check_size(self, rel: str) -> None:
        path = self.root / rel
        if not path.is_file():
            raise BundleError(f"bundle file missing: {path} (the bundle is incomplete; export it again)")
        expected = int(self._entry(rel)["size"])
        found = path.stat().st_size
        if found != expected:
            raise BundleError(
                f"bundle file damaged: {path} is {found} bytes, the manifest says {expected}. Export it again."
            )

    def verify(self, rel: str) -> Path:
        """Check size and sha256 of one listed file (once per process) and return its path."""
        path = self.root / rel
        if rel not in self._hashed:
            self._check_size(rel)
            expected = self._entry(rel)["sha256"]
            found = sha256_of(path)
            if found != expected:
                raise BundleError(
                    f"bundle file tampered or damaged: {path} has sha256 {found[:16]}..., the manifest says "
                    f"{expected[:16]}.... Export the bundle again or restore the file."
                )
            self._hashed.add(rel)
        return path

    def component_path(self, name: str) -> Path:
        """The verified graph file of a component (its external data files verified too)."""
        component = self.component(name)
        if not self.graphs:
            raise BundleError(f"{self.root} was opened without its graphs (graphs=False): '{name}' runs on a server "
                              "here; open the full bundle to run it locally")
        for rel in component.extra_files:
            self.verify(rel)
        return self.verify(component.file)

    def onnxruntime_path(self, name: str) -> Path:
        """The verified graph ONNX Runtime runs for a component: its ``ort_graph`` (fused attention) where the
        bundle has one, else its standard graph; the external data either reads is verified too."""
        path = self.component_path(name)
        ort_graph = self.component(name).ort_graph
        return self.verify(ort_graph) if ort_graph else path

    def int8_path(self, name: str) -> Path:
        """The verified INT8 Q/DQ graph of a component (its external data too), as ``python -m calibration
        quantize`` wrote it; a BundleError naming the command when the bundle has none."""
        entry = self.component(name).int8
        if not entry.get("graph"):
            raise BundleError(f"{name}: bundle {self.root} has no INT8 graph of this component; write one with "
                              f"`python -m calibration collect {self.root} --out DATA` and `python -m calibration "
                              f"quantize {self.root} --data DATA --component {name}`")
        for rel in entry.get("graph_data", ()):
            self.verify(rel)
        return self.verify(entry["graph"])

    def file(self, rel: str) -> Path:
        return self.verify(rel)

    def array(self, rel: str) -> np.ndarray:
        """A ``.npy`` table of the bundle, verified like every file and read without pickle."""
        return np.load(self.verify(rel), allow_pickle=False)


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Hash every listed file under ``root`` and write ``manifest.json`` (atomically: temp file, then rename)."""
    for rel in manifest.files:
        path = root / rel
        manifest.files[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    partial = root / f".{MANIFEST}.partial-{os.getpid()}"
    partial.write_text(json.dumps(manifest.to_json(), indent=1), encoding="utf-8")
    os.replace(partial, root / MANIFEST)


class BundleWriter:
    """Write a bundle into a temporary sibling folder and rename it into place on success.

    An interrupted export leaves only the temporary folder behind (which has no
    manifest), never a half-written bundle at the destination.
    """

    def __init__(self, destination: str | Path, *, overwrite: bool = True):
        self.destination = Path(destination)
        self.overwrite = overwrite
        self.root: Path | None = None

    def __enter__(self) -> Path:
        if self.destination.exists() and not self.overwrite:
            raise BundleError(f"{self.destination} exists; pass overwrite=True to replace it")
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{self.destination.name}.partial-", dir=self.destination.parent))
        return self.root

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.root is not None
        if exc_type is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        if not (self.root / MANIFEST).is_file():
            shutil.rmtree(self.root, ignore_errors=True)
            raise BundleError(f"bundle for {self.destination} was closed without a manifest")
        if self.destination.exists():
            old = self.destination.with_name(f".{self.destination.name}.old-{os.getpid()}")
            os.replace(self.destination, old)
            os.replace(self.root, self.destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.root, self.destination)

