"""AiT (All in Tokens) in the runtime: depth estimation and instance segmentation over the AR decoder."""
from runtime.ait.depth import DepthPipeline, estimate_depth
from runtime.ait.instances import InstancePipeline, Instances, segment_instances

__all__ = ["DepthPipeline", "estimate_depth", "InstancePipeline", "Instances", "segment_instances"]
