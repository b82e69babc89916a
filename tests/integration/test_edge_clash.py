"""Two edge agents with one client id (a cloned SD card) stop kicking each other off, and lose nothing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from district.services import Service
from tests.conftest import Influx, wait_for
from tests.integration.test_confirmation import _edge, _gateway, _readings, _stored_ids

pytestmark = pytest.mark.integration


def test_cloned_edge_agents_back_off_and_every_reading_is_stored(
    tmp_path: Path, mosquitto: Service, influx_db: Influx, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    gw = _gateway(prefix, mosquitto, influx_db, tmp_path)
    gw.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _edge(tmp_path / "a", prefix, mosquitto)
    b = _edge(tmp_path / "b", prefix, mosquitto)
    try:
        assert gw.wait_ready(15)
        a.start()
        b.start()
        assert a.publisher is not None and b.publisher is not None

        def named() -> list[str]:
            return [r.getMessage() for r in caplog.records if "probably using our client id" in r.getMessage()]

        wait_for(named, 60, what="the clash named in the log")
        assert a.config.client_id in named()[0]
        # One backs off (60 s); the other holds the connection and its readings get through.
        wait_for(lambda: a.publisher.connected.is_set() or b.publisher.connected.is_set(), 10, what="a holder")  # type: ignore[union-attr]
        holder = a if a.publisher.connected.is_set() else b
        sent = _readings(50)
        holder.emit(sent)
        wait_for(lambda: holder.outbox is not None and holder.outbox.pending == 0, 20, what="holder's outbox drained")
        assert set(_stored_ids(influx_db)) >= {m.reading_id for m in sent}
        connects = a.publisher.stats["connects"] + b.publisher.stats["connects"]
        time.sleep(5)
        assert a.publisher.stats["connects"] + b.publisher.stats["connects"] == connects  # no more fighting
    finally:
        a.stop()
        b.stop()
        gw.stop()
