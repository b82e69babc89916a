"""Moved to :mod:`common.runtime` (components must not import the CLI package).

Kept as a re-export for scripts outside the components (bench/, tests/chaos,
tests/integration) that still import ``district.runtime``.
"""

from common.runtime import (
    STOP_SIGNALS,
    SUPERVISOR_ENV,
    WATCH_INTERVAL_S,
    die_with_parent,
    stop_on_signals,
    supervised,
    supervisor_pid,
    watch_parent,
)

__all__ = [
    "STOP_SIGNALS",
    "SUPERVISOR_ENV",
    "WATCH_INTERVAL_S",
    "die_with_parent",
    "stop_on_signals",
    "supervised",
    "supervisor_pid",
    "watch_parent",
]
