"""The GPU check (benchmarks/gpu_check.py) runs where the GPU machine is: Keras on JAX, with
neither TensorFlow nor OpenCV's contrib modules (here both are blocked from import). So this
is also the test that the models build, train and predict on JAX without TensorFlow: the
smoke's final model is the fused net with 3D conv + 3D pool fusion and the towers' own
outputs (``fusion.also_late``), trained on labels of 101 classes."""

import json
import os
import subprocess
import sys

from .conftest import ROOT

BLOCKED = r"""
import importlib.abc, runpy, sys

class Blocked(importlib.abc.MetaPathFinder):
    # The GPU machine has no TensorFlow and no opencv-contrib (so no cv2.optflow); the check
    # needs no OpenCV at all, so cv2 is blocked whole, which blocks cv2.optflow with it.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "cv2", "tf_keras"):
            raise ImportError(f"{name} is blocked: the GPU machine does not have it")

sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_smoke_runs_without_tensorflow_or_opencv(tmp_path):
    out = tmp_path / "check.json"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKED,
            str(ROOT / "benchmarks/gpu_check.py"),
            "--smoke",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    checks = [r["check"] for r in rows]
    assert checks.count("tvl1") == 1 and checks.count("train") == 2 and checks.count("eval") == 1
    agreement = [r for r in rows if r["check"] == "tvl1_agreement"]
    assert len(agreement) == 3 and all(r["ok"] and r["mean_epe_px"] <= 0.05 for r in agreement)
    assert all(r["pairs_per_s"] > 0 for r in rows if r["check"] == "tvl1")
    assert all(r["clips_per_s"] > 0 for r in rows if r["check"] in ("train", "eval"))
    assert rows[-1]["check"] == "done" and rows[-1]["agreement"] == "ok"
