#!/usr/bin/env python3
"""Footfall tracker comparison: one library's trackers -> the engineer's LineCrossingCounter -> count_score.py.

usage (each library lives in its own venv, because norfair pins numpy<2 and trackers needs numpy>=2):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    taskset -c 1 VENV-trackers/bin/python bench/footfall/trackers/compare.py trackers
    ... VENV-norfair/bin/python bench/footfall/trackers/compare.py norfair
    ... VENV-motpy/bin/python   bench/footfall/trackers/compare.py motpy
writes $TRACKERS_OUT/out/<config>-<seq>.json (PRED for count_score.py) and $TRACKERS_OUT/results-<lib>.json.

Every library gets the same input (cached YOLOX-nano boxes, $FOOTFALL_DETS/<SEQ>-320.npy, written by
dump_detections.py), the same counter
(edge/camera/count.py, CountConfig() defaults, birth_side=True, confirmed=True, held
crossings of every track released at the end) and the same foot point: bottom centre of the *detection
box the tracker matched to the track on this frame* (coasting/predicted boxes are not fed; the counter
interpolates over gaps itself). Time = wall time of the library call(s) per frame, incl. converting the
numpy boxes to the library's input type; median over frames of 3 passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
CACHE = os.environ.get("FOOTFALL_DETS", "/tmp/district-footfall-dets")
WORK = os.environ.get("TRACKERS_OUT", "/tmp/district-trackers")
from edge.camera.config import CountConfig  # noqa: E402
from edge.camera.count import LineCrossingCounter  # noqa: E402
from edge.camera.lines import load_lines  # noqa: E402

D = str(REPO.parent / "shared" / "data" / "footfall-video")
SEQ = {"TUD-Campus": (640, 480, 25.0), "PETS09-S2L1": (768, 576, 7.0)}
OUT = f"{WORK}/out"
PASSES = int(__import__("os").environ.get("PASSES", "3"))


# ----------------------------------------------------------------------------------------------- adapters
# An adapter is built per (config, sequence): make(fps) -> step(dets (N,5) np.float32, frame_idx0, t) -> [(id, box4)]


def trackers_adapter(
    params: dict,
    min_score: float = 0.0,
    use_timestamp: bool = False,
    pass_fps: bool = True,
    cls: str = "ByteTrackTracker",
):
    import supervision as sv
    import trackers

    ByteTrackTracker = getattr(trackers, cls)

    def make(fps):
        kw = dict(params)
        if pass_fps:
            kw.setdefault("frame_rate", fps)
        tr = ByteTrackTracker(**kw)

        def step(d, i, t, gap=1):
            d = d[d[:, 4] >= min_score]
            det = sv.Detections(
                xyxy=d[:, :4].astype(np.float32),
                confidence=d[:, 4].astype(np.float32),
                class_id=np.zeros(len(d), dtype=int),
            )
            res = tr.update(det, timestamp=t) if use_timestamp else tr.update(det)
            return [(int(k), b) for k, b in zip(res.tracker_id, res.xyxy, strict=False) if k != -1]

        return step

    return make


def norfair_adapter(
    params: dict,
    min_score: float,
    mode: str = "bbox",
    hit_s: float | None = None,
    init_delay: int | None = None,
    pending: bool = False,
    use_period: bool = False,
):
    from norfair import Detection, Tracker

    def make(fps):
        kw = dict(params)
        if hit_s is not None:
            kw["hit_counter_max"] = max(2, round(hit_s * fps))
        if init_delay is not None:
            kw["initialization_delay"] = init_delay
        tr = Tracker(**kw)

        def step(d, i, t, gap=1):
            d = d[d[:, 4] >= min_score]
            dets = []
            for r in d:
                if mode == "bbox":
                    dets.append(
                        Detection(points=r[:4].reshape(2, 2).astype(float), scores=np.array([r[4], r[4]]), data=r[:4])
                    )
                else:  # centroid
                    dets.append(
                        Detection(
                            points=np.array([[(r[0] + r[2]) / 2, (r[1] + r[3]) / 2]]),
                            scores=np.array([r[4]]),
                            data=r[:4],
                        )
                    )
            objs = tr.update(detections=dets, period=gap if use_period else 1)
            ids = {id(x) for x in dets}
            if pending:  # every object incl. initializing ones, keyed by the id it has from birth
                return [
                    (o.initializing_id, o.last_detection.data, not o.is_initializing)
                    for o in tr.tracked_objects
                    if id(o.last_detection) in ids
                ]
            # only objects matched on this frame; their box = the matched detection box
            return [(o.id, o.last_detection.data) for o in objs if id(o.last_detection) in ids]

        return step

    return make


def motpy_adapter(
    min_score: float,
    matching_kw: dict | None = None,
    tracker_kw: dict | None = None,
    active_kw: dict | None = None,
    stale_s: float | None = None,
    model_spec=None,
    pending_steps: int | None = None,
    dt_frames: float = 1.0,
):
    from motpy import Detection, MultiObjectTracker
    from motpy.tracker import IOUAndFeatureMatchingFunction

    class Recording(IOUAndFeatureMatchingFunction):
        """Public extension point (matching_fn): remember which tracker got which detection this step."""

        last: ClassVar[dict] = {}

        def __call__(self, trackers, detections):
            m = super().__call__(trackers, detections)
            self.last = {trackers[r].id: detections[c].box for r, c in m}
            return m

    def make(fps):
        tk = dict(tracker_kw or {})
        if stale_s is not None:
            tk["max_staleness"] = max(2.0, stale_s * fps)
        kw = dict(
            dt=dt_frames / fps,
            tracker_kwargs=tk,
            active_tracks_kwargs=dict(active_kw or {}),
            matching_fn=Recording(**(matching_kw or {})),
        )
        if model_spec is not None:
            kw["model_spec"] = dict(model_spec)
        mot = MultiObjectTracker(**kw)
        idmap: dict[str, int] = {}

        def step(d, i, t, gap=1):
            d = d[d[:, 4] >= min_score]
            tracks = mot.step([Detection(box=r[:4].astype(float), score=float(r[4])) for r in d])
            m = dict(mot.matching_fn.last)
            for st in mot.trackers:  # born on this step: its box is the detection box (no predict yet)
                if st.steps_alive == 1 and st.id not in m:
                    m[st.id] = st.box()
            out = []
            if pending_steps is not None:  # all trackers, tentative ones flagged unconfirmed
                for st in mot.trackers:
                    if st.id in m:
                        out.append(
                            (idmap.setdefault(st.id, len(idmap)), np.asarray(m[st.id]), st.steps_alive >= pending_steps)
                        )
                return out
            for tr in tracks:
                if tr.id in m:
                    out.append((idmap.setdefault(tr.id, len(idmap)), np.asarray(m[tr.id])))
            return out

        return step

    return make


def own_adapter(pending: bool = False, cfg: dict | None = None):
    """The engineer's own tracker (/work/wt-foot/edge/camera/track.py, read-only) in the same harness."""
    from edge.camera.config import PersonSizeConfig, TrackerConfig
    from edge.camera.detect import PersonSizeModel
    from edge.camera.track import Tracker

    def make(fps):
        tr_ = Tracker(TrackerConfig(**(cfg or {})))
        size = {}

        def step(d, i, t, gap=1):
            if not size:
                w, h, _ = next(v for v in SEQ.values() if abs(v[2] - fps) < 1e-9)
                size["m"] = PersonSizeModel(PersonSizeConfig(), w, h)
            sz = size["m"]
            d6 = np.concatenate([d[:, :4], np.ones((len(d), 1), np.float32), d[:, 4:5]], axis=1)
            d6 = d6[d6[:, 5] >= 0.1]  # what the engine's detector hands over (low_score)
            out = []
            for tr, c in tr_.update(d6, t, sz):
                x1, y1, x2, y2 = (float(v) for v in d6[c, :4])
                if tr.confirmed and not tr.partial:
                    sz.observe(y2, y2 - y1, x2 - x1)
                if tr.confirmed or pending:
                    out.append((tr.id, d6[c, :4], tr.confirmed))
            return out

        return step

    return make


# ----------------------------------------------------------------------------------------------- configs
# (name, settings text, adapter)
def configs(lib: str):
    if lib == "trackers":
        bt = dict(
            high_conf_det_threshold=0.5,
            track_activation_threshold=0.6,
            minimum_iou_threshold=0.2,
            minimum_consecutive_frames=2,
        )
        return [
            (
                "trk-default-literal",
                "ByteTrackTracker() as is (frame_rate=30 assumed, buffer 30 frames, high 0.6, "
                "new 0.7, IoU 0.1); all boxes >=0.05",
                trackers_adapter({}, pass_fps=False),
            ),
            ("trk-default", "defaults + frame_rate=fps (buffer 1 s); all boxes >=0.05", trackers_adapter({})),
            (
                "trk-bt-1s",
                "ByteTrack paper: high 0.5, low 0.1, new 0.6, IoU>=0.2, 2 frames to confirm, buffer 1 s",
                trackers_adapter(dict(bt, lost_track_buffer=30), min_score=0.1),
            ),
            ("trk-bt-2s", "as above, buffer 2 s", trackers_adapter(dict(bt, lost_track_buffer=60), min_score=0.1)),
            (
                "trk-bt-1s-ts",
                "as trk-bt-1s, timestamps passed (variable-dt mode)",
                trackers_adapter(dict(bt, lost_track_buffer=30), min_score=0.1, use_timestamp=True),
            ),
            (
                "trk-bt-1s-mcf1",
                "as trk-bt-1s, minimum_consecutive_frames=1 (ids from the 2nd frame)",
                trackers_adapter(dict(bt, lost_track_buffer=30, minimum_consecutive_frames=1), min_score=0.1),
            ),
            (
                "trk-cbiou-1s",
                "CBIoUTracker (same library), high 0.5, new 0.6, buffer 1 s, other defaults",
                trackers_adapter(
                    dict(high_conf_det_threshold=0.5, track_activation_threshold=0.6, lost_track_buffer=30),
                    min_score=0.1,
                    cls="CBIoUTracker",
                ),
            ),
            (
                "trk-ocsort-1s",
                "OCSORTTracker (same library), high 0.5, buffer 1 s, other defaults",
                trackers_adapter(
                    dict(high_conf_det_threshold=0.5, lost_track_buffer=30), min_score=0.1, cls="OCSORTTracker"
                ),
            ),
            (
                "trk-bt-1s-low.3",
                "as trk-bt-1s, high 0.3 / new 0.4 (YOLOX-nano scores are low on far people)",
                trackers_adapter(
                    dict(bt, lost_track_buffer=30, high_conf_det_threshold=0.3, track_activation_threshold=0.4),
                    min_score=0.1,
                ),
            ),
        ]
    if lib == "norfair":
        return [
            (
                "nf-demo-iou",
                "norfair demo: iou, dist 0.7 (IoU>0.3), hit_counter_max 15, init delay 7; boxes >=0.25",
                norfair_adapter(dict(distance_function="iou", distance_threshold=0.7), 0.25),
            ),
            (
                "nf-iou-1s",
                "iou, IoU>0.2 (dist 0.8), boxes >=0.5, hit_counter_max 1 s, init delay 1 (2 frames)",
                norfair_adapter(dict(distance_function="iou", distance_threshold=0.8), 0.5, hit_s=1.0, init_delay=1),
            ),
            (
                "nf-iou-2s",
                "as above, hit_counter_max 2 s",
                norfair_adapter(dict(distance_function="iou", distance_threshold=0.8), 0.5, hit_s=2.0, init_delay=1),
            ),
            (
                "nf-iou-1s-pending",
                "as nf-iou-1s but default init delay (hit_counter_max/2) and initializing "
                "objects fed with confirmed=False (keyed by initializing_id)",
                norfair_adapter(dict(distance_function="iou", distance_threshold=0.8), 0.5, hit_s=1.0, pending=True),
            ),
            (
                "nf-iou-1s-.3",
                "as nf-iou-1s, boxes >=0.3",
                norfair_adapter(dict(distance_function="iou", distance_threshold=0.8), 0.3, hit_s=1.0, init_delay=1),
            ),
            (
                "nf-demo-centroid",
                "norfair demo: centroid, euclidean 30 px, defaults; boxes >=0.25",
                norfair_adapter(dict(distance_function="euclidean", distance_threshold=30), 0.25, mode="centroid"),
            ),
            (
                "nf-centroid-1s",
                "centroid, euclidean 30 px, boxes >=0.5, hit_counter_max 1 s, init delay 1",
                norfair_adapter(
                    dict(distance_function="euclidean", distance_threshold=30),
                    0.5,
                    mode="centroid",
                    hit_s=1.0,
                    init_delay=1,
                ),
            ),
        ]
    if lib == "motpy":
        return [
            (
                "mp-default",
                "MultiObjectTracker(dt=1/fps) defaults (IoU 0.1, max_staleness 12 steps, all tracks "
                "active at once); boxes >=0.5 (README detector threshold)",
                motpy_adapter(0.5),
            ),
            ("mp-default-all", "defaults, all boxes >=0.05 (motpy has no score gate)", motpy_adapter(0.0)),
            (
                "mp-1s",
                "IoU>=0.2, boxes >=0.5, max_staleness 1 s, min_steps_alive 2",
                motpy_adapter(0.5, dict(min_iou=0.2), stale_s=1.0, active_kw=dict(min_steps_alive=2)),
            ),
            (
                "mp-2s",
                "as above, max_staleness 2 s",
                motpy_adapter(0.5, dict(min_iou=0.2), stale_s=2.0, active_kw=dict(min_steps_alive=2)),
            ),
            (
                "mp-1s-pending",
                "as mp-1s, tracks younger than 3 steps fed with confirmed=False",
                motpy_adapter(0.5, dict(min_iou=0.2), stale_s=1.0, pending_steps=3),
            ),
            (
                "mp-1s-.3",
                "as mp-1s, boxes >=0.3",
                motpy_adapter(0.3, dict(min_iou=0.2), stale_s=1.0, active_kw=dict(min_steps_alive=2)),
            ),
        ]
    if lib == "own":
        return [
            (
                "own-libstyle",
                "engineer's Tracker, TrackerConfig() defaults (high 0.5, low 0.1, new 0.6, coast 2 s, "
                "confirm 0.4 s); only confirmed tracks fed, confirmed=True",
                own_adapter(),
            ),
            (
                "own-pending",
                "same tracker; tentative tracks fed too with confirmed=tr.confirmed (engine's way, no re-id/inherit)",
                own_adapter(pending=True),
            ),
        ]
    raise SystemExit(f"unknown lib {lib}")


# ----------------------------------------------------------------------------------------------- harness
def run_one(make, seq: str, keep=None):
    w, h, fps = SEQ[seq]
    dets = np.load(f"{CACHE}/{seq}-320.npy", allow_pickle=True)
    lines = load_lines(f"{D}/{seq}/lines.json", (w, h))
    counter = LineCrossingCounter(lines, CountConfig())
    counter.birth_side = True
    step = make(fps)
    events, seen, times, n_tracked = [], set(), [], 0
    last = -1
    for i, d in enumerate(dets):
        if keep is not None and not keep[i]:
            continue
        gap, last = i - last, i
        t = i / fps
        d = np.asarray(d, dtype=np.float32).reshape(-1, 5)
        t0 = time.perf_counter()
        tracked = step(d, i, t, gap)
        times.append(time.perf_counter() - t0)
        for item in tracked:
            tid, box = item[0], item[1]
            conf = item[2] if len(item) > 2 else True
            x1, y1, x2, y2 = (float(v) for v in box[:4])
            seen.add(tid)
            n_tracked += 1
            events += counter.update(tid, ((x1 + x2) / 2, y2), i + 1, t, y2 - y1, confirmed=conf)
    for tid in sorted(seen):
        events += counter.release(counter.held(counter.snapshot(tid)))
    return events, lines, times, len(seen), n_tracked


def score(events, lines, seq, name):
    fps = SEQ[seq][2]
    out = {"fps": fps, "lines": {}}
    for ln in lines:
        e = sorted((x for x in events if x.line == ln.name), key=lambda x: x.frame)
        out["lines"][ln.name] = {
            "in": sum(x.direction == "in" for x in e),
            "out": sum(x.direction == "out" for x in e),
            "events": [{"frame": x.frame, "direction": x.direction} for x in e],
        }
    p = f"{OUT}/{name}-{seq}.json"
    with open(p, "w") as f:
        json.dump(out, f)
    r = subprocess.run(
        ["python3", str(REPO.parent / "shared" / "tools" / "count_score.py"), p, f"{D}/{seq}/gt_counts.json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    last = r.strip().splitlines()[-1]  # "count accuracy 0.923  event F1 0.960"
    parts = last.split()
    return float(parts[2]), float(parts[5]), r


def skip_configs(lib: str):
    """Frame skipping: (name, text, adapter, pattern). pattern 'half' = every 2nd frame, 'rand30' = 30 % dropped
    at random (seed 0): the time step varies."""
    bt = dict(
        high_conf_det_threshold=0.5,
        track_activation_threshold=0.6,
        minimum_iou_threshold=0.2,
        minimum_consecutive_frames=2,
        lost_track_buffer=30,
    )
    out = []
    for pat in ("half", "rand30"):
        if lib == "trackers":
            out += [
                (
                    f"trk-bt-1s-ts-{pat}",
                    "trk-bt-1s, frames skipped, timestamps passed",
                    trackers_adapter(bt, min_score=0.1, use_timestamp=True),
                    pat,
                ),
                (
                    f"trk-bt-1s-nots-{pat}",
                    "trk-bt-1s, frames skipped, no timestamps (1 call = 1 frame step)",
                    trackers_adapter(bt, min_score=0.1),
                    pat,
                ),
            ]
        if lib == "norfair":
            out += [
                (
                    f"nf-iou-1s-period-{pat}",
                    "nf-iou-1s, frames skipped, period=gap passed (documented way)",
                    norfair_adapter(
                        dict(distance_function="iou", distance_threshold=0.8),
                        0.5,
                        hit_s=1.0,
                        init_delay=1,
                        use_period=True,
                    ),
                    pat,
                )
            ]
        if lib == "motpy":
            out += [
                (
                    f"mp-1s-dt2-{pat}",
                    "mp-1s, frames skipped, dt fixed at 2/fps (set at construction)",
                    motpy_adapter(
                        0.5, dict(min_iou=0.2), stale_s=0.5, active_kw=dict(min_steps_alive=2), dt_frames=2.0
                    ),
                    pat,
                )
            ]
        if lib == "own":
            out += [
                (f"own-libstyle-{pat}", "own tracker, frames skipped (takes t)", own_adapter(), pat),
                (f"own-pending-{pat}", "own-pending, frames skipped (takes t)", own_adapter(pending=True), pat),
            ]
    return out


def main():
    import os

    lib = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    with open(str(REPO / "edge" / "camera" / "count.py"), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:16]
    rows = []
    skip = "--skip" in sys.argv
    todo = skip_configs(lib) if skip else [(n, t, m, None) for n, t, m in configs(lib)]
    only = [a for a in sys.argv[2:] if not a.startswith("--")]
    for name, text, make, pat in todo:
        if only and name not in only:
            continue
        row = {"lib": lib, "config": name, "settings": text, "count_py_sha256_16": sha}
        for seq in SEQ:
            n = len(np.load(f"{CACHE}/{seq}-320.npy", allow_pickle=True))
            keep = None
            if pat == "half":
                keep = np.arange(n) % 2 == 0
            elif pat == "rand30":
                keep = np.random.default_rng(0).random(n) >= 0.3
                keep[0] = True
            allt = []
            for p in range(PASSES):
                ev, lines, times, ntr, nbox = run_one(make, seq, keep)
                allt += times
                if p == 0:
                    acc, f1, _table = score(ev, lines, seq, name)
                    first = (ev, ntr, nbox)
            row[seq] = {
                "acc": acc,
                "f1": f1,
                "ms_median": 1000 * statistics.median(allt),
                "ms_p95": 1000 * float(np.percentile(allt, 95)),
                "tracks": first[1],
                "tracked_boxes": first[2],
            }
            print(
                f"{lib:9} {name:22} {seq:12} acc {acc:.3f} F1 {f1:.3f}  tracks {first[1]:3d}  "
                f"{1000 * statistics.median(allt):.3f} ms/frame",
                flush=True,
            )
        rows.append(row)
    tag = "-skip" if skip else ""
    if only:
        tag += "-" + "_".join(only)
    with open(f"{WORK}/results-{lib}{tag}.json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
