"""AiT instance segmentation in the runtime: image -> Swin + AR encoder -> sampled object tokens -> masks.

Official inference (``ait/code/model/transformer.py: ARTransformer.forward`` task 0/1 branch,
``detection/insseg_head.py: InsSegHead._get_bboxes_single / decode_mask / _do_paste_mask``,
``ait.py: simple_test_insseg``; test pipeline of ``configs/swinv2b_640reso_inssegonly.py``):

1. Keep-ratio resize so the long side is ``image_size`` (640), bilinear; RGB minus mean over std
   (``img_norm_cfg``); zero padding right/bottom to ``image_size`` squared.
2. AR loop, ``num_query`` (100) objects x (4 box + 1 class + 16 mask) steps, no EOS (``pred_eos``
   false): every step keeps the position's vocabulary slice (box bins [0, num_bins], the 80
   classes, the mask codes) and samples it with the top-p nucleus rule (released: 0.3). The class
   score is softmax([class logits, noise-label logit])[chosen class]; the chosen class itself is
   sampled from the class logits only. Mask steps feed back the soft token
   softmax(mask logits) @ mask-code embeddings; box and class steps the chosen token's embedding.
3. Boxes = bins * norm_val / num_bins, divided by the resize scale (``rescale=True``), in the official
   float32 arithmetic; each object's 16 mask logits are soft-decoded by the instance VQVAE (64x64,
   softmax(logits * tau) with tau 1.0: the instance config sets none) and pasted into its box at the
   original image size (bilinear ``grid_sample``, align_corners false, zero padding; a zero-width box
   side samples its centre, and a 0/0 coordinate samples NaN, as officially), then >= 0.5.

Sampling: the official code draws with ``torch.multinomial`` on torch's global RNG, which numpy
cannot reproduce; here step ``i`` draws one uniform per image from ``numpy.random.default_rng(seed)``
and takes the first token whose cumulative filtered probability exceeds it (inverse CDF, the same
distribution). A torch loop fed the same uniforms picks the same tokens. With ``top_p`` 0 the nucleus
keeps only the top token, so every step takes the argmax whatever the seed: a deterministic run that
equals the official one token for token (the ``ait.insseg`` golden case checks it).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from runtime.ait.constants import InstanceConstants
from runtime.ait.task import TaskPipeline
from runtime.arrays import softmax
from runtime.backends import Backend
from runtime.bundle import Bundle
from runtime.images import load_rgb
from runtime.progress import ProgressBar
from runtime.pipeline import pipeline_for

StepFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass
class Instances:
    """Per-object results at the input's size; ``official()`` regroups them as ``simple_test_insseg`` returns."""
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in input pixels
    scores: np.ndarray  # (N,) float32
    classes: np.ndarray  # (N,) int64 in [0, num_classes)
    masks: np.ndarray  # (N, H, W) bool
    num_classes: int

    def official(self) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """(bbox_results, mask_results): per class a (n, 5) [box, score] array and a list of (H, W) masks
        (``mmdet bbox2result`` and AiT's ``mask2result``)."""
        dets = np.concatenate([self.boxes, self.scores[:, None]], axis=1).astype(np.float32)
        bbox_results = [dets[self.classes == c] for c in range(self.num_classes)]
        mask_results: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        for mask, label in zip(self.masks, self.classes):
            mask_results[label].append(mask)
        return bbox_results, mask_results


def nucleus_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Official top-p rule on (B, K) logits: probabilities after dropping the sorted tail past top_p
    (the top token always stays)."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, -1)
    remove = np.cumsum(softmax(sorted_logits), axis=-1) > top_p
    remove[..., 1:] = remove[..., :-1].copy()
    remove[..., 0] = False
    filtered = logits.copy()
    np.put_along_axis(filtered, order, np.where(remove, -np.inf, sorted_logits), -1)
    return softmax(filtered)


def sample_inverse_cdf(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """(B, K) probabilities, (B,) uniforms in [0, 1) -> (B,) first index whose cumulative probability exceeds u."""
    cdf = np.cumsum(probs, axis=-1)
    picks = (cdf <= (uniforms * cdf[:, -1])[:, None]).sum(-1)
    return np.minimum(picks, probs.shape[-1] - 1).astype(np.int64)


def object_boxes(bins: np.ndarray, norm_val: int, num_bins: int, scale: tuple[float, float]) -> np.ndarray:
    """(Q, 4) box bins -> (Q, 4) float32 x1, y1, x2, y2 in input pixels, with the official arithmetic:
    bins * norm_val (exact), divided by num_bins in float32, then by the float32 resize scale (x, y, x, y)."""
    boxes = (bins * norm_val).astype(np.float32) / np.float32(num_bins)
    return boxes / np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)


@dataclass
class TokenLayout:
    """Vocabulary slices of one object's positions: 4 box bins, the class, then the mask codes."""
    box_slice: tuple[int, int]
    class_slice: tuple[int, int]
    noise_label: int
    mask_slice: tuple[int, int]
    mask_tokens: int

    @property
    def object_length(self) -> int:
        return 5 + self.mask_tokens

    def slice_at(self, position: int) -> tuple[int, int]:
        return self.box_slice if position < 4 else self.class_slice if position == 4 else self.mask_slice


def instance_ar_loop(run_step: StepFn, cross_k: np.ndarray, cross_v: np.ndarray, *, start_embedding: np.ndarray,
                     vocabulary: np.ndarray, layout: TokenLayout, num_objects: int, top_p: float, soft: bool,
                     rng: np.random.Generator, progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official task-1 loop -> tokens (B, objects*L) within their slices, class scores (B, objects),
    mask-slice logits (B, objects, mask_tokens, K)."""
    layers, batch, heads, _, head_dim = cross_k.shape
    self_k = self_v = np.zeros((layers, batch, heads, 0, head_dim), np.float32)
    x = np.broadcast_to(start_embedding.reshape(1, 1, -1), (batch, 1, vocabulary.shape[-1])).astype(np.float32)
    tokens, scores, mask_logits = [], [], []
    for step in range(num_objects * layout.object_length):
        out = run_step({"token_embedding": x, "step_index": np.array([step], np.int64), "self_k": self_k,
                        "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v})
        logits, self_k, self_v = out["logits"], out["new_self_k"], out["new_self_v"]
        position = step % layout.object_length
        lo, hi = layout.slice_at(position)
        current = logits[:, lo:hi]
        token = sample_inverse_cdf(nucleus_filter(current, top_p), rng.random(batch))
        if position == 4:  # the noise label joins the class softmax for the score only
            with_noise = softmax(np.concatenate([current, logits[:, layout.noise_label:layout.noise_label + 1]], 1))
            scores.append(with_noise[np.arange(batch), token])
        if position >= 5:
            mask_logits.append(current)
        if position >= 5 and soft:
            x = (softmax(current) @ vocabulary[lo:hi])[:, None]
        else:
            x = vocabulary[token + lo][:, None]
        x = x.astype(np.float32)
        tokens.append(token)
        if progress is not None:
            progress(step + 1)
    k = mask_logits[0].shape[-1]
    return (np.stack(tokens, 1), np.stack(scores, 1).astype(np.float32),
            np.stack(mask_logits, 1).reshape(batch, num_objects, layout.mask_tokens, k))


def paste_values(mask: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    """Official ``_do_paste_mask`` (CPU path: one object, region of the box +-1 px): (m, m) mask in box
    (x1, y1, x2, y2) -> (height, width) float32 sampled values, 0 outside the region. A box whose far edge
    lies over 2 px before its near edge pastes nothing (the official code raises in ``torch.arange``)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    out = np.zeros((height, width), np.float32)
    cx0, cy0 = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
    cx1, cy1 = min(int(np.ceil(x1)) + 1, width), min(int(np.ceil(y1)) + 1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        gx = (np.arange(cx0, cx1, dtype=np.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        gy = (np.arange(cy0, cy1, dtype=np.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    gx[np.isinf(gx)], gy[np.isinf(gy)] = 0, 0  # zero-width boxes: the official code zeroes inf (0/0 stays NaN)
    m = mask.shape[0]
    pixels_y, pixels_x = ((gy + 1) * m - 1) / 2, ((gx + 1) * m - 1) / 2  # align_corners false
    out[cy0:cy1, cx0:cx1] = _bilinear_zero_pad(mask.astype(np.float32), pixels_y, pixels_x)
    return out


def paste_mask(mask: np.ndarray, box: np.ndarray, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """:func:`paste_values` then ``>= threshold`` (as ``decode_mask``) -> (height, width) bool."""
    return paste_values(mask, box, height, width) >= threshold


def _interpolation_matrix(coords: np.ndarray, size: int) -> np.ndarray:
    """(n, size) linear-interpolation weights at pixel coordinates; taps outside [0, size) weigh 0 (zero padding);
    a NaN coordinate samples NaN (as grid_sample does), which is never >= the threshold."""
    nan = np.isnan(coords)
    base = np.floor(np.where(nan, 0, coords)).astype(np.int64)
    frac = (coords - base).astype(np.float32)
    matrix = np.zeros((len(coords), size), np.float32)
    for index, weight in ((base, 1 - frac), (base + 1, frac)):
        valid = (index >= 0) & (index < size) & ~nan
        matrix[np.nonzero(valid)[0], index[valid]] += weight[valid]
    matrix[nan] = np.nan
    return matrix


def _bilinear_zero_pad(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """grid_sample (bilinear, zeros padding) of an (h, w) image at the outer product of ys and xs (separable)."""
    return _interpolation_matrix(ys, image.shape[0]) @ image @ _interpolation_matrix(xs, image.shape[1]).T


class InstanceHead:
    """Everything after the image encoder (the official ``InsSegHead`` at test time): the AR loop over the
    ``decoder_step`` graph, then boxes, classes and masks decoded by the ``mask_soft_decoder`` graph and pasted.
    ``segment_instances`` and ``verify-reference`` (on the golden case's backbone features) run this code.

    ``constants``/``tables``: the bundle's pipeline constants and its start / vocabulary embeddings;
    ``run_step(feeds)``: the decoder-step graph; ``decode_masks(code_logits)``: (Q, mask_tokens, K) -> (Q, m, m).
    """

    def __init__(self, constants: InstanceConstants, tables: Mapping[str, np.ndarray], run_step: StepFn,
                 decode_masks: Callable[[np.ndarray], np.ndarray]):
        self.constants, self.run_step, self.decode_masks = constants, run_step, decode_masks
        self.start_embedding = tables["start_embedding"]
        self.vocabulary = tables["vocabulary_embeddings"]
        v = constants.vocabulary
        self.layout = TokenLayout(v.box_slice, v.class_slice, v.noise_label, v.mask_slice, constants.mask_tokens)

    def resolve_top_p(self, top_p: float | None) -> float:
        """The top_p of the nucleus rule: the bundle's (the released 0.3) when None; 0 keeps only the top token."""
        if top_p is None:
            return float(self.constants.top_p)
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 <= top_p <= 1:
            raise ValueError(f"top_p must be a number in [0, 1] (0: only the top token, a deterministic run; "
                             f"None: the bundle's {self.constants.top_p}), found {top_p!r}")
        return float(top_p)

    def tokens(self, cross_k: np.ndarray, cross_v: np.ndarray, *, seed: int = 0, top_p: float | None = None,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The image encoder's cross keys/values -> object tokens, class scores and mask logits of the AR loop."""
        c = self.constants
        top_p = self.resolve_top_p(top_p)
        bar = ProgressBar("instance tokens", c.num_query * c.object_length) if progress else None
        return instance_ar_loop(
            self.run_step, cross_k, cross_v, start_embedding=self.start_embedding, vocabulary=self.vocabulary,
            layout=self.layout, num_objects=c.num_query, top_p=top_p, soft=c.soft_transformer,
            rng=np.random.default_rng(seed), progress=bar)

    def instances(self, tokens: np.ndarray, scores: np.ndarray, mask_logits: np.ndarray, *,
                  scale: tuple[float, float], size: tuple[int, int]) -> Instances:
        """One image's loop outputs -> boxes (``_get_bboxes_single``, ``rescale=True``: divided by the resize
        ``scale`` (x, y)), classes and masks soft-decoded and pasted at ``size`` (H, W) (``decode_mask``)."""
        c = self.constants
        objects = tokens.reshape(c.num_query, c.object_length)
        boxes = object_boxes(objects[:, :4], c.norm_val, c.num_bins, scale)
        masks64 = self.decode_masks(mask_logits)
        masks = np.stack([paste_mask(m, b, *size, c.mask_threshold) for m, b in zip(masks64, boxes)])
        num_classes = self.layout.class_slice[1] - self.layout.class_slice[0]
        return Instances(boxes=boxes, scores=scores, classes=objects[:, 4].astype(np.int64), masks=masks,
                         num_classes=num_classes)


class InstancePipeline(TaskPipeline):
    """The opened graphs, tables and constants of one AiT insseg bundle (load once, segment many);
    ``memory="low"``: one graph in memory at a time."""

    task, entry, variant_hint = "insseg", "segment_instances", "--variant ...inssegonly"

    def __init__(self, bundle: str | Path | Bundle, *, backend: str | Backend = "auto", memory: str = "normal"):
        super().__init__(bundle, backend=backend, memory=memory)
        self.constants = c = InstanceConstants.of(self.bundle)
        self.open("image_encoder", "decoder_step", "mask_soft_decoder")
        tables = {"start_embedding": self.bundle.array(c.tables.start_embedding),
                  "vocabulary_embeddings": self.bundle.array(c.tables.vocabulary_embeddings)}
        self.head = InstanceHead(c, tables, lambda feeds: self.session("decoder_step").run(feeds),
                                 lambda logits: self.run("mask_soft_decoder", {"code_logits": logits})["masks"])

    def pixels(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """HxWx3 uint8 -> (1, 3, S, S) normalised, padded pixels and the (x, y) resize scale."""
        import cv2

        c = self.constants
        size, (h, w) = c.image_size, rgb.shape[:2]
        ratio = size / max(h, w)
        new_w, new_h = int(w * ratio + 0.5), int(h * ratio + 0.5)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        norm = c.normalisation
        resized = (resized - np.float32(norm.mean)) / np.float32(norm.std)
        padded = np.zeros((size, size, 3), np.float32)
        padded[:new_h, :new_w] = resized
        return np.transpose(padded, (2, 0, 1))[None], (new_w / w, new_h / h)

    def tokens(self, pixels: np.ndarray, *, seed: int = 0, top_p: float | None = None, progress: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3, S, S) pixels -> object tokens, class scores and mask logits of the AR loop."""
        encoded = self.run("image_encoder", {"image": pixels})
        return self.head.tokens(encoded["cross_k"], encoded["cross_v"], seed=seed, top_p=top_p, progress=progress)

    def segment(self, image: Any, *, seed: int = 0, top_p: float | None = None, progress: bool = True) -> Instances:
        rgb = load_rgb(image)
        pixels, scale = self.pixels(rgb)
        tokens, scores, mask_logits = self.tokens(pixels, seed=seed, top_p=top_p, progress=progress)
        return self.head.instances(tokens[0], scores[0], mask_logits[0], scale=scale, size=rgb.shape[:2])


def segment_instances(image: Any, *, bundle: str | Path | Bundle | InstancePipeline, seed: int = 0,
                      top_p: float | None = None, progress: bool = True, backend: str | Backend = "auto",
                      memory: str = "normal") -> Instances:
    """Instances (boxes, scores, classes, masks at the input's size) as the official AiT insseg inference
    computes them; ``.official()`` gives its per-class (bbox_results, mask_results).

    ``image``: a path, a PIL image or an HxW / HxWx3 / HxWx4 uint8 array of any size.
    ``seed``: the top-p sampling stream (the same seed gives the same tokens).
    ``top_p``: the nucleus rule's mass in [0, 1]; None takes the bundle's (the released 0.3); 0 keeps only
    the top token at every step, a deterministic run that does not depend on ``seed``.
    ``backend`` and ``memory``: as for ``generate_video`` (used when ``bundle`` is not a pipeline already).
    """
    with pipeline_for(bundle, InstancePipeline, backend=backend, memory=memory) as pipeline:
        return pipeline.segment(image, seed=seed, top_p=top_p, progress=progress)
