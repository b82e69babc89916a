"""Mosquitto password-file hashes, as ``mosquitto_passwd`` (Mosquitto 2.0) writes them.

One line per user: ``username:$7$iterations$salt$hash`` where ``$7$`` is
PBKDF2-HMAC-SHA512, ``salt`` 12 random bytes and ``hash`` the 64-byte derived
key, both standard base64 with padding (Mosquitto's ``src/password_mosq.c``
and ``apps/mosquitto_passwd``; the broker reads the iteration count from the
line). The derivation is the standard library's :func:`hashlib.pbkdf2_hmac`;
only the line format is written here, and a test checks it both ways against
the real ``mosquitto_passwd`` binary.

Iterations: 101, ``mosquitto_passwd``'s own default. The broker derives the
key on every CONNECT, and the passwords ``district provision`` issues are 256
random bits, which no iteration count makes easier or harder to guess: the
work factor guards weak human passwords, which we never issue.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

#: ``mosquitto_passwd``'s defaults (Mosquitto 2.0: PBKDF2-SHA512, 101 iterations, 12-byte salt).
ITERATIONS = 101
SALT_BYTES = 12
KEY_BYTES = 64
_USERNAME = re.compile(r"^[^:\s#+/]{1,65535}$")


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """``$7$iterations$salt$hash`` for ``password`` (UTF-8), with a random salt unless one is given.

    Raises :class:`ValueError` for an empty password, fewer than 1 iteration
    or a salt that is not :data:`SALT_BYTES` long.
    """
    if not password:
        raise ValueError("an empty password cannot be hashed")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, not {iterations}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt must be {SALT_BYTES} bytes, not {len(salt)}")
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, KEY_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(encoded: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (constant-time compare).

    Raises :class:`ValueError` for a line that is not a ``$7$`` hash (the
    older ``$6$`` salted SHA-512 of Mosquitto 1.x is not supported).
    """
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        raise ValueError("not a mosquitto $7$ (PBKDF2-SHA512) hash")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("not a mosquitto $7$ (PBKDF2-SHA512) hash") from None
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(expected))
    return hmac.compare_digest(key, expected)


def check_username(username: str) -> str:
    """``username`` if it can stand in a password file and an ACL pattern (no ``:``, space, ``#``, ``+``, ``/``)."""
    if not _USERNAME.match(username):
        raise ValueError(f"username {username!r} cannot be used: no ':', '#', '+', '/' or whitespace")
    return username


def passwd_lines(hashes: dict[str, str]) -> str:
    """The password file for ``{username: hash}``, one ``username:hash`` line each, sorted."""
    return "".join(f"{check_username(user)}:{hashes[user]}\n" for user in sorted(hashes))


def parse_passwd(text: str) -> dict[str, str]:
    """``{username: hash}`` from a password file's text (blank lines and ``#`` comments skipped)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded:
            raise ValueError(f"password file line {n} is not username:hash")
        out[user] = encoded
    return out
