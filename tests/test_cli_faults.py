"""Bad input and misuse of the ``unianimate`` CLI: one line naming the input and what was expected,
a non-zero exit, before any work; ``--ckpt_path last`` across versions; predict never overwrites
and never runs untrained weights unasked. Real files throughout (checkpoints written by real runs,
a random-bytes checkpoint, a corrupt jpg, keypoint files, an RGB mp4); the CLI as a subprocess
where the exit code is the behaviour, in-process (``entry_point``) where only the message is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scale_helpers import REPO, environment, fit_command, make_data, records, write_overlay

from unianimate import cli
from unianimate.errors import InputError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("faults_data"), num_train=8)


def versioned_overlay(data: Path, run_dir: Path, max_steps: int, extra: dict | None = None) -> Path:
    """Checkpoints in <run_dir>/version_N/checkpoints, a new N per run, as with the demo's logger."""
    logger = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": str(run_dir), "name": ""},
    }
    return write_overlay(data, run_dir, max_steps, 1000, {"trainer.logger": logger, **(extra or {})})


def run_cli(
    command: list[str], data: Path, record: Path, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, env=environment(data, record), capture_output=True, text=True, timeout=timeout
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_ckpt_path_last_resumes_the_newest_checkpoint_across_versions(data, tmp_path, caplog):
    """Before: every run got a new version_N and ``last`` was looked for in the new, empty one:
    one warning, then training from step 0."""
    run_dir, record = tmp_path / "run", tmp_path / "record"
    demo = ["--config", str(REPO / "configs" / "demo.yaml")]
    cli.main(["fit", *demo, "--config", str(versioned_overlay(data, run_dir, 2))])
    cli.main(["fit", *demo, "--config", str(versioned_overlay(data, run_dir, 3)), "--ckpt_path", "last"])
    assert f"resuming from {run_dir / 'version_0' / 'checkpoints' / 'last.ckpt'} (step 2)" in caplog.text
    cli.main(["fit", *demo, "--config", str(versioned_overlay(data, run_dir, 4)), "--ckpt_path", "last"])
    assert f"resuming from {run_dir / 'version_1' / 'checkpoints' / 'last.ckpt'} (step 3)" in caplog.text
    assert [r["step"] for r in records(record)] == [1, 2, 3, 4]  # never from step 0 again
    saved = torch.load(run_dir / "version_2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4


def test_ckpt_path_last_without_a_checkpoint(data, tmp_path, monkeypatch, capsys, caplog):
    run_dir, record = tmp_path / "run", tmp_path / "record"
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--config",
        str(versioned_overlay(data, run_dir, 1)),
    ]
    code, err = in_process(monkeypatch, capsys, [*args, "--ckpt_path", "last"])
    assert code == 2 and records(record) == []
    assert err.strip().splitlines()[-1].startswith(f"error: --ckpt_path last: no last.ckpt under {run_dir}")
    cli.main([*args, "--ckpt_path", "last_if_any"])
    assert (
        "--ckpt_path last_if_any: no last.ckpt under" in caplog.text and "starting from step 0" in caplog.text
    )
    assert [r["step"] for r in records(record)] == [1]


# ---- one line for every mistake, before any work ------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory) -> dict[str, Path]:
    """A real 1-step checkpoint of the tiny model, one of a smaller model, and random bytes."""
    root = tmp_path_factory.mktemp("faults_ckpts")
    out = {}
    for name, extra in (
        ("tiny", {}),
        ("other", {"model.denoiser.init_args.unet.init_args.channel_mult": [1, 1]}),
    ):
        run_dir = root / name
        sys.path.insert(0, str(data))  # the overlay's recorder.Recorder
        os.environ["UA_RECORD"] = str(root / "record")
        try:
            cli.main(
                [
                    "fit",
                    "--config",
                    str(REPO / "configs" / "demo.yaml"),
                    "--config",
                    str(write_overlay(data, run_dir, 1, 1, extra)),
                ]
            )
        finally:
            sys.path.remove(str(data))
            del os.environ["UA_RECORD"]
        out[name] = run_dir / "checkpoints" / "last.ckpt"
    out["noise"] = root / "noise.ckpt"
    out["noise"].write_bytes(np.random.default_rng(0).bytes(5000))
    return out


def overlay_args(data: Path, run_dir: Path) -> list[str]:
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--config",
        str(write_overlay(data, run_dir, 1, 1)),
    ]


@pytest.fixture(autouse=True)
def recorder_importable(data, tmp_path, monkeypatch):
    """The overlays name ``recorder.Recorder`` (scale_helpers), for in-process runs too."""
    monkeypatch.syspath_prepend(str(data))
    monkeypatch.setenv("UA_RECORD", str(tmp_path / "record"))


def in_process(monkeypatch, capsys, args: list[str]) -> tuple[int, str]:
    """``unianimate ARGS`` through the console script's entry point: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["unianimate", *args])
    with pytest.raises(SystemExit) as stopped:
        cli.entry_point()
    return stopped.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--data.init_args.height=62"], "data height=62: expected a positive multiple of 16"),
        (["--data.init_args.height=63"], "data height x width = 63x48: expected positive even sizes"),
        (["--data.init_args.num_frames=0"], "data num_frames=0: expected at least 1 frame per clip"),
        (["--data.init_args.num_frames=1"], "data num_frames=1: chain-mode sampling"),
        (
            ["--data.init_args.train_shards=/nonexistent/shards"],
            "train_shards: nothing at '/nonexistent/shards'",
        ),
        (
            ["--model.encoders.init_args.vae_path={clip}"],
            "vae_path: '{clip}' holds a ['CLIPModel'] model; expected a VAE",
        ),
        (
            [
                "--model.encoders.init_args.clip_path={tmp}/clpi",
                "--model.encoders.init_args.make_tiny_if_missing=true",
            ],
            "clip_path: no CLIP model (transformers CLIPModel) at '{tmp}/clpi'",
        ),
        (
            ["--ckpt_path={ckpt_noise}"],
            "ckpt_path: '{ckpt_noise}' is not a checkpoint (not a torch.save archive)",
        ),
        (["--ckpt_path={ckpt_other}"], "ckpt_path: '{ckpt_other}' is a checkpoint of another model ("),
        (["--ckpt_path={tmp}/missing.ckpt"], "ckpt_path: no file at '{tmp}/missing.ckpt'"),
    ],
)
def test_fit_mistakes_are_one_line(data, checkpoints, tmp_path, monkeypatch, capsys, args, expected):
    """Before: tracebacks (127 lines for height 62, 482 of size mismatch for another model), torch's
    advice to set weights_only=False, a diffusers OSError, a random CLIP silently created at a
    misspelled path, or (num_frames 1) training until the first validation."""
    names = {"tmp": tmp_path, "clip": data / "clip", **{f"ckpt_{k}": v for k, v in checkpoints.items()}}
    args, expected = [a.format(**names) for a in args], expected.format(**names)
    code, err = in_process(monkeypatch, capsys, ["fit", *overlay_args(data, tmp_path / "run"), *args])
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith(f"error: {expected}"), err[-3000:]
    assert "Traceback" not in err and "weights_only=False" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # no work started
    assert not (tmp_path / "clpi").exists()  # a path given explicitly is never created


def test_another_model_names_the_sizes_that_differ(data, checkpoints, tmp_path, monkeypatch, capsys):
    code, err = in_process(
        monkeypatch,
        capsys,
        ["fit", *overlay_args(data, tmp_path / "run"), f"--ckpt_path={checkpoints['other']}"],
    )
    line = err.strip().splitlines()[-1]
    assert (
        "tensor(s) of other sizes, e.g. " in line and "in the file vs (" in line and "in this model" in line
    )


def test_the_installed_cli_exits_2_with_one_line(data, checkpoints, tmp_path, monkeypatch):
    result = run_cli(
        fit_command(write_overlay(data, tmp_path / "run", 1, 1), f"--ckpt_path={checkpoints['noise']}"),
        data,
        tmp_path / "r",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last_line(result).startswith(f"error: ckpt_path: '{checkpoints['noise']}' is not a checkpoint")
    monkeypatch.setenv("UNIANIMATE_TRACEBACK", "1")  # the full traceback when asked
    monkeypatch.setattr(
        sys,
        "argv",
        ["unianimate", "fit", *overlay_args(data, tmp_path / "run"), f"--ckpt_path={checkpoints['noise']}"],
    )
    with pytest.raises(InputError, match="is not a checkpoint"):
        cli.entry_point()


def test_convert_checkpoint_rejects_random_bytes_in_one_line(checkpoints, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "tools/convert_checkpoint.py",
            "official",
            str(checkpoints["noise"]),
            str(tmp_path / "x.safetensors"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and "weights_only" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: src: '{checkpoints['noise']}' is not a checkpoint")
    )


# ---- predict ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def animate_inputs(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    from datamodules.format import encode_mp4
    from datamodules.synthetic import make_synthetic_video

    root = tmp_path_factory.mktemp("animate_inputs")
    frames, pose = make_synthetic_video(identity=3, num_frames=6, height=64, width=48, seed=7)
    Image.fromarray(frames[0]).save(root / "ref.png")
    Image.fromarray(frames[3]).save(root / "ref2.png")
    (root / "pose.npz").write_bytes(pose.to_npz_bytes())
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(2000))
    np.savez(root / "wrong_keys.npz", points=np.zeros((6, 20, 3), np.float32))
    (root / "empty.json").write_text("")
    (root / "rgb.mp4").write_bytes(encode_mp4(frames, 8.0))  # the video itself, not skeletons
    return root


def predict_args(data: Path, run_dir: Path, reference: Path, pose: Path, *extra: str) -> list[str]:
    overlay = write_overlay(data, run_dir, 1, 1)
    config = yaml.safe_load(overlay.read_text())
    config["trainer"]["callbacks"].append({"class_path": "callbacks.prediction_writer.PredictionVideoWriter"})
    overlay.write_text(yaml.safe_dump(config))
    return [
        "predict",
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--config",
        str(overlay),
        "--config",
        str(REPO / "configs" / "animate.yaml"),
        f"--data.init_args.reference={reference}",
        f"--data.init_args.driving={pose}",
        "--trainer.logger=false",
        *extra,
    ]


@pytest.mark.parametrize(
    "reference, pose, expected",
    [
        ("missing.png", "pose.npz", "reference: no file at '{root}/missing.png'"),
        ("corrupt.jpg", "pose.npz", "reference: '{root}/corrupt.jpg' is not a readable image"),
        ("ref.png", "wrong_keys.npz", "driving: '{root}/wrong_keys.npz' is not a keypoint file (KeyError"),
        ("ref.png", "empty.json", "driving: '{root}/empty.json' is not a keypoint file (JSONDecodeError"),
        (
            "ref.png",
            "rgb.mp4",
            "driving: '{root}/rgb.mp4' does not look like rendered skeletons (0% black pixels",
        ),
    ],
)
def test_predict_input_mistakes_are_one_line(
    data, checkpoints, animate_inputs, tmp_path, monkeypatch, capsys, reference, pose, expected
):
    """Before: tracebacks, some without the file's name; an RGB video accepted as skeletons."""
    args = predict_args(
        data,
        tmp_path,
        animate_inputs / reference,
        animate_inputs / pose,
        f"--ckpt_path={checkpoints['tiny']}",
    )
    code, err = in_process(monkeypatch, capsys, args)
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        f"error: {expected.format(root=animate_inputs)}"
    ), err[-3000:]
    assert "Traceback" not in err and not list(tmp_path.rglob("*.mp4"))


def test_predict_refuses_untrained_weights_unless_asked(data, animate_inputs, tmp_path, monkeypatch, capsys):
    """Before: predict without --ckpt_path animated with random weights and exited 0."""
    args = predict_args(data, tmp_path, animate_inputs / "ref.png", animate_inputs / "pose.npz")
    code, err = in_process(monkeypatch, capsys, args)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: predict: no trained weights given")
    assert not list(tmp_path.rglob("*.mp4"))
    cli.main([*args, "--allow_random_weights=true"])
    assert (tmp_path / "predict" / "pose.mp4").is_file()


def test_predict_never_overwrites(data, checkpoints, animate_inputs, tmp_path):
    """Before: a second predict with the same pose file and another reference replaced the first
    run's videos without a word."""
    written = []
    for reference in ("ref.png", "ref2.png"):
        args = predict_args(
            data,
            tmp_path,
            animate_inputs / reference,
            animate_inputs / "pose.npz",
            f"--ckpt_path={checkpoints['tiny']}",
        )
        cli.main(args)
        written.append(sorted(p.name for p in (tmp_path / "predict").glob("*.mp4")))
    first = ["pose.mp4", "pose_compare.mp4", "pose_pose.mp4"]
    assert written[0] == first
    assert written[1] == sorted(first + ["pose-1.mp4", "pose-1_compare.mp4", "pose-1_pose.mp4"])


# ---- training data that never decodes -------------------------------------------------------


@pytest.mark.parametrize("workers", [1])  # the error comes back from a DataLoader worker
def test_fit_on_data_that_never_decodes_stops_with_one_line(data, tmp_path, workers):
    """Before: 'skipping rest of shard' forever (1.25 GB of log in 10 minutes), SIGTERM ignored."""
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "x.tar").write_bytes(np.random.default_rng(0).bytes(20_000))
    overlay = write_overlay(data, tmp_path / "run", 5, 5)
    extra = [f"--data.init_args.train_shards={shards}", f"--data.init_args.num_workers={workers}"]
    result = run_cli(fit_command(overlay, *extra), data, tmp_path / "record", timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result).startswith(
        "error: no usable sample in 200 tries in a row from 1 shard(s) (last tried: "
    )
    assert f"{shards / 'x.tar'}); skipped so far: bad_tar=200." in last_line(result)


def test_fit_prints_the_skip_counts_at_the_end(data, tmp_path, capsys):
    """Before: the skip counts were only in the logger (TensorBoard)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "good.tar").symlink_to(next((data / "data" / "train").glob("*.tar")))
    (shards / "noise.tar").write_bytes(np.random.default_rng(0).bytes(20_000))
    overlay = write_overlay(data, tmp_path / "run", 10, 10, {"data.init_args.resampled": False})
    cli.main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            "--config",
            str(overlay),
            f"--data.init_args.train_shards={shards}",
        ]
    )
    assert "data: 1 training samples skipped (bad_tar=1)" in capsys.readouterr().out


def test_limit_flags_keep_the_integer_typed(data, tmp_path, monkeypatch):
    """``--trainer.limit_val_batches 1`` is one batch (int), not 100% (1.0), however it is given.
    (Reported as stored as 1.0; with jsonargparse 4.53 / Lightning 2.6.6 it is kept: this pins it.)"""
    monkeypatch.setattr(cli.UniAnimateCLI, "instantiate_classes", lambda self: None)
    base = [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--config",
        str(write_overlay(data, tmp_path / "r", 1, 1)),
    ]
    (tmp_path / "limits.yaml").write_text("trainer:\n  limit_val_batches: 1\n  limit_train_batches: 3\n")
    for extra in (
        ["--trainer.limit_val_batches", "1", "--trainer.limit_train_batches", "3"],
        ["--trainer.limit_val_batches=1", "--trainer.limit_train_batches=3"],
        ["--config", str(tmp_path / "limits.yaml")],
    ):
        trainer = cli.main([*base, *extra], run=False).config.trainer
        assert (trainer.limit_val_batches, trainer.limit_train_batches) == (1, 3)
        assert type(trainer.limit_val_batches) is int and type(trainer.limit_train_batches) is int
