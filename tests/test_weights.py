"""ImageNet initialisation, offline: MatConvNet's VGG-M-2048 files (written here with
scipy.io.savemat in its simplenn layouts, random weights, 96×96 input) imported and checked
against a NumPy forward pass written from MatConvNet's definitions; VGG-16 from a Keras
Applications weights file; cross-modality init; the Table 4 line of docs/data.md."""

from __future__ import annotations

import copy
import json
import re
import shlex

import keras
import numpy as np
import pytest
import scipy.io

from pipeline import contracts, weights
from pipeline.model import (
    ModelError,
    build_fused,
    build_stream,
    init_from_streams,
    pretrained_source,
    rgb_normalisation,
)
from pipeline.params import ParamsError, parse_params

from .conftest import ROOT

SIZE, CLASSES = 96, 10  # pool5 is 2×2 at 96²: fc6's flattening order is tested
MEAN = (121.5, 113.25, 99.75)


# ---- MatConvNet's model, written as MatConvNet lays it out --------------------------------

VGG_M_PROTOTXT_LRN = {"local_size": 5, "alpha": 0.0005, "beta": 0.75, "k": 2.0}
"""norm1 and norm2 of VGG_CNN_M_2048's Caffe prototxt (Chatfield et al. 2014; e.g.
rockkingjy/OpenTracker ``eco/model/imagenet-vgg-m-2048.prototxt``)."""


def caffe_lrn_param(local_size, alpha, beta, k):
    """What MatConvNet's importer stores for a Caffe LRN layer: vlfeat/matconvnet
    ``utils/layers.py``, ``CaffeLRN.__init__``: ``self.param = [local_size, kappa, alpha /
    local_size, beta]`` (MatConvNet's ``vl_nnnormalize`` does not divide α by N)."""
    return [local_size, k, alpha / local_size, beta]


def _vgg_m_layers(seed: int = 0) -> list[dict]:
    """VGG-M-2048 as utils/import-caffe.py leaves it (HEAD): convs with pads, pools with
    [0 1 0 1] (Caffe's round-up), LRN as ``CaffeLRN`` writes the prototxt's, fc layers as
    convolutions."""
    rng = np.random.default_rng(seed)

    def conv(name, k, cin, cout, stride, pad):
        std = np.sqrt(2.0 / (k * k * cin))
        f = rng.normal(0, std, (k, k, cin, cout)).astype("float32")
        b = rng.normal(0, 0.1, (cout,)).astype("float32")
        return {"name": name, "type": "conv", "f": f, "b": b, "stride": stride, "pad": pad}

    def relu(n):
        return {"name": f"relu{n}", "type": "relu"}

    def pool(name):
        return {"name": name, "type": "pool", "method": "max", "pool": [3, 3], "stride": 2,
                "pad": [0, 1, 0, 1]}  # fmt: skip

    def norm(name):
        return {"name": name, "type": "lrn", "param": caffe_lrn_param(**VGG_M_PROTOTXT_LRN)}

    return [
        conv("conv1", 7, 3, 96, 2, 0), relu(1), norm("norm1"), pool("pool1"),
        conv("conv2", 5, 96, 256, 2, 1), relu(2), norm("norm2"), pool("pool2"),
        conv("conv3", 3, 256, 512, 1, 1), relu(3),
        conv("conv4", 3, 512, 512, 1, 1), relu(4),
        conv("conv5", 3, 512, 512, 1, 1), relu(5), pool("pool5"),
        conv("fc6", 2, 512, 4096, 1, 0), relu(6),
        conv("fc7", 1, 4096, 2048, 1, 0), relu(7),
        conv("fc8", 1, 2048, CLASSES, 1, 0),
        {"name": "prob", "type": "softmax"},
    ]  # fmt: skip


def _cell(items) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def mat_content(layers, layout="meta", average=MEAN) -> dict:
    """A simplenn model's variables: ``meta`` (newer: weights = {filters, biases}, biases N×1,
    type 'lrn', meta.normalization) or ``old`` (filters/biases fields, biases 1×N, type
    'normalize', top-level normalization and classes, dropout layers as in training files)."""
    mat_layers = []
    for layer in layers:
        d = {k: v for k, v in layer.items() if k not in ("f", "b")}
        if layer["type"] == "conv":
            if layout == "meta":
                d["weights"] = _cell([layer["f"], layer["b"].reshape(-1, 1)])
            else:
                d["filters"], d["biases"] = layer["f"], layer["b"].reshape(1, -1)
        if layout == "old" and layer["type"] == "lrn":
            d["type"] = "normalize"
        mat_layers.append(d)
        if layout == "old" and layer["name"] in ("relu6", "relu7"):
            mat_layers.append({"name": f"dropout{layer['name'][-1]}", "type": "dropout",
                               "rate": 0.5})  # fmt: skip
    average = np.asarray(average, "float32")
    normalization = {
        "imageSize": np.array([SIZE, SIZE, 3], "float64"),
        "averageImage": average if average.ndim == 3 else average.reshape(1, 1, 3),
        "interpolation": "bilinear",
        "keepAspect": True,
    }
    classes = {
        "name": _cell([f"n{i:08d}" for i in range(CLASSES)]),
        "description": _cell([f"thing {i}" for i in range(CLASSES)]),
    }
    if layout == "meta":
        return {"layers": _cell(mat_layers), "meta": {"normalization": normalization,
                                                       "classes": classes}}  # fmt: skip
    return {"layers": _cell(mat_layers), "normalization": normalization, "classes": classes}


def write_mat(path, layers, layout="meta", average=MEAN) -> None:
    scipy.io.savemat(path, mat_content(layers, layout, average), oned_as="column")


def write_mat73(path, content: dict) -> None:
    """What MATLAB's ``save -v7.3`` writes: HDF5 after a 512-byte header; arrays transposed
    (MATLAB is column-major), attribute MATLAB_class on each; chars as uint16; structs as
    groups; cells as arrays of object references into the group ``#refs#``; struct arrays as
    groups with a dataset of references per field, shaped as the MATLAB dims reversed, with
    no attributes (tbeu/matio ``src/mat73.c`` l. 2642-2739 writes them so, l. 1252-1297 reads
    them; hdf5storage ``Marshallers.py`` l. 1208-1227 reads them the same way)."""
    import itertools

    import h5py

    names = itertools.count()
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")

        def put(parent, name, value):
            if isinstance(value, np.ndarray) and value.dtype.names:  # a struct array
                group = parent.create_group(name)
                group.attrs["MATLAB_class"] = np.bytes_("struct")
                for field in value.dtype.names:  # one reference per element, no MATLAB_class
                    items = []
                    for item in value[field].ravel(order="F"):
                        key = f"r{next(names)}"
                        put(refs, key, item)
                        items.append(refs[key].ref)
                    data = np.array(items, dtype=h5py.ref_dtype).reshape(value.shape[::-1])
                    group.create_dataset(field, data=data)
                return
            if isinstance(value, dict):
                group = parent.create_group(name)
                group.attrs["MATLAB_class"] = np.bytes_("struct")
                for key, item in value.items():
                    put(group, key, item)
                return
            if isinstance(value, np.ndarray) and value.dtype == object:
                items = []
                for item in value.ravel(order="F"):
                    key = f"r{next(names)}"
                    put(refs, key, item)
                    items.append(refs[key].ref)
                data = np.array(items, dtype=h5py.ref_dtype).reshape(value.shape[::-1])
                kind = "cell"
            elif isinstance(value, str):
                data, kind = np.array([ord(c) for c in value], "uint16").reshape(-1, 1), "char"
            elif isinstance(value, bool):
                data, kind = np.array([[value]], "uint8"), "logical"
            else:
                array = np.asarray(value)
                array = array.reshape(1, -1) if array.ndim < 2 else array
                data = array.astype("float64" if array.dtype.kind in "iu" else array.dtype).T
                kind = "single" if data.dtype == np.float32 else "double"
            dataset = parent.create_dataset(name, data=data)
            dataset.attrs["MATLAB_class"] = np.bytes_(kind)

        for key, value in content.items():
            put(f, key, value)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, written by tests/test_weights.py".ljust(128))


# ---- MatConvNet's forward pass, from its documented definitions (NumPy, float64) -----------


def _pad(x, pad, value):
    t, b, left, r = (int(p) for p in pad)
    return np.pad(x, ((t, b), (left, r), (0, 0)), constant_values=value)


def mcn_conv(x, f, b, stride, pad):
    """vl_nnconv: y(i,j,o) = b(o) + Σ f(i',j',c,o) x(s·i + i', s·j + j', c), zero padding
    [top bottom left right], no filter flip (a correlation)."""
    xp = _pad(x, [pad] * 4 if np.isscalar(pad) else pad, 0.0)
    kh, kw = f.shape[:2]
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::stride, ::stride]
    return np.einsum("hwcij,ijco->hwo", win, f.astype("float64")) + b


def mcn_pool(x, size, stride, pad):
    """vl_nnpool max: windows clipped to the image (padding never wins the max), output
    floor((H + pt + pb - k) / s) + 1."""
    xp = _pad(x, pad, -np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, tuple(size), axis=(0, 1))[::stride, ::stride]
    return win.max(axis=(-2, -1))


def mcn_lrn(x, param):
    """vl_nnnormalize: y = x (κ + α Σ_{q ∈ G(k)} x_q²)^-β, G(k) = [k - ⌊(N-1)/2⌋, k + ⌈(N-1)/2⌉]
    clipped to the channels; α not divided by N."""
    n, kappa, alpha, beta = param
    d = x.shape[-1]
    out = np.empty_like(x)
    for k in range(d):
        lo, hi = max(0, k - int(np.floor((n - 1) / 2))), min(d - 1, k + int(np.ceil((n - 1) / 2)))
        s = (x[..., lo : hi + 1] ** 2).sum(-1)
        out[..., k] = x[..., k] * (kappa + alpha * s) ** -beta
    return out


def matconvnet_forward(layers, image, average, upto=None):
    """vl_simplenn in test mode on one image (H, W, 3; RGB 0–255): every layer's output."""
    x = image.astype("float64") - np.asarray(average, "float64")
    outs = {}
    for layer in layers:
        t = layer["type"]
        if t == "conv":
            x = mcn_conv(x, layer["f"], layer["b"], layer["stride"], layer["pad"])
        elif t == "relu":
            x = np.maximum(x, 0)
        elif t == "lrn":
            x = mcn_lrn(x, layer["param"])
        elif t == "pool":
            x = mcn_pool(x, layer["pool"], layer["stride"], layer["pad"])
        elif t == "softmax":
            continue
        outs[layer["name"]] = x
        if layer["name"] == upto:
            break
    return outs


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, "float64") - b).max() / np.abs(b).max())


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg_m():
    return _vgg_m_layers()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (SIZE, SIZE, 3)).astype("uint8")


@pytest.fixture(scope="module")
def reference(vgg_m, image):
    return matconvnet_forward(vgg_m, image, MEAN)


@pytest.fixture(scope="module")
def imported(tmp_path_factory, vgg_m):
    """The newer layout, imported: (path of the .h5, printed lines)."""
    root = tmp_path_factory.mktemp("imported")
    write_mat(root / "imagenet-vgg-m-2048.mat", vgg_m, "meta")
    out = root / "vgg_m_2048.h5"
    return out, weights.import_matconvnet(root / "imagenet-vgg-m-2048.mat", out)


def _stream_params(raw, backbone="vgg_m_2048", crop=SIZE, flow_stack=2, weights_=None, **model):
    raw = copy.deepcopy(raw)
    raw["clip"].update(frames=1, flow_stack=flow_stack, crop=crop)
    raw["model"].update(backbone=backbone, num_classes=5, **model)
    raw["train"]["weights"] = str(weights_) if weights_ is not None else "none"
    return parse_params(raw)


# ---- VGG-M-2048 from MatConvNet --------------------------------------------------------------


@pytest.mark.parametrize("layout", ["meta", "old"])
def test_imported_vgg_m_equals_matconvnet_forward(layout, tmp_path, vgg_m, image, reference):
    mat = tmp_path / "net.mat"
    # the old layout's average image is a whole image (constant per channel here, so MatConvNet's
    # full-image subtraction is exactly the per-channel one)
    average = MEAN if layout == "meta" else np.broadcast_to(MEAN, (SIZE, SIZE, 3))
    write_mat(mat, vgg_m, layout, average)
    out = tmp_path / "vgg_m_2048.h5"
    lines = weights.import_matconvnet(mat, out)
    text = "\n".join(lines)
    assert (
        "converted 8 layers with weights: conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8" in text
    )
    assert ("meta.normalization" if layout == "meta" else "older layout") in text
    assert f"input {SIZE}×{SIZE} RGB, mean (121.50, 113.25, 99.75)" in text
    assert f"wrote {out}" in text
    _, meta = contracts.read_pretrained(out)
    assert meta["classes"][3] == "n00000003" and meta["descriptions"][3] == "thing 3"
    assert meta["source_sha256"] == weights.digests(mat)[0]
    assert "not the MD5 MatConvNet lists" in lines[0]
    logits = weights.network(out)[0].predict(image[None].astype("float32"), verbose=0)[0]
    assert _rel(logits, reference["fc8"].ravel()) < 1e-4


def test_vgg_m_lrn_is_the_real_networks(vgg_m, image, reference):
    """The backbone's norm1 is py-MDNet's ``x / (2 + 1e-4·Σ x²)^0.75`` (hyeonseobnam/py-MDNet
    @a605a62 ``modules/model.py`` l. 27-43, ``LRN``), a port independent of MatConvNet's
    importer, and α matters here: the old misreading (α 2e-5 per element) is far from the
    reference."""
    from layers import LocalResponseNormalization
    from pipeline.model import imagenet_network

    net = imagenet_network("vgg_m_2048", (SIZE, SIZE), CLASSES, MEAN)
    layer = net.get_layer("rgb_norm1")
    assert isinstance(layer, LocalResponseNormalization)
    assert (layer.depth_radius, layer.bias, layer.beta) == (2, 2.0, 0.75)
    assert layer.alpha == pytest.approx(1e-4, rel=1e-9)
    x = reference["relu1"]
    padded = np.pad(x**2, ((0, 0), (0, 0), (2, 2)))
    window = sum(padded[..., i : i + x.shape[-1]] for i in range(5))
    mdnet = x / (2 + 1e-4 * window) ** 0.75
    np.testing.assert_allclose(reference["norm1"], mdnet, rtol=1e-10)
    got = keras.ops.convert_to_numpy(layer(x[None].astype("float32")))[0]
    assert _rel(got, mdnet) < 1e-5
    misread = [dict(d, param=[5, 2, 2e-5, 0.75]) if d["type"] == "lrn" else d for d in vgg_m]
    assert _rel(matconvnet_forward(misread, image, MEAN)["fc8"], reference["fc8"]) > 0.05


def test_v73_file_imports_the_same_weights(tmp_path, vgg_m, imported):
    write_mat73(tmp_path / "net73.mat", mat_content(vgg_m, "meta"))
    lines = weights.import_matconvnet(tmp_path / "net73.mat", tmp_path / "w73.h5")
    assert "converted 8 layers" in lines[1]
    got, meta = contracts.read_pretrained(tmp_path / "w73.h5")
    want, want_meta = contracts.read_pretrained(imported[0])
    assert {k: v for k, v in meta.items() if not k.startswith("source")} == {
        k: v for k, v in want_meta.items() if not k.startswith("source")
    }
    for name in want:
        for a, b in zip(got[name], want[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_stream_loads_the_import_and_takes_its_mean(imported, raw_params, image, reference):
    path, _ = imported
    rgb = build_stream("rgb", _stream_params(raw_params, weights_=path))
    assert rgb_normalisation(rgb) == (MEAN, 1.0)  # the file's mean, not a setting
    assert any("fc8: left at its initialisation" in line for line in rgb.init_report)
    fc7 = keras.Model(rgb.input, rgb.get_layer("rgb_fc7").output)
    out = fc7.predict(image[None, None], verbose=0)[0, 0]
    assert _rel(out, reference["relu7"].ravel()) < 1e-4
    relu5 = keras.Model(rgb.input, rgb.get_layer("rgb_conv5").output)
    assert _rel(relu5.predict(image[None, None], verbose=0)[0, 0], reference["relu5"]) < 1e-4


def test_cross_modality_init_on_vgg_m(imported, raw_params, vgg_m):
    path, _ = imported
    flow = build_stream("flow", _stream_params(raw_params, weights_=path, flow_stack=3 * 2))
    kernel = keras.ops.convert_to_numpy(flow.get_layer("flow_conv1").weights[0])
    assert kernel.shape == (7, 7, 12, 96)
    rgb_mean = vgg_m[0]["f"].mean(axis=2)
    for c in range(12):
        np.testing.assert_allclose(kernel[:, :, c], rgb_mean, rtol=1e-6)
    by_name = {layer["name"]: layer for layer in vgg_m}
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(flow.get_layer("flow_conv3").weights[0]), by_name["conv3"]["f"]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(flow.get_layer("flow_fc6").weights[0]),
        by_name["fc6"]["f"].reshape(-1, 4096),
    )
    assert any("cross-modality" in line for line in flow.init_report)
    assert "flow_norm2" not in [layer.name for layer in flow.layers]  # the temporal net's VGG-M


def test_fused_net_keeps_the_streams_normalisation(imported, raw_params):
    path, _ = imported
    params = _stream_params(raw_params, weights_=path)
    rgb, flow = build_stream("rgb", params), build_stream("flow", params)
    with pytest.raises(ModelError, match="normalises RGB with"):
        init_from_streams(build_fused(params), rgb, flow)  # built with the default VGG mean
    fused = build_fused(params, rgb_norm=rgb_normalisation(rgb))
    init_from_streams(fused, rgb, flow)
    assert rgb_normalisation(fused) == (MEAN, 1.0)


def test_average_image_is_reduced_to_its_mean_and_the_spread_reported(tmp_path, vgg_m, image):
    rng = np.random.default_rng(2)
    average = np.asarray(MEAN) + rng.uniform(-6, 6, (SIZE, SIZE, 3))
    write_mat(tmp_path / "net.mat", vgg_m, "meta", average)
    lines = weights.import_matconvnet(tmp_path / "net.mat", tmp_path / "w.h5")
    mean = average.mean(axis=(0, 1))
    _, meta = contracts.read_pretrained(tmp_path / "w.h5")
    np.testing.assert_allclose(meta["mean"], mean, rtol=1e-6)
    spread = np.abs(average - mean).max()
    assert any(f"at most {spread:.1f} levels from it" in line for line in lines)


def _refused(tmp_path, layers, match, **kw):
    mat, out = tmp_path / "bad.mat", tmp_path / "bad.h5"
    write_mat(mat, layers, **kw)
    with pytest.raises(weights.WeightsError, match=match):
        weights.import_matconvnet(mat, out)
    assert not out.exists()


def test_a_file_that_is_not_vgg_m_is_refused_with_the_difference(tmp_path, vgg_m):
    no_norm2 = [layer for layer in vgg_m if layer["name"] != "norm2"]
    _refused(tmp_path, no_norm2, r"layer 7 is pool2 \(pool\) in the file, norm2 \(lrn\)")
    thin = copy.deepcopy(vgg_m)
    thin[8]["f"] = thin[8]["f"][..., :256]
    thin[8]["b"] = thin[8]["b"][:256]
    _refused(
        tmp_path, thin, r"conv3: filters 3×3×256×256 in the file; vgg_m_2048 needs 3×3×256×512"
    )
    caffe_alpha = copy.deepcopy(vgg_m)
    caffe_alpha[2]["param"] = [5, 2, 5e-4, 0.75]  # Caffe's α, not divided by local_size
    _refused(tmp_path, caffe_alpha, r"norm1: LRN \[N κ α β\] = \[5.0, 2.0, 0.0005, 0.75\]")
    twice_divided = copy.deepcopy(vgg_m)
    twice_divided[6]["param"] = [5, 2, 2e-5, 0.75]  # α / N read as Caffe's and divided again
    _refused(
        tmp_path,
        twice_divided,
        r"norm2: .* = \[5.0, 2.0, 2e-05, 0.75\] .* has \[5.0, 2.0, 0.0001, 0.75\]",
    )
    shifted = copy.deepcopy(vgg_m)
    shifted[3]["pad"] = [1, 0, 1, 0]  # windows from the padding's corner: not Caffe's
    _refused(tmp_path, shifted, r"pool1: pad \[1.0, 0.0, 1.0, 0.0\] pads the top or left")
    dilated = copy.deepcopy(vgg_m)
    dilated[8]["dilate"] = 2
    _refused(tmp_path, dilated, r"conv3: dilate \[2.0, 2.0\]")
    fc_padded = copy.deepcopy(vgg_m)
    fc_padded[17]["pad"] = 1
    _refused(tmp_path, fc_padded, r"fc7: stride \[1.0, 1.0\] pad \[1.0, 1.0, 1.0, 1.0\]")
    softmax_inside = [*vgg_m[:9], {"name": "prob3", "type": "softmax"}, *vgg_m[9:]]
    _refused(tmp_path, softmax_inside, r"layer 10 is prob3 \(softmax\) in the file")
    strided = copy.deepcopy(vgg_m)
    strided[4]["stride"] = 1
    _refused(tmp_path, strided, r"conv2: stride \[1.0, 1.0\] in the file, \[2, 2\]")


def test_other_files_are_refused(tmp_path):
    scipy.io.savemat(tmp_path / "dag.mat", {"vars": _cell([{"name": "x"}]), "params": 1.0})
    with pytest.raises(weights.WeightsError, match="DagNN"):
        weights.import_matconvnet(tmp_path / "dag.mat", tmp_path / "o.h5")
    (tmp_path / "text.mat").write_text("not a mat file")
    with pytest.raises(weights.WeightsError, match="not a MATLAB .mat file"):
        weights.import_matconvnet(tmp_path / "text.mat", tmp_path / "o.h5")


def test_cli_import_and_classify(tmp_path, vgg_m, image, reference, capsys, monkeypatch):
    import cv2

    monkeypatch.chdir(tmp_path)
    write_mat(tmp_path / "imagenet-vgg-m-2048.mat", vgg_m)
    weights.main(["import", "imagenet-vgg-m-2048.mat"])
    out = capsys.readouterr().out
    assert "train.weights: imagenet loads it from models/imagenet/vgg_m_2048.h5" in out
    assert (tmp_path / "models/imagenet/vgg_m_2048.h5").is_file()
    cv2.imwrite(str(tmp_path / "photo.png"), image[..., ::-1])  # lossless; BGR on disk
    weights.main(["classify", "models/imagenet/vgg_m_2048.h5", "photo.png"])
    best = int(np.argmax(reference["fc8"]))
    assert capsys.readouterr().out.startswith(f"photo.png: thing {best} ")
    with pytest.raises(SystemExit, match="weights: .*no simplenn 'layers'"):
        scipy.io.savemat(tmp_path / "empty.mat", {"x": 1.0})
        weights.main(["import", "empty.mat"])


# ---- train.weights ---------------------------------------------------------------------------


def test_train_weights_values(raw_params, imported, tmp_path, monkeypatch):
    raw = copy.deepcopy(raw_params)
    raw["train"]["weights"] = "weights.bin"
    with pytest.raises(
        ParamsError, match="train.weights: got 'weights.bin'; allowed: none, imagenet"
    ):
        parse_params(raw)
    monkeypatch.chdir(tmp_path)  # no models/imagenet here
    with pytest.raises(ModelError, match="python -m pipeline.weights import imagenet-vgg-m-2048"):
        pretrained_source("rgb", _stream_params(raw_params, weights_="imagenet"))
    with pytest.raises(ModelError, match="ImageNet weights exist for vgg16 and vgg_m_2048"):
        pretrained_source("rgb", _stream_params(raw_params, "small", weights_="imagenet"))
    with pytest.raises(ModelError, match="missing.h5 is not a file"):
        pretrained_source("rgb", _stream_params(raw_params, weights_="missing.h5"))
    path, _ = imported
    with pytest.raises(ModelError, match="holds vgg_m_2048 weights .* the rgb tower is vgg16"):
        pretrained_source("rgb", _stream_params(raw_params, "vgg16", weights_=path))
    with pytest.raises(ModelError, match=r"trained on 96×96 crops; set clip.crop"):
        build_stream("rgb", _stream_params(raw_params, crop=112, weights_=path))


def _preset(name: str) -> list[str]:
    text = (ROOT / "docs/data.md").read_text()
    command = re.search(rf"```bash\n# preset: {name}\n(.*?)```", text, re.S).group(1)
    args = shlex.split(command[command.index("dvc exp run") :].replace("\\\n", " "))
    return [args[i + 1] for i, a in enumerate(args) if a == "-S"]


def test_readme_table_4_line_builds_the_vgg_m_flow_tower(
    raw_params, imported, tmp_path, monkeypatch
):
    """The Table 4 model of docs/data.md: a preset plus ``-S model.flow_backbone=vgg_m_2048``. Its
    flow tower takes VGG-M-2048 from models/imagenet (at this file's 96² input; the real file's
    is 224², the preset's crop); its RGB tower VGG-16 from Keras (a download: not here)."""
    from pipeline.model import apply_overrides

    text = (ROOT / "docs/data.md").read_text()
    assert "For the Table 4 model add `-S model.flow_backbone=vgg_m_2048`" in text
    overrides = _preset("ucf101") + ["model.flow_backbone=vgg_m_2048"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/imagenet").mkdir(parents=True)
    (tmp_path / "models/imagenet/vgg_m_2048.h5").write_bytes(imported[0].read_bytes())
    params = parse_params(apply_overrides(raw_params, overrides + ["model.num_classes=101"]))
    assert params.train.weights == "imagenet" and params.clip.crop == 224
    assert pretrained_source("rgb", params)["path"] is None  # Keras' VGG-16 download
    with pytest.raises(ModelError, match="trained on 96×96 crops"):
        build_stream("flow", params)  # the test file's size, not the preset's
    params = parse_params(apply_overrides(raw_params, overrides + [f"clip.crop={SIZE}"]))
    flow = build_stream("flow", params, classes=101)
    assert flow.get_layer("flow_conv1").weights[0].shape == (7, 7, 20, 96)
    assert any("cross-modality" in line for line in flow.init_report)


# ---- VGG-16 from Keras Applications ----------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory):
    source = keras.applications.VGG16(weights=None, include_top=True)
    rng = np.random.default_rng(3)
    for layer in source.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
    path = tmp_path_factory.mktemp("vgg16") / "vgg16.weights.h5"
    source.save_weights(path)
    return path, source


def test_vgg16_file_fills_both_towers(vgg16_file, raw_params):
    path, source = vgg16_file
    params = _stream_params(raw_params, "vgg16", crop=224, flow_stack=2, weights_=path)
    assert pretrained_source("rgb", params)["mean"] == (123.68, 116.779, 103.939)
    ours = {"fc1": "fc6", "fc2": "fc7"}
    for stream in ("rgb", "flow"):
        tower = build_stream(stream, params)
        for layer in source.layers:
            if not layer.weights or layer.name == "predictions":
                continue
            kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
            mine = tower.get_layer(f"{stream}_{ours.get(layer.name, layer.name)}")
            got_kernel, got_bias = (keras.ops.convert_to_numpy(w) for w in mine.weights)
            np.testing.assert_array_equal(got_bias, bias)
            if layer.name != "block1_conv1":
                np.testing.assert_array_equal(got_kernel, kernel)
            elif stream == "rgb":
                np.testing.assert_array_equal(got_kernel, kernel[:, :, ::-1])  # BGR -> RGB
            else:
                assert got_kernel.shape == (3, 3, 4, 64)
                for c in range(4):
                    np.testing.assert_allclose(got_kernel[:, :, c], kernel.mean(axis=2), atol=1e-7)
        if stream == "rgb":
            rgb = tower
        del tower
    # the RGB tower on RGB uint8 equals Keras' VGG16 on its own (BGR, mean-subtracted) input
    image = np.random.default_rng(4).integers(0, 256, (1, 224, 224, 3)).astype("uint8")
    theirs = keras.Model(source.input, source.get_layer("fc2").output)
    want = theirs.predict(
        keras.applications.vgg16.preprocess_input(image.astype("float32")), verbose=0
    )
    fc7 = keras.Model(rgb.input, rgb.get_layer("rgb_fc7").output)
    assert _rel(fc7.predict(image[:, None], verbose=0)[:, 0], want) < 1e-4


# ---- DagNN: the authors' released streams and fused nets --------------------------------------

DAG = 32  # VGG-16 at 32²: pool5 is 1×1, fc6 a 1×1×512×4096 conv (the real files: 224², 7×7)
UCF = 7  # classes of the fixture's "UCF101" streams


def _vgg16_simplenn(channels: int, seed: int, classes: int = UCF) -> list[dict]:
    """VGG-16 as imagenet-vgg-verydeep-16.mat (MatConvNet, imported from Caffe) lays it out and
    the authors' streams keep it: conv<b>_<c> 3×3 pad 1, relu<b>_<c>, pool<b> 2×2/2 with
    import-caffe.py's round-up pad [0 1 0 1] (utils/layers.py, CaffePooling: bottom/right
    min(pad + stride - 1, kernel - 1)), fc6-fc8 as convolutions, dropout after relu6/7."""
    rng = np.random.default_rng(seed)
    layers, cin = [], channels

    def conv(name, k, cin, cout, pad):
        f = rng.normal(0, np.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout)).astype("float32")
        b = rng.normal(0, 0.1, (cout,)).astype("float32")
        return {"name": name, "type": "conv", "f": f, "b": b, "stride": 1, "pad": pad}

    for b, (filters, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
        for c in range(1, convs + 1):
            layers += [conv(f"conv{b}_{c}", 3, cin, filters, 1), {"name": f"relu{b}_{c}",
                                                                   "type": "relu"}]  # fmt: skip
            cin = filters
        layers.append({"name": f"pool{b}", "type": "pool", "method": "max", "pool": [2, 2],
                       "stride": 2, "pad": [0, 1, 0, 1]})  # fmt: skip
    layers += [
        conv("fc6", DAG // 32, 512, 4096, 0), {"name": "relu6", "type": "relu"},
        {"name": "drop6", "type": "dropout"},
        conv("fc7", 1, 4096, 4096, 0), {"name": "relu7", "type": "relu"},
        {"name": "drop7", "type": "dropout"},
        conv("fc8", 1, 4096, classes, 0),
    ]  # fmt: skip
    return layers


def _struct_array(records: list[dict]) -> np.ndarray:
    """A MATLAB 1×N struct array (saveobj's vars, params and layers are struct arrays)."""
    fields = list(dict.fromkeys(k for r in records for k in r))
    array = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        for f in fields:
            array[0, i][f] = record.get(f, np.zeros((0, 0)))
    return array


def _dagnn_blocks(layers: list[dict], suffix: str = "") -> tuple[list, list]:
    """(layers, params) as dagnn.DagNN.fromSimpleNN makes them and saveobj writes them
    (vlfeat/matconvnet matlab/+dagnn/@DagNN/fromSimpleNN.m: vars x0, x1, …; conv params
    <name>f / <name>b; saveobj.m: each layer's name, type = class(block), inputs, outputs,
    params, block = block.save(), i.e. every public property of the block class)."""
    out, params = [], []
    for i, layer in enumerate(layers):
        name, t = layer["name"] + suffix, layer["type"]
        ins, outs, ps = [f"x{i}{suffix}"], [f"x{i + 1}{suffix}"], []
        if t == "conv":
            ps = [f"{layer['name']}f{suffix}", f"{layer['name']}b{suffix}"]
            params += [{"name": ps[0], "value": layer["f"], "learningRate": 1.0,
                        "weightDecay": 1.0},
                       {"name": ps[1], "value": layer["b"].reshape(-1, 1), "learningRate": 2.0,
                        "weightDecay": 0.0}]  # fmt: skip
            pad = layer["pad"]
            block = {"size": np.array(layer["f"].shape, "float64"), "hasBias": True,
                     "opts": _cell([]), "pad": np.full((1, 4), pad, "float64"),
                     "stride": np.full((1, 2), layer["stride"], "float64"),
                     "dilate": np.ones((1, 2))}  # fmt: skip
            kind = "dagnn.Conv"
        elif t == "relu":
            block, kind = {"useShortCircuit": True, "leak": 0.0, "opts": _cell([])}, "dagnn.ReLU"
        elif t == "pool":
            block = {"method": "max", "poolSize": np.array(layer["pool"], "float64"),
                     "opts": _cell([]), "pad": np.array(layer["pad"], "float64"),
                     "stride": np.full((1, 2), layer["stride"], "float64"),
                     "dilate": np.ones((1, 2))}  # fmt: skip
            kind = "dagnn.Pooling"
        elif t == "dropout":
            block, kind = {"rate": 0.85, "frozen": False}, "dagnn.DropOut"
        out.append({"name": name, "type": kind, "inputs": _cell(ins), "outputs": _cell(outs),
                    "params": _cell(ps), "block": block})  # fmt: skip
    last = f"x{len(layers)}{suffix}"
    out.append({"name": f"loss{suffix}", "type": "dagnn.Loss", "inputs": _cell([last, "label"]),
                "outputs": _cell([f"objective{suffix}"]), "params": _cell([]),
                "block": {"loss": "softmaxlog", "ignoreAverage": False, "normalise": True,
                          "opts": _cell([])}})  # fmt: skip
    return out, params


def dagnn_content(layers: list[dict], average, channels: int) -> dict:
    """What ``net_ = net.saveobj(); save(file, '-struct', 'net_')`` writes (saveobj.m: vars,
    params, layers, meta), with the authors' stream meta (cnn_ucf101_spatial.m /
    cnn_ucf101_temporal.m: imageSize 224×224×3 or ×20, flow averageImage ones(1,1,20)*128)."""
    dag_layers, params = _dagnn_blocks(layers)
    names = {v for layer in dag_layers for k in ("inputs", "outputs") for v in layer[k].ravel()}
    return {
        "vars": _struct_array([{"name": v, "precious": False} for v in sorted(names)]),
        "params": _struct_array(params),
        "layers": _struct_array(dag_layers),
        "meta": {"normalization": {"imageSize": np.array([DAG, DAG, channels], "float64"),
                                   "averageImage": np.asarray(average, "float32"),
                                   "border": np.array([32.0, 32.0]),
                                   "rgbVariance": np.zeros((0, 0))}},
    }  # fmt: skip


RGB_MEAN = (123.68, 116.779, 103.939)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The two released streams, written as DagNN files: (dir, rgb layers, flow layers)."""
    root = tmp_path_factory.mktemp("released")
    rgb, flow = _vgg16_simplenn(3, 10), _vgg16_simplenn(20, 11)
    scipy.io.savemat(
        root / "ucf101-img-vgg16-split1-dr0.85.mat",
        dagnn_content(rgb, np.asarray(RGB_MEAN).reshape(1, 1, 3), 3),
    )
    scipy.io.savemat(  # saveState's layout: one variable net (cnn_train_dag.m)
        root / "ucf101-TVL1flow-vgg16-split1-dr0.9.mat",
        {"net": dagnn_content(flow, np.full((1, 1, 20), 128.0), 20)},
    )
    weights.import_matconvnet(root / "ucf101-img-vgg16-split1-dr0.85.mat", root / "rgb.h5")
    weights.import_matconvnet(root / "ucf101-TVL1flow-vgg16-split1-dr0.9.mat", root / "flow.h5")
    return root, rgb, flow


def _released_params(raw, root, **streams):
    raw = copy.deepcopy(raw)
    raw["clip"].update(frames=1, flow_stack=10, crop=DAG)
    raw["model"].update(backbone="vgg16", num_classes=UCF)
    raw["train"]["streams"] = {"rgb": None, "flow": None, **streams}
    return parse_params(raw)


def test_released_streams_import_and_equal_matconvnet(released, raw_params, monkeypatch):
    root, rgb_layers, flow_layers = released
    monkeypatch.chdir(root)
    lines = weights.import_matconvnet("ucf101-img-vgg16-split1-dr0.85.mat")
    text = "\n".join(lines)
    assert "rgb tower: vgg16, 3 input channels, 7 classes" in text
    assert "wrote models/released/ucf101-img-vgg16-split1-dr0.85.h5: set train.streams.rgb" in text
    lines = weights.import_matconvnet("ucf101-TVL1flow-vgg16-split1-dr0.9.mat")
    assert any("flow tower: vgg16, 20 input channels" in line for line in lines)
    assert any("averageImage: [128.0] per flow channel" in line for line in lines)
    params = _released_params(
        raw_params,
        root,
        rgb="models/released/ucf101-img-vgg16-split1-dr0.85.h5",
        flow="models/released/ucf101-TVL1flow-vgg16-split1-dr0.9.h5",
    )
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (DAG, DAG, 3)).astype("uint8")
    flows = rng.integers(90, 166, (DAG, DAG, 20)).astype("uint8")
    for stream, layers, x, average in (
        ("rgb", rgb_layers, image, RGB_MEAN),
        ("flow", flow_layers, flows, 128.0),
    ):
        model = build_stream(stream, params)
        assert any("not trained" in line for line in model.init_report)
        want = matconvnet_forward(layers, x, average)["fc8"].ravel()
        p = np.exp(want - want.max())
        got = model.predict(x[None, None], verbose=0)["prediction"][0]
        np.testing.assert_allclose(got, p / p.sum(), rtol=2e-4, atol=1e-6)
    from pipeline.train import stage_settings

    assert stage_settings("rgb", params)["epochs"] == 0
    assert stage_settings("flow", _released_params(raw_params, root))["epochs"] > 0
    # the fused net keeps the released flow stream's normalisation (no mean flow subtraction)
    from pipeline.model import flow_normalisation

    rgb, flow = build_stream("rgb", params), build_stream("flow", params)
    assert flow_normalisation(flow) == ((128.0,) * 20, False)
    fused = build_fused(params, UCF, rgb_normalisation(rgb), flow_normalisation(flow))
    init_from_streams(fused, rgb, flow)
    with pytest.raises(ModelError, match="normalises flow with"):
        init_from_streams(build_fused(params, UCF, rgb_normalisation(rgb)), rgb, flow)


def fused_content(rgb: list[dict], flow: list[dict]) -> dict:
    """The authors' fused net as cnn_ucf101_fusion.m builds it from the two streams
    (feichtenhofer/twostreamfusion): names suffixed _spatial / _temporal (l. 144-155), input
    var ``input`` and ``input_flow`` (l. 226-230), a Concat of relu5_3 (spatial first, l.
    203-222), Conv3D conv53D 3×3×3×1024×512 pad [1 1 1 1 1 1] (l. 234-260) and relu3D5 into
    the spatial pool5, both pool5 Pooling3D [2 2 5] stride [2 2 2] (l. 275-300), meta from the
    flow net with averageImage = cat(3, flow 20, RGB 3) (l. 139-141, 187)."""
    a, pa = _dagnn_blocks(rgb, "_spatial")
    b, pb = _dagnn_blocks(flow, "_temporal")
    a[0]["inputs"], b[0]["inputs"] = _cell(["input"]), _cell(["input_flow"])
    i5 = next(i for i, layer in enumerate(a) if layer["name"] == "relu5_3_spatial")
    relu5_t = next(layer for layer in b if layer["name"] == "relu5_3_temporal")
    kernel = np.zeros((3, 3, 3, 1024, 512), "float32")
    concat = {
        "name": "relu5_3_concat",
        "type": "dagnn.Concat",
        "inputs": _cell([a[i5]["outputs"][0, 0], relu5_t["outputs"][0, 0]]),
        "outputs": _cell(["relu5_3_concat"]),
        "params": _cell([]),
        "block": {"dim": 3.0},
    }
    conv3d = {
        "name": "conv53D",
        "type": "dagnn.Conv3D",
        "inputs": _cell(["relu5_3_concat"]),
        "outputs": _cell(["conv3D5"]),
        "params": _cell(["conv3Df", "conv3Db"]),
        "block": {
            "size": np.array(kernel.shape, "float64"),
            "hasBias": True,
            "opts": _cell(["cuDNN"]),
            "pad": np.ones((1, 6)),
            "stride": np.ones((1, 3)),
        },
    }
    relu3d = {"name": "relu3D5", "type": "dagnn.ReLU", "inputs": _cell(["conv3D5"]),
              "outputs": _cell(["relu3D5"]), "params": _cell([]),
              "block": {"useShortCircuit": True, "leak": 0.0, "opts": _cell([])}}  # fmt: skip
    for layers, source in ((a, "relu3D5"), (b, None)):
        for layer in layers:
            if layer["name"].startswith("pool5"):
                layer["type"] = "dagnn.Pooling3D"
                layer["block"] = {
                    "method": "max",
                    "poolSize": np.array([2.0, 2, 5]),
                    "pad": np.zeros((1, 6)),
                    "stride": np.array([2.0, 2, 2]),
                }
                if source:
                    layer["inputs"] = _cell([source])  # fmt: skip
    params = pa + pb + [{"name": "conv3Df", "value": kernel}, {"name": "conv3Db",
                        "value": np.zeros((1, 512), "float32")}]  # fmt: skip
    params = [{"learningRate": 1.0, "weightDecay": 1.0, **p} for p in params]
    layers = a[: i5 + 1] + [concat, conv3d, relu3d] + a[i5 + 1 :] + b
    average = np.concatenate([np.full(20, 128.0), RGB_MEAN]).reshape(1, 1, 23)
    names = {v for layer in layers for k in ("inputs", "outputs") for v in layer[k].ravel()}
    return {"net": {
        "vars": _struct_array([{"name": v, "precious": False} for v in sorted(names)]),
        "params": _struct_array(params), "layers": _struct_array(layers),
        "meta": {"normalization": {"imageSize": np.array([DAG, DAG, 20.0]),
                                   "averageImage": average.astype("float32")}}}}  # fmt: skip


def test_fused_net_towers_import_as_streams(released, tmp_path):
    root, rgb, flow = released
    scipy.io.savemat(tmp_path / "ucf101-fused.mat", fused_content(rgb, flow))
    lines = weights.import_matconvnet(tmp_path / "ucf101-fused.mat", tmp_path / "fused.h5")
    text = "\n".join(lines)
    assert "relu5_3_concat (Concat), conv53D (Conv3D 3×3×3×1024×512), relu3D5 (ReLU)" in text
    assert "are not imported" in text and "the fused net's head" in text
    assert "pool5 (5.0, 2.0, [0.0, 0.0])" in text
    got, meta = contracts.read_pretrained(tmp_path / "fused-flow.h5")
    assert meta["channels"] == "flow" and meta["mean"] == [128.0] * 20 and meta["flow_stack"] == 10
    want, _ = contracts.read_pretrained(root / "flow.h5")
    assert sorted(got) == sorted(want)
    for name in want:
        for x, y in zip(got[name], want[name], strict=True):
            np.testing.assert_array_equal(x, y)
    _, meta = contracts.read_pretrained(tmp_path / "fused-rgb.h5")
    assert meta["mean"] == pytest.approx(list(RGB_MEAN)) and meta["fused_head"]


def test_dagnn_files_we_cannot_use_are_refused(released, tmp_path, raw_params):
    root, rgb, _ = released
    content = dagnn_content(rgb, np.asarray(RGB_MEAN).reshape(1, 1, 3), 3)
    layers = list(content["layers"][0])
    bn = {
        "name": "bn1",
        "type": "dagnn.BatchNorm",
        "inputs": _cell(["x1"]),
        "outputs": _cell(["x1b"]),
        "params": _cell([]),
        "block": {"numChannels": 64.0},
    }
    resnet = [dict(zip(layers[0].dtype.names, r, strict=True)) for r in layers]
    resnet[1]["inputs"] = _cell(["x1b"])
    content["layers"] = _struct_array(resnet[:1] + [bn] + resnet[1:])  # fmt: skip
    scipy.io.savemat(tmp_path / "resnet.mat", content)
    with pytest.raises(weights.WeightsError, match=r"holds .*1 BatchNorm.*a ResNet"):
        weights.import_matconvnet(tmp_path / "resnet.mat", tmp_path / "r.h5")
    path = root / "rgb.h5"
    wrong = _released_params(raw_params, root, flow=str(path))
    with pytest.raises(ModelError, match="is a RGB stream: give it to train.streams.rgb"):
        build_stream("flow", wrong)
    with pytest.raises(ModelError, match=r"trained on 32×32 crops, clip.crop is 64"):
        raw = copy.deepcopy(raw_params)
        raw["clip"].update(frames=1, flow_stack=10, crop=64)
        raw["model"].update(backbone="vgg16", num_classes=UCF)
        raw["train"]["streams"] = {"rgb": str(path), "flow": None}
        build_stream("rgb", parse_params(raw))
    with pytest.raises(ModelError, match="has 7 classes"):
        build_stream("rgb", _released_params(raw_params, root, rgb=str(path)), classes=5)
    with pytest.raises(ModelError, match="not ImageNet weights: use it as train.streams.rgb"):
        raw = copy.deepcopy(raw_params)
        raw["model"]["backbone"] = "vgg16"
        raw["train"]["weights"] = str(path)
        pretrained_source("rgb", parse_params(raw))


def test_vgg_m_3d_pool5_keeps_its_2d_window(raw_params):
    """cnn_ucf101_fusion.m l. 279-281: the 3D pool5 is the 2D pool5's window and stride with
    time added; VGG-M's is 3×3 (VGG-16's 2×2)."""
    raw = copy.deepcopy(raw_params)
    raw["clip"].update(frames=3, flow_stack=2, crop=SIZE)
    raw["model"].update(backbone="vgg_m_2048", num_classes=5)
    raw["fusion"].update(temporal="pool3d", method="sum")
    fused = build_fused(parse_params(raw))
    pool = fused.get_layer("rgb_pool5")
    assert (pool.pool_size, pool.strides) == ((3, 3, 3), (2, 2, 2))
    raw["model"]["backbone"] = "vgg16"
    raw["clip"]["crop"] = 64
    assert build_fused(parse_params(raw)).get_layer("rgb_block5_pool").pool_size == (3, 2, 2)


def test_train_stage_takes_a_released_stream_as_it_is(tiny_project, tmp_path, capsys):
    """train_rgb with train.streams.rgb: nothing trained, every weight the file's, the stream
    scored on the val split and logged (DVC's metrics and plots outputs exist)."""
    import dataclasses
    import os

    from pipeline import train as tr
    from pipeline.params import load_params

    layers = _vgg16_simplenn(3, 12, classes=4)  # tiny_project: 4 classes, 32² frames
    scipy.io.savemat(
        tmp_path / "rgb.mat", dagnn_content(layers, np.reshape(RGB_MEAN, (1, 1, 3)), 3)
    )
    weights.import_matconvnet(tmp_path / "rgb.mat", tmp_path / "rgb.h5")
    params = load_params(tiny_project / "params.yaml")
    params = dataclasses.replace(
        params,
        clip=dataclasses.replace(params.clip, crop=DAG),
        model=dataclasses.replace(params.model, backbone="vgg16"),
        train=dataclasses.replace(
            params.train,
            streams=dataclasses.replace(params.train.streams, rgb=str(tmp_path / "rgb.h5")),
        ),
    )
    here = os.getcwd()
    os.chdir(tiny_project)
    try:
        model = tr.train(
            "rgb", params, shards_dir="data/shards", models_dir=tmp_path / "models",
            checkpoints_dir=tmp_path / "ckpt", live_dir=tmp_path / "dvclive",
        )  # fmt: skip
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    assert "0 epochs of" in out and "train rgb: not trained; on the val split: accuracy" in out
    saved = keras.saving.load_model(tmp_path / "models/rgb.keras", compile=False)
    want, _ = contracts.read_pretrained(tmp_path / "rgb.h5")
    for name, arrays in want.items():
        for got, w in zip(saved.get_layer(f"rgb_{name}").get_weights(), arrays, strict=True):
            np.testing.assert_array_equal(got, w)
    assert model.get_layer("rgb_norm").mean == pytest.approx(RGB_MEAN)
    metrics = json.loads((tmp_path / "dvclive/rgb/metrics.json").read_text())
    assert set(metrics) == {"val_loss", "val_accuracy", "epochs_trained"}
    assert (tmp_path / "dvclive/rgb/plots/metrics/val_accuracy.tsv").is_file()


def test_dagnn_in_a_v73_file_imports_the_same_streams(released, tmp_path):
    """A released stream saved with -v7.3 (MATLAB's HDF5 layout: struct arrays as groups of
    reference datasets) imports to the very weights of its v7 copy."""
    root, rgb, _ = released
    write_mat73(tmp_path / "rgb73.mat", dagnn_content(rgb, np.reshape(RGB_MEAN, (1, 1, 3)), 3))
    lines = weights.import_matconvnet(tmp_path / "rgb73.mat", tmp_path / "rgb73.h5")
    assert any("rgb tower: vgg16, 3 input channels, 7 classes" in line for line in lines)
    got, meta = contracts.read_pretrained(tmp_path / "rgb73.h5")
    want, want_meta = contracts.read_pretrained(root / "rgb.h5")
    assert meta["mean"] == pytest.approx(want_meta["mean"])
    assert sorted(got) == sorted(want)
    for name in want:
        for x, y in zip(got[name], want[name], strict=True):
            np.testing.assert_array_equal(x, y)


def _fused_variant(rgb, flow, kind):
    """The fused net with cnn_ucf101_fusion.m's other options: ``removeFuseFrom`` (the temporal
    tower cut at relu5_3, its head removed) or ``doSum`` (a dagnn.Sum instead of Concat and
    Conv3D)."""
    content = fused_content(rgb, flow)["net"]
    layers = [
        dict(zip(content["layers"].dtype.names, r, strict=True)) for r in content["layers"][0]
    ]
    if kind == "removeFuseFrom":
        i = next(i for i, layer in enumerate(layers) if layer["name"] == "relu5_3_temporal")
        layers = layers[: i + 1]
    else:
        layers = [layer for layer in layers if layer["name"] not in ("conv53D", "relu3D5")]
        for layer in layers:
            if layer["name"] == "relu5_3_concat":
                layer.update(type="dagnn.Sum", block={}, outputs=_cell(["relu3D5"]))
    content["layers"] = _struct_array(layers)
    return {"net": content}


def test_fused_net_variants_and_simplenn_streams(released, tmp_path, capsys):
    root, rgb, flow = released
    scipy.io.savemat(tmp_path / "cut.mat", _fused_variant(rgb, flow, "removeFuseFrom"))
    lines = weights.import_matconvnet(tmp_path / "cut.mat", tmp_path / "cut.h5")
    text = "\n".join(lines)
    assert "the flow tower ends at the fusion" in text and "removeFuseFrom" in text
    assert not (tmp_path / "cut-flow.h5").exists() and (tmp_path / "cut.h5").exists()
    assert contracts.read_pretrained(tmp_path / "cut.h5")[1]["fused_head"]
    scipy.io.savemat(tmp_path / "sum.mat", _fused_variant(rgb, flow, "doSum"))
    lines = weights.import_matconvnet(tmp_path / "sum.mat", tmp_path / "sum.h5")
    assert "relu5_3_concat (Sum)" in lines[1]
    assert contracts.read_pretrained(tmp_path / "sum-flow.h5")[1]["fused_head"] is False
    # a stream trained as simplenn (cnn_ucf101_fusion.m l. 109-112 takes either layout)
    simple = []
    for layer in flow:
        d = {k: v for k, v in layer.items() if k not in ("f", "b")}
        if layer["type"] == "conv":
            d["weights"] = _cell([layer["f"], layer["b"].reshape(-1, 1)])
        simple.append(d)
    scipy.io.savemat(tmp_path / "simple.mat", {"layers": _cell(simple), "meta": {
        "normalization": {"imageSize": np.array([DAG, DAG, 20.0]),
                          "averageImage": np.full((1, 1, 20), 128.0)}}})  # fmt: skip
    lines = weights.import_matconvnet(tmp_path / "simple.mat", tmp_path / "simple.h5")
    assert lines[0].startswith(f"read {tmp_path / 'simple.mat'} (simplenn;")
    got, _ = contracts.read_pretrained(tmp_path / "simple.h5")
    want, _ = contracts.read_pretrained(root / "flow.h5")
    for name in want:
        for x, y in zip(got[name], want[name], strict=True):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(SystemExit, match="is a flow stream: classify runs RGB weights"):
        weights.main(["classify", str(tmp_path / "simple.h5"), "x.png"])
