"""Footfall benchmark: accuracy (count_score.py), speed and memory per sequence.

    python bench/footfall/run.py [--data DIR] [--scorer PATH] [--out results.json] [--variants] [--repeats N]

For every sequence directory under --data (default ``../shared/data/footfall-video``
relative to the repo root) holding a video, lines.json and gt_counts.json, a child
process pinned to one CPU core with one OpenCV thread and one decoder thread runs,
``--repeats`` times and interleaved (decode-only pass, full pipeline pass, decode-only,
pipeline, ...), a decode-only pass over the whole video and a full pipeline pass
(decode + detector + tracker + counter) in each detection mode (``--modes``, default
motion, detector and hybrid; one child process per mode, so peak RSS is per mode). Each pass is timed both by wall clock
and by process CPU time (``time.process_time``), which other processes' load barely
affects on a shared machine. Reported: medians over the repeats of pipeline fps and
decode-only fps (wall and CPU), the median of the per-pair ratios pipeline/decode, and
the child's peak RSS. The parent scores the first pipeline pass's predictions with the
scorer as a subprocess (every pass gives the same events; the child checks that).
``--variants`` also runs rescaled (0.5x, 1.5x) and frame-dropped (every 2nd frame)
versions, to check that the physical parameters generalise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.footfall")

MODES = ("motion", "detector", "hybrid")
VARIANTS = {"base": (1.0, 1), "resize0.5": (0.5, 1), "resize1.5": (1.5, 1), "step2": (1.0, 2)}


def find_sequences(data: Path) -> list[Path]:
    """Sequence dirs: a video plus lines.json and gt_counts.json."""
    return sorted(
        d
        for d in data.iterdir()
        if d.is_dir()
        and (d / "lines.json").is_file()
        and (d / "gt_counts.json").is_file()
        and pick_video(d) is not None
    )


def pick_video(seq: Path) -> Path | None:
    vids = sorted(p for p in seq.iterdir() if p.suffix.lower() in {".mp4", ".avi", ".mkv", ".webm", ".mov"})
    plain = [p for p in vids if "_hq" not in p.stem]
    return (plain or vids or [None])[0]


def child(seq: Path, out_json: Path, resize: float, step: int, repeats: int, mode: str) -> dict[str, Any]:
    """Runs in the pinned child process: interleaved decode-only and full-pipeline passes of one mode."""
    import cv2

    from edge.camera.config import EngineConfig
    from edge.camera.count_cli import count_video, frames, open_video

    cfg = EngineConfig.model_validate({"detector": {"type": mode}})

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    video = pick_video(seq)
    assert video is not None
    dec: list[tuple[float, float]] = []  # (fps wall, fps cpu) per pass
    pipe: list[tuple[float, float]] = []
    first: dict[str, Any] | None = None
    n_frames = 0
    for _ in range(max(1, repeats)):
        cap = open_video(video, threads=1)
        t0, c0 = time.perf_counter(), time.process_time()
        n_dec = sum(1 for _ in frames(cap, resize, step))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        cap.release()
        dec.append((n_dec / wall, n_dec / max(cpu, 1e-9)))
        res = count_video(video, seq / "lines.json", cfg, resize=resize, step=step, progress=False)
        pipe.append((res.frames / res.seconds, res.frames / max(res.cpu_seconds, 1e-9)))
        doc = res.to_json()
        if first is None:
            first, n_frames = doc, res.frames
            out_json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        elif doc != first:
            raise RuntimeError("pipeline passes disagree: the engine is not deterministic")
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    med = statistics.median
    return {
        "frames": n_frames,
        "repeats": len(pipe),
        "pipeline_fps": med(p[0] for p in pipe),
        "pipeline_fps_cpu": med(p[1] for p in pipe),
        "decode_fps": med(d[0] for d in dec),
        "decode_fps_cpu": med(d[1] for d in dec),
        "ratio": med(p[0] / d[0] for p, d in zip(pipe, dec, strict=True)),
        "ratio_cpu": med(p[1] / d[1] for p, d in zip(pipe, dec, strict=True)),
        "pipeline_ms_cpu": 1000.0 / med(p[1] for p in pipe),
        "decode_ms_cpu": 1000.0 / med(d[1] for d in dec),
        "peak_rss_mb": rss_kb / 1024.0,
    }


def score(scorer: Path, pred: Path, gt: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(scorer), str(pred), str(gt)], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"count accuracy ([-\d.]+)\s+event F1 ([-\d.]+)", out)
    if not m:
        raise RuntimeError(f"unexpected scorer output:\n{out}")
    return {"count_accuracy": float(m.group(1)), "event_f1": float(m.group(2)), "scorer_output": out}


def run_one(seq: Path, variant: str, scorer: Path, workdir: Path, repeats: int, mode: str) -> dict[str, Any]:
    resize, step = VARIANTS[variant]
    pred = workdir / f"{seq.name}.{mode}.{variant}.json"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(seq),
        "--child-out",
        str(pred),
        "--resize",
        str(resize),
        "--step",
        str(step),
        "--repeats",
        str(repeats),
        "--mode",
        mode,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "sequence": seq.name,
        "mode": mode,
        "variant": variant,
        **stats,
        **score(scorer, pred, seq / "gt_counts.json"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "footfall-video")
    p.add_argument("--scorer", type=Path, default=REPO.parent / "shared" / "tools" / "count_score.py")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "footfall" / "results.json")
    p.add_argument("--variants", action="store_true", help="also run rescaled / frame-dropped variants")
    p.add_argument("--repeats", type=int, default=3, help="interleaved decode/pipeline pass pairs (median)")
    p.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated detection modes (default: {','.join(MODES)})"
    )
    p.add_argument("--mode", default="hybrid", help=argparse.SUPPRESS)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--resize", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--step", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.child_out, args.resize, args.step, args.repeats, args.mode)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.data.is_dir():
        log.error("data dir %s not found (use --data)", args.data)
        return 2
    seqs = find_sequences(args.data)
    if not seqs:
        log.error("no sequences (video + lines.json + gt_counts.json) under %s", args.data)
        return 2
    workdir = args.out.parent / "out"
    workdir.mkdir(parents=True, exist_ok=True)
    variants = list(VARIANTS) if args.variants else ["base"]
    rows = []
    log.info(
        "%-12s %-8s %-9s %6s %6s | %8s %8s %8s | %8s %8s %8s | %6s",
        "sequence",
        "mode",
        "variant",
        "acc",
        "F1",
        "pipe fps",
        "dec fps",
        "ratio",
        "pipe cpu",
        "dec cpu",
        "ratio",
        "RSS MB",
    )
    modes = [m for m in args.modes.split(",") if m]
    for seq in seqs:
        for mode, v in itertools.product(modes, variants):
            r = run_one(seq, v, args.scorer, workdir, args.repeats, mode)
            rows.append(r)
            log.info(
                "%-12s %-8s %-9s %6.3f %6.3f | %8.1f %8.1f %8.2f | %8.1f %8.1f %8.2f | %6.1f",
                seq.name[:12],
                mode,
                v,
                r["count_accuracy"],
                r["event_f1"],
                r["pipeline_fps"],
                r["decode_fps"],
                r["ratio"],
                r["pipeline_fps_cpu"],
                r["decode_fps_cpu"],
                r["ratio_cpu"],
                r["peak_rss_mb"],
            )
    meta = {
        "cpu": "1 core (sched_setaffinity), cv2.setNumThreads(1), decoder threads 1",
        "timing": "median of --repeats interleaved decode-only / pipeline pass pairs; wall = perf_counter, "
        "cpu = process_time; fps include decoding; ratio = pipeline fps / decode-only fps",
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "repeats": args.repeats,
    }
    args.out.write_text(json.dumps({**meta, "results": rows}, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
