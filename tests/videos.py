"""Reading a written video back, for the tests of ``runtime.video_io.write_mp4`` and ``generate_video(output=)``."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as ``(T, H, W, 3)`` uint8 RGB."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1])
    capture.release()
    if not frames:
        raise ValueError(f"no frames could be read from {path}")
    return np.stack(frames)
