"""VideoCrafter1/2 in the runtime: the text/image-to-video pipeline, its samplers (official DDIM, DPM-Solver++, UniPC)
and image conditioning."""
from runtime.videocrafter1.pipeline import VideoPipeline, generate_video

__all__ = ["VideoPipeline", "generate_video"]
