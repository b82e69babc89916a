"""``district provision``: mosquitto_passwd-compatible hashes, the site CA, idempotent re-runs,
rotation and revocation, least-privilege ACL lines, file modes (issue 12)."""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district import pki
from district.check_config import main as check_config
from district.demo import DEMO_SITE
from district.passwd import hash_password, parse_passwd, passwd_lines, verify_password
from district.provision import ADMIN, GATEWAY, SERVER, ProvisionError, acl_text, main, provision
from district.services import find_binary
from edge.config import DeviceConfig
from tests.conftest import need

SITE = load_model(DEMO_SITE, SiteConfig)
DEVICES = [d.id for d in SITE.devices]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the password hash ---------------------------------------------------------------------------


def test_hash_format_and_verification() -> None:
    encoded = hash_password("s3cret", salt=b"0123456789ab")
    assert encoded.startswith("$7$101$MDEyMzQ1Njc4OWFi$")  # base64 of the 12-byte salt
    assert len(encoded.split("$")[4]) == 88  # 64 bytes, base64 with padding
    assert verify_password(encoded, "s3cret") and not verify_password(encoded, "s3cret ")
    assert hash_password("s3cret") != hash_password("s3cret")  # a fresh salt each time
    for bad in ("", "$6$abc$def", "$7$x$y$z"):
        with pytest.raises(ValueError):
            verify_password(bad, "x") if bad else hash_password(bad)


def test_hashes_agree_with_the_real_mosquitto_passwd(tmp_path: Path) -> None:
    binary = find_binary("mosquitto_passwd")
    need(binary is not None, "mosquitto_passwd is not installed (Debian package mosquitto)")
    assert binary is not None
    # Its hash verifies with our code ...
    theirs = tmp_path / "theirs"
    subprocess.run([binary, "-c", "-b", str(theirs), "alice", "correct horse"], check=True)
    encoded = parse_passwd(theirs.read_text())["alice"]
    assert verify_password(encoded, "correct horse") and not verify_password(encoded, "wrong horse")
    # ... and a file of ours survives mosquitto_passwd's edits: adding and deleting a user leaves our line as is,
    # so an operator may keep using the tool on it.
    ours = tmp_path / "ours"
    line = passwd_lines({"bob": hash_password("battery staple")})
    ours.write_text(line)
    subprocess.run([binary, "-b", str(ours), "carol", "x"], check=True)
    assert parse_passwd(ours.read_text())["bob"] == parse_passwd(line)["bob"]
    subprocess.run([binary, "-D", str(ours), "carol"], check=True)
    assert ours.read_text() == line
    # The broker reading our file is in tests/integration/test_security.py (every identity connects with it).


# -- provisioning --------------------------------------------------------------------------------


def test_first_run_issues_every_identity_with_private_files(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    result = provision(SITE, out, broker_hosts=["broker.example", "10.0.0.5"])
    assert sorted(result.added) == sorted([*DEVICES, GATEWAY, SERVER, ADMIN])
    assert _mode(out) == 0o700 and _mode(out / "ca") == 0o700 and _mode(out / "ca" / "ca.key") == 0o600
    for secret in (out / "provision.json", result.broker.key_file, result.broker.passwd_file):
        assert _mode(secret) == 0o600, secret
    ca = pki.load_cert(out / "ca" / "ca.crt")
    server = pki.load_cert(result.broker.cert_file)
    assert pki.signed_by(server, ca) and sorted(pki.server_names(server)) == ["10.0.0.5", "broker.example"]
    hashes = parse_passwd(result.broker.passwd_file.read_text())
    assert sorted(hashes) == sorted(result.identities)
    for name, ident in result.identities.items():
        assert _mode(ident.password_file) == 0o600 and _mode(ident.dir / "client.key") == 0o600
        assert verify_password(hashes[name], ident.password())
        cert = pki.load_cert(ident.dir / "client.crt")
        assert pki.signed_by(cert, ca) and cert.subject.rfc4514_string() == f"CN={name}"
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    manifest = (out / "provision.json").read_text()
    assert all(ident.password() not in manifest for ident in result.identities.values())


def test_the_device_config_is_ready_to_copy_and_checks_against_the_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = provision(SITE, tmp_path / "pki", broker_hosts=["broker.example"])
    edge = result.identity("edge-dresdenaltmarkt").dir / "edge.yaml"
    config = load_model(edge, DeviceConfig)
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.username) == ("broker.example", 8883, "edge-dresdenaltmarkt")
    assert mqtt.password is None and mqtt.password_file == Path("/etc/district/mqtt/edge-dresdenaltmarkt/password")
    assert mqtt.tls is not None and mqtt.tls.ca_file == Path("/etc/district/mqtt/edge-dresdenaltmarkt/ca.crt")
    assert "It may report on: lot dresdenaltmarkt." in edge.read_text()
    assert check_config([str(DEMO_SITE), str(edge)]) == 0
    env = (result.identity(GATEWAY).dir / "mqtt.env").read_text()
    assert "DISTRICT_GATEWAY_MQTT_USERNAME=district-gateway\n" in env
    assert "DISTRICT_GATEWAY_MQTT_PASSWORD_FILE=/etc/district/mqtt/district-gateway/password\n" in env
    assert result.identity(GATEWAY).password() not in env


def test_a_rerun_adds_new_devices_and_rotates_nobody(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    first = provision(SITE, out)
    files = {
        p.relative_to(out): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.name in ("password", "client.key", "client.crt", "ca.key", "server.key")
    }
    bigger = SITE.model_copy(update={"devices": [*SITE.devices, SITE.devices[0].model_copy(update={"id": "edge-new"})]})
    again = provision(bigger, out)
    assert again.added == ["edge-new"] and again.rotated == [] and sorted(again.kept) == sorted(first.added)
    for rel, content in files.items():
        assert (out / rel).read_bytes() == content, f"{rel} changed on a re-run"
    assert "edge-new" in parse_passwd(again.broker.passwd_file.read_text())


def test_rotate_and_revoke(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    first = provision(SITE, out)
    a, b, c = DEVICES[:3]
    old = {n: first.identity(n).password() for n in (a, b, c)}
    old_cert = (first.identity(a).dir / "client.crt").read_bytes()
    result = provision(SITE, out, rotate=[a], revoke=[b])
    assert (result.rotated, result.revoked) == ([a], [b])
    hashes = parse_passwd(result.broker.passwd_file.read_text())
    assert b not in hashes and b not in result.identities
    assert not (out / "identities" / b / "password").exists() and not (out / "identities" / b / "client.key").exists()
    assert result.identity(a).password() != old[a] and verify_password(hashes[a], result.identity(a).password())
    assert (result.identity(a).dir / "client.crt").read_bytes() != old_cert
    assert result.identity(c).password() == old[c]
    # A revoked device stays revoked on a plain re-run; --rotate re-issues it.
    again = provision(SITE, out)
    assert b not in parse_passwd(again.broker.passwd_file.read_text())
    assert any(f"{b} is revoked" in w for w in again.warnings)
    back = provision(SITE, out, rotate=[b])
    assert back.rotated == [b] and b in parse_passwd(back.broker.passwd_file.read_text())
    entry = json.loads((out / "provision.json").read_text())["identities"][b]
    assert entry["revoked_at"] is None and entry["rotated_at"] is not None


def test_bad_requests_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="no such identity: nobody"):
        provision(SITE, tmp_path / "a", rotate=["nobody"])
    reserved = SITE.model_copy(update={"devices": [SITE.devices[0].model_copy(update={"id": GATEWAY})]})
    with pytest.raises(ProvisionError, match="reserved"):
        provision(reserved, tmp_path / "b")
    provision(SITE, tmp_path / "c")
    other = SITE.model_copy(update={"site": SITE.site.model_copy(update={"id": "leipzig"})})
    with pytest.raises(ProvisionError, match="holds site 'dresden'"):
        provision(other, tmp_path / "c")


def test_a_changed_broker_name_reissues_only_the_broker_certificate(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    first = provision(SITE, out, broker_hosts=["old.example"])
    password = first.identity(ADMIN).password()
    again = provision(SITE, out, broker_hosts=["new.example"])
    assert pki.server_names(pki.load_cert(again.broker.cert_file)) == ["new.example"]
    assert again.identity(ADMIN).password() == password and again.rotated == []
    # Close to expiry it is re-issued too.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=pki.LEAF_DAYS - 10)
    before = again.broker.cert_file.read_bytes()
    provision(SITE, out, broker_hosts=["new.example"], now=later)
    assert again.broker.cert_file.read_bytes() != before


def test_the_acl_is_least_privilege() -> None:
    acl = acl_text("district", "dresden")
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    patterns = [line for line in lines if line.startswith("pattern")]
    # Devices: their own readings and status, their own confirmations; nothing with a wildcard.
    assert patterns == [
        "pattern write district/v1/dresden/%u/parking_bay",
        "pattern write district/v1/dresden/%u/locker",
        "pattern write district/v1/dresden/%u/footfall",
        "pattern write district/v1/dresden/%u/status",
        "pattern read district/v1/dresden/%u/stored",
    ]
    sections: dict[str, list[str]] = {}
    user = ""
    for line in lines:
        if line.startswith("user "):
            user = line.split()[1]
        elif user:
            sections.setdefault(user, []).append(line)
    assert set(sections) == {GATEWAY, SERVER, ADMIN}
    assert sections[SERVER] == [
        *(f"topic read district/v1/dresden/+/{k}" for k in ("parking_bay", "locker", "footfall", "status")),
        "topic write district/v1/dresden/alerts/#",
    ]
    gateway_writes = [t for t in sections[GATEWAY] if t.startswith("topic write")]
    assert gateway_writes[0] == "topic write district/v1/dresden/+/stored"
    assert all(t.endswith("/status") and "district-gateway-w" in t for t in gateway_writes[1:])
    # Only the admin writes outside its own subtree (and so may retain there).
    assert sections[ADMIN] == ["topic readwrite district/#"]


def test_passwords_only_without_client_certificates(tmp_path: Path) -> None:
    result = provision(SITE, tmp_path / "pki", client_certs=False)
    ident = result.identity("edge-dresdenaltmarkt")
    assert ident.cert_file is None and not (ident.dir / "client.crt").exists()
    assert "require_certificate false" in result.broker.listener_conf.read_text()
    config = load_model(ident.dir / "edge.yaml", DeviceConfig)
    assert config.mqtt.tls is not None and config.mqtt.tls.cert_file is None  # still TLS, still verifying


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pki"
    assert main(["--site", str(DEMO_SITE), "--out", str(out), "--broker-host", "broker.example"]) == 0
    printed = capsys.readouterr().out
    assert "added:" in printed and "reload the broker" in printed
    secrets = [p.read_text().strip() for p in out.glob("identities/*/password")]
    assert secrets and not any(s in printed for s in secrets)  # the command never prints a password
    assert main(["--site", str(DEMO_SITE), "--out", str(out), "--rotate", "ghost"]) == 2
    assert "no such identity: ghost" in capsys.readouterr().err
    listener = (out / "broker" / "listener.conf").read_text()
    assert "allow_anonymous false" in listener and "require_certificate true" in listener
    assert "listener 8883" in listener and "1883" not in listener
    conf = yaml.safe_load((out / "identities" / "edge-lockers-altmarkt" / "edge.yaml").read_text())
    assert conf["mqtt"]["tls"]["key_file"].endswith("edge-lockers-altmarkt/client.key")


def test_a_device_whose_id_is_encoded_in_topics_gets_its_rights_by_user() -> None:
    """%u would put 'sensor.1' into the topic; the device publishes on 'sensor~2E1' (contracts.topics)."""
    acl = acl_text("district", "dresden", devices=["plain-1", "sensor.1"])
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    start = lines.index("user sensor.1")
    assert lines[start + 1 : start + 6] == [
        "topic write district/v1/dresden/sensor~2E1/parking_bay",
        "topic write district/v1/dresden/sensor~2E1/locker",
        "topic write district/v1/dresden/sensor~2E1/footfall",
        "topic write district/v1/dresden/sensor~2E1/status",
        "topic read district/v1/dresden/sensor~2E1/stored",
    ]
    assert "user plain-1" not in lines  # its pattern rules fit
