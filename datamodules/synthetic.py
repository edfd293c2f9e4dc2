"""The embedded default dataset (SPEC §7): procedurally animated figures with exact keypoints.

Each identity is an articulated figure on the OpenPose-18 skeleton plus toes and two simple
21-point hands, with its own colours, limb widths, proportions and background. A video moves
the figure smoothly (per-joint angle trajectories that are sums of sinusoids, plus a slow global
drift) and renders it with OpenCV; the keypoints are the figure's own joints, so the pose is
exact. Everything is seeded: the same (identity, seed) always gives the same video.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import webdataset as wds

from datamodules.format import BODY_POINTS, HAND_POINTS, PoseSequence, encode_sample

FPS = 8.0
_SUPERSAMPLE = 4  # draw at 4x and area-downsample: smooth edges at 64x48
_SHIFT = 4  # OpenCV fixed-point bits for sub-pixel drawing
# Body point indices (OpenPose order, then toes).
NOSE, NECK, R_SHO, R_ELB, R_WRI, L_SHO, L_ELB, L_WRI = range(8)
R_HIP, R_KNE, R_ANK, L_HIP, L_KNE, L_ANK, R_EYE, L_EYE, R_EAR, L_EAR, L_TOE, R_TOE = range(8, 20)


@dataclass(frozen=True)
class Appearance:
    """What one identity looks like; lengths are fractions of the figure's height."""

    background_top: tuple[int, int, int]
    background_bottom: tuple[int, int, int]
    tile: int  # background texture tile size in pixels of a 64-pixel-high frame
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    sleeve: tuple[int, int, int]
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    limb_width: float
    torso_width: float  # shoulder half-width
    hip_width: float  # hip half-width
    head_radius: float
    arm_length: float  # upper arm; the forearm is 0.92 of it
    leg_length: float  # thigh; the shin is 0.95 of it
    height: float  # figure height as a fraction of the frame height


def _colour(rng: np.random.Generator, lo: int = 30, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def identity_appearance(identity: int) -> Appearance:
    rng = np.random.default_rng([identity, 7919])
    top = _colour(rng, 20, 235)
    skin_tones = [
        (255, 219, 172),
        (241, 194, 125),
        (224, 172, 105),
        (198, 134, 66),
        (141, 85, 36),
        (92, 56, 32),
    ]
    return Appearance(
        background_top=top,
        background_bottom=tuple(int(np.clip(c + rng.integers(-60, 60), 0, 255)) for c in top),
        tile=int(rng.integers(4, 12)),
        skin=skin_tones[int(rng.integers(len(skin_tones)))],
        hair=_colour(rng, 0, 200),
        shirt=_colour(rng),
        sleeve=_colour(rng),
        trousers=_colour(rng),
        shoes=_colour(rng, 0, 120),
        limb_width=float(rng.uniform(0.045, 0.075)),
        torso_width=float(rng.uniform(0.09, 0.13)),
        hip_width=float(rng.uniform(0.06, 0.09)),
        head_radius=float(rng.uniform(0.055, 0.075)),
        arm_length=float(rng.uniform(0.14, 0.18)),
        leg_length=float(rng.uniform(0.20, 0.24)),
        height=float(rng.uniform(0.72, 0.86)),
    )


def _trajectory(rng: np.random.Generator, t: np.ndarray, mean: float, amplitude: float) -> np.ndarray:
    """A smooth random signal: ``mean`` + two sinusoids of 0.1-0.35 Hz, peak about ``amplitude``."""
    out = np.full_like(t, mean)
    for weight in (0.65, 0.35):
        freq, phase = rng.uniform(0.1, 0.35), rng.uniform(0, 2 * math.pi)
        out += weight * amplitude * np.sin(2 * math.pi * freq * t + phase)
    return out


def _direction(angle: np.ndarray) -> np.ndarray:
    """Unit vectors (f, 2) in image coordinates (y down); angle pi/2 points straight down."""
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def _rotate(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return np.concatenate([c * v[..., :1] - s * v[..., 1:], s * v[..., :1] + c * v[..., 1:]], axis=-1)


def _hand(wrist: np.ndarray, elbow: np.ndarray, size: float, mirror: float) -> np.ndarray:
    """21 hand points (f, 21, 2): wrist, then 4 joints for each of 5 fingers fanned along the forearm."""
    forearm = wrist - elbow
    base = np.arctan2(forearm[:, 1], forearm[:, 0])
    points = [wrist]
    for finger, (spread, length) in enumerate(zip((-0.8, -0.3, 0.0, 0.3, 0.6), (0.7, 1.0, 1.1, 1.0, 0.8))):
        direction = _direction(base + mirror * spread)
        for joint in range(1, 5):
            reach = size * length * (0.25 + 0.75 * joint / 4) * (0.8 if finger == 0 else 1.0)
            points.append(wrist + reach * direction)
    return np.stack(points, axis=1)


def figure_pose(appearance: Appearance, num_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions in units of the frame height: body (f, 20, 2), hands (f, 2, 21, 2).

    y is measured from the top, x from the frame's centre line (callers map it with the aspect
    ratio). The person faces the camera, so their right side is on the image's left.
    """
    rng = np.random.default_rng([seed, 104729])
    a, s = appearance, appearance.height / 0.95  # the rest pose spans about 0.95 figure units
    t = np.arange(num_frames) / FPS
    body = np.zeros((num_frames, BODY_POINTS, 2))
    neck = np.stack(
        [_trajectory(rng, t, 0.0, 0.06), 0.5 - 0.42 * a.height + _trajectory(rng, t, 0.0, 0.015)], axis=-1
    )
    sway, tilt = _trajectory(rng, t, 0.0, 0.12), _trajectory(rng, t, 0.0, 0.2)
    body[:, NECK] = neck
    for side, (sho, hip) in ((-1.0, (R_SHO, R_HIP)), (1.0, (L_SHO, L_HIP))):
        body[:, sho] = neck + s * _rotate(np.array([[side * a.torso_width, 0.0]]), 0.5 * sway)
        body[:, hip] = neck + s * _rotate(np.array([[side * a.hip_width, 0.30]]), sway)

    def head(dx: float, dy: float) -> np.ndarray:
        return neck + s * _rotate(np.array([[dx, dy]]), tilt)

    body[:, NOSE] = head(0.0, -0.10)
    body[:, R_EYE], body[:, L_EYE] = head(-0.025, -0.125), head(0.025, -0.125)
    body[:, R_EAR], body[:, L_EAR] = head(-0.05, -0.11), head(0.05, -0.11)
    hands = np.zeros((num_frames, 2, HAND_POINTS, 2))
    # Right limbs hang towards the image's left (angle > pi/2); mirror = -1 for them.
    for mirror, (sho, elb, wri, hand) in ((-1.0, (R_SHO, R_ELB, R_WRI, 1)), (1.0, (L_SHO, L_ELB, L_WRI, 0))):
        upper = math.pi / 2 - mirror * _trajectory(rng, t, 0.6, 0.6)
        lower = upper - mirror * _trajectory(rng, t, 0.4, 0.5)
        body[:, elb] = body[:, sho] + s * a.arm_length * _direction(upper)
        body[:, wri] = body[:, elb] + s * 0.92 * a.arm_length * _direction(lower)
        hands[:, hand] = _hand(body[:, wri], body[:, elb], s * 0.07, mirror)
    for mirror, (hip, kne, ank, toe) in (
        (-1.0, (R_HIP, R_KNE, R_ANK, R_TOE)),
        (1.0, (L_HIP, L_KNE, L_ANK, L_TOE)),
    ):
        thigh = math.pi / 2 - mirror * _trajectory(rng, t, 0.08, 0.25)
        shin = thigh + mirror * _trajectory(rng, t, 0.1, 0.2)
        body[:, kne] = body[:, hip] + s * a.leg_length * _direction(thigh)
        body[:, ank] = body[:, kne] + s * 0.95 * a.leg_length * _direction(shin)
        body[:, toe] = body[:, ank] + s * np.array([mirror * 0.035, 0.035])
    return body, hands


def draw_background(appearance: Appearance, height: int, width: int) -> np.ndarray:
    """The identity's static background, uint8 (H, W, 3): a vertical gradient with faint tiles."""
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    top, bottom = np.array(appearance.background_top, float), np.array(appearance.background_bottom, float)
    image = np.broadcast_to((1 - ramp) * top + ramp * bottom, (height, width, 3)).copy()
    tile = max(1, round(appearance.tile * height / 64))
    yy, xx = np.mgrid[:height, :width]
    image += np.where(((yy // tile + xx // tile) % 2 == 0), 6.0, -6.0)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_figure(
    appearance: Appearance, body: np.ndarray, hands: np.ndarray, height: int, width: int
) -> np.ndarray:
    """One RGB frame uint8 (H, W, 3) of the figure at normalised joints body (20, 2), hands (2, 21, 2)."""
    ss = _SUPERSAMPLE
    canvas = cv2.resize(
        draw_background(appearance, height, width), (width * ss, height * ss), cv2.INTER_NEAREST
    )
    scale = np.array([width * ss, height * ss]) * (1 << _SHIFT)

    def pt(p: np.ndarray) -> tuple[int, ...]:  # normalised -> fixed-point pixel coordinates
        return tuple(int(round(v)) for v in p * scale)

    unit = height * ss * appearance.height / 0.95  # pixels per figure unit
    thick = max(2, int(round(appearance.limb_width * unit)))

    def limb(a: np.ndarray, b: np.ndarray, colour: tuple[int, int, int], factor: float = 1.0) -> None:
        cv2.line(canvas, pt(a), pt(b), colour, max(1, int(thick * factor)), cv2.LINE_AA, _SHIFT)

    for hip, kne, ank, toe in ((R_HIP, R_KNE, R_ANK, R_TOE), (L_HIP, L_KNE, L_ANK, L_TOE)):
        limb(body[hip], body[kne], appearance.trousers, 1.2)
        limb(body[kne], body[ank], appearance.trousers)
        limb(body[ank], body[toe], appearance.shoes, 0.8)
    torso = np.array([pt(body[i]) for i in (R_SHO, L_SHO, L_HIP, R_HIP)], np.int32)
    cv2.fillConvexPoly(canvas, torso, appearance.shirt, cv2.LINE_AA, _SHIFT)
    cv2.polylines(canvas, [torso], True, appearance.shirt, thick, cv2.LINE_AA, _SHIFT)
    limb(body[NECK], (body[NECK] + body[NOSE]) / 2, appearance.skin, 0.8)
    for sho, elb, wri, hand in ((R_SHO, R_ELB, R_WRI, 1), (L_SHO, L_ELB, L_WRI, 0)):
        limb(body[sho], body[elb], appearance.sleeve)
        limb(body[elb], body[wri], appearance.skin, 0.8)
        for finger in range(5):
            limb(hands[hand, 0], hands[hand, 4 * finger + 4], appearance.skin, 0.35)
        palm = pt(hands[hand, [0, 5, 9, 13, 17]].mean(0))
        cv2.circle(canvas, palm, int(0.5 * thick * (1 << _SHIFT)), appearance.skin, -1, cv2.LINE_AA, _SHIFT)
    radius = appearance.head_radius * unit * (1 << _SHIFT)
    centre = (body[R_EYE] + body[L_EYE]) / 2
    tilt = math.degrees(math.atan2(*(body[L_EYE] - body[R_EYE])[::-1] * [height, width]))
    axes = (int(radius), int(radius * 1.2))
    cv2.ellipse(canvas, pt(centre), axes, tilt, 180, 360, appearance.hair, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(canvas, pt(centre + [0, 0.01]), axes, tilt, 0, 360, appearance.skin, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(
        canvas, pt(centre), (axes[0], axes[1] // 2), tilt, 180, 360, appearance.hair, -1, cv2.LINE_AA, _SHIFT
    )
    for eye in (R_EYE, L_EYE):
        cv2.circle(canvas, pt(body[eye]), int(0.12 * radius), (20, 20, 20), -1, cv2.LINE_AA, _SHIFT)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)


def _with_scores(xy: np.ndarray) -> np.ndarray:
    inside = np.all((xy >= 0.0) & (xy <= 1.0), axis=-1, keepdims=True)
    return np.concatenate([xy, inside.astype(xy.dtype)], axis=-1).astype(np.float32)


def make_synthetic_video(
    identity: int, num_frames: int, height: int, width: int, seed: int
) -> tuple[np.ndarray, PoseSequence]:
    """Frames uint8 (f, H, W, 3) of ``identity`` moving, and their exact keypoints (score 0 = outside)."""
    appearance = identity_appearance(identity)
    body, hands = figure_pose(appearance, num_frames, seed)
    # x was in frame heights from the centre line, y in frame heights from the top
    scale, offset = np.array([height / width, 1.0]), np.array([0.5, 0.0])
    body, hands = body * scale + offset, hands * scale + offset
    frames = np.stack([draw_figure(appearance, body[i], hands[i], height, width) for i in range(num_frames)])
    return frames, PoseSequence(_with_scores(body), _with_scores(hands))


def figure_mask(identity: int, frames: np.ndarray, threshold: int = 24) -> np.ndarray:
    """Where the figure is: bool (f, H, W) for uint8 frames (f, H, W, 3) of ``identity`` as
    :func:`make_synthetic_video` renders them. The background is drawn exactly
    (:func:`draw_background`), so a pixel is the figure's when some channel differs from it by more
    than ``threshold`` levels (faint anti-aliased edge pixels stay out)."""
    height, width = frames.shape[1:3]
    background = draw_background(identity_appearance(identity), height, width).astype(np.int16)
    return np.abs(frames.astype(np.int16) - background).max(axis=-1) > threshold


def write_synthetic_shards(
    out_dir: str | Path,
    num_videos: int,
    num_frames: int = 24,
    height: int = 64,
    width: int = 48,
    videos_per_shard: int = 8,
    seed: int = 0,
    split_name: str = "train",
    identities: list[int] | None = None,
) -> list[Path]:
    """Write ``num_videos`` videos as WebDataset shards ``<split>-000000.tar`` ... plus ``manifest.json``.

    Video i shows identity ``identities[i % len(identities)]`` (default: one identity per video)
    with its own motion seed. The manifest is written last, so its presence means complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identities = list(range(num_videos)) if identities is None else list(identities)
    shards: list[Path] = []
    for first in range(0, num_videos, videos_per_shard):
        path = out_dir / f"{split_name}-{len(shards):06d}.tar"
        partial = path.with_name(
            path.name + ".partial"
        )  # renamed when complete: readers never see half a shard
        with wds.TarWriter(str(partial), mtime=0.0) as writer:
            for i in range(first, min(first + videos_per_shard, num_videos)):
                identity = identities[i % len(identities)]
                frames, pose = make_synthetic_video(identity, num_frames, height, width, seed * 1_000_003 + i)
                meta = {"source": "synthetic", "licence": "CC0", "identity": identity, "split": split_name}
                # Lossless (crf 0): libx264 does not always make the same decisions for the same
                # frames (seen here: two bitstreams from one input, even with threads=1), and at
                # crf 18 different decisions decode to different pixels, so the demo data (and the
                # stored golden loss curve) changed from one generation to the next. Lossless
                # streams decode to the same 4:2:0 pixels whatever the encoder decided.
                sample = encode_sample(
                    f"{split_name}-{i:06d}", frames, FPS, pose, meta, gop=None, fast_decode=False, crf=0
                )
                writer.write(sample)
        partial.replace(path)
        shards.append(path)
    manifest = {
        "shards": [p.name for p in shards],
        "samples": num_videos,
        "frames": num_videos * num_frames,
        "frames_per_video": num_frames,
        "height": height,
        "width": width,
        "fps": FPS,
        "seed": seed,
        "identities": sorted(set(identities[: max(num_videos, 1)])),
        "source": "synthetic",
        "licence": "CC0",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return shards


def ensure_synthetic_dataset(
    root: str | Path,
    num_train: int = 256,
    num_val: int = 8,
    num_train_identities: int = 256,
    num_frames: int = 24,
    height: int = 64,
    width: int = 48,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """Generate ``root/train`` and ``root/val`` shards unless a matching manifest is already there.

    Train videos cycle through identities 0 .. num_train_identities - 1; validation uses held-out
    identities (numbered from 10_000) so it measures animating an unseen appearance. The demo's
    default is one identity per training video, 256 of them (7 s to render here): with 16 the
    tiny model learned those 16 appearances instead of copying the reference, and scored 0.9 dB
    lower on held-out identities after the same 1,000 steps (1,024 identities gave no further gain).
    """
    root = Path(root)
    val_identities = list(range(10_000, 10_000 + max(1, num_val)))
    splits = {
        "train": (num_train, list(range(num_train_identities))),
        "val": (num_val, val_identities),
    }
    out = {}
    for split, (count, identities) in splits.items():
        directory = root / split
        split_seed = seed if split == "train" else seed + 1  # no motion shared between the splits
        wanted = {"samples": count, "frames_per_video": num_frames, "height": height, "width": width}
        wanted["identities"] = sorted(set(identities[:count]))
        wanted["seed"] = split_seed
        manifest_path = directory / "manifest.json"
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if all(manifest.get(k) == v for k, v in wanted.items()):
                out[split] = [directory / name for name in manifest["shards"]]
                continue
        out[split] = write_synthetic_shards(
            directory, count, num_frames, height, width, 8, split_seed, split, identities
        )
    return out


@dataclass(frozen=True)
class PoseSwapCase:
    """One held-out identity driven by two motions, with exact ground truth for both.

    ``reference`` (H, W, 3) uint8 is the figure in a third, unrelated pose (so copying it is the
    floor); ``frames[k]`` (f, H, W, 3) uint8 and ``poses[k]`` are motion k's ground truth and
    keypoints.
    """

    identity: int
    reference: np.ndarray
    reference_pose: PoseSequence
    frames: tuple[np.ndarray, np.ndarray]
    poses: tuple[PoseSequence, PoseSequence]


def pose_swap_cases(
    identities: list[int], num_frames: int, height: int, width: int, seed: int = 0
) -> list[PoseSwapCase]:
    """For each identity: a reference frame and two motions of it (motion seeds from ``seed``,
    apart from the training and validation seeds, which are below 2 x 1_000_003 + videos)."""
    cases = []
    for n, identity in enumerate(identities):
        base = 50_000_000 + 1_000 * seed + 3 * n
        reference, reference_pose = make_synthetic_video(identity, 1, height, width, base)
        motions = [make_synthetic_video(identity, num_frames, height, width, base + k) for k in (1, 2)]
        cases.append(
            PoseSwapCase(
                identity,
                reference[0],
                reference_pose,
                (motions[0][0], motions[1][0]),
                (motions[0][1], motions[1][1]),
            )
        )
    return cases
