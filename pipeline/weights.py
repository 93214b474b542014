"""Weights from MatConvNet's ``.mat`` files: ImageNet weights for the ``vgg_m_2048`` (and
``vgg16``) backbone, and the authors' released trained streams.

``python -m pipeline.weights import FILE.mat [--out PATH]`` converts

- MatConvNet's simplenn model (``imagenet-vgg-m-2048.mat`` from its pretrained-models page)
  into ``models/imagenet/vgg_m_2048.h5``, which ``train.weights: imagenet`` (or the file's
  path) loads into the VGG-M-2048 towers;
- a DagNN model (what ``dagnn.DagNN.saveobj`` writes): the authors' released UCF101 VGG-16
  streams (feichtenhofer/twostreamfusion) into ``models/released/<name>.h5`` for
  ``train.streams.rgb`` / ``.flow``, each tower of one of their fused nets into
  ``<name>-rgb.h5`` / ``<name>-flow.h5``, a DagNN ImageNet model into ``models/imagenet/``
  (:func:`import_dagnn`, docs/frames.md: The authors' released streams).

``python -m pipeline.weights classify FILE.h5 IMAGE ...`` prints the top-5 classes of photos
under RGB weights, to see an import work on real pictures.

What MatConvNet's files hold and how it maps onto Keras (``vlfeat/matconvnet``: ``vl_simplenn``,
``vl_nnconv``, ``vl_nnpool``, ``vl_nnnormalize``, ``utils/import-caffe.py``):

- **Two layouts circulate.** Newer files: ``layers{i}.weights = {filters, biases}`` and
  ``meta.normalization`` / ``meta.classes``; older ones: ``layers{i}.filters`` /
  ``layers{i}.biases`` and top-level ``normalization`` / ``classes`` (what
  ``vl_simplenn_tidy`` upgrades). MATLAB v5/v7 files are read with ``scipy.io.loadmat``,
  v7.3 (HDF5) files with ``h5py``. DagNN files (``vars``, ``params``) are refused.
- **Filters** are ``H × W × in × out`` and ``vl_nnconv`` is a cross-correlation, as Keras'
  ``Conv2D``: kernels are copied unchanged; biases are flattened (1 × N or N × 1).
- **Padding** is ``pad = [top bottom left right]`` (or one number for all four). A convolution's
  must be the symmetric zero padding the backbone applies. MatConvNet pools round down and
  imports from Caffe emulate Caffe's round-up with extra bottom/right padding, which
  ``vl_nnpool`` leaves out of the max; the backbone rounds up by zero-padding bottom and right.
  Both start their windows at 0, so they are the same windows when the top and left pads are 0
  and the output sizes agree (checked layer by layer at the file's input size); the inputs are
  ReLU or LRN outputs, never negative, so zeros never win a max.
- **LRN** ``param = [N κ α β]``: ``y = x / (κ + α·Σ x²)^β`` over the N channels around each
  one, α *not* divided by N (Caffe's α is N times it). That is
  ``LocalResponseNormalization(depth_radius=(N - 1)/2, bias=κ, alpha=α, beta=β)``, which must
  equal the backbone's layer (VGG-M-2048: ``[5 2 1e-4 0.75]``, what ``utils/layers.py``'s
  ``CaffeLRN`` writes for the prototxt's ``local_size 5, alpha 0.0005, beta 0.75, k 2``: α /
  local_size); even N has a lopsided window and is refused.
- **fc6, fc7, fc8** are convolutions whose filters cover their whole input map: fc6's
  ``h × w × 512 × 4096`` becomes the ``Dense`` kernel ``(h·w·512, 4096)`` (row-major, as
  ``Flatten`` orders an ``H × W × C`` map), fc7's and fc8's ``1 × 1 × in × out`` ``(in, out)``.
- **Input**: RGB in 0–255 minus ``normalization.averageImage``: a per-channel mean, or a whole
  average image (what ``imagenet-vgg-m-2048.mat`` has, from VGG's ``mean.mat``) which is
  reduced to its per-channel mean, because crops and flips move over it; the import says how
  far the image is from its mean. The mean travels in the converted file, and the tower's
  ``RGBNormalization`` takes it from there: no setting can disagree with it.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np

from pipeline import contracts
from pipeline.params import PipelineError

BACKBONE = "vgg_m_2048"
MATCONVNET_URL = "https://www.vlfeat.org/matconvnet/models/imagenet-vgg-m-2048.mat"
MATCONVNET_MD5 = "087ec812e0a09980bd934e2e7ba157f6"
"""imagenet-vgg-m-2048.mat's MD5 as MatConvNet's pretrained-models page lists it."""
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class WeightsError(PipelineError):
    """A file that cannot be converted; the message says what differs."""


# ---- reading .mat files into plain Python (dict, list, str, ndarray) -----------------------


def _plain_v5(value: object) -> object:
    """``scipy.io.loadmat(squeeze_me=False, struct_as_record=False)`` values, made plain."""
    from scipy.io.matlab import mat_struct

    if isinstance(value, mat_struct):
        return {k: _plain_v5(getattr(value, k)) for k in value._fieldnames}
    if isinstance(value, np.ndarray):
        if value.dtype == object:  # a cell array (or a struct array): a flat list
            items = [_plain_v5(v) for v in value.ravel(order="F")]
            return items[0] if value.size == 1 and isinstance(items[0], dict) else items
        if value.dtype.kind == "U":
            return "".join(value.ravel().tolist())
    return value


def _plain_v73(f: object, node: object) -> object:
    """A MATLAB v7.3 (HDF5) value, made plain. MATLAB writes arrays transposed (column-major),
    chars as uint16, cells as datasets of object references (``MATLAB_class`` ``cell``),
    scalar structs as groups of their fields, and struct arrays (DagNN's ``layers``,
    ``params``) as groups whose every field is a dataset of references, one per element in
    column order, with no ``MATLAB_class`` (tbeu/matio ``src/mat73.c`` l. 1252-1297;
    hdf5storage ``Marshallers.py`` l. 1208-1227): those become a list of dicts (one element: a
    dict, as from v5); empty values carry ``MATLAB_empty``."""
    import h5py

    if isinstance(node, h5py.Group):
        fields = {k: node[k] for k in node if not k.startswith("#")}
        if fields and all(
            isinstance(v, h5py.Dataset)
            and h5py.check_dtype(ref=v.dtype) is h5py.Reference
            and "MATLAB_class" not in v.attrs
            for v in fields.values()
        ):
            refs = {k: np.asarray(v[()]).ravel() for k, v in fields.items()}
            n = min(len(r) for r in refs.values())
            items = [{k: _plain_v73(f, f[r[i]]) for k, r in refs.items()} for i in range(n)]
            return items[0] if n == 1 else items
        return {k: _plain_v73(f, v) for k, v in fields.items()}
    kind = node.attrs.get("MATLAB_class", b"")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if node.attrs.get("MATLAB_empty", 0):
        return np.zeros((0,))
    data = node[()]
    if kind == "cell":  # the stored (transposed) array's C order is MATLAB's column order
        return [_plain_v73(f, f[ref]) for ref in np.asarray(data).ravel()]
    if kind == "char":
        return "".join(chr(c) for c in np.asarray(data).ravel())
    return np.asarray(data).T


def load_mat(path: str | Path) -> dict:
    """The variables of a MATLAB file (v5/v7 or v7.3) as plain Python values."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(520)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    if head[512:520] == HDF5_SIGNATURE or head[:8] == HDF5_SIGNATURE:  # v7.3: HDF5, 512-byte header
        import h5py

        with h5py.File(path, "r") as f:
            return {k: _plain_v73(f, f[k]) for k in f if not k.startswith("#")}
    import scipy.io

    try:
        raw = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    except Exception as exc:  # scipy raises ValueError, TypeError, ... for what is not a .mat
        raise WeightsError(f"{path} is not a MATLAB .mat file scipy can read: {exc}") from exc
    return {k: _plain_v5(v) for k, v in raw.items() if not k.startswith("__")}


# ---- the simplenn model ----------------------------------------------------------------------


def _given(value: object, default: object) -> object:
    """``value``, or ``default`` when MATLAB left it empty (``[]``) or it is missing."""
    return default if value is None or np.asarray(value).size == 0 else value


def _text(value: object) -> str:
    """A MATLAB char value as str ('' when empty or missing)."""
    return value if isinstance(value, str) else ""


def _strings(value: object) -> list[str]:
    """A MATLAB cell of chars (or one char array) as a list of str; [] when missing."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _numbers(value: object, n: int, what: str) -> list[float]:
    """A MatConvNet option of 1 or ``n`` numbers (``pad``: 1 or 4, ``stride``: 1 or 2)."""
    v = np.asarray(value, "float64").ravel()
    if v.size == 1:
        return [float(v[0])] * n
    if v.size != n:
        raise WeightsError(f"{what}: {v.size} values ({v.tolist()}); MatConvNet takes 1 or {n}")
    return [float(x) for x in v]


def simplenn_layers(net: dict, source: str) -> list[dict]:
    """``net.layers`` of a simplenn model as dicts: ``name``, ``type``, and for conv
    ``filters`` (H, W, in, out) / ``biases`` / ``stride`` [y x] / ``pad`` [t b l r], for pool
    ``method`` / ``pool`` [h w] / ``stride`` / ``pad``, for LRN ``param`` [N κ α β]."""
    if "params" in net or "vars" in net:
        raise WeightsError(
            f"{source} is a DagNN model (it has {'params' if 'params' in net else 'vars'}); "
            "this imports simplenn models, as imagenet-vgg-m-2048.mat is"
        )
    if not isinstance(net.get("layers"), list) or not net["layers"]:
        raise WeightsError(f"{source} has no simplenn 'layers' cell array (variables: {list(net)})")
    out = []
    for i, layer in enumerate(net["layers"], 1):
        if not isinstance(layer, dict) or "type" not in layer:
            raise WeightsError(f"{source}: layer {i} is not a struct with a 'type'")
        name = _text(layer.get("name")) or f"layer{i}"
        kind = {"normalize": "lrn"}.get(layer["type"], layer["type"])
        item = {"name": name, "type": kind}
        where = f"{source}: layer {name}"
        if kind == "conv":
            if "weights" in layer:  # {filters, biases}
                parts = layer["weights"] if isinstance(layer["weights"], list) else []
                if len(parts) != 2:
                    raise WeightsError(f"{where}: weights has {len(parts)} arrays, not 2")
                filters, biases = parts
            elif "filters" in layer:  # the older layout
                filters, biases = layer["filters"], layer.get("biases", np.zeros(0))
            else:
                raise WeightsError(f"{where}: a conv layer with neither weights nor filters")
            filters = np.asarray(filters, "float32")
            filters = filters.reshape(filters.shape + (1,) * (4 - filters.ndim))  # MATLAB drops
            item.update(  # trailing singleton dimensions
                filters=filters,
                biases=np.asarray(biases, "float32").ravel(),
                stride=_numbers(layer.get("stride", 1), 2, f"{where}: stride"),
                pad=_numbers(layer.get("pad", 0), 4, f"{where}: pad"),
                dilate=_numbers(_given(layer.get("dilate"), 1), 2, f"{where}: dilate"),
            )
        elif kind == "pool":
            item.update(
                method=_text(layer.get("method")) or "max",
                pool=_numbers(layer.get("pool", 1), 2, f"{where}: pool"),
                stride=_numbers(layer.get("stride", 1), 2, f"{where}: stride"),
                pad=_numbers(layer.get("pad", 0), 4, f"{where}: pad"),
            )
        elif kind == "relu":
            leak = np.asarray(layer.get("leak", 0.0), "float64").ravel()  # may be [] (none)
            item["leak"] = float(leak[0]) if leak.size else 0.0
        elif kind == "lrn":
            item["param"] = [float(x) for x in np.asarray(layer.get("param"), "float64").ravel()]
            if len(item["param"]) != 4:
                raise WeightsError(f"{where}: LRN param {item['param']}; expected [N κ α β]")
        out.append(item)
    return out


def normalization(net: dict, source: str) -> tuple[dict, dict, str]:
    """(normalization, classes, which layout) from ``meta.*`` or the older top-level fields."""
    if isinstance(net.get("meta"), dict) and "normalization" in net["meta"]:
        meta = net["meta"]
        return meta["normalization"], meta.get("classes") or {}, "meta.normalization"
    if isinstance(net.get("normalization"), dict):
        return net["normalization"], net.get("classes") or {}, "normalization (older layout)"
    raise WeightsError(
        f"{source} has neither meta.normalization nor normalization: without the input size "
        "and mean the weights cannot be used right"
    )


def channel_mean(average: object, channels: int = 3) -> tuple[list[float], str]:
    """The per-channel mean (0–255; RGB, or a flow stream's 2L channels) of ``averageImage``,
    and a line saying what it was."""
    a = np.asarray(average, "float64")
    if a.size == channels:
        return [float(v) for v in a.ravel()], "averageImage: a per-channel mean"
    if a.ndim == 3 and a.shape[-1] == channels:
        mean = a.mean(axis=(0, 1))
        spread = float(np.abs(a - mean).max())
        return [float(v) for v in mean], (
            f"averageImage: a {a.shape[0]}×{a.shape[1]}×{channels} image, reduced to its "
            f"per-channel mean (crops and flips move over it); it is at most {spread:.1f} "
            "levels from it"
        )
    raise WeightsError(
        f"averageImage has shape {a.shape}; expected {channels} values or an H×W×{channels} image"
    )


# ---- checking against the backbone and converting --------------------------------------------


def _backbone_spec(net: object) -> list[dict]:
    """What the Keras backbone ``net`` (from :func:`pipeline.model.imagenet_network`) expects,
    in MatConvNet's terms: one dict per layer, ReLUs as their own layers as MatConvNet has
    them."""
    import keras

    from layers import LocalResponseNormalization

    spec, pad = [], (0, 0, 0, 0)
    for layer in net.layers:
        inner = getattr(layer, "layer", layer)
        ours = layer.name.removeprefix("rgb_")
        name = matconvnet_name(ours)
        out_hw = tuple(layer.output.shape[-3:-1]) if len(layer.output.shape) >= 4 else None
        if isinstance(inner, keras.layers.ZeroPadding2D):
            (t, b), (left, r) = inner.padding
            pad = (t, b, left, r)
            continue
        if isinstance(inner, keras.layers.Conv2D | keras.layers.Dense):
            conv = isinstance(inner, keras.layers.Conv2D)
            kernel = tuple(inner.kernel.shape)
            if conv and inner.padding == "same":  # VGG-16's 3×3, stride 1: pad 1 all round
                pad = tuple((k - 1) // 2 for k in (kernel[0], kernel[0], kernel[1], kernel[1]))
            spec.append(
                {
                    "name": name,
                    "ours": ours,
                    "type": "conv",
                    "kernel": kernel,
                    "stride": list(inner.strides) if conv else [1, 1],
                    "pad": list(pad) if conv else [0, 0, 0, 0],
                }
            )
            if inner.activation is keras.activations.relu:
                spec.append({"name": re.sub(r"^(conv|fc)", "relu", name), "type": "relu"})
        elif isinstance(inner, LocalResponseNormalization):
            r = inner.depth_radius
            spec.append(
                {
                    "name": name,
                    "ours": ours,
                    "type": "lrn",
                    "param": [2 * r + 1, inner.bias, inner.alpha, inner.beta],
                }
            )
        elif isinstance(inner, keras.layers.MaxPooling2D):
            spec.append(
                {
                    "name": name,
                    "ours": ours,
                    "type": "pool",
                    "pool": list(inner.pool_size),
                    "stride": list(inner.strides),
                    "out": out_hw,
                }
            )
        pad = (0, 0, 0, 0)
    return spec


def matconvnet_name(ours: str) -> str:
    """MatConvNet's name of one of our backbone layers: VGG-16's ``block<b>_conv<c>`` is
    ``conv<b>_<c>`` and ``block<b>_pool`` ``pool<b>`` (``imagenet-vgg-verydeep-16.mat``, and
    twostreamfusion's ``conv5_3``, ``relu5_3``, ``pool5``); VGG-M's are MatConvNet's own."""
    if m := re.fullmatch(r"block(\d)_conv(\d)", ours):
        return f"conv{m.group(1)}_{m.group(2)}"
    if m := re.fullmatch(r"block(\d)_pool", ours):
        return f"pool{m.group(1)}"
    return ours


def _shape(shape: tuple) -> str:
    return "×".join(str(int(n)) for n in shape)


def _out(size: tuple[float, float], k: list, stride: list, pad: list) -> tuple[int, int]:
    """MatConvNet's output size (conv and pool alike): floor((n + pads - k) / stride) + 1."""
    return (
        int((size[0] + pad[0] + pad[1] - k[0]) // stride[0]) + 1,
        int((size[1] + pad[2] + pad[3] - k[1]) // stride[1]) + 1,
    )


def check_and_convert(
    layers: list[dict],
    spec: list[dict],
    input_size: tuple[int, int],
    source: str,
    backbone: str = BACKBONE,
) -> dict[str, list[np.ndarray]]:
    """The backbone's weights from MatConvNet ``layers``, by our layer names (``conv1`` …
    ``fc8``). Raises :class:`WeightsError` listing every difference from ``spec``."""
    while layers and layers[-1]["type"] in ("softmax", "softmaxloss"):  # the output's softmax
        layers = layers[:-1]
    kept = [layer for layer in layers if layer["type"] != "dropout"]  # identity at test time
    got = [(layer["name"], layer["type"]) for layer in kept]
    want = [(s["name"], s["type"]) for s in spec]
    if got != want:
        i = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )

        def say(x: list, i: int) -> str:
            return f"{x[i][0]} ({x[i][1]})" if i < len(x) else "nothing"

        raise WeightsError(
            f"{source} is not {backbone}: layer {i + 1} is {say(got, i)} in the file, "
            f"{say(want, i)} in {backbone}.\n  file:     {' '.join(n for n, _ in got)}\n"
            f"  expected: {' '.join(n for n, _ in want)}"
        )
    problems, converted, size = [], {}, (float(input_size[0]), float(input_size[1]))
    for layer, s in zip(kept, spec, strict=True):
        name = layer["name"]
        if layer["type"] == "conv":
            f, b = layer["filters"], layer["biases"]
            out = _out(size, list(f.shape[:2]), layer["stride"], layer["pad"])
            if len(s["kernel"]) == 2:  # Dense: an fc layer, a conv over its whole input map
                if out != (1, 1):
                    problems.append(
                        f"{name}: its {_shape(f.shape[:2])} filters leave a {_shape(out)} map of "
                        f"the {_shape(size)} input; an fc layer covers it all"
                    )
                kernel = f.reshape(-1, f.shape[-1])
                if layer["stride"] != [1.0, 1.0] or layer["pad"] != [0.0] * 4:
                    problems.append(
                        f"{name}: stride {layer['stride']} pad {layer['pad']}; an fc layer has "
                        "stride 1 and no padding"
                    )
            else:
                kernel = f
                for key in ("stride", "pad"):
                    if [int(v) for v in layer[key]] != [int(v) for v in s[key]]:
                        problems.append(
                            f"{name}: {key} {layer[key]} in the file, {s[key]} in {backbone}"
                        )
            if kernel.shape != s["kernel"]:
                problems.append(
                    f"{name}: filters {_shape(f.shape)} in the file; {backbone} needs "
                    f"{_shape(s['kernel'])}"
                    + (" (as a Dense kernel)" if len(s["kernel"]) == 2 else "")
                )
            if layer["dilate"] != [1.0, 1.0]:
                problems.append(f"{name}: dilate {layer['dilate']}; {backbone} does not dilate")
            if b.shape != (f.shape[-1],):
                problems.append(f"{name}: {b.size} biases for {f.shape[-1]} filters")
            converted[s["ours"]] = [kernel, b]
            size = out
        elif layer["type"] == "pool":
            if layer["method"] != "max":
                problems.append(f"{name}: {layer['method']} pooling; {backbone} max-pools")
            if layer["pool"] != s["pool"] or layer["stride"] != s["stride"]:
                problems.append(
                    f"{name}: pool {layer['pool']} stride {layer['stride']} in the file, pool "
                    f"{s['pool']} stride {s['stride']} in {backbone}"
                )
            out = _out(size, layer["pool"], layer["stride"], layer["pad"])
            top_left = (layer["pad"][0], layer["pad"][2])
            if top_left != (0, 0):
                problems.append(
                    f"{name}: pad {layer['pad']} pads the top or left; {backbone}'s windows "
                    "start at the top left corner (pad [0 b 0 r])"
                )
            elif out != s["out"]:
                problems.append(
                    f"{name}: pad {layer['pad']} gives {_shape(out)} from {_shape(size)}; "
                    f"{backbone} pools to {_shape(s['out'])}"
                )
            size = out
        elif layer["type"] == "relu" and layer["leak"] != 0:
            problems.append(f"{name}: a leaky ReLU (leak {layer['leak']:g}); {backbone}'s are not")
        elif layer["type"] == "lrn":
            n = layer["param"][0]
            if n % 2 == 0:
                problems.append(f"{name}: LRN over N = {n:g} channels: an even window is lopsided")
            if not np.allclose(layer["param"], s["param"], rtol=1e-5, atol=0):
                problems.append(
                    f"{name}: LRN [N κ α β] = {[float(f'{v:.6g}') for v in layer['param']]} in the "
                    f"file (MatConvNet's α, not divided by N); {backbone} has "
                    f"{[float(f'{v:.6g}') for v in s['param']]}"
                )
    if problems:
        raise WeightsError(f"{source} does not fit {backbone}:\n  " + "\n  ".join(problems))
    return converted


def digests(path: str | Path) -> tuple[str, str]:
    """(SHA-256, MD5) of a file."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def import_matconvnet(path: str | Path, out: str | Path | None = None) -> list[str]:
    """Convert MatConvNet's ``imagenet-vgg-m-2048.mat`` (or a file in its layout), or a DagNN
    model (:func:`import_dagnn`), to ``out`` (:func:`pipeline.contracts.write_pretrained`;
    None: where docs/weights.md says); returns the lines to print."""
    from pipeline.model import count_params, imagenet_network

    path = Path(path)
    tree = load_mat(path)
    net = tree["net"] if "net" in tree and isinstance(tree["net"], dict) else tree
    if "params" in net or "vars" in net:
        return import_dagnn(path, net, out)
    layers = simplenn_layers(net, str(path))
    first = next((layer for layer in layers if layer["type"] == "conv"), None)
    try:
        backbone = _guess_backbone(layers, layers, str(path))
    except WeightsError:
        backbone = BACKBONE  # checked layer by layer below, which says where it differs
    if first is not None and (backbone != BACKBONE or first["filters"].shape[2] != 3):
        # a simplenn VGG-16 (imagenet-vgg-verydeep-16.mat), or a stream the authors' scripts
        # trained as simplenn (cnn_ucf101_fusion.m l. 109-112 takes either)
        tower = "rgb" if first["filters"].shape[2] == 3 else "flow"
        head = f"read {path} (simplenn; {len(layers)} layers: {_what_it_holds(layers)})"
        return [head, *convert_towers(path, net, {tower: layers}, layers, out, "simplenn")]
    out = contracts.imagenet_path(BACKBONE) if out is None else out
    norm, classes, layout = normalization(net, str(path))
    size = [int(v) for v in np.asarray(norm.get("imageSize", []), "float64").ravel()[:2]]
    if len(size) != 2:
        raise WeightsError(f"{path}: normalization.imageSize is {norm.get('imageSize')!r}")
    if _given(norm.get("averageImage"), None) is None:
        raise WeightsError(f"{path}: normalization.averageImage is missing or empty")
    mean, mean_note = channel_mean(norm.get("averageImage"))
    convs = [layer for layer in layers if layer["type"] == "conv"]
    n_classes = convs[-1]["filters"].shape[-1] if convs else 0
    classes = classes if isinstance(classes, dict) else {}
    names, descriptions = _strings(classes.get("name")), _strings(classes.get("description"))
    sha, md5 = digests(path)
    try:
        net = imagenet_network(BACKBONE, tuple(size), n_classes, mean)
    except ValueError as exc:
        raise WeightsError(
            f"{path}: {BACKBONE} cannot be built for imageSize {size}: {exc}"
        ) from exc
    converted = check_and_convert(layers, _backbone_spec(net), tuple(size), str(path))
    meta = {
        "backbone": BACKBONE,
        "input_size": size,
        "channels": "RGB",
        "mean": mean,
        "classes": names,
        "descriptions": descriptions,
        "source": path.name,
        "source_sha256": sha,
        "source_layout": layout,
        "mean_note": mean_note,
    }
    for name, arrays in converted.items():
        net.get_layer(f"rgb_{name}").set_weights(arrays)  # Keras checks the shapes again
    contracts.write_pretrained(out, converted, meta)
    total = count_params(net)
    origin = (
        "MatConvNet's published imagenet-vgg-m-2048.mat"
        if md5 == MATCONVNET_MD5
        else f"not the MD5 MatConvNet lists ({MATCONVNET_MD5}): another or a re-saved file, "
        "its layers checked all the same"
    )
    return [
        f"read {path} ({layout}; {len(layers)} layers; MD5 {md5}: {origin})",
        f"converted {len(converted)} layers with weights: {', '.join(converted)}; "
        f"{total:,} parameters",
        f"input {size[0]}×{size[1]} RGB, mean ({', '.join(f'{m:.2f}' for m in mean)}); "
        + mean_note,
        f"{n_classes} classes" + (f" ({descriptions[0]!r}, ...)" if descriptions else ""),
        f"wrote {out}: train.weights: imagenet loads it from {contracts.imagenet_path(BACKBONE)}"
        if Path(out) == contracts.imagenet_path(BACKBONE)
        else f"wrote {out}: set train.weights: {out}",
    ]


# ---- DagNN models: the authors' released streams and fused nets ------------------------------

DAGNN_TYPES = {
    "dagnn.Conv": "conv",
    "dagnn.ReLU": "relu",
    "dagnn.Pooling": "pool",
    "dagnn.LRN": "lrn",
    "dagnn.DropOut": "dropout",
    "dagnn.SoftMax": "softmax",
    "dagnn.Loss": "softmaxloss",
    "dagnn.Conv3D": "conv3d",
    "dagnn.Pooling3D": "pool3d",
    "dagnn.Concat": "concat",
    "dagnn.Sum": "sum",
}
"""MatConvNet's DagNN block classes (``layers(i).type = class(block)``) in simplenn's terms;
Conv3D and Pooling3D are twostreamfusion's own (``matconvnet/matlab/+dagnn/``)."""
FUSION_TYPES = ("concat", "sum", "conv3d")
SUFFIXES = {"_spatial": "rgb", "_temporal": "flow"}
"""cnn_ucf101_fusion.m names the towers of a fused net by these suffixes (layers, vars,
params)."""


def _records(value: object, what: str) -> list[dict]:
    """A MATLAB struct array as a list of dicts (a 1×1 struct array comes as one dict)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise WeightsError(f"{what} is not a struct array (got {type(value).__name__})")


def _pads(value: object, n: int, what: str) -> list[float]:
    """A DagNN ``pad`` of 1, n or 2n numbers as 2n (``dagnn.Filter``'s ``set.pad``: one for
    all, ``[a b]`` as ``[a a b b]``; [top bottom left right], Conv3D's [.. front back])."""
    v = np.asarray(_given(value, 0), "float64").ravel()
    if v.size == 1:
        return [float(v[0])] * 2 * n
    if v.size == n:
        return [float(x) for x in np.repeat(v, 2)]
    if v.size != 2 * n:
        raise WeightsError(f"{what}: {v.size} values ({v.tolist()}); DagNN takes 1, {n} or {2 * n}")
    return [float(x) for x in v]


def dagnn_layers(net: dict, source: str) -> list[dict]:
    """``net.layers`` of a DagNN model (what ``dagnn.DagNN.saveobj`` writes: ``name``, ``type``,
    ``inputs``, ``outputs``, ``params``, ``block``) as :func:`simplenn_layers`' dicts plus
    ``dagnn`` (the class), ``inputs`` and ``outputs``; a conv's filters and biases come from
    ``net.params`` by the names the layer lists (filters first). Pooling3D keeps its time
    window in ``time`` (pool, stride, pad)."""
    if not isinstance(net.get("layers"), list | dict):
        raise WeightsError(
            f"{source} looks like a DagNN model (it has {'params' if 'params' in net else 'vars'})"
            " but no net.layers struct array (name, type, inputs, outputs, params, block)"
        )
    params = _records(net.get("params"), f"{source}: net.params")
    values = {_text(p.get("name")): p.get("value") for p in params}
    out = []
    for i, layer in enumerate(_records(net["layers"], f"{source}: layers"), 1):
        if "block" not in layer or "type" not in layer:
            raise WeightsError(
                f"{source} looks like a DagNN model, but layer {i} has no type and block (its "
                f"fields: {', '.join(layer)}): not what dagnn.DagNN.saveobj writes"
            )
        name = _text(layer.get("name")) or f"layer{i}"
        dagnn = _text(layer.get("type"))
        kind = DAGNN_TYPES.get(dagnn, dagnn)
        block = layer["block"] if isinstance(layer["block"], dict) else {}
        item = {
            "name": name,
            "type": kind,
            "dagnn": dagnn,
            "inputs": _strings(layer.get("inputs")),
            "outputs": _strings(layer.get("outputs")),
        }
        where = f"{source}: layer {name} ({dagnn})"
        if kind in ("conv", "conv3d"):
            names = _strings(layer.get("params"))
            missing = [n for n in names if n not in values]
            if missing or not names:
                raise WeightsError(f"{where}: its params {names} are not all in net.params")
            rank, n = (4, 2) if kind == "conv" else (5, 3)
            filters = np.asarray(values[names[0]], "float32")
            filters = filters.reshape(filters.shape + (1,) * (rank - filters.ndim))
            has_bias = bool(np.asarray(_given(block.get("hasBias"), 1)).ravel()[0])
            if has_bias and len(names) < 2:
                raise WeightsError(f"{where}: hasBias but one param ({names[0]})")
            biases = (
                np.asarray(values[names[1]], "float32").ravel()
                if has_bias
                else np.zeros(filters.shape[-1], "float32")
            )
            item.update(
                filters=filters,
                biases=biases,
                stride=_numbers(_given(block.get("stride"), 1), n, f"{where}: stride"),
                pad=_pads(block.get("pad"), n, f"{where}: pad"),
                dilate=_numbers(_given(block.get("dilate"), 1), 2, f"{where}: dilate"),
            )
        elif kind in ("pool", "pool3d"):
            n = 2 if kind == "pool" else 3
            pool = _numbers(_given(block.get("poolSize"), 1), n, f"{where}: poolSize")
            stride = _numbers(_given(block.get("stride"), 1), n, f"{where}: stride")
            pad = _pads(block.get("pad"), n, f"{where}: pad")
            # Pooling3D always max-pools (mex_maxpool3d; its method is never read)
            method = "max" if kind == "pool3d" else _text(block.get("method")) or "max"
            item.update(method=method, pool=pool[:2], stride=stride[:2], pad=pad[:4])
            if kind == "pool3d":
                item.update(type="pool", time=(pool[2], stride[2], pad[4:]))
        elif kind == "relu":
            leak = np.asarray(_given(block.get("leak"), 0.0), "float64").ravel()
            item["leak"] = float(leak[0])
        elif kind == "lrn":
            item["param"] = [float(x) for x in np.asarray(block.get("param"), "float64").ravel()]
            if len(item["param"]) != 4:
                raise WeightsError(f"{where}: LRN param {item['param']}; expected [N κ α β]")
        out.append(item)
    return out


def _what_it_holds(layers: list[dict]) -> str:
    counts: dict[str, int] = {}
    for layer in layers:
        kind = layer.get("dagnn", layer["type"])
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {t.removeprefix('dagnn.')}" for t, n in counts.items())


def dagnn_towers(
    layers: list[dict], source: str
) -> tuple[dict[str, list[dict]], list[dict], set[str], list[str]]:
    """The towers of a DagNN net: for each input variable (``input``, and ``input_flow`` in the
    authors' fused nets), the chain of layers data flows through, in order, up to the output
    (losses left out), the ``_spatial``/``_temporal`` suffixes taken off. Fusion layers
    (Concat, Sum, Conv3D and the ReLU after it) are listed apart: a tower that only goes on
    through them (the fused net's spatial tower) continues after them, unless what follows is
    the other tower's (``removeFuseFrom``: the tower ends at the fusion and is left out).

    Returns ({tower: layers}, fusion layers, the towers that go on above a fusion, lines about
    towers left out); the tower is ``rgb`` or ``flow`` (by suffix, else by conv1's channels)."""
    produced = {v for layer in layers for v in layer["outputs"]}
    starts = []
    for layer in layers:
        if layer["type"] == "softmaxloss":
            continue
        for var in layer["inputs"]:
            if var not in produced and var not in starts:
                starts.append(var)
    towers, fusion, above, cut = {}, [], set(), []
    for var in starts:
        chain, current, after_fusion, fused, suffix = [], var, False, False, None
        while True:
            consumers = [
                layer
                for layer in layers
                if current in layer["inputs"] and layer["type"] != "softmaxloss"
            ]
            own = [c for c in consumers if c["type"] not in FUSION_TYPES]
            step = own or consumers
            if not step:
                break
            if len(step) > 1:
                raise WeightsError(
                    f"{source}: {current} feeds {', '.join(c['name'] for c in step)}: a branch "
                    f"inside a tower; this imports chains (VGG), and the file holds "
                    f"{_what_it_holds(layers)}"
                )
            layer = step[0]
            if layer["type"] in FUSION_TYPES or (after_fusion and layer["type"] == "relu"):
                if layer not in fusion:
                    fusion.append(layer)
                after_fusion, fused = layer["type"] == "conv3d", True
            else:
                if suffix is None and not chain:
                    suffix = next((s for s in SUFFIXES if layer["name"].endswith(s)), "")
                if fused and suffix and not layer["name"].endswith(suffix):
                    cut.append(
                        f"the {SUFFIXES[suffix]} tower ends at the fusion ({chain[-1]['name']} "
                        f"feeds only the fusion, and {layer['name']} above it is the other "
                        "tower's: cnn_ucf101_fusion.m's removeFuseFrom): not a whole stream, "
                        "left out"
                    )
                    chain = []
                    break
                after_fusion = False
                chain.append(layer)
            current = layer["outputs"][0] if layer["outputs"] else None
            if current is None or len(chain) > len(layers):
                break
        if not chain:
            continue
        convs = [layer for layer in chain if layer["type"] == "conv"]
        if suffix:
            tower = SUFFIXES[suffix]
        else:
            tower = "rgb" if convs and convs[0]["filters"].shape[2] == 3 else "flow"
        if tower in towers:
            raise WeightsError(f"{source}: two {tower} towers (inputs {starts})")
        for layer in chain:
            if suffix:
                layer["name"] = layer["name"].removesuffix(suffix)
        towers[tower] = chain
        if fused:
            above.add(tower)
    return towers, fusion, above, cut


def _guess_backbone(
    tower: list[dict], layers: list[dict], source: str, fusion: list[dict] = ()
) -> str:
    """vgg16 (13 convolutions and 3 fc) or vgg_m_2048 (5, LRN, 3 fc); anything else is refused
    naming what the file holds (a fused net's own fusion layers, Sum included, aside)."""
    kinds = {layer["type"] for layer in layers if layer not in fusion}
    unknown = sorted(kinds - set(DAGNN_TYPES.values()))
    convs = [layer for layer in tower if layer["type"] == "conv"]
    lrn = any(layer["type"] == "lrn" for layer in tower)
    if not unknown and "sum" not in kinds and len(convs) == 16 and not lrn:
        return "vgg16"
    if not unknown and "sum" not in kinds and len(convs) == 8 and lrn:
        return "vgg_m_2048"
    resnet = "dagnn.BatchNorm" in unknown or "bnorm" in unknown or "sum" in kinds
    what = "a ResNet (BatchNorm and Sum blocks)" if resnet else "no network we have"
    raise WeightsError(
        f"{source} holds {_what_it_holds(layers)} ({len(convs)} convolutions in a tower): "
        f"{what}; this imports vgg16 (13 conv + 3 fc) and vgg_m_2048 (5 conv, LRN, 3 fc) "
        "towers (model.backbone)"
    )


def import_dagnn(path: Path, net: dict, out: str | Path | None = None) -> list[str]:
    """Convert a MatConvNet DagNN model: one of the authors' released streams (VGG-16 RGB or
    flow, trained on UCF101) into a trained-stream file for ``train.streams``, each tower of
    one of their fused nets into one, or a DagNN ImageNet model (1000 classes) into weights
    for ``train.weights`` (:func:`convert_towers`); returns the lines to print."""
    layers = dagnn_layers(net, str(path))
    towers, fusion, above, cut = dagnn_towers(layers, str(path))
    lines = [f"read {path} (DagNN; {len(layers)} layers: {_what_it_holds(layers)})"]
    if fusion:
        lines.append(
            "fused net: its fusion layers "
            + ", ".join(
                f"{f['name']} ({f['dagnn'].removeprefix('dagnn.')}"
                + (f" {_shape(f['filters'].shape)}" if "filters" in f else "")
                + ")"
                for f in fusion
            )
            + " are not imported (train_fusion builds and trains its own fusion)"
        )
    lines += cut
    if not towers:
        raise WeightsError(
            f"{path}: no whole tower from an input variable ({_what_it_holds(layers)})"
        )
    return lines + convert_towers(path, net, towers, layers, out, "DagNN", fusion, above)


def convert_towers(
    path: Path,
    net: dict,
    towers: dict[str, list[dict]],
    layers: list[dict],
    out: str | Path | None,
    layout: str,
    fusion: list[dict] = (),
    above: set[str] = frozenset(),
) -> list[str]:
    """Check each tower (``rgb`` or ``flow``: simplenn-style layer dicts) layer by layer against
    our backbone (:func:`check_and_convert`) and write it: a trained stream (``kind`` stream,
    for ``train.streams``) or, RGB with 1000 classes, ImageNet weights (for
    ``train.weights``). Returns the lines to print."""
    from pipeline.model import count_params, imagenet_network

    norm, classes, _ = normalization(net, str(path))
    size = [int(v) for v in np.asarray(norm.get("imageSize", []), "float64").ravel()[:2]]
    if len(size) != 2:
        raise WeightsError(f"{path}: meta.normalization.imageSize is {norm.get('imageSize')!r}")
    average = np.asarray(_given(norm.get("averageImage"), np.zeros(0)), "float64")
    if average.size == 0:
        raise WeightsError(f"{path}: meta.normalization.averageImage is missing or empty")
    sha, md5 = digests(path)
    classes = classes if isinstance(classes, dict) else {}
    names, descriptions = _strings(classes.get("name")), _strings(classes.get("description"))
    lines = [f"  MD5 {md5}"]
    for tower, chain in towers.items():
        where = f"{path} ({tower} tower)"
        backbone = _guess_backbone(chain, layers, str(path), fusion)
        convs = [layer for layer in chain if layer["type"] == "conv"]
        channels, n_classes = convs[0]["filters"].shape[2], convs[-1]["filters"].shape[-1]
        own = average
        if fusion:  # a fused net's meta is its flow net's: averageImage = cat(3, flow 2L, RGB
            # 3) (cnn_ucf101_fusion.m, l. 139-141 and 187)
            own = average[..., -3:] if tower == "rgb" else average[..., :channels]
        try:
            mean, mean_note = channel_mean(own, channels)
        except WeightsError as exc:
            raise WeightsError(f"{where}: {exc} (conv1 takes {channels})") from exc
        if tower == "flow":
            mean_note = f"averageImage: {sorted({round(m, 4) for m in mean})} per flow channel"
        if tower == "flow" and (channels % 2 or channels // 2 % 2):
            raise WeightsError(
                f"{where}: conv1 takes {channels} channels; a flow stream stacks 2L channels with "
                "L even (clip.flow_stack)"
            )
        kept = [
            layer for layer in chain if layer["type"] not in ("dropout", "softmax", "softmaxloss")
        ]
        renamed = []
        try:
            model = imagenet_network(backbone, tuple(size), n_classes, mean, channels)
        except ValueError as exc:
            raise WeightsError(f"{where}: {backbone} cannot be built for {size}: {exc}") from exc
        spec = _backbone_spec(model)
        if [layer["type"] for layer in kept] == [s_["type"] for s_ in spec]:
            for layer, s_ in zip(kept, spec, strict=True):
                if layer["name"] != s_["name"]:  # fromSimpleNN names unnamed layers layerN
                    renamed.append(f"{layer['name']} as {s_['name']}")
                    layer["name"] = s_["name"]
        converted = check_and_convert(kept, spec, tuple(size), where, backbone)
        for name, arrays in converted.items():
            model.get_layer(f"rgb_{name}").set_weights(arrays)
        kind = "imagenet" if channels == 3 and n_classes == 1000 and not fusion else "stream"
        pooled = [f"{layer['name']} {layer['time']}" for layer in chain if "time" in layer]
        meta = {
            "backbone": backbone,
            "kind": kind,
            "input_size": size,
            "channels": "RGB" if tower == "rgb" else "flow",
            "mean": mean,
            "classes": names if len(names) == n_classes else [],
            "descriptions": descriptions if len(descriptions) == n_classes else [],
            "source": path.name,
            "source_sha256": sha,
            "source_layout": layout + (f" fused net, {tower} tower" if fusion else ""),
            "mean_note": mean_note,
            "flow_stack": channels // 2 if tower == "flow" else None,
            "fused_head": tower in above,
        }
        if out is not None and len(towers) == 1:
            target = Path(out)
        elif out is not None:
            target = Path(out).with_name(f"{Path(out).stem}-{tower}{Path(out).suffix or '.h5'}")
        elif kind == "imagenet":
            target = contracts.imagenet_path(backbone)
        else:
            target = contracts.released_path(path.stem + (f"-{tower}" if len(towers) > 1 else ""))
        contracts.write_pretrained(target, converted, meta)
        key = "model.backbone" if tower == "rgb" else "model.flow_backbone (or model.backbone)"
        use = (
            f"train.weights: {target}"
            if kind == "imagenet"
            else f"train.streams.{tower}: {target} ({key}: {backbone}"
            + (f", clip.flow_stack: {channels // 2}" if tower == "flow" else "")
            + f", clip.crop: {size[0]})"
        )
        lines += [
            f"{tower} tower: {backbone}, {channels} input channels, {n_classes} classes, "
            f"{count_params(model):,} parameters; layers {', '.join(converted)}",
            f"  input {size[0]}×{size[1]}, mean ({', '.join(f'{m:.2f}' for m in mean[:3])}"
            f"{', ...' if len(mean) > 3 else ''}); {mean_note}",
        ]
        if renamed:
            lines.append(f"  named by position: {', '.join(renamed)}")
        if pooled:
            lines.append(f"  3D pooling (time window, stride, pad) read as 2D: {', '.join(pooled)}")
        if meta["fused_head"]:
            lines.append(
                f"  its layers above the fusion were trained on fused features, not on "
                f"{meta['channels']} alone: as a stream, they are the fused net's head"
            )
        lines.append(f"  wrote {target}: set {use}")
    return lines


def network(path: str | Path) -> tuple[object, dict]:
    """The ImageNet classifier (:func:`pipeline.model.imagenet_network`) of a file written by
    :func:`import_matconvnet`, filled from it, and the file's meta."""
    from pipeline.model import imagenet_network

    layers, meta = contracts.read_pretrained(path)
    if meta.get("channels", "RGB") != "RGB":
        raise WeightsError(
            f"{path} is a {meta['channels']} stream: classify runs RGB weights on photos"
        )
    size = tuple(meta["input_size"])
    net = imagenet_network(meta["backbone"], size, layers["fc8"][1].size, meta["mean"])
    for name, arrays in layers.items():
        net.get_layer(f"rgb_{name}").set_weights(arrays)
    return net, meta


def classify(path: str | Path, images: list[str], top: int = 5) -> list[str]:
    """Top classes of each image under the converted weights at ``path`` (images resized to
    the input size, as MatConvNet's examples do)."""
    import cv2

    net, meta = network(path)
    h, w = meta["input_size"]
    lines = []
    names = meta["descriptions"] or meta["classes"]
    for image in images:
        bgr = cv2.imread(image, cv2.IMREAD_COLOR)
        if bgr is None:
            lines.append(f"{image}: not an image OpenCV can read")
            continue
        rgb = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)[..., ::-1]
        logits = np.asarray(net.predict(rgb[None].astype("float32"), verbose=0))[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = np.argsort(-p)[:top]
        labels = [names[i] if i < len(names) else f"class {i}" for i in best]
        lines.append(
            f"{image}: "
            + "; ".join(f"{lab} {p[i]:.3f}" for lab, i in zip(labels, best, strict=True))
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.weights",
        description="Weights from MatConvNet .mat files: ImageNet weights (simplenn or DagNN) "
        "and the authors' released UCF101 streams and fused nets (DagNN).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser(
        "import", help="convert a MatConvNet .mat (simplenn or DagNN), checked layer by layer"
    )
    imp.add_argument(
        "mat",
        help=f"imagenet-vgg-m-2048.mat (from {MATCONVNET_URL}), or a DagNN model: the authors' "
        "ucf101-img-vgg16-split1.mat / ucf101-TVL1flow-vgg16-split1.mat streams or a fused net",
    )
    imp.add_argument(
        "--out",
        help=f"default: {contracts.imagenet_path(BACKBONE)} for ImageNet weights, "
        f"{contracts.RELEASED_DIR}/<name>.h5 for a trained stream (-<tower> for a fused net's)",
    )
    cls = sub.add_parser("classify", help="top-5 classes of photos under imported RGB weights")
    cls.add_argument("weights", help="a file written by import (ImageNet, or an RGB stream)")
    cls.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "import":
            with contracts.stage_lock("weights"), contracts.disk_full_guard(contracts.MODELS_DIR):
                lines = import_matconvnet(args.mat, args.out)
        else:
            lines = classify(args.weights, args.images)
    except PipelineError as exc:
        sys.exit(f"weights: {exc}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
