"""The rollouts page: each rollout's stages with their device counts, each gate's value against
its threshold (the coordinator's last reading, and now while a stage soaks), the halt reason,
and the pause, resume and abort buttons (POST with a CSRF token; abort asks to confirm)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from protocol import PPM_ALL, Selector

from .access import CSRF_FIELD
from .gates import GateRow, gate_rows
from .layout import PageContext, clock, table
from .markup import Html, el, join

#: which buttons a rollout in each state has
ACTIONS = {"running": ("pause", "abort"), "paused": ("resume", "abort")}
DONE = {"pause": "paused", "resume": "resumed", "abort": "aborted"}


def live(ctx: PageContext, notice: str | None = None) -> Html:
    data = ctx.snapshot.fleet
    if data is None:
        return el("p", "No data read from the database yet.", class_="empty")
    parts = [el("p", notice, class_="notice", role="status")] if notice else []
    if not data.rollouts:
        parts.append(
            el("p", f"No rollout in fleet {ctx.fleet} ('modelcast rollout start').", class_="empty")
        )
    for report in sorted(data.rollouts, key=lambda r: -r["created"]):
        parts.append(_rollout(ctx, report))
    return join(parts)


def _rollout(ctx: PageContext, r: Mapping[str, Any]) -> Html:
    base = f"{r['model']}@{r['base']}" if r["base"] is not None else "nothing"
    who = Selector.from_dict(r["select"], "rollout").describe()
    head = el(
        "h2",
        r["rollout"],
        " ",
        el("span", r["state"].upper(), class_=f"badge rs-{r['state']}"),
        " ",
        el(
            "span",
            f"stage {r['stage']} of {len(r['stages'])}, "
            f"{r['ppm'] / PPM_ALL:.1%} of the selected devices",
            class_="what",
        ),
    )
    facts = el(
        "p",
        f"to {who}; replaces {base}; soak {r['soak']:g} s; started {clock(r['created'])}, "
        f"last change {clock(r['updated'])}",
        class_="facts",
    )
    reason = (
        el("p", el("strong", "Reason: "), r["reason"], class_="reason") if r["reason"] else None
    )
    return el(
        "section",
        head,
        facts,
        reason,
        _buttons(ctx, r),
        el("h3", "Stages"),
        _stages(r),
        el("h3", "Gates"),
        _gates(r),
        class_="rollout",
        id=f"rollout-{r['model']}-{r['version']}",
    )


def _buttons(ctx: PageContext, r: Mapping[str, Any]) -> Html | None:
    actions = ACTIONS.get(r["state"])
    if not actions:
        return None
    return el(
        "div",
        [action_form(ctx, r["rollout"], action) for action in actions],
        class_="actions",
    )


def action_form(ctx: PageContext, rollout: str, action: str, *, confirm: bool = False) -> Html:
    label = "Yes, abort it" if confirm else action.capitalize()
    return el(
        "form",
        el("input", type="hidden", name=CSRF_FIELD, value=ctx.csrf),
        el("input", type="hidden", name="confirm", value="yes") if confirm else None,
        el("button", label, type="submit", class_=f"act-{action}", name="action", value=action),
        method="post",
        action=f"/rollouts/{rollout}/{action}",
    )


def stage_counts(r: Mapping[str, Any]) -> list[Counter[str]]:
    """Per stage (1-based index - 1), its devices by state; plus, last, those in no stage."""
    counts = [Counter[str]() for _ in r["stages"]]
    outside: Counter[str] = Counter()
    for d in r["devices"].values():
        if d["stage"] is None:
            outside[d["state"]] += 1
        else:
            counts[d["stage"] - 1][d["state"]] += 1
    return [*counts, outside]


def _stages(r: Mapping[str, Any]) -> Html:
    per_stage = stage_counts(r)
    rows: list[list[Html | str]] = []
    for i, percent in enumerate(r["stages"]):
        entered = i < len(r["stage_ppms"])
        if r["state"] == "completed" or i + 1 < r["stage"]:
            where = "passed"
        elif i + 1 == r["stage"]:
            where = "soaking" if r.get("soak_started") else "current"
            where = r["state"] if r["state"] in ("halted", "aborted", "paused") else where
        else:
            where = "later"
        share = f"{r['stage_ppms'][i] / PPM_ALL:.2%}" if entered else "-"
        rows.append([str(i + 1), f"{percent:g}%", share, where, _counts(per_stage[i])])
    rows.append(["-", "", "", "not in a stage", _counts(per_stage[-1])])
    return table(["stage", "target", "admitted", "status", "devices"], rows, class_="stages")


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


def _gates(r: Mapping[str, Any]) -> Html:
    last = gate_rows(r["gates"], r.get("last_gates"))
    live = gate_rows(r["gates"], r.get("live_gates")) if r.get("live_gates") else None
    rows: list[list[Html | str]] = []
    for i, row in enumerate(last):
        cells: list[Html | str] = [row.gate, row.threshold, _verdict(row)]
        if live is not None:
            cells.append(_verdict(live[i]))
        rows.append(cells)
    stage = (r.get("last_gates") or {}).get("stage")
    head = ["gate", "threshold", f"last reading (stage {stage})" if stage else "last reading"]
    if live is not None:
        head.append("now (since the soak began)")
    return table(head, rows, class_="gates")


def _verdict(row: GateRow) -> Html:
    return el(
        "span",
        row.value,
        " ",
        el("span", row.verdict, class_=f"verdict v-{row.verdict.replace(' ', '-')}"),
    )


def confirm_abort(ctx: PageContext, r: Mapping[str, Any]) -> Html:
    """The question an abort asks before it is done."""
    base = f"{r['model']}@{r['base']}" if r["base"] is not None else None
    consequence = (
        f"Every device that took {r['rollout']} goes back to {base}, and the others stay there."
        if base
        else f"There is no base version: devices keep what they run, and {r['rollout']} is no "
        "longer rolled out."
    )
    return el(
        "section",
        el("p", f"Abort the rollout of {r['rollout']} (now {r['state']}, stage {r['stage']})?"),
        el("p", consequence),
        el(
            "div",
            action_form(ctx, r["rollout"], "abort", confirm=True),
            el("a", "Cancel", href="/rollouts", class_="cancel"),
            class_="actions",
        ),
        class_="confirm",
    )
