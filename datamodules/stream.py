"""A stateful, resumable stream of samples from WebDataset tar shards (SPEC §5).

:class:`ShardStream` is an ``IterableDataset`` that reads tar shards with webdataset's pieces
(``gopen`` for local paths, ``pipe:`` and http(s) URLs; ``tariterators`` to group members into
samples), turns each raw sample into an example with a ``make_example`` function, and keeps in
``state_dict()`` everything needed to resume exactly in the middle of an epoch:

- ``epoch``: the shard order and every random draw depend on (seed, epoch);
- ``cursor``: position in this worker's shard order;
- ``in_shard``: raw samples already taken from the shard at ``cursor`` (corrupt ones included);
- ``yielded``: samples that left the shuffle buffer this epoch (used only with a buffer);
- ``skipped``: reason -> count of samples skipped so far (cumulative over epochs);
- ``failures``: tries since the last usable sample (a sample skipped, a shard that gave no
  sample); at ``max_failed_tries`` the stream stops with
  :class:`StreamError` instead of spinning forever over data that never decodes.

No random-generator state is stored: each sample's generator is seeded from (seed, epoch, rank,
worker, cursor, in_shard), so a resumed stream draws exactly what an uninterrupted one would.
With a sample-level shuffle buffer the buffer's contents are not stored either; resuming replays
this worker's raw tar stream from the start of the epoch (reading, not decoding) to refill it.

Under ``torchdata.stateful_dataloader.StatefulDataLoader`` each worker process holds its own copy
and its own state; the loader snapshots those states and restores them per worker. The epoch
advances inside the dataset when its stream ends, so with ``num_workers > 0`` the loader must use
``persistent_workers=True`` (otherwise every epoch would start from the main process's copy).
"""

from __future__ import annotations

import copy
import logging
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info
from webdataset import tariterators

from unianimate.errors import InputError, MissingInputError

log = logging.getLogger(__name__)


class StreamError(InputError):
    """The stream cannot produce a sample: it names the shards and the skip counts."""


class SkipSample(Exception):
    """Raised by ``make_example`` for a sample to skip; ``reason`` is the counter's key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def expand_shards(spec: str, what: str = "shards") -> list[str]:
    """Shard URLs from a brace pattern (``::`` separates several), a directory (all ``*.tar``
    inside, sorted), a ``pipe:`` command or an http(s) URL."""
    if "://" not in spec and not spec.startswith("pipe:") and Path(spec).is_dir():
        urls = sorted(str(p) for p in Path(spec).glob("*.tar"))
        if not urls:
            raise MissingInputError(f"{what}: no *.tar in the folder '{spec}'")
        return urls
    urls = wds.shardlists.expand_urls(spec)
    if "://" not in spec and not spec.startswith("pipe:") and not any(Path(u).exists() for u in urls):
        raise MissingInputError(
            f"{what}: nothing at '{spec}' (expected a folder of *.tar, a brace pattern of tar files, "
            "a pipe: command or an http(s) URL)"
        )
    return urls


def _tar_members(fileobj: Any) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of a tar stream; raises ``tarfile.ReadError`` when the
    archive ends without its end-of-archive block (cut in a header or between members), which
    ``tarfile`` itself reads as a normal end."""
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for info in tar:
            if info.isreg() and not info.name.startswith("__"):
                yield info.name, tar.extractfile(info).read()
            tar.members = []
        # A complete archive stops on a zero block read in full at ``tar.offset``.
        if tar.fileobj.pos < tar.offset + tarfile.BLOCKSIZE:
            raise _CutBetweenMembers(
                f"truncated tar: it ends at byte {tar.fileobj.pos} without its end-of-archive block"
            )


class _CutBetweenMembers(tarfile.ReadError):
    """The tar ends in a header or between members: every member read so far is whole."""


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Examples from tar shards; shards shuffled per epoch, split by node then by worker.

    ``make_example(sample, rng)`` maps a raw sample (webdataset dict: ``__key__`` and member
    bytes) to an example, or raises :class:`SkipSample`. ``resampled=True`` makes the stream
    infinite: every worker draws shards with replacement (seeded by seed, rank, worker), and the
    epoch never ends. ``evaluation=True`` keeps the epoch at 0 so every pass draws the same clips.
    ``max_failed_tries``: consecutive tries without a usable sample (a skipped sample, a shard
    that gave none) after which the stream raises :class:`StreamError`.
    """

    def __init__(
        self,
        urls: list[str],
        make_example: Callable[[dict, np.random.Generator], dict],
        *,
        seed: int = 0,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        resampled: bool = False,
        rank: int = 0,
        world_size: int = 1,
        evaluation: bool = False,
        max_failed_tries: int = 200,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("no shards given")
        self.urls = list(urls)
        self.make_example = make_example
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.rank, self.world_size = rank, world_size
        self.evaluation = evaluation
        self.max_failed_tries = max_failed_tries
        self._failed_urls: list[str] = []  # the shards of the current run of failures (for the error)
        self._state = self._fresh_state(epoch=0, skipped={})

    @staticmethod
    def _fresh_state(epoch: int, skipped: dict[str, int], failures: int = 0) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "cursor": 0,
            "in_shard": 0,
            "yielded": 0,
            "skipped": dict(skipped),
            "failures": failures,
        }

    def _failed(self, url: str) -> None:
        """One more try without a usable sample; raise when there have been too many in a row."""
        self._state["failures"] = self._state.get("failures", 0) + 1
        if url not in self._failed_urls:
            self._failed_urls = [*self._failed_urls, url][-3:]
        if self._state["failures"] >= self.max_failed_tries:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(self._state["skipped"].items())) or "none"
            raise StreamError(
                f"no usable sample in {self._state['failures']} tries in a row from {len(self.urls)} "
                f"shard(s) (last tried: {', '.join(self._failed_urls)}); skipped so far: {counts}. "
                "Expected tar shards of mp4 + pose.npz + json samples (datamodules/format.py)"
            )

    def _succeeded(self) -> None:
        self._state["failures"] = 0
        self._failed_urls = []

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = copy.deepcopy(state)

    def skip_counts(self) -> dict[str, int]:
        return dict(self._state["skipped"])

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def shard_order(self, epoch: int) -> list[str]:
        """This rank's and worker's shards for ``epoch`` (not used when resampled)."""
        urls = list(self.urls)
        if self.shuffle_shards:
            np.random.default_rng([self.seed, epoch]).shuffle(urls)  # same order on every rank
        worker, num_workers = self._worker()
        return urls[self.rank :: self.world_size][worker::num_workers]

    def _resampled_shard(self, cursor: int) -> str:
        worker, _ = self._worker()
        rng = np.random.default_rng([self.seed, self.rank, worker, cursor])
        return self.urls[int(rng.integers(len(self.urls)))]

    def _raw_samples(self, url: str, skipped: Counter) -> Iterator[dict]:
        """Grouped tar members of one shard; a corrupt member or truncated tar ends it, and the
        sample it was reading is part of the damage (not a sample with a member missing). A shard
        that fails counts once, under one reason."""
        reasons: list[str] = []

        def handler(exn: Exception) -> None:
            reason = "bad_tar" if isinstance(exn, tarfile.TarError | EOFError) else "read_error"
            if isinstance(exn, FileNotFoundError):
                reason = "missing_shard"
            log.warning("skipping rest of shard %s (%s): %r", url, reason, exn)
            reasons.append(reason)

        try:
            stream = wds.gopen(url, "rb")
        except Exception as exn:  # missing file, bad scheme
            handler(exn)
            skipped[reasons[0]] += 1
            return
        current: dict | None = None
        try:
            for name, data in _tar_members(stream):
                prefix, suffix = tariterators.base_plus_ext(name)
                if prefix is None:
                    continue
                if current is None or current["__key__"] != prefix:
                    if current is not None:
                        yield current
                    current = {"__key__": prefix, "__url__": url}
                current[suffix.lower()] = data
            if current is not None:
                yield current
        except _CutBetweenMembers as exn:
            handler(exn)
            if current is not None:  # its members were read whole
                yield current
        except Exception as exn:  # noqa: BLE001 - any reader failure ends this shard only
            handler(exn)  # the sample being read is part of the damage: not counted on its own
        finally:
            try:
                stream.close()  # a pipe: or http stream reports its command's failure here
            except Exception as exn:
                # The command failed (curl's 404, say): that is the cause of whatever the tar
                # reader saw before, an empty or cut stream, or the same failure seen early.
                handler(exn)
                reasons[:] = reasons[-1:]
            if reasons:
                skipped[reasons[0]] += 1

    def _positioned_samples(self, state: dict[str, Any]) -> Iterator[tuple[dict, tuple[int, int]]]:
        """(raw sample, (cursor, index in shard)) from ``state``'s position to the epoch's end;
        updates ``state['cursor']`` / ``state['in_shard']`` before each yield."""
        skipped = Counter()
        order = None if self.resampled else self.shard_order(state["epoch"])
        if order == []:
            log.warning(
                "rank %d worker %d has no shards: %d shards for %d ranks x workers",
                self.rank,
                self._worker()[0],
                len(self.urls),
                self.world_size * self._worker()[1],
            )
        while order is None or state["cursor"] < len(order):
            cursor = state["cursor"]
            url = self._resampled_shard(cursor) if order is None else order[cursor]
            start, index = state["in_shard"], 0
            for sample in self._raw_samples(url, skipped):
                self._merge(skipped)
                if index >= start:
                    state["in_shard"] = index + 1
                    yield sample, (cursor, index)
                index += 1
            self._merge(skipped)
            state["cursor"], state["in_shard"] = cursor + 1, 0
            if index == 0:  # nothing readable in this shard (not a tar, missing, empty)
                self._failed(url)

    def _merge(self, counter: Counter) -> None:
        for reason, n in counter.items():
            self._state["skipped"][reason] = self._state["skipped"].get(reason, 0) + n
        counter.clear()

    def _buffered(self, state: dict[str, Any]) -> Iterator[tuple[dict, tuple[int, int]]]:
        """The sample-level shuffle buffer; on resume it replays the epoch's raw stream and drops
        the first ``state['yielded']`` outputs (the buffer's contents are not part of the state)."""
        worker, _ = self._worker()
        rng = np.random.default_rng([self.seed, state["epoch"], self.rank, worker, 1])
        replay, state["yielded"] = state["yielded"], 0
        raw = self._positioned_samples({**state, "cursor": 0, "in_shard": 0})
        skipped_before = dict(self._state["skipped"])
        buffer: list = []
        out = 0

        def emit(item):
            nonlocal out
            out += 1
            if out == replay:  # replay done: skip counts are the saved ones, not double-counted
                self._state["skipped"] = skipped_before
            if out > replay:
                state["yielded"] = out
                return item
            return None

        if replay == 0:
            skipped_before = self._state["skipped"]
        for item in raw:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            item, buffer[j] = buffer[j], item
            if (kept := emit(item)) is not None:
                yield kept
        rng.shuffle(buffer)
        for item in buffer:
            if (kept := emit(item)) is not None:
                yield kept

    def __iter__(self) -> Iterator[dict]:
        if self.evaluation:
            # Evaluation streams restart at every pass: an evaluation cut short (limit_val_batches)
            # must not leave the next one starting mid-stream, or empty.
            self._state = self._fresh_state(
                self._state["epoch"], self._state["skipped"], self._state.get("failures", 0)
            )
        state = self._state
        worker, _ = self._worker()
        epoch = state["epoch"]
        items = self._buffered(state) if self.shuffle_buffer > 0 else self._positioned_samples(state)
        for sample, (cursor, index) in items:
            rng = np.random.default_rng([self.seed, epoch, self.rank, worker, cursor, index])
            try:
                example = self.make_example(sample, rng)
            except SkipSample as skip:
                log.debug("skipping %s: %s", sample.get("__key__"), skip)
                self._merge(Counter({skip.reason: 1}))
                self._failed(str(sample.get("__url__", "?")))
                continue
            self._succeeded()
            yield example
        next_epoch = epoch if self.evaluation else epoch + 1
        self._state = self._fresh_state(next_epoch, self._state["skipped"], self._state.get("failures", 0))


def skip_counts_from_loader_state(state: dict) -> dict[str, int]:
    """Sum the ``skipped`` counters of every :class:`ShardStream` state found in a
    ``StatefulDataLoader.state_dict()`` (one per worker, or the main process's one)."""
    total: Counter = Counter()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "skipped" in node and "cursor" in node and "epoch" in node:
                total.update(node["skipped"])
                return
            for value in node.values():
                walk(value)

    walk(state)
    return dict(total)
