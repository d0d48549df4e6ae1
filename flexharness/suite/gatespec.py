"""Reading a suite's ``gates:`` section: bounds per axis, per-case floors, the regression tolerance.

Every gate is checked against the suite's cases here, at collection: a gate that
could never be evaluated (an axis without cases, a case that does not exist)
is an error, never a gate that passes in silence.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from flexharness.rules.slices import known_names
from flexharness.suite.schema import Reader, did_you_mean, non_negative
from flexharness.suite.spec import Case

GATE_KEYS = ("case_min", "cases", "slices", "regression")   # besides one section per axis


class GatedAxis(Protocol):
    """What gate reading needs of an axis: its key, its own statistics, and their check."""

    key: str
    gate_stats: tuple[str, ...]

    def check_gates(self, gates: Reader, cases: tuple[Case, ...]) -> None: ...


def read_gates(reader: Reader, cases: tuple[Case, ...], axes: Sequence[GatedAxis]) -> dict[str, Any]:
    """The ``gates:`` mapping: one section per axis of the suite's cases, ``case_min``, ``cases``, ``regression``."""
    reader.only((*(axis.key for axis in axes), *GATE_KEYS))
    gates: dict[str, Any] = {}
    if reader.has("regression"):
        gates["regression"] = read_tolerance(reader.child("regression"))
    for axis in axes:
        if reader.has(axis.key):
            if not any(case.axis == axis.key for case in cases):
                raise reader.error(axis.key, f"the suite has no '{axis.key}:' cases, so these gates would never be "
                                             f"evaluated; add a '{axis.key}:' section or remove 'gates.{axis.key}'")
            gates[axis.key] = _axis_gates(reader.child(axis.key), axis.gate_stats)
            _check_one_direction(reader, axis.key, cases)
            axis.check_gates(reader.child(axis.key), cases)
    case_min = reader.typed("case_min", float)
    if case_min is not None:
        gates["case_min"] = case_min
    if reader.has("cases"):
        gates["cases"] = _case_floors(reader.child("cases"), cases)
    if reader.has("slices"):
        gates["slices"] = _slice_floors(reader.child("slices"), cases)
    return gates


def read_tolerance(reader: Reader) -> dict[str, float]:
    """The suite's ``gates: {regression: {abs: 0.02}}`` (or ``rel``, and optionally ``alpha``)."""
    reader.only(("abs", "rel", "alpha"))
    kinds = [k for k in ("abs", "rel") if reader.has(k)]
    if len(kinds) > 1:
        raise reader.error(None, "give either 'abs' or 'rel', not both")
    spec = {k: reader.typed(k, float, check=lambda v: None if v >= 0 else "must be 0 or more") for k in kinds}
    if reader.has("alpha"):
        spec["alpha"] = reader.typed("alpha", float, check=lambda v: None if 0 < v < 1 else "must be in (0, 1)")
    return spec


def _case_floors(reader: Reader, cases: tuple[Case, ...]) -> dict[str, float]:
    """Per-case floors, keyed as the summary table names cases: chance differs from metric to metric."""
    names = [scored for case in cases for scored in case.scored_ids]
    floors = {}
    for name in reader.data:
        if name not in names:
            raise reader.error(name, f"no such case{did_you_mean(str(name), names)}; "
                                     f"the cases of this suite are: {', '.join(names)}")
        bounds = reader.child(name)
        bounds.only(("min",))
        floors[name] = bounds.typed("min", float, required=True)
    return floors


def _slice_floors(reader: Reader, cases: tuple[Case, ...]) -> dict[str, dict[str, float]]:
    """Per case, a floor per slice: ``{tasks/sentiment: {hard: {min: 0.4}}}``. Every slice name is the suite's
    own (length bins, agreement, a column's named values or edges), so every one is checked here."""
    sliced = {scored: case for case in cases for scored in case.scored_ids}
    floors: dict[str, dict[str, float]] = {}
    for name in reader.data:
        case = sliced.get(name)
        if case is None:
            raise reader.error(name, f"no such case{did_you_mean(str(name), sliced)}; "
                                     f"the cases of this suite are: {', '.join(sliced)}")
        if case.slices is None:
            raise reader.error(name, f"'{name}' has no slices: add 'slices: {{by: ...}}' to the case or the suite")
        names = known_names(case.slices.by, case.slices.bins, case.slices.values, case.slices.edges)
        per_slice = reader.child(name)
        floors[name] = {}
        for slice_name in per_slice.data:
            if slice_name not in names:
                raise per_slice.error(slice_name, f"no slice '{slice_name}'{did_you_mean(str(slice_name), names)}"
                                                  f" when slicing by {case.slices.by}; its slices are: "
                                                  f"{', '.join(names)}")
            bounds = per_slice.child(slice_name)
            bounds.only(("min",))
            floors[name][str(slice_name)] = bounds.typed("min", float, required=True)
    return floors


def _axis_gates(reader: Reader, extra: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Bounds of P_avg and σ_P (optionally judged at a ``confidence``); ``extra`` names an axis's own
    statistics (checked by the axis's module)."""
    reader.only(("p_avg", "sigma_p", *extra))
    spec = {}
    for stat in ("p_avg", "sigma_p", *extra):
        if reader.has(stat):
            bounds = reader.child(stat)
            bounds.only(("min", "max", "confidence") if stat in ("p_avg", "sigma_p") else ("min", "max"))
            check = non_negative if stat == "sigma_p" else None
            spec[stat] = {b: bounds.typed(b, float, check=check) for b in ("min", "max") if bounds.has(b)}
            if bounds.has("confidence"):
                if not spec[stat]:
                    raise bounds.error("confidence", "a confidence needs a bound to judge: add 'min' or 'max'")
                spec[stat]["confidence"] = bounds.typed("confidence", float, check=lambda v: None if 0.5 <= v < 1
                                                        else "must be at least 0.5 and below 1, e.g. 0.95")
    return spec


def _check_one_direction(reader: Reader, axis: str, cases: tuple[Case, ...]) -> None:
    directions = {c.higher_is_better for c in cases if c.axis == axis}
    if len(directions) > 1:
        raise reader.error(axis, "this axis mixes higher-is-better and lower-is-better metrics; "
                                 "P_avg over them has no meaning: use one direction per axis")
