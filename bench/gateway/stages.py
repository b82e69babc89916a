"""CPU per message of each gateway stage, in one process, no broker, no InfluxDB.

    .venv/bin/python bench/gateway/stages.py [-n 20000] [--repeat 5]

The same messages as throughput.py. Each stage runs over all N messages;
the best of ``--repeat`` runs is reported in microseconds per message
(process CPU time, so other load on the box inflates it less than wall time).
For scale: the bare paho subscriber of throughput.py spends about 70 µs of
CPU per message (socket, PUBLISH decoding, ack), and paho pays the same in
the gateway's intake process; since the hand-off (gateway/handoff.py) the
intake adds only the raw hand-off, and the other stages run in the writer
process.
"""

from __future__ import annotations

import argparse
import pickle
import queue
import time
from collections.abc import Callable

from throughput import SITE, build_messages  # this directory (run as a script)

import contracts
from contracts import topics, utcnow
from gateway.influx import message_lines
from gateway.pipeline import Accepted, Stats
from gateway.processor import Classifier


def best_us(fn: Callable[[], None], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    n = args.n
    prefix = "district"
    msgs = [(topics.build(prefix, SITE, dev, "parking_bay"), payload) for dev, payload in build_messages(n, 4)]
    received_at = utcnow()
    decoded = [contracts.receive(t, pl, prefix=prefix) for t, pl in msgs]
    items = [
        Accepted(i, 1, 1, t, w.site_id, m, received_at)
        for i, ((t, _), (w, m)) in enumerate(zip(msgs, decoded, strict=True))
    ]

    def receive() -> None:
        for t, pl in msgs:
            contracts.receive(t, pl, prefix=prefix)

    def lines() -> None:
        for item in items:
            message_lines(item)

    def handoff() -> None:
        q: queue.Queue[Accepted] = queue.Queue(maxsize=2 * n)
        for item in items:
            q.put(item, timeout=0.5)
        for _ in items:
            q.get(timeout=0.5)

    raws = [(i, t, pl, False, time.time_ns()) for i, (t, pl) in enumerate(msgs)]
    classifier = Classifier(prefix, None, Stats())

    def classify() -> None:
        for i in range(0, n, 40):  # as the writer process gets them
            classifier.items(raws[i : i + 40])

    def raw_handoff() -> None:
        for i in range(0, n, 40):  # what the intake hands on every 4 ms at 10,000 msg/s
            pickle.loads(pickle.dumps(("batch", raws[i : i + 40]), protocol=pickle.HIGHEST_PROTOCOL))

    def stamp_and_item() -> None:
        for i, (t, _) in enumerate(msgs):
            Accepted(i, 1, 1, t, SITE, decoded[i][1], utcnow())

    rows = [
        ("validate: contracts.receive (topic, pydantic, RFC 3339)", best_us(receive, n, args.repeat)),
        ("received_at + Accepted item", best_us(stamp_and_item, n, args.repeat)),
        ("writer process: Classifier.items (receive + received_at + item + counts)", best_us(classify, n, args.repeat)),
        ("queue hand-off (put + get)", best_us(handoff, n, args.repeat)),
        ("raw hand-off between processes (pickle + unpickle, batches of 40)", best_us(raw_handoff, n, args.repeat)),
        ("line protocol: message_lines (to_points, line_protocol)", best_us(lines, n, args.repeat)),
    ]
    print(f"N={n}, best of {args.repeat}, CPU microseconds per message")
    print("| stage | µs/msg |")
    print("|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    main()
