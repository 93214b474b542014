"""dvc.yaml tells the truth about the code: each stage depends on exactly the project modules
its command imports, stages import no other stage, and the files dvc.yaml names are the
contracts module's. (Which params keys a stage reads: tests/test_dvc_pipeline.py, on real runs.)
"""

import ast
import re

import yaml

from pipeline import contracts
from pipeline.params import RUN_ONLY

from .conftest import ROOT

TOOLS = {"predict", "bench", "weights", "export", "ablate"}
"""Command-line tools, not stages. ``bench`` measures stages, so it may import them; ``predict``
runs a trained model on a user's video with the shared modules only."""


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_of(stage: dict) -> str:
    return re.match(r"python -m pipeline\.(\w+)", stage["cmd"]).group(1)


def imports(module: str) -> set[str]:
    """Project modules ``pipeline/<module>.py`` imports anywhere in the file (lazy imports
    inside functions too): ``pipeline`` modules by name, and ``layers`` (the package)."""
    tree = ast.parse((ROOT / "pipeline" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            package = "pipeline" if node.level == 1 else node.module or ""
            name = node.module if node.level == 1 else package.partition(".")[2]
            top = package.split(".")[0]
            assert node.level <= 1, f"{module}: import from outside pipeline/ ({node.module})"
            if top == "layers":
                found.add("layers")
            elif top == "pipeline" and name:  # from pipeline.x import y, from .x import y
                found.add(name.split(".")[0])
            elif top == "pipeline":  # from pipeline import x, from . import x
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name != "pipeline", f"{module}: `import pipeline` hides what it uses"
                if alias.name.startswith("pipeline."):
                    found.add(alias.name.split(".")[1])
                elif alias.name.split(".")[0] == "layers":
                    found.add("layers")
    return found


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            if m != "layers":
                todo += imports(m)
    return seen


def code_deps(module: str) -> set[str]:
    """What a stage running ``module`` must depend on in dvc.yaml."""
    return {m if m == "layers" else f"pipeline/{m}.py" for m in closure(module)}


def test_every_stage_depends_on_exactly_the_code_it_runs():
    problems = []
    for name, stage in _stages().items():
        deps = {d for d in stage["deps"] if d == "layers" or d.startswith("pipeline/")}
        want = code_deps(_module_of(stage))
        if missing := want - deps:
            problems.append(f"{name} runs code it does not depend on: {sorted(missing)}")
        if extra := deps - want:
            problems.append(f"{name} depends on code it never imports: {sorted(extra)}")
    assert not problems, "\n".join(problems)


def test_code_outside_the_import_graph_cannot_change_a_stage():
    """What the closure leaves out must hold no code: the package's __init__ (imported by
    every stage) is a docstring only, and layers/ imports nothing from pipeline/."""
    init = ast.parse((ROOT / "pipeline/__init__.py").read_text())
    assert len(init.body) == 1 and isinstance(init.body[0].value, ast.Constant)
    for path in (ROOT / "layers").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) pipeline", text, re.M), path


def test_no_stage_imports_another_stage_and_no_shared_module_imports_a_stage():
    stages = {_module_of(s) for s in _stages().values()}
    modules = {p.stem for p in (ROOT / "pipeline").glob("*.py")} - {"__init__"}
    problems = []
    for module in sorted(modules - {"bench"}):
        bad = (imports(module) & stages) - {module}
        if bad:
            kind = "stage" if module in stages else "tool" if module in TOOLS else "shared module"
            problems.append(f"{kind} {module} imports the stage(s) {sorted(bad)}")
    assert not problems, "\n".join(problems)
    assert "contracts" in set.intersection(*(imports(m) for m in stages - {"synthesize"}))


def _paths(entries: list) -> set[str]:
    """File paths of a deps/outs/metrics/plots list (entries are strings or {path: opts})."""
    out = set()
    for entry in entries or []:
        path = entry if isinstance(entry, str) else next(iter(entry))
        if path != "layers" and not path.startswith(("pipeline/", "${")):
            out.add(path)
    return out


def test_the_files_dvc_yaml_names_are_the_contracts():
    named = set()
    for stage in _stages().values():
        for key in ("deps", "outs", "metrics", "plots"):
            named |= _paths(stage.get(key))
    c = contracts
    models = ("rgb", "flow", "fusion")
    evaluated = (*models, "late")
    want = {str(p) for p in (c.MANIFEST, c.CLASSES, c.REJECTED, c.VIDEOS_DIR, c.FLOW_FAILED)}
    want |= {c.SHARDS_DIR}
    want |= {str(c.model_path(m)) for m in models}
    want |= {str(c.LIVE_DIR / m / f) for m in models for f in ("metrics.json", "plots/metrics")}
    for m in evaluated:
        want |= {str(c.scores_path(m)), str(c.metrics_path(m)), str(c.per_class_path(m))}
        want |= {str(p) for p in c.confusion_paths(m)}
    want |= {str(c.REPORTS_DIR / "summary.md"), str(c.REPORTS_DIR / "summary.png")}
    assert named == want, (sorted(named - want), sorted(want - named))


def test_every_file_a_stage_reads_is_made_by_another_stage():
    stages = _stages()
    made = {path for s in stages.values() for k in ("outs", "metrics") for path in _paths(s.get(k))}
    for name, stage in stages.items():
        assert _paths(stage["deps"]) <= made, (name, sorted(_paths(stage["deps"]) - made))


def test_run_only_keys_are_real_and_never_declared():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    code = "".join(p.read_text() for p in (ROOT / "pipeline").glob("*.py"))
    for key in RUN_ONLY:
        section, name = key.split(".")
        assert name in params[section], key
        assert f".{name}" in code, f"{key} is read nowhere in pipeline/: a stale RUN_ONLY entry"
    for name, stage in _stages().items():
        declared = set(stage.get("params", []))
        assert not declared & set(RUN_ONLY), (name, declared & set(RUN_ONLY))
        for key in declared:  # every declared key exists in params.yaml
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, (name, key)
                node = node[part]
