"""ImageBind in the runtime: items of six modalities -> one embedding space, and comparing embeddings.

``EmbeddingPipeline`` holds the opened encoder graphs of one bundle (load once, embed many
times); :func:`embed` is the one-call form. Embeddings are what the official
``ImageBindModel`` returns: L2-normalised, times the modality's logit scale (vision 1,
text learned, audio 20, depth 5, thermal 10, IMU 5), and for audio the mean of the
post-processed clip embeddings (no re-normalisation, as the official forward).

Comparing: :func:`similarity` (dot products, as the official demo), :func:`zero_shot`
(softmax over label texts) and :class:`EmbeddingIndex` (top-k over a stored ``.npy``
matrix with its ``.json`` metadata).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from runtime.backends import Backend
from runtime.bundle import Bundle, BundleError
from runtime.imagebind.constants import ImageBindConstants, ModalityConstants
from runtime.imagebind.inputs import prepare
from runtime.arrays import softmax
from runtime.pipeline import Pipeline, pipeline_for
from runtime.tokenizer import ClipTokenizer

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")


def average_clips(per_clip: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """``(sum(counts), D)`` clip embeddings -> ``(len(counts), D)`` per-item means (the official clip rule)."""
    if sum(counts) != len(per_clip):
        raise ValueError(f"expected {sum(counts)} clip embeddings for counts {list(counts)}, found {len(per_clip)}")
    if all(c == 1 for c in counts):
        return per_clip
    edges = np.cumsum([0, *counts])
    return np.stack([per_clip[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:])]).astype(np.float32)


class EmbeddingPipeline(Pipeline):
    """The opened encoder graphs and preprocessing constants of one ImageBind bundle.

    ``modalities`` limits which graphs are opened (default: every one in the bundle); :attr:`sessions` holds
    them by component name (``vision_encoder``, ...). More items than an encoder's profile takes in one
    call run in several calls. ``memory="low"``: one encoder in memory at a time.
    """

    family, entry = "imagebind", "embed"

    def __init__(self, bundle: str | Path | Bundle, *, backend: str | Backend = "auto",
                 modalities: Sequence[str] | None = None, memory: str = "normal"):
        super().__init__(bundle, backend=backend, memory=memory)
        self.constants = ImageBindConstants.of(self.bundle)
        available = self.constants.modalities
        chosen = list(available) if modalities is None else list(modalities)
        missing = [m for m in chosen if m not in available]
        if missing:
            raise BundleError(f"{self.bundle.root} has no encoder for {missing}; it has {list(available)}")
        self.modalities = tuple(chosen)
        self.open(*(available[m].component for m in chosen))
        text = available.get("text")
        self.tokenizer = ClipTokenizer(self.bundle.file(text.preprocess.tokenizer)) if text else None

    def logit_scale(self, modality: str) -> float:
        return float(self._spec(modality).logit_scale)

    def _spec(self, modality: str) -> ModalityConstants:
        if modality not in self.modalities:
            raise ValueError(f"no {modality!r} encoder opened; expected one of {self.modalities}")
        return self.constants.modalities[modality]

    def embed_modality(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        """``(len(items), D)`` float32 embeddings of one modality's items."""
        spec = self._spec(modality)
        feed, counts = prepare(modality, items, spec.preprocess, self.tokenizer)
        per_clip = self.run(spec.component, {spec.input: feed})["embedding"]
        return average_clips(per_clip, counts)

    def embed(self, inputs: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        unknown = sorted(set(inputs) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; expected keys from {MODALITIES}")
        return {m: self.embed_modality(m, items) for m, items in inputs.items()}

    def zero_shot(self, items: Sequence[Any], labels: Sequence[str], *, modality: str = "vision",
                  template: str = "{}") -> np.ndarray:
        """``(len(items), len(labels))`` probabilities: softmax of item x label-text embeddings."""
        if not labels:
            raise ValueError("expected at least one label, found none")
        texts = self.embed_modality("text", [template.format(label) for label in labels])
        return zero_shot_probabilities(self.embed_modality(modality, items), texts)


def embed(inputs: Mapping[str, Sequence[Any]], *, bundle: str | Path | Bundle | EmbeddingPipeline,
          backend: str | Backend = "auto", memory: str = "normal") -> dict[str, np.ndarray]:
    """``{modality: [items]}`` -> ``{modality: (N, D) float32}`` embeddings (see ``runtime.imagebind.inputs``).

    ``backend`` and ``memory`` as for :class:`EmbeddingPipeline` (used when ``bundle`` is not one already)."""
    with pipeline_for(bundle, EmbeddingPipeline, backend=backend, modalities=list(inputs), memory=memory) as pipeline:
        return pipeline.embed(inputs)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(Na, Nb)`` dot products of two embedding sets (the official demo's logits; the scales are inside)."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float32)), np.atleast_2d(np.asarray(b, dtype=np.float32))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (Na, D) and (Nb, D) embeddings with the same D, found {a.shape} and {b.shape}")
    return a @ b.T


def zero_shot_probabilities(items: np.ndarray, label_texts: np.ndarray) -> np.ndarray:
    """``softmax(items @ texts.T)`` as the official demo prints it: the text (and audio, ...) scales
    carried by the embeddings act as the inverse temperature."""
    return softmax(similarity(items, label_texts).astype(np.float64)).astype(np.float32)


def zero_shot(items: Sequence[Any], labels: Sequence[str], *, bundle: str | Path | Bundle | EmbeddingPipeline,
              modality: str = "vision", template: str = "{}", backend: str | Backend = "auto",
              memory: str = "normal") -> np.ndarray:
    """``(len(items), len(labels))`` probabilities of each label text for each item of ``modality``
    (:meth:`EmbeddingPipeline.zero_shot`); ``backend`` and ``memory`` as for :class:`EmbeddingPipeline`."""
    with pipeline_for(bundle, EmbeddingPipeline, modalities=sorted({modality, "text"}), backend=backend,
                      memory=memory) as pipeline:
        return pipeline.zero_shot(items, labels, modality=modality, template=template)


def top_k(queries: np.ndarray, matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores ``(Q, k)`` of the ``k`` best dot products per query, best first (stable ties)."""
    scores = similarity(queries, matrix)
    if not 1 <= k <= matrix.shape[0]:
        raise ValueError(f"expected 1 <= k <= {matrix.shape[0]} (stored embeddings), found k={k}")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


class EmbeddingIndex:
    """A stored embedding matrix ``(N, D)`` with one metadata entry per row (saved as .npy + .json)."""

    def __init__(self, embeddings: np.ndarray, metadata: Sequence[Any], *, modality: str, info: Mapping | None = None):
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(metadata) != len(embeddings):
            raise ValueError(f"expected (N, D) embeddings and N metadata entries, found {embeddings.shape} and "
                             f"{len(metadata)} entries")
        self.embeddings, self.metadata, self.modality = embeddings, list(metadata), modality
        self.info = dict(info or {})

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npy) and the metadata beside it (same name, .json)."""
        path = Path(path).with_suffix(".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self.embeddings)
        meta = {"modality": self.modality, "shape": list(self.embeddings.shape), "items": self.metadata, **self.info}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingIndex":
        path = Path(path).with_suffix(".npy")
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"expected {path} and {meta_path} (written by EmbeddingIndex.save)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        embeddings = np.load(path, allow_pickle=False)
        if list(embeddings.shape) != meta.get("shape"):
            raise ValueError(f"{path} holds {list(embeddings.shape)}, its metadata says {meta.get('shape')}")
        info = {k: v for k, v in meta.items() if k not in ("modality", "shape", "items")}
        return cls(embeddings, meta["items"], modality=meta["modality"], info=info)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[tuple[Any, float]]]:
        """Per query: the ``k`` best ``(metadata, score)`` pairs, best first."""
        queries = np.atleast_2d(queries)
        indices, scores = top_k(queries, self.embeddings, k)
        return [[(self.metadata[i], float(s)) for i, s in zip(row_i, row_s)] for row_i, row_s in zip(indices, scores)]
