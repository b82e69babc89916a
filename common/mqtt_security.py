"""How every component proves itself to the broker and checks the broker: one helper, no client library.

A district broker listens with TLS only (``deploy/mosquitto.conf``), signed
by the site CA that ``district provision`` makes, and knows each client by a
username and password (``docs/security.md``). Edge agents, the gateway and
the server each build their own paho client; this module gives them what to
put into it, the same way:

* :class:`MqttSecurity`: username, password, and the TLS context: the
  site CA to verify the broker's certificate *and hostname* against, and an
  optional client certificate. :meth:`MqttSecurity.apply` puts both into a
  paho client (anything with ``tls_set_context`` and ``username_pw_set``), so
  this module imports no MQTT library.
* :class:`MqttClientFields`: the ``mqtt_username``, ``mqtt_password``,
  ``mqtt_password_file``, ``mqtt_tls``, ``mqtt_ca_file``, ``mqtt_cert_file``
  and ``mqtt_key_file`` settings the gateway and the server share (env
  ``DISTRICT_GATEWAY_*`` / ``DISTRICT_SERVER_*``).
* :func:`check_private` / :func:`read_secret_file`: a file that holds a
  secret (a password file, a private key, a config file with a password in
  it) is refused when group or other users may read it, with the ``chmod``
  that fixes it. Errors name the file, never its content.

Secrets travel by file or environment, never on a command line (which every
user sees in the process list): the settings take a password *file*, and
:class:`MqttSecurity`'s ``repr`` hides the password.
"""

from __future__ import annotations

import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, SecretStr, field_validator, model_validator

from common.mqtt_session import MqttProtocol, parse_brokers


class SecretFileError(ValueError):
    """A file that should hold a secret is unreadable, empty, or readable by other users."""


def check_private(path: Path, what: str) -> None:
    """Refuse ``path`` unless only its owner may read or write it (mode ``0600`` or ``0400``).

    ``what`` names the file in the error (``"MQTT password file"``). Raises
    :class:`SecretFileError` if the file cannot be stat'ed or any group/other
    permission bit is set (``mode & 0o077``), as OpenSSH does for private keys.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretFileError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise SecretFileError(
            f"{what} {path} may be read by other users (mode {stat.filemode(mode)}, {mode & 0o777:04o}): "
            f"it holds a secret; `chmod 600 {path}`"
        )


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a private file (see :func:`check_private`), stripped; never empty.

    Raises :class:`SecretFileError` naming the file (never its content).
    """
    check_private(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"{what} {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise SecretFileError(f"{what} {path} is empty")
    return secret


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails.

    paho-mqtt 2.1 wraps the TCP socket and calls ``do_handshake()`` itself;
    when the broker's certificate does not verify, it lets the exception out
    without closing the socket, which leaks a descriptor per refused attempt
    (a ``ResourceWarning`` later). Installed through the documented
    :attr:`ssl.SSLContext.sslsocket_class` hook.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class PahoLike(Protocol):
    """The two calls of a paho-mqtt 2.x ``Client`` that :meth:`MqttSecurity.apply` makes."""

    def tls_set_context(self, context: ssl.SSLContext | None = None) -> None: ...
    def username_pw_set(self, username: str | None, password: str | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class MqttSecurity:
    """A client's broker credentials and TLS settings (``repr`` hides the password).

    ``tls``: connect with TLS, verifying the broker's certificate against
    ``ca_file`` (PEM; None: the system's CAs) and its hostname against the
    host the client connects to. ``cert_file``/``key_file``: the client's
    own certificate (PEM), when the broker requires one.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def build(
        cls,
        *,
        username: str | None = None,
        password: str | None = None,
        password_file: Path | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> MqttSecurity:
        """Check the files and read the password file (a ``password`` given directly wins).

        TLS is on when ``tls`` or any of ``ca_file``, ``cert_file`` is given.
        Raises :class:`SecretFileError` for a password or key file other users
        may read, and :class:`ValueError` for a certificate without its key
        (or the reverse) or a missing CA file.
        """
        if (cert_file is None) != (key_file is None):
            raise ValueError("a client certificate needs its key and the key its certificate (cert_file, key_file)")
        if password is None and password_file is not None:
            password = read_secret_file(password_file, "MQTT password file")
        if key_file is not None:
            check_private(key_file, "MQTT client key")
        if ca_file is not None and not ca_file.is_file():
            raise ValueError(f"MQTT CA file {ca_file} does not exist")
        if cert_file is not None and not cert_file.is_file():
            raise ValueError(f"MQTT client certificate {cert_file} does not exist")
        return cls(
            username, password, tls or ca_file is not None or cert_file is not None, ca_file, cert_file, key_file
        )

    @classmethod
    def from_settings(cls, settings: MqttClientSettings) -> MqttSecurity:
        """From the ``mqtt_*`` fields of gateway or server settings (:class:`MqttClientFields`)."""
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password is not None else None
        return cls.build(
            username=settings.mqtt_username,
            password=password,
            password_file=settings.mqtt_password_file,
            tls=settings.mqtt_tls,
            ca_file=settings.mqtt_ca_file,
            cert_file=settings.mqtt_cert_file,
            key_file=settings.mqtt_key_file,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None without TLS.

        TLS 1.2 or later; the broker's certificate must chain to ``ca_file``
        (or a system CA) and name the host connected to (``check_hostname``).
        Raises :class:`ssl.SSLError` or :class:`OSError` for unreadable PEM files.
        """
        if not self.tls:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None
        )
        context.sslsocket_class = _ClosingSSLSocket
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def apply(self, client: PahoLike) -> None:
        """Put the TLS context and the credentials into a paho client (before ``connect``)."""
        context = self.ssl_context()
        if context is not None:
            client.tls_set_context(context)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)

    def describe(self) -> str:
        """For logs: ``TLS (CA ca.crt, client certificate), user gateway`` (never the password)."""
        parts = []
        if self.tls:
            extra = [f"CA {self.ca_file}" if self.ca_file else "system CAs"]
            if self.cert_file is not None:
                extra.append("client certificate")
            parts.append(f"TLS ({', '.join(extra)})")
        else:
            parts.append("no TLS")
        parts.append(f"user {self.username}" if self.username else "anonymous")
        return ", ".join(parts)


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class MqttClientSettings(Protocol):
    """The broker-credential part of ``GatewaySettings`` and ``ServerSettings`` (read-only)."""

    @property
    def mqtt_username(self) -> str | None: ...
    @property
    def mqtt_password(self) -> _Secret | None: ...
    @property
    def mqtt_password_file(self) -> Path | None: ...
    @property
    def mqtt_tls(self) -> bool: ...
    @property
    def mqtt_ca_file(self) -> Path | None: ...
    @property
    def mqtt_cert_file(self) -> Path | None: ...
    @property
    def mqtt_key_file(self) -> Path | None: ...


class MqttClientFields(BaseModel):
    """The ``mqtt_*`` credential and TLS settings, mixed into the gateway's and the server's settings.

    Prefer ``mqtt_password_file`` (a ``0600`` file, as ``district provision``
    writes) to ``mqtt_password`` (environment only: never put it on a
    command line). TLS is on when ``mqtt_tls`` is true or a CA or client
    certificate is given.
    """

    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    #: A file whose first line is the password; refused if other users may read it.
    mqtt_password_file: Path | None = None
    #: Connect with TLS (implied by ``mqtt_ca_file``/``mqtt_cert_file``); the broker's hostname is checked.
    mqtt_tls: bool = False
    #: PEM file of the CA that signed the broker's certificate (the site CA); None: the system's CAs.
    mqtt_ca_file: Path | None = None
    #: PEM client certificate and its private key (0600), when the broker requires one.
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    #: MQTT protocol version: ``5`` (Mosquitto) or ``3.1.1`` (any broker, e.g. RabbitMQ 3.10 or
    #: NATS 2.9 clusters); common/mqtt_session.py says what changes.
    mqtt_protocol: MqttProtocol = "5"
    #: Several broker addresses (``host:port,host:port``, the nodes of a cluster): replaces
    #: ``mqtt_host``/``mqtt_port``; the client moves to the next after a failed or lost connection.
    mqtt_brokers: str | None = None

    @field_validator("mqtt_brokers")
    @classmethod
    def _brokers_ok(cls, value: str | None) -> str | None:
        if value is not None:
            parse_brokers(value)
        return value

    @model_validator(mode="after")
    def _pairs(self) -> MqttClientFields:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("mqtt_cert_file and mqtt_key_file go together")
        if self.mqtt_password is not None and self.mqtt_password_file is not None:
            raise ValueError("set mqtt_password or mqtt_password_file, not both")
        return self
