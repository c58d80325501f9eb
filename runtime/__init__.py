"""The light runtime that ships to devices: numpy + one backend (ONNX Runtime, TensorRT, a Triton server).
Never imports torch.

The public names are the bundle format, ``open_session`` and every registered
family's pipelines (``runtime.families``): ``generate_video``, ``VideoPipeline``,
``estimate_depth``, ``segment_instances``, ``embed``, ``similarity``, ``zero_shot``,
``EmbeddingIndex`` and their pipeline classes.
"""
from runtime.backends import Backend, open_session
from runtime.bundle import Bundle, BundleError
from runtime.families import family_modules

__all__ = ["Backend", "Bundle", "BundleError", "open_session"]
for _family in family_modules("runtime").values():
    globals().update({_name: getattr(_family, _name) for _name in _family.__all__})
    __all__ += _family.__all__
del _family
