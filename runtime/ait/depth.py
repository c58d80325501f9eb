"""AiT depth estimation in the runtime: image -> Swin + AR encoder -> cached AR loop -> VQVAE decode.

Official inference (``ait/code/model/ait.py: forward_test`` and ``depth/depth_head.py``):

1. Pixels are RGB in [0, 1] (``torchvision ToTensor``) with NO mean/std normalisation: the
   NYUv2 depth dataset applies only ``ToTensor`` (``img_norm_cfg`` in the config is unused there).
   The official test images are NYUv2's 480x640; other inputs are resized (bilinear) to the
   bundle's ``test_size`` first and the depth is resized back at the end.
2. TTA: ``shift_size`` square windows of side H at x = i * (W - H) // (shift_size - 1), each
   window and its horizontal flip; prediction = (plain + flip(flipped)) / 2; windows are pasted
   and divided by their overlap count; the map is clipped at min 1e-3.
3. Per window: the AR loop over ``token_length`` steps (task-start embedding, ``dec_embed``
   positions inside the step graph, depth vocabulary slice, argmax for top_p 0, soft token =
   softmax(slice logits) @ depth-code embeddings, or the chosen code's embedding when hard);
   the collected slice logits are soft-decoded (softmax(logits * tau) inside the graph) or,
   when hard, the chosen codes go through the index decoder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from runtime.backends import Backend
from runtime.bundle import Bundle
from runtime.images import load_rgb
from runtime.arrays import softmax
from runtime.progress import ProgressBar
from runtime.ait.constants import DepthConstants
from runtime.ait.task import TaskPipeline
from runtime.pipeline import pipeline_for

StepFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def depth_ar_loop(run_step: StepFn, cross_k: np.ndarray, cross_v: np.ndarray, *, start_embedding: np.ndarray,
                  code_embeddings: np.ndarray, depth_slice: tuple[int, int], steps: int, soft: bool,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The official task-2 loop over a cached decoder step -> slice logits (B, steps, K), tokens (B, steps).

    ``run_step(feeds)`` runs the ``decoder_step`` graph; the self-attention cache starts empty
    (past length 0) and grows by one position per step.
    """
    layers, batch, heads, _, head_dim = cross_k.shape
    self_k = self_v = np.zeros((layers, batch, heads, 0, head_dim), np.float32)
    x = np.broadcast_to(start_embedding.reshape(1, 1, -1), (batch, 1, start_embedding.shape[-1])).astype(np.float32)
    lo, hi = depth_slice
    all_logits, all_tokens = [], []
    for step in range(steps):
        out = run_step({"token_embedding": x, "step_index": np.array([step], np.int64), "self_k": self_k,
                        "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v})
        logits, self_k, self_v = out["logits"][:, lo:hi], out["new_self_k"], out["new_self_v"]
        tokens = logits.argmax(-1)  # top_p 0: only the top token survives the nucleus filter
        x = (softmax(logits) @ code_embeddings if soft else code_embeddings[tokens])[:, None].astype(np.float32)
        all_logits.append(logits)
        all_tokens.append(tokens)
        if progress is not None:
            progress(step + 1)
    return np.stack(all_logits, 1), np.stack(all_tokens, 1).astype(np.int64)


def _bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if array.shape[:2] == (height, width):
        return array
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)


def window_starts(width: int, height: int, shift_size: int) -> list[int]:
    """x offsets of the official sliding windows (square, side ``height``)."""
    if width < height:
        raise ValueError(f"sliding windows need width >= height, found test size {height}x{width}")
    interval = (width - height) // max(shift_size - 1, 1)
    return [i * interval for i in range(shift_size)]


class DepthPipeline(TaskPipeline):
    """The opened graphs, tables and constants of one AiT depth bundle (load once, estimate many).

    Windows beyond what the graphs' profiles take in one call go through the AR loop in several batches;
    ``memory="low"``: one graph in memory at a time.
    """

    task, entry, variant_hint = "depth", "estimate_depth", "..."

    def __init__(self, bundle: str | Path | Bundle, *, backend: str | Backend = "auto", memory: str = "normal"):
        super().__init__(bundle, backend=backend, memory=memory)
        self.constants = c = DepthConstants.of(self.bundle)
        self.open("image_encoder", "decoder_step", "vqvae_soft_decoder", "vqvae_index_decoder")
        self.start_embedding = self.bundle.array(c.tables.start_embedding)
        self.code_embeddings = self.bundle.array(c.tables.depth_code_embeddings)
        self.depth_slice = c.vocabulary.depth_slice

    def pixels(self, image: Any, height: int, width: int) -> np.ndarray:
        """Any image -> (1, 3, height, width) float32 RGB in [0, 1] (bilinear resize, no mean/std)."""
        rgb = _bilinear(load_rgb(image).astype(np.float32), height, width)
        return np.transpose(rgb / np.float32(255.0), (2, 0, 1))[None]

    def tokens(self, images: np.ndarray, *, soft: bool = True, progress: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, S, S) pixels -> depth-slice logits (N, T, K) and codes (N, T) of the AR loop."""
        steps = self.constants.token_length
        encoded = self.run("image_encoder", {"image": images})
        bar = ProgressBar("depth tokens", steps) if progress else None
        return depth_ar_loop(
            self.session("decoder_step").run, encoded["cross_k"], encoded["cross_v"],
            start_embedding=self.start_embedding,
            code_embeddings=self.code_embeddings, depth_slice=self.depth_slice, steps=steps, soft=soft, progress=bar)

    def solve(self, images: np.ndarray, *, soft: bool = True, progress: bool = False) -> np.ndarray:
        """(N, 3, S, S) pixels -> (N, S, S) depth, without any test-time augmentation; in batches as large as
        the image encoder's and decoder step's profiles take."""
        batch = self.batch_limit("image_encoder", "decoder_step") or len(images)
        if len(images) > batch:
            return np.concatenate([self.solve(images[start:start + batch], soft=soft, progress=progress)
                                   for start in range(0, len(images), batch)])
        logits, tokens = self.tokens(images, soft=soft, progress=progress)
        if soft:
            return self.run("vqvae_soft_decoder", {"code_logits": logits})["depth"]
        return self.run("vqvae_index_decoder", {"indices": tokens})["depth"]

    def estimate(self, image: Any, *, soft: bool = True, tta: bool = True, progress: bool = True) -> np.ndarray:
        """(H, W) float32 depth in metres at the input's size."""
        c = self.constants
        source = load_rgb(image)
        size = c.image_size
        if not tta:
            depth = self.solve(self.pixels(source, size, size), soft=soft, progress=progress)[0]
        else:
            depth = self.sliding_flip(self.pixels(source, *c.test_size), soft=soft, progress=progress)
        depth = np.clip(depth, c.min_depth, None)
        return _bilinear(depth.astype(np.float32), *source.shape[:2])

    def sliding_flip(self, pixels: np.ndarray, *, soft: bool, progress: bool) -> np.ndarray:
        """The official shift-window + flip TTA on (1, 3, H, W) pixels -> (H, W) depth (before clipping)."""
        c = self.constants
        _, _, h, w = pixels.shape
        starts = window_starts(w, h, c.shift_size)
        windows = np.concatenate([pixels[..., x:x + h] for x in starts])
        if c.flip_test:
            windows = np.concatenate([windows, windows[..., ::-1]])
        solved = self.solve(np.ascontiguousarray(windows), soft=soft, progress=progress)
        if c.flip_test:
            half = len(solved) // 2
            solved = (solved[:half] + solved[half:, :, ::-1]) / np.float32(2.0)
        total, count = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
        for x, window in zip(starts, solved):
            total[:, x:x + h] += window
            count[:, x:x + h] += 1
        return total / count


def estimate_depth(image: Any, *, bundle: str | Path | Bundle | DepthPipeline, soft: bool = True, tta: bool = True,
                   progress: bool = True, backend: str | Backend = "auto", memory: str = "normal") -> np.ndarray:
    """Depth in metres, (H, W) float32 at the input's size, as the official AiT inference computes it.

    ``image``: a path, a PIL image or an HxW / HxWx3 / HxWx4 uint8 array of any size.
    ``soft``: soft tokens and soft VQVAE decoding (the released setting) or hard argmax codes.
    ``tta``: the official sliding windows + horizontal flips at the bundle's test size; off, one
    pass on the image resized to the square model input.
    ``backend`` and ``memory``: as for ``generate_video`` (used when ``bundle`` is not a pipeline already).
    """
    with pipeline_for(bundle, DepthPipeline, backend=backend, memory=memory) as pipeline:
        return pipeline.estimate(image, soft=soft, tta=tta, progress=progress)
