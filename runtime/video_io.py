"""Writing frames as video files (OpenCV's MPEG-4 writer; no torch, no ffmpeg binary)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """Write ``(T, H, W, 3)`` uint8 RGB frames to an ``.mp4`` file and return its path."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, found {frames.shape} {frames.dtype}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, found {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open an MPEG-4 writer for {path}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()
    return path
