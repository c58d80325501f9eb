"""Reading images for every pipeline: a path, a PIL image or an array in, HxWx3 uint8 RGB out."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_rgb(image: Any) -> np.ndarray:
    """A path, a PIL image or an array (HxW, HxWx3, HxWx4; uint8 or uint16) -> HxWx3 uint8 RGB."""
    if isinstance(image, (str, Path)):
        import cv2

        data = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if data is None:
            raise ValueError(f"could not read an image from {image}")
        if data.ndim == 3:
            data = cv2.cvtColor(data, cv2.COLOR_BGRA2RGBA if data.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        image = data
    elif hasattr(image, "convert") and hasattr(image, "size"):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 or uint16 image, found dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 RGB image (or HxW, HxWx4), found shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])
