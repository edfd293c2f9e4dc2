"""LPIPS and I3D: weight files in the real layouts load (random weights from the tool), clear errors,
forward properties, and the full protocol run through the exact loading path."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from unianimate.metrics.i3d import InceptionI3d, load_i3d
from unianimate.metrics.lpips import LPIPS, heads_from_lpips, load_lpips
from unianimate.metrics.protocol import RANDOM_WEIGHTS, EvalProtocol, VideoMetrics

ROOT = Path(__file__).resolve().parents[1]


# Tiny inputs: intra-op threads cost more than they save (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("mtmw", ROOT / "tools" / "make_tiny_metric_weights.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.make_tiny_metric_weights(tmp_path_factory.mktemp("metric_weights"))


@pytest.fixture(scope="module")
def lpips(weights) -> LPIPS:
    return load_lpips(weights["lpips_vgg"], weights["lpips_heads"])


@pytest.fixture(scope="module")
def i3d(weights) -> InceptionI3d:
    return load_i3d(weights["i3d"])


def test_frozen(lpips, i3d):
    for model in (lpips, i3d):
        assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_lpips_round_trip(weights, lpips):
    vgg = load_file(str(weights["lpips_vgg"]))
    heads = torch.load(weights["lpips_heads"], weights_only=True)
    state = lpips.state_dict()
    assert all(torch.equal(state[k], v) for k, v in vgg.items())
    assert all(torch.equal(state[f"heads.{i}.weight"], heads[f"lin{i}.model.1.weight"]) for i in range(5))
    # The same trunk as a torchvision .pth (with classifier keys, which are ignored) gives equal outputs.
    pth = weights["lpips_vgg"].with_name("vgg16_torchvision_layout.pth")
    torch.save({**vgg, "classifier.0.weight": torch.zeros(2, 2)}, pth)
    again = load_lpips(pth, weights["lpips_heads"])
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(lpips(x, y), again(x, y))


def test_lpips_heads_adapter_maps_every_key_once():
    upstream = {
        f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), float(i))
        for i, c in enumerate([64, 128, 256, 512, 512])
    }
    mapped = heads_from_lpips(upstream)
    assert len(mapped) == len(upstream) and set(mapped) == {f"heads.{i}.weight" for i in range(5)}
    assert all(mapped[f"heads.{i}.weight"].flatten()[0] == i for i in range(5))
    with pytest.raises(KeyError, match="lin0.model.1.weight"):
        heads_from_lpips({k.replace("lin4", "lin5"): v for k, v in upstream.items()})


def test_lpips_properties(lpips):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 24, generator=g) * 2 - 1, torch.rand(2, 3, 32, 24, generator=g) * 2 - 1
    assert torch.equal(lpips(x, x), torch.zeros(2))
    assert torch.allclose(lpips(x, y), lpips(y, x), rtol=1e-5, atol=1e-7)
    near = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert (lpips(x, y) > lpips(x, near)).all() and (lpips(x, near) > 0).all()


def test_missing_and_wrong_files_name_the_layout(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="rgb_imagenet.pt"):
        load_i3d(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="features.0.weight"):
        load_lpips(tmp_path / "nope.safetensors", weights["lpips_heads"])
    with pytest.raises(FileNotFoundError, match="lin0.model.1.weight"):
        load_lpips(weights["lpips_vgg"], tmp_path / "nope.pth")
    bad = torch.load(weights["i3d"], weights_only=True)
    bad["Mixed_3b.b0.conv.weight"] = bad.pop("Mixed_3b.b0.conv3d.weight")
    torch.save(bad, tmp_path / "bad_i3d.pt")
    with pytest.raises(KeyError, match="Mixed_3b.b0.conv3d.weight"):
        load_i3d(tmp_path / "bad_i3d.pt")
    vgg = load_file(str(weights["lpips_vgg"]))
    vgg.pop("features.28.bias")
    torch.save(vgg, tmp_path / "bad_vgg.pth")
    with pytest.raises(KeyError, match="features.28.bias"):
        load_lpips(tmp_path / "bad_vgg.pth", weights["lpips_heads"])


def test_i3d_round_trip_and_shapes(weights, i3d):
    state = torch.load(weights["i3d"], weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in state)  # like the 2018 file
    own = i3d.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    x = torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        logits = i3d(x)
        assert logits.shape == (2, 400)
        assert i3d.trunk(x).shape == (2, 1024, 2, 1, 1)
        assert i3d.Conv3d_1a_7x7(x).shape == (2, 64, 8, 16, 16)  # TF SAME padding, stride 2
    # A file that does carry num_batches_tracked (saved by current PyTorch) loads too, same outputs.
    full = weights["i3d"].with_name("i3d_with_counters.pt")
    torch.save(i3d.state_dict(), full)
    with torch.no_grad():
        assert torch.equal(load_i3d(full)(x), logits)


def test_i3d_at_224_matches_port_pooling(i3d):
    # The standard input: a 16-frame 224x224 clip. Mixed_5c is then 2x7x7 and the port's fixed
    # AvgPool3d((1, 7, 7)) -> logits -> squeeze -> mean over time equals our forward.
    x = torch.rand(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        feats = i3d.trunk(x)
        assert feats.shape == (1, 1024, 2, 7, 7)
        port = i3d.logits(F.avg_pool3d(feats, (1, 7, 7), stride=1)).squeeze(3).squeeze(3).mean(2)
        assert torch.allclose(i3d(x), port, rtol=1e-5, atol=1e-5)


def test_protocol_with_random_weights(weights):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, 16, generator=g)  # 16x16 is the smallest VGG16 frame
    generated = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    paths = {k: str(v) for k, v in weights.items()}
    out = {}
    for mode in ("standard", "disco_compat"):
        metrics = VideoMetrics(EvalProtocol(resolution=(16, 16), mode=mode, i3d_size=16, **paths))
        metrics.update(generated, target)
        metrics.update(target, target)
        out[mode] = metrics.compute()
        assert out[mode]["weights"] == RANDOM_WEIGHTS
        assert out[mode]["lpips"] > 0 and out[mode]["fvd"] >= 0
        # 16-frame videos: one clip each, so both modes have one sample per video.
        assert out[mode]["fvd_samples"] == 4
    # LPIPS input range is the documented difference: [-1, 1] vs [0, 1] give different values.
    assert out["standard"]["lpips"] != pytest.approx(out["disco_compat"]["lpips"], rel=1e-3)


def test_fvd_samples_per_clip_or_per_video(weights):
    # 32-frame videos: standard takes each 16-frame clip as a sample, disco_compat one per video.
    video = torch.rand(2, 3, 32, 16, 16, generator=torch.Generator().manual_seed(1))
    for mode, samples in (("standard", 4), ("disco_compat", 2)):
        metrics = VideoMetrics(
            EvalProtocol(resolution=(16, 16), mode=mode, i3d=str(weights["i3d"]), i3d_size=16)
        )
        metrics.update(video, video)
        result = metrics.compute()
        assert result["fvd_samples"] == samples and abs(result["fvd"]) < 1e-3
        assert "lpips" not in result and result["weights"] == RANDOM_WEIGHTS


def test_random_weights_are_never_seen_half_written(tmp_path, monkeypatch):
    """Every rank of a multi-process ``unianimate test`` (tests/test_ddp.py) writes the same random
    weight files into one folder, then loads them. Written in place, a rank could load a file
    another rank was rewriting: the DDP metrics test failed on a busy machine, passed alone.
    Here a second 'rank' reads every file in the middle of each write."""
    import io

    from unianimate.metrics import random_weights

    paths = random_weights.make_tiny_metric_weights(tmp_path)  # the first rank's files
    real_save = torch.save

    def save_and_read_midway(obj, f):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        with open(f, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            load_file(paths["lpips_vgg"])
            for key in ("lpips_heads", "i3d"):
                torch.load(paths[key], weights_only=True)  # must be whole
            out.write(data[len(data) // 2 :])

    monkeypatch.setattr(random_weights.torch, "save", save_and_read_midway)
    again = random_weights.make_tiny_metric_weights(tmp_path)
    monkeypatch.undo()
    assert again == paths and not list(tmp_path.glob(".*.tmp"))
    load_i3d(paths["i3d"])


def test_random_weights_leave_the_global_rng_alone(tmp_path):
    from unianimate.metrics.random_weights import make_tiny_metric_weights

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_metric_weights(tmp_path)
    assert torch.equal(torch.rand(3), expected)
