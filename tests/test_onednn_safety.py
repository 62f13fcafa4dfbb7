"""Training never runs channels-last below the width where torch's oneDNN corrupts memory on AVX2 CPUs.

oneDNN's AVX2 1x1 convolution weight gradient (jit_avx2_1x1_convolution_bwd_weights) crashes or hangs
in channels-last with fewer than 8 channels (resnet_deploy.train.CHANNELS_LAST_MIN_CHANNELS).
ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN pick its AVX2 kernels on any x86-64 CPU, AVX-512 ones included.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from resnet_deploy.models import create_model
from resnet_deploy.train import (
    CHANNELS_LAST_MIN_CHANNELS,
    TrainConfig,
    memory_format,
    smallest_conv_channels,
    train,
)

RUNS = 10
STEPS = 3
LIMIT_S = 420
TRAIN_A_FEW_STEPS = """
import faulthandler, sys, tempfile, time
from resnet_deploy.train import TrainConfig, train

width, threads, runs, steps, data_dir, limit = sys.argv[1:]
faulthandler.dump_traceback_later(float(limit), exit=True)  # a hang: every thread's stack, exit 1

class Stop(Exception):
    pass

def stop_at(step):
    def report(event, values):
        if event == "step" and values["step"] == step:
            raise Stop
    return report

for run in range(1, int(runs) + 1):
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(width=float(width), epochs=1, train_limit=256, batch_size=32, threads=int(threads))
        try:
            train(config, out, data_dir=data_dir, progress=stop_at(int(steps)))
        except Stop:
            print(f"run {run}: {steps} steps at {threads} thread(s) in {time.perf_counter() - started:.1f} s", flush=True)
        else:
            sys.exit(f"run {run} ended before step {steps}")
"""


def train_in_subprocess(width: float, threads: int, data_dir) -> subprocess.CompletedProcess:
    """RUNS trainings of STEPS steps in one process on oneDNN's AVX2 kernels; a hang past LIMIT_S exits 1."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    command = [sys.executable, "-c", TRAIN_A_FEW_STEPS, str(width), str(threads), str(RUNS), str(STEPS), str(data_dir),
               str(LIMIT_S)]
    return subprocess.run(command, capture_output=True, text=True, timeout=LIMIT_S + 30, env=env, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_width_0_0625_trains_ten_times_in_a_row_on_avx2_kernels(threads, data_dir):
    done = train_in_subprocess(0.0625, threads, data_dir)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}{done.stderr[-3000:]}"
    assert done.stdout.count(f"{STEPS} steps at {threads} thread(s)") == RUNS, done.stdout


@pytest.mark.parametrize("width, channels, layout", [
    (0.0625, 4, torch.contiguous_format), (0.109375, 7, torch.contiguous_format),
    (0.125, 8, torch.channels_last), (0.25, 16, torch.channels_last)])
def test_the_smallest_convolution_decides_the_memory_format(width, channels, layout):
    model = create_model("resnet18", width=width)
    assert smallest_conv_channels(model) == channels
    assert memory_format(model) == layout
    assert memory_format(create_model("resnet50", width=width)) == layout


class Stop(Exception):
    pass


def train_two_steps(width: float, out_dir, data_dir) -> tuple[set[str], list[str]]:
    """The memory formats of the multi-channel convolution inputs in two training steps of `train` at
    `width`, and the memory-format notes it reported."""
    layouts: set[str] = set()
    notes: list[str] = []

    def record(module, args):
        if module.training and isinstance(module, torch.nn.Conv2d) and module.in_channels > 1:
            layouts.add("channels-last" if args[0].is_contiguous(memory_format=torch.channels_last) else
                        "contiguous" if args[0].is_contiguous() else "other")

    def report(event, values):
        if event == "memory_format":
            notes.append(values["note"])
        if event == "step" and values["step"] == 2:
            raise Stop

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        with pytest.raises(Stop):
            train(TrainConfig(width=width, epochs=1, train_limit=64, batch_size=32, threads=1), out_dir,
                  data_dir=data_dir, progress=report)
    finally:
        handle.remove()
    return layouts, notes


def test_training_runs_contiguous_below_the_safe_channel_count_and_channels_last_from_it(tmp_path, data_dir):
    assert CHANNELS_LAST_MIN_CHANNELS == 8
    assert train_two_steps(0.0625, tmp_path / "w4", data_dir) == ({"contiguous"}, [
        ("memory format: contiguous, not channels-last: smallest convolution has 4 channels (< 8, unsafe in oneDNN "
         "on AVX2 CPUs)")])
    assert train_two_steps(0.125, tmp_path / "w8", data_dir) == (
        {"channels-last"}, ["memory format: channels-last (smallest convolution has 8 channels)"])
