"""The README and the guides in docs/ hold to the code: the params reference is what
``pipeline.params_reference`` writes, the README stays a front door (at most 250 lines), every
link between them resolves, and the command lines they show name real modules, subcommands,
flags and params keys (run here as ``--help`` and as params validation, in seconds), so a
renamed flag or key breaks the build, not a user."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
import shlex

import pytest
from markdown.extensions.toc import slugify

from pipeline import params_reference
from pipeline.model import apply_overrides
from pipeline.params import parse_params

from .conftest import ROOT

PAGES = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"


def _text(path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_params_reference_is_what_the_code_writes():
    page = params_reference.render(_text(ROOT / "params.yaml"), _text(ROOT / "dvc.yaml"))
    assert _text(ROOT / params_reference.PAGE) == page, (
        "docs/params.md is out of date: run python -m pipeline.params_reference"
    )
    for key in params_reference.keys():  # noqa: SIM118 (a function, not a dict): every key has its row
        assert f"| `{key.key}` |" in page


def test_the_params_reference_refuses_a_key_without_a_meaning():
    text = _text(ROOT / "params.yaml").replace(
        "  frames: 24            # frames per video\n", "  frames: 24\n"
    )
    with pytest.raises(SystemExit, match=r"synthetic\.frames: no comment in params\.yaml"):
        params_reference.render(text, _text(ROOT / "dvc.yaml"))


def test_the_params_reference_names_the_stages_that_read_a_key():
    page = params_reference.render(_text(ROOT / "params.yaml"), _text(ROOT / "dvc.yaml"))
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[-2].strip()
        for line in page.splitlines()
        if line.startswith("| `")
    }
    assert rows["flow.tvl1.tau"] == "flow"  # declared as the whole flow.tvl1 section
    assert rows["fusion.method"].split(", ") == ["evaluate_fusion", "train_fusion"]
    assert rows["flow.workers"].startswith("none: steers the run only")


def test_the_readme_is_a_front_door():
    lines = _text(README).splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; guides belong in docs/"
    for command in ("make repro", "make test", "make docs"):
        assert command in _text(README)


def _anchors(path) -> set[str]:
    """The anchors MkDocs gives a page's headings: Python-Markdown's toc extension, whose
    default ``slugify`` MkDocs keeps (markdown/extensions/toc.py, ``slugify``), called here
    on the heading's text (inline code's backticks are dropped by it as by the rendering)."""
    text = re.sub(r"```.*?```", "", _text(path), flags=re.S)
    return {slugify(h.strip(), "-") for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_the_readmes_links_resolve():
    """MkDocs checks the guides' links (``make docs`` is strict); the README is outside its
    site, so its links to the guides are checked here, anchors included."""
    links = re.findall(r"\]\(([^)#\s]+\.md)(?:#([^)\s]+))?\)", _text(README))
    assert len(links) >= 15
    for target, anchor in links:
        path = ROOT / target
        assert path.is_file(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(path), f"README links to {target}#{anchor}: no such heading"


def _commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every ``python -m pipeline.X ...`` and ``dvc exp run ...`` line
    in the README and the guides (code blocks and code spans, continuation lines joined)."""
    found = []
    for path in [README, *PAGES]:
        text = _text(path).replace("\\\n", " ")
        spans = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        blocks = [line for span in spans for line in span.splitlines()]
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        inline = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", text)]
        for line in blocks + inline:
            line = line.split(" # ")[0].split("  #")[0]
            for m in re.finditer(r"(python -m pipeline\.\w+|dvc exp run)([^;&|]*)", line):
                found.append((path.name, m.group(0).strip()))
    return found


def _help(module: str, words: list[str]) -> str | None:
    """The ``--help`` text of ``python -m module words[0]`` (its subcommand) or of the module;
    None for a stage module whose ``main()`` takes no arguments."""
    mod = importlib.import_module(module)
    if not inspect.signature(mod.main).parameters:
        return None
    for argv in ([[words[0], "--help"]] if words else []) + [["--help"]]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                mod.main(argv)
            except SystemExit as exc:
                if exc.code == 0:
                    return out.getvalue()
    raise AssertionError(f"python -m {module} --help failed")


def test_the_documented_command_lines_name_real_modules_flags_and_keys(repo_params):
    commands = _commands()
    assert len(commands) >= 40
    problems, helps = [], {}
    for page, command in commands:
        try:
            args = shlex.split(command)
        except ValueError:
            args = command.split()
        overrides = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-S", "--set")]
        if args[:2] == ["python", "-m"]:
            module, rest = args[2], args[3:]
            words = [a for a in rest[:1] if re.fullmatch(r"[a-z][a-z0-9_-]*", a)]
            key = (module, tuple(words))
            if key not in helps:
                try:
                    helps[key] = _help(module, words)
                except (ImportError, AssertionError) as exc:
                    problems.append(f"{page}: {command}: {exc}")
                    continue
            text = helps[key]
            for flag in (
                a.split("=")[0] for a in rest if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", a)
            ):
                if text is not None and not re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", text):
                    problems.append(f"{page}: {command}: {flag} is not an option of {module}")
        overrides = [o for o in overrides if "<" not in o and "..." not in o]
        if overrides:
            try:
                parse_params(apply_overrides(repo_params, overrides))
            except Exception as exc:  # any failure is the doc's problem
                problems.append(f"{page}: {command}: {exc}")
    assert not problems, "\n".join(problems)
