"""The shape of results and baseline documents: one schema that every reader checks before using one.

``flexharness report``, ``compare``, ``merge`` and ``--flex-baseline`` read JSON that anyone may have edited:
a string score, ``gates: "nope"`` or a list nested a thousand deep must be one located message
(``cases[3].score: expected a number or null, got str 'x'``), never a traceback. Pure functions of plain data.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from flexharness.errors import short_repr

MAX_DEPTH = 32   # a results document nests about 6 deep; deeper is not one (and would exhaust recursion)
Check = Callable[[Any], bool]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _seeds(value: Any) -> bool:
    return isinstance(value, dict) and all(v is None or _number(v) for v in value.values())


TEXT = (lambda v: isinstance(v, str), "a string")
FLAG = (lambda v: isinstance(v, bool), "true or false")
SCORE = (_optional(_number), "a number or null")
COUNT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer")
SEEDS = (_seeds, "a mapping of seeds to numbers or null")
OPTIONAL_TEXT = (_optional(lambda v: isinstance(v, str)), "a string or null")

CASE = {"suite": TEXT, "model": TEXT, "axis": TEXT, "name": TEXT, "higher_is_better": FLAG, "seeds": SEEDS}
CASE_OPTIONAL = {"metric": TEXT, "status": TEXT, "seed_std": SCORE, "fingerprint": OPTIONAL_TEXT,
                 "model_fingerprint": OPTIONAL_TEXT, "cached": FLAG, "id": TEXT, "score": SCORE}
AGGREGATE = {"suite": TEXT, "model": TEXT, "axis": TEXT, "n": COUNT, "p_avg": SCORE, "sigma_p": SCORE}
GATE = {"name": TEXT, "passed": FLAG, "value": SCORE, "threshold": SCORE, "message": TEXT}
SUITE = {"name": TEXT}


def problem(doc: Any, baseline: bool = False) -> str | None:
    """Where and why ``doc`` is not a results (or, with ``baseline``, baseline) document, or None."""
    if _depth(doc) > MAX_DEPTH:
        return f"nests more than {MAX_DEPTH} levels deep, which no results document does"
    if not isinstance(doc, dict):
        return f"expected a JSON object at the top, got {_kind(doc)}"
    case = CASE if baseline else {**CASE, "score": SCORE}   # a baseline needs the seeds' scores only
    for key, required, entry, optional in (("cases", True, case, CASE_OPTIONAL),
                                           ("aggregates", not baseline, AGGREGATE, {}),
                                           ("gates", False, GATE, {}), ("suites", False, SUITE, {})):
        found = _list(doc, key, required, entry, optional)
        if found:
            return found
    for key, value in doc.items():
        if key not in ("cases", "aggregates", "gates", "suites") and isinstance(value, list) and \
                not all(isinstance(item, dict) for item in value):
            return f"{key}: expected a list of objects"
    return None


def _list(doc: Mapping[str, Any], key: str, required: bool, entry: Mapping[str, tuple[Check, str]],
          optional: Mapping[str, tuple[Check, str]]) -> str | None:
    if key not in doc:
        return f"{key}: missing (write one with --flex-json)" if required else None
    items = doc[key]
    if not isinstance(items, list):
        return f"{key}: expected a list, got {_kind(items)}"
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            return f"{key}[{index}]: expected an object, got {_kind(item)}"
        for name, (check, words) in entry.items():
            if name not in item:
                return f"{key}[{index}].{name}: missing"
            if not check(item[name]):
                return f"{key}[{index}].{name}: expected {words}, got {_kind(item[name])}"
        for name, (check, words) in optional.items():
            if name in item and not check(item[name]):
                return f"{key}[{index}].{name}: expected {words}, got {_kind(item[name])}"
    return None


def _depth(value: Any) -> int:
    """How deep lists and objects nest, without recursion (a hostile document may nest thousands deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack += [(child, depth + 1) for child in (current.values() if isinstance(current, dict) else current)]
    return deepest


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return f"{type(value).__name__} {short_repr(value, 40)}"


def strict_constant(name: str) -> float:
    """``json.loads(..., parse_constant=strict_constant)``: NaN and Infinity are no JSON (we write null)."""
    raise ValueError(f"{name} is not JSON (flexharness writes a missing score as null)")
