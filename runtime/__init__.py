"""The light runtime that ships to devices: numpy + ONNX Runtime (or TensorRT). Never imports torch."""
from runtime.bundle import Bundle, BundleError
from runtime.video import VideoPipeline, generate_video

__all__ = ["Bundle", "BundleError", "VideoPipeline", "generate_video"]
