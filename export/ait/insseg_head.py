"""AiT's instance-segmentation test path in torch: the parity reference for the runtime.

Written after the official ``ait/code/model/detection/insseg_head.py``: ``InsSegHead.forward`` runs
``ARTransformer`` task 1 (:meth:`ARTransformer.forward_insseg` here), ``_get_bboxes_single`` turns box
bins into boxes (``coord_norm='abs'``, ``rescale=True``) and ``decode_mask(soft_inf=True)`` soft-decodes
each object's mask logits with the instance VQVAE, then pastes them as ``_do_paste_mask`` does on a CPU
(one box at a time, ``skip_empty``, bilinear ``grid_sample`` with align_corners false, ``>= 0.5``);
with ``soft_vae`` false the sampled mask codes are decoded instead (``soft_inf=False``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from export.ait.ar_transformer import ARTransformer
from export.ait.vqvae import VQVAE

MASK_THRESHOLD = 0.5


def object_boxes(box_bins: torch.Tensor, norm_val: int, num_bins: int, scale_factor: Sequence[float]) -> torch.Tensor:
    """(Q, 4) int64 bins -> (Q, 4) float32 x0, y0, x1, y1: bins * norm_val / num_bins (an integer product,
    then a float32 division, as officially), divided by the resize scale (w, h, w, h)."""
    boxes = box_bins * norm_val / num_bins
    return boxes / boxes.new_tensor(np.asarray(scale_factor, np.float32))


def paste_values(mask: torch.Tensor, box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One (m, m) mask into its box (4,) on a (height, width) canvas of sampled values (0 outside): sampled at
    the pixel centres of the box's region +-1 px; a zero-width side gives inf coordinates, which officially
    become 0 (a 0/0 stays NaN). A box whose far edge lies over 2 px before its near edge raises in
    ``torch.arange``, as the official code does."""
    x0_int, y0_int = (max(int(torch.floor(v)) - 1, 0) for v in box[:2])
    x1_int, y1_int = min(int(torch.ceil(box[2])) + 1, width), min(int(torch.ceil(box[3])) + 1, height)
    x0, y0, x1, y1 = box
    ys = (torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    xs = (torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    ys[torch.isinf(ys)], xs[torch.isinf(xs)] = 0, 0
    grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=-1)
    canvas = torch.zeros(height, width)
    canvas[y0_int:y1_int, x0_int:x1_int] = F.grid_sample(mask[None, None].float(), grid[None],
                                                         align_corners=False)[0, 0]
    return canvas


@torch.no_grad()
def segment_features(transformer: ARTransformer, vqvae: VQVAE, feats: torch.Tensor, *, num_query: int,
                     norm_val: int, num_bins: int, scale_factor: Sequence[float], size: tuple[int, int],
                     choose: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Backbone features (1, C, h, w) -> the official test outputs of one image: ``tokens`` (L,), class
    ``scores`` (Q,), ``mask_logits`` (Q, mask_tokens, K), ``boxes`` (Q, 5) with the score last, ``labels``
    (Q,) and ``masks`` (Q, H, W) bool at ``size`` (H, W) (the original image); ``mask_values`` holds the pasted
    values the masks threshold."""
    if feats.shape[0] != 1:
        raise ValueError(f"expected the features of one image (1, C, h, w), found {tuple(feats.shape)}")
    mask_tokens = vqvae.token_length
    tokens, scores, mask_logits = (t[0] for t in transformer.forward_insseg(feats, num_query, mask_tokens, choose))
    objects = tokens.reshape(num_query, 5 + mask_tokens)
    boxes = object_boxes(objects[:, :4], norm_val, num_bins, scale_factor)
    if transformer.soft_vae:  # decode_mask(soft_inf=True): the collected logits
        decoded = vqvae.decode_soft(mask_logits.transpose(1, 2).reshape(num_query, -1, vqvae.side, vqvae.side))
    else:  # the sampled mask codes
        decoded = vqvae.decode_indices(objects[:, 5:])
    values = torch.stack([paste_values(m, b, *size) for m, b in zip(decoded, boxes)])
    return {"tokens": tokens.numpy(), "scores": scores.numpy(), "mask_logits": mask_logits.numpy(),
            "boxes": torch.cat([boxes, scores[:, None]], dim=1).numpy(), "labels": objects[:, 4].numpy(),
            "masks": (values >= MASK_THRESHOLD).numpy(), "mask_values": values.numpy()}
