"""``python -m pipeline.bench scale`` at two small sizes: every stage's line, the summary, and
a growth bound (the full 1,000 / 4,000 / 13,320 run is a benchmark: docs/benchmarks.md)."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

NUMBER = r"([\d.]+)"


@pytest.mark.alone  # its growth bound compares wall times
def test_scale_bench_measures_each_stage_at_each_size_and_cost_per_video_stays_flat(tmp_path):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "pipeline.bench", "scale", "--videos", "303,404"]
    out = subprocess.run(
        [*cmd, "--upto", "shard", "--keep", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    stages = ("synthesize", "ingest", "flow", "shard")
    for n in (303, 404):
        for stage in stages:
            m = re.search(
                rf"^scale +{n} {stage} +wall +{NUMBER} s +stage +{NUMBER} s +{NUMBER} ms/video"
                rf" +peak +(\d+) MB +workers +(\d+) MB +cpu +{NUMBER} s$",
                text,
                re.M,
            )
            assert m, f"no line for {stage} at {n}:\n{text}"
            wall, own, per_video, peak, workers, cpu = map(float, m.groups())
            assert 0 < own <= wall + 0.1  # both printed to 0.1 s
            assert cpu > 0
            assert abs(per_video - 1000 * wall / n) <= 1000 * 0.05 / n + 0.005
            assert peak > 20  # the stage process itself was measured
            if stage in ("ingest", "flow", "synthesize"):
                assert workers > 20, f"{stage}'s spawned workers were not seen"
        assert re.search(
            rf"^scale +{n} dvc status {NUMBER} s, no-op dvc repro {NUMBER} s$", text, re.M
        )
        # the project the sizes ran in holds what they say: n videos, 101 classes, three splits
        project = tmp_path / f"videos-{n}"
        with open(project / "data/manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n and len({r["class_name"] for r in rows}) == 101
        assert {r["split"] for r in rows} == {"train", "val", "test"}
        index = json.loads((project / "data/shards/index.json").read_text())
        assert sum(s["videos"] for s in index["splits"].values()) == n
    assert re.search(
        r"^stage +303 ms/video +peak MB +404 ms/video +peak MB +marginal ms/video$", text, re.M
    )
    for stage in stages:  # per size: ms/video and peak MB; then the marginal ms/video
        assert re.search(rf"^{stage} +{NUMBER} +\d+ +{NUMBER} +\d+ +-?{NUMBER}$", text, re.M), stage
    last = text.strip().splitlines()[-1]
    m = re.fullmatch(
        rf"scale: worst per-video growth {NUMBER} \(stage (\w+)\), in CPU {NUMBER} \(stage "
        rf"(\w+)\), worst peak-memory growth {NUMBER} \(stage (\w+)\), no-op repro {NUMBER} s "
        r"at 404",
        last,
    )
    assert m, last
    assert {m.group(2), m.group(4), m.group(6)} <= set(stages)
    wall, cpu, memory = float(m.group(1)), float(m.group(3)), float(m.group(5))
    # a third more videos: no stage's cost per video (its CPU seconds, which whatever else runs
    # on the machine leaves alone), or its peak memory, grows by 15 %; and no stage's wall time
    # per video grows as fast as the videos (1.33: a stage all quadratic, say one that waits;
    # one that computes is the CPU bound's)
    assert cpu <= 1.15 and memory <= 1.15 and wall < 404 / 303, last
