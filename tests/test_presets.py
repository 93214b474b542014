"""The real-data presets of docs/data.md must be valid `dvc exp run -S` lines for params.yaml."""

import re
import shlex

import pytest

from pipeline.model import apply_overrides, check_fusion
from pipeline.params import parse_params

from .conftest import ROOT


def _preset(name: str) -> list[str]:
    text = (ROOT / "docs/data.md").read_text()
    block = re.search(rf"```bash\n# preset: {name}\n(.*?)```", text, re.S)
    assert block, f"docs/data.md has no '# preset: {name}' block"
    command = block.group(1)[block.group(1).index("dvc exp run") :].replace("\\\n", " ")
    args = shlex.split(command)
    return [args[i + 1] for i, a in enumerate(args) if a == "-S"]


@pytest.mark.parametrize("name, layout", [("ucf101", "ucf101"), ("hmdb51", "hmdb51")])
def test_presets_are_the_papers_settings(name, layout, repo_params):
    params = parse_params(apply_overrides(repo_params, _preset(name)))
    check_fusion(params)
    assert params.data.layout == layout and params.data.split == 1
    c, f = params.clip, params.fusion
    assert (c.frames, c.stride, c.flow_stack, c.crop) == (5, 5, 10, 224)
    assert params.model.backbone == "vgg16" and params.train.weights == "imagenet"
    assert (f.method, f.layer, f.temporal, f.also_late) == ("conv", "relu5", "conv3d_pool3d", True)
    assert params.flow.size == 256 and params.train.optimizer == "sgd"
