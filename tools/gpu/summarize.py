"""Collect what tools/gpu/run_all.sh left in its work folder into one table and four files.

    python tools/gpu/summarize.py WORK OUT

Reads WORK/{status.tsv, gpu.txt, colour.json, inference.json, frames.json, mfu.json, *.log,
frames.png}; writes OUT/results.json (everything), OUT/results.md (the summary table and each
check's full table), OUT/frames.png and OUT/logs.txt (every check's log); prints the full tables,
then the summary table last. A check that did not run or broke shows its exit status.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOOLS))

CHECKS = ("colour", "inference", "frames", "deepspeed", "mfu")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status(work: Path) -> dict[str, tuple[str, str]]:
    out = {}
    if (work / "status.tsv").is_file():
        for line in (work / "status.tsv").read_text().splitlines():
            name, rc, seconds = line.split("\t")
            out[name] = (rc, seconds)
    return out


def summary_rows(work: Path) -> list[tuple[str, str, str, str, str]]:
    """(check, configuration, seconds, peak GiB, result) per measured row."""
    rows = []
    colour = _load(work / "colour.json")
    if colour:
        ok = all(r["equal"] for r in colour["rows"])
        pixels = sum(r["pixels"] for r in colour["rows"])
        verdict = "bit-identical to CPU" if ok else "DIFFERS from CPU"
        rows.append(("6 yuv420_to_rgb", f"4 colour codes, {pixels:,} px", "-", "-", verdict))
    inference = _load(work / "inference.json")
    for r in inference["rows"] if inference else []:
        m = inference["meta"]
        config = f"{m['frames']}f {m['height']}x{m['width']}, {r['dtype']}, CLIP/VAE {r['encoders']}"
        if "error" in r:
            rows.append(("2 inference", config, "-", "-", r["error"]))
        else:
            detail = f"s/video; sample {r['s_sample']:.1f} s, decode {r['s_decode']:.1f} s"
            rows.append(("2 inference", config, f"{r['s_video']:.2f}", f"{r['peak_gib']:.2f}", detail))
    frames = _load(work / "frames.json")
    for r in frames["rows"] if frames else []:
        kind = "attention" if r["temporal"] == "transformer" else f"Mamba ({r['scan']})"
        config = f"{r['frames']} frames, {kind}, checkpointing"
        if "error" in r:
            rows.append(("3 frames", config, "-", "-", r["error"]))
        else:
            rows.append(("3 frames", config, f"{r['step_s']:.3f}", f"{r['peak_gib']:.2f}", "s/step"))
    deepspeed = work / "deepspeed.log"
    if deepspeed.is_file():
        for line in deepspeed.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("phase", "---"):
                ms = f"{float(cells[1]) / 1e3:.3f}" if cells[1] != "-" else "-"
                rows.append(("4 DeepSpeed ZeRO-2", cells[0], ms, cells[2], cells[4]))
    mfu = _load(work / "mfu.json")
    for r in mfu["rows"] if mfu else []:
        m = mfu["meta"]
        name = "attention" if r["temporal"] == "transformer" else f"Mamba ({r['scan']})"
        config = f"{m['frames']}f {m['height']}x{m['width']}, {name}, {r['variant']}"
        if "error" in r:
            rows.append(("5 MFU", config, "-", "-", r["error"]))
        else:
            detail = f"MFU {r['mfu']:.1%} (warm-up {r['warmup_s']:.0f} s)"
            rows.append(("5 MFU", config, f"{r['step_s']:.3f}", f"{r['peak_gib']:.2f}", detail))
    return rows


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    status = _status(work)
    gpu_txt = work / "gpu.txt"
    gpu = "; ".join(gpu_txt.read_text().split("\n")).strip("; ") if gpu_txt.is_file() else "unknown GPU"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    details = []
    for name, module in (
        ("colour", "gpu_check_colour"),
        ("inference", "bench_inference"),
        ("frames", "bench_frames"),
        ("mfu", "gpu_check_model"),
    ):
        data = _load(work / f"{name}.json")
        if data:
            details.append(__import__(module).format_table(data))
    if (work / "deepspeed.log").is_file():
        details.append(
            "\n".join(x for x in (work / "deepspeed.log").read_text().splitlines() if x.startswith("|"))
        )

    lines = [f"# issue 16 GPU checks, {date}: {gpu}", ""]
    lines += ["| check | configuration | s | peak GiB | result |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(work)]
    lines += ["", "| check | exit status | wall s | last line of its log if it failed |", "|---|---|---|---|"]
    for name in CHECKS:
        rc, seconds = status.get(name, ("not run", "-"))
        note = {"124": "124 (time limit)", "137": "137 (killed)", "0": "0 (ok)"}.get(rc, rc)
        log = work / f"{name}.log"
        last = ""
        if rc not in ("0", "not run") and log.is_file():
            last = next(
                (x.strip() for x in reversed(log.read_text(errors="replace").splitlines()) if x.strip()), ""
            )
        lines.append(f"| {name} | {note} | {seconds} | {last[:150].replace('|', '/')} |")
    summary = "\n".join(lines)

    (out / "results.md").write_text(summary + "\n\n" + "\n\n".join(f"```\n{d}\n```" for d in details) + "\n")
    merged = {"date": date, "gpu": gpu, "status": status}
    merged |= {n: _load(work / f"{n}.json") for n in ("colour", "inference", "frames", "mfu")}
    (out / "results.json").write_text(json.dumps(merged, indent=1))
    if (work / "frames.png").is_file():
        shutil.copy(work / "frames.png", out / "frames.png")
    logs = [f"===== {p.name}\n{p.read_text(errors='replace')[-200_000:]}" for p in sorted(work.glob("*.log"))]
    (out / "logs.txt").write_text("\n".join(logs))
    print("\n\n".join(details))
    print()
    print(summary)


if __name__ == "__main__":
    main()
