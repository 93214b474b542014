import pytest

from pipeline import contracts, flow_compute, predict, scoring
from pipeline.model import build_fused, build_stream
from pipeline.params import parse_params


@pytest.fixture
def small_params(raw_params):
    raw_params["clip"].update(frames=1, flow_stack=2, crop=24)
    return raw_params


def test_mode_and_input_check(small_params):
    params = parse_params(small_params)
    assert predict.model_mode(build_stream("flow", params, classes=3)) == "flow"
    fused = build_fused(params, classes=3)
    assert predict.model_mode(fused) == "both"
    predict.check_inputs(fused, params)
    small_params["clip"]["crop"] = 32
    with pytest.raises(predict.PredictError, match=r"shape \(1, 24, 24, \d+\).*clip.crop"):
        predict.check_inputs(fused, parse_params(small_params))


def test_clear_errors_for_a_missing_video_or_model(tmp_path, small_params, make_video):
    params = parse_params(small_params)
    with pytest.raises(predict.PredictError, match="nope.avi: no such file"):
        predict.predict(tmp_path / "nope.avi", tmp_path / "m.keras", params)
    video = make_video(tmp_path / "v.avi", frames=4, size=32)
    with pytest.raises(predict.PredictError, match="no such model; train one first"):
        predict.predict(video, tmp_path / "m.keras", params)
    not_a_video = tmp_path / "notes.avi"
    not_a_video.write_text("hello")
    build_stream("rgb", params, classes=3).save(tmp_path / "m.keras")
    with pytest.raises(predict.PredictError, match="notes.avi: cannot be opened"):
        predict.predict(not_a_video, tmp_path / "m.keras", params)


def test_class_names_fall_back_when_the_list_does_not_match(tmp_path):
    names = tmp_path / "classes.txt"
    names.write_text("A\nB\n")
    assert predict.class_names(2, names) == ["A", "B"]
    assert predict.class_names(3, names) == ["class 0", "class 1", "class 2"]


def test_an_rgb_model_scores_the_video_without_computing_flow(
    tmp_path, small_params, make_video, monkeypatch
):
    """An RGB model's scores are those of the whole record the flow stage would write, but no
    TV-L1 runs for them; a model that reads flow still computes it."""
    monkeypatch.chdir(tmp_path)  # no data/classes.txt: the classes are "class <n>"
    params = parse_params(small_params)
    video = make_video(tmp_path / "v.avi", frames=6, size=32)
    rgb = build_stream("rgb", params, classes=3)
    rgb.save(tmp_path / "rgb.keras")
    record = contracts.record_path("whole", tmp_path)
    whole = flow_compute.flow_video(str(video), 2, params.flow)
    settings = flow_compute.record_settings(params.flow, "opencv")
    contracts.write_record(
        record, flow_compute.video_record("v", 0, whole, params.flow, settings, "test")
    )
    _, _, scores, _ = scoring.score_model(rgb, params, "rgb", "", files=[record])

    def no_tvl1(*args: object) -> None:
        raise AssertionError("TV-L1 ran for a model that never reads flow")

    monkeypatch.setattr(flow_compute, "create_tvl1", no_tvl1)
    ranked = predict.predict(video, tmp_path / "rgb.keras", params)
    assert [score for _, score in ranked] == sorted(scores[0].tolist(), reverse=True)
    assert [name for name, _ in ranked] == [
        f"class {i}" for i in sorted(range(3), key=lambda i: -scores[0, i])
    ]
    build_stream("flow", params, classes=3).save(tmp_path / "flow.keras")
    with pytest.raises(AssertionError, match="TV-L1 ran"):
        predict.predict(video, tmp_path / "flow.keras", params)
