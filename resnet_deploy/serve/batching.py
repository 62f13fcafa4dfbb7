"""How a Triton model batches and how many copies of it run: shared by `serve` and `triton-repo`."""

from __future__ import annotations

from dataclasses import dataclass

from resnet_deploy.errors import ResnetDeployError


@dataclass(frozen=True)
class BatchingSettings:
    """`max_batch_size` None means the engine profile's max (64 for ONNX); `dynamic` turns on Triton's
    dynamic batcher with `preferred_batch_sizes` (empty: as large as it can) and `max_queue_delay_us`."""

    max_batch_size: int | None = None
    dynamic: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instances: int = 1

    def __post_init__(self):
        if self.instances < 1:
            raise ResnetDeployError(f"--instances must be >= 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise ResnetDeployError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if self.max_batch_size is not None and any(size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise ResnetDeployError(
                f"--preferred-batch-sizes {list(self.preferred_batch_sizes)} exceed "
                f"--max-batch-size {self.max_batch_size}"
            )
