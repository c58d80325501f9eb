"""ONNX -> TensorRT: engine builds from a bundle's profiles, trtexec scripts, operator lint."""
