"""Joining results files (shards, or runs split by seed) into one run, with its verdict recomputed.

The caller recomputes aggregates and gates with ``flexharness.results.verdict``, the
same function a pytest run uses, from the gate specs and the baseline that
every results file carries, so N merged shards decide exactly what one
unsharded run decides.
"""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Sequence

from flexharness.errors import FlexError
from flexharness.names import model_label
from flexharness.results.io import RESULTS_VERSION
from flexharness.rules import aggregate as agg

_STATUS_ORDER = ("passed", "skipped", "not run", "failed", "error")


class MergeError(FlexError):
    """The files cannot be joined into one run (missing shard, different suites, conflicting seeds)."""


def merge(docs: Sequence[tuple[str, Mapping[str, Any]]], joined: Sequence[str] = ()) -> dict[str, Any]:
    """One results document from ``(name, document)`` pairs, its aggregates and gates left to recompute.

    ``joined`` names the axes' own top-level lists, concatenated across the files.
    """
    if not docs:
        raise MergeError("nothing to merge")
    for name, doc in docs:
        if not isinstance(doc, dict) or doc.get("version") != RESULTS_VERSION or "cases" not in doc:
            raise MergeError(f"{name}: not a flexharness results file of version {RESULTS_VERSION}")
    _check_shards(docs)
    if not any(doc["cases"] for _, doc in docs):
        raise MergeError("the files hold no cases: did the runs collect the suite files?")
    suites = _merge_suites(docs)
    baselines = {repr(doc.get("baseline")) for _, doc in docs}
    if len(baselines) > 1:
        raise MergeError("the files were gated against different baselines (--flex-baseline); rerun with one")
    first = docs[0][1]
    environment = dict(first.get("environment") or {})
    environment["devices"] = sorted({d for _, doc in docs for d in (doc.get("environment") or {}).get("devices", [])})
    merged = {
        "version": RESULTS_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "cases": _merge_cases(docs, suites),
        **{key: [entry for _, doc in docs for entry in doc.get(key, [])] for key in joined},
        "aggregates": [], "gates": [],
        "suites": suites, "baseline": first.get("baseline"), "shard": None,
        "merged_from": [name for name, _ in docs],
    }
    return merged


def _check_shards(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    shards = [(name, doc.get("shard")) for name, doc in docs]
    if not any(shard for _, shard in shards):
        _check_same_suites(docs)
        return
    plain = [name for name, shard in shards if not shard]
    if plain:
        raise MergeError(f"sharded and unsharded results cannot be mixed: {', '.join(plain)} ran without --flex-shard")
    counts = {shard["count"] for _, shard in shards}
    if len(counts) > 1:
        raise MergeError(f"the shards were cut differently (N = {', '.join(map(str, sorted(counts)))})")
    count = counts.pop()
    seen: dict[int, str] = {}
    for name, shard in shards:
        if shard["index"] in seen:
            raise MergeError(f"shard {shard['index']}/{count} given twice: {seen[shard['index']]} and {name}")
        seen[shard["index"]] = name
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        raise MergeError(f"missing shard{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(f'{k}/{count}' for k in missing)}: the merged run would lack its cases")
    _check_items(docs)


def _check_items(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """The shards cut one plan (the same items: suites, models, seeds, -k/-m) and ran each item exactly once."""
    plans = [(name, _plan(doc["shard"].get("planned"))) for name, doc in docs]
    unknown = [name for name, plan in plans if plan is None]
    if unknown:
        raise MergeError(f"{', '.join(unknown)} does not say which run it is a shard of (written by an older "
                         "flexharness?): rerun the shards with this version")
    first_name, whole = plans[0]
    for name, plan in plans[1:]:
        if plan != whole:
            ids, other = {e[0] for e in whole}, {e[0] for e in plan}
            extra = sorted(ids ^ other) or sorted(e[0] for e in whole ^ plan)
            what = "items planned" if ids != other else "items planned, run with other models or suite versions"
            raise MergeError(f"{first_name} and {name} are shards of different runs ({len(whole)} and {len(plan)} "
                             f"{what}; e.g. {_some(extra)}): every shard must run the same suite files with the "
                             "same --model, seeds and -k/-m, only --flex-shard differs")
    first = {e[0] for e in whole}
    ran: dict[str, str] = {}
    for name, doc in docs:
        for suite in doc.get("suites") or []:
            for item in suite.get("items", []):
                if item in ran:
                    raise MergeError(f"item {item} ran in both {ran[item]} and {name}: the shards overlap")
                ran[item] = name
    strange, missing = sorted(set(ran) - set(first)), sorted(set(first) - set(ran))
    if strange:
        raise MergeError(f"{ran[strange[0]]} ran {_some(strange)}, which its run did not plan")
    if missing:
        raise MergeError(f"{len(missing)} planned item{'s' if len(missing) > 1 else ''} ran in no shard "
                         f"({_some(missing)}): the merged run would lack them")


def _plan(planned: Any) -> set[tuple[str, str, str]] | None:
    """A shard's plan as (node id, model, case fingerprint) triples; None when it has none of that form."""
    if not isinstance(planned, list) or not all(isinstance(e, list) and len(e) == 3 and all(isinstance(p, str) for p in e)
                                                for e in planned):
        return None
    return {(e[0], e[1], e[2]) for e in planned}


def _check_same_suites(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Runs split by seed each hold every suite of the run: one that holds other suites is another run."""
    names = [(name, sorted(s.get("name") for s in doc.get("suites") or [])) for name, doc in docs]
    for name, suites in names[1:]:
        if suites != names[0][1]:
            raise MergeError(f"{names[0][0]} and {name} ran different suites ({', '.join(names[0][1]) or 'none'} "
                             f"and {', '.join(suites) or 'none'}): only parts of one run can be merged")


def _some(values: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(values) - shown} more" if len(values) > shown else ""
    return ", ".join(values[:shown]) + more


def _merge_suites(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    suites: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, doc in docs:
        for suite in doc.get("suites") or []:
            if suite["name"] not in suites:
                suites[suite["name"]] = (name, dict(suite))
                continue
            other, known = suites[suite["name"]]
            for key in ("fingerprint", "gates", "cases", "models"):
                if known.get(key) != suite.get(key):
                    raise MergeError(f"suite '{suite['name']}' differs between {other} and {name} ({key}): "
                                     "every shard must run the same suite files with the same options")
            known["items"] = sorted(set(known.get("items", [])) | set(suite.get("items", [])))
    return sorted((s for _, s in suites.values()), key=lambda s: s.get("file", ""))


def _merge_cases(docs: Sequence[tuple[str, Mapping[str, Any]]], suites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    joined: dict[tuple, tuple[str, dict[str, Any]]] = {}
    for name, doc in docs:
        for case in doc["cases"]:
            key = (case["suite"], case["model"], case["axis"], case["name"])
            if key in joined:
                joined[key] = (name, _join_case(joined[key], (name, case)))
            else:
                joined[key] = (name, dict(case))
    order = {s["name"]: (i, s.get("models", []), s.get("cases", [])) for i, s in enumerate(suites)}

    def position(key: tuple) -> tuple:
        suite, model, axis, case = key
        index, models, cases = order.get(suite, (len(order), [], []))
        return (index, suite, _index(models, model), model, _index(cases, f"{axis}/{case}"))

    return [joined[key][1] for key in sorted(joined, key=position)]


def _index(values: list[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


def _join_case(first: tuple[str, dict[str, Any]], second: tuple[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The same case from two files with disjoint seeds (runs split by --flex-seeds)."""
    (name_a, a), (name_b, b) = first, second
    overlap = set(a["seeds"]) & set(b["seeds"])
    if overlap:
        raise MergeError(f"case {a['id']} ({model_label(a['model'])}) has seed {sorted(overlap)[0]} in both "
                         f"{name_a} and {name_b}: the files overlap")
    weights = [sum(v is not None for v in c["seeds"].values()) for c in (a, b)]
    total = sum(weights) or 1
    score = agg.CaseScore(a["suite"], a["model"], a["axis"], a["name"], a["higher_is_better"],
                          {**a["seeds"], **b["seeds"]})
    metrics = {m: (a["metrics"][m] * weights[0] + b["metrics"][m] * weights[1]) / total
               for m in a.get("metrics", {}) if m in b.get("metrics", {})}
    return {**a, "seeds": dict(score.seed_scores), "score": score.score, "seed_std": score.seed_std,
            "status": max(a["status"], b["status"], key=_status_rank), "cached": a["cached"] and b["cached"],
            "cached_items": a.get("cached_items", 0) + b.get("cached_items", 0),
            "items": {**a.get("items", {}), **b.get("items", {})}, "metrics": metrics,
            "per_seed": {**a.get("per_seed", {}), **b.get("per_seed", {})}}


def _status_rank(status: str) -> int:
    return _STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER)


def junit_xml(doc: Mapping[str, Any], path: str | Path) -> None:
    """Cases and gates of a merged run as JUnit testcases: the CI verdict of a sharded run."""
    files = {s["name"]: s.get("file", s["name"]) for s in doc.get("suites") or []}
    several = {s["name"] for s in doc.get("suites") or [] if len(s.get("models", [])) > 1}
    root = ET.Element("testsuite", name="flexharness")
    for c in doc["cases"]:
        suffix = f"[{model_label(c['model'])}]" if c["suite"] in several else ""
        case = ET.SubElement(root, "testcase", classname=files.get(c["suite"], c["suite"]),
                             name=f"{c['axis']}/{c['name']}{suffix}")
        if c["status"] != "passed":
            ET.SubElement(case, "failure", message=f"status {c['status']}")
    for g in doc["gates"]:
        suffix = f"[{model_label(g['model'])}]" if g["suite"] in several else ""
        case = ET.SubElement(root, "testcase", classname=files.get(g["suite"], g["suite"]),
                             name=f"gates/{g['name']}{suffix}")
        if not g["passed"]:
            ET.SubElement(case, "failure", message=g["message"])
    root.set("tests", str(len(root)))
    root.set("failures", str(sum(1 for tc in root if tc.find("failure") is not None)))
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
