"""`EngineSettings`: every choice that decides which engine a build makes, named and defaulted once.

After Polygraphy's `CreateConfig` (one object holding the builder configuration) and `TrtConfigArgs`
(one option group that makes it): the CLI's `build` options (`cli/options.py`), `pipeline.build`,
`build_engine`, the planned engine path and the sidecar all read the same frozen object. Rules that
need no TensorRT (profile order, DLA's fixed shape and precision) are checked when it is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.onnx_io import PRECISIONS
from resnet_deploy.trt.compat import HARDWARE_LEVELS

HARDWARE_LEVEL_TAGS = {"ampere_plus": "hwc-ampere+", "same_compute_capability": "hwc-samecc"}


@dataclass(frozen=True)
class EngineSettings:
    """How to build one engine.

    precision: fp32, fp16 or int8 (strongly typed: the ONNX graph must carry it).
    min_batch/opt_batch/max_batch: the optimization profile of the batch axis.
    workspace_mib: the builder's workspace pool limit.
    timing_cache: a TensorRT timing-cache file, read and updated by the build (None: none kept).
    dla_core: build for this Jetson DLA core (GPU fallback on); None runs on the GPU.
    hardware_compatibility: none, ampere_plus or same_compute_capability.
    version_compatible: the engine also loads on later TensorRT releases NVIDIA allows.
    legacy_calibrator: TensorRT <= 10: FP32 graph + FP16/INT8 flags + a calibrator serving our cache.
    layer_precisions: with legacy_calibrator and int8, a `.layer-precisions.json` (INT8 fallback) whose
        layers the builder keeps in FP16/FP32, obeyed (trtexec's --layerPrecisions, --precisionConstraints=obey).
    strongly_typed: a strongly typed network (the default); False builds weakly typed (TensorRT <= 10).
    tf32: let FP32 layers run in TF32 (TensorRT's default is on; ours is off so "fp32" means FP32).
    device: the CUDA device to build on and to record in the engine name.
    """

    precision: str = "int8"
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256
    workspace_mib: int = 1024
    timing_cache: Path | None = None
    dla_core: int | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    legacy_calibrator: bool = False
    layer_precisions: Path | None = None
    strongly_typed: bool = True
    tf32: bool = False
    device: int = 0

    def __post_init__(self) -> None:
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
        if self.layer_precisions is not None:
            object.__setattr__(self, "layer_precisions", Path(self.layer_precisions))
        if self.precision not in PRECISIONS:
            raise ResnetDeployError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ResnetDeployError(
                "batch profile must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.workspace_mib < 1:
            raise ResnetDeployError(f"workspace must be at least 1 MiB, got {self.workspace_mib}")
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise ResnetDeployError(
                f"hardware compatibility must be one of {', '.join(HARDWARE_LEVELS)}, "
                f"got {self.hardware_compatibility!r}"
            )
        if self.device < 0:
            raise ResnetDeployError(f"device must be a CUDA device index >= 0, got {self.device}")
        if self.dla_core is not None:
            self._check_dla()
        if self.layer_precisions is not None:
            self._check_layer_precisions()

    def _check_dla(self) -> None:
        """DLA rules that need no TensorRT ("Working with DLA"); the core count is checked by the builder."""
        assert self.dla_core is not None  # checked only for a DLA build
        if self.dla_core < 0:
            raise ResnetDeployError(f"--dla-core must be >= 0, got {self.dla_core}")
        if not self.min_batch == self.opt_batch == self.max_batch:
            raise ResnetDeployError(
                f"DLA needs a fixed shape: --min-batch = --opt-batch = --max-batch, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if self.precision == "fp32":
            raise ResnetDeployError("DLA runs FP16 or INT8 networks only; --precision fp32 cannot use --dla-core")
        if self.hardware_compatibility != "none":
            raise ResnetDeployError("hardware-compatible engines run on the GPU only; drop --dla-core")

    def _check_layer_precisions(self) -> None:
        """Layer precisions exist only in weakly typed networks ("Strongly-typed networks reject calls to
        setPrecision", NvInfer.h 10.x; TensorRT 11 removed them): the legacy INT8 build is their only use."""
        if not (self.legacy_calibrator and self.precision == "int8"):
            raise ResnetDeployError(
                f"{self.layer_precisions}: layer precisions apply to TensorRT 10's weakly typed "
                "INT8 build only (--precision int8 --legacy-calibrator); a strongly typed "
                "network rejects them: build the fallback Q/DQ graph instead"
            )

    @property
    def batches(self) -> dict[str, int]:
        return {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}

    @property
    def network_strongly_typed(self) -> bool:
        """The legacy calibrator needs a weakly typed network, whatever `strongly_typed` says."""
        return self.strongly_typed and not self.legacy_calibrator

    def tags(self) -> list[str]:
        """Engine-name parts for settings that change what an engine is or where it runs (none for defaults)."""
        tags = ["legacy-calib"] if self.legacy_calibrator else ([] if self.strongly_typed else ["weak"])
        if self.layer_precisions is not None:
            tags.append("fallback")
        if self.tf32:
            tags.append("tf32")
        if self.dla_core is not None:
            tags.append(f"dla{self.dla_core}")
        if self.hardware_compatibility != "none":
            tags.append(HARDWARE_LEVEL_TAGS[self.hardware_compatibility])
        if self.version_compatible:
            tags.append("vc")
        return tags

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (for the sidecar and the build stage's manifest)."""
        values = asdict(self)
        values["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        values["layer_precisions"] = str(self.layer_precisions) if self.layer_precisions else None
        return values

    def replace(self, **changes: Any) -> "EngineSettings":
        return replace(self, **changes)
