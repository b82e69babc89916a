"""The k rule: no analytics figure is published that rests on fewer than k people. One place, every endpoint.

Statistical disclosure control's threshold rule (e.g. Eurostat, *Handbook
on Statistical Disclosure Control*, 2010, §4.2.1: a cell is sensitive when
fewer than a threshold of units contribute to it). Every analytics route
turns its cells into JSON only through :func:`publish` (a series of cells)
or :func:`publish_cell` (one), so the rule cannot be skipped by a route.

A cell is an interval (or a labelled slice of one: an hour of the day, a
weekday, a lag) with the **counts** its figure is computed from. Each
figure kind (:class:`Rule`) says how to compute its value from the counts
and how many people the value rests on. Then, with ``k`` from the site's
``analytics.k`` (default 10):

* ``ok``: rests on at least k people; value and counts shown;
* ``coarsened``: below k alone, so merged with its below-k neighbours in
  time into one wider interval until the merged cell reaches k (only for
  series whose counts add up, ``coarsen=True``); value recomputed from the
  merged counts, the cell's ``start``/``end`` are the merged interval;
* ``suppressed``: below k even so; **value and counts are null** (a count
  under k is itself the disclosure), never 0;
* ``nodata``: nothing was counted in the interval (no camera reported).

Counted crossings stand in for people: someone who walks in twice counts
twice. That is the only unit the system stores (aggregates, never tracks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

#: What a published cell is (see the module docstring).
CellState = Literal["ok", "coarsened", "suppressed", "nodata"]
#: The additive counts one figure is computed from, by name (``entries``, ``passers_by``, ``person_s``...).
Counts = dict[str, float]


@dataclass(frozen=True, slots=True)
class Cell:
    """One interval ``[start, end)`` (UTC-aware) and its counts (None: no data); ``label`` names a slice."""

    start: datetime
    end: datetime
    counts: Counts | None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A figure kind: its ``value`` from counts (None: undefined, e.g. a share of 0), and the ``people`` it rests on.

    ``digits``: decimals the value is rounded to.
    """

    value: Callable[[Mapping[str, float]], float | None]
    people: Callable[[Mapping[str, float]], float]
    digits: int = 3


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 3)


def _shown(
    cell: Cell, counts: Counts, rule: Rule, state: CellState, local: Callable[[datetime], datetime]
) -> dict[str, Any]:
    value = rule.value(counts)
    return {
        "start": local(cell.start),
        "end": local(cell.end),
        "label": cell.label,
        "state": state,
        "value": None if value is None else round(value, rule.digits),
        "counts": {name: _num(v) for name, v in counts.items()},
    }


def _hidden(cell: Cell, state: CellState, local: Callable[[datetime], datetime]) -> dict[str, Any]:
    return {"start": local(cell.start), "end": local(cell.end), "label": cell.label, "state": state,
            "value": None, "counts": None}  # fmt: skip


def _identity(at: datetime) -> datetime:
    return at


def publish_cell(
    cell: Cell, rule: Rule, k: int, *, local: Callable[[datetime], datetime] = _identity
) -> dict[str, Any]:
    """One cell as the API shows it: ``ok`` at or above k people, ``suppressed`` below, ``nodata`` without counts.

    Shape: ``{start, end, label, state, value, counts}`` (``local`` converts
    the times for display, e.g. into the site's zone).
    """
    if cell.counts is None:
        return _hidden(cell, "nodata", local)
    if rule.people(cell.counts) < k:
        return _hidden(cell, "suppressed", local)
    return _shown(cell, cell.counts, rule, "ok", local)


def publish(
    cells: Sequence[Cell],
    rule: Rule,
    k: int,
    *,
    coarsen: bool,
    local: Callable[[datetime], datetime] = _identity,
) -> list[dict[str, Any]]:
    """A series of cells as the API shows it, the k rule applied (module docstring).

    ``cells`` in time order, adjacent. With ``coarsen``, each run of
    consecutive below-k cells that have data is merged from its start until
    the merged counts (summed name by name) reach k people: one
    ``coarsened`` cell over the merged interval; what is left of a run
    below k stays ``suppressed`` cell by cell. A ``nodata`` cell or an ``ok``
    cell ends a run. Without ``coarsen`` (slices that are not adjacent in
    time: hours of the day, weekdays) every below-k cell is suppressed.
    """
    out: list[dict[str, Any]] = []
    run: list[Cell] = []

    def flush() -> None:
        for c in run:
            out.append(_hidden(c, "suppressed", local))
        run.clear()

    for cell in cells:
        if cell.counts is None:
            flush()
            out.append(_hidden(cell, "nodata", local))
            continue
        if rule.people(cell.counts) >= k:
            flush()
            out.append(_shown(cell, cell.counts, rule, "ok", local))
            continue
        if not coarsen:
            out.append(_hidden(cell, "suppressed", local))
            continue
        run.append(cell)
        merged = merge_counts(c.counts for c in run if c.counts is not None)
        if rule.people(merged) >= k:
            wide = Cell(run[0].start, run[-1].end, merged)
            out.append(_shown(wide, merged, rule, "coarsened", local))
            run.clear()
    flush()
    return out


def merge_counts(parts: Any) -> Counts:
    """Counts summed name by name (the counts of a figure are additive: people, person-seconds, days)."""
    total: Counts = {}
    for counts in parts:
        for name, value in counts.items():
            total[name] = total.get(name, 0.0) + value
    return total
