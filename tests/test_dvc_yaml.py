"""dvc.yaml must list, for every stage, each pipeline module its command imports."""

import ast
import re

import yaml

from .conftest import ROOT


def _imports(module: str) -> set[str]:
    """pipeline modules that ``pipeline/<module>.py`` imports, at any depth of the file."""
    tree = ast.parse((ROOT / "pipeline" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pipeline":
                found |= {a.name for a in node.names}
            elif node.module.startswith("pipeline."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline.")}
    return found


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += _imports(m)
    return seen


def test_every_stage_depends_on_the_modules_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = re.match(r"python -m pipeline\.(\w+)", stage["cmd"]).group(1)
        deps = {d for d in stage["deps"] if isinstance(d, str)}
        missing = {f"pipeline/{m}.py" for m in _closure(module)} - deps
        assert not missing, f"stage {name} runs code it does not depend on: {sorted(missing)}"
