"""Where the demo's generated files live, whatever the working directory.

``configs/demo.yaml`` names its generated data, stand-in encoders and metric weights as relative
paths under ``.cache/unianimate``. Such paths resolve against the repository (a checkout: the
folder with ``pyproject.toml``), or ``~/.cache/unianimate`` for an installed package, never the
working directory: running from another folder must not regenerate the demo there. The files the
repository ships under ``assets/`` (the demo autoencoder) are found from any folder too. Any other
path is the user's and is used as given; only the demo cache is ever filled with generated
stand-ins (``make_tiny_if_missing``, ``synthetic_root``, ``random_metric_weights``).
"""

from __future__ import annotations

from pathlib import Path

PREFIX = (".cache", "unianimate")
_REPO = Path(__file__).resolve().parents[1]
ROOT = (
    _REPO / ".cache" / "unianimate"
    if (_REPO / "pyproject.toml").is_file()
    else Path.home() / ".cache" / "unianimate"
)


def resolve(path: str | None) -> str | None:
    """``.cache/unianimate/...`` -> under :data:`ROOT`; ``assets/...`` (files the repository ships,
    such as the demo autoencoder) -> under the repository when not found from the working
    directory; any other path unchanged."""
    if path is None:
        return None
    parts = Path(path).parts
    if not Path(path).is_absolute() and parts[: len(PREFIX)] == PREFIX:
        return str(ROOT.joinpath(*parts[len(PREFIX) :]))
    if not Path(path).is_absolute() and parts[:1] == ("assets",) and not Path(path).exists():
        return str(_REPO / path)
    return path


def is_demo_path(path: str | Path) -> bool:
    """Inside the demo cache (after :func:`resolve`)."""
    return Path(resolve(str(path))).resolve().is_relative_to(ROOT.resolve())
