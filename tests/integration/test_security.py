"""Device identity and transport security on a real Mosquitto 2.0 started with the files
``district provision`` generated (issue 12, "What it must show").

Each test provisions the demo site under its own topic prefix and starts its
own broker with those files: TLS on the only listener, a password and a
client certificate per identity, and the least-privilege ACL.
"""

from __future__ import annotations

import logging
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contracts import ParkingBayState, encode, new_reading_id, topics, utcnow
from contracts.configfile import load_model
from contracts.ownership import NOT_OWNER
from contracts.site import SiteConfig
from contracts.storage import M_PARKING_BAY
from district import pki
from district.demo import DEMO_SITE
from district.provision import ADMIN, GATEWAY, Provisioned, provision
from district.services import BrokerAccess, Service, broker_access, find_binary, start_mosquitto
from edge.agent import EdgeAgent
from edge.config import DeviceConfig
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from tests.conftest import Influx, need, provision_test_broker, wait_for

pytestmark = pytest.mark.integration

SITE = "dresden"
A, B = "edge-dresdenaltmarkt", "edge-dresdenkarstadt"
LOT = {A: "dresdenaltmarkt", B: "dresdenkarstadt"}
BAY = {A: "AM-001", B: "KA-001"}


@dataclass
class SiteBroker:
    pki: Provisioned
    broker: Service
    prefix: str

    def access(self, identity: str) -> BrokerAccess:
        return broker_access(self.broker, identity)

    def topic(self, device: str, kind: str = "parking_bay") -> str:
        return topics.build(self.prefix, SITE, device, kind)


@pytest.fixture
def site_broker(tmp_path: Path, prefix: str) -> Iterator[SiteBroker]:
    """The demo site provisioned under ``prefix`` (admin limited to it, as in production) and its broker."""
    need(find_binary("mosquitto") is not None, "mosquitto is not installed")
    provisioned = provision_test_broker(tmp_path / "pki", prefix=prefix, admin_topics=None)
    broker = start_mosquitto(tmp_path / "broker", pki=provisioned)
    yield SiteBroker(provisioned, broker, prefix)
    broker.stop()


@dataclass
class Client:
    """A paho MQTT 5 client that records connects, PUBACK reasons, messages and disconnects."""

    access: BrokerAccess
    client_id: str = field(default_factory=lambda: f"c-{uuid.uuid4().hex[:8]}")
    connack: ReasonCode | str | None = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    acks: dict[int, ReasonCode] = field(default_factory=dict)
    subscribed: threading.Event = field(default_factory=threading.Event)
    dropped: threading.Event = field(default_factory=threading.Event)

    def connect(self, **client_kw: Any) -> Client:
        self.mqtt = self.access.client(self.client_id, protocol=mqtt.MQTTv5, **client_kw)
        self._wire()
        self._start()
        return self

    def _wire(self) -> None:
        done = threading.Event()
        self._done = done

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
            self.connack = rc
            done.set()

        def on_disconnect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
            self.dropped.set()
            done.set()

        self.mqtt.on_connect = on_connect
        self.mqtt.on_disconnect = on_disconnect
        self.mqtt.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.mqtt.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.mqtt.on_subscribe = lambda *a: self.subscribed.set()

    def _start(self) -> None:
        self.mqtt.reconnect_delay_set(60, 60)  # one attempt: a refusal must not be retried behind our back
        try:
            self.mqtt.connect(self.access.host, self.access.port, keepalive=10)
        except (OSError, ssl.SSLError) as exc:
            self.connack = f"{type(exc).__name__}: {exc}"
            return
        self.mqtt.loop_start()
        if not self._done.wait(5):
            self.connack = "no CONNACK"

    @property
    def accepted(self) -> bool:
        return isinstance(self.connack, ReasonCode) and not self.connack.is_failure

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> ReasonCode:
        """Publish QoS 1 and return the broker's PUBACK reason."""
        info = self.mqtt.publish(topic, payload, qos=1, retain=retain)
        wait_for(lambda: info.mid in self.acks, 5, what=f"PUBACK for {topic}")
        return self.acks[info.mid]

    def subscribe(self, topic_filter: str) -> None:
        self.subscribed.clear()
        self.mqtt.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(5)

    def close(self) -> None:
        if hasattr(self, "mqtt"):
            self.mqtt.disconnect()
            self.mqtt.loop_stop()


@pytest.fixture
def clients() -> Iterator[Callable[[BrokerAccess], Client]]:
    made: list[Client] = []

    def make(access: BrokerAccess, **kw: Any) -> Client:
        c = Client(access).connect(**kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def reading(device: str, **over: Any) -> ParkingBayState:
    return ParkingBayState.model_validate(
        {"device_id": device, "observed_at": utcnow(), "reading_id": new_reading_id(), "lot_id": LOT[device],
         "bay_id": BAY[device], "status": "occupied", **over}
    )  # fmt: skip


def _gateway(sb: SiteBroker, influx: Influx, tmp_path: Path) -> Gateway:
    settings = GatewaySettings.model_validate(
        {**sb.access(GATEWAY).settings(), "mqtt_client_id": GATEWAY, "topic_prefix": sb.prefix,
         "influx_url": influx.url, "influx_db": influx.db, "site_config": DEMO_SITE, "flush_interval_s": 0.05,
         "dead_letter_path": tmp_path / "dead.jsonl", "history": False, "confirm_interval_s": 0.05}
    )  # fmt: skip
    gw = Gateway(settings)
    gw.start()
    assert gw.wait_ready(15), "the gateway did not connect with its own identity"
    return gw


def test_a_device_cannot_publish_as_another_nor_read_its_confirmations(
    site_broker: SiteBroker, influx_db: Influx, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    sb = site_broker
    gw = _gateway(sb, influx_db, tmp_path)
    try:
        watcher = clients(sb.access(ADMIN))
        watcher.subscribe(f"{sb.prefix}/#")
        a, b = clients(sb.access(A)), clients(sb.access(B))
        assert a.accepted and b.accepted

        # A speaks as B: on B's topic, with B's id in the payload, about B's lot. The broker refuses it.
        spoof = reading(B)
        assert a.publish(sb.topic(B), encode(spoof)).value == 0x87  # not authorised
        # ... and a retained one anywhere outside A's own subtree, too.
        assert a.publish(f"{sb.prefix}/v1/{SITE}/alerts/x/y/z", b"{}", retain=True).value == 0x87
        # A's own reading about B's lot gets through the broker but not the gateway: not A's lot.
        stray = reading(A, lot_id=LOT[B], bay_id=BAY[B])
        assert a.publish(sb.topic(A), encode(stray)).value == 0
        # B's own reading, with a sequence, is stored and confirmed to B, and only to B.
        a.subscribe(sb.topic(B, "stored"))
        b.subscribe(sb.topic(B, "stored"))
        own = reading(B, epoch="e1", seq=7)
        assert b.publish(sb.topic(B), encode(own)).value == 0

        wait_for(lambda: b.messages, 10, what="B's confirmation")
        assert b"e1" in b.messages[0][1]
        wait_for(lambda: gw.stats().rejected.get(NOT_OWNER) == 1, 10, what="A's stray reading refused as not_owner")
        time.sleep(0.3)  # anything A could have been sent went out with B's confirmation
        assert a.messages == []
        seen = [t for t, _ in watcher.messages]
        assert sb.topic(B) in seen and sb.topic(A) in seen  # the watcher sees what the broker let through ...
        assert [p for t, p in watcher.messages if spoof.reading_id.encode() in p] == []  # ... never the spoof
        stored = {r["reading_id"] for r in influx_db.query(f'SELECT reading_id FROM "{M_PARKING_BAY}"')}
        assert stored == {own.reading_id}
        assert gw.stats().rejected == {NOT_OWNER: 1}
    finally:
        gw.stop()


def test_a_revoked_device_is_refused_after_a_reload_and_rotation_keeps_the_others(
    site_broker: SiteBroker, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    sb = site_broker
    site = load_model(DEMO_SITE, SiteConfig)
    a = clients(sb.access(A))
    b = clients(sb.access(B))
    assert a.accepted and b.accepted
    old_a, old_b = sb.pki.identity(A).password(), sb.pki.identity(B).password()
    a_cert, a_key = tmp_path / "a.crt", tmp_path / "a.key"  # what a thief took from A's disk
    shutil.copy(cert_of(sb, A)[0], a_cert)
    shutil.copy(cert_of(sb, A)[1], a_key)
    kept = {n: sb.pki.identity(n).password() for n in (GATEWAY, "edge-lockers-altmarkt")}
    pid = sb.broker.pid

    again = provision_test_broker(sb.pki.out, prefix=sb.prefix, admin_topics=None, revoke=[A], rotate=[B])
    assert (again.revoked, again.rotated) == ([A], [B])
    assert not (sb.pki.out / "identities" / A / "password").exists()
    assert {n: again.identity(n).password() for n in kept} == kept  # everyone else keeps their secrets
    sb.broker.reload()

    # The broker drops A's live connection, and refuses it from now on; same broker process, no restart.
    assert a.dropped.wait(5), "the revoked device stayed connected after the reload"
    ca = again.identity(B).ca_file
    retry = Client(BrokerAccess(sb.broker.host, sb.broker.port, A, tmp_password(sb, A, old_a), ca, a_cert, a_key))
    retry.connect()
    assert str(retry.connack) == "Not authorized"
    retry.close()
    # B's old password is refused, its new one works; a third device never noticed.
    stale = Client(BrokerAccess(sb.broker.host, sb.broker.port, B, tmp_password(sb, B, old_b), ca, *cert_of(sb, B)))
    stale.connect()
    assert str(stale.connack) == "Not authorized"
    stale.close()
    assert clients(sb.access(B)).accepted
    assert clients(sb.access("edge-lockers-altmarkt")).accepted
    assert sb.broker.pid == pid and sb.broker.alive()

    # A re-run with one more device in the site adds it and rotates nobody.
    new_device = site.devices[-1].model_copy(update={"id": "edge-new"})
    bigger = site.model_copy(update={"devices": [*site.devices, new_device]})
    before = {n: again.identity(n).password() for n in again.identities}
    third = provision(bigger, sb.pki.out, prefix=sb.prefix, broker_hosts=["127.0.0.1", "localhost"],
                      install_dir=None, broker_dir=None)  # fmt: skip
    assert third.added == ["edge-new"] and third.rotated == [] and A not in third.identities
    assert {n: third.identity(n).password() for n in before} == before
    sb.broker.reload()
    wait_for(lambda: clients(sb.access("edge-new")).accepted, 5, what="the new device accepted after the reload")


def tmp_password(sb: SiteBroker, name: str, password: str) -> Path:
    path = sb.pki.out / f"test-{name}-{uuid.uuid4().hex[:6]}.pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def cert_of(sb: SiteBroker, name: str) -> tuple[Path, Path]:
    ident = sb.pki.identity(name)
    assert ident.cert_file is not None and ident.key_file is not None
    return ident.cert_file, ident.key_file


def test_no_credentials_or_a_certificate_not_from_the_site_ca_cannot_connect(
    site_broker: SiteBroker, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    sb = site_broker
    good = sb.access(A)
    assert clients(good).accepted  # the control: the device's own identity gets in

    plain = Client(BrokerAccess(sb.broker.host, sb.broker.port, A, good.password_file)).connect()  # no TLS at all
    no_cert = Client(BrokerAccess(sb.broker.host, sb.broker.port, A, good.password_file, good.ca_file)).connect()
    no_user = Client(BrokerAccess(sb.broker.host, sb.broker.port, None, None, good.ca_file, *cert_of(sb, A))).connect()
    wrong_pw = Client(
        BrokerAccess(sb.broker.host, sb.broker.port, A, tmp_password(sb, A, "guess"), good.ca_file, *cert_of(sb, A))
    ).connect()
    # A certificate for the same name from another CA (a rogue one, or another site's).
    rogue = pki.CA.create("rogue CA")
    cert, key = rogue.issue(A)
    pki.write_file(tmp_path / "rogue.crt", pki.cert_pem(cert), 0o644)
    pki.write_file(tmp_path / "rogue.key", pki.key_pem(key), 0o600)
    rogue_files = (tmp_path / "rogue.crt", tmp_path / "rogue.key")
    foreign = Client(BrokerAccess(sb.broker.host, sb.broker.port, A, good.password_file, good.ca_file, *rogue_files))
    foreign.connect()
    for name, c in {"plain": plain, "no_cert": no_cert, "no_user": no_user, "wrong_pw": wrong_pw,
                    "foreign": foreign}.items():  # fmt: skip
        assert not c.accepted, f"{name} got in: {c.connack}"
        c.close()
    assert str(no_user.connack) == str(wrong_pw.connack) == "Not authorized"


def _edge_config(tmp_path: Path, sb: SiteBroker, access: BrokerAccess, device: str = A) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "device": {"id": device, "site_id": SITE},
            "mqtt": access.edge_mqtt(topic_prefix=sb.prefix, reconnect_min_s=0.1, reconnect_max_s=0.3),
            "outbox": {"path": str(tmp_path / f"{device}.outbox.sqlite")},
            "status_interval_s": 0.5,
        }
    )


@pytest.mark.allow_logged_exceptions
def test_the_edge_refuses_a_broker_whose_certificate_does_not_match(
    site_broker: SiteBroker, tmp_path: Path, clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    sb = site_broker
    watcher = clients(sb.access(ADMIN))
    watcher.subscribe(f"{sb.prefix}/#")
    # 1. The right CA, the wrong name: a broker of this site whose certificate names broker.elsewhere,
    #    reached as 127.0.0.1 (a site-CA certificate stolen from another host would look like this).
    shutil.copytree(sb.pki.out, tmp_path / "moved")
    moved = provision_test_broker(tmp_path / "moved", prefix=sb.prefix, admin_topics=None,
                                  broker_hosts=["broker.elsewhere"])  # fmt: skip
    elsewhere = start_mosquitto(tmp_path / "elsewhere", pki=moved)
    wrong_name = broker_access(elsewhere, A)
    # 2. The right name, another CA: the device holds a CA that did not sign this broker's certificate.
    other = provision_test_broker(tmp_path / "other-pki", prefix=sb.prefix)
    other_ca = BrokerAccess(**{**vars(sb.access(A)), "ca_file": other.identity(A).ca_file})
    caplog.set_level(logging.ERROR, logger="edge.mqtt")
    for access in (wrong_name, other_ca):
        cfg = _edge_config(tmp_path / uuid.uuid4().hex[:6], sb, access)
        with EdgeAgent(cfg) as agent:
            assert agent.publisher is not None
            publisher = agent.publisher
            wait_for(lambda p=publisher: p.stats["tls_refused"] >= 2, 10, what="two refused attempts")
            assert publisher.stats["connects"] == 0 and not publisher.connected.is_set()
    elsewhere.stop()
    assert watcher.messages == []  # not even a status reached the broker
    refusals = [r.getMessage() for r in caplog.records if "certificate does not verify" in r.getMessage()]
    assert any("IP address mismatch" in m or "hostname" in m.lower() for m in refusals), refusals
    assert any("self-signed certificate in certificate chain" in m or "unable to get local issuer" in m
               for m in refusals), refusals  # fmt: skip

    # The control: the same agent with the right name and CA connects and is heard.
    cfg = _edge_config(tmp_path / "ok", sb, sb.access(A))
    with EdgeAgent(cfg) as agent:
        wait_for(lambda: any(t == sb.topic(A, "status") for t, _ in watcher.messages), 10, what="the agent's status")


@pytest.mark.allow_logged_exceptions
def test_an_edge_publishing_as_another_device_is_refused_and_keeps_its_readings(
    site_broker: SiteBroker, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    """A device configured with A's identity but B's id: the broker refuses every publish; the
    agent backs off and keeps its readings, and says why in the log."""
    sb = site_broker
    watcher = clients(sb.access(ADMIN))
    watcher.subscribe(f"{sb.prefix}/#")
    cfg = _edge_config(tmp_path, sb, sb.access(A), device=B)
    with EdgeAgent(cfg) as agent:
        agent.emit([reading(B)])
        assert agent.publisher is not None and agent.outbox is not None
        publisher, outbox = agent.publisher, agent.outbox
        wait_for(lambda: publisher.stats["refused"] >= 2, 10, what="refused publishes")
        assert outbox.pending >= 1
    assert watcher.messages == []


def _properties(expiry: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry
    return props


def test_a_device_taking_another_devices_client_id_gets_none_of_its_messages(
    site_broker: SiteBroker, clients: Callable[..., Client]
) -> None:
    """Client ids are not bound to usernames in Mosquitto 2.0: a stolen device can take another's id
    (and disconnect it), but the ACL is checked at delivery, so it reads nothing queued for the other."""
    sb = site_broker
    session = f"edge-{SITE}-{B}"
    b = Client(sb.access(B), client_id=session)
    b.mqtt = b.access.client(session, protocol=mqtt.MQTTv5)
    b._wire()
    b.mqtt.connect(sb.broker.host, sb.broker.port, clean_start=False, properties=_properties(600))
    b.mqtt.loop_start()
    wait_for(lambda: b.accepted, 5, what="B connected")
    b.subscribe(sb.topic(B, "stored"))
    b.close()
    gateway = clients(sb.access(GATEWAY))
    assert gateway.publish(sb.topic(B, "stored"), b'{"queued": "for B"}').value == 0
    thief = Client(sb.access(A), client_id=session)
    thief.mqtt = thief.access.client(session, protocol=mqtt.MQTTv5)
    thief._wire()
    thief.mqtt.connect(sb.broker.host, sb.broker.port, clean_start=False, properties=_properties(600))
    thief.mqtt.loop_start()
    try:
        wait_for(lambda: thief.accepted, 5, what="the thief connected")
        assert gateway.publish(sb.topic(B, "stored"), b'{"live": "for B"}').value == 0
        time.sleep(0.5)
        assert thief.messages == []
    finally:
        thief.close()


def test_the_fleet_connects_to_an_external_broker_with_the_identities_provisioned_for_it(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    """``district demo --fleet-only --mqtt HOST:PORT --pki DIR`` (docker-compose's edge-sim): every edge
    agent uses its own device identity, so the broker lets each publish only as itself."""
    need(find_binary("mosquitto") is not None, "mosquitto is not installed")
    pki_out = tmp_path / "pki"
    provisioned = provision_test_broker(pki_out, admin_topics=None)  # prefix "district", as the fleet uses
    broker = start_mosquitto(tmp_path / "broker", pki=provisioned)
    proc: subprocess.Popen[bytes] | None = None
    try:
        watcher = clients(broker_access(broker, ADMIN))
        watcher.subscribe("district/#")
        argv = [sys.executable, "-m", "district.cli", "demo", "--fleet-only", "--mqtt", f"127.0.0.1:{broker.port}",
                "--pki", str(pki_out), "--workdir", str(tmp_path / "demo"), "--footage", str(tmp_path / "none"),
                "--speed", "0"]  # fmt: skip
        with open(tmp_path / "demo.log", "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

        def devices_heard() -> set[str]:
            return {t.split("/")[3] for t, _ in watcher.messages if t.endswith("/parking_bay") or t.endswith("/locker")}

        lots = {f"edge-{lot.id}" for lot in load_model(DEMO_SITE, SiteConfig).parking}
        wait_for(lambda: lots | {"edge-lockers-altmarkt"} <= devices_heard(), 60, what="every edge's readings")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        broker.stop()
    assert proc.returncode == 0, (tmp_path / "demo.log").read_text()[-3000:]
    log = (tmp_path / "demo.log").read_text()
    assert "without TLS" not in log
