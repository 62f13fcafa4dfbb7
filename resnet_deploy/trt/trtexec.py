"""The `trtexec` command line that builds the same engine as `build_engine` with the same `EngineSettings`.

Flags as TensorRT 10.3's `trtexec --help` spells them (https://docs.nvidia.com/deeplearning/tensorrt/latest/
reference/command-line-programs.html; `--workspace` became `--memPoolSize=workspace:<size>` in 10.x):
- strongly typed network: `--stronglyTyped` (the precision is in the graph; no precision flags allowed);
- weakly typed / legacy calibrator: `--fp16`, `--int8 --fp16` (as `_weak_flag_names` in the builder),
  `--calib=<cache>` for the legacy INT8 build, and an INT8 fallback's layers as `--layerPrecisions=name:prec,...`
  with `--precisionConstraints=obey`;
- the batch profile: `--minShapes/--optShapes/--maxShapes=<input>:NxCxHxW`;
- `--memPoolSize=workspace:<N>M`, `--timingCacheFile=<file>`, `--useDLACore=N --allowGPUFallback`,
  `--noTF32` unless TF32 is asked for, `--hardwareCompatibilityLevel=ampere+|sameComputeCapability`,
  `--versionCompatible`, `--device=N`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from resnet_deploy.errors import ArtifactError
from resnet_deploy.trt.settings import EngineSettings

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack and NVIDIA's containers install it
HARDWARE_LEVEL_FLAGS = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}


def _shape(batch: int, input_shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in (batch, *input_shape))


def _precision_args(settings: EngineSettings, calibration_cache: str | Path | None, strongly_typed: bool) -> list[str]:
    if strongly_typed:
        return ["--stronglyTyped"]
    if settings.precision == "fp16":
        return ["--fp16"]
    if settings.precision != "int8":
        return []
    if settings.layer_precisions is None:
        args = ["--int8", "--fp16"]
    else:
        from resnet_deploy.quantize.fallback import read_layer_precisions

        spec = read_layer_precisions(settings.layer_precisions)
        layers = ",".join(f"{name}:{precision}" for name, precision in spec.layers.items())
        args = [
            "--int8",
            *(["--fp16"] if spec.needs_fp16 else []),
            f"--layerPrecisions={layers}",
            "--precisionConstraints=obey",
        ]
    if settings.legacy_calibrator:
        if calibration_cache is None:
            raise ArtifactError("the legacy INT8 build needs the calibration cache for trtexec's --calib")
        args.append(f"--calib={calibration_cache}")
    return args


def trtexec_args(
    settings: EngineSettings,
    onnx: str | Path,
    engine: str | Path,
    *,
    input_name: str = "input",
    input_shape: Sequence[int] = (1, 28, 28),
    calibration_cache: str | Path | None = None,
    strongly_typed: bool | None = None,
    trtexec: str = TRTEXEC,
) -> list[str]:
    """argv of the trtexec build of `onnx` into `engine` under `settings` (the graph `build` would use).

    `strongly_typed` is the typing the builder actually used (`builder.strongly_typed_network`: DLA on
    TensorRT 10 is weakly typed); without it, the settings' own."""
    typed = settings.network_strongly_typed if strongly_typed is None else strongly_typed
    args = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", *_precision_args(settings, calibration_cache, typed)]
    args += [f"--{kind}Shapes={input_name}:{_shape(batch, input_shape)}" for kind, batch in settings.batches.items()]
    args.append(f"--memPoolSize=workspace:{settings.workspace_mib}M")
    if settings.timing_cache is not None:
        args.append(f"--timingCacheFile={settings.timing_cache}")
    if settings.dla_core is not None:
        args += [f"--useDLACore={settings.dla_core}", "--allowGPUFallback"]
    if not settings.tf32:
        args.append("--noTF32")
    if settings.hardware_compatibility != "none":
        args.append(f"--hardwareCompatibilityLevel={HARDWARE_LEVEL_FLAGS[settings.hardware_compatibility]}")
    if settings.version_compatible:
        args.append("--versionCompatible")
    if settings.device:
        args.append(f"--device={settings.device}")
    return args


def trtexec_command(settings: EngineSettings, onnx: str | Path, engine: str | Path, **kwargs) -> str:
    """`trtexec_args` as one shell-quoted line."""
    return shlex.join(trtexec_args(settings, onnx, engine, **kwargs))
