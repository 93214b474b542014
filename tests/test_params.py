import dataclasses

import pytest

from pipeline.params import ParamsError, load_params, parse_params

from .conftest import ROOT


def test_repo_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.synthetic.colors == 4 and p.synthetic.motions == 3
    assert p.data.layout == "ucf101"
    assert isinstance(p.data.val_fraction, float)


def test_sections_are_frozen(raw_params):
    p = parse_params(raw_params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.data.seed = 3


def test_int_accepted_where_a_number_is_expected(raw_params):
    raw_params["data"]["val_fraction"] = 0
    assert parse_params(raw_params).data.val_fraction == 0.0


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("synthetic", "colors", 7, "synthetic.colors: got 7; allowed: an integer in [2, 6]"),
        ("synthetic", "colors", "four", "synthetic.colors: got 'four'; allowed: an integer"),
        ("synthetic", "frames", True, "synthetic.frames: got True; allowed: an integer"),
        ("synthetic", "size", 64.0, "synthetic.size: got 64.0; allowed: an integer"),
        ("data", "layout", "kinetics", "data.layout: got 'kinetics'; allowed: one of 'ucf101'"),
        (
            "data",
            "val_fraction",
            0.7,
            "data.val_fraction: got 0.7; allowed: a number in [0.0, 0.5]",
        ),
        ("data", "min_frames", 0, "data.min_frames: got 0; allowed: an integer >= 1"),
        ("data", "root", None, "data.root: got None; allowed: a string"),
        ("data", "root", "", "data.root: got ''; allowed: a string"),
        ("data", "split", 4, "data.split: got 4; allowed: an integer in [1, 3]"),
    ],
)
def test_bad_value_is_named_with_what_is_allowed(raw_params, section, key, value, expected):
    raw_params[section][key] = value
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    assert expected in str(err.value)


def test_unknown_and_missing_keys_and_sections(raw_params):
    raw_params["data"]["wokers"] = 2
    del raw_params["synthetic"]["seed"]
    raw_params["trian"] = {}
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    msg = str(err.value)
    assert "data.wokers: unknown key; allowed keys: layout, root" in msg
    assert "synthetic.seed: missing; allowed: an integer >= 0" in msg
    assert "trian: unknown section" in msg
    assert "3 problem(s)" in msg


def test_every_problem_is_reported_at_once(raw_params):
    raw_params["synthetic"]["colors"] = 1
    raw_params["synthetic"]["frames"] = -3
    raw_params["data"]["seed"] = "x"
    raw_params["data"]["max_rejected_fraction"] = 2
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    msg = str(err.value)
    for key in ("synthetic.colors", "synthetic.frames", "data.seed", "data.max_rejected_fraction"):
        assert key in msg
    assert "4 problem(s)" in msg


def test_missing_section_and_non_mapping(raw_params):
    del raw_params["data"]
    raw_params["synthetic"] = [1, 2]
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    assert "data: missing section" in str(err.value)
    assert "synthetic: expected a mapping" in str(err.value)


@pytest.mark.parametrize("section", [("train", "streams"), ("flow", "tvl1")])
def test_missing_nested_section_is_reported_not_a_crash(raw_params, section):
    """A params.yaml from before train.streams existed names the section (was a TypeError)."""
    outer, inner = section
    del raw_params[outer][inner]
    with pytest.raises(ParamsError, match=f"{outer}.{inner}: missing section"):
        parse_params(raw_params)


def test_cross_field_rule(raw_params):
    raw_params["synthetic"]["videos_per_class"] = 2
    raw_params["synthetic"]["test_fraction"] = 0.1
    with pytest.raises(
        ParamsError, match="synthetic.test_fraction: 0.1 of 2 videos per class gives 0"
    ):
        parse_params(raw_params)
    raw_params["synthetic"]["test_fraction"] = 0.5
    raw_params["train"].update(jit_compile=True, run_eagerly=True)
    with pytest.raises(ParamsError, match="both true: an eager step is not compiled"):
        parse_params(raw_params)
    raw_params["train"].update(jit_compile=False)
    assert parse_params(raw_params).train.run_eagerly


def test_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping of sections"):
        load_params(tmp_path / "params.yaml")


def test_flow_section(raw_params):
    p = parse_params(raw_params).flow
    assert p.tvl1.lambda_ == 0.15 and p.tvl1.inner_iterations == 30  # YAML key "lambda"
    raw_params["flow"]["size"] = [320, 240]
    assert parse_params(raw_params).flow.size == [320, 240]
    raw_params["flow"]["size"] = None
    assert parse_params(raw_params).flow.size is None


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("size", [320], "flow.size: got [320]; allowed: null (keep), N (shorter side), or [W, H]"),
        (
            "size",
            [320, "x"],
            "flow.size: got [320, 'x']; allowed: an integer or a list of integers",
        ),
        ("size", 8, "flow.size: got 8; allowed: an integer or a list of integers or null in [16"),
        ("engine", "cuda", "flow.engine: got 'cuda'; allowed: one of 'opencv'"),
    ],
)
def test_flow_bad_values(raw_params, key, value, expected):
    raw_params["flow"][key] = value
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    assert expected in str(err.value)


def test_nested_tvl1_section_is_checked(raw_params):
    raw_params["flow"]["tvl1"]["lamda"] = 0.2
    raw_params["flow"]["tvl1"]["median_filtering"] = 4
    del raw_params["flow"]["tvl1"]["warps"]
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    msg = str(err.value)
    assert "flow.tvl1.lamda: unknown key; allowed keys: tau, lambda, theta" in msg
    assert "flow.tvl1.warps: missing" in msg
    raw_params["flow"]["tvl1"].pop("lamda")
    raw_params["flow"]["tvl1"]["warps"] = 5
    with pytest.raises(ParamsError, match="median_filtering: got 4; allowed: an odd integer"):
        parse_params(raw_params)


def test_cross_field_rules_run_when_a_nested_section_also_fails(raw_params):
    raw_params["flow"]["size"] = [64]
    raw_params["flow"]["tvl1"]["median_filtering"] = 4
    with pytest.raises(ParamsError) as err:
        parse_params(raw_params)
    assert "flow.size: got [64]" in str(err.value)
    assert "flow.tvl1.median_filtering: got 4" in str(err.value)
