"""API keys with roles, stored hashed in a file the admin manages with ``district keys``.

Roles, lowest first: ``public`` < ``display`` < ``operator`` < ``admin``; a
key of a higher role may do whatever a lower one may (docs/access-control.md).

A key is ``dk_<id>_<secret>``: ``id`` is 8 hex digits, public, used to find
the key's line; ``secret`` is 32 bytes from :mod:`secrets` (256 bits,
URL-safe base64). The file keeps, per key, its name, role, creation time, id,
a random 16-byte salt and SHA-256(salt + secret); never the key.

Why a plain salted SHA-256 and not a slow KDF (scrypt, argon2): a slow hash
protects *guessable* secrets (passwords) from an attacker who stole the file;
these secrets are 256 random bits, so even 10^12 guesses a second would need
~10^57 years for one key: the hash's speed gives the attacker nothing, while
a KDF tuned to hurt them (tens of ms and MBs per check) would cost that much
on *every* request a keyed display or scraper makes. The per-key salt keeps
two files' hashes unrelated; the id prefix makes a check one lookup and one
hash, compared with :func:`hmac.compare_digest`.

File format (UTF-8, one key per line, ``#`` comments, fields separated by
whitespace)::

    # name  role  created  id  hash
    alice   admin  2026-11-29T12:00:00Z  3f9a0c1e  sha256:<salt hex>:<digest hex>

The CLI writes it whole to a temporary file and renames it over the old one
(mode 0600), holding an exclusive lock on ``<file>.lock`` meanwhile, so a
server re-reading it (on a changed mtime, :class:`KeyRing`) sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from contracts.configfile import ConfigError

log = logging.getLogger(__name__)

Role = Literal["public", "display", "operator", "admin"]
#: Lowest first: a key may do what its role and every lower role may.
ROLES: tuple[Role, ...] = get_args(Role)
RANK: dict[str, int] = {role: n for n, role in enumerate(ROLES)}

KEY_PREFIX = "dk"
_KEY = re.compile(r"^dk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HASH = re.compile(r"^sha256:([0-9a-f]{32}):([0-9a-f]{64})$")
HEADER = "# district API keys (managed by `district keys`): name  role  created  id  hash"


def at_least(role: str, needed: str) -> bool:
    """True if ``role`` may do what ``needed`` may."""
    return RANK[role] >= RANK[needed]


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def split_key(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    m = _KEY.match(presented)
    return (m.group(1), m.group(2)) if m else None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key's line: everything but the key."""

    name: str
    role: Role
    created: datetime
    key_id: str
    salt: bytes
    digest: bytes

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(self.salt, secret), self.digest)

    def line(self) -> str:
        created = self.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{self.name}\t{self.role}\t{created}\t{self.key_id}\tsha256:{self.salt.hex()}:{self.digest.hex()}"

    def __repr__(self) -> str:  # no hash material in reprs either
        return f"KeyEntry({self.name!r}, {self.role!r}, id={self.key_id})"


def new_key(name: str, role: Role, now: datetime, taken_ids: Collection[str] = ()) -> tuple[KeyEntry, str]:
    """A fresh key for ``name``: its entry (hash only) and the key itself, to show once."""
    while True:
        key_id = secrets.token_hex(4)
        if key_id not in taken_ids:
            break
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    entry = KeyEntry(name, role, now.replace(microsecond=0), key_id, salt, _digest(salt, secret))
    return entry, f"{KEY_PREFIX}_{key_id}_{secret}"


def parse_key_file(text: str, path: Path) -> list[KeyEntry]:
    """The entries of a key file; ConfigError naming every bad line (file:line), never its content."""
    entries: list[KeyEntry] = []
    errors: list[str] = []
    names: set[str] = set()
    ids: set[str] = set()
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{path}:{n}"
        if len(fields) != 5:
            errors.append(f"{where}: expected 5 fields (name role created id hash), found {len(fields)}")
            continue
        name, role, created, key_id, hashed = fields
        if not NAME.match(name):
            errors.append(f"{where}: bad key name")
            continue
        if role not in RANK:
            errors.append(f"{where}: role must be one of {', '.join(ROLES)}")
            continue
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            errors.append(f"{where}: created is not an ISO 8601 time")
            continue
        h = _HASH.match(hashed)
        if not re.fullmatch(r"[0-9a-f]{8}", key_id) or h is None:
            errors.append(f"{where}: bad key id or hash (expected sha256:<salt hex>:<digest hex>)")
            continue
        if name in names:
            errors.append(f"{where}: key name {name!r} appears twice")
            continue
        if key_id in ids:
            errors.append(f"{where}: key id {key_id} appears twice")
            continue
        names.add(name)
        ids.add(key_id)
        entries.append(
            KeyEntry(name, role, when, key_id, bytes.fromhex(h.group(1)), bytes.fromhex(h.group(2)))  # type: ignore[arg-type]
        )
    if errors:
        raise ConfigError(path, errors)
    return entries


def read_key_file(path: Path) -> list[KeyEntry]:
    """The entries of ``path``; [] if it does not exist (no keys added yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    return parse_key_file(text, path)


def write_key_file(path: Path, entries: list[KeyEntry]) -> None:
    """Replace ``path`` atomically (temp file, fsync, rename), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join([HEADER, *(e.line() for e in entries)]) + "\n"
    try:
        owner: tuple[int, int] | None = (path.stat().st_uid, path.stat().st_gid)
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                # root editing the server's file: keep it the server user's, or the server could not read it
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), *owner)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable (not every filesystem allows it)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of ``path`` (two admins at once do not lose a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class KeyCommandError(ValueError):
    """A ``district keys`` request that cannot be done (name taken, unknown name)."""


def add_key(path: Path, name: str, role: Role, now: datetime | None = None) -> str:
    """Add a key named ``name``; returns the key (the only time it exists outside its holder)."""
    if not NAME.match(name):
        raise KeyCommandError(f"bad key name {name!r}: letters, digits and _ . @ - (at most 64, starting alphanumeric)")
    with locked(path):
        entries = read_key_file(path)
        if any(e.name == name for e in entries):
            raise KeyCommandError(f"a key named {name!r} exists: revoke it first, or `district keys rotate {name}`")
        entry, key = new_key(name, role, now or datetime.now(UTC), {e.key_id for e in entries})
        write_key_file(path, [*entries, entry])
    return key


def rotate_key(path: Path, name: str, now: datetime | None = None) -> str:
    """Replace ``name``'s key with a new one of the same role (the old one stops working at once)."""
    with locked(path):
        entries = read_key_file(path)
        for i, old in enumerate(entries):
            if old.name == name:
                entry, key = new_key(name, old.role, now or datetime.now(UTC), {e.key_id for e in entries})
                entries[i] = entry
                write_key_file(path, entries)
                return key
    raise KeyCommandError(f"no key named {name!r}")


def revoke_key(path: Path, name: str) -> KeyEntry:
    """Remove ``name``'s key; a server re-reading the file refuses it from then on."""
    with locked(path):
        entries = read_key_file(path)
        kept = [e for e in entries if e.name != name]
        if len(kept) == len(entries):
            raise KeyCommandError(f"no key named {name!r}")
        write_key_file(path, kept)
    return next(e for e in entries if e.name == name)


# -- the server's view -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: the key's name (what the audit log records) and its role."""

    name: str
    role: Role


class KeyRing:
    """Every key a server accepts: legacy plaintext admin keys (settings) and the hashed key file.

    The file is re-read when its identity or mtime changes (checked at most every
    ``reload_s`` seconds, on the next request that presents a key), so a revoke
    takes effect without a restart. A file that became unreadable or malformed
    is logged and its keys refused until it is fixed (fail closed: a revoke
    must never be undone by a typo); a missing file holds no keys.
    """

    def __init__(
        self,
        legacy_admin: Mapping[str, str],
        path: Path | None,
        *,
        reload_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._legacy = [(name, key.encode()) for name, key in legacy_admin.items()]
        self.path = path
        self.reload_s = reload_s
        self._clock = clock
        self._by_id: dict[str, KeyEntry] = {}
        self._stamp: tuple[int, int, int, int] | None = None
        self._next_check = 0.0
        self.reloads = 0
        if path is not None:
            self._load(initial=True)
            self._next_check = clock() + reload_s
            clash = {e.name for e in self._by_id.values()} & {name for name, _ in self._legacy}
            if clash:
                log.warning("key name(s) %s used both in api_keys and in %s", sorted(clash), path)

    def __repr__(self) -> str:  # never the keys
        return f"KeyRing({len(self._legacy)} legacy admin key(s), {len(self._by_id)} from {self.path})"

    def __len__(self) -> int:
        return len(self._legacy) + len(self._by_id)

    def entries(self) -> list[KeyEntry]:
        return list(self._by_id.values())

    def roles(self) -> dict[str, int]:
        """How many keys of each role (legacy keys are admin keys)."""
        out: dict[str, int] = dict.fromkeys(ROLES, 0)
        out["admin"] += len(self._legacy)
        for e in self._by_id.values():
            out[e.role] += 1
        return out

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, *, initial: bool = False) -> None:
        assert self.path is not None
        stamp = self._file_stamp()
        try:
            entries = read_key_file(self.path)
        except ConfigError as exc:
            if initial:
                raise
            self._by_id = {}
            self._stamp = stamp
            log.error("API key file unusable, its keys are refused until it is fixed: %s", "; ".join(exc.errors))
            return
        self._by_id = {e.key_id: e for e in entries}
        self._stamp = stamp
        if not initial:
            self.reloads += 1
            log.info("API key file %s re-read: %d key(s)", self.path, len(entries))

    def maybe_reload(self) -> None:
        if self.path is None:
            return
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self.reload_s
        if self._file_stamp() != self._stamp:
            self._load()

    def identify(self, presented: str) -> Principal | None:
        """Whose key ``presented`` is, or None (unknown, revoked or malformed)."""
        self.maybe_reload()
        given = presented.encode()
        found: str | None = None
        for name, key in self._legacy:  # all of them, so timing does not tell which one nearly matched
            if hmac.compare_digest(given, key) and found is None:
                found = name
        if found is not None:
            return Principal(found, "admin")
        parts = split_key(presented)
        if parts is None:
            return None
        entry = self._by_id.get(parts[0])
        if entry is None or not entry.matches(parts[1]):
            return None
        return Principal(entry.name, entry.role)


# -- district keys ---------------------------------------------------------------------


def default_key_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the server looks when ``keys_file`` is not set: ``DISTRICT_SERVER_KEYS_FILE``, else
    ``api-keys`` in the server's state directory (``DISTRICT_SERVER_STATE_DIR``, else
    ``$XDG_STATE_HOME/district``)."""
    env = os.environ if env is None else env
    if env.get("DISTRICT_SERVER_KEYS_FILE"):
        return Path(env["DISTRICT_SERVER_KEYS_FILE"])
    if env.get("DISTRICT_SERVER_STATE_DIR"):
        return Path(env["DISTRICT_SERVER_STATE_DIR"]) / "api-keys"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "district" / "api-keys"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="district keys",
        description="Manage the API keys of the guidance API (docs/access-control.md). The file holds hashes only;"
        " a new key is printed once, by `add` and `rotate`. A running server picks up changes within a second.",
    )
    p.add_argument(
        "--file",
        type=Path,
        help="the key file (default: DISTRICT_SERVER_KEYS_FILE, else api-keys in the server's state directory)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a key and print it (once)")
    add.add_argument("name", help="who holds the key: what the audit log records")
    add.add_argument("--role", required=True, choices=[r for r in ROLES if r != "public"])
    sub.add_parser("list", help="names, roles, ids and creation times (never keys)")
    rotate = sub.add_parser("rotate", help="replace a key by a new one of the same role and print it (once)")
    rotate.add_argument("name")
    revoke = sub.add_parser("revoke", help="remove a key: a running server refuses it within a second")
    revoke.add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path: Path = args.file or default_key_file()
    try:
        if args.command == "add":
            key = add_key(path, args.name, args.role)
            print(key)
            print(f"added {args.name!r} ({args.role}) to {path}; the key is shown only now", file=sys.stderr)
        elif args.command == "rotate":
            key = rotate_key(path, args.name)
            print(key)
            print(f"rotated {args.name!r} in {path}: the old key no longer works", file=sys.stderr)
        elif args.command == "revoke":
            entry = revoke_key(path, args.name)
            print(f"revoked {entry.name!r} ({entry.role}, id {entry.key_id}) in {path}", file=sys.stderr)
        else:
            entries = read_key_file(path)
            print(f"{'NAME':<24} {'ROLE':<9} {'ID':<9} CREATED")
            for e in sorted(entries, key=lambda e: e.name):
                print(f"{e.name:<24} {e.role:<9} {e.key_id:<9} {e.created.strftime('%Y-%m-%dT%H:%M:%SZ')}")
            if not entries:
                print(f"(no keys in {path})", file=sys.stderr)
    except KeyCommandError as exc:
        print(f"district keys: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"district keys: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
