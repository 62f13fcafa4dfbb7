"""Options that several commands share (Polygraphy's `tools/args` idea): each name, default, bound
and help text is written once, here, in groups. Numeric bounds are click range types, so a bad
value is refused as bad usage (exit 2) naming the option before anything runs.
`engine_options` is the TensorRT build group (after Polygraphy's `TrtConfigArgs`): its defaults are
`EngineSettings`' own, and `engine_settings` turns the parsed values into one `EngineSettings`.
Every path parameter is either an input or an `OutputPath`; `input_paths` checks them all before a
command runs (no output over an input or over a file of another kind) and names the inputs to protect.
"""

from __future__ import annotations

import functools
import math
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterable

import click
from click.core import ParameterSource

from resnet_deploy.data import TRAIN_SIZE
from resnet_deploy.model_options import MODEL_NAMES
from resnet_deploy.train_config import BOUNDS, CHOICES, Bound, TrainConfig
from resnet_deploy.trt.compat import HARDWARE_LEVELS
from resnet_deploy.trt.settings import EngineSettings

Decorator = Callable[[Callable], Callable]


# ---- Numeric types --------------------------------------------------------------------------------


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses nan and inf (nan passes every bound comparison)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def bounded(bound: Bound, integer: bool) -> click.ParamType:
    """The click range type of a `Bound`."""
    if integer:
        return click.IntRange(
            min=None if bound.minimum is None else int(bound.minimum),
            max=None if bound.maximum is None else int(bound.maximum),
            min_open=bound.open_min,
        )
    return FiniteFloatRange(min=bound.minimum, max=bound.maximum, min_open=bound.open_min)


# ---- Paths ---------------------------------------------------------------------------------------------

# What a file is, by its suffix (a folder with a manifest.json is a bundle): an output never replaces
# an existing file of another kind.
FILE_KINDS = {
    ".pt": "PyTorch checkpoint",
    ".pth": "PyTorch checkpoint",
    ".onnx": "ONNX model",
    ".engine": "TensorRT engine",
    ".plan": "TensorRT engine",
    ".cache": "cache",
    ".gz": "tarball",
    ".tgz": "tarball",
    ".json": "JSON file",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
}
JSON, IMAGE, FOLDER = "JSON file", "image", "folder"


class OutputPath(click.Path):
    """A path the command writes, of `kind` (a `FILE_KINDS` value, "folder", or None: not checked).
    Whether it can be written is checked by `fileio.check_writable` before any work (exit 3 for a
    folder in place of a file or a file in place of a folder), so click only turns it into a path."""

    def __init__(self, kind: str | None = None):
        super().__init__(path_type=Path)
        self.kind = kind


OUTPUT_PATH = OutputPath()
POSITIVE_INT = click.IntRange(min=1)
NON_NEGATIVE_INT = click.IntRange(min=0)
NON_NEGATIVE_FLOAT = FiniteFloatRange(min=0)
POSITIVE_FLOAT = FiniteFloatRange(min=0, min_open=True)
PERCENT = FiniteFloatRange(min=0, max=100)


# ---- Data -------------------------------------------------------------------------------------------

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="RESNET_DEPLOY_DATA",
    help="Folder with the four Fashion-MNIST .gz (or raw IDX) files. "
    "Default: $RESNET_DEPLOY_DATA, /usr/share/datasets/fashion-mnist, then the user cache (downloaded if absent).",
)


# ---- Artifacts and runners ----------------------------------------------------------------------------


def backend_option() -> Decorator:
    from resnet_deploy.runners import BACKENDS

    return click.option(
        "--backend",
        type=click.Choice(["auto", *BACKENDS]),
        default="auto",
        show_default=True,
        help="Backend for every artifact but checkpoints, which run on PyTorch (auto: by suffix).",
    )


# More threads than this only thrash (and 100k of them exhaust the process limit): 4 per core.
MAX_THREADS = 4 * (os.cpu_count() or 1)


class ThreadCount(click.IntRange):
    """0..MAX_THREADS; above it, the message names the limit and where it comes from."""

    def __init__(self):
        super().__init__(0, MAX_THREADS)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = click.INT.convert(value, param, ctx)
        if number > MAX_THREADS:
            self.fail(
                f"{number} is more than {MAX_THREADS} (4 per CPU core, {os.cpu_count() or 1} cores here).", param, ctx
            )
        return super().convert(number, param, ctx)


def threads_option_for(help: str) -> Decorator:
    return click.option("--threads", type=ThreadCount(), default=0, help=help)


threads_option = threads_option_for("CPU threads for PyTorch, ONNX Runtime and OpenVINO (0: their default).")


def artifacts_argument(name: str = "artifacts") -> Decorator:
    return click.argument(name, nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))


# ---- Reports and baselines ---------------------------------------------------------------------------


def json_option(default: Path | None, help: str = "Report JSON.") -> Decorator:
    return click.option(
        "--json",
        "json_path",
        type=OutputPath(JSON),
        metavar="FILE",
        default=default,
        show_default=default is not None,
        help=help,
    )


def baseline_options(max_option: Decorator) -> Decorator:
    """--baseline FILE, the allowed regression `max_option`, and --update-baseline (which needs --baseline)."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def checked(*args, baseline: Path | None, update_baseline: bool, **kwargs):
            if update_baseline and baseline is None:
                raise click.UsageError("--update-baseline needs --baseline FILE")
            return command(*args, baseline=baseline, update_baseline=update_baseline, **kwargs)

        decorated: Callable = checked
        for option in (
            click.option("--update-baseline", is_flag=True, help="Write this run as the new --baseline."),
            max_option,
            click.option(
                "--baseline",
                type=OutputPath(JSON),
                metavar="FILE",
                default=None,
                help="Baseline JSON to gate against (or to write with --update-baseline).",
            ),
        ):
            decorated = option(decorated)
        return decorated

    return decorate


parity_limit_option = click.option(
    "--limit",
    "parity_limit",
    type=click.IntRange(0, 10_000),
    default=0,
    help="Parity on the first N test images only (0: all 10k).",
)


def max_drop_option() -> Decorator:
    from resnet_deploy.parity import INT8_MAX_DROP_PP

    return click.option(
        "--max-drop",
        "max_drop_pp",
        type=NON_NEGATIVE_FLOAT,
        default=INT8_MAX_DROP_PP,
        show_default=True,
        help="INT8 gate: largest allowed top-1 drop vs the FP32 reference, pp.",
    )


# ---- Models and training settings (defaults and bounds from TrainConfig) ----------------------------

TRAINING_HELP = {
    "model": "Model from the zoo (`resnet-deploy models`).",
    "width": "Width multiplier of the stages (64..512 x width).",
    "stem": "small: 3x3/1 conv for 28x28 input; imagenet: 7x7/2 conv and max-pool.",
    "shortcut": "Projection shortcuts: A zero-pad, B where shapes change, C everywhere.",
    "epochs": "Epochs to train.",
    "batch_size": "Training batch size.",
    "lr": "Peak learning rate.",
    "weight_decay": "SGD weight decay (not on BatchNorm and biases).",
    "label_smoothing": "Label smoothing of the cross-entropy loss.",
    "schedule": "Learning-rate schedule.",
    "random_erasing": "Probability of random erasing.",
    "seed": "Random seed (initialization, augmentation, batch order).",
    "train_limit": "Use only the first N training images (0: all; quick runs).",
}
TRAINING_SETTINGS = tuple(TRAINING_HELP)


def _setting_type(name: str, default: Any) -> click.ParamType | type:
    if name in CHOICES:
        return click.Choice(CHOICES[name])
    if name in BOUNDS:
        return bounded(BOUNDS[name], isinstance(default, int))
    return type(default)


def training_options(command: Callable) -> Callable:
    """One option per training setting, with TrainConfig's default and bound."""
    defaults = TrainConfig()
    for name in reversed(TRAINING_SETTINGS):
        default = getattr(defaults, name)
        command = click.option(
            f"--{name.replace('_', '-')}",
            name,
            type=_setting_type(name, default),
            default=default,
            show_default=True,
            help=TRAINING_HELP[name],
        )(command)
    return command


def width_option(default: float | None, help: str = TRAINING_HELP["width"]) -> Decorator:
    return click.option(
        "--width",
        type=bounded(BOUNDS["width"], integer=False),
        default=default,
        show_default=default is not None,
        help=help,
    )


def checkpoint_options(command: Callable) -> Callable:
    """--checkpoint, with --model and --width for a bare state dict that has no sidecar."""
    command = width_option(None, "Width of a bare state dict's model (default: the model's own).")(command)
    command = click.option(
        "--model",
        "model_name",
        type=click.Choice(MODEL_NAMES),
        default=None,
        help="Model of a bare state dict that has no sidecar.",
    )(command)
    return click.option(
        "--checkpoint",
        "checkpoint_path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="A .pt checkpoint (with its .json sidecar, or a bare state dict with --model).",
    )(command)


def source_options(onnx_help: str) -> Decorator:
    """--checkpoint (the default model's, trained if absent) or --onnx: where `build` and `bundle` start."""

    def decorate(command: Callable) -> Callable:
        command = click.option("--onnx", type=click.Path(dir_okay=False, path_type=Path), default=None, help=onnx_help)(
            command
        )
        return click.option(
            "--checkpoint",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Start from this checkpoint (default: checkpoints/resnet18-w0.25/best.pt, trained if absent).",
        )(command)

    return decorate


# ---- Calibration -----------------------------------------------------------------------------------------


def calibration_method_option(flag: str, *, allow_all: bool = True) -> Decorator:
    from resnet_deploy.quantize.calibrate import METHODS

    if not allow_all:
        return click.option(
            flag,
            "calibration_method",
            type=click.Choice(METHODS),
            default="entropy",
            show_default=True,
            help="Calibration method.",
        )
    return click.option(
        flag,
        "calibration_method",
        type=click.Choice([*METHODS, "all"]),
        default="all",
        show_default=True,
        help="all: calibrate with every method, keep the best on the validation split.",
    )


def calibration_count_option(flag: str) -> Decorator:
    return click.option(
        flag,
        "calibration_count",
        type=click.IntRange(1, TRAIN_SIZE),
        default=512,
        show_default=True,
        help=f"Calibration images from the train split (1..{TRAIN_SIZE}).",
    )


calibration_dir_option = click.option(
    "--out-dir",
    type=OutputPath(FOLDER),
    metavar="DIR",
    default=Path("calibration"),
    show_default=True,
    help="Folder for the INT8 artifacts.",
)


def _check_trt_version(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from resnet_deploy.errors import ResnetDeployError
    from resnet_deploy.quantize.cache import version_code

    try:
        version_code(value)
    except ResnetDeployError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


def trt_version_option() -> Decorator:
    from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION

    return click.option(
        "--trt-version",
        default=DEFAULT_TRT_VERSION,
        show_default=True,
        callback=_check_trt_version,
        help="TensorRT version in the calibration cache header.",
    )


# ---- What the user gave -------------------------------------------------------------------------------------


def given_params(ctx: click.Context, names: Iterable[str]) -> list[tuple[click.Parameter, Any]]:
    """The parameters among `names` the user set (command line or environment), with their values."""
    names = set(names)
    return [
        (param, ctx.params[param.name])
        for param in ctx.command.params
        if param.name in names and ctx.get_parameter_source(param.name) not in (None, ParameterSource.DEFAULT)
    ]


def given_flags(ctx: click.Context, names: Iterable[str]) -> list[str]:
    """The command-line tokens that repeat the options among `names` the user gave."""
    tokens: list[str] = []
    for param, value in given_params(ctx, names):
        if getattr(param, "is_flag", False):
            tokens += [param.opts[0]] if value else []
        elif value is not None:
            tokens += [param.opts[0], str(value)]
    return tokens


# ---- TensorRT engine settings ----------------------------------------------------------------------------

_DEFAULT = EngineSettings()
DEFAULT_TIMING_CACHE = Path("engines/timing.cache")

ENGINE_OPTIONS = (
    click.option(
        "--min-batch",
        type=POSITIVE_INT,
        default=_DEFAULT.min_batch,
        show_default=True,
        help="Smallest batch of the engine's optimization profile.",
    ),
    click.option(
        "--opt-batch",
        type=POSITIVE_INT,
        default=_DEFAULT.opt_batch,
        show_default=True,
        help="Batch TensorRT tunes for.",
    ),
    click.option(
        "--max-batch",
        type=POSITIVE_INT,
        default=_DEFAULT.max_batch,
        show_default=True,
        help="Largest batch; the runner's buffers are sized for it.",
    ),
    click.option(
        "--workspace-mib",
        type=POSITIVE_INT,
        default=_DEFAULT.workspace_mib,
        show_default=True,
        help="Builder workspace pool limit.",
    ),
    click.option(
        "--timing-cache",
        type=OutputPath(FILE_KINDS[".cache"]),
        default=DEFAULT_TIMING_CACHE,
        show_default=True,
        help="TensorRT timing cache, reused across builds (an unusable one is replaced).",
    ),
    click.option(
        "--dla-core",
        type=click.IntRange(0),
        default=_DEFAULT.dla_core,
        help="Jetson DLA core (GPU fallback on); needs --min-batch = --opt-batch = --max-batch and fp16/int8.",
    ),
    click.option(
        "--hardware-compatibility",
        type=click.Choice(HARDWARE_LEVELS),
        default=_DEFAULT.hardware_compatibility,
        show_default=True,
        help="Also run on other GPUs: ampere_plus (Ampere and later) or same_compute_capability; not on Jetson.",
    ),
    click.option(
        "--version-compatible",
        is_flag=True,
        default=_DEFAULT.version_compatible,
        help="Also load on later TensorRT releases (8.6+ to 10, 10 to 11, later minors).",
    ),
    click.option(
        "--legacy-calibrator",
        is_flag=True,
        default=_DEFAULT.legacy_calibrator,
        help="TensorRT <= 10 only: FP32 ONNX + INT8 flag + a calibrator serving our calibration cache.",
    ),
    click.option(
        "--tf32",
        is_flag=True,
        default=_DEFAULT.tf32,
        help="Let FP32 layers run in TF32 (TensorRT's default; off here, so fp32 means FP32).",
    ),
    click.option(
        "--device", type=click.IntRange(0), default=_DEFAULT.device, show_default=True, help="CUDA device to build on."
    ),
    click.option("--verbose", is_flag=True, help="TensorRT's own log at VERBOSE (default WARNING)."),
)
ENGINE_OPTION_NAMES = (
    "min_batch",
    "opt_batch",
    "max_batch",
    "workspace_mib",
    "timing_cache",
    "dla_core",
    "hardware_compatibility",
    "version_compatible",
    "legacy_calibrator",
    "tf32",
    "device",
    "verbose",
)


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


# ---- Inputs and outputs ------------------------------------------------------------------------------------


def _label(param: click.Parameter) -> str:
    return param.opts[0] if isinstance(param, click.Option) else param.human_readable_name


def _path_values(ctx: click.Context) -> Iterable[tuple[click.Parameter, Path]]:
    for param in ctx.command.params:
        value = ctx.params.get(param.name) if isinstance(param.type, click.Path) else None
        for path in value if isinstance(value, (tuple, list)) else [value]:
            if path is not None:
                yield param, Path(path)


def _check_name(label: str, path: Path) -> None:
    from resnet_deploy.errors import ResnetDeployError

    if not str(path) or str(path) == ".":
        raise ResnetDeployError(f"{label}: the path is empty")
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResnetDeployError(
            f"{label} {os.fsencode(path)!r}: the path is not UTF-8 (ONNX, ONNX Runtime and the "
            "JSON reports need UTF-8 file names); rename it"
        ) from exc


def _check_input(label: str, path: Path) -> None:
    """Refuse a device, FIFO or socket as an input: reading one could wait forever or never end."""
    from resnet_deploy.errors import ResnetDeployError

    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return  # absent or unreadable: the command says so in its own words
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ResnetDeployError(f"{label} {path}: is a {_special_name(mode)}, not a file or folder")


def _special_name(mode: int) -> str:
    return (
        "FIFO"
        if stat.S_ISFIFO(mode)
        else "character device"
        if stat.S_ISCHR(mode)
        else "block device"
        if stat.S_ISBLK(mode)
        else "socket"
    )


def file_kind(path: Path) -> str | None:
    """What an existing `path` is: a `FILE_KINDS` value, "bundle" (a folder with a manifest.json), or None."""
    if path.is_dir():
        return "bundle" if (path / "manifest.json").is_file() else None
    return FILE_KINDS.get(path.suffix.lower()) if path.exists() else None


def _check_output(label: str, path: Path, kind: str | None, inputs: list[tuple[str, Path]]) -> None:
    from resnet_deploy.errors import ResnetDeployError

    for input_label, input_path in inputs:
        if os.path.exists(path) and os.path.exists(input_path) and os.path.samefile(path, input_path):
            raise ResnetDeployError(
                f"{label} {path}: is also {input_label} {input_path}, an input of this command; "
                "refusing to write over it"
            )
    existing = file_kind(path)
    if kind is not None and existing is not None and existing != kind:
        raise ResnetDeployError(
            f"{label} {path}: is an existing {existing}; {label} writes a {kind}: refusing to "
            "write over it (choose another path)"
        )
    if kind != FOLDER and file_kind(path.parent) == "bundle":
        raise ResnetDeployError(f"{label} {path}: is inside the bundle {path.parent}; refusing to add to it")


def input_paths(ctx: click.Context) -> list[tuple[str, Path]]:
    """Check every path parameter of the command in `ctx` before it runs (an empty or non-UTF-8 path,
    an output that is one of its inputs, by any name, or an existing file of another kind: bad input)
    and return its inputs, checkpoint and engine sidecars included, as (label, path) pairs."""
    inputs, outputs = [], []
    for param, path in _path_values(ctx):
        _check_name(_label(param), path)
        if isinstance(param.type, OutputPath):
            outputs.append((_label(param), path, param.type.kind))
        else:
            _check_input(_label(param), path)
            inputs.append((_label(param), path))
            if path.suffix in (".pt", ".pth", ".engine", ".plan"):
                inputs.append((f"the sidecar of {_label(param)}", path.with_suffix(".json")))
    for label, path, kind in outputs:
        _check_output(label, path, kind, inputs)
    return inputs


def guarded(command: click.Command) -> click.Command:
    """Make `command` check its paths first (`input_paths`) and refuse writes over its inputs while it runs."""
    callback = command.callback
    assert callback is not None  # a command built with a function

    @functools.wraps(callback)
    def run_guarded(*args, **kwargs):
        from resnet_deploy.fileio import protected_inputs

        with protected_inputs(input_paths(click.get_current_context())):
            return callback(*args, **kwargs)

    command.callback = run_guarded
    return command
