"""The LightningDataModule over WebDataset video + pose shards (SPEC §5).

Every loader yields :class:`unianimate.batch.VideoBatch` (its docstring gives the float fields as
the LightningModule sees them). The loaders yield the pictures as uint8, as decoded and drawn:
``video`` (b, f, 3H/2, W) and ``ref_image`` (b, 3H/2, W) are YUV 4:2:0 planes
(:func:`datamodules.colour.pack_yuv420`) with ``video_colour`` (b,) naming their matrix and range;
``pose`` (b, f, H, W) and ``ref_pose`` (b, H, W) are indices into
:data:`datamodules.pose_render.PALETTE` (a skeleton picture has fewer than 64 colours). That is an
eighth of the bytes of float RGB (a twelfth for the skeletons) through the workers' shared memory
and the host-to-device copy, and no colour conversion, float pass or transpose on the workers'
CPUs. ``on_after_batch_transfer`` turns them into float, channels-first tensors on the device with
:func:`to_float`, the one place pixels become float (loops and callbacks that iterate a loader
without a Trainer call the DataModule's ``on_after_batch_transfer`` themselves). With
``use_latent_cache`` the training batches carry ``latent``, ``ref_latent`` and ``clip_embed``
instead of ``video`` / ``ref_image`` (and ``video`` where the cache kept the frames).

The training loader is a ``StatefulDataLoader``: Lightning 2.x stores its ``state_dict()`` in every
checkpoint (``FitLoop.on_save_checkpoint`` -> ``loops.fit_loop.state_dict.combined_loader``) and
loads it back on ``--ckpt_path`` resume, so training continues from the same sample. Skipped
samples (too short, corrupt) are counted per reason in that state; :meth:`skip_counts` sums them.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, default_collate
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules.clips import ClipExample
from datamodules.colour import yuv420_to_rgb
from datamodules.pose_render import RELEASE_PALETTE, PoseStyle
from datamodules.stream import ShardStream, distributed_rank, expand_shards, skip_counts_from_loader_state
from unianimate import demo_cache
from unianimate.batch import VideoBatch
from unianimate.errors import InputError, MissingInputError

log = logging.getLogger(__name__)


# Workers start from a clean interpreter, not a fork of the parent: a forked worker inherits
# the parent's unreachable loader iterators, and when its garbage collector finalises one, that
# iterator tries to shut down workers that are not its children (and the error report, through
# an inherited sys.unraisablehook, corrupted a concurrent numpy parse: a sample lost as bad_pose).
WORKER_START = "forkserver"


def _local_files_missing(spec: str) -> bool:
    if "://" in spec or spec.startswith("pipe:"):
        return False
    if Path(spec).is_dir():
        return not any(Path(spec).glob("*.tar"))
    try:
        return not all(Path(url).exists() for url in expand_shards(spec))
    except MissingInputError:
        return True


# uint8 -> float lookup tables: the exact values the workers computed on the CPU before (x / 127.5 - 1
# and x / 255), on any device (CUDA divides by a scalar as a multiplication by its reciprocal).
_PIXEL_VALUES = torch.arange(256, dtype=torch.float32).div_(127.5).sub_(1.0)
_POSE_VALUES = torch.from_numpy(RELEASE_PALETTE).float() / 255.0  # (256, 3): palette index -> RGB


def _lookup(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``table[x]`` for uint8 ``x``, on x's device: shape x.shape + table.shape[1:]."""
    return table.to(x.device).index_select(0, x.flatten().int()).view(*x.shape, *table.shape[1:])


def pixels_to_float(x: torch.Tensor, colour: torch.Tensor | None) -> torch.Tensor:
    """uint8 4:2:0 (b, [f,] 3H/2, W) with ``colour`` (b,), or RGB channels-last (b, [f,] H, W, 3)
    without, -> float32 RGB channels-first (b, 3, [f,] H, W) in [-1, 1]."""
    rgb = x.movedim(-1, 1).contiguous() if colour is None else yuv420_to_rgb(x, colour)
    return _lookup(_PIXEL_VALUES, rgb)


def _pose_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 palette indices (b, [f,] H, W) -> float32 RGB channels-first (b, 3, [f,] H, W) in [0, 1]."""
    return _lookup(_POSE_VALUES, x).movedim(-1, 1).contiguous()


def collate(examples: list[dict]) -> VideoBatch:
    """Example dicts (``ClipExample``, the animate inputs) -> one uint8 :class:`VideoBatch`."""
    return VideoBatch(**default_collate(examples))


def to_float(batch: VideoBatch) -> VideoBatch:
    """uint8 pictures -> float32 RGB channels-first: ``video`` / ``ref_image`` in [-1, 1] (4:2:0
    planes when the batch has ``video_colour``, which is consumed, else RGB channels-last),
    ``pose`` / ``ref_pose`` (palette indices) in [0, 1]; float tensors and the other fields pass
    unchanged. The one place pixels become float."""
    colour, out = batch.video_colour, {"video_colour": None}
    for name in ("video", "ref_image"):
        x = getattr(batch, name)
        if x is not None and x.dtype == torch.uint8:
            out[name] = pixels_to_float(x, colour)
    for name in ("pose", "ref_pose"):
        x = getattr(batch, name)
        if x.dtype == torch.uint8:
            out[name] = _pose_to_float(x)
    return replace(batch, **out)


class _TrainFetcherLoader(StatefulDataLoader):
    """The training ``StatefulDataLoader`` as Lightning's fit loop uses it.

    - ``state_dict()`` leaves out the batches the training fetcher holds in advance: for a loader
      of unknown length ``lightning.pytorch.loops.fetchers._PrefetchDataFetcher`` draws one batch
      ahead (kept in its ``batches``), so when a checkpoint is written after step n the loader has
      already produced batch n + 1 and its plain state would resume at n + 2.
    - A new ``iter()`` while the stream has not ended (an epoch cut by ``limit_train_batches``,
      or an endless ``resampled`` stream) continues the same iterator instead of restarting the
      workers, which would drop the batches they had prefetched.
    """

    def __init__(self, *args, batches_held: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._batches_held = batches_held
        self._states_before: deque[dict] = deque(maxlen=4)  # state before each recent batch

    def __iter__(self):
        iterator = self._iterator
        if iterator is None or iterator._finished or self._initial_iter_for_state_dict:
            self._states_before.clear()
            iterator = super().__iter__()
        return _RecordStates(iterator, self._states_before)

    def state_dict(self) -> dict:
        held = self._batches_held()
        if 0 < held <= len(self._states_before):
            return self._states_before[-held]
        return super().state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._states_before.clear()
        super().load_state_dict(state_dict)


class _RecordStates:
    def __init__(self, iterator, states: deque) -> None:
        self.iterator, self.states = iterator, states

    def __iter__(self):
        return self

    def __next__(self):
        state = copy.deepcopy(self.iterator.state_dict())
        batch = next(self.iterator)
        self.states.append(state)
        return batch


class VideoPoseDataModule(L.LightningDataModule):
    """Video + pose clips from tar shards.

    ``train_shards`` / ``val_shards``: a brace pattern (``data/train-{000000..000007}.tar``), a
    directory (every ``*.tar`` in it), a ``pipe:`` command or an http(s) URL. Shards are shuffled
    per epoch (seeded by ``seed`` and the epoch) and split by rank, then by worker; with DDP give
    every rank the same number of batches (``resampled=True`` with ``limit_train_batches``, or as
    many shards per rank). ``resampled=True`` streams forever, drawing shards with replacement.
    ``shuffle_buffer > 0`` adds a sample-level shuffle buffer; resume stays exact but replays the
    epoch's raw tar stream up to the saved position. ``synthetic_root``: when set and the train
    shards are missing, ``prepare_data`` generates the demo dataset there. ``max_failed_tries``:
    tries in a row without a usable sample (a sample skipped, a shard that gave none) after which
    the stream stops with one error naming the shards and the skip counts, instead of spinning. ``pose_style``: the
    skeletons' stroke sizes, ``release`` (absolute, what the released weights saw) or
    ``proportional`` to the picture (:func:`datamodules.pose_render.stroke_sizes`; small demos).
    ``val_num_frames`` / ``test_num_frames``: clip length of validation (and the sample videos
    made from it) and of ``test`` / ``predict``; default ``num_frames``.
    ``use_latent_cache``: ``train_shards`` are latent-cache shards (:mod:`datamodules.latent_cache`,
    ``tools/cache_latents.py``), so training skips the frozen encoders. ``latent_cache_dir``: instead,
    a latent cache of the local pixel ``train_shards`` kept in this folder, made at the start of fit
    with the model's own frozen encoders, frames kept for the local-image stream, and made again
    when the shards or the encoders change (:func:`datamodules.latent_cache.ensure_latent_cache`).
    Either way validation, test and predict read their pixel shards: they are sampled and scored
    against frames.
    """

    def __init__(
        self,
        train_shards: str,
        val_shards: str | None = None,
        num_frames: int = 16,
        frame_interval: int = 1,
        height: int = 64,
        width: int = 48,
        resize: Literal["center_crop", "random_crop", "stretch"] = "center_crop",
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        resampled: bool = False,
        draw_hands: bool = True,
        draw_face: bool = False,
        pose_style: PoseStyle = "release",
        pose_jitter: bool = False,
        val_batch_size: int | None = None,
        synthetic_root: str | None = None,
        use_latent_cache: bool = False,
        latent_cache_dir: str | None = None,
        test_shards: str | None = None,
        test_num_frames: int | None = None,
        val_num_frames: int | None = None,
        max_failed_tries: int = 200,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The demo's .cache/unianimate paths resolve against the repository, not the cwd.
        train_shards, val_shards, test_shards = map(
            demo_cache.resolve, (train_shards, val_shards, test_shards)
        )
        synthetic_root = demo_cache.resolve(synthetic_root)
        if latent_cache_dir is not None and use_latent_cache:
            raise InputError(
                "data.use_latent_cache (train_shards are a latent cache) and data.latent_cache_dir (a "
                "cache of the pixel train_shards made there): set one"
            )
        self.latent_cache_dir = demo_cache.resolve(latent_cache_dir)
        self.train_shards, self.val_shards = train_shards, val_shards
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.shuffle_shards, self.shuffle_buffer, self.resampled = shuffle_shards, shuffle_buffer, resampled
        self.synthetic_root = synthetic_root
        self.max_failed_tries = max_failed_tries
        clip_args = dict(
            num_frames=num_frames,
            frame_interval=frame_interval,
            height=height,
            width=width,
            draw_hands=draw_hands,
            draw_face=draw_face,
            pose_style=pose_style,
        )
        self.train_example = ClipExample(
            resize=resize,
            pose_jitter=pose_jitter,
            use_latent_cache=use_latent_cache or latent_cache_dir is not None,
            **clip_args,
        )
        val_resize = "center_crop" if resize == "random_crop" else resize
        # Held-out clips take their reference from outside the clip (never a copy of a target frame).
        eval_args = dict(pose_jitter=False, reference_outside_clip=True)
        val_args = {**clip_args, "num_frames": val_num_frames or num_frames}
        self.val_example = ClipExample(resize=val_resize, **eval_args, **val_args)
        self.test_shards = test_shards or val_shards
        test_args = {**clip_args, "num_frames": test_num_frames or num_frames}
        self.test_example = ClipExample(resize=val_resize, **eval_args, **test_args)
        self._train_loader: StatefulDataLoader | None = None

    to_float = staticmethod(to_float)

    def on_after_batch_transfer(self, batch: VideoBatch, dataloader_idx: int) -> VideoBatch:
        return to_float(batch)

    def prepare_data(self) -> None:
        if self.synthetic_root is not None and _local_files_missing(self.train_shards):
            if not Path(self.train_shards).resolve().is_relative_to(Path(self.synthetic_root).resolve()):
                # A path the user gave is never silently filled with generated data.
                raise MissingInputError(
                    f"train_shards: no shards at '{self.train_shards}' (synthetic data is generated only "
                    f"inside synthetic_root '{self.synthetic_root}')"
                )
            from datamodules.synthetic import ensure_synthetic_dataset  # lazy: demo data only

            log.info(
                "train shards %s missing: generating the synthetic dataset in %s",
                self.train_shards,
                self.synthetic_root,
            )
            ensure_synthetic_dataset(self.synthetic_root)

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.latent_cache_dir is None:
            return
        encoders = getattr(getattr(self.trainer, "lightning_module", None), "encoders", None)
        if encoders is None:
            raise InputError("data.latent_cache_dir: the model has no frozen encoders to make the cache with")
        from datamodules.latent_cache import ensure_latent_cache  # lazy: it imports this module

        if self.trainer.is_global_zero:
            example = self.train_example
            ensure_latent_cache(
                self.train_shards,
                self.latent_cache_dir,
                encoders,
                example.height,
                example.width,
                example.resize,
                self.trainer.strategy.root_device,
            )
        self.trainer.strategy.barrier("latent cache")

    def _rank(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return distributed_rank()

    def train_dataset(self) -> ShardStream:
        rank, world_size = self._rank()
        return ShardStream(
            expand_shards(self.latent_cache_dir or self.train_shards, "train_shards"),
            self.train_example,
            seed=self.seed,
            shuffle_shards=self.shuffle_shards,
            shuffle_buffer=self.shuffle_buffer,
            resampled=self.resampled,
            rank=rank,
            world_size=world_size,
            max_failed_tries=self.max_failed_tries,
        )

    def train_dataloader(self) -> StatefulDataLoader:
        # Under a Trainer the checkpointed state must leave out the batch the fetcher prefetched.
        # Persistent workers keep each worker's dataset (and so its epoch) across epochs.
        kwargs = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=True,
            collate_fn=collate,
            multiprocessing_context=WORKER_START if self.num_workers > 0 else None,
        )
        if self.trainer is None:
            self._train_loader = StatefulDataLoader(self.train_dataset(), **kwargs)
        else:
            self._train_loader = _TrainFetcherLoader(
                self.train_dataset(), batches_held=self._batches_held_by_fetcher, **kwargs
            )
        return self._train_loader

    def _batches_held_by_fetcher(self) -> int:
        fetcher = getattr(self.trainer.fit_loop, "_data_fetcher", None)
        return len(getattr(fetcher, "batches", ()))  # _PrefetchDataFetcher's look-ahead

    def val_dataloader(self) -> DataLoader | list:
        return self._evaluation_loader(self.val_shards, self.val_example, "val_shards")

    def test_dataloader(self) -> DataLoader | list:
        """Held-out clips of ``test_num_frames`` frames (default: the validation shards)."""
        return self._evaluation_loader(self.test_shards, self.test_example, "test_shards")

    def predict_dataloader(self) -> DataLoader | list:
        """``unianimate predict`` without an animate config: the held-out test clips."""
        return self._evaluation_loader(self.test_shards, self.test_example, "test_shards")

    def _evaluation_loader(self, shards: str | None, example: ClipExample, what: str) -> DataLoader | list:
        """Unshuffled, deterministic clips: the same samples at every evaluation."""
        if shards is None:
            return []
        rank, world_size = self._rank()
        dataset = ShardStream(
            expand_shards(shards, what),
            example,
            seed=self.seed,
            shuffle_shards=False,
            rank=rank,
            world_size=world_size,
            evaluation=True,
            max_failed_tries=self.max_failed_tries,
        )
        return DataLoader(
            dataset,
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            multiprocessing_context=WORKER_START if self.num_workers > 0 else None,
        )

    def teardown(self, stage: str) -> None:
        # The skip counts at the end of every run, not only in the logger (rank 0 prints).
        if (
            stage == "fit"
            and self._train_loader is not None
            and (self.trainer is None or self.trainer.is_global_zero)
        ):
            counts = self.skip_counts()
            detail = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            print(
                f"data: {sum(counts.values())} training samples skipped" + (f" ({detail})" if detail else "")
            )

    def skip_counts(self) -> dict[str, int]:
        """Samples skipped so far by the training loader, reason -> count, summed over workers and
        cumulative since the start of training (a resumed run continues the counts).

        Reasons: ``too_short``, ``bad_video``, ``missing_video``, ``bad_pose``, ``missing_pose``,
        ``bad_tar`` (truncated or unreadable tar), ``read_error``, ``missing_shard`` and, with the
        latent cache, ``missing_latents``, ``bad_latents``, ``latent_size``. The counts live in
        the loader's state (each worker's ``ShardStream`` state), so they are also in every
        checkpoint. With workers, a worker reports its state with each batch, so skips after its
        last sample of an epoch appear when the next epoch starts.
        """
        loader = self._train_loader
        if loader is None:
            return {}
        if loader._iterator is None:  # state_dict() would start workers just to report nothing new
            return skip_counts_from_loader_state(loader.next_iter_state or {}) or loader.dataset.skip_counts()
        return skip_counts_from_loader_state(loader.state_dict())
