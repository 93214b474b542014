"""A picture of one per-video record: RGB frames above their colour-coded flow.

``python -m pipeline.flow --preview VIDEO_ID`` draws ``reports/flow_preview/<video_id>.png``
(:func:`preview`): hue is the direction of motion on the colour wheel at the right (right = +x,
down = +y), brightness the speed, full brightness the fastest flow shown.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline import contracts

PREVIEW_DIR = contracts.REPORTS_DIR / "flow_preview"


def flow_to_colour(flow: np.ndarray, max_magnitude: float) -> np.ndarray:
    """Flow (H, W, 2) in px -> RGB: hue = direction (HSV wheel), brightness = speed."""
    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (ang / 2).astype(np.uint8)  # OpenCV hue is 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max(max_magnitude, 1e-6) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def preview(
    video_id: str,
    out_dir: Path = contracts.VIDEOS_DIR,
    dest: Path = PREVIEW_DIR,
    columns: int = 8,
) -> Path:
    """PNG strip for one record: RGB frames above their colour-coded flow, plus a colour key."""
    path = Path(contracts.record_path(video_id, out_dir))
    if not path.exists():
        raise contracts.MissingInputError(
            f"no record {path}; ids are in {contracts.MANIFEST} (run the flow stage first)"
        )
    rec = contracts.decode_record(next(contracts.read_records(path)))
    n = len(rec["flow_x"])
    picks = sorted({round(float(i)) for i in np.linspace(0, n - 1, min(columns, n))})

    def grey(b: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE)

    bound = rec["flow_bound"]
    flows = [
        contracts.dequantize_flow(
            np.stack([grey(rec["flow_x"][i]), grey(rec["flow_y"][i])], -1), bound
        )
        for i in picks
    ]
    top = max(float(np.hypot(f[..., 0], f[..., 1]).max()) for f in flows)
    rgb = [
        cv2.cvtColor(
            cv2.imdecode(np.frombuffer(rec["rgb"][i], np.uint8), cv2.IMREAD_COLOR),
            cv2.COLOR_BGR2RGB,
        )
        for i in picks
    ]
    row1 = np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0))) for f in rgb], 1)
    row2 = np.concatenate(
        [np.pad(flow_to_colour(f, top), ((2, 2), (2, 2), (0, 0))) for f in flows], 1
    )
    h = row1.shape[0]
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : h * 1j]
    key = flow_to_colour(np.stack([xx, yy], -1).astype(np.float32) * top, top)
    key[np.hypot(xx, yy) > 1] = 0  # the colour key: a disc, right = +x, down = +y
    strip = np.concatenate(
        [np.concatenate([row1, np.zeros_like(key)], 1), np.concatenate([row2, key], 1)], 0
    )
    scale = -(-960 // strip.shape[1])  # at least 960 px wide, in whole pixels
    strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    text = (
        f"{video_id}: frames {list(picks)}; flow colour: direction, full brightness = {top:.2f} px"
    )
    band = np.zeros((22, strip.shape[1], 3), np.uint8)
    cv2.putText(band, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{video_id}.png"
    image = cv2.cvtColor(np.concatenate([band, strip], 0), cv2.COLOR_RGB2BGR)
    with contracts.atomic_path(out) as tmp:
        Path(tmp).write_bytes(cv2.imencode(".png", image)[1].tobytes())
    return out
