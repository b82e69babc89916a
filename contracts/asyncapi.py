"""Generate the AsyncAPI 3.0 document for contract v1 from the pydantic models.

    python -m contracts.asyncapi > docs/asyncapi.json

A test checks that the committed document matches the models.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts.confirm import StoredConfirmation
from contracts.messages import MESSAGE_KINDS, SCHEMA_VERSION
from contracts.topics import STORED, TOPIC_VERSION

_SUMMARIES = {
    "parking_bay": "State of one parking bay (FIWARE ParkingSpot.status): on change and at every refresh.",
    "locker": "State of one pickup-locker compartment and its door: on change and at every refresh.",
    "footfall": "People crossing a zone's counting lines during one interval (FIWARE CrowdFlowObserved), "
    "with the zone's running occupancy estimate.",
    "status": "Retained device heartbeat; the device's MQTT last will is the 'offline' form.",
}


def build() -> dict[str, Any]:
    models: list[type[BaseModel]] = [*MESSAGE_KINDS.values(), StoredConfirmation]
    _, defs = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    schemas = defs["$defs"]
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for kind, model in MESSAGE_KINDS.items():
        messages[kind] = {
            "name": model.__name__,
            "summary": _SUMMARIES[kind],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
        channel = f"{kind}"
        channels[channel] = {
            "address": f"{{prefix}}/{TOPIC_VERSION}/{{site_id}}/{{device_id}}/{kind}",
            "parameters": {
                "prefix": {"description": "Deployment prefix, default 'district' (may contain '/')."},
                "site_id": {"description": "Site id from the site configuration."},
                "device_id": {"description": "Publishing device; must equal the payload's device_id."},
            },
            "messages": {kind: {"$ref": f"#/components/messages/{kind}"}},
        }
        operations[f"publish_{kind}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"Devices publish at QoS 1{' (retained)' if kind == 'status' else ''}.",
        }
    messages[STORED] = {
        "name": StoredConfirmation.__name__,
        "summary": "End-to-end confirmation: which of the device's readings (seq ranges within an epoch) the "
        "gateway has stored or dead-lettered; the device may then delete them from its outbox.",
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{StoredConfirmation.__name__}"},
    }
    channels[STORED] = {
        "address": f"{{prefix}}/{TOPIC_VERSION}/{{site_id}}/{{device_id}}/{STORED}",
        "parameters": {
            "prefix": {"description": "Deployment prefix, default 'district' (may contain '/')."},
            "site_id": {"description": "Site id from the site configuration."},
            "device_id": {"description": "The device whose readings are confirmed."},
        },
        "messages": {STORED: {"$ref": f"#/components/messages/{STORED}"}},
    }
    operations[f"receive_{STORED}"] = {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{STORED}"},
        "summary": "Devices subscribe at QoS 1 to their own confirmations (not retained).",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "District sensing protocol",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Messages from edge devices to the gateway and server, and the gateway's "
            "confirmations back to each device. See docs/protocol.md.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
