"""Check a wheelhouse for the GPU machine: size, one version of each, every requirement met.

    python tools/gpu/check_wheels.py .whl [--limit-mib 64]

Each wheel's Requires-Dist (markers evaluated for CPython 3.12 on Linux x86_64, extras only where
this project asks for them) must name a wheel in the folder or a package on the GPU image; where
KINDS.md records the image's version, the version must satisfy the specifier. Prints one line a
wheel and the total; exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip's own copy
    from pip._vendor.packaging.markers import Marker  # noqa: F401
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

# The GPU image's Python packages (/work/.library/device/KINDS.md, read 2026-11-17), with the
# versions that file records from a pip list (2026-11); None: on the image, version not on record.
IMAGE = {
    "torch": "2.11.0",
    "triton": "3.6.0",
    "numpy": "2.5.2",
    "transformers": "5.17.0",
    "huggingface-hub": "1.33.0",
    "safetensors": "0.8.0",
    "accelerate": "1.15.0",
    "pytorch-lightning": "2.6.6",
    "torchmetrics": "1.9.0",
    "tokenizers": "0.23.2",
}
IMAGE |= dict.fromkeys(
    """einops filelock fsspec httpx lightning lightning-utilities msgpack ninja nvidia-ml-py packaging
    pillow psutil py-cpuinfo pyyaml regex requests tqdm urllib3 zipp mypy-extensions opencv-python-headless
    scipy matplotlib tensorboard""".split()
)
# Extras this project installs (pyproject: jsonargparse[signatures,omegaconf]).
EXTRAS = {"jsonargparse": {"signatures", "omegaconf", "typing-extensions"}}
ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata(wheel: Path) -> tuple[str, str, list[str]]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(name).decode())
    return normalise(meta["Name"]), meta["Version"], meta.get_all("Requires-Dist") or []


def needed(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate(dict(ENV, extra=e)) for e in extras | {""})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--limit-mib", type=float, default=64.0)
    args = p.parse_args()
    wheels = sorted(args.folder.glob("*.whl"))
    if not wheels:
        print(f"{args.folder}: no wheels")
        return 1
    found: dict[str, tuple[str, list[str]]] = {}
    problems = []
    total = 0
    for wheel in wheels:
        name, version, requires = metadata(wheel)
        size = wheel.stat().st_size
        total += size
        print(f"{size / 2**20:8.2f} MiB  {wheel.name}")
        if name in found:
            problems.append(f"two versions of {name}: {found[name][0]} and {version}")
        found[name] = (version, requires)
    for name, (_, requires) in found.items():
        for line in requires:
            req = Requirement(line)
            dep = normalise(req.name)
            if not needed(req, EXTRAS.get(name, set())):
                continue
            if dep in found:
                have = found[dep][0]
            elif dep in IMAGE:
                have = IMAGE[dep]
            else:
                problems.append(f"{name} needs {line!r}: neither a wheel here nor on the GPU image")
                continue
            if have is not None and req.specifier and Version(have) not in req.specifier:
                problems.append(f"{name} needs {line!r}, but {dep} is {have}")
    print(f"{total / 2**20:8.2f} MiB  total, {len(wheels)} wheels (limit {args.limit_mib:g} MiB)")
    if total > args.limit_mib * 2**20:
        problems.append(f"total {total / 2**20:.1f} MiB is over the {args.limit_mib:g} MiB limit")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
