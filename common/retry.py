"""The one retry policy: capped exponential backoff with jitter, as a value the loop asks.

Every component's retry loop interleaves other work with its waits: the edge's
MQTT thread waits on its stop event, the camera's capture is a step function
that must return within a poll so health keeps flowing, the gateway's writer
waits on a wake event and honours ``Retry-After``, supervisors poll many
children each with its own schedule, the server's monitor is async and checks
on a timer. So the policy does not sleep and does not call anything: it only
answers "how long before the next attempt" and forgets on :meth:`Backoff.reset`.
The loop decides what to wait on (``stop.wait(backoff.next_delay())``), when
a success resets it, and what overrides it (a clash, ``Retry-After``).

The ``n``-th delay after a reset (``n`` = 0, 1, ...) is::

    base  = min(max_s, initial_s * factor ** n)
    delay = min(max_s, base * (1 + u)),  u uniform in [-jitter.down, +jitter.up]

in seconds, never negative. With :data:`NO_JITTER` and the default factor 2:
``initial_s``, 2×, 4×, ... up to ``max_s``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

#: Exponent cap: ``factor ** n`` stops growing here (long past any ``max_s``), so it never overflows.
_MAX_EXPONENT = 64
#: The largest ``factor`` accepted: ``factor ** _MAX_EXPONENT`` stays a finite float.
MAX_FACTOR = 1000.0


@dataclass(frozen=True, slots=True)
class Jitter:
    """How far a delay may be spread around its base: a factor in ``[1 - down, 1 + up]`` (fractions, 0..1).

    Spreading keeps many clients that lost the same server at the same moment
    from coming back in lockstep. Raises ValueError outside ``0 <= down, up <= 1``.
    """

    down: float = 0.0
    up: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.down <= 1.0 and 0.0 <= self.up <= 1.0):
            raise ValueError(f"jitter fractions must be within 0..1, not down={self.down}, up={self.up}")

    @classmethod
    def symmetric(cls, fraction: float) -> Jitter:
        """``± fraction`` of the base (0.1: 0.9× to 1.1×, then capped at ``max_s``)."""
        return cls(fraction, fraction)

    @classmethod
    def below(cls, fraction: float) -> Jitter:
        """Up to ``fraction`` below the base, never above it (0.5: 0.5× to 1×)."""
        return cls(fraction, 0.0)


#: Exact delays: ``initial_s``, ``initial_s * factor``, ... up to ``max_s``.
NO_JITTER = Jitter()


class Backoff:
    """Capped exponential backoff; see the module docstring for the formula.

    ``initial_s`` and ``max_s`` are seconds (``initial_s`` above ``max_s``
    means every delay is ``max_s``); ``factor`` is the growth per failure
    (1 to :data:`MAX_FACTOR`); ``rng`` returns a uniform number in [0, 1)
    (inject a constant in tests). Raises ValueError for a negative time or a
    factor out of range. Not thread-safe: one loop owns one policy.
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        factor: float = 2.0,
        jitter: Jitter = NO_JITTER,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s < 0 or max_s < 0:
            raise ValueError(f"backoff times must not be negative, not initial_s={initial_s}, max_s={max_s}")
        if not 1.0 <= factor <= MAX_FACTOR:
            raise ValueError(f"backoff factor must be within 1..{MAX_FACTOR:g}, not {factor}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng
        #: Delays handed out since the last :meth:`reset` (the failures counted so far).
        self.failures = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt (``0 <= delay <= max_s``), and count one more failure."""
        base = min(self.max_s, self.initial_s * self.factor ** min(self.failures, _MAX_EXPONENT))
        self.failures += 1
        spread = -self.jitter.down + (self.jitter.down + self.jitter.up) * self._rng()
        return max(0.0, min(self.max_s, base + base * spread))

    def reset(self) -> None:
        """After a success: the next delay is ``initial_s`` again."""
        self.failures = 0
