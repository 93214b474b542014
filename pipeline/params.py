"""Typed, validated view of ``params.yaml``.

Every stage reads its configuration through :func:`load_params`. The whole file is checked
before any work starts: unknown keys, missing keys, wrong types and out-of-range values are
collected and reported together in one :class:`ParamsError` that names each bad key, what it
got and what is allowed. The values themselves live only in ``params.yaml`` (no defaults are
repeated here), so that file stays the single place where a default is set.

Each section is a frozen dataclass. A field's allowed values are declared next to it with
:func:`_between` or :func:`_one_of`; cross-field rules live in the section's ``_check``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"

MOTIONS = ("up", "down", "shake", "grow", "shrink")
"""Motions of the synthetic dataset, in the order ``synthetic.motions`` takes them. A
horizontal mirror leaves each one unchanged, so flip augmentation never changes a label."""

MAX_COLORS = 6
"""Most object colours the synthetic dataset can draw at one grey level and still tell apart."""


class ParamsError(ValueError):
    """``params.yaml`` is invalid; the message lists every problem found."""


def _between(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"lo": lo, "hi": hi}


def _one_of(*choices: Any) -> dict[str, Any]:
    return {"choices": choices}


@dataclass(frozen=True)
class SyntheticParams:
    """``synthetic``: the embedded "which object moves" dataset."""

    seed: int = field(metadata=_between(0))
    colors: int = field(metadata=_between(2, MAX_COLORS))
    motions: int = field(metadata=_between(1, len(MOTIONS)))
    videos_per_class: int = field(metadata=_between(2, 10_000))
    frames: int = field(metadata=_between(2, 10_000))
    size: int = field(metadata=_between(32, 1024))
    test_fraction: float = field(metadata=_between(0.0, 0.9))
    out: str

    def _check(self) -> list[str]:
        n_test = round(self.videos_per_class * self.test_fraction)
        if n_test < 1 or n_test >= self.videos_per_class:
            return [
                f"synthetic.test_fraction: {self.test_fraction} of "
                f"{self.videos_per_class} videos per class gives {n_test} test videos; "
                "allowed: at least 1 test and 1 training video per class"
            ]
        return []


@dataclass(frozen=True)
class DataParams:
    """``data``: where the raw videos are, how they are split, what gets rejected."""

    layout: str = field(metadata=_one_of("ucf101", "hmdb51", "folder"))
    root: str
    lists: str
    split: int = field(metadata=_between(1, 3))
    seed: int = field(metadata=_between(0))
    val_fraction: float = field(metadata=_between(0.0, 0.5))
    test_fraction: float = field(metadata=_between(0.0, 0.9))
    min_frames: int = field(metadata=_between(1))
    max_rejected_fraction: float = field(metadata=_between(0.0, 1.0))
    workers: int = field(metadata=_between(0, 1024))
    probe_timeout_s: float = field(metadata=_between(1.0))

    def _check(self) -> list[str]:
        return []


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``: one attribute per section."""

    synthetic: SyntheticParams
    data: DataParams


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, "null" if tp is type(None) else str(tp)
    )


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return (ok, value) for ``value`` read from YAML against the annotation ``tp``."""
    args = typing.get_args(tp)
    if args:  # Optional / Union
        for arg in args:
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str) and value != "", value
    raise TypeError(f"unsupported annotation {tp!r}")  # a programming error, not a user one


def _allowed(f: dataclasses.Field, tp: Any) -> str:
    meta = f.metadata
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    text = _type_name(tp)
    if lo is not None and hi is not None:
        return f"{text} in [{lo}, {hi}]"
    if lo is not None:
        return f"{text} >= {lo}"
    return text


def _parse_section(cls: type, name: str, raw: Any, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a mapping of keys, got {raw!r}")
        return None
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in sorted(set(raw) - set(known)):
        errors.append(f"{name}.{key}: unknown key; allowed keys: {', '.join(known)}")
    values: dict[str, Any] = {}
    for key, f in known.items():
        tp, where = hints[key], f"{name}.{key}"
        if key not in raw:
            errors.append(f"{where}: missing; allowed: {_allowed(f, tp)}")
            continue
        ok, value = _coerce(raw[key], tp)
        meta = f.metadata
        if ok and "choices" in meta:
            ok = value in meta["choices"]
        if ok and value is not None and not isinstance(value, str | bool):
            lo, hi = meta.get("lo"), meta.get("hi")
            ok = (lo is None or value >= lo) and (hi is None or value <= hi)
        if not ok:
            errors.append(f"{where}: got {raw[key]!r}; allowed: {_allowed(f, tp)}")
        values[key] = value
    if len(values) != len(known) or any(e.startswith(f"{name}.") for e in errors):
        return None
    section = cls(**values)
    errors.extend(section._check())
    return section


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    """Validate a ``params.yaml`` mapping and return the typed sections.

    Raises:
        ParamsError: naming every bad, unknown or missing key at once.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {raw!r}")
    errors: list[str] = []
    sections = {f.name: f for f in dataclasses.fields(Params)}
    for key in sorted(set(raw) - set(sections)):
        errors.append(f"{key}: unknown section; allowed sections: {', '.join(sections)}")
    hints = typing.get_type_hints(Params)
    parsed = {}
    for name in sections:
        if name not in raw:
            errors.append(f"{name}: missing section")
            continue
        parsed[name] = _parse_section(hints[name], name, raw[name], errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ParamsError(f"{source} has {len(errors)} problem(s):\n{lines}")
    return Params(**parsed)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml`` (see :func:`parse_params`)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found; run from the project root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    return parse_params(raw, source=str(path))
