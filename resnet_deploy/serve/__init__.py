"""Serving on NVIDIA Triton Inference Server: a PyTriton binding (`serve`), model repositories for
stock Triton containers (`triton-repo`) and a load tester (`loadtest`).

Nothing here imports PyTriton or tritonclient at module import time; `environment.require_serve_extra`
says what to install when they are missing.
"""
