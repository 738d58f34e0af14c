import json

import numpy as np
import pytest

from tests.conftest import bench_module

requests_for = bench_module("request_format").requests_for

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def contract(tmp_path, layout):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "preprocessing.json").write_text(
        json.dumps({"input": "image", "layout": layout, "mean": MEAN, "std": STD})
    )
    return tmp_path


def test_float_graphs_get_normalized_channels_first_and_raw_graphs_the_pixels(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (1, 4, 5, 3), dtype=np.uint8)
    (raw,) = requests_for(contract(tmp_path / "a", "NHWC uint8, RGB"), [image])
    assert raw is image and raw.nbytes == 60
    (floats,) = requests_for(contract(tmp_path / "b", "NCHW, RGB"), [image])
    assert floats.dtype == np.float32 and floats.shape == (1, 3, 4, 5)
    assert floats.nbytes == 4 * raw.nbytes
    channel = 2
    expected = (image[0, :, :, channel] / 255.0 - MEAN[channel]) / STD[channel]
    assert np.allclose(floats[0, channel], expected, atol=1e-6)


def test_an_unknown_layout_is_named(tmp_path):
    with pytest.raises(SystemExit, match="unknown input layout 'CHW'"):
        requests_for(contract(tmp_path, "CHW"), [])
