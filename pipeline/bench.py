"""Benchmarks that print measured numbers (not tests).

    python -m pipeline.bench flow [--videos 4] [--frames 25]

``flow``: on the same 320×240 videos, frame pairs per second of (1) a bare
``DualTVL1OpticalFlow.calc`` loop on one core over frames decoded beforehand, (2) the flow stage
(``run_flow``: decode, resize, TV-L1, quantise, JPEG, record writing, cache) with one worker and
(3) with all cores. The last line is ``flow overhead ratio: X.XX  scaling efficiency: Y.YY``:
(2)/(1), and (3)/(cores × (2)).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.flow import create_tvl1, run_flow
from pipeline.params import load_params
from pipeline.synthesize import write_video


def _scene(seed: int, frames: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A textured background drifting right with a bright blob moving down: real work for TV-L1."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 8, width // 8 + 8, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(
        cv2.resize(coarse, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC), (0, 0), 2.0
    )
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        m = np.float32([[1, 0, -32 + 0.7 * t], [0, 1, -32]])
        frame = cv2.warpAffine(tex, m, (width, height), flags=cv2.INTER_CUBIC)
        cv2.circle(frame, (width // 2, 40 + 3 * t), 20, (255, 230, 200), -1, cv2.LINE_AA)
        out[t] = np.clip(frame, 0, 255)
    return out


def bench_flow(videos: int, frames: int) -> None:
    p = load_params().flow
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for i in range(videos):
            path = tmp / f"bench{i}.avi"
            write_video(path, _scene(i, frames))
            rows.append({"video_id": path.stem, "path": str(path), "label": 0, "frames": frames})
        pairs = videos * (frames - 1)
        print(
            f"flow benchmark: {videos} videos x {frames} frames at 320x240 = {pairs} pairs, "
            f"OpenCV {cv2.__version__}, {cores} cores, TV-L1 {p.tvl1}"
        )

        cv2.setNumThreads(1)
        decoded = []
        for row in rows:
            cap = cv2.VideoCapture(row["path"])
            grey = []
            while (frame := cap.read())[0]:
                grey.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2GRAY))
            decoded.append(grey)
        start = time.perf_counter()
        for grey in decoded:
            tvl1 = create_tvl1(p.tvl1)
            for a, b in zip(grey, grey[1:], strict=False):
                tvl1.calc(a, b, None)
        bare = pairs / (time.perf_counter() - start)
        print(f"bare calc() loop, 1 core:        {bare:7.2f} pairs/s")

        rates = {}
        for workers in (1, cores):
            q = dataclasses.replace(p, workers=workers, size=None)
            start = time.perf_counter()
            summary = run_flow(q, rows, tmp / f"out{workers}", tmp / f"failed{workers}.csv")
            assert summary.computed == videos and not summary.failed
            rates[workers] = pairs / (time.perf_counter() - start)
            label = f"flow stage, {workers} worker{'s' if workers > 1 else ''}:"
            print(f"{label:<32} {rates[workers]:7.2f} pairs/s")
        overhead = rates[1] / bare
        scaling = rates[cores] / (cores * rates[1])
        print(f"flow overhead ratio: {overhead:.2f}  scaling efficiency: {scaling:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmarks that print measured numbers.")
    sub = parser.add_subparsers(dest="what", required=True)
    flow = sub.add_parser("flow", help="TV-L1 stage against a bare calc() loop")
    flow.add_argument("--videos", type=int, default=4)
    flow.add_argument("--frames", type=int, default=25)
    args = parser.parse_args(argv)
    if args.what == "flow":
        bench_flow(args.videos, args.frames)


if __name__ == "__main__":
    main()
