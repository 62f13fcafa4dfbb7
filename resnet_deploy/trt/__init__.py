"""Everything that knows TensorRT or pycuda: compat, settings, builder, runner, sidecar, cuda."""
