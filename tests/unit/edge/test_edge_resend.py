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


def _confirm(pub: MqttPublisher, *rows: int) -> None:
    for payload in confirm.encode("bays-1", pub.outbox.epoch, rows):
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
    # It then stalls: a confirmation timeout after its last one, the rest go again from row 4.
    publisher._resend_unconfirmed(time.monotonic() + TIMEOUT_S + 1)
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
