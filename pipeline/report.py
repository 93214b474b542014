"""Stage ``report``: the run's results side by side, as in the paper's Table 1.

One row per evaluated model: the RGB stream, the flow stream, late fusion (the streams' softmax
scores averaged) and the fused network, with its fusion method, layer and temporal fusion,
top-1, mean class accuracy and parameter count. Written to ``reports/summary.md`` with a bar
chart ``reports/summary.png``, and printed (``make repro`` ends with it).

On the bundled "which object moves" data (``data.root`` is ``synthetic.out``) the report also
checks the paper's claim (DESIGN.md): no single stream, and no late fusion, can know which
colour moves, so RGB sits at chance (1 / classes) and flow and late fusion at most at
1 / colours; the fused net should beat the best of them by a wide margin. A baseline more than
three standard errors above its ceiling means the data leaks the answer (a bug in
``synthesize``).

``python -m pipeline.report --experiments`` builds one table over all DVC experiments instead
(from ``dvc exp show --json``; ``--exp-json FILE`` reads a saved copy): one row per experiment,
its fusion settings and its results, in ``reports/experiments.md`` and ``experiments.png``.

Run: ``python -m pipeline.report [--experiments]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pipeline import contracts
from pipeline.contracts import METRICS_DIR, REPORTS_DIR
from pipeline.params import Params, PipelineError, load_params
from pipeline.tables import (
    bar_chart,
    dvc_exp_show,
    markdown_table,
    model_metrics,
    revisions,
)

MODELS = ("rgb", "flow", "late", "fusion")
TITLES = {
    "rgb": "RGB stream",
    "flow": "Flow stream",
    "late": "Late fusion",
    "fusion": "Two-stream fusion",
}
MARGIN = 0.30
"""How far (top-1) the fused net should beat the best baseline on the synthetic data."""


class ReportError(PipelineError):
    """The report cannot be made; the message says why."""


def load_metrics(metrics_dir: Path = METRICS_DIR) -> dict[str, dict]:
    """``metrics/<model>.json`` of every model, by model name."""
    return {name: contracts.read_metrics(name, metrics_dir) for name in MODELS}


def _fusion_columns(p: dict) -> tuple[str, str, str]:
    method = p.get("method", "?") + (" + late" if p.get("also_late") else "")
    return method, p.get("layer", "?"), p.get("temporal", "?")


def table_rows(metrics: dict[str, dict]) -> list[dict]:
    """The rows of the summary table, in the order rgb, flow, late, fusion."""
    rows = []
    for name in MODELS:
        m = metrics[name]
        p = m.get("params", {})
        if name == "late":
            method, layer, temporal = "average", "softmax", "-"
            parameters = sum(metrics[s]["params"].get("parameters", 0) for s in ("rgb", "flow"))
        elif name == "fusion":
            method, layer, temporal = _fusion_columns(p)
            parameters = p.get("parameters", 0)
        else:
            method, layer, temporal = "-", "-", "-"
            parameters = p.get("parameters", 0)
        rows.append(
            {
                "model": TITLES[name],
                "method": method,
                "layer": layer,
                "temporal": temporal,
                "top1": m["top1"],
                "mean_class_accuracy": m["mean_class_accuracy"],
                "parameters": parameters,
            }
        )
    return rows


SUMMARY_COLUMNS = {
    "model": "model",
    "method": "fusion method",
    "layer": "fusion layer",
    "temporal": "temporal fusion",
    "top1": "top-1",
    "mean_class_accuracy": "mean class acc.",
    "parameters": "#params",
}


def is_synthetic(params: Params) -> bool:
    """Whether this run reads the bundled synthetic dataset."""
    return Path(params.data.root) == Path(params.synthetic.out)


def synthetic_check(metrics: dict[str, dict], colors: int, motions: int) -> dict:
    """The paper's claim on the synthetic data: ceilings of the baselines and the margin.

    Returns ``{"ceilings": {model: c}, "excess_se": {model: (top1 - c) / se}, "margin": m,
    "best_baseline": name, "margin_reached": bool, "leaks": [models 3+ SE above ceiling]}``.
    """
    ceilings = {"rgb": 1 / (colors * motions), "flow": 1 / colors, "late": 1 / colors}
    excess = {}
    for name, c in ceilings.items():
        n = metrics[name]["videos"]
        se = math.sqrt(c * (1 - c) / n)
        excess[name] = (metrics[name]["top1"] - c) / se
    best = max(ceilings, key=lambda k: metrics[k]["top1"])
    margin = metrics["fusion"]["top1"] - metrics[best]["top1"]
    return {
        "ceilings": ceilings,
        "excess_se": excess,
        "best_baseline": best,
        "margin": margin,
        "margin_reached": margin >= MARGIN,
        "leaks": [k for k, e in excess.items() if e > 3],
    }


def check_lines(check: dict, metrics: dict[str, dict]) -> list[str]:
    """The synthetic check as Markdown bullet lines."""
    lines = []
    for name, c in check["ceilings"].items():
        what = "chance" if name == "rgb" else "1 / colours"
        e = check["excess_se"][name]
        verdict = "LEAK? more than 3 SE above: check synthesize" if e > 3 else "ok"
        lines.append(
            f"- {TITLES[name]}: top-1 {100 * metrics[name]['top1']:.1f}%, ceiling "
            f"{100 * c:.1f}% ({what}); {e:+.1f} SE: {verdict}"
        )
    best = check["best_baseline"]
    verdict = "reached" if check["margin_reached"] else "NOT reached"
    lines.append(
        f"- Margin of the fused net over the best baseline ({TITLES[best]}): "
        f"{100 * check['margin']:+.1f} points (the paper's point needs >= {100 * MARGIN:.0f}): "
        f"{verdict}"
    )
    return lines


def report(params: Params, metrics_dir: Path = METRICS_DIR, out_dir: Path = REPORTS_DIR) -> str:
    """Write ``summary.md`` and ``summary.png``; returns the Markdown."""
    metrics = load_metrics(metrics_dir)
    rows = table_rows(metrics)
    videos = metrics["fusion"]["videos"]
    clips = metrics["fusion"]["clips_per_video"]
    parts = [
        "# Results",
        "",
        f"Video-level accuracy on the test split ({videos} videos, {clips} clips per video "
        "averaged), as in the paper's Table 1.",
        "",
        markdown_table(rows, SUMMARY_COLUMNS),
    ]
    hlines = {}
    if is_synthetic(params) and params.synthetic.ucf101_like is not None:
        parts += [
            "",
            f"On the UCF101-shaped synthetic set ({params.synthetic.ucf101_like} videos, "
            "synthetic.ucf101_like): the scale benchmark's data, with no check of the paper's "
            "point (its classes are not built to need fusion).",
        ]
    elif is_synthetic(params):
        s = params.synthetic
        check = synthetic_check(metrics, s.colors, len(s.motion_names()))
        parts += [
            "",
            f"## The paper's point on the synthetic data ({s.colors} colours x "
            f"{len(s.motion_names())} motions, synthetic.seed {s.seed})",
            "",
            *check_lines(check, metrics),
        ]
        hlines = {
            "chance": (check["ceilings"]["rgb"], ":"),
            "1 / colours": (check["ceilings"]["flow"], "--"),
        }
    text = "\n".join(parts) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    contracts.write_text(out_dir / "summary.md", text)
    bar_chart(
        [r["model"] for r in rows],
        {
            "top-1": [r["top1"] for r in rows],
            "mean class acc.": [r["mean_class_accuracy"] for r in rows],
        },
        "Video-level accuracy (test split)",
        out_dir / "summary.png",
        hlines,
    )
    return text


# ---- over DVC experiments ------------------------------------------------------------------
def experiment_rows(exp_show: list) -> list[dict]:
    """One row per revision that has all four metrics files; the others are left out."""
    rows, seen, results = [], set(), []
    found = revisions(exp_show)
    found.sort(key=lambda item: item[0] == "workspace")  # named revisions first
    for name, data in found:
        metrics = model_metrics(data, MODELS)
        if any("top1" not in metrics.get(k, {}) for k in MODELS) or name in seen:
            continue
        seen.add(name)
        if name == "workspace" and any(m == metrics for m in results):
            continue  # the workspace holds the results of an experiment listed anyway
        results.append(metrics)
        method, layer, temporal = _fusion_columns(metrics["fusion"].get("params", {}))
        baselines = {k: metrics[k]["top1"] for k in ("rgb", "flow", "late")}
        rows.append(
            {
                "experiment": name,
                "method": method,
                "layer": layer,
                "temporal": temporal,
                "top1": metrics["fusion"]["top1"],
                "mean_class_accuracy": metrics["fusion"]["mean_class_accuracy"],
                "parameters": metrics["fusion"].get("params", {}).get("parameters", 0),
                "late": baselines["late"],
                "best_stream": max(baselines["rgb"], baselines["flow"]),
                "margin": metrics["fusion"]["top1"] - max(baselines.values()),
            }
        )
    return rows


EXPERIMENT_COLUMNS = {
    "experiment": "experiment",
    **{k: v for k, v in SUMMARY_COLUMNS.items() if k != "model"},  # of the fused model
    "late": "late fusion top-1",
    "best_stream": "best stream top-1",
    "margin": "margin over best baseline",
}


def experiments_report(exp_show: list, out_dir: Path = REPORTS_DIR) -> str:
    """Write ``experiments.md`` and ``experiments.png``; returns the Markdown."""
    rows = experiment_rows(exp_show)
    if not rows:
        raise ReportError(
            "no experiment has metrics/{rgb,flow,late,fusion}.json: run `dvc exp run` "
            "(e.g. dvc exp run -S fusion.method=max) first"
        )
    text = (
        "# Experiments\n\nThe fused model of each DVC experiment (`dvc exp show`), with its "
        "baselines.\n\n" + markdown_table(rows, EXPERIMENT_COLUMNS) + "\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    contracts.write_text(out_dir / "experiments.md", text)
    bar_chart(
        [f"{r['experiment']}\n{r['method']}@{r['layer']}" for r in rows],
        {
            "fusion top-1": [r["top1"] for r in rows],
            "late top-1": [r["late"] for r in rows],
            "best stream top-1": [r["best_stream"] for r in rows],
        },
        "Fused model of each experiment (test split)",
        out_dir / "experiments.png",
        {},
    )
    return text


def _read_json(path: Path) -> list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"--exp-json {path}: {exc}") from exc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tables and charts of the evaluated models.")
    parser.add_argument(
        "--experiments", action="store_true", help="one table over all DVC experiments"
    )
    parser.add_argument(
        "--exp-json", type=Path, help="read this saved `dvc exp show --json` output instead"
    )
    args = parser.parse_args(argv)
    try:
        with contracts.stage_lock("report"), contracts.disk_full_guard(REPORTS_DIR):
            if args.experiments or args.exp_json:
                data = _read_json(args.exp_json) if args.exp_json else dvc_exp_show()
                text, out = experiments_report(data), REPORTS_DIR / "experiments.md"
            else:
                text, out = report(load_params()), REPORTS_DIR / "summary.md"
    except PipelineError as exc:
        sys.exit(f"report: {exc}")
    print(text, end="")
    print(f"report: wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
