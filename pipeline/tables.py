"""Tables and charts the reports share: Markdown tables, grouped bar charts, and the revisions
of ``dvc exp show --json`` (read by ``report --experiments`` and ``ablate``).

No stage writes or reads a file through this module; it only formats what they computed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pipeline import contracts
from pipeline.params import PipelineError


class ExperimentsError(PipelineError):
    """``dvc exp show`` could not be read; the message says why."""


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{100 * value:.1f}%"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table of ``rows`` with ``columns`` (key → heading); fractions as percent."""
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k, "")) for k in columns) + " |")
    return "\n".join(lines)


def bar_chart(
    labels: list[str], series: dict[str, list[float]], title: str, path: Path, hlines: dict
) -> None:
    """Grouped bars (one group per label, one bar per series), with labelled reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(labels) + 2), 4))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, [f"{100 * v:.0f}" for v in values], fontsize=7)
    for text, (y, style) in hlines.items():
        ax.axhline(y, color="grey", linestyle=style, linewidth=1, label=text)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    # Below the axes, so that it hides no bar and no bar label.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    contracts.save_figure(fig, path)
    plt.close(fig)


def _walk(node: object, found: list[tuple[str, dict]]) -> None:
    """Collect (name, data) of every revision in ``dvc exp show --json`` output."""
    if isinstance(node, list):
        for item in node:
            _walk(item, found)
    elif isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and ("metrics" in data or "params" in data):
            rev = str(node.get("rev") or data.get("rev") or "?")
            name = node.get("name") or (rev if rev == "workspace" else rev[:7])
            found.append((str(name), data))
        for key in ("experiments", "revs"):
            if node.get(key):
                _walk(node[key], found)


def revisions(exp_show: list) -> list[tuple[str, dict]]:
    """(name, data) of every revision in ``dvc exp show --json`` output."""
    found: list[tuple[str, dict]] = []
    _walk(exp_show, found)
    return found


def model_metrics(data: dict, models: tuple[str, ...]) -> dict[str, dict]:
    """``metrics/<model>.json`` of one revision of ``dvc exp show --json``, by model name."""
    metrics = {}
    for file, content in (data.get("metrics") or {}).items():
        stem = Path(file).stem
        if Path(file).parent.name == "metrics" and stem in models:
            metrics[stem] = (content or {}).get("data") or {}
    return metrics


def dvc_exp_show() -> list:
    """``dvc exp show --json`` of the repository in the working directory."""
    try:
        out = subprocess.run(
            ["dvc", "exp", "show", "--json", "--all-commits"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ExperimentsError(
            "dvc not found: run inside the project's .venv (make install)"
        ) from exc
    if out.returncode != 0:
        raise ExperimentsError(f"dvc exp show --json failed:\n{out.stderr.strip()}")
    try:
        return json.loads(out.stdout or "[]")
    except json.JSONDecodeError as exc:
        raise ExperimentsError(
            f"dvc exp show --json printed something that is not JSON: {exc}"
        ) from exc
