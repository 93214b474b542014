import itertools

import keras
import numpy as np
import pytest

from pipeline import model as mdl
from pipeline.model import ModelError, build_fused, build_stream, count_params, init_from_streams
from pipeline.params import FUSION_METHODS, TEMPORAL, parse_params

CLASSES = 3


@pytest.fixture
def tiny(raw_params):
    """small backbone, T=2, L=2, 16x16 crops: every configuration builds in a blink."""
    raw_params["clip"].update(frames=2, flow_stack=2, crop=16)
    raw_params["model"].update(num_classes=CLASSES, dropout=0.5)
    return raw_params


def _params(raw, **fusion):
    raw = {**raw, "fusion": {**raw["fusion"], **fusion}}
    return parse_params(raw)


def _batch(params, b=2, seed=0):
    c = params.clip
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.integers(0, 256, (b, c.frames, c.crop, c.crop, 3), dtype=np.uint8),
        "flow": rng.integers(
            0, 256, (b, c.frames, c.crop, c.crop, 2 * c.flow_stack), dtype=np.uint8
        ),
    }


COMBOS = list(
    itertools.product(FUSION_METHODS, ("relu3", "relu5", "softmax"), TEMPORAL, (False, True))
)


def _valid(method, layer, temporal, also_late):
    if layer == "softmax":
        return method == "sum" and not also_late and temporal != "conv3d_pool3d"
    if temporal == "conv3d_pool3d":
        return method == "conv" and layer == "relu5"
    return not (method == "bilinear" and temporal != "avg2d")


@pytest.mark.parametrize(
    ("method", "layer", "temporal", "also_late"), [c for c in COMBOS if _valid(*c)]
)
def test_every_valid_combination_builds_and_runs(tiny, method, layer, temporal, also_late):
    params = _params(tiny, method=method, layer=layer, temporal=temporal, also_late=also_late)
    model = build_fused(params)
    out = model(_batch(params), training=False)
    p = keras.ops.convert_to_numpy(out["prediction"])
    assert p.shape == (2, CLASSES)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    expected = {"prediction"} | ({"fused", "motion"} if also_late else set())
    expected |= {"appearance", "motion"} if layer == "softmax" else set()
    assert set(out) == expected
    if layer != "softmax":
        fusion = model.get_layer("fusion")
        assert isinstance(
            fusion, {"conv": mdl.ConvFusion, "bilinear": mdl.BilinearFusion, **mdl.FUSIONS}[method]
        )


@pytest.mark.parametrize(
    ("method", "layer", "temporal", "also_late"), [c for c in COMBOS if not _valid(*c)]
)
def test_invalid_combinations_say_why(tiny, method, layer, temporal, also_late):
    params = _params(tiny, method=method, layer=layer, temporal=temporal, also_late=also_late)
    with pytest.raises(ModelError) as err:
        build_fused(params)
    msg = str(err.value)
    if layer == "softmax" and method != "sum":
        assert "late fusion" in msg and "has no fusion method" in msg
    elif layer == "softmax" and also_late:
        assert "both towers are already whole" in msg
    elif temporal == "conv3d_pool3d":
        assert "needs method conv and layer relu5" in msg
    else:
        assert "bilinear fusion sums over all locations" in msg


def test_pool3d_collapses_time_and_conv3d_fuses_over_it(tiny):
    params = _params(
        tiny,
        method="conv",
        layer="relu5",
        temporal="conv3d_pool3d",
        also_late=True,
        conv_init="sum_gaussian",
    )
    model = build_fused(params)
    assert tuple(model.get_layer("fusion").kernel.shape) == (3, 3, 3, 256, 128)
    assert model.get_layer("rgb_pool5").output.shape == (None, 1, 1, 1, 128)
    assert model.get_layer("flow_pool5").output.shape == (None, 1, 1, 1, 128)
    avg = build_fused(_params(tiny, method="conv", layer="relu5"))
    assert avg.get_layer("rgb_pool5").output.shape == (None, 2, 1, 1, 128)  # per frame


def test_conv_with_sum_init_equals_sum_at_step_zero(tiny):
    base = parse_params(tiny)
    rgb, flow = build_stream("rgb", base), build_stream("flow", base)
    batch = _batch(base, b=3)
    outs = []
    for method in ("sum", "conv"):
        fused = build_fused(_params(tiny, method=method, layer="relu3"))
        init_from_streams(fused, rgb, flow)
        outs.append(keras.ops.convert_to_numpy(fused(batch, training=False)["prediction"]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-7)


def test_weights_copied_from_streams_and_frozen_below_the_fusion_point(tiny):
    base = parse_params(tiny)
    rgb, flow = build_stream("rgb", base), build_stream("flow", base)
    for layer in rgb.layers + flow.layers:  # make every weight distinguishable
        layer.set_weights(
            [
                np.random.default_rng(len(layer.name)).normal(size=w.shape)
                for w in layer.get_weights()
            ]
        )
    fused = build_fused(_params(tiny, method="conv", layer="relu3", also_late=True))
    unfilled = init_from_streams(fused, rgb, flow)
    assert unfilled == ["fusion: not in the stream models (new in the fused net)"]
    sources = {layer.name: layer for layer in rgb.layers + flow.layers}
    for layer in fused.layers:
        if layer.weights and layer.name != "fusion":
            for w, v in zip(layer.get_weights(), sources[layer.name].get_weights(), strict=True):
                np.testing.assert_array_equal(w, v)
    below = {"rgb_norm", "flow_norm"} | {
        f"{t}_{n}"
        for t in ("rgb", "flow")
        for n in (
            "conv1",
            "conv1_bn",
            "conv1_relu",
            "pool1",
            "conv2",
            "conv2_bn",
            "conv2_relu",
            "pool2",
            "conv3",
            "conv3_bn",
            "conv3_relu",
        )
    }
    for layer in fused.layers:
        if layer.name in ("rgb", "flow"):
            continue
        assert layer.trainable == (layer.name not in below), layer.name
    trainable = build_fused(_params(tiny, method="conv", layer="relu3", train_below=True))
    assert all(layer.trainable for layer in trainable.layers)


def test_concat_reports_layers_whose_input_grew(tiny):
    base = parse_params(tiny)
    fused = build_fused(_params(tiny, method="concat", layer="relu5"))
    unfilled = init_from_streams(fused, build_stream("rgb", base), build_stream("flow", base))
    grown = "rgb_fc6: shapes [(256, 128), (128,)] differ from the stream's [(128, 128), (128,)]"
    assert unfilled == [grown]


@pytest.mark.parametrize("also_late", [False, True])
def test_one_training_step(tiny, also_late):
    # seeded: unseeded, about 1 initialisation in 40 leaves the fused fc8 without a gradient
    # in its first step on 4 clips (its fc7 inputs all zero), and the test failed at random
    # (seen in CI; 1 of seeds 0-39 with also_late, measured)
    keras.utils.set_random_seed(0)
    params = _params(tiny, method="conv", layer="relu5", temporal="pool3d", also_late=also_late)
    model = build_fused(params)
    if also_late:
        loss = {
            "fused": "sparse_categorical_crossentropy",
            "motion": "sparse_categorical_crossentropy",
        }
    else:
        loss = {"prediction": "sparse_categorical_crossentropy"}
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    frozen = keras.ops.convert_to_numpy(model.get_layer("rgb_conv1").weights[0])
    head = keras.ops.convert_to_numpy(model.get_layer("rgb_fc8").weights[0])
    labels = np.array([0, 2, 1, 0])
    targets = {k: labels for k in loss}
    history = model.fit(_batch(params, b=4), targets, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("rgb_conv1").weights[0]), frozen
    )
    assert not np.array_equal(
        keras.ops.convert_to_numpy(model.get_layer("rgb_fc8").weights[0]), head
    )


def test_save_load_round_trip_without_custom_objects(tiny, tmp_path):
    params = _params(
        tiny,
        method="conv",
        layer="relu5",
        temporal="conv3d_pool3d",
        also_late=True,
        conv_init="sum_gaussian",
        conv_init_weights=[0.25, 0.75],
    )
    model = build_fused(params)
    model.save(tmp_path / "fused.keras")
    loaded = keras.saving.load_model(tmp_path / "fused.keras")
    batch = _batch(params)
    a, b = model(batch, training=False), loaded(batch, training=False)
    for key in a:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a[key]), keras.ops.convert_to_numpy(b[key])
        )


def test_vgg_m_2048_tap_sizes_match_caffe(raw_params):
    raw_params["clip"].update(frames=1, flow_stack=10, crop=224)
    raw_params["model"].update(backbone="vgg_m_2048", num_classes=101)
    stream = build_stream("rgb", parse_params(raw_params))
    sizes = {
        n: stream.get_layer(f"rgb_{n}").output.shape[2:]
        for n in ("conv1", "conv2", "conv3", "conv5", "pool5")
    }
    assert sizes == {
        "conv1": (109, 109, 96),
        "conv2": (26, 26, 256),
        "conv3": (13, 13, 512),
        "conv5": (13, 13, 512),
        "pool5": (6, 6, 512),
    }
    assert stream.get_layer("rgb_pool2").output.shape[2:] == (13, 13, 256)  # rounded up, not 12
    assert count_params(stream) == 90_627_813  # the paper's count for one spatial net, 101 classes


def test_vgg_m_2048_parameter_counts_for_table_1(raw_params):
    raw_params["clip"].update(frames=1, flow_stack=10, crop=224)
    raw_params["model"].update(backbone="vgg_m_2048", num_classes=101)
    # By hand: weights + biases of each layer (VGG-M-2048, 224² input, L = 10, 101 classes).
    conv1_rgb, conv1_flow = 7 * 7 * 3 * 96 + 96, 7 * 7 * 20 * 96 + 96
    conv2, conv3 = 5 * 5 * 96 * 256 + 256, 3 * 3 * 256 * 512 + 512
    conv45 = 2 * (3 * 3 * 512 * 512 + 512)
    fc6, fc7, fc8 = 6 * 6 * 512 * 4096 + 4096, 4096 * 2048 + 2048, 2048 * 101 + 101
    convs_rgb, convs_flow = conv1_rgb + conv2 + conv3 + conv45, conv1_flow + conv2 + conv3 + conv45
    rgb_tower, flow_tower = convs_rgb + fc6 + fc7 + fc8, convs_flow + fc6 + fc7 + fc8
    expected = {
        ("sum", "softmax"): rgb_tower + flow_tower,  # late fusion: two whole towers
        ("max", "relu5"): rgb_tower + convs_flow,
        ("concat", "relu5"): rgb_tower - fc6 + (6 * 6 * 1024 * 4096 + 4096) + convs_flow,
        ("bilinear", "relu5"): convs_rgb + convs_flow + 512 * 512 * 101 + 101,
        ("sum", "relu5"): rgb_tower + convs_flow,
        ("conv", "relu5"): rgb_tower + convs_flow + 2 * 512 * 512 + 512,
    }
    assert rgb_tower == 90_627_813
    for (method, layer), n in expected.items():
        model = build_fused(_params(raw_params, method=method, layer=layer))
        assert count_params(model) == n, (method, layer)
        del model


def test_vgg16_taps_cross_modality_init_and_mixed_towers(raw_params):
    raw_params["clip"].update(frames=1, flow_stack=10, crop=64)
    raw_params["model"].update(backbone="vgg16", num_classes=5)
    stream = build_stream("flow", parse_params(raw_params))
    assert stream.get_layer("flow_block5_conv3").output.shape[2:] == (4, 4, 512)
    assert stream.get_layer("flow_block1_conv1").weights[0].shape == (3, 3, 20, 64)
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 64))
    flow_kernel = mdl.cross_modality_kernel(kernel, 20)
    assert flow_kernel.shape == (3, 3, 20, 64)
    np.testing.assert_allclose(flow_kernel[:, :, 7], kernel.mean(axis=2))
    # the paper's final model: VGG-16 appearance, VGG-M motion: 4x4 and 3x3 at ReLU5, padded
    raw_params["model"]["flow_backbone"] = "vgg_m_2048"
    mixed = build_fused(_params(raw_params, method="conv", layer="relu5", also_late=True))
    assert mixed.get_layer("flow_fusion_pad").output.shape[2:] == (4, 4, 512)
    assert mixed(_batch(mixed_params := _params(raw_params, method="conv")))[
        "prediction"
    ].shape == (2, 5)
    assert mixed_params.model.flow_backbone == "vgg_m_2048"
    with pytest.raises(ModelError, match="96 and 64 channels at relu1|64 and 96 channels at relu1"):
        build_fused(_params(raw_params, method="sum", layer="relu1"))
    raw_params["model"].update(backbone="small", flow_backbone=None)
    raw_params["train"]["weights"] = "imagenet"
    with pytest.raises(ModelError, match="ImageNet weights exist for vgg16 and vgg_m_2048"):
        build_stream("rgb", parse_params(raw_params))


def test_cli_prints_summary_and_params_line(tmp_path, raw_params, monkeypatch, capsys):
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    mdl.main(["-S", "model.num_classes=7", "-S", "fusion.method=max"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("params: ") and int(out[-1].split()[1]) > 0
    assert any("fusion (MaxFusion)" in line for line in out)
    with pytest.raises(
        SystemExit, match="model.num_classes is null and data/classes.txt does not exist"
    ):
        mdl.main([])
    with pytest.raises(SystemExit, match="late fusion"):
        mdl.main(["-S", "model.num_classes=7", "-S", "fusion.layer=softmax"])
    with pytest.raises(SystemExit, match="-S takes key=value"):
        mdl.main(["-S", "fusion.method"])


def test_overrides_name_the_bad_path():
    with pytest.raises(ModelError, match="'method' is a value, not a section"):
        mdl.apply_overrides({"fusion": {"method": "conv"}}, ["fusion.method.x=1"])
    assert mdl.apply_overrides({"fusion": {"method": "conv"}}, ["fusion.method=max"]) == {
        "fusion": {"method": "max"}
    }
