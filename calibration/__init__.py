"""INT8 calibration: real component inputs, Q/DQ graphs, TensorRT calibration caches, accuracy reports."""
