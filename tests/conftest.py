"""Shared fixtures: the real Fashion-MNIST files and small models trained on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANDIDATE_DATA_DIRS = [
    os.environ.get("RESNET_DEPLOY_DATA"),
    REPO.parent / "shared" / "data" / "fashion-mnist",
    "/usr/share/datasets/fashion-mnist",
]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Fashion-MNIST folder; the suite fails (never skips) without it."""
    from resnet_deploy.data import has_all_files

    for candidate in CANDIDATE_DATA_DIRS:
        if candidate and has_all_files(Path(candidate)):
            return Path(candidate)
    pytest.fail("Fashion-MNIST not found; set RESNET_DEPLOY_DATA or place ../shared/data/fashion-mnist")
