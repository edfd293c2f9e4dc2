#!/usr/bin/env bash
# Fetch, on a machine with a package registry, the wheels the GPU machine lacks for
# tools/gpu/run_all.sh, into one folder (default .whl/, ignored by git) that travels with the
# working tree (the device tool's `carry`). The GPU machine reaches no registry; its image runs
# Python 3.12 on x86_64 and already holds torch, triton, numpy, lightning, transformers,
# huggingface-hub, safetensors, einops, opencv, scipy, matplotlib, pyyaml, tqdm, msgpack, ninja,
# psutil, py-cpuinfo, packaging, requests, urllib3 and pillow (/work/.library/device/KINDS.md,
# "Python packages already there"): those do not travel.
#
#   tools/gpu/fetch_wheels.sh [DEST]        # DEST defaults to .whl
#
# What travels, and why (versions: the ones this project's CPU venv resolves and is tested with):
#   diffusers            DDIMScheduler (sampling), AutoencoderKL (the VAE)
#   jsonargparse + docstring-parser, typeshed-client, omegaconf
#                        LightningCLI with parser_mode omegaconf (the DeepSpeed check runs the CLI)
#   webdataset + braceexpand, torchdata
#                        the training DataModule (shard stream, StatefulDataLoader)
#   av                   PyAV: the synthetic shards are encoded and decoded as mp4 (the largest wheel)
#   deepspeed + hjson, pydantic, pydantic-core, annotated-types, typing-inspection
#                        ZeRO-2; deepspeed is published as an sdist only, so a pure wheel is built
#                        here with its C++/CUDA ops disabled (DS_BUILD_OPS=0); on the GPU it would
#                        JIT-build an op only if one were asked for (ZeRO-2 with torch's AdamW asks none)
#   typing-extensions    pydantic 2.14 needs >= 4.16; the image's version is not on record
#   importlib-metadata + lazy-importer
#                        a declared requirement of diffusers (imported only on Python < 3.8): tiny,
#                        carried so that every Requires-Dist is met
# Left out on purpose:
#   mamba-ssm, causal-conv1d              CUDA builds against the image's torch; the checks use the
#                                         Triton scan (scan_backend: triton), which needs neither
#   jsonargparse's other extras, tensorboard/opencv/... (already on the image), torch/triton/numpy
#   (never: the image's CUDA builds must stay)
set -euo pipefail

DEST="${1:-.whl}"
LIMIT_MIB=64
PY_VERSION=3.12
BINARY=(
    "av==18.1.0"
    "pydantic-core==2.50.5"
)
PURE=(
    "diffusers==0.42.1"
    "jsonargparse==4.53.0"
    "docstring-parser==0.18.0"
    "typeshed-client==2.15.0"
    "omegaconf==2.4.0"
    "webdataset==1.0.2"
    "braceexpand==0.1.7"
    "torchdata==0.11.0"
    "hjson==3.1.0"
    "pydantic==2.14.4"
    "annotated-types==0.8.0"
    "typing-inspection==0.4.5"
    "typing-extensions==4.16.0"
    "importlib-metadata==10.2.0"
    "lazy-importer==0.1.0"
)
DEEPSPEED="deepspeed==0.19.8"

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --abi "cp${PY_VERSION/./}" --abi abi3 --abi none "${platforms[@]}" \
    --platform any -d "$DEST" "${BINARY[@]}" "${PURE[@]}"
# The sdist built into a py3-none-any wheel: no compiled ops, so it fits any Python 3 and torch.
# DS_ACCELERATOR=cuda: record the CUDA op set (all "not installed", JIT-buildable there) instead
# of this CPU machine's; --no-cache-dir: build it now, with these settings, not a cached build.
DS_ACCELERATOR=cuda DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-cache-dir --no-binary deepspeed \
    -w "$DEST" "$DEEPSPEED"

# One version of each, and every Requires-Dist either in DEST or on the GPU image (or an extra).
python3 "$(dirname "$0")/check_wheels.py" "$DEST" --limit-mib "$LIMIT_MIB"
# Every wheel installable for the GPU's interpreter (pip checks the tags against CPython 3.12).
target=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --abi "cp${PY_VERSION/./}" --abi abi3 --abi none "${platforms[@]}" --platform any \
    --target "$target" "$DEST"/*.whl
rm -rf "$target"
echo "all $(ls "$DEST"/*.whl | wc -l) wheels install for CPython $PY_VERSION x86_64 (--no-index --no-deps --target)"
