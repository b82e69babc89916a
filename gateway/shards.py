"""Topic shards: the ingest split over N gateway workers without MQTT 5 shared subscriptions.

``$share`` is MQTT 5 (and Mosquitto's); RabbitMQ 3.10 and NATS 2.9 take
``$share/g/t`` for a literal topic and deliver nothing to it
(``../shared/research/clustered-brokers.md`` §0). With ``ingest = "shards"``
each worker *i* instead subscribes to a fixed, disjoint set of topic filters,
in its own persistent session (client id ``{mqtt_client_id}-w{i}``), so every
message reaches exactly one session and that session's queue waits on the
broker for worker *i* while it is down (the supervisor restarts it at once).

How the filters are cut (:func:`shard_filters`):

* the site configuration lists its devices (and ``shard_by`` is ``device``): their filters
  ``{prefix}/v1/{site}/{device}/+``, in device-id order, are dealt out in
  turn (balanced: shard sizes differ by at most one; a hash would leave a
  shard empty with the seven devices of a small site);
* otherwise the reading kinds' filters ``{prefix}/v1/+/+/{kind}`` are
  dealt out in turn (at most as many shards as kinds).

What no shard's filters match is not received: a device the site does not
list, or a topic that is not ours in shape (which a ``share`` gateway
subscribed to ``{prefix}/#`` would dead-letter as ``bad_topic``). With the
device cut, the gateway's own status topics are not stored either. Changing N
or the device list moves devices between sessions: readings queued in a
session that no worker owns any more wait there until the broker expires it,
so drain first (stop the devices, let the gateway empty its queues) or run
the old layout once more; the devices' outboxes re-send what stays unconfirmed.

Cost: one filter per device in each worker's SUBSCRIBE. Brokers keep that
cheaply (Mosquitto, RabbitMQ: one binding each); NATS 2.9 makes a JetStream
consumer per QoS 1 filter (replicated in a cluster), so with thousands of
devices per worker there prefer the kind cut (``shard_by = "kind"``). Not
measured at city scale.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts import topics
from contracts.messages import MESSAGE_KINDS


class ShardError(ValueError):
    """A shard layout that would leave a worker with nothing to subscribe to."""


def shard_of(device_id: str, devices: Sequence[str], shards: int) -> int:
    """0-based shard of ``device_id``: its index among the sorted distinct ``devices``, mod ``shards``."""
    return sorted(set(devices)).index(device_id) % shards


def shard_filters(prefix: str, site_id: str, shards: int, devices: Sequence[str] = ()) -> list[list[str]]:
    """The topic filters of each of ``shards`` shards (index 0 is worker 1's), disjoint and covering
    every device in ``devices`` (or, without devices, every reading kind).

    Raises :class:`ShardError` when a shard would get no filter (more shards than kinds without a
    device list, or than devices that hash apart).
    """
    if shards < 1:
        raise ShardError("need at least one shard")
    out: list[list[str]] = [[] for _ in range(shards)]
    if devices:
        for i, device in enumerate(sorted(set(devices))):
            out[i % shards].append(topics.device_filter(prefix, site_id, device))
    else:
        for i, kind in enumerate(MESSAGE_KINDS):
            out[i % shards].append(topics.subscription(prefix, "+", kind))
    empty = [i + 1 for i, filters in enumerate(out) if not filters]
    if empty:
        what = f"{len(devices)} listed devices" if devices else f"{len(MESSAGE_KINDS)} reading kinds (no device list)"
        raise ShardError(f"workers {empty} would own no topic filter: {shards} shards over {what}; use fewer workers")
    return out
