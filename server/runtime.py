"""What the routes need at request time, gathered in one object on ``app.state``.

The lifespan fills in the broker and database health sources once it has
started them; tests build a :class:`Runtime` with fakes instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from server import models
from server.live import LiveState
from server.settings import ServerSettings


class BrokerHealthSource(Protocol):
    def health(self) -> models.BrokerHealth: ...


class DatabaseHealthSource(Protocol):
    def health(self) -> models.DatabaseHealth: ...


@dataclass
class Runtime:
    settings: ServerSettings
    live: LiveState
    broker: BrokerHealthSource | None = None
    database: DatabaseHealthSource | None = None
    started: float = field(default_factory=time.monotonic)
