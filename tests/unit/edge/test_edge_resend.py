"""When the edge publishes unconfirmed readings again: a loss, a gateway that is behind, a gateway that is away.

The publisher's confirmation handling runs on a real SQLite outbox with
confirmations decoded from real payloads; no broker (the decision is pure
bookkeeping on the MQTT thread). Times are monotonic seconds, as the publisher
keeps them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from paho.mqtt.client import MQTTMessage

from contracts import confirm
from edge.config import DeviceConfig
from edge.mqtt import HealthReporter, MqttPublisher
from edge.outbox import Outbox

TIMEOUT_S = 30.0


@pytest.fixture
def publisher(tmp_path: Path) -> MqttPublisher:
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": "bays-1", "site_id": "s1"},
            "mqtt": {"host": "localhost", "confirm_timeout_s": TIMEOUT_S},
            "outbox": {"path": str(tmp_path / "outbox.sqlite"), "max_messages": 1000},
        }
    )
    outbox = Outbox(tmp_path / "outbox.sqlite", 1000, synchronous="normal")
    outbox.put_many([("t", f"r{i}".encode()) for i in range(1, 11)])
    return MqttPublisher(cfg, outbox, HealthReporter(), threading.Event())


def _published(pub: MqttPublisher, ago_s: float) -> float:
    """Rows 1..10 published one 0.1 s apart, the first ``ago_s`` ago, all PUBACKed (awaiting the gateway)."""
    t0 = time.monotonic() - ago_s
    pub._awaiting = {row: t0 + 0.1 * (row - 1) for row in range(1, 11)}
    return t0


def _confirm(pub: MqttPublisher, *rows: int, by: str | None = None) -> None:
    for payload in confirm.encode("bays-1", pub.outbox.epoch, rows, by=by):
        msg = MQTTMessage(topic=pub.stored_topic.encode())
        msg.payload = payload
        pub._on_message(None, None, msg)  # type: ignore[arg-type]


def test_a_gateway_working_through_a_backlog_is_not_a_loss(publisher: MqttPublisher) -> None:
    # The oldest readings were published 40 s ago; the gateway, behind, now confirms the first three.
    _published(publisher, 40.0)
    _confirm(publisher, 1, 2, 3)
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 0
    assert sorted(publisher._awaiting) == list(range(4, 11))
    # Its confirmations took about 40 s, so the wait for the next stretches with them (RFC 6298):
    # a confirmation timeout after its last one is not enough to call the rest lost ...
    rto = publisher.resend_timeout.value
    assert rto > 40.0
    publisher._resend_unconfirmed(time.monotonic() + TIMEOUT_S + 1)
    assert publisher.stats["resends"] == 0
    # ... but once it stalls for that long, the rest go again from row 4.
    publisher._resend_unconfirmed(time.monotonic() + rto + 1)
    assert publisher.stats["resends"] == 1
    assert publisher._awaiting == {}


def test_a_later_reading_confirmed_means_the_older_one_was_lost(publisher: MqttPublisher) -> None:
    _published(publisher, 40.0)
    _confirm(publisher, 5, 6)  # published after rows 1-4: the gateway stored later ones, 1-4 never reached it
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 1


def test_a_loss_waits_for_the_confirmation_timeout(publisher: MqttPublisher) -> None:
    _published(publisher, 5.0)
    _confirm(publisher, 5)
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 0
    publisher._resend_unconfirmed(time.monotonic() + TIMEOUT_S)
    assert publisher.stats["resends"] == 1


def test_a_silent_gateway_makes_each_wait_longer(publisher: MqttPublisher) -> None:
    t0 = _published(publisher, TIMEOUT_S + 1)
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 1
    # Published again at once by the pacer in real life; here the same rows wait again from t0.
    _published(publisher, TIMEOUT_S + 1)
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 1  # the second silent round waits 2 x the timeout
    publisher._resend_unconfirmed(t0 + 2 * TIMEOUT_S + 1)
    assert publisher.stats["resends"] == 2


def test_one_gateway_worker_running_ahead_of_another_is_not_a_loss(publisher: MqttPublisher) -> None:
    # A shared subscription deals the device's readings out to two workers: w1 has stored up to row 6,
    # w2 is still behind on row 1 (it confirmed nothing newer than row 1's predecessor).
    _published(publisher, 40.0)
    _confirm(publisher, 2, 4, 6, by="gw-w1")
    _confirm(publisher, 1, by="gw-w2")
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 0
    # w2 then confirms row 5, published after row 3: both workers are past row 3, so it was lost.
    _confirm(publisher, 5, by="gw-w2")
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 1


def test_a_worker_gone_quiet_does_not_hide_a_loss_for_ever(publisher: MqttPublisher) -> None:
    _published(publisher, 40.0)
    _confirm(publisher, 1, by="gw-w2")  # then w2 dies
    _confirm(publisher, 5, 6, by="gw-w1")
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 0  # w2 may still be working on rows 2-4
    # Once w2 has not been heard from for a confirmation timeout, w1 alone decides: rows 2-4 go again.
    newest, _ = publisher._confirmed_by["gw-w2"]
    publisher._confirmed_by["gw-w2"] = (newest, time.monotonic() - TIMEOUT_S - 1)
    publisher._resend_unconfirmed(time.monotonic())
    assert publisher.stats["resends"] == 1


class _Info:
    def __init__(self, mid: int) -> None:
        self.rc = 0
        self.mid = mid


class _FakeClient:
    """Takes publishes (a unit-test fake: the window's bookkeeping needs no broker)."""

    def __init__(self) -> None:
        self.mids = 0

    def publish(self, topic: str, payload: bytes, qos: int) -> _Info:
        self.mids += 1
        return _Info(self.mids)


def test_the_backlog_out_is_clocked_by_confirmations(publisher: MqttPublisher) -> None:
    publisher.pacer.begin()  # a connection: the ten rows are its backlog
    client = _FakeClient()
    assert publisher._pump(client)  # type: ignore[arg-type]
    assert client.mids == 8 and publisher._backlog_out == 8, "the window's initial eight, no more"
    assert publisher._pump(client)  # type: ignore[arg-type]
    assert client.mids == 8, "nothing more before a confirmation"
    _confirm(publisher, *range(1, 9))
    assert publisher._backlog_out == 0
    assert publisher.pacer.window is not None and publisher.pacer.window.size == 16
    assert publisher._pump(client)  # type: ignore[arg-type]
    assert client.mids == 10 and publisher._backlog_out == 2, "the last two go"
