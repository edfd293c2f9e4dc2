"""The ``unianimate`` command: Lightning's CLI over the UniAnimate module (SPEC §7)."""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from unianimate.module import UniAnimateModule


class UniAnimateCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict``; configs compose with several ``--config``."""


def main(args: list[str] | None = None, run: bool = True) -> UniAnimateCLI:
    import lightning as L

    return UniAnimateCLI(
        UniAnimateModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
