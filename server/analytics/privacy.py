"""The k rule: no analytics figure is published that rests on fewer than k people. One place, every endpoint.

Statistical disclosure control's threshold rule (e.g. Eurostat, *Handbook
on Statistical Disclosure Control*, 2010, §4.2.1: a cell is sensitive when
fewer than a threshold of units contribute to it). Every analytics route,
and every other route that publishes footfall counts (the zone history and
zone peaks of :mod:`server.routes.history`), turns its cells into JSON only
through :func:`publish` (a series of cells) or :func:`publish_cell` (one),
so the rule cannot be skipped by a route.

A cell is an interval (or a labelled slice of one: an hour of the day, a
weekday, a lag) with the **counts** its figure is computed from. Each
figure kind (:class:`Rule`) says how to compute its value from the counts
and how many people the value rests on. Then, with ``k`` from the site's
``analytics.k`` (default 10):

* ``ok``: rests on at least k people; value and counts shown;
* ``coarsened``: below k alone, so merged with its neighbours in time into
  one wider interval that reaches k (only for series whose counts add up,
  ``coarsen=True``; see :func:`publish`); value recomputed from the merged
  counts, the cell's ``start``/``end`` are the merged interval;
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


def publishable(counts: Mapping[str, float], rule: Rule, k: int) -> bool:
    """Whether a figure with these counts rests on at least ``k`` people (the comparison, in one place).

    For a route that must choose among cells before publishing one (the
    busiest hour of a weekday is picked among the publishable hours only, so
    the choice itself reveals nothing about hours under k).
    """
    return rule.people(counts) >= k


def round_to_base(count: int, base: int) -> int:
    """``count`` (whole people, >= 0) rounded to the nearest multiple of ``base`` (>= 1); a half rounds up.

    *Conventional rounding* in statistical disclosure control: every count
    is replaced by the nearest multiple of a fixed rounding base (Hundepool
    et al., *Statistical Disclosure Control*, Wiley 2012, the ESSnet
    Handbook on SDC: ch. 5 "Frequency tables", the section on rounding,
    5.5 in the online edition; the term and the half-up convention for a
    count ending in 5 at base 10 from the Eurostat/UNECE *Glossary of
    Statistical Disclosure Control*, 2005). Every published count is then a
    multiple of the base, so two of them differ by 0 or by at least the base.
    The live occupancy is rounded to base k (:mod:`server.stores.zones`).

    Examples with base 10: 10-14 -> 10, 15-24 -> 20. Raises ``ValueError``
    for a negative count or a base under 1 (a count under k is suppressed
    by the caller before it gets here, never rounded to 0).
    """
    if base < 1:
        raise ValueError(f"rounding base must be at least 1, got {base}")
    if count < 0:
        raise ValueError(f"a count of people cannot be negative, got {count}")
    return (count + base // 2) // base * base


def publish_cell(
    cell: Cell, rule: Rule, k: int, *, local: Callable[[datetime], datetime] = _identity
) -> dict[str, Any]:
    """One cell as the API shows it: ``ok`` at or above k people, ``suppressed`` below, ``nodata`` without counts.

    Shape: ``{start, end, label, state, value, counts}`` (``local`` converts
    the times for display, e.g. into the site's zone).
    """
    if cell.counts is None:
        return _hidden(cell, "nodata", local)
    if not publishable(cell.counts, rule, k):
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

    ``cells`` in time order, adjacent. Without ``coarsen`` (slices that are
    not adjacent in time: hours of the day, weekdays, lags) every below-k
    cell is suppressed. With ``coarsen``:

    1. each run of consecutive below-k cells that have data is merged from
       its start until the merged counts (summed name by name) reach k: one
       ``coarsened`` cell over the merged interval;
    2. a remainder of a run that never reaches k (before a ``nodata`` or an
       ``ok`` cell, or at the end) joins the nearest published cell, the
       earlier one first, over any ``nodata`` cells between them (the merged
       interval then covers them; their counts are nothing);
    3. with no published cell to join, the remainders are merged together
       (over the no-data cells between them); still under k, they stay
       ``suppressed`` cell by cell.

    So whenever anything is published, the published counts add up to the
    series' total: a window total published beside the cells cannot reveal
    a withheld remainder by subtraction (complementary disclosure).
    """
    if not coarsen:
        return [publish_cell(c, rule, k, local=local) for c in cells]
    groups: list[tuple[str, list[Cell]]] = []  # kind: ok, coarsened, short (under k), nodata
    run: list[Cell] = []

    def close_run() -> None:
        if run:
            groups.append(("short", run.copy()))
            run.clear()

    for cell in cells:
        if cell.counts is None:
            close_run()
            groups.append(("nodata", [cell]))
        elif publishable(cell.counts, rule, k):
            close_run()
            groups.append(("ok", [cell]))
        else:
            run.append(cell)
            if publishable(_merged(run), rule, k):
                groups.append(("coarsened", run.copy()))
                run.clear()
    close_run()
    published = ("ok", "coarsened")
    i = 0
    while i < len(groups):
        if groups[i][0] != "short":
            i += 1
            continue
        left = next((j for j in range(i - 1, -1, -1) if groups[j][0] in published), None)
        right = next((j for j in range(i + 1, len(groups)) if groups[j][0] in published), None)
        if left is None and right is None:
            break
        lo, hi = (left, i) if left is not None else (i, right)
        assert hi is not None
        groups[lo : hi + 1] = [("coarsened", [c for _, members in groups[lo : hi + 1] for c in members])]
        i = lo + 1
    shorts = [n for n, (kind, _) in enumerate(groups) if kind == "short"]
    if shorts:
        lo, hi = shorts[0], shorts[-1]
        together = [c for _, members in groups[lo : hi + 1] for c in members]
        if publishable(_merged(together), rule, k):
            groups[lo : hi + 1] = [("coarsened", together)]
    out: list[dict[str, Any]] = []
    for kind, members in groups:
        if kind == "nodata":
            out.append(_hidden(members[0], "nodata", local))
        elif kind == "short":
            out.extend(_hidden(c, "suppressed" if c.counts is not None else "nodata", local) for c in members)
        else:
            merged = _merged(members)
            state: CellState = "ok" if len(members) == 1 else "coarsened"
            out.append(_shown(Cell(members[0].start, members[-1].end, merged), merged, rule, state, local))
    return out


def _merged(cells: Sequence[Cell]) -> Counts:
    return merge_counts(c.counts for c in cells if c.counts is not None)


def merge_counts(parts: Any) -> Counts:
    """Counts summed name by name (the counts of a figure are additive: people, person-seconds, days)."""
    total: Counts = {}
    for counts in parts:
        for name, value in counts.items():
            total[name] = total.get(name, 0.0) + value
    return total


def withhold_parts(total: int, parts: Sequence[int], k: int) -> tuple[bool, tuple[bool, ...]]:
    """Which parts of one additive group to withhold so that none rests on fewer than ``k`` people or can be
    recovered by subtraction: ``(total withheld, per part withheld)``.

    ``total`` and ``parts`` are whole people (crossings), ``total == sum(parts)``
    (e.g. a zone history bucket's entries and its lines' entries). The rule:
    primary and secondary cell suppression (Hundepool et al., *Statistical
    Disclosure Control*, Wiley 2012, the ESSnet Handbook on SDC, ch. 5
    "Frequency tables", the sections on primary and secondary suppression):

    1. a total under k withholds the whole group, total and every part;
    2. else each part under k (0 included: it rests on no one) is withheld
       (primary suppression);
    3. if some part is withheld and the withheld parts sum to fewer than k,
       the shown parts are withheld too, the smallest first (the earlier on a
       tie), until the withheld ones together reach k (secondary
       suppression). They always can: all of them sum to the total, >= k.

    So every shown part is at least k, and the withheld parts of a shown total
    sum to 0 (none withheld) or to at least k: subtracting the shown parts
    from the total gives a sum of at least k people, never one part under k.
    One part (a single line) equals its total and is withheld with it.

    Raises ``ValueError`` for ``k`` under 1, a negative count, or parts that
    do not sum to the total.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if total < 0 or any(p < 0 for p in parts):
        raise ValueError(f"a count of people cannot be negative: {total}, {list(parts)}")
    if sum(parts) != total:
        raise ValueError(f"the parts {list(parts)} do not sum to the total {total}")
    if total < k:
        return True, (True,) * len(parts)
    withheld = [p < k for p in parts]
    hidden = sum(p for p, w in zip(parts, withheld, strict=True) if w)
    if any(withheld):
        for i in sorted((i for i, w in enumerate(withheld) if not w), key=lambda i: (parts[i], i)):
            if hidden >= k:
                break
            withheld[i] = True
            hidden += parts[i]
    return False, tuple(withheld)
