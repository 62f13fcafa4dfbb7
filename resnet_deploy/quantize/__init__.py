"""INT8 calibration, Q/DQ graphs, TensorRT calibration caches and FP16 graphs."""
