"""Which CPU differences change the default run's numbers: this machine imitating others.

    python benchmarks/cpu_variants.py

Each line runs in a fresh process with one setting changed and prints a hash of what it made,
and whether that equals this machine's own result:

- flow: OpenCV's TV-L1 (the opencv engine, ``flow.tvl1`` of params.yaml) on textured 64×64 and
  160×120 frame pairs, with OpenCV's dispatched SIMD paths switched off by
  ``OPENCV_CPU_DISABLE`` (a CPU without AVX-512, without AVX2, ...), and with 2 threads;
- train: five SGD steps of the default fused model (params.yaml) on fixed random clips, with
  oneDNN capped at an older instruction set by ``ONEDNN_MAX_CPU_ISA`` (a CPU without AMX or
  AVX-512), with TensorFlow's oneDNN kernels off (``TF_ENABLE_ONEDNN_OPTS=0``), and with other
  intra-op thread counts (a machine with more cores).

docs/evaluation.md, Reproducibility across machines, has what this machine printed.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOW = """
import hashlib, sys
import cv2
from pipeline.bench import _scene
from pipeline.flow_compute import create_tvl1
from pipeline.params import load_params
cv2.setNumThreads(int(sys.argv[1]))
t, h = create_tvl1(load_params().flow.tvl1), hashlib.sha256()
for size in ((64, 64), (160, 120)):
    frames = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in _scene(0, 5, *size)]
    for a, b in zip(frames, frames[1:]):
        h.update(t.calc(a, b, None).tobytes())
print(h.hexdigest()[:16])
"""

TRAIN = """
import hashlib, sys
import keras, numpy as np, tensorflow as tf, yaml
threads = int(sys.argv[1])
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
from pipeline.model import build_fused
from pipeline.params import parse_params
params = parse_params(yaml.safe_load(open("params.yaml")))
keras.utils.set_random_seed(0)
model = build_fused(params, 12)
outs = list(model.output.keys())
model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.9),
              loss={k: "sparse_categorical_crossentropy" for k in outs})
c, b, rng = params.clip, 16, np.random.default_rng(0)
x = {"rgb": rng.integers(0, 256, (b, c.frames, c.crop, c.crop, 3), dtype=np.uint8),
     "flow": rng.integers(0, 256, (b, c.frames, c.crop, c.crop, 2 * c.flow_stack), dtype=np.uint8)}
y = {k: rng.integers(0, 12, b) for k in outs}
model.fit(x, y, batch_size=b, epochs=5, verbose=0, shuffle=False)
weights = b"".join(np.asarray(w).tobytes() for w in model.get_weights())
print(hashlib.sha256(weights).hexdigest()[:16])
"""

NO_AVX512 = "AVX512_SKX,AVX512_COMMON,AVX512_KNL,AVX512_KNM,AVX512_CNL,AVX512_CLX,AVX512_ICL"
FLOW_CASES = [
    ("this CPU, 1 thread", {}, 1),
    ("this CPU, 2 threads", {}, 2),
    ("no AVX-512", {"OPENCV_CPU_DISABLE": NO_AVX512}, 1),
    ("no AVX2", {"OPENCV_CPU_DISABLE": "AVX2"}, 1),
    ("no FMA3", {"OPENCV_CPU_DISABLE": "FMA3"}, 1),
]
TRAIN_CASES = [
    ("this CPU, TF's threads", {}, 0),
    ("this CPU, 1 thread", {}, 1),
    ("this CPU, 8 threads", {}, 8),
    ("oneDNN up to AVX-512 (no AMX)", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, 0),
    ("oneDNN up to AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, 0),
    ("oneDNN up to AVX2, 8 threads", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, 8),
    ("oneDNN up to SSE4.1", {"ONEDNN_MAX_CPU_ISA": "SSE41"}, 0),
    ("TF_ENABLE_ONEDNN_OPTS=0", {"TF_ENABLE_ONEDNN_OPTS": "0"}, 0),
    ("TF_ENABLE_ONEDNN_OPTS=0, 1 thread", {"TF_ENABLE_ONEDNN_OPTS": "0"}, 1),
]


def _run(code: str, env: dict, threads: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, str(threads)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    info = Path("/proc/cpuinfo").read_text()
    cpu = next((x.split(":", 1)[1].strip() for x in info.splitlines() if "model name" in x), "?")
    flags = info
    isa = [f for f in ("avx2", "avx512f", "amx_tile") if f" {f}" in flags]
    print(f"cpu variants: {cpu}, {os.cpu_count()} cores, {' '.join(isa)}")
    for what, code, cases in (("flow", FLOW, FLOW_CASES), ("train", TRAIN, TRAIN_CASES)):
        native = None
        for label, env, threads in cases:
            digest = _run(code, env, threads)
            native = native or digest
            same = "same as this CPU" if digest == native else "DIFFERS"
            print(f"{what:<5} {label:<36} {digest}  {same}")


if __name__ == "__main__":
    main()
