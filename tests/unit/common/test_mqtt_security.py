"""Broker credentials and TLS for every component (common/mqtt_security.py), and the secret-file rule:
a file holding a secret is refused when other users may read it (issue 12, "Secrets hygiene")."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.mqtt_security import MqttSecurity, SecretFileError, check_private, read_secret_file
from district.demo import DEMO_SITE
from district.provision import provision
from edge.main import main as edge_main
from gateway.main import main as gateway_main
from server.main import main as server_main

SECRET = "hunter2-very-secret"


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    from contracts.configfile import load_model
    from contracts.site import SiteConfig

    provision(load_model(DEMO_SITE, SiteConfig), tmp_path / "pki", install_dir=None, broker_dir=None)
    return tmp_path / "pki" / "identities"


def _secret_file(path: Path, mode: int, text: str = SECRET) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_secret_file_others_may_read_is_refused_naming_the_fix_not_the_secret(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path / "pw", mode)
    with pytest.raises(SecretFileError) as info:
        read_secret_file(path, "MQTT password file")
    text = str(info.value)
    assert f"chmod 600 {path}" in text and SECRET not in text and "MQTT password file" in text


def test_owner_only_files_are_read(tmp_path: Path) -> None:
    assert read_secret_file(_secret_file(tmp_path / "a", 0o600), "x") == SECRET
    check_private(_secret_file(tmp_path / "b", 0o400), "x")
    with pytest.raises(SecretFileError, match="empty"):
        read_secret_file(_secret_file(tmp_path / "c", 0o600, ""), "x")
    with pytest.raises(SecretFileError, match="cannot read"):
        read_secret_file(tmp_path / "missing", "x")


def test_security_reads_the_password_file_and_builds_a_verifying_context(pki_dir: Path) -> None:
    ident = pki_dir / "district-gateway"
    sec = MqttSecurity.build(
        username="district-gateway",
        password_file=ident / "password",
        ca_file=ident / "ca.crt",
        cert_file=ident / "client.crt",
        key_file=ident / "client.key",
    )
    password = (ident / "password").read_text().strip()
    assert sec.password == password and password not in repr(sec) and password not in sec.describe()
    assert sec.describe() == f"TLS (CA {ident / 'ca.crt'}, client certificate), user district-gateway"
    ctx = sec.ssl_context()
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2

    calls: list[tuple[str, Any]] = []

    class FakeClient:
        def tls_set_context(self, context: ssl.SSLContext | None = None) -> None:
            calls.append(("tls", context))

        def username_pw_set(self, username: str | None, password: str | None = None) -> None:
            calls.append(("user", (username, password)))

    sec.apply(FakeClient())
    assert [c[0] for c in calls] == ["tls", "user"] and calls[1][1] == ("district-gateway", password)
    assert MqttSecurity().ssl_context() is None and MqttSecurity().describe() == "no TLS, anonymous"


def test_security_refuses_a_readable_key_and_half_pairs(pki_dir: Path) -> None:
    ident = pki_dir / "district-server"
    (ident / "client.key").chmod(0o644)
    with pytest.raises(SecretFileError, match="MQTT client key"):
        MqttSecurity.build(ca_file=ident / "ca.crt", cert_file=ident / "client.crt", key_file=ident / "client.key")
    with pytest.raises(ValueError, match="needs its key"):
        MqttSecurity.build(cert_file=ident / "client.crt")
    with pytest.raises(ValueError, match="does not exist"):
        MqttSecurity.build(ca_file=ident / "nope.crt")


def test_the_components_refuse_to_start_on_readable_secrets(
    tmp_path: Path, pki_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The edge: a password written into its configuration file makes the file a secret.
    conf = tmp_path / "edge.yaml"
    device = {"device": {"id": "edge-x", "site_id": "dresden"}, "outbox": {"path": str(tmp_path / "o.sqlite")}}
    conf.write_text(yaml.safe_dump({**device, "mqtt": {"username": "edge-x", "password": SECRET}}))
    conf.chmod(0o644)
    assert edge_main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "it holds mqtt.password" in err and f"chmod 600 {conf}" in err and SECRET not in err
    # ... and a password file it names.
    pw = _secret_file(tmp_path / "edge.pw", 0o640)
    conf.write_text(yaml.safe_dump({**device, "mqtt": {"username": "edge-x", "password_file": str(pw)}}))
    assert edge_main(["--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert f"MQTT password file {pw}" in err and SECRET not in err

    # The gateway and the server: a password file from the environment.
    for var, run in (("DISTRICT_GATEWAY_", lambda: gateway_main([])), ("DISTRICT_SERVER_", lambda: server_main([]))):
        monkeypatch.setenv(f"{var}MQTT_USERNAME", "x")
        monkeypatch.setenv(f"{var}MQTT_PASSWORD_FILE", str(pw))
        monkeypatch.setenv("DISTRICT_SERVER_SITE_CONFIG", str(DEMO_SITE))
        assert run() == 2
        err = capsys.readouterr().err
        assert f"chmod 600 {pw}" in err and SECRET not in err
