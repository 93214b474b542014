"""Write the params reference page, ``docs/params.md``, from the code.

    python -m pipeline.params_reference           # (re)write docs/params.md
    python -m pipeline.params_reference --check   # exit 1 when the page is out of date

Every key of ``params.yaml`` gets one row: its type and allowed values or range (from the
section dataclasses of :mod:`pipeline.params`, the same metadata the validation uses), its
default (the value in ``params.yaml``, the only place a default is set), its meaning (the
comment next to the key in ``params.yaml``, which is what a user editing the file reads) and
the stages that read it (the ``params`` lists of ``dvc.yaml``; the keys of
:data:`pipeline.params.RUN_ONLY` steer a run and no stage declares them). A key without a
comment in ``params.yaml`` is an error, so a new key cannot be left undocumented.
``tests/test_docs.py`` fails when the checked-in page differs from what this writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from pipeline.params import PARAMS_FILE, RUN_ONLY, Params, _allowed

PAGE = Path("docs/params.md")
DVC_FILE = "dvc.yaml"


@dataclasses.dataclass(frozen=True)
class Key:
    """One leaf key of params.yaml."""

    key: str  # dotted, as dvc.yaml and the error messages write it
    allowed: str
    section_doc: str


def keys(cls: type = Params, prefix: str = "", doc: str = "") -> list[Key]:
    """Every leaf key under ``cls``, in the order the dataclasses declare them."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        name = f.metadata.get("key", f.name)
        where = f"{prefix}{name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += keys(tp, f"{where}.", (tp.__doc__ or "").strip())
        else:
            out.append(Key(where, _allowed(f, tp), doc))
    return out


def comments(text: str) -> dict[str, str]:
    """The comment of each dotted key in a params.yaml text: the ``#`` text on the key's line
    and on the comment-only lines right below it that are indented past the key."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, name) of the open mappings
    current: tuple[str, int] | None = None  # the key whose comment may continue
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if m:
            indent, name, rest = len(m[1]), m[2], m[3]
            while stack and stack[-1][0] >= indent:
                stack.pop()
            dotted = ".".join([n for _, n in stack] + [name])
            value, _, comment = rest.partition("#")
            if not value.strip():  # a section: later keys nest under it
                stack.append((indent, name))
            found[dotted] = comment.strip()
            current = (dotted, indent)
            continue
        c = re.match(r"^(\s*)#\s?(.*)$", line)
        if c and current and len(c[1]) > current[1]:
            found[current[0]] = f"{found[current[0]]} {c[2].strip()}".strip()
        else:
            current = None
    return found


def stages_reading(dvc: dict) -> dict[str, list[str]]:
    """``dvc.yaml``'s params lists: for each declared entry (a key or a whole section), the
    stages that declare it."""
    out: dict[str, list[str]] = {}
    for stage, spec in dvc["stages"].items():
        for entry in spec.get("params", []):
            out.setdefault(entry, []).append(stage)
    return out


def _value(v: Any) -> str:
    return (
        "`" + (yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...")).strip() + "`"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def render(params_text: str, dvc_text: str) -> str:
    """The page for these params.yaml and dvc.yaml texts."""
    raw = yaml.safe_load(params_text)
    notes = comments(params_text)
    declared = stages_reading(yaml.safe_load(dvc_text))
    lines = [
        "# Params reference",
        "",
        "<!-- written by `python -m pipeline.params_reference` from pipeline/params.py, "
        "params.yaml and dvc.yaml: edit those, not this page -->",
        "",
        "Every key of `params.yaml`: its type and allowed values (checked by "
        "`pipeline/params.py` before any stage works: a bad value stops the run with one "
        "message naming every bad key), its default (the value in `params.yaml`), what it "
        "means, and the stages that read it (`dvc.yaml`), which are the stages that "
        "`dvc repro` re-runs when you change it. Keys that only steer a run are read by no "
        "stage's outputs: changing them re-runs nothing. Rules that tie keys together (an "
        "even `clip.flow_stack`, the keras engine's TV-L1 settings, ...) are checked too, and "
        "their messages say what is allowed.",
        "",
    ]
    problems = []
    section = None
    for k in keys():
        top = k.key.rsplit(".", 1)[0]
        if top != section:
            section = top
            lines += [
                "",
                f"## `{section}`",
                "",
                k.section_doc.replace("``", "`"),
                "",
                "| key | type, allowed | default | meaning | read by |",
                "|---|---|---|---|---|",
            ]
        node = raw
        for part in k.key.split("."):
            node = node[part]
        meaning = notes.get(k.key, "")
        if not meaning:
            problems.append(f"{k.key}: no comment in {PARAMS_FILE} to say what it means")
        if k.key in RUN_ONLY:
            readers = f"none: steers the run only ({RUN_ONLY[k.key]})"
        else:
            parts = k.key.split(".")
            found = sorted(
                {s for i in range(1, len(parts) + 1) for s in declared.get(".".join(parts[:i]), [])}
            )
            readers = ", ".join(found) if found else "none"
        lines.append(
            f"| `{k.key}` | {_cell(k.allowed)} | {_cell(_value(node))} | {_cell(meaning)} "
            f"| {_cell(readers)} |"
        )
    if problems:
        raise SystemExit("params reference:\n" + "\n".join(f"  - {p}" for p in problems))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    page = render(
        Path(PARAMS_FILE).read_text(encoding="utf-8"), Path(DVC_FILE).read_text(encoding="utf-8")
    )
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != page:
            print(
                f"{PAGE} is out of date: run python -m pipeline.params_reference", file=sys.stderr
            )
            return 1
        print(f"{PAGE} is up to date")
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
