"""Recording fakes of `tensorrt` (per major version, generated from the real API surfaces) and `pycuda`."""
