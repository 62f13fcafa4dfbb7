"""The inference callables PyTriton runs: one per model instance, each owning one runner.

Triton has already checked each request's input name, dtype and shape against the model config and
kept every batch within `max_batch_size`; what it cannot check is the values, so non-finite FP32
inputs are refused here, request by request. PyTriton 0.7 has no per-request error (an exception
fails every request the dynamic batcher merged into the execution; checked in its proxy's source and
on a real server), so a request with NaN or Inf values is refused this way: when it is alone in the
execution (or every request there is bad), with an error naming it; batched with valid requests,
with a response without outputs (`ModelClient.infer` raises on it), while the valid ones are run
and answered as if it had not been there.
"""

from __future__ import annotations

import threading
import time
from typing import Mapping, Sequence

import numpy as np

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.runners.base import BaseRunner
from resnet_deploy.serve.artifact import ServedArtifact

IMAGES = "images"
PIXELS = "pixels"
LOGITS = "logits"
CLASS_ID = "class_id"


class InvalidInput(ResnetDeployError):
    """A request's values cannot be served (NaN or infinite pixels)."""


class InstanceCallable:
    """`requests -> responses` for one Triton model instance over one active runner.

    With `raw_pixels`, each request holds uint8 pixels `[n, 28, 28]` (input `pixels`) that are
    normalized here exactly as `resnet_deploy.data.normalize` does; otherwise FP32 `[n, 1, 28, 28]`
    already normalized (input `images`).
    """

    def __init__(self, runner: BaseRunner, artifact: ServedArtifact, raw_pixels: bool = False):
        self.runner = runner
        self.artifact = artifact
        self.raw_pixels = raw_pixels
        self.input_name = PIXELS if raw_pixels else IMAGES
        self.input_dims = artifact.input_dims[1:] if raw_pixels else artifact.input_dims  # without the batch axis
        self.input_dtype = np.uint8 if raw_pixels else np.float32
        self.requests_served = 0
        self.images_served = 0
        self._lock = threading.Lock()

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """One response per request: outputs for each valid one, none for one with NaN/Inf values."""
        arrays = [request[self.input_name] for request in requests]
        bad = {} if self.raw_pixels else _non_finite_counts(arrays)
        if len(bad) == len(arrays):
            where = ", ".join(f"request {i + 1} of {len(arrays)}: {count} NaN/Inf values" for i, count in bad.items())
            raise InvalidInput(f"input '{IMAGES}' must be finite, normalized pixels ({where})")
        good = [array for index, array in enumerate(arrays) if index not in bad]
        logits, class_ids = self.infer_batch(np.concatenate(good) if len(good) > 1 else good[0])
        responses: list[dict[str, np.ndarray]] = []
        start = 0
        for index, array in enumerate(arrays):
            if index in bad:
                responses.append({})
                continue
            stop = start + len(array)
            responses.append({LOGITS: logits[start:stop], CLASS_ID: class_ids[start:stop]})
            start = stop
        with self._lock:
            self.requests_served += len(good)
            self.images_served += start
        return responses

    def infer_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits (float32) and class ids (int64, `[n, 1]`) for one batch of this model's input."""
        from resnet_deploy.data import normalize

        images = normalize(batch) if self.raw_pixels else batch
        outputs = self.runner.infer({self.artifact.input_name: images.astype(self.artifact.input_dtype, copy=False)})
        logits = np.asarray(outputs[self.artifact.output_name], dtype=np.float32)
        return logits, logits.argmax(axis=1).astype(np.int64)[:, None]

    def warm_up(self, max_batch_size: int) -> dict[int, float]:
        """Run batch 1 and the max batch once so the first client request pays no first-run cost;
        seconds per batch size."""
        seconds = {}
        for size in sorted({1, max_batch_size}):
            batch = np.zeros((size, *self.input_dims), self.input_dtype)
            start = time.perf_counter()
            logits, _ = self.infer_batch(batch)
            seconds[size] = time.perf_counter() - start
            if logits.shape != (size, self.artifact.num_classes):
                raise ResnetDeployError(
                    f"{self.artifact.path}: warm-up batch {size} gave logits {logits.shape}, "
                    f"expected {(size, self.artifact.num_classes)}"
                )
        return seconds


def _non_finite_counts(arrays: Sequence[np.ndarray]) -> dict[int, int]:
    """Index of each request holding NaN or Inf values -> how many it holds."""
    counts = {index: int((~np.isfinite(array)).sum()) for index, array in enumerate(arrays)}
    return {index: count for index, count in counts.items() if count}
