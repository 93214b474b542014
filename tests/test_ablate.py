"""`python -m pipeline.ablate`: the grid's params and names, the table from metrics, and a real
two-row table as DVC experiments on tiny params (queued, reused, streams and flow once)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline import ablate

from .conftest import ROOT, copy_project
from .test_dvc_pipeline import _ran

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_override_values_are_written_as_dvc_reads_them():
    assert ablate.format_value(True) == "true"
    assert ablate.format_value(None) == "null"
    assert ablate.format_value(["updown", "downup"]) == "[updown,downup]"
    for value in (True, None, ["updown", "downup"], 3, 0.5, "relu4"):
        assert yaml.safe_load(ablate.format_value(value)) == value
    assert ablate.parse_override("fusion.epochs=30") == ("fusion.epochs", 30)
    with pytest.raises(ablate.AblateError, match="key=value"):
        ablate.parse_override("fusion.epochs")
    with pytest.raises(ablate.AblateError, match="no key fusion.epoch"):
        ablate.set_key(dict(BASE), "fusion.epoch", 3)


def test_each_row_sets_all_fusion_settings_and_differs_from_the_lead_in_fusion_only():
    for table, rows in ablate.TABLES.items():
        entries = ablate.plan(table, "synthetic", BASE, {}, 1, list(rows))
        lead = entries[0]["params"]
        for entry in entries:
            p = entry["params"]
            assert {k: v for k, v in p.items() if k != "fusion"} == {
                k: v for k, v in lead.items() if k != "fusion"
            }, entry["row"]
            for key, value in rows[entry["row"]].items():
                assert ablate.get_key(p, key) == value
            assert entry["name"].startswith(f"{table}-")
        # late fusion is read from the lead's run, not run again
        assert ablate.LATE_ROW not in [e["row"] for e in entries]
        assert len({e["name"] for e in entries}) == len(entries)
    temporal = ablate.plan("temporal", "synthetic", BASE, {}, 1, ["avg2d"])[0]["params"]
    assert temporal["synthetic"]["motions"] == ["updown", "downup"]
    assert temporal["clip"]["frames"] > 1 and temporal["data"]["root"] == BASE["synthetic"]["out"]


def test_same_params_same_name_and_seeds_make_one_entry_each():
    a = ablate.plan("methods", "current", BASE, {}, 1, ["conv"])
    b = ablate.plan("layers", "current", BASE, {}, 1, ["relu5"])
    assert a[0]["params"] == b[0]["params"]  # Table 1's conv row is Table 2's relu5 row
    entries = ablate.plan("methods", "current", BASE, {"fusion.epochs": 2}, 3, ["conv", "sum"])
    assert [(e["row"], e["seed"]) for e in entries] == [
        ("conv", 0), ("sum", 0), ("conv", 1), ("sum", 1), ("conv", 2), ("sum", 2),
    ]  # fmt: skip
    assert all(e["overrides"]["fusion.epochs"] == 2 for e in entries)
    assert entries[2]["overrides"]["train.seed"] == 1


def test_temporal_on_single_snippet_clips_names_the_fix():
    with pytest.raises(ablate.AblateError, match="clip.frames=3"):
        ablate.check_table("temporal", BASE, "current")


def _exp(top1: float, late: float, params_n: int, rgb_hash: str = "r") -> dict:
    metric = {"top1": top1, "mean_class_accuracy": top1 - 0.01, "params": {"parameters": params_n}}
    return {
        "params": {},
        "metrics": {
            "rgb": {"top1": 0.1, "mean_class_accuracy": 0.1, "params": {"parameters": 10}},
            "flow": {"top1": 0.3, "mean_class_accuracy": 0.3, "params": {"parameters": 20}},
            "late": {"top1": late, "mean_class_accuracy": late},
            "fusion": metric,
        },
        "deps": {"models/rgb.keras": rgb_hash, "models/flow.keras": "f", "data/shards": "s"},
    }


def test_table_is_assembled_from_the_metrics_with_the_seed_spread():
    entries = ablate.plan("methods", "current", BASE, {}, 2, ["conv", "sum"])
    exps = {
        e["name"]: _exp(0.8 + 0.1 * e["seed"] + (0.05 if e["row"] == "sum" else 0), 0.3, 99)
        for e in entries
    }
    rows = ablate.assemble("methods", entries, {e["name"]: e["name"] for e in entries}, exps)
    assert [r["row"] for r in rows] == ["conv", "late", "sum"]
    conv, late, summed = rows
    assert conv["top1"] == pytest.approx(0.85) and conv["seeds"] == 2
    assert conv["spread"] == "±7.1"  # the standard deviation of 80% and 90%
    assert summed["top1"] == pytest.approx(0.90)
    assert late["top1"] == pytest.approx(0.3) and late["parameters"] == "30"  # rgb + flow
    assert conv["paper_top1"] == 0.8596 and late["paper_parameters"] == "181.42M"
    names = {e["name"]: e["name"] for e in entries}
    assert ablate.streams_once(entries, names, exps) == []
    exps[entries[1]["name"]]["deps"]["models/rgb.keras"] = "other"
    assert "models/rgb.keras" in ablate.streams_once(entries, names, exps)[0]


def test_a_reused_lead_brings_back_its_lock_and_outputs_but_not_its_code(tmp_path, monkeypatch):
    # A lead made at an older commit: bringing it back must not put the old code over the new.
    git = ("git", "-c", "user.email=t@t", "-c", "user.name=t")
    (tmp_path / "src.txt").write_text("input\n")
    (tmp_path / "params.yaml").write_text("times: 2\n")
    (tmp_path / "code.py").write_text("old = 1\n")
    (tmp_path / ".gitignore").write_text("/out.txt\n")
    stage = "python -c \"open('out.txt', 'w').write(open('src.txt').read() * 2)\""
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  make:\n    cmd: {stage}\n    deps: [src.txt]\n    params: [times]\n"
        "    outs: [out.txt]\n"
    )
    _run(tmp_path, "git", "init", "-q")
    _run(tmp_path, "dvc", "init", "-q")
    _run(tmp_path, "dvc", "config", "core.analytics", "false")  # ablate.py's own dvc calls too
    _run(tmp_path, *git, "add", "-A")
    _run(tmp_path, *git, "commit", "-qm", "old code")
    _run(tmp_path, "dvc", "exp", "run", "-n", "lead")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    rev = ablate.existing(ablate.dvc_exp_show())["lead"]["rev"]
    lock = _run(tmp_path, "git", "show", f"{rev}:dvc.lock")
    (tmp_path / "dvc.lock").unlink()
    (tmp_path / "out.txt").unlink()
    (tmp_path / "code.py").write_text("new = 2\n")
    _run(tmp_path, *git, "commit", "-qam", "new code")

    ablate.bring_back("lead", rev)
    assert (tmp_path / "code.py").read_text() == "new = 2\n"  # dvc exp apply: "old = 1"
    assert (tmp_path / "dvc.lock").read_text() == lock
    assert (tmp_path / "out.txt").read_text() == "input\ninput\n"  # from DVC's cache
    with pytest.raises(ablate.AblateError, match="has no dvc.lock"):
        ablate.bring_back("old", _run(tmp_path, "git", "rev-parse", "HEAD~1").strip())


# ---- a real table ----------------------------------------------------------------------------
def _run(cwd, *args):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    env["DVC_NO_ANALYTICS"] = "1"  # a new `dvc init` would report to DVC's servers
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def project(tiny_repro, tmp_path_factory):
    """A copy of the shared tiny project after its `dvc repro` (tests/conftest.py): the lead
    row's params are its own, so the lead's `dvc exp run` finds every stage done."""
    dst = copy_project(tiny_repro[0], tmp_path_factory.mktemp("ablate"))
    yield dst
    subprocess.run(["dvc", "queue", "stop"], cwd=dst, capture_output=True, check=False)


def test_a_two_row_table_is_queued_reported_and_reused(project):
    params_before = (project / "params.yaml").read_text()
    # what the queued row changes, as `dvc status` sees it: the fused net, not the streams
    params = yaml.safe_load(params_before)
    params["fusion"]["method"] = "sum"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run(project, "dvc", "status")
    (project / "params.yaml").write_text(params_before)
    assert "train_fusion:" in status and "modified:" in status
    assert "train_rgb" not in status and "train_flow" not in status

    out = _run(project, sys.executable, "-m", "pipeline.ablate", "methods", "--data", "current",
               "--rows", "sum", "-j", "1")  # fmt: skip
    assert "dvc exp run -n methods-conv-" in out  # the lead, in the workspace
    assert "dvc exp run --queue --allow-missing -n methods-sum-" in out
    assert "-S fusion.method=sum" in out
    assert (project / "params.yaml").read_text() == params_before

    show = json.loads(_run(project, "dvc", "exp", "show", "--json"))
    exps = ablate.existing(show)
    conv = next(n for n in exps if n.startswith("methods-conv-"))
    summed = next(n for n in exps if n.startswith("methods-sum-"))
    assert exps[summed]["params"]["fusion"]["method"] == "sum"
    assert exps[conv]["params"]["fusion"]["method"] == "conv"
    # the streams and the flow ran once: the queued row ran the fused net, what reads it, and
    # nothing else (a fusion change leaves the streams cached)
    logs = _run(project, "dvc", "queue", "logs", summed)
    rerun = ["train_fusion", "evaluate_fusion", "report"]
    assert _ran(logs) == rerun, logs
    for stage in set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"]) - set(rerun):
        assert f"Stage '{stage}' didn't change" in logs, stage
    assert "| Two-stream fusion | sum | relu5 | avg2d |" in logs  # the report's table
    for dep in ("models/rgb.keras", "models/flow.keras", "data/shards"):
        assert exps[summed]["deps"][dep] == exps[conv]["deps"][dep], dep

    table = (project / "reports" / "ablation_methods.md").read_text()
    assert (project / "reports" / "ablation_methods.png").stat().st_size > 0
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line[:2] == "| "}
    assert set(lines) >= {"conv", "late", "sum"}
    for row, name, model in (("conv", conv, "fusion"), ("sum", summed, "fusion"),
                             ("late", conv, "late")):  # fmt: skip
        top1 = exps[name]["metrics"][model]["top1"]
        assert f"| {100 * top1:.1f}% |" in lines[row], (row, lines[row])
    assert "one pair for the whole table" in table

    again = _run(project, sys.executable, "-m", "pipeline.ablate", "methods", "--data", "current",
                 "--rows", "sum")  # fmt: skip
    assert f"reusing experiment {conv}" in again and f"reusing experiment {summed}" in again
    assert "dvc exp run" not in again and "queue start" not in again
    names = ablate.existing(json.loads(_run(project, "dvc", "exp", "show", "--json")))
    assert sorted(n for n in names if n.startswith("methods-")) == sorted([conv, summed])
