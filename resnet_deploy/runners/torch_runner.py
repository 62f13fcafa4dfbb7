"""PyTorch eager runner: the FP32 reference every other backend is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resnet_deploy.runners.base import BaseRunner, TensorMeta


class TorchRunner(BaseRunner):
    """Runs a model, or loads a checkpoint on `activate()`, on the CPU in eval mode."""

    backend = "torch"

    def __init__(self, model_or_checkpoint, name: str | None = None, threads: int | None = None):
        super().__init__(
            name or (Path(model_or_checkpoint).name if isinstance(model_or_checkpoint, (str, Path)) else None)
        )
        self._source = model_or_checkpoint
        self._threads = threads
        self._previous_threads: int | None = None
        self._model: Any = None  # a torch.nn.Module while active

    def _activate(self) -> None:
        """Load the model; with `threads`, torch uses that many CPU threads until `deactivate()`."""
        import torch

        if isinstance(self._source, (str, Path)):
            from resnet_deploy.checkpoint import load_checkpoint

            self._model, _ = load_checkpoint(self._source)
        else:
            self._model = self._source.eval()
        if self._threads:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self._threads)

    def _deactivate(self) -> None:
        import torch

        if self._previous_threads:
            torch.set_num_threads(self._previous_threads)
        self._previous_threads = None
        self._model = None

    def bytes_per_image(self) -> int:
        """Input plus the three largest module outputs of one image (measured with forward hooks)."""
        import torch

        sizes = []
        hooks = [
            module.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() * out.element_size()))
            for module in self._model.modules()
            if not list(module.children())
        ]
        try:
            with torch.inference_mode():
                self._model(torch.zeros((1, *self._input_metadata()[0].shape[1:])))
        finally:
            for hook in hooks:
                hook.remove()
        return self.input_bytes_per_image() + sum(sorted(sizes)[-3:])

    def _input_metadata(self) -> list[TensorMeta]:
        channels = self._model.config.get("in_channels", 1) if hasattr(self._model, "config") else 1
        return [TensorMeta("input", np.dtype(np.float32), (-1, channels, 28, 28))]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        (batch,) = feed.values()
        with torch.inference_mode():
            logits = self._model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return {"logits": logits.numpy()}
