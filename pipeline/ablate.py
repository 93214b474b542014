"""The paper's ablations as one command: Tables 1, 2 and 4 regenerated as DVC experiments.

``python -m pipeline.ablate TABLE [--data synthetic|current] [-j N] [--seeds N]`` for ``TABLE``:

- ``methods`` (Table 1): sum, max, concat, conv and bilinear fusion at ReLU5, and late fusion;
- ``layers`` (Table 2): conv fusion at ReLU2 .. ReLU5, and at ReLU5 + FC8 (``also_late``);
- ``temporal`` (Table 4): 2D pooling, 3D pooling, 3D conv + 3D pooling over T > 1 snippets.

Each row is one named DVC experiment. The table's lead row runs first, in the workspace
(``dvc exp run -n NAME -S ...``): it trains the streams and computes the flow. The other rows
differ from it in ``fusion.*`` only, so they are queued (``dvc exp run --queue -n NAME -S ...
--allow-missing``) and run by ``dvc queue start -j N``, each re-running the fused net and its
evaluation and nothing above them (``dvc.lock`` must be tracked by git for that: a queued run
starts from the last commit plus the tracked changes, so this tool stages it). An experiment
whose params equal a row's is reused, not re-run. The streams are checked to be one pair for
the whole table: every row's ``models/rgb.keras`` and ``models/flow.keras`` hash the same.

``--data synthetic`` runs on the bundled data (for ``temporal``: the order-only motions
``updown`` and ``downup``, docs/data.md, "A temporal axis"); ``--data current`` on the data
and settings of ``params.yaml`` as they are (the presets of docs/data.md). ``-S key=value``
applies to every row. The result: ``reports/ablation_<table>.md`` and ``.png``, our rows
beside the paper's (UCF101 split 1, :data:`PAPER`), with #params, top-1, mean class accuracy
and, with ``--seeds N > 1``, the spread over seeds.

Run: ``python -m pipeline.ablate methods --data synthetic -j 2``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline import contracts
from pipeline.contracts import REPORTS_DIR
from pipeline.params import PARAMS_FILE, PipelineError, parse_params
from pipeline.tables import bar_chart, dvc_exp_show, markdown_table, model_metrics, revisions

# ---- the tables ------------------------------------------------------------------------------
_RELU5 = {"fusion.layer": "relu5", "fusion.temporal": "avg2d", "fusion.also_late": False}
TABLES: dict[str, dict[str, dict]] = {
    "methods": {
        "conv": {"fusion.method": "conv", **_RELU5},
        "late": {"fusion.method": "conv", **_RELU5},  # metrics/late.json of the same run
        "sum": {"fusion.method": "sum", **_RELU5},
        "max": {"fusion.method": "max", **_RELU5},
        "concat": {"fusion.method": "concat", **_RELU5},
        "bilinear": {"fusion.method": "bilinear", **_RELU5},
    },
    "layers": {
        **{
            layer: {"fusion.method": "conv", **_RELU5, "fusion.layer": layer}
            for layer in ("relu5", "relu4", "relu3", "relu2")
        },
        "relu5+fc8": {"fusion.method": "conv", **_RELU5, "fusion.also_late": True},
    },
    "temporal": {
        temporal: {
            "fusion.method": "conv",
            "fusion.layer": "relu5",
            "fusion.also_late": True,
            "fusion.temporal": temporal,
        }
        for temporal in ("conv3d_pool3d", "pool3d", "avg2d")
    },
}
"""Each row's fusion settings; the first row of a table is its lead (run in the workspace)."""

LATE_ROW = "late"
"""The methods row read from the streams' averaged scores (``metrics/late.json``)."""

SYNTHETIC: dict[str, dict] = {
    "methods": {},
    "layers": {},
    "temporal": {
        "synthetic.motions": ["updown", "downup"],
        "synthetic.frames": 32,
        "clip.frames": 3,
        "clip.stride": 8,
        "clip.flow_stack": 2,
    },
}
"""What ``--data synthetic`` sets on top of pointing ``data`` at the bundled set."""

PAPER: dict[str, dict[str, dict]] = {
    "methods": {
        "late": {"top1": 0.8594, "parameters": "181.42M"},
        "max": {"top1": 0.8270, "parameters": "97.31M"},
        "concat": {"top1": 0.8353, "parameters": "172.81M"},
        "bilinear": {"top1": 0.8505, "parameters": "6.61M + SVM"},
        "sum": {"top1": 0.8520, "parameters": "97.31M"},
        "conv": {"top1": 0.8596, "parameters": "97.58M"},
    },
    "layers": {
        "relu2": {"top1": 0.8225, "parameters": "91.90M"},
        "relu3": {"top1": 0.8343, "parameters": "93.08M"},
        "relu4": {"top1": 0.8255, "parameters": "95.48M"},
        "relu5": {"top1": 0.8596, "parameters": "97.57M"},
        "relu5+fc8": {"top1": 0.8604, "parameters": "181.68M"},
    },
    "temporal": {  # two-stream VGG-16 fused at ReLU5 + FC8 (Table 4); HMDB51 in brackets
        "avg2d": {"top1": 0.8935, "parameters": "- (HMDB51 56.93%)"},
        "pool3d": {"top1": 0.8964, "parameters": "- (HMDB51 57.58%)"},
        "conv3d_pool3d": {"top1": 0.9040, "parameters": "- (HMDB51 58.63%)"},
    },
}
"""The paper's numbers for the same rows (UCF101 split 1; Tables 1, 2 and 4 of the paper, as
``../shared/PAPER.md`` lists them), kept here since ``../shared`` is not part of the project."""

METRICS = ("rgb", "flow", "late", "fusion")
POLL_S = (2.0, 10.0)
"""How long ablate waits between two asks whether the queued rows finished (`dvc queue
status`): a quarter of the time waited so far, within these bounds (seconds). A short table
is reported soon after its last row (at most a quarter late), a long one asked every 10 s."""


PARAMS_BACKUP = contracts.LOCKS_DIR / "ablate-params.yaml"
"""The user's params.yaml while a row's params are in the workspace (``dvc exp run -S``
writes them there): a run killed then leaves it, and the next run puts it back first."""


class AblateError(PipelineError):
    """The ablation cannot go on; the message says why and what to do."""


# ---- params ----------------------------------------------------------------------------------
def set_key(params: dict, key: str, value: object) -> None:
    """Set a dotted ``key`` (``fusion.method``) in nested ``params``; unknown sections error."""
    *path, last = key.split(".")
    node = params
    for part in path:
        if not isinstance(node.get(part), dict):
            raise AblateError(f"-S {key}: params.yaml has no section {part!r}")
        node = node[part]
    if last not in node:
        raise AblateError(f"-S {key}: params.yaml has no key {key} (see params.yaml)")
    node[last] = value


def get_key(params: dict, key: str) -> object:
    node: object = params
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def format_value(value: object) -> str:
    """A value as ``dvc exp run -S key=VALUE`` takes it (YAML flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` (value read as YAML, as DVC does) from the command line."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise AblateError(f"-S {text!r}: expected key=value, e.g. -S fusion.epochs=30")
    return key.strip(), yaml.safe_load(value)


def table_overrides(table: str, data: str, params: dict) -> dict[str, object]:
    """What every row of ``table`` sets before its own fusion settings."""
    out: dict[str, object] = {}
    if data == "synthetic":
        out = {"data.layout": "ucf101", "data.root": params["synthetic"]["out"]}
        out["data.lists"] = params["synthetic"]["out"]
        out.update(SYNTHETIC[table])
    return out


def row_params(base: dict, overrides: dict[str, object]) -> dict:
    params = copy.deepcopy(base)
    for key, value in overrides.items():
        set_key(params, key, value)
    return params


def experiment_name(table: str, row: str, params: dict) -> str:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:6]
    return f"{table}-{row.replace('+', '_')}-{digest}"


def plan(
    table: str, data: str, base: dict, extra: dict[str, object], seeds: int, rows: list[str]
) -> list[dict]:
    """One entry per (row, seed) to run: row, seed, params, overrides (vs ``base``), name.

    The late row of ``methods`` is read from the conv row's run and has no entry of its own.
    """
    shared = {**table_overrides(table, data, base), **extra}
    first_seed = get_key(row_params(base, shared), "train.seed")
    entries = []
    for i in range(seeds):
        for row in rows:
            if row == LATE_ROW and table == "methods":
                continue
            overrides = {**shared, **TABLES[table][row]}
            if seeds > 1 or "train.seed" in extra:
                overrides["train.seed"] = int(first_seed) + i
            params = row_params(base, overrides)
            try:
                parse_params(params, source=f"{table} row {row}")
            except PipelineError as exc:
                raise AblateError(f"row {row}: these params are not valid:\n{exc}") from exc
            changed = {k: v for k, v in overrides.items() if get_key(base, k) != v}
            entries.append(
                {
                    "row": row,
                    "seed": int(first_seed) + i,
                    "params": params,
                    "overrides": changed,
                    "name": experiment_name(table, row, params),
                }
            )
    return entries


def check_table(table: str, params: dict, data: str) -> None:
    if table == "temporal" and data == "current" and params["clip"]["frames"] < 2:
        raise AblateError(
            "temporal fusion needs T > 1 snippets per clip, and params.yaml has clip.frames: "
            f"{params['clip']['frames']}: run with -S clip.frames=3 (and a clip.stride that fits "
            "your videos), or --data synthetic"
        )


# ---- experiments -----------------------------------------------------------------------------
def _dvc(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    cmd = ["dvc", *args]
    if not quiet:
        print("ablate: $ " + " ".join(cmd), flush=True)
    try:
        out = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    except FileNotFoundError as exc:
        raise AblateError("dvc not found: run inside the project's .venv (make install)") from exc
    if check and out.returncode != 0:
        detail = f":\n{out.stdout}{out.stderr}" if quiet else " (its output is above)"
        raise AblateError(f"{' '.join(cmd)} failed{detail}")
    return out


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise AblateError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def existing(exp_show: list) -> dict[str, dict]:
    """Experiments by name: {"rev": commit, "params": params.yaml, "metrics": {model: json},
    "deps": hashes}."""
    found = {}
    for name, data in revisions(exp_show):
        if name == "workspace" or not data.get("params"):
            continue
        found[name] = {
            "rev": str(data.get("rev") or ""),
            "params": ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {},
            "metrics": model_metrics(data, METRICS),
            "deps": {k: (v or {}).get("hash") for k, v in (data.get("deps") or {}).items()},
        }
    return found


def complete(exp: dict) -> bool:
    return all("top1" in exp["metrics"].get(k, {}) for k in METRICS)


def match(entry: dict, experiments: dict[str, dict]) -> str | None:
    """The name of a finished experiment whose params are the entry's, if any."""
    for name, exp in experiments.items():
        if exp["params"] == entry["params"] and complete(exp):
            return name
    return None


def queue_status() -> dict[str, str]:
    """``dvc queue status``: status (Queued, Running, Success, Failed) by experiment name."""
    out = _dvc("queue", "status", check=False, quiet=True).stdout
    status = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in {"Queued", "Running", "Success", "Failed"}:
            status[parts[1]] = parts[-1]
    return status


def _s_args(overrides: dict[str, object]) -> list[str]:
    return [a for k, v in overrides.items() for a in ("-S", f"{k}={format_value(v)}")]


def stage_lock() -> None:
    """Track ``dvc.lock`` in git (staged): queued runs start from git, and without it they
    would re-run the whole pipeline, or fail on the flow records DVC does not cache."""
    if not Path("dvc.lock").exists():
        return
    if _git("status", "--porcelain", "--", "dvc.lock").strip():
        _git("add", "dvc.lock")
        print("ablate: staged dvc.lock in git (queued experiments start from git's files)")


def bring_back(name: str, rev: str) -> None:
    """A reused lead's ``dvc.lock`` and cached outputs into the workspace, and nothing else.

    Not ``dvc exp apply``: that also checks out the experiment's copy of every file git
    tracks, so a lead made at an older commit would put its code over the user's newer code.
    Where the code a stage depends on changed since, the queued rows re-run that stage.
    """
    print(f"ablate: dvc.lock and outputs of {name} ({rev[:7]}) into the workspace")
    try:
        lock = _git("show", f"{rev}:dvc.lock")
    except AblateError as exc:
        raise AblateError(
            f"experiment {name} ({rev[:7]}) has no dvc.lock in git: remove it "
            f"(dvc exp remove {name}) and run the table again"
        ) from exc
    contracts.write_text("dvc.lock", lock)
    _dvc("checkout", "--allow-missing")


def run_table(table: str, entries: list[dict], jobs: int, original: str) -> dict[str, str]:
    """Run what is not there yet; returns the experiment name of every entry.

    Per seed, the lead row runs in the workspace (or, reused, its lock and outputs are brought
    back: ``bring_back``), so that ``dvc.lock`` holds its streams and flow; the other rows are
    queued from there and re-run only the stages below the streams.
    """
    names: dict[str, str] = {}
    experiments = existing(dvc_exp_show())
    todo = []
    for entry in entries:
        if found := match(entry, experiments):
            print(f"ablate: {entry['row']} (seed {entry['seed']}): reusing experiment {found}")
            names[entry["name"]] = found
        else:
            todo.append(entry)
    lead_row = next(iter(TABLES[table]))
    status, queued = queue_status(), []
    contracts.write_text(PARAMS_BACKUP, original)  # the next run restores it, if this one dies
    try:
        for seed in sorted({e["seed"] for e in todo}):
            lead = next(e for e in entries if e["seed"] == seed and e["row"] == lead_row)
            if lead in todo:
                print(f"ablate: {lead['row']} (seed {seed}) runs in the workspace: streams, flow")
                stage_lock()
                _dvc("exp", "run", "-n", lead["name"], *_s_args(lead["overrides"]))
                names[lead["name"]] = lead["name"]
            else:
                reused = names[lead["name"]]
                bring_back(reused, experiments[reused]["rev"])
            contracts.write_text(PARAMS_FILE, original)
            stage_lock()
            for entry in todo:
                if entry["seed"] != seed or entry is lead:
                    continue
                names[entry["name"]] = entry["name"]
                queued.append(entry["name"])
                if status.get(entry["name"]) in {"Queued", "Running"}:
                    print(f"ablate: {entry['name']} is queued already")
                    continue
                if status.get(entry["name"]) == "Failed":
                    _dvc("queue", "remove", entry["name"], check=False)
                _dvc(
                    "exp", "run", "--queue", "--allow-missing", "-n", entry["name"],
                    *_s_args(entry["overrides"]),
                )  # fmt: skip
    finally:
        contracts.write_text(PARAMS_FILE, original)
        PARAMS_BACKUP.unlink(missing_ok=True)
    if queued:
        _dvc("queue", "start", "-j", str(jobs))
        wait(set(queued))
    return names


def wait(names: set[str]) -> None:
    """Poll ``dvc queue status`` until every queued experiment finished (:data:`POLL_S`);
    failures raise."""
    start, last = time.monotonic(), ""
    while True:
        status = queue_status()
        done = {n for n in names if status.get(n) in {"Success", "Failed"}}
        line = f"{len(done)}/{len(names)} queued rows done"
        if line != last:
            print(f"ablate: {line} ({time.monotonic() - start:.0f} s)")
            last = line
        if len(done) == len(names):
            break
        if not any(status.get(n) in {"Queued", "Running"} for n in names - done):
            missing = sorted(names - done)
            raise AblateError(f"these experiments are neither queued nor done: {missing}")
        time.sleep(min(max((time.monotonic() - start) / 4, POLL_S[0]), POLL_S[1]))
    failed = sorted(n for n in names if status.get(n) == "Failed")
    if failed:
        tails = []
        for n in failed:
            out = _dvc("queue", "logs", n, check=False, quiet=True)
            tails.append(
                f"--- {n} (dvc queue logs {n}):\n" + "\n".join(out.stdout.splitlines()[-15:])
            )
        raise AblateError(
            f"{len(failed)} row(s) failed; the finished rows are kept and a new call reuses "
            "them:\n" + "\n".join(tails)
        )


# ---- the table -------------------------------------------------------------------------------
def _fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{int(n):,}"


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f"±{100 * statistics.stdev(values):.1f}"


def assemble(table: str, entries: list[dict], names: dict[str, str], exps: dict) -> list[dict]:
    """One row per table row (rows in the table's order), averaged over seeds."""
    by_row: dict[str, dict[str, dict]] = {}  # row -> {experiment name: experiment}
    for entry in entries:
        name = names.get(entry["name"], "")
        exp = exps.get(name)
        if exp is None or not complete(exp):
            raise AblateError(f"experiment {entry['name']} has no metrics: run the table again")
        by_row.setdefault(entry["row"], {})[name] = exp
        if table == "methods" and entry["row"] == next(iter(TABLES[table])):
            by_row.setdefault(LATE_ROW, {})[name] = exp
    rows = []
    for row in TABLES[table]:
        if row not in by_row:
            continue
        runs = list(by_row[row].values())
        model = "late" if (table == "methods" and row == LATE_ROW) else "fusion"
        top1 = [r["metrics"][model]["top1"] for r in runs]
        mca = [r["metrics"][model]["mean_class_accuracy"] for r in runs]
        if model == "late":
            n = sum(
                runs[0]["metrics"][s].get("params", {}).get("parameters", 0)
                for s in ("rgb", "flow")
            )
        else:
            n = runs[0]["metrics"]["fusion"].get("params", {}).get("parameters", 0)
        paper = PAPER[table].get(row, {})
        rows.append(
            {
                "row": row,
                "experiments": ", ".join(sorted(by_row[row])),
                "parameters": _fmt_params(n),
                "top1": statistics.mean(top1),
                "spread": _spread(top1),
                "mean_class_accuracy": statistics.mean(mca),
                "seeds": len(runs),
                "paper_top1": paper.get("top1", "-"),
                "paper_parameters": paper.get("parameters", "-"),
                "rgb": statistics.mean(r["metrics"]["rgb"]["top1"] for r in runs),
                "flow": statistics.mean(r["metrics"]["flow"]["top1"] for r in runs),
            }
        )
    return rows


def streams_once(entries: list[dict], names: dict[str, str], exps: dict) -> list[str]:
    """Problems, if the rows of one seed did not share one pair of streams and one flow."""
    problems = []
    for seed in sorted({e["seed"] for e in entries}):
        for dep in ("models/rgb.keras", "models/flow.keras", "data/shards"):
            hashes = {
                names[e["name"]]: exps[names[e["name"]]]["deps"].get(dep)
                for e in entries
                if e["seed"] == seed
            }
            if len(set(hashes.values())) > 1:
                problems.append(f"seed {seed}: the rows read different {dep}: {hashes}")
    return problems


COLUMNS = {
    "row": "row",
    "parameters": "#params",
    "top1": "top-1",
    "spread": "± (seeds)",
    "mean_class_accuracy": "mean class acc.",
    "paper_top1": "paper top-1",
    "paper_parameters": "paper #params",
    "experiments": "experiment(s)",
}
TITLES = {
    "methods": "Fusion methods at ReLU5 (the paper's Table 1)",
    "layers": "Conv fusion at each layer (the paper's Table 2)",
    "temporal": "Temporal fusion over T snippets (the paper's Table 4)",
}


def write_report(
    table: str, rows: list[dict], problems: list[str], wall_s: float, note: str, out_dir: Path
) -> str:
    streams = rows[0]
    text = "\n".join(
        [
            f"# {TITLES[table]}",
            "",
            f"{note}. Video-level accuracy on the test split; the paper's numbers are UCF101 "
            "split 1 (VGG-M-2048 towers in Tables 1 and 2, VGG-16 in Table 4), ours are the "
            "data and towers of these experiments. The streams alone: RGB top-1 "
            f"{100 * streams['rgb']:.1f}%, flow {100 * streams['flow']:.1f}%.",
            "",
            markdown_table(rows, COLUMNS),
            "",
            "Streams and flow: "
            + (
                "one pair for the whole table (every row's hashes equal)."
                if not problems
                else "NOT shared: " + "; ".join(problems)
            ),
            f"Wall time of this call: {wall_s / 60:.1f} min.",
            "",
        ]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    contracts.write_text(out_dir / f"ablation_{table}.md", text)
    paper = [r["paper_top1"] if isinstance(r["paper_top1"], float) else 0.0 for r in rows]
    bar_chart(
        [r["row"] for r in rows],
        {"ours top-1": [r["top1"] for r in rows], "paper top-1 (UCF101)": paper},
        TITLES[table],
        out_dir / f"ablation_{table}.png",
        {},
    )
    return text


def ablate(
    table: str,
    data: str = "synthetic",
    jobs: int = 1,
    seeds: int = 1,
    extra: dict[str, object] | None = None,
    rows: list[str] | None = None,
    out_dir: Path = REPORTS_DIR,
) -> str:
    """Run (or reuse) every row of ``table`` and write its report; returns the Markdown."""
    start = time.monotonic()
    if not Path(".git").exists() or not Path("dvc.yaml").exists():
        raise AblateError("run from the project's root (a git repository with dvc.yaml)")
    if PARAMS_BACKUP.exists():  # a run killed while a row's params were in the workspace
        contracts.write_text(PARAMS_FILE, PARAMS_BACKUP.read_text(encoding="utf-8"))
        print(f"ablate: a killed run left an experiment's {PARAMS_FILE}: yours is back")
    original = Path(PARAMS_FILE).read_text(encoding="utf-8")
    base = yaml.safe_load(original)
    rows = rows or list(TABLES[table])
    if unknown := [r for r in rows if r not in TABLES[table]]:
        raise AblateError(f"--rows {unknown}: {table} has the rows {list(TABLES[table])}")
    if next(iter(TABLES[table])) not in rows:
        rows.insert(0, next(iter(TABLES[table])))  # the lead: it makes the streams and flow
    extra = dict(extra or {})
    for key, value in extra.items():
        set_key(copy.deepcopy(base), key, value)
    check_table(table, row_params(base, {**table_overrides(table, data, base), **extra}), data)
    entries = plan(table, data, base, extra, seeds, rows)
    for entry in entries:
        print(
            f"ablate: row {entry['row']} seed {entry['seed']}: {entry['name']}",
            " ".join(_s_args(entry["overrides"])),
        )
    names = run_table(table, entries, jobs, original)
    exps = existing(dvc_exp_show())
    table_rows = assemble(table, entries, names, exps)
    problems = streams_once(entries, names, exps)
    note = (
        "On the bundled synthetic data (`--data synthetic`)"
        if data == "synthetic"
        else "On the data of params.yaml (`--data current`)"
    )
    return write_report(table, table_rows, problems, time.monotonic() - start, note, out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The paper's ablation tables as DVC experiments.")
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--data", choices=("synthetic", "current"), default="synthetic")
    parser.add_argument(
        "-j", "--jobs", type=int, default=1, help="queue workers (dvc queue start -j)"
    )
    parser.add_argument("--seeds", type=int, default=1, help="train.seed, train.seed+1, ...")
    parser.add_argument("--rows", help="a comma-separated subset of the table's rows")
    parser.add_argument(
        "-S", dest="set", action="append", default=[], help="key=value for every row"
    )
    args = parser.parse_args(argv)
    try:
        if args.jobs < 1 or args.seeds < 1:
            raise AblateError("-j and --seeds must be at least 1")
        extra = dict(parse_override(s) for s in args.set)
        rows = args.rows.split(",") if args.rows else None
        with contracts.stage_lock("ablate"), contracts.disk_full_guard(REPORTS_DIR):
            text = ablate(args.table, args.data, args.jobs, args.seeds, extra, rows)
    except PipelineError as exc:
        sys.exit(f"ablate: {exc}")
    print(text, end="")
    print(f"ablate: wrote {REPORTS_DIR}/ablation_{args.table}.md and .png")
    print(
        "ablate: params.yaml is yours again; the workspace's outputs are those of the last row "
        "run in it (dvc exp apply NAME brings back any row)"
    )


if __name__ == "__main__":
    main()
