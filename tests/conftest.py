"""Shared fixtures: the repo's own params.yaml, and tiny videos written on demand."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_params() -> dict:
    """params.yaml of the repo as a plain dict (tests deep-copy before editing)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def raw_params(repo_params) -> dict:
    return copy.deepcopy(repo_params)


@pytest.fixture
def make_video():
    """make_video(path, frames=20, size=32, seed=0): a small lossless random-noise video."""
    from pipeline.synthesize import write_video

    def make(path: Path, frames: int = 20, size: int = 32, seed: int = 0) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        write_video(path, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))
        return path

    return make
