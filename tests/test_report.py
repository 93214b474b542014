import json
import math

import pytest

from pipeline import contracts, report
from pipeline.params import parse_params


def _metrics(top1: float, videos: int = 120, **params) -> dict:
    return {
        "top1": top1,
        "top5": 1.0,
        "top5_k": 5,
        "mean_class_accuracy": top1 - 0.01,
        "videos": videos,
        "clips_per_video": 20,
        "params": params,
    }


def _all(rgb=0.1, flow=0.25, late=0.2, fusion=0.7) -> dict:
    return {
        "rgb": _metrics(rgb, model="small", parameters=1000),
        "flow": _metrics(flow, model="small", parameters=2000),
        "late": _metrics(late, fusion="late"),
        "fusion": _metrics(
            fusion,
            model="fusion_conv_relu5_avg2d",
            parameters=5000,
            method="conv",
            layer="relu5",
            temporal="avg2d",
            also_late=False,
        ),
    }


def _write(metrics_dir, metrics):
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for name, m in metrics.items():
        (metrics_dir / f"{name}.json").write_text(json.dumps(m))


def test_table_rows_and_markdown():
    rows = report.table_rows(_all())
    assert [r["model"] for r in rows] == [
        "RGB stream",
        "Flow stream",
        "Late fusion",
        "Two-stream fusion",
    ]
    assert rows[2]["parameters"] == 3000  # late fusion holds both streams
    assert rows[3]["method"] == "conv" and rows[3]["layer"] == "relu5"
    table = report.markdown_table(rows, report.SUMMARY_COLUMNS)
    lines = table.splitlines()
    assert len(lines) == 6 and lines[0].startswith("| model | fusion method")
    assert "| Two-stream fusion | conv | relu5 | avg2d | 70.0% | 69.0% | 5,000 |" in table


def test_also_late_shows_in_the_method():
    m = _all()
    m["fusion"]["params"]["also_late"] = True
    assert report.table_rows(m)[3]["method"] == "conv + late"


def test_synthetic_check_by_hand():
    # 4 colours x 3 motions: rgb ceiling 1/12, flow and late 1/4; 120 test videos
    check = report.synthetic_check(_all(rgb=0.1, flow=0.25, late=0.35, fusion=0.7), 4, 3)
    assert check["ceilings"] == {"rgb": 1 / 12, "flow": 0.25, "late": 0.25}
    se_late = math.sqrt(0.25 * 0.75 / 120)
    assert check["excess_se"]["late"] == pytest.approx(0.1 / se_late)  # 2.53 SE: not a leak
    assert check["excess_se"]["flow"] == pytest.approx(0.0)
    assert check["best_baseline"] == "late"
    assert check["margin"] == pytest.approx(0.35)
    assert check["margin_reached"] and check["leaks"] == []
    leaky = report.synthetic_check(_all(rgb=0.3, fusion=0.5), 4, 3)
    assert leaky["leaks"] == ["rgb"] and not leaky["margin_reached"]
    assert leaky["margin"] == pytest.approx(0.2)


def test_report_writes_summary_and_chart(tmp_path, raw_params):
    _write(tmp_path / "metrics", _all())
    params = parse_params(raw_params)  # data.root is synthetic.out: the check is included
    text = report.report(params, tmp_path / "metrics", tmp_path / "reports")
    assert (tmp_path / "reports/summary.md").read_text() == text
    assert (tmp_path / "reports/summary.png").stat().st_size > 1000
    assert "| Late fusion | average | softmax | - | 20.0% |" in text
    assert "+45.0 points" in text and ": reached" in text
    raw_params["data"]["root"] = "/data/UCF101"
    text = report.report(parse_params(raw_params), tmp_path / "metrics", tmp_path / "reports")
    assert "synthetic" not in text and "Two-stream fusion" in text


def test_report_names_the_missing_stage(tmp_path, raw_params):
    m = _all()
    del m["late"]
    _write(tmp_path / "metrics", m)
    with pytest.raises(contracts.MissingInputError, match="evaluate_late"):
        report.report(parse_params(raw_params), tmp_path / "metrics", tmp_path / "reports")


def _rev(name, rev, metrics):
    files = {f"metrics/{k}.json": {"data": v} for k, v in metrics.items()}
    files["dvclive/fusion/metrics.json"] = {"data": {"accuracy": 0.5}}
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": {}, "metrics": files}}


def test_experiments_table_from_dvc_exp_show(tmp_path):
    # the shape of `dvc exp show --json` (DVC 3): commits, each with its experiments' revs
    max_fusion = _all(fusion=0.55)
    max_fusion["fusion"]["params"]["method"] = "max"
    exp_show = [
        _rev(None, "workspace", _all()),
        {
            **_rev("main", "a" * 40, _all(fusion=0.65)),
            "experiments": [
                {"revs": [_rev("dizzy-owl", "b" * 40, max_fusion)], "name": "dizzy-owl"},
                {"revs": [{"rev": "c" * 40, "name": "broken", "data": {"metrics": {}}}]},
            ],
        },
    ]
    rows = report.experiment_rows(exp_show)
    assert [r["experiment"] for r in rows] == ["main", "dizzy-owl", "workspace"]
    exp_show[0] = _rev(None, "workspace", max_fusion)  # the workspace = the last experiment
    assert [r["experiment"] for r in report.experiment_rows(exp_show)] == ["main", "dizzy-owl"]
    assert rows[1]["method"] == "max" and rows[1]["top1"] == 0.55
    assert rows[1]["margin"] == pytest.approx(0.30)  # over flow, the best baseline
    text = report.experiments_report(exp_show, tmp_path)
    assert "| dizzy-owl | max | relu5 | avg2d | 55.0% |" in text
    assert (tmp_path / "experiments.png").exists()
    with pytest.raises(report.ReportError, match="dvc exp run"):
        report.experiments_report([exp_show[1]["experiments"][1]["revs"][0]], tmp_path)
