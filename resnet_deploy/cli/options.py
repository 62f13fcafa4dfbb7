"""Option groups shared by commands, each bound and default written once (Polygraphy's `tools/args` idea).

`engine_options` is the TensorRT build group (after Polygraphy's `TrtConfigArgs`): its defaults are
`EngineSettings`' own, and `engine_settings` turns the parsed values into one `EngineSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from resnet_deploy.trt.compat import HARDWARE_LEVELS
from resnet_deploy.trt.settings import EngineSettings

_DEFAULT = EngineSettings()
DEFAULT_TIMING_CACHE = Path("engines/timing.cache")

ENGINE_OPTIONS = (
    click.option("--min-batch", type=click.IntRange(1), default=_DEFAULT.min_batch, show_default=True,
                 help="Smallest batch of the engine's optimization profile."),
    click.option("--opt-batch", type=click.IntRange(1), default=_DEFAULT.opt_batch, show_default=True,
                 help="Batch TensorRT tunes for."),
    click.option("--max-batch", type=click.IntRange(1), default=_DEFAULT.max_batch, show_default=True,
                 help="Largest batch; the runner's buffers are sized for it."),
    click.option("--workspace-mib", type=click.IntRange(1), default=_DEFAULT.workspace_mib, show_default=True,
                 help="Builder workspace pool limit."),
    click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_TIMING_CACHE,
                 show_default=True, help="TensorRT timing cache, reused across builds (an unusable one is replaced)."),
    click.option("--dla-core", type=click.IntRange(0), default=_DEFAULT.dla_core,
                 help="Jetson DLA core (GPU fallback on); needs --min-batch = --opt-batch = --max-batch and fp16/int8."),
    click.option("--hardware-compatibility", type=click.Choice(HARDWARE_LEVELS),
                 default=_DEFAULT.hardware_compatibility, show_default=True,
                 help="Also run on other GPUs: ampere_plus (Ampere and later) or same_compute_capability; not on Jetson."),
    click.option("--version-compatible", is_flag=True, default=_DEFAULT.version_compatible,
                 help="Also load on later TensorRT releases (8.6+ to 10, 10 to 11, later minors)."),
    click.option("--legacy-calibrator", is_flag=True, default=_DEFAULT.legacy_calibrator,
                 help="TensorRT <= 10 only: FP32 ONNX + INT8 flag + a calibrator serving our calibration cache."),
    click.option("--tf32", is_flag=True, default=_DEFAULT.tf32,
                 help="Let FP32 layers run in TF32 (TensorRT's default; off here, so fp32 means FP32)."),
    click.option("--device", type=click.IntRange(0), default=_DEFAULT.device, show_default=True,
                 help="CUDA device to build on."),
    click.option("--verbose", is_flag=True, help="TensorRT's own log at VERBOSE (default WARNING)."),
)
ENGINE_OPTION_NAMES = ("min_batch", "opt_batch", "max_batch", "workspace_mib", "timing_cache", "dla_core",
                       "hardware_compatibility", "version_compatible", "legacy_calibrator", "tf32", "device", "verbose")


def engine_options(command: Callable) -> Callable:
    """Add the TensorRT build options to a click command (its function takes them as keyword arguments)."""
    for option in reversed(ENGINE_OPTIONS):
        command = option(command)
    return command


def engine_settings(precision: str, values: dict[str, Any]) -> EngineSettings:
    """The `EngineSettings` for `precision` and the parsed engine options (--verbose turns TensorRT's log up)."""
    if values.get("verbose"):
        from resnet_deploy.trt.compat import set_verbose

        set_verbose(True)
    return EngineSettings(precision=precision, **{k: values[k] for k in ENGINE_OPTION_NAMES if k != "verbose"})
