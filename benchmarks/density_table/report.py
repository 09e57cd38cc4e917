"""The density table's JSON cache (read-modify-write under a file lock), the verdict of each goal, and the
markdown table printed from the cache."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from density_table.base import DATASETS, DIGITS_GOAL, FLOW_GOALS, FLOW_MODELS, OURS, TOYS


@contextlib.contextmanager
def locked(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON cache, read and written back under an exclusive lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = json.loads(path.read_text()) if path.exists() else {"rows": {}}
        yield table
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, path)


def summarize(rows: dict[str, Any]) -> dict[str, Any]:
    """Per dataset: best of ours, best peer, and the verdict of each goal."""
    out: dict[str, Any] = {}
    for name in DATASETS:
        mine = {k.split("/")[1]: r for k, r in rows.items() if k.startswith(name + "/")}
        scored = {m: r for m, r in mine.items() if r.get("value") is not None}
        ours = {m: r["value"] for m, r in scored.items() if m in OURS}
        peers = {m: r["value"] for m, r in scored.items() if m not in OURS}
        if not ours:
            continue
        best_ours = min(ours, key=ours.get)
        entry: dict[str, Any] = {"best_ours": best_ours, "best_ours_value": ours[best_ours]}
        if peers:
            best_peer = min(peers, key=peers.get)
            # a win must exceed the noise of the two estimates: sqrt(se_ours^2 + se_peer^2) (unpaired,
            # so conservative); a smaller difference is a tie
            margin = math.hypot(scored[best_ours].get("se") or 0.0, scored[best_peer].get("se") or 0.0)
            entry.update(best_peer=best_peer, best_peer_value=peers[best_peer], margin=margin,
                         ours_beats_every_peer=ours[best_ours] < peers[best_peer] - margin,
                         tie=abs(ours[best_ours] - peers[best_peer]) <= margin)
        flows = {m: v for m, v in ours.items() if m in FLOW_MODELS}
        if name in FLOW_GOALS and flows:
            best_flow = min(flows, key=flows.get)
            entry.update(flow_goal=FLOW_GOALS[name], flow_goal_met=flows[best_flow] <= FLOW_GOALS[name],
                         best_flow=best_flow, flow_values=flows)
        if name == "digits":
            entry.update(goal=DIGITS_GOAL, goal_met=ours[best_ours] <= DIGITS_GOAL)
        out[name] = entry
    return out


def markdown(table: dict[str, Any]) -> str:
    rows, lines = table["rows"], []
    for name in DATASETS:
        mine = [(k.split("/")[1], r) for k, r in rows.items() if k.startswith(name + "/")]
        if not mine:
            continue
        toy = name in TOYS
        unit = "KL(p ‖ q), nats" if toy else "test bits/dim"
        lines += [f"\n### {name}\n", f"| model | ours? | {unit} ± s.e. | estimator | fit s | sample 10k s |",
                  "|---|---|---|---|---|---|"]
        mine.sort(key=lambda mr: (mr[1].get("value") is None, mr[1].get("value") or 0.0))
        for m, r in mine:
            value = "samples only" if r.get("value") is None else f"{r['value']:.4f} ± {r['se']:.4f}"
            if r.get("mmd2_to_test") is not None:
                value += f" (MMD² to test {r['mmd2_to_test']:.2g})"
            estimator = r["estimator"]
            if not toy and r.get("discrete") is False and estimator == "exact":
                estimator = "exact density (dequantisation bound on bits/dim)"
            lines.append(f"| {r['label']} | {'yes' if m in OURS else 'peer'} | {value} | {estimator} "
                         f"| {r['fit_s']:.1f} | {r['sample_s']:.2f} |")
    summary = summarize(rows)
    if summary:
        lines += ["\n### Goals\n", "| dataset | goal | figure | verdict |", "|---|---|---|---|"]
        for name, s in summary.items():
            if "flow_goal" in s:
                figures = "; ".join(f"{m} {v:.4f}" for m, v in s["flow_values"].items())
                lines.append(f"| {name} | flow KL <= {s['flow_goal']} | {figures} "
                             f"| {'met' if s['flow_goal_met'] else '**missed**'} ({s['best_flow']}) |")
            if "goal" in s:
                lines.append(f"| {name} | best of ours <= {s['goal']} bits/dim | {s['best_ours_value']:.4f} ({s['best_ours']}) "
                             f"| {'met' if s['goal_met'] else '**missed**'} |")
            if "best_peer" in s:
                verdict = "met" if s["ours_beats_every_peer"] else ("**tie** (within" if s.get("tie") else "**missed** (")
                if not s["ours_beats_every_peer"]:
                    verdict += f" {s['margin']:.4f}, one combined standard error)"
                lines.append(f"| {name} | best of ours beats every peer by more than a standard error | {s['best_ours']} "
                             f"{s['best_ours_value']:.4f} vs {s['best_peer']} {s['best_peer_value']:.4f} | {verdict} |")
    return "\n".join(lines)
