"""GPU smoke test of the project's pycuda loop, with a tiny CUDA kernel standing in for the TensorRT engine.

Runs `resnet_deploy.trt.cuda` for real: the device's retained primary context pushed around the
work, pinned host buffers, device buffers, one stream, async H2D and D2H, CUDA events around each
phase (`StreamLoop`, the loop the TensorRT runner uses), for `--iterations` batches, the last tenth
from a worker thread; with `--cuda-graph` the kernel launch is captured once into a CUDA graph and
replayed (`cudagraph.CudaGraphs`, as the runner's `cuda_graph=True`). It checks every result against
numpy and that free device memory and the process's resident host memory stay flat. Needs an NVIDIA GPU, nvcc and pycuda (build_pycuda.sh);
no TensorRT. Exit 0: all good; 1: a check failed; 2: it could not run (no GPU, no nvcc, no pycuda).

    python tools/gpu_smoke/smoke.py --iterations 10000 --json reports/gpu-smoke.json
    python tools/gpu_smoke/smoke.py --iterations 10000 --cuda-graph --json reports/gpu-smoke-graph.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from resnet_deploy.trt import cuda, cudagraph  # noqa: E402

KERNEL = Path(__file__).with_name("kernel.cu")
PIXELS, CLASSES = 28 * 28, 10
MAX_DEVICE_GROWTH = 1 << 20   # bytes of free device memory lost over the run
MAX_HOST_GROWTH = 4 << 20     # bytes of resident host memory gained after warm-up

Launch = Callable[[Any, Any, Any, int], None]  # (stream, input buffer, output buffer, batch)


def expected_logits(images: np.ndarray) -> np.ndarray:
    means = images.reshape(len(images), -1).mean(axis=1, dtype=np.float64)
    return (means[:, None] * np.arange(1, CLASSES + 1)).astype(np.float32)


def compile_kernel(compute_capability: str, out_dir: Path) -> Launch:
    """nvcc -> PTX for this GPU, loaded with pycuda's driver API (no pycuda.compiler, so no pytools)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found on PATH (add the CUDA toolkit's bin directory)")
    ptx = out_dir / "kernel.ptx"
    arch = "compute_" + compute_capability.replace(".", "")
    subprocess.run([nvcc, "--ptx", f"-arch={arch}", "-o", str(ptx), str(KERNEL)], check=True)
    function = cuda.driver().module_from_file(str(ptx)).get_function("stand_in")

    def launch(stream, images, logits, batch: int) -> None:
        block = 128
        function(images.device, logits.device, np.int32(batch), np.int32(PIXELS), np.int32(CLASSES),
                 block=(block, 1, 1), grid=((batch + block - 1) // block, 1), stream=stream)

    return launch


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def run(iterations: int = 10_000, batch: int = 32, device: int = 0, launch: Launch | None = None,
        warmup: int = 100, cuda_graph: bool = False) -> dict[str, Any]:
    """The loop on GPU `device`; `launch` defaults to the compiled CUDA kernel, replayed from a CUDA graph
    with `cuda_graph`."""
    info = cuda.device_info(device)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(batch, 1, 28, 28)).astype(np.float32) for _ in range(8)]
    expected = [expected_logits(b) for b in batches]
    timings: list[dict[str, float]] = []
    wrong = 0
    with tempfile.TemporaryDirectory() as scratch, cuda.pushed(device):
        launch = launch or compile_kernel(info.compute_capability, Path(scratch))
        buffers = {"input": cuda.HostDeviceBuffer((batch, 1, 28, 28), np.float32),
                   "logits": cuda.HostDeviceBuffer((batch, CLASSES), np.float32)}
        loop = cuda.StreamLoop(buffers)
        graphs = cudagraph.CudaGraphs(lambda message: print(f"gpu smoke: {message}", file=sys.stderr)) \
            if cuda_graph else None

        def kernel(stream) -> None:
            launch(stream, buffers["input"], buffers["logits"], batch)

        def enqueue(stream) -> None:
            if graphs is None:
                kernel(stream)
            else:
                graphs.run((batch,), stream, kernel)

        def step(i: int) -> None:
            nonlocal wrong
            images = batches[i % len(batches)]
            out = loop.run({"input": images}, {"logits": (batch, CLASSES)}, enqueue)
            wrong += not np.allclose(out["logits"], expected[i % len(batches)], rtol=1e-4, atol=1e-5)
            timings.append(loop.last_timings)

        for i in range(warmup):
            step(i)
        free_before, host_before = cuda.driver().mem_get_info()[0], resident_bytes()
        started = time.perf_counter()
        in_thread = iterations // 10
        for i in range(iterations - in_thread):
            step(i)
        worker_errors: list[BaseException] = []

        def worker() -> None:
            try:
                with cuda.pushed(device):
                    for i in range(in_thread):
                        step(i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                worker_errors.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        if worker_errors:
            raise worker_errors[0]
        seconds = time.perf_counter() - started
        free_after, host_after = cuda.driver().mem_get_info()[0], resident_bytes()
        graph_status = graphs.status() if graphs else None
        if graphs:
            graphs.free()
        loop.free()
        free_released = cuda.driver().mem_get_info()[0]
    measured = timings[warmup:]
    report = {
        "gpu": {"name": info.name, "compute_capability": info.compute_capability, "integrated": info.integrated,
                "platform": info.platform},
        "iterations": iterations, "batch": batch, "wrong_results": wrong, "seconds": round(seconds, 3),
        "per_iteration_us": round(seconds / iterations * 1e6, 1),
        "median_ms": {phase: round(statistics.median(t[phase] for t in measured) * 1e3, 4)
                      for phase in ("h2d", "compute", "d2h", "enqueue")},
        "device_free_lost_bytes": free_before - free_after, "host_resident_gained_bytes": host_after - host_before,
        "device_freed_at_end_bytes": free_released - free_after, "cuda_graph": graph_status,
    }
    report["passed"] = (wrong == 0 and report["device_free_lost_bytes"] < MAX_DEVICE_GROWTH
                        and report["host_resident_gained_bytes"] < MAX_HOST_GROWTH)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--cuda-graph", action="store_true", help="Replay the kernel launch from a CUDA graph.")
    parser.add_argument("--json", type=Path, default=None, help="Write the report here as well.")
    args = parser.parse_args(argv)
    try:
        report = run(args.iterations, args.batch, args.device, cuda_graph=args.cuda_graph)
    except Exception as exc:  # noqa: BLE001 - one line, exit 2: the smoke test could not run here
        print(f"gpu smoke: could not run: {type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
