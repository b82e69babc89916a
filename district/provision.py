"""``district provision``: every device of a site gets its own broker identity.

    district provision --site SITE.yaml --out DIR [--broker-host NAME ...]
                       [--rotate ID ...] [--revoke ID ...] [--reload-pid PID | --reload-pidfile FILE]

From the site configuration's ``devices:`` (plus the gateway, the server and
an admin), into ``DIR``:

* ``ca/``: the site CA (``ca.crt``; ``ca.key`` mode 0600: keep it offline),
  created on the first run with ``cryptography`` (:mod:`district.pki`);
* ``broker/``: what Mosquitto needs: ``ca.crt``, ``server.crt`` and
  ``server.key`` (its TLS identity, for ``--broker-host`` names), ``passwd``
  (``mosquitto_passwd`` format, hashes only, :mod:`district.passwd`), ``acl``
  (least privilege, :func:`acl_text`) and ``listener.conf`` (the TLS listener
  lines, paths as installed under ``--broker-dir``);
* ``identities/NAME/``: per identity a random ``password`` (mode 0600), the
  site ``ca.crt``, a client certificate and key (``client.crt``,
  ``client.key`` 0600; unless ``--no-client-certs``), and for a device a
  ready-to-copy ``edge.yaml``, for the gateway and server an ``mqtt.env``
  (systemd ``EnvironmentFile``). Paths inside them are where the directory
  is installed: ``--install-dir/NAME/`` (default ``/etc/district/mqtt``);
* ``provision.json`` (0600): who was issued what and when, and each
  password's hash (never a password).

Running it again adds identities for new devices and keeps every existing
password and certificate (it also re-issues the broker certificate when the
``--broker-host`` names change). ``--rotate ID`` issues that identity a new
password and certificate; ``--revoke ID`` removes it from the password file
and deletes its secrets (a revoked device stays revoked when the command runs
again; ``--rotate`` re-issues it). The broker picks up ``passwd`` and ``acl``
on a reload (SIGHUP; ``--reload-pid``, ``systemctl reload mosquitto``), not a
restart, and drops a connected client whose password is gone.

Exit status: 0 done, 2 bad arguments or site file, 1 anything that could not
be written (the message says what).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from contracts import topics
from contracts.configfile import ConfigError, load_model
from contracts.messages import MESSAGE_KINDS
from contracts.site import SiteConfig
from district import pki
from district.passwd import check_username, hash_password, passwd_lines

log = logging.getLogger(__name__)

GATEWAY = "district-gateway"
SERVER = "district-server"
ADMIN = "district-admin"
#: Names a device may not have: the service identities, and ``alerts`` (the server's alert subtree).
RESERVED = frozenset({GATEWAY, SERVER, ADMIN, topics.ALERTS})
#: The gateway's worker processes publish their status as ``{client id}-w{i}`` (gateway.workers).
GATEWAY_WORKERS = 32
DEFAULT_PORT = 8883
DEFAULT_INSTALL_DIR = Path("/etc/district/mqtt")
#: Where ``deploy/mosquitto.conf`` expects the broker's files (the eclipse-mosquitto image's layout).
DEFAULT_BROKER_DIR = Path("/mosquitto/district")
MANIFEST = "provision.json"
#: A broker certificate this close to expiry is re-issued by the next run.
RENEW_DAYS = 30

Role = Literal["device", "gateway", "server", "admin"]


class ProvisionError(ValueError):
    """A request that cannot be done (unknown identity, a device named like a service, a broken CA)."""


@dataclass(frozen=True)
class Identity:
    """One identity's files under ``identities/NAME/`` of the output directory."""

    name: str
    role: Role
    dir: Path
    client_certs: bool

    @property
    def password_file(self) -> Path:
        return self.dir / "password"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def cert_file(self) -> Path | None:
        return self.dir / "client.crt" if self.client_certs else None

    @property
    def key_file(self) -> Path | None:
        return self.dir / "client.key" if self.client_certs else None

    def password(self) -> str:
        """The identity's password (read from its 0600 file)."""
        return self.password_file.read_text(encoding="utf-8").strip()

    @classmethod
    def at(cls, folder: Path) -> Identity:
        """The identity installed in ``folder`` (``identities/NAME/`` as provisioned, or copied to its host).

        Raises :class:`ProvisionError` if it holds no password file (never issued, or revoked).
        """
        name = folder.name
        if not (folder / "password").is_file():
            raise ProvisionError(f"{folder} holds no identity (no password file: never issued, or revoked)")
        role: Role = {GATEWAY: "gateway", SERVER: "server", ADMIN: "admin"}.get(name, "device")  # type: ignore[assignment]
        return cls(name, role, folder, (folder / "client.crt").is_file())


@dataclass(frozen=True)
class BrokerFiles:
    """The broker's files under ``broker/`` of the output directory."""

    dir: Path

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def cert_file(self) -> Path:
        return self.dir / "server.crt"

    @property
    def key_file(self) -> Path:
        return self.dir / "server.key"

    @property
    def passwd_file(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.dir / "acl"

    @property
    def listener_conf(self) -> Path:
        return self.dir / "listener.conf"


@dataclass
class Provisioned:
    """What a run did, and where everything is."""

    out: Path
    site_id: str
    prefix: str
    broker_hosts: list[str]
    broker_port: int
    client_certs: bool
    broker: BrokerFiles
    identities: dict[str, Identity]
    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def identity(self, name: str) -> Identity:
        """The identity called ``name``: issued by this run, or by a later run into the same directory
        (its files are read from disk). Raises :class:`KeyError` for one not issued, or revoked."""
        found = self.identities.get(name)
        if found is not None:
            return found
        try:
            return Identity.at(self.out / "identities" / name)
        except ProvisionError:
            raise KeyError(name) from None


def acl_text(prefix: str, site_id: str, admin_topics: Sequence[str] | None = None, devices: Sequence[str] = ()) -> str:
    """The broker's ACL for a site (Mosquitto ``acl_file`` syntax), least privilege for every role.

    * every identity, by ``pattern`` (``%u`` = its username = a device's id):
      write its own readings and status, ``{prefix}/v1/{site}/%u/{kind}``,
      read its own confirmations ``.../%u/stored``; nothing else;
    * the gateway: read everything under the prefix (it validates and
      dead-letters what is malformed), write every device's ``stored`` and its
      own and its workers' status;
    * the server: read the four reading kinds, write its alerts (retained) under ``.../alerts/#``;
    * the admin: read and write ``admin_topics`` (default: everything under the prefix).

    * ``devices`` whose id is written differently in a topic level (a ``.``
      becomes ``~2E``, :func:`contracts.topics.encode_level`): ``%u`` would put
      the raw id into the topic, so each gets the same rights as a ``user``
      block with its encoded id.

    Display bridges have no broker identity: they read sign states from the
    API with a ``display`` key (docs/access-control.md).
    """
    topics.check_prefix(prefix)
    base = topics.everything(prefix)[:-2] + f"/{topics.TOPIC_VERSION}/{topics.encode_level(site_id)}"
    encoded = sorted(d for d in devices if topics.encode_level(d) != d)
    lines = [
        f"# Mosquitto ACL for site {site_id!r} under {prefix}/ (written by district provision; docs/security.md).",
        "# Pattern rules apply to every identity; %u is its username, which for a device is its device id:",
        "# a device publishes only under its own id, so a reading's topic names the identity that sent it.",
        *(f"pattern write {base}/%u/{kind}" for kind in MESSAGE_KINDS),
        f"pattern read {base}/%u/{topics.STORED}",
        "",
        "# The gateway reads everything under the prefix (and dead-letters what is malformed), confirms to",
        "# every device, and publishes its own status (also as worker process w1, w2, ...).",
        *(line for device in encoded for line in _device_rules(base, device)),
        f"user {GATEWAY}",
        f"topic read {topics.everything(prefix)}",
        f"topic write {base}/+/{topics.STORED}",
        *(f"topic write {base}/{GATEWAY}-w{i}/status" for i in range(1, GATEWAY_WORKERS + 1)),
        "",
        "# The server reads the readings it keeps live state of and publishes its alerts (retained).",
        f"user {SERVER}",
        *(f"topic read {base}/+/{kind}" for kind in MESSAGE_KINDS),
        f"topic write {base}/{topics.ALERTS}/#",
        "",
        "# The admin: the only identity that may write (and so retain) outside its own subtree.",
        f"user {ADMIN}",
        *(f"topic readwrite {t}" for t in (admin_topics or [topics.everything(prefix)])),
        "",
    ]
    return "\n".join(lines)


def _device_rules(base: str, device: str) -> list[str]:
    """A device whose id is encoded in topics: the ``pattern`` rights, spelt out for its ``user``."""
    level = topics.encode_level(device)
    return [
        f"# {device}: its id is {level} in topics (contracts.topics.encode_level).",
        f"user {device}",
        *(f"topic write {base}/{level}/{kind}" for kind in MESSAGE_KINDS),
        f"topic read {base}/{level}/{topics.STORED}",
        "",
    ]


def listener_conf(broker_dir: Path, port: int = DEFAULT_PORT, address: str = "", client_certs: bool = True) -> str:
    """Mosquitto lines for a TLS listener with the provisioned files installed in ``broker_dir``.

    Global settings (``per_listener_settings false``): anonymous clients are
    refused, every client needs a password from ``passwd`` and is bound by
    ``acl``; with ``client_certs`` also a certificate signed by the site CA.
    """
    return "\n".join(
        [
            "# TLS listener for the district broker (district provision; docs/security.md).",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {broker_dir / 'passwd'}",
            f"acl_file {broker_dir / 'acl'}",
            f"listener {port}{' ' + address if address else ''}",
            f"cafile {broker_dir / 'ca.crt'}",
            f"certfile {broker_dir / 'server.crt'}",
            f"keyfile {broker_dir / 'server.key'}",
            f"require_certificate {'true' if client_certs else 'false'}",
            "tls_version tlsv1.2",
            "",
        ]
    )


def mqtt_section(identity: Identity, host: str, port: int, prefix: str, install: Path) -> dict[str, Any]:
    """An edge configuration's ``mqtt:`` section for a device identity installed at ``install``."""
    tls: dict[str, str] = {"ca_file": str(install / "ca.crt")}
    if identity.client_certs:
        tls |= {"cert_file": str(install / "client.crt"), "key_file": str(install / "client.key")}
    return {
        "host": host,
        "port": port,
        "username": identity.name,
        "password_file": str(install / "password"),
        "topic_prefix": prefix,
        "tls": tls,
    }


def service_env(identity: Identity, host: str, port: int, prefix: str, install: Path) -> dict[str, str]:
    """``DISTRICT_GATEWAY_*`` / ``DISTRICT_SERVER_*`` variables for a service identity installed at ``install``."""
    env_prefix = "DISTRICT_GATEWAY_" if identity.role == "gateway" else "DISTRICT_SERVER_"
    env = {
        "MQTT_HOST": host,
        "MQTT_PORT": str(port),
        "MQTT_USERNAME": identity.name,
        "MQTT_PASSWORD_FILE": str(install / "password"),
        "MQTT_CA_FILE": str(install / "ca.crt"),
        "TOPIC_PREFIX": prefix,
    }
    if identity.client_certs:
        env |= {"MQTT_CERT_FILE": str(install / "client.crt"), "MQTT_KEY_FILE": str(install / "client.key")}
    return {env_prefix + k: v for k, v in env.items()}


def _edge_yaml(site: SiteConfig, identity: Identity, section: dict[str, Any], install: Path) -> str:
    import yaml

    device = site.device(identity.name)
    owns = []
    if device is not None:
        owns += [f"lot {lot}" for lot in device.lots]
        owns += [f"lot {ref.lot} level {ref.level}" for ref in device.levels]
        owns += [f"locker bank {bank}" for bank in device.lockers]
    owns += [f"camera {cam.id}" for cam in site.cameras if cam.device == identity.name]
    head = [
        f"# Edge configuration of device {identity.name} of site {site.site.id} (written by district provision).",
        f"# Install this directory as {install}/ on the device; password and client.key stay mode 0600.",
        f"# It may report on: {', '.join(owns) or 'nothing yet (the site lists nothing for it)'}.",
        "# Add its sensors or cameras (deploy/edge.example.yaml), then check it against the site:",
        f"#   district check-config SITE.yaml {install}/edge.yaml",
    ]
    body = {
        "device": {"id": identity.name, "site_id": site.site.id},
        "mqtt": section,
        "outbox": {"path": "/var/lib/district/outbox.sqlite"},
        "sensors": [],
    }
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False)


def _now_text(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat(timespec="seconds")


def _chown(paths: Iterable[Path], owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    for path in paths:
        if path.exists():
            os.chown(path, *owner)


def provision(
    site: SiteConfig,
    out: Path,
    *,
    prefix: str = topics.DEFAULT_PREFIX,
    broker_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    broker_port: int = DEFAULT_PORT,
    client_certs: bool = True,
    install_dir: Path | None = DEFAULT_INSTALL_DIR,
    broker_dir: Path | None = DEFAULT_BROKER_DIR,
    broker_out: Path | None = None,
    rotate: Iterable[str] = (),
    revoke: Iterable[str] = (),
    admin_topics: Sequence[str] | None = None,
    extra_devices: Iterable[str] = (),
    owner: tuple[int, int] | None = None,
    broker_owner: tuple[int, int] | None = None,
    now: dt.datetime | None = None,
) -> Provisioned:
    """Issue, keep, rotate and revoke the site's broker identities in ``out`` (see the module doc).

    ``install_dir`` / ``broker_dir``: where the identity directories and the
    broker's files will be on their hosts (the paths written into configs);
    None: where they are in ``out``. ``broker_out``: write the broker's files
    there instead of ``out/broker`` (a directory the broker may see without
    seeing the CA key or the identities). ``admin_topics``: what the admin may read
    and write (default ``{prefix}/#``). ``extra_devices``: device identities to
    issue beyond the site's ``devices:`` (the demo's, for a site that lists none). ``owner``/``broker_owner``: chown the
    identity / broker files (running as root for a container's user).
    Raises :class:`ProvisionError` for an unknown ``rotate``/``revoke`` name or
    a device named like a service identity, :class:`ValueError` for a broken CA.
    """
    now = now or dt.datetime.now(dt.UTC)
    topics.check_prefix(prefix)
    if not broker_hosts:
        raise ProvisionError("at least one --broker-host is needed (the name clients connect to)")
    out = out.resolve()
    rotate, revoke = set(rotate), set(revoke)
    if rotate & revoke:
        raise ProvisionError(f"both rotated and revoked: {', '.join(sorted(rotate & revoke))}")
    roles: dict[str, Role] = {GATEWAY: "gateway", SERVER: "server", ADMIN: "admin"}
    for device_id in [*(d.id for d in site.devices), *extra_devices]:
        if device_id in RESERVED:
            raise ProvisionError(f"device id {device_id!r} is reserved (it names a service identity or topic)")
        roles[check_username(device_id)] = "device"

    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    manifest_path = out / MANIFEST
    manifest: dict[str, Any] = {"version": 1, "identities": {}}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("site") not in (None, site.site.id):
            raise ProvisionError(f"{out} holds site {manifest['site']!r}, not {site.site.id!r}: use another --out")
    entries: dict[str, dict[str, Any]] = manifest["identities"]
    unknown = sorted((rotate | revoke) - set(entries) - set(roles))
    if unknown:
        raise ProvisionError(
            f"no such identity: {', '.join(unknown)} (devices of the site, {GATEWAY}, {SERVER}, {ADMIN})"
        )
    result = Provisioned(
        out=out,
        site_id=site.site.id,
        prefix=prefix,
        broker_hosts=list(broker_hosts),
        broker_port=broker_port,
        client_certs=client_certs,
        broker=BrokerFiles(broker_out.resolve() if broker_out is not None else out / "broker"),
        identities={},
    )

    ca_dir = out / "ca"
    ca_dir.mkdir(exist_ok=True)
    ca_dir.chmod(0o700)
    ca_cert, ca_key = ca_dir / "ca.crt", ca_dir / "ca.key"
    if ca_cert.exists() or ca_key.exists():
        ca = pki.CA.load(ca_cert, ca_key)
    else:
        ca = pki.CA.create(f"district site CA {site.site.id}", now)
        pki.write_file(ca_key, pki.key_pem(ca.key), 0o600)
        pki.write_file(ca_cert, pki.cert_pem(ca.cert), 0o644)

    broker = result.broker
    broker.dir.mkdir(parents=True, exist_ok=True)
    pki.write_file(broker.ca_file, pki.cert_pem(ca.cert), 0o644)
    reissue = not broker.cert_file.exists() or not broker.key_file.exists()
    if not reissue:
        current = pki.load_cert(broker.cert_file)
        reissue = (
            sorted(pki.server_names(current)) != sorted(broker_hosts)
            or pki.expires_within(current, RENEW_DAYS, now)
            or not pki.signed_by(current, ca.cert)
        )
    if reissue:
        cert, key = ca.issue(broker_hosts[0], server_names=list(broker_hosts), now=now)
        pki.write_file(broker.key_file, pki.key_pem(key), 0o600)
        pki.write_file(broker.cert_file, pki.cert_pem(cert), 0o644)

    for name in sorted(set(roles) | set(entries)):
        entry = entries.get(name)
        existed = entry is not None
        role: Role = roles.get(name) or (entry["role"] if entry else "device")
        ident = Identity(name, role, out / "identities" / name, client_certs)
        if name in revoke:
            if entry is not None and entry.get("revoked_at") is None:
                entry.update(revoked_at=_now_text(now), hash=None)
                result.revoked.append(name)
            for secret in (ident.password_file, ident.dir / "client.key"):
                secret.unlink(missing_ok=True)
            continue
        if entry is not None and entry.get("revoked_at") is not None and name not in rotate:
            result.warnings.append(f"{name} is revoked; --rotate {name} issues it a new identity")
            continue
        if name not in roles:
            result.warnings.append(f"{name} is no longer in the site configuration; --revoke {name} removes it")
        fresh = entry is None or name in rotate
        if not fresh and not ident.password_file.exists():
            result.warnings.append(f"{name}: {ident.password_file} is missing; --rotate {name} issues a new password")
        ident.dir.mkdir(parents=True, exist_ok=True)
        pki.write_file(ident.ca_file, pki.cert_pem(ca.cert), 0o644)
        if fresh:
            password = secrets.token_urlsafe(32)
            pki.write_file(ident.password_file, (password + "\n").encode(), 0o600)
            entry = entries[name] = {
                "role": ident.role,
                "hash": hash_password(password),
                "issued_at": (entry or {}).get("issued_at") or _now_text(now),
                "rotated_at": _now_text(now) if entry is not None else None,
                "revoked_at": None,
                "cert_serial": None,
            }
            (result.rotated if existed else result.added).append(name)
        else:
            result.kept.append(name)
        assert entry is not None
        if client_certs and (
            fresh or not (ident.dir / "client.crt").exists() or not (ident.dir / "client.key").exists()
        ):
            cert, key = ca.issue(name, now=now)
            pki.write_file(ident.dir / "client.key", pki.key_pem(key), 0o600)
            pki.write_file(ident.dir / "client.crt", pki.cert_pem(cert), 0o644)
            entry["cert_serial"] = format(cert.serial_number, "x")
        install = ident.dir if install_dir is None else install_dir / name
        host = broker_hosts[0]
        if ident.role == "device":
            section = mqtt_section(ident, host, broker_port, prefix, install)
            pki.write_file(ident.dir / "edge.yaml", _edge_yaml(site, ident, section, install).encode(), 0o644)
        elif ident.role in ("gateway", "server"):
            env = service_env(ident, host, broker_port, prefix, install)
            text = "".join(f"{k}={v}\n" for k, v in env.items())
            pki.write_file(ident.dir / "mqtt.env", text.encode(), 0o644)
        result.identities[name] = ident
        _chown([ident.dir, *ident.dir.iterdir()], owner)

    hashes = {name: e["hash"] for name, e in entries.items() if e.get("hash") and e.get("revoked_at") is None}
    pki.write_file(broker.passwd_file, passwd_lines(hashes).encode(), 0o600)
    devices = [name for name, e in entries.items() if e.get("role") == "device" and e.get("revoked_at") is None]
    pki.write_file(broker.acl_file, acl_text(prefix, site.site.id, admin_topics, devices).encode(), 0o644)
    installed_broker = broker.dir if broker_dir is None else broker_dir
    conf = listener_conf(installed_broker, broker_port, client_certs=client_certs)
    pki.write_file(broker.listener_conf, conf.encode(), 0o644)
    _chown([broker.dir, *broker.dir.iterdir()], broker_owner)

    manifest.update(
        site=site.site.id,
        prefix=prefix,
        broker_hosts=list(broker_hosts),
        broker_port=broker_port,
        client_certs=client_certs,
        broker_out=str(broker.dir),
        updated_at=_now_text(now),
    )
    pki.write_file(manifest_path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), 0o600)
    return result


def load_provisioned(out: Path) -> Provisioned:
    """What an earlier run wrote to ``out`` (its ``provision.json``): every identity not revoked.

    Raises :class:`ProvisionError` if ``out`` holds no provisioning.
    """
    out = out.resolve()
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"{out} holds no provisioning ({MANIFEST}: {exc})") from None
    certs = bool(manifest.get("client_certs", True))
    identities = {
        name: Identity(name, entry["role"], out / "identities" / name, certs)
        for name, entry in manifest["identities"].items()
        if entry.get("revoked_at") is None
    }
    return Provisioned(
        out=out,
        site_id=manifest["site"],
        prefix=manifest["prefix"],
        broker_hosts=list(manifest["broker_hosts"]),
        broker_port=int(manifest["broker_port"]),
        client_certs=certs,
        broker=BrokerFiles(Path(manifest.get("broker_out") or out / "broker")),
        identities=identities,
    )


def reload_broker(pid: int) -> None:
    """Ask Mosquitto (process ``pid``) to re-read its password and ACL files: SIGHUP, not a restart."""
    os.kill(pid, signal.SIGHUP)


def _owner(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not UID[:GID]") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="district provision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--site", type=Path, required=True, help="site configuration (its devices: are provisioned)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (kept between runs; keep it safe)")
    parser.add_argument("--prefix", default=topics.DEFAULT_PREFIX, help="topic prefix (default %(default)s)")
    parser.add_argument(
        "--broker-host",
        action="append",
        dest="broker_hosts",
        metavar="NAME",
        help="a DNS name or IP address clients reach the broker by (repeat; the first goes into configs; "
        "default: localhost and 127.0.0.1)",
    )
    parser.add_argument("--broker-port", type=int, default=DEFAULT_PORT, help="TLS port (default %(default)s)")
    parser.add_argument("--no-client-certs", action="store_true", help="passwords only: issue no client certificates")
    parser.add_argument(
        "--install-dir",
        type=Path,
        default=DEFAULT_INSTALL_DIR,
        help="where identities/NAME/ is installed on its host (paths in edge.yaml, mqtt.env; default %(default)s)",
    )
    parser.add_argument(
        "--broker-dir",
        type=Path,
        default=DEFAULT_BROKER_DIR,
        help="where broker/ is installed on the broker's host (paths in listener.conf; default %(default)s)",
    )
    parser.add_argument(
        "--broker-out",
        type=Path,
        metavar="DIR",
        help="write the broker's files here instead of OUT/broker (keep using the same DIR on every run)",
    )
    parser.add_argument("--rotate", action="append", default=[], metavar="ID", help="issue a new password/cert")
    parser.add_argument("--revoke", action="append", default=[], metavar="ID", help="remove an identity")
    reload_group = parser.add_mutually_exclusive_group()
    reload_group.add_argument("--reload-pid", type=int, metavar="PID", help="send the broker SIGHUP afterwards")
    reload_group.add_argument("--reload-pidfile", type=Path, metavar="FILE", help="... the broker whose pid is here")
    parser.add_argument("--owner", type=_owner, metavar="UID[:GID]", help="chown identity files (as root)")
    parser.add_argument("--broker-owner", type=_owner, metavar="UID[:GID]", help="chown broker files (as root)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        site = load_model(args.site, SiteConfig)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    try:
        result = provision(
            site,
            args.out,
            prefix=args.prefix,
            broker_hosts=args.broker_hosts or ["localhost", "127.0.0.1"],
            broker_port=args.broker_port,
            client_certs=not args.no_client_certs,
            install_dir=args.install_dir,
            broker_dir=args.broker_dir,
            broker_out=args.broker_out,
            rotate=args.rotate,
            revoke=args.revoke,
            owner=args.owner,
            broker_owner=args.broker_owner,
        )
    except ProvisionError as exc:
        print(f"district provision: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"district provision: {exc}", file=sys.stderr)
        return 1
    for what, names in (
        ("added", result.added),
        ("rotated", result.rotated),
        ("revoked", result.revoked),
        ("kept", result.kept),
    ):
        if names:
            print(f"{what:>8}: {', '.join(names)}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"broker files: {result.broker.dir} (listener.conf, passwd, acl, server.crt/key, ca.crt)")
    print(f"identities:   {result.out / 'identities'}/NAME (edge.yaml or mqtt.env, password, client.crt/key, ca.crt)")
    print(f"site CA:      {result.out / 'ca'} (keep ca.key offline)")
    pid = args.reload_pid
    if args.reload_pidfile is not None:
        try:
            pid = int(args.reload_pidfile.read_text().strip())
        except (OSError, ValueError) as exc:
            print(
                f"district provision: cannot read the broker's pid from {args.reload_pidfile}: {exc}", file=sys.stderr
            )
            return 1
    if pid is not None:
        try:
            reload_broker(pid)
        except OSError as exc:
            print(f"district provision: cannot signal the broker (pid {pid}): {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"broker (pid {pid}) reloads its password and ACL files")
    elif result.added or result.rotated or result.revoked:
        print("reload the broker to apply: systemctl reload mosquitto (or kill -HUP its pid, --reload-pid)")
    return 0
