"""The fix passes, in the order they run, behind one interface.

A fix is a deterministic repair of a slip small models make (one module each in this package). It has a
name (what `--no-fix NAME` switches off and what results.jsonl counts), a stage and a function from text
to (code, note); an empty note means "nothing to do". Stages:

- `reply`:     the Generator's whole reply, when no code block could be taken from it;
- `source`:    the candidate's code, before the sandbox sees it (in registry order, each on the last's output);
- `preflight`: the candidate's code and the pre-flight's structured failure record; the candidate is
               pre-flighted again after each edit (agent/loop/fidelity.py runs that loop);
- `change`:    the base net and the Improver's typed change: where the change is mechanical, the candidate,
               made by the loop instead of a Generator call (agent/loop/nodes.py `generate`).

Every edit is recorded as {name, stage, note}, so a fix is never hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Literal

from nasloop.agent.fixes.brackets import autofix
from nasloop.agent.fixes.budget import budget_fit, fit_budget
from nasloop.agent.fixes.changes import apply_change
from nasloop.agent.fixes.definitions import restore_definitions
from nasloop.agent.fixes.example_usage import drop_example_usage
from nasloop.agent.fixes.float_sizes import fix_float_sizes
from nasloop.agent.fixes.forward import restore_forward
from nasloop.agent.fixes.imports import add_missing_imports
from nasloop.agent.fixes.inplace import fix_inplace
from nasloop.agent.fixes.layer_slips import fix_layer_slips
from nasloop.agent.fixes.removed_layers import keep_removed_layers
from nasloop.agent.fixes.rename_net import adopt_net
from nasloop.agent.fixes.returns import add_missing_return
from nasloop.agent.fixes.shapes import failing_layer, fix_shapes

Stage = Literal["reply", "source", "preflight", "change"]


@dataclass(frozen=True)
class Context:
    """What a fix may look at besides the text: the net the Generator was asked to change, (stage
    pre-flight) the structured failure the pre-flight reported, and (stage change) the Improver's typed change
    and the base net's traced layer table."""

    base_code: str = ""
    failure: dict = field(default_factory=dict)
    change: dict = field(default_factory=dict)
    layers: str = ""
    net_input: tuple[int, ...] | None = None  # (channels, height, width) of one input: the table's first row reads it


@dataclass(frozen=True)
class Edit:
    """One applied fix: the code after it and what it changed."""

    name: str
    stage: Stage
    code: str
    note: str

    def to_dict(self) -> dict:
        return {"name": self.name, "stage": self.stage, "note": self.note}


@dataclass(frozen=True)
class Fix:
    """A fix pass: `run(text, context)` returns (code, note); an empty note or no code means no edit."""

    name: str
    stage: Stage
    run: Callable[[str, Context], tuple[str | None, str]]
    summary: str

    def apply(self, text: str, ctx: Context) -> Edit | None:
        code, note = self.run(text, ctx)
        return Edit(self.name, self.stage, code, note) if code and note else None


FIXES: tuple[Fix, ...] = (
    Fix("rename-net", "reply", lambda reply, ctx: adopt_net(reply),
        "the only nn.Module of a reply, under another name, becomes Net"),
    Fix("brackets", "source", lambda code, ctx: autofix(code), "surplus closing brackets are removed"),
    Fix("forward", "source", lambda code, ctx: restore_forward(code, ctx.base_code),
        "forward lines the model wrote into the end of __init__ become the forward method (or go, unread, "
        "where the net has one)"),
    Fix("definitions", "source", lambda code, ctx: restore_definitions(code, ctx.base_code),
        "layer definitions a rewrite dropped are restored from the base net"),
    Fix("layer-slips", "source", lambda code, ctx: fix_layer_slips(code),
        "a layer used where a tensor belongs in forward is applied"),
    Fix("removed-layers", "source", lambda code, ctx: keep_removed_layers(code),
        "a layer set to None that forward still calls becomes nn.Identity()"),
    Fix("return", "source", lambda code, ctx: add_missing_return(code),
        "a forward that assigns its output and never returns it returns it"),
    Fix("inplace", "source", lambda code, ctx: fix_inplace(code),
        "an augmented assignment in forward (x += ...) is made out of place"),
    Fix("float-sizes", "source", lambda code, ctx: fix_float_sizes(code),
        "a fractional layer size becomes an integer"),
    Fix("example-usage", "source", lambda code, ctx: drop_example_usage(code),
        "module-level code that runs on import, or names `self` outside a method, is removed"),
    Fix("imports", "source", lambda code, ctx: add_missing_imports(code),
        "torch, nn, F or math used but never imported gets its import"),
    Fix("shapes", "preflight", lambda code, ctx: fix_shapes(code, ctx.failure),
        "the size argument of the layer the pre-flight caught is set to the input it gets"),
    Fix("budget", "preflight", lambda code, ctx: fit_budget(code, ctx.failure),
        "a net over the parameter or FLOP budget gets its costliest layer narrowed to a width that fits"),
    Fix("change", "change", lambda code, ctx: apply_change(code, ctx.change, ctx.layers, ctx.net_input),
        "a failed candidate's residual connection, added or removed normalisation or deepened conv is rebuilt by "
        "the loop from the base net and its traced shapes, instead of a repair call"),
)
NAMES: tuple[str, ...] = tuple(f.name for f in FIXES)


def fix_target(failure: dict | None) -> str | None:
    """The layer a pre-flight fix would edit: the one the shape trace caught failing, or the one the host's
    budget fit narrows (the fix loop stops when the same layer comes back)."""
    found = failing_layer(failure or {})
    if found is not None:
        return found[0]
    fit = budget_fit(failure)
    return fit["name"] if fit else None


def apply_stage(stage: Stage, text: str, ctx: Context, enabled: Collection[str]) -> tuple[str | None, list[Edit]]:
    """Run the enabled fixes of `stage` in registry order, each on the previous one's output.
    Returns (the final code, or None when the stage produced no code from a reply; the edits made)."""
    edits: list[Edit] = []
    code: str | None = None if stage == "reply" else text
    for fix in FIXES:
        if fix.stage != stage or fix.name not in enabled:
            continue
        edit = fix.apply(text if code is None else code, ctx)
        if edit is not None:
            edits.append(edit)
            code = edit.code
            if stage != "source":  # a reply yields one code block; a pre-flight fix is checked before the next
                break
    return code, edits
