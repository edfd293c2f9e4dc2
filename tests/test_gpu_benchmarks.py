"""The issue-16 GPU benchmarks, smoke-tested on the CPU at tiny size: they run, and their tables
have the promised structure (no timing assertions: the numbers are only meaningful on a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS / "gpu"))

import bench_frames  # noqa: E402
import bench_inference  # noqa: E402
import gpu_check_colour  # noqa: E402
import gpu_check_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
SIZE = dict(height=32, width=32)  # latent 4 x 4: a multiple of the tiny UNet's 2


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A run_all.sh work folder filled by the tiny CPU runs of the inference and frames benchmarks."""
    work = tmp_path_factory.mktemp("gpu_work")
    bench_inference.run(
        ["float32:resident", "bfloat16:offload"],
        preset="tiny",
        encoders_kind="tiny",
        device="cpu",
        frames=2,
        steps=2,
        workdir=work / "encoders",
        json_path=work / "inference.json",
        **SIZE,
    )
    bench_frames.run(
        [3, 2],
        ["transformer", "mamba"],
        preset="tiny",
        device="cpu",
        dtype="float32",
        scan_backend="torch",
        json_path=work / "frames.json",
        **SIZE,
    )
    return work


def test_inference_rows_and_table(work):
    result = json.loads((work / "inference.json").read_text())
    meta, rows = result["meta"], result["rows"]
    assert meta["sampler"]["guidance_scale"] == 2.5 and meta["sampler"]["spacing"] == "release"
    assert meta["timesteps"] == 2 and meta["frames"] == 2
    assert [(r["dtype"], r["encoders"]) for r in rows] == [("float32", "resident"), ("bfloat16", "offload")]
    for r in rows:
        assert "error" not in r, r
        phases = r["s_encode"] + r["s_sample"] + r["s_decode"]
        assert r["s_video"] == pytest.approx(phases) and r["peak_gib"] > 0
        # two denoiser passes (guidance) per timestep
        assert r["ms_per_denoiser_call"] == pytest.approx(1e3 * r["s_sample"] / 4)
    lines = bench_inference.format_table(result).splitlines()
    assert lines[2].split()[:4] == ["dtype", "CLIP/VAE", "s/video", "encode"]
    assert [line.split()[:2] for line in lines[4:]] == [["float32", "resident"], ["bfloat16", "offload"]]


def test_inference_bad_variant_is_a_row_not_a_crash(tmp_path):
    result = bench_inference.run(
        ["float32:sideways"], "tiny", "tiny", "cpu", frames=2, steps=1, workdir=tmp_path, **SIZE
    )
    assert "expected resident or offload" in result["rows"][0]["error"]


def test_frames_rows_table_and_plot(work, tmp_path):
    result = json.loads((work / "frames.json").read_text())
    rows = result["rows"]
    assert [(r["frames"], r["temporal"]) for r in rows] == [
        (2, "transformer"),
        (2, "mamba"),
        (3, "transformer"),
        (3, "mamba"),
    ]
    assert all("error" not in r and r["step_s"] > 0 and r["peak_gib"] > 0 for r in rows), rows
    assert result["meta"]["checkpointing"] is True
    lines = bench_frames.format_table(result).splitlines()
    assert lines[2].split() == ["temporal", "scan", "frames", "s/step", "peak", "GiB"]
    assert len(lines) == 4 + len(rows)
    pytest.importorskip("matplotlib")
    bench_frames.plot(result, tmp_path / "frames.png")
    assert (tmp_path / "frames.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_frames_one_failing_config_leaves_the_others():
    # mamba_ssm is not installed on a CPU machine: its rows carry the error, attention's are measured
    result = bench_frames.run(
        [2], ["transformer", "mamba"], "tiny", "cpu", "float32", scan_backend="mamba_ssm", **SIZE
    )
    attention, mamba = result["rows"]
    assert attention["step_s"] > 0
    assert "mamba" in mamba["error"].lower() and "step_s" not in mamba


def test_model_check_variants_share_the_flop_count():
    args = gpu_check_model.parser().parse_args(
        "--device cpu --preset tiny --height 32 --width 32 --frames 2 --repeats 1 --matmul-n 128".split()
        + ["--backends", "torch", "--variants", "eager", "channels_last", "--dtype", "float32"]
    )
    result = gpu_check_model.run_configs(args)
    eager, channels_last, mamba = result["rows"]
    assert (eager["variant"], channels_last["variant"], mamba["temporal"]) == (
        "eager",
        "channels_last",
        "mamba",
    )
    assert eager["tflop"] == channels_last["tflop"] > 0 and mamba["tflop"] > 0
    assert all(0 < r["mfu"] and r["step_s"] > 0 for r in result["rows"])
    assert len(gpu_check_model.format_table(result).splitlines()) == 5 + 3


def test_build_leaves_no_all_zero_parameter():
    # zero heads would make every gradient upstream of the output zero (and timings of zeros)
    model = gpu_check_model.build("transformer", "torch", "tiny", "cpu", torch.float32)
    assert all(p.any() for p in model.parameters())
    x, t, cond = gpu_check_model.make_inputs(model, 2, 32, 32)
    model(x, t, cond).square().mean().backward()
    assert model.unet.conv_in.weight.grad.abs().sum() > 0


def test_channels_last_variant_converts_the_2d_convs():
    model = gpu_check_model.apply_variant(
        gpu_check_model.build("transformer", "torch", "tiny", "cpu", torch.float32), "channels_last"
    )
    weight = model.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_colour_check_covers_every_triple_and_agrees_on_cpu():
    planes = gpu_check_colour.exhaustive_planes(64).flatten(1).long()
    n = 512 * 512
    luma = planes[:, :n].view(64, 512, 512)
    chroma = planes[:, n:].view(64, 2, 256, 256).repeat_interleave(2, 2).repeat_interleave(2, 3)
    triples = luma * 65536 + chroma[:, 0] * 256 + chroma[:, 1]
    assert torch.equal(
        torch.bincount(triples.flatten(), minlength=256**3), torch.ones(256**3, dtype=torch.long)
    )
    rows = gpu_check_colour.run("cpu", luma_frames=1)
    assert len(rows) == 5 and all(r["equal"] and r["max_abs_diff"] == 0 for r in rows)


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> None:
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)


def _check_wheels(folder: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TOOLS / "gpu" / "check_wheels.py"), str(folder)]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_check_wheels_finds_missing_requirements_and_duplicates(tmp_path):
    # met: by a wheel in the folder, by the GPU image, by a marker that is false on Python 3.12
    _wheel(
        tmp_path,
        "pydantic",
        "2.14.4",
        ["pydantic-core==2.50.5", "typing-extensions>=4.6", 'tomli; python_version < "3.11"'],
    )
    _wheel(tmp_path, "pydantic_core", "2.50.5", [])
    _wheel(
        tmp_path,
        "jsonargparse",
        "4.53.0",
        ['docstring-parser>=0.17; extra == "signatures"', 'jsonnet; extra == "jsonnet"'],
    )
    _wheel(tmp_path, "docstring_parser", "0.18.0", [])
    _wheel(tmp_path, "typing_extensions", "4.16.0", [])
    ok = _check_wheels(tmp_path)
    assert ok.returncode == 0, ok.stdout
    assert "5 wheels" in ok.stdout
    # not met: a package neither here nor on the image; an image version below the floor; two versions
    _wheel(tmp_path, "diffusers", "0.42.1", ["importlib_metadata", "huggingface-hub>=9"])
    _wheel(tmp_path, "pydantic_core", "2.50.4", [])
    bad = _check_wheels(tmp_path)
    assert bad.returncode == 1
    problems = [line for line in bad.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 3, bad.stdout
    assert any("importlib_metadata" in p for p in problems) and any(
        "huggingface-hub is 1.33.0" in p for p in problems
    )
    assert any("two versions of pydantic-core" in p for p in problems)


def test_summary_table_from_a_work_folder(work, tmp_path, capsys):
    import summarize

    (work / "status.tsv").write_text("inference\t0\t9\nframes\t124\t140\n")
    (work / "frames.log").write_text("step 3\nKilled at the limit\n")
    sys.argv = ["summarize.py", str(work), str(tmp_path)]
    summarize.main()
    printed = capsys.readouterr().out
    table = printed[printed.index("| check | configuration") :].splitlines()
    rows = [line for line in table if line.startswith("| 2 inference") or line.startswith("| 3 frames")]
    assert len(rows) == 2 + 4
    assert any(line.startswith("| frames | 124 (time limit) | 140 | Killed at the limit") for line in table)
    assert "| mfu | not run | - |  |" in table
    assert {p.name for p in tmp_path.iterdir()} >= {"results.md", "results.json", "logs.txt"}
    assert json.loads((tmp_path / "results.json").read_text())["frames"]["rows"][0]["frames"] == 2
