"""The sign state the guidance API serves, as the bridge reads it, and the display frame it becomes.

``GET /v1/displays/{id}`` and each ``state`` event of ``/v1/displays/{id}/events`` carry one JSON
object (docs/display-bridge.md, "The sign state"). :class:`SignState` is a wire model: unknown keys are
ignored (a newer API adds fields), but what the sign needs is checked strictly (a number is a JSON
number, a mode is one the register map can carry); anything else is a malformed state, counted and
never shown.

:func:`frame_for` maps a state onto the count-display register map (:mod:`contracts.fieldbus`);
:func:`fallback_frame` is what the bridge writes when it cannot vouch for any state.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.fieldbus import DISPLAY_VALUE_MAX, DisplayFrame, DisplayMode, DisplayState, fit_text

log = logging.getLogger(__name__)


class SignState(BaseModel):
    """One state of one sign, as the API sends it. Strict types; unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    display_id: str
    #: Grows with every change of anything the sign shows; the SSE id and the ETag (``"<event_id>"``).
    event_id: Annotated[int, Field(ge=0)]
    #: The number, or null when the sign shows no number (fallback, blank, text).
    value: Annotated[int, Field(ge=0)] | None
    #: What the sign shows: ``"123"``, ``"LOW"``, ``"FULL"``, ``"CLOSED"``, ``""`` (blank), operator text.
    text: Annotated[str, Field(max_length=256)]
    mode: DisplayMode
    state: DisplayState
    stale: bool
    trusted: bool
    trust: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    data_age_s: Annotated[int, Field(ge=0)] | None = None
    sources: list[Any] = Field(default_factory=list)
    updated_at: datetime | None = None


def frame_for(state: SignState) -> DisplayFrame:
    """The display frame (heartbeat 0) showing ``state``.

    The text is made showable (:func:`contracts.fieldbus.fit_text`: ASCII, 16 characters); a number
    above the register's 65534 is capped; a ``fallback`` or ``blank`` state never carries a number, even
    if the API sent one.
    """
    value = None if state.state in ("fallback", "blank") else state.value
    if value is not None and value > DISPLAY_VALUE_MAX:
        value = DISPLAY_VALUE_MAX
    return DisplayFrame(
        value=value,
        text=fit_text(state.text),
        mode=state.mode,
        state=state.state,
        stale=state.stale,
        trusted=state.trusted,
        age_s=state.data_age_s,
        trust=state.trust,
    )


def fallback_frame(text: str, mode: DisplayMode = "auto") -> DisplayFrame:
    """The bridge's own fallback: no number, ``text`` (blank by default), stale, untrusted, link lost.

    ``mode`` is the operator mode last heard, kept for whoever reads the registers back.
    """
    return DisplayFrame(
        value=None, text=fit_text(text), mode=mode, state="fallback", stale=True, trusted=False, link_lost=True, trust=0
    )
