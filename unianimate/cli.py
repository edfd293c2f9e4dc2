"""The ``unianimate`` command: Lightning's CLI over the UniAnimate module (SPEC §7)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI

from unianimate.module import UniAnimateModule


class UniAnimateCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict``; configs compose with several ``--config``."""


def main(args: list[str] | None = None, run: bool = True) -> UniAnimateCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line."""
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
