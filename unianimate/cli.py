"""The ``unianimate`` command: Lightning's CLI over the UniAnimate module (SPEC §7)."""

from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.cli import LightningCLI

from unianimate.module import UniAnimateModule


class UniAnimateCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict``; configs compose with several ``--config``."""


# Expected, and noise for users: the frozen encoders are in eval mode on purpose (one place,
# unianimate/models/frozen.py), and torchdata calls a deprecated torch hook internally.
QUIET = (r"Found \d+ module\(s\) in eval mode", r"'set_vital' is deprecated")


def main(args: list[str] | None = None, run: bool = True) -> UniAnimateCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line."""
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    return UniAnimateCLI(
        UniAnimateModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def entry_point() -> None:
    """The ``unianimate`` console script (exits 0 on success)."""
    main()


if __name__ == "__main__":
    entry_point()
