"""Training: SGD with momentum, one-cycle or cosine schedule, label smoothing, augmentation.

The default recipe (`TrainConfig()`) is sized for a 2-core CPU: ResNet-18 with the small stem at
width 0.25, channels-last (contiguous below `CHANNELS_LAST_MIN_CHANNELS`), 15 epochs. Each epoch is
validated on the fixed 5k validation split; the best epoch is kept as `best.pt`, the latest as
`last.pt` (with optimizer state, for `--resume`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from resnet_deploy import data
from resnet_deploy.checkpoint import load_checkpoint, load_state, read_meta, save_checkpoint
from resnet_deploy.errors import CheckpointError, ResnetDeployError
from resnet_deploy.fileio import check_writable
from resnet_deploy.models import ResNet, create_model
from resnet_deploy.train_config import TrainConfig, changed_settings


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_accuracy: float
    test_accuracy: float
    seconds: float
    history: list[EpochResult] = field(default_factory=list)


def augment(images: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding, horizontal flip and optional random erasing, on a batch."""
    batch, _, height, width = images.shape
    pad = config.crop_padding
    if pad:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (batch, 1, 1), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (batch, 1, 1), generator=generator)
        rows = (torch.arange(height).view(1, height, 1) + dy).expand(batch, height, width)
        cols = (torch.arange(width).view(1, 1, width) + dx).expand(batch, height, width)
        index = torch.arange(batch).view(batch, 1, 1).expand(batch, height, width)
        images = padded[index, 0, rows, cols].unsqueeze(1)
    if config.hflip:
        flip = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(flip.view(batch, 1, 1, 1), images.flip(-1), images)
    if config.random_erasing > 0:
        images = random_erase(images, config.random_erasing, generator)
    return images


def random_erase(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Zero one random rectangle (2%-25% of the area) per selected image."""
    batch, _, height, width = images.shape
    area = torch.empty(batch).uniform_(0.02, 0.25, generator=generator) * height * width
    aspect = torch.exp(torch.empty(batch).uniform_(math.log(0.3), math.log(3.3), generator=generator))
    box_h = (area * aspect).sqrt().clamp(1, height).long()
    box_w = (area / aspect).sqrt().clamp(1, width).long()
    top = (torch.rand(batch, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(batch, generator=generator) * (width - box_w + 1)).long()
    ys = torch.arange(height).view(1, height, 1)
    xs = torch.arange(width).view(1, 1, width)
    inside = (
        (ys >= top.view(-1, 1, 1))
        & (ys < (top + box_h).view(-1, 1, 1))
        & (xs >= left.view(-1, 1, 1))
        & (xs < (left + box_w).view(-1, 1, 1))
    )
    selected = (torch.rand(batch, generator=generator) < probability).view(-1, 1, 1)
    return images.masked_fill((inside & selected).unsqueeze(1), 0.0)


# torch 2.13's oneDNN corrupts memory in the channels-last weight gradient of a 1x1 convolution with
# fewer than 8 input channels on AVX2 CPUs without AVX-512 (jit_avx2_1x1_convolution_bwd_weights):
# SIGSEGV, SIGBUS or abort at 1 thread; a hang or gradients off by 10x+ at 2. Measured with
# ONEDNN_MAX_CPU_ISA=AVX2: 4 to 7 channels fail, 8 and more never did (tests/test_onednn_safety.py).
CHANNELS_LAST_MIN_CHANNELS = 8


def smallest_conv_channels(model: torch.nn.Module) -> int:
    """The fewest output channels of any convolution of `model` (the next one's input channels)."""
    return min(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def memory_format(model: torch.nn.Module) -> torch.memory_format:
    """Channels-last (1.15-1.3x faster for training) unless the smallest convolution is below `CHANNELS_LAST_MIN_CHANNELS`."""
    if smallest_conv_channels(model) >= CHANNELS_LAST_MIN_CHANNELS:
        return torch.channels_last
    return torch.contiguous_format


def memory_format_note(model: torch.nn.Module) -> str:
    """One line saying which memory format training uses and why."""
    channels = smallest_conv_channels(model)
    if memory_format(model) == torch.channels_last:
        return f"memory format: channels-last (smallest convolution has {channels} channels)"
    return (
        f"memory format: contiguous, not channels-last: smallest convolution has {channels} channels "
        f"(< {CHANNELS_LAST_MIN_CHANNELS}, unsafe in oneDNN on AVX2 CPUs)"
    )


def to_input(images_uint8: torch.Tensor, layout: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalized float32 (N, 1, 28, 28) (`data.normalize`) in `layout`."""
    normalized = torch.from_numpy(data.normalize(images_uint8.numpy()))
    return normalized.contiguous(memory_format=layout)


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits for uint8 images (N, 28, 28), in eval mode, in the model's `memory_format`."""
    model.eval()
    tensor, layout = torch.tensor(images), memory_format(model)
    chunks = [model(to_input(tensor[i : i + batch_size], layout)) for i in range(0, len(tensor), batch_size)]
    return torch.cat(chunks).numpy()


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    return float((predict(model, images, batch_size).argmax(1) == labels).mean())


def make_optimizer(model: ResNet, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD; no weight decay on BatchNorm and bias parameters."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=total,
            pct_start=config.warmup_fraction,
            div_factor=25.0,
            final_div_factor=1e3,
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)


ProgressCallback = Callable[[str, dict[str, Any]], None]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` CPU threads in the block (torch's own number when 0 or None), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TrainingDiverged(ResnetDeployError):
    """The loss or the weights stopped being finite; nothing from the failing epoch is saved."""


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train, validate every epoch, keep the best checkpoint, evaluate it on the test split.

    A non-finite loss or weight stops the run with `TrainingDiverged` before anything of that
    epoch is saved, so an earlier, good `best.pt` is never overwritten by a diverged model.
    """
    config.check()
    with torch_threads(config.threads):
        return _train(config, Path(out_dir), data_dir, resume, progress or (lambda event, values: None))


def _train(config: TrainConfig, out_dir: Path, data_dir, resume: bool, report: ProgressCallback) -> TrainResult:
    check_writable(*(out_dir / name for name in ("best.pt", "best.json", "last.pt", "last.json")))
    dataset = data.load_fashion_mnist(data_dir)
    train_images = torch.from_numpy(np.ascontiguousarray(dataset.train_images))
    train_labels = torch.from_numpy(dataset.train_labels)
    if config.train_limit:
        train_images, train_labels = train_images[: config.train_limit], train_labels[: config.train_limit]
    steps_per_epoch = len(train_images) // config.batch_size
    if steps_per_epoch == 0:
        raise ResnetDeployError(f"batch size {config.batch_size} exceeds the {len(train_images)} training images")

    torch.manual_seed(config.seed)
    model = create_model(config.model, **config.model_kwargs())
    # torch's stubs omit Module.to(memory_format=...), which it accepts at runtime
    model = model.to(memory_format=memory_format(model))  # type: ignore[call-overload]
    report("memory_format", {"note": memory_format_note(model)})
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"epoch": 0, "best_val": -1.0, "history": []}
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if resume:
        _check_same_config(resume_config(out_dir), config, last_path)
        state = _restore(last_path, model, optimizer, scheduler, generator)

    started = time.perf_counter() - sum(h["seconds"] for h in state["history"])
    for epoch in range(state["epoch"], config.epochs):
        result = _train_epoch(model, optimizer, scheduler, train_images, train_labels, config, generator, epoch, report)
        _check_finite_weights(model, epoch + 1, config)
        result.val_accuracy = accuracy(model, dataset.val_images, dataset.val_labels, config.eval_batch_size)
        state["history"].append(asdict(result))
        meta = _meta(config, dataset, state["history"])
        if result.val_accuracy > state["best_val"]:
            state["best_val"] = result.val_accuracy
            save_checkpoint(best_path, model, {**meta, "accuracy": {"val": result.val_accuracy}})
        save_checkpoint(
            last_path, model, meta, extra_state=_resume_state(optimizer, scheduler, generator, epoch + 1, state)
        )
        report("epoch", asdict(result))

    best_model, best_meta = load_checkpoint(best_path)
    test_accuracy = accuracy(best_model, dataset.test_images, dataset.test_labels, config.eval_batch_size)
    elapsed = time.perf_counter() - started
    best_meta["accuracy"] = {**best_meta.get("accuracy", {}), "test": test_accuracy}
    best_meta["wall_seconds"] = round(elapsed, 1)
    save_checkpoint(best_path, best_model, {k: v for k, v in best_meta.items() if k != "state_dict_sha256"})
    history = [EpochResult(**h) for h in state["history"]]
    return TrainResult(best_path, last_path, state["best_val"], test_accuracy, elapsed, history)


def _diverged(epoch: int, what: str, config: TrainConfig) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged in epoch {epoch}: {what}; nothing of this epoch was saved "
        f"(best.pt and last.pt keep the last good epoch, if any); lower --lr (it is {config.lr:g})"
    )


def _check_finite_weights(model: torch.nn.Module, epoch: int, config: TrainConfig) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _diverged(epoch, f"{name} holds NaN or infinite values", config)


def _train_epoch(model, optimizer, scheduler, images, labels, config, generator, epoch, report) -> EpochResult:
    model.train()
    started = time.perf_counter()
    order = torch.randperm(len(images), generator=generator)
    steps = len(images) // config.batch_size
    layout = memory_format(model)
    total_loss, correct, seen = 0.0, 0, 0
    for step in range(steps):
        index = order[step * config.batch_size : (step + 1) * config.batch_size]
        inputs = augment(to_input(images[index], layout), config, generator).contiguous(memory_format=layout)
        targets = labels[index]
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            raise _diverged(epoch + 1, f"the loss is {value} at step {step + 1} of {steps}", config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += value * len(index)
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(index)
        report(
            "step",
            {
                "epoch": epoch + 1,
                "step": step + 1,
                "steps": steps,
                "loss": total_loss / seen,
                "accuracy": correct / seen,
            },
        )
    return EpochResult(
        epoch + 1,
        total_loss / seen,
        correct / seen,
        0.0,
        optimizer.param_groups[0]["lr"],
        time.perf_counter() - started,
    )


def _meta(config: TrainConfig, dataset: data.FashionMNIST, history: list[dict]) -> dict[str, Any]:
    return {
        "training": asdict(config),
        "data": {
            "source": str(dataset.source_dir),
            "content_md5": dataset.digests,
            "split": {"train": len(dataset.train_images), "val": len(dataset.val_images), "seed": data.SPLIT_SEED},
        },
        "history": history,
        "torch_version": torch.__version__,
    }


def _resume_state(optimizer, scheduler, generator, next_epoch: int, state: dict) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": next_epoch,
        "best_val": state["best_val"],
        "history_json": json.dumps(state["history"]),
    }


def resume_config(out_dir: str | Path) -> TrainConfig:
    """The settings of the interrupted run in `out_dir`, read from `last.json`."""
    last_path = Path(out_dir) / "last.pt"
    meta = read_meta(last_path)
    if meta is None or "training" not in meta:
        raise CheckpointError(f"{last_path}: nothing to resume (no checkpoint with training settings)")
    try:
        return TrainConfig.from_dict(meta["training"]).check()
    except ResnetDeployError as exc:
        raise CheckpointError(f"{last_path}: the run's settings are unusable: {exc}") from exc


def _check_same_config(saved: TrainConfig, requested: TrainConfig, last_path: Path) -> None:
    differ = changed_settings(saved, requested)
    if differ:
        raise CheckpointError(
            f"{last_path}: cannot resume with other settings: {'; '.join(differ)}. Resume "
            "without them (only --threads may change), or train into another --out-dir"
        )


RESUME_KEYS = ("model", "optimizer", "scheduler", "generator", "torch_rng", "epoch", "best_val", "history_json")


def _restore(last_path: Path, model, optimizer, scheduler, generator) -> dict[str, Any]:
    """Load `last.pt` (model, optimizer, schedule, RNG) so training continues where it stopped."""
    saved = load_state(last_path)
    if not isinstance(saved, dict) or any(key not in saved for key in RESUME_KEYS):
        raise CheckpointError(
            f"{last_path}: not a resumable checkpoint (it lacks the optimizer, schedule or random-number state)"
        )
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        return {
            "epoch": int(saved["epoch"]),
            "best_val": float(saved["best_val"]),
            "history": json.loads(saved["history_json"]),
        }
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{last_path}: cannot resume from it: {str(exc).splitlines()[0]}") from exc
