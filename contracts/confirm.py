"""End-to-end confirmation: the gateway tells a device which readings are stored.

The broker's PUBACK only says the broker has a message, and Mosquitto
acknowledges before its persistence file is written; a broker crash loses what
it acknowledged since the last save. So our edge keeps each reading in its
outbox until the gateway confirms that InfluxDB holds it (or that it was
dead-lettered, which re-sending cannot change):

    gateway ──{prefix}/v1/{site}/{device}/stored (QoS 1, not retained)──▶ device

    {"schema_version": 1, "device_id": "...", "epoch": "...",
     "seqs": [[first, last], ...], "by": "district-gateway"}

``seqs`` are inclusive ranges of the device's ``seq`` numbers within ``epoch``
(see :class:`contracts.messages._Message`). Confirmations are per reading, not
"everything up to": a reading the broker lost between two stored ones stays
unconfirmed and is re-sent. Confirming is idempotent, and storing a re-sent
reading again is too (same key), so a lost confirmation costs one duplicate
send, never a duplicate point.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.messages import MAX_WIRE_INT, SCHEMA_VERSION, Ident

#: Largest seq the contract allows (I-JSON, so inside InfluxDB's int64).
MAX_SEQ = MAX_WIRE_INT
#: Ranges per confirmation message; more are sent in further messages.
MAX_RANGES = 1000

Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class StoredConfirmation(BaseModel):
    """The readings of one device epoch that the gateway has stored (or dead-lettered)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Annotated[int, Field(ge=1)] = SCHEMA_VERSION
    device_id: Ident
    epoch: Ident
    seqs: Annotated[list[tuple[Seq, Seq]], Field(min_length=1, max_length=MAX_RANGES)]
    by: Annotated[str, Field(max_length=128)] | None = None


class ConfirmationRejected(ValueError):
    """A confirmation payload that does not parse."""


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges covering ``seqs``: ``[3, 1, 2, 7]`` → ``[(1, 3), (7, 7)]``."""
    return ranges_merge((s, s) for s in seqs)


def encode(device_id: str, epoch: str, seqs: Iterable[int], *, by: str | None = None) -> list[bytes]:
    """The confirmation payloads for ``seqs`` (one per :data:`MAX_RANGES` ranges; none if empty)."""
    merged = ranges(seqs)
    return [
        StoredConfirmation(device_id=device_id, epoch=epoch, seqs=merged[i : i + MAX_RANGES], by=by)
        .model_dump_json(exclude_none=True)
        .encode()
        for i in range(0, len(merged), MAX_RANGES)
    ]


def decode(payload: bytes) -> StoredConfirmation:
    """Parse one confirmation; raise :class:`ConfirmationRejected` (never anything else)."""
    try:
        c = StoredConfirmation.model_validate_json(payload)
    except ValidationError as exc:
        raise ConfirmationRejected(str(exc.errors(include_url=False)[0]["msg"])) from None
    if any(lo > hi for lo, hi in c.seqs):
        raise ConfirmationRejected("a range ends before it starts")
    return c


def ranges_merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges covering every span in ``spans``."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out
