"""What ingest makes of the files users bring: every case of tests/video_cases.py, made with
real encoders here, probed and judged as the ingest stage does (data.min_frames 2).

    python benchmarks/video_cases.py

Prints one Markdown row per case: accepted with the frames that decode (and what the container
claimed, the size as displayed, the average fps and the codec), or rejected with the reason.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import ingest, video  # noqa: E402
from tests.video_cases import CASES  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for i, (name, (build, _)) in enumerate(CASES.items()):
            folder = Path(tmp) / f"{i:02d}"
            folder.mkdir()
            made[name] = build(folder)
        probes = ingest.probe_all(list(made.values()), workers=0, timeout_s=300)
    print(f"decoder: {video.decoder_version()}\n")
    print("| case | outcome |\n|---|---|")
    for name, path in made.items():
        result = probes[path]
        reason = ingest.judge(result, min_frames=2)
        if reason is None:
            outcome = (
                f"accepted: {result.frames} frames (container: {result.claimed or '?'}), "
                f"{result.width}x{result.height}, {result.fps:.1f} fps, {result.codec}"
            )
        else:
            outcome = f"rejected: {reason}"
        print(f"| {name} | {outcome} |")


if __name__ == "__main__":
    main()
