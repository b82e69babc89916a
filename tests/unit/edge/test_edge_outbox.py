"""The SQLite outbox: order, acknowledgement, bound, survival across reopen."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge.outbox import Outbox, OutboxError


def _payloads(box: Outbox, after: int = 0, limit: int = 1000) -> list[bytes]:
    return [i.payload for i in box.pending_after(after, limit)]


def test_order_ack_and_cursor(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", 100) as box:
        box.put_many([("t/a", b"1"), ("t/b", b"2")])
        box.put("t/c", b"3")
        items = box.pending_after(0, 10)
        assert [(i.topic, i.payload) for i in items] == [("t/a", b"1"), ("t/b", b"2"), ("t/c", b"3")]
        assert [i.id for i in items] == sorted(i.id for i in items)
        assert box.pending == 3
        assert _payloads(box, after=items[0].id, limit=1) == [b"2"]
        assert box.pending_after(items[-1].id, 10) == []
        assert box.ack([items[1].id, items[1].id + 1000]) == 1
        assert box.pending == 2
        assert _payloads(box) == [b"1", b"3"]


def test_ids_never_go_backwards_after_everything_is_acked(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", 100) as box:
        box.put("t", b"1")
        first = box.pending_after(0, 1)[0].id
        box.ack([first])
        box.put("t", b"2")
        assert box.pending_after(first, 10)[0].payload == b"2"


def test_bound_drops_oldest_and_counts_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, 5) as box:
        box.put_many([("t", str(n).encode()) for n in range(4)])
        box.put_many([("t", str(n).encode()) for n in range(4, 8)])
        assert box.pending == 5
        assert box.dropped == 3
        assert _payloads(box) == [b"3", b"4", b"5", b"6", b"7"]
        # a single batch larger than the bound keeps its newest rows
        box.put_many([("t", str(n).encode()) for n in range(8, 20)])
        assert box.pending == 5 and box.dropped == 15
        assert _payloads(box) == [b"15", b"16", b"17", b"18", b"19"]
    with Outbox(path, 5) as again:
        assert again.pending == 5
        assert again.dropped == 15
        assert _payloads(again) == [b"15", b"16", b"17", b"18", b"19"]


def test_pending_survives_reopen_with_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    payload = bytes(range(256))
    with Outbox(path, 10) as box:
        box.put("t/x", payload)
    with Outbox(path, 10) as box:
        (item,) = box.pending_after(0, 10)
        assert item.payload == payload and item.topic == "t/x"
        assert box.last_id == item.id


def test_concurrent_writers_keep_every_row(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", 100_000, synchronous="normal") as box:

        def write(tag: int) -> None:
            for n in range(200):
                box.put("t", f"{tag}:{n}".encode())

        threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = _payloads(box, limit=10_000)
        assert len(rows) == 800 == box.pending
        for tag in range(4):  # each writer's rows stay in its own order
            mine = [r for r in rows if r.startswith(f"{tag}:".encode())]
            assert mine == [f"{tag}:{n}".encode() for n in range(200)]


def test_closed_and_unopenable(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 10)
    box.close()
    with pytest.raises(OutboxError):
        box.put("t", b"x")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutboxError):
        Outbox(tmp_path / "file" / "o.sqlite", 10)


def test_readings_are_numbered_by_their_row_and_the_epoch_survives_a_restart(tmp_path: Path) -> None:
    """seq = outbox row id (never reused, also after the oldest were dropped); epoch is made once per file."""
    path = tmp_path / "o.sqlite"
    with Outbox(path, max_messages=3) as ob:
        epoch = ob.epoch
        seqs = ob.put_readings([("t", lambda e, s: f"{e}:{s}".encode()) for _ in range(5)])
        assert seqs == [1, 2, 3, 4, 5]
        assert [i.payload for i in ob.pending_after(0, 10)] == [f"{epoch}:{s}".encode() for s in (3, 4, 5)]
    with Outbox(path, max_messages=3) as ob:
        assert ob.epoch == epoch
        assert ob.put_readings([("t", lambda e, s: b"x")]) == [6]
        assert ob.ack_ranges([(3, 4), (9, 20)]) == 1  # 3 was dropped by the bound when 6 came in
        assert [i.id for i in ob.pending_after(0, 10)] == [5, 6]
        assert ob.pending == 2
    other = Outbox(tmp_path / "new.sqlite", max_messages=3)
    assert other.epoch != epoch  # a new file is a new sequence
    other.close()


@pytest.mark.allow_logged_exceptions
def test_a_write_calls_the_listeners_after_its_commit_and_a_failing_one_loses_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 100)
    seen: list[int] = []
    box.add_listener(lambda: seen.append(box.pending))

    def broken() -> None:
        raise RuntimeError("listener bug")

    box.add_listener(broken)
    box.put_many([("t/a", b"1"), ("t/a", b"2")])
    box.put("t/a", b"3")
    assert seen == [2, 3], "once per write, after the rows are in"
    assert _payloads(box) == [b"1", b"2", b"3"], "a listener that raises does not undo or lose the write"
    box.close()
