"""Shared fixtures: the repo's own params.yaml, and tiny videos written on demand."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

SMALL_TVL1 = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 3}
"""flow.tvl1 for tests of the plumbing around TV-L1 (stages, resuming, Ray actors, the records
that later stages read), not of its flow (tests/test_tvl1.py): the same code, compiled (keras
engine) and run in a fraction of the default's time."""


LONG_FIRST = (
    "test_ablate.py",  # makes tiny_repro while the other worker runs test_train.py
    "test_train.py",
    "test_dvc_pipeline.py",
    "test_faults.py",
    "test_rawframes.py",
    "test_weights.py",
    "test_on_jax.py",
)
"""The files that take longest, in the order pytest-xdist hands them out (make test:
``--dist loadfile --no-loadscope-reorder``): the long ones start first and the many short
files fill the end, instead of xdist's default of the files with the most tests first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file as written


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of this whole pytest run: under pytest-xdist the one that holds every
    worker's own folder (the pattern of xdist's docs: what the workers share lives there,
    guarded by a file lock), else the process's own."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return tmp_path_factory.getbasetemp()
    return tmp_path_factory.getbasetemp().parent


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


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory, repo_params):
    """A project folder with params.yaml and the data of a tiny synthetic run, up to shards.

    4 classes x 12 videos of 12 frames at 32x32 (train 28, val 4, test 16), T=1, L=4, crops of 28;
    flow by OpenCV with :data:`SMALL_TVL1` (the tests read its records, not how good its flow is).
    """
    from pipeline import contracts, flow, ingest, shard, synthesize
    from pipeline.params import parse_params

    root = tmp_path_factory.mktemp("tiny_project")
    raw = copy.deepcopy(repo_params)
    raw["synthetic"].update(
        colors=2,
        motions=2,
        videos_per_class=12,
        frames=12,
        size=32,
        test_fraction=0.34,
        out=str(root / "data/raw"),
    )
    raw["data"].update(
        root=str(root / "data/raw"), lists=str(root / "data/raw"), min_frames=8, val_fraction=0.25
    )
    raw["flow"].update(workers=2)
    raw["flow"]["tvl1"].update(SMALL_TVL1)
    raw["clip"].update(frames=1, flow_stack=4, crop=28, scales=[1.0, 0.875], shuffle_buffer=16)
    raw["eval"].update(clips=2, batch_size=8)
    raw["train"].update(batch_size=8, epochs=3, lr=0.001)
    raw["fusion"].update(epochs=2, lr=0.003)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = parse_params(raw)
    synthesize.synthesize(params.synthetic, root / "data/raw")
    classes, rows, rejected = ingest.ingest(params.data)
    ingest.write_outputs(root / "data", classes, rows, rejected)
    here = os.getcwd()
    os.chdir(root)  # manifest paths are relative to the project
    try:
        rows = contracts.read_manifest()
        flow.run_flow(params.flow, rows, root / "data/videos", root / "data/flow_failed.csv")
        shard.write_shards(rows, params.shard, str(root / "data/videos"), str(root / "data/shards"))
    finally:
        os.chdir(here)
    return root


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> tuple[Path, str]:
    """A scratch DVC project (tests/test_dvc_pipeline.py: the tiny params) after one `dvc repro`
    of every stage, and what that printed. Shared, so never changed: tests copy it
    (:func:`copy_project`) and may compare their outputs with its. Under pytest-xdist the
    first worker that needs it makes it and the others wait for it, and read it
    (:func:`run_folder`)."""
    from filelock import FileLock

    from tests.test_dvc_pipeline import _run, _scratch_project, tiny_params

    shared = run_folder(tmp_path_factory)
    project, printed = shared / "tiny_repro", shared / "tiny_repro.out"
    with FileLock(str(shared / "tiny_repro.lock")):
        if not printed.is_file():
            shutil.rmtree(project, ignore_errors=True)  # a half-made one from a failed try
            project.mkdir()
            out = _run(_scratch_project(project, tiny_params), "dvc", "repro")
            printed.write_text(out, encoding="utf-8")
    return project, printed.read_text(encoding="utf-8")


def copy_project(src: Path, dst: Path, cache: bool = True) -> Path:
    """A copy of the project ``src`` in ``dst`` (made or filled), its git repository and DVC
    state included; without ``cache``, without ``.dvc/cache`` (its run cache would let `dvc
    repro` restore a stage's outputs instead of running it)."""
    skip = shutil.ignore_patterns("cache") if not cache else None

    def ignore(folder: str, names: list[str]) -> set[str]:
        return set(skip(folder, names)) if skip and folder.endswith(".dvc") else set()

    shutil.copytree(src, dst, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    return dst
