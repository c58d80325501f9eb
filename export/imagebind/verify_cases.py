"""verify-reference handlers for the ImageBind golden cases.

Model cases: ``torch`` is the official forward of our encoder (clip averaging for rank >= 5
inputs); ``onnx`` is the bundle's per-item graph under ONNX Runtime, fed as the runtime
feeds it (images repeated to 2-frame clips, clip axes folded into the batch) and averaged
over clips with the runtime's numpy code. Tokenizer and preprocessing cases run the
runtime's numpy code (``runtime`` rows).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from export.checkpoint import load_checkpoint
from export.imagebind.graphs import encoder_graph
from export.imagebind.model import CLIP_RANK, VIDEO_PAD_FRAMES, build_encoder
from export.onnx_io import run_onnx
from export.golden import Case, Row, score, verify_clip_tokenizer
from runtime.imagebind.pipeline import average_clips
from runtime.imagebind.preprocess import clip_sample_bounds, load_and_transform_audio, load_and_transform_vision


def _item_feed(modality: str, x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(per-item graph feed, B, S): a rank >= 5 input is (B, S, ...) and its clip axis is folded into the
    batch (the official rule); an image (N, 3, H, W) is repeated to a 2-frame clip (official PadIm2Video)."""
    batch, clips = (x.shape[0], x.shape[1]) if x.ndim >= CLIP_RANK else (x.shape[0], 1)
    items = x.reshape(batch * clips, *x.shape[2:]) if x.ndim >= CLIP_RANK else x
    if modality == "vision" and items.ndim == 4:
        items = np.repeat(items[:, :, None], VIDEO_PAD_FRAMES, axis=2)
    return np.ascontiguousarray(items), batch, clips


def verify_encoder(case: Case) -> list[Row]:
    (modality,) = case.inputs
    encoder = load_checkpoint(build_encoder(modality, case.config), case.weights,
                              what=f"imagebind {modality} encoder ({case.name})").eval()
    x = case.io[modality]
    with torch.no_grad():
        tensor = torch.from_numpy(np.ascontiguousarray(x))
        torch_out = {"embedding": encoder(tensor).numpy(), "head_output": encoder.head_output(tensor).numpy()}
    spec = encoder_graph(modality, with_head=True).spec(encoder)
    items, batch, clips = _item_feed(modality, x)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        path = spec.export({modality: items}, Path(tmp) / f"{spec.name}.onnx")
        found = run_onnx(path, {modality: items})
    head = found["head_output"]
    onnx_out = {"embedding": average_clips(found["embedding"], [clips] * batch),
                "head_output": head.reshape(batch, clips, -1) if x.ndim >= CLIP_RANK else head}
    return [score(case, "torch", torch_out), score(case, "onnx", onnx_out)]


def verify_vision_preprocess(case: Case) -> list[Row]:
    c = case.config
    pixels = load_and_transform_vision(case.io["image_uint8_hwc"], resize=c["resize"], center_crop=c["center_crop"],
                                       mean=tuple(c["mean"]), std=tuple(c["std"]))
    return [score(case, "runtime", {"pixels": pixels[None]})]


def verify_audio_preprocess(case: Case) -> list[Row]:
    c = case.config
    waveform, rate = case.io["waveform"], int(case.io["sample_rate"])
    clips = load_and_transform_audio(waveform, rate, num_mel_bins=c["num_mel_bins"], target_length=c["target_length"],
                                     target_sample_rate=c["sample_rate"], clip_duration=c["clip_duration"],
                                     clips_per_video=c["clips_per_video"], mean=c["mean"], std=c["std"])
    resampled = -(-waveform.shape[-1] * c["sample_rate"] // rate)  # ceil(n * 16000 / sr), torchaudio's length
    bounds = np.asarray(clip_sample_bounds(resampled, c["sample_rate"], c["clip_duration"], c["clips_per_video"]),
                        dtype=np.int64)
    return [score(case, "runtime", {"clips": clips[None], "clip_bounds": bounds})]


HANDLERS = {
    **{f"imagebind.{m}": verify_encoder for m in ("vision", "text", "audio", "depth", "thermal", "imu")},
    "imagebind.vision.video": verify_encoder,
    "imagebind.tokenizer": verify_clip_tokenizer,
    "imagebind.preprocess.vision": verify_vision_preprocess,
    "imagebind.preprocess.audio": verify_audio_preprocess,
}
