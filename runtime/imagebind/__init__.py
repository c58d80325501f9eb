"""ImageBind in the runtime: six modality encoders into one embedding space, preprocessing in numpy."""
from runtime.imagebind.pipeline import EmbeddingIndex, EmbeddingPipeline, embed, similarity, zero_shot

__all__ = ["EmbeddingIndex", "EmbeddingPipeline", "embed", "similarity", "zero_shot"]
