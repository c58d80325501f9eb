"""The light runtime that ships to devices: numpy + ONNX Runtime (or TensorRT). Never imports torch."""
from runtime.ait import DepthPipeline, estimate_depth
from runtime.ait_instances import InstancePipeline, Instances, segment_instances
from runtime.bundle import Bundle, BundleError
from runtime.imagebind import EmbeddingIndex, EmbeddingPipeline, embed, similarity, zero_shot
from runtime.video import VideoPipeline, generate_video

__all__ = ["Bundle", "BundleError", "EmbeddingIndex", "EmbeddingPipeline", "embed", "similarity", "zero_shot", "DepthPipeline", "estimate_depth", "InstancePipeline", "Instances", "segment_instances", "VideoPipeline", "generate_video"]
