"""A BudgetError's numbers as data, and what would bring the net under the budget.

The harness reports what it counted (parameters, FLOPs per image) and the costliest layers; the host
works out the width the largest one must shrink to (`fit`), which the repair prompt states in words and
the `budget` fix (agent/fixes/budget.py) applies.
"""
from __future__ import annotations

from nasloop.tools.text import txt


def budget_record(res: dict) -> dict | None:
    """A BudgetError's numbers as data (reported by the harness; kept only as bounded ints and short
    names): what was counted, the budget, and the layers that cost the most, for a repair to act on."""
    out: dict = {k: int(res[k]) for k in ("flops", "max_flops") if type(res.get(k)) is int}
    if type(res.get("max_params")) is int:
        out["max_params"] = int(res["max_params"])
    found = res.get("largest")
    if isinstance(found, list):
        out["largest"] = [{"name": txt(lay.get("name"))[:60], "type": txt(lay.get("type"))[:30],
                           **{k: int(lay[k]) for k in ("params", "flops", "width") if type(lay.get(k)) is int}}
                          for lay in found[:3] if isinstance(lay, dict)]
    return out or None



def param_fit(budget: dict, params: object) -> dict | None:
    """What would bring a net over the parameter budget under it, as data: its largest layer narrowed to
    `to` (a Conv2d's output channels, a Linear's output features), or `pool` for a Linear that costs most
    through its inputs (a flattened map). The estimate counts the layer alone (its BatchNorm and the next
    layer's inputs shrink too), less 10 %, in multiples of 8: the cut is enough, never too little. The
    numbers are the candidate's own report: the fit only advises its repair and the `budget` fix, whose
    result is pre-flighted again."""
    if type(params) is not int or not budget.get("max_params"):
        return None
    excess = params - budget["max_params"]
    layer = (budget.get("largest") or [{}])[0]
    width, cost = layer.get("width"), layer.get("params")
    if excess <= 0 or not width or not cost:
        return None
    fit = {"name": layer["name"][:30], "type": layer.get("type", ""), "width": width}
    if layer.get("type") == "Linear" and cost // width >= 4 * width:
        return {**fit, "pool": True}
    return {**fit, "to": int(width * (1 - excess / cost) * 0.9) // 8 * 8}



def flop_fit(budget: dict, layers: object) -> dict | None:
    """The same for a net over the FLOP budget whose costliest layer is a Conv2d: its FLOPs grow with its
    output channels, which the pre-flight's layer list reports (seed 44: a fallback widening conv1 left
    conv2 at 943 MFLOPs of a 339 MFLOP budget, and the repair did not shrink it)."""
    flops, cap = budget.get("flops"), budget.get("max_flops")
    top = (budget.get("largest") or [{}])[0]
    cost = top.get("flops")
    if not (flops and cap and cost and flops > cap and isinstance(layers, list)):
        return None
    layer = next((lay for lay in layers if isinstance(lay, dict) and lay.get("name") == top.get("name")), {})
    out = layer.get("out")
    if layer.get("type") != "Conv2d" or not isinstance(out, list) or not out or type(out[0]) is not int or out[0] < 1:
        return None
    width = out[0]
    return {"name": top["name"][:30], "type": "Conv2d", "width": width,
            "to": int(width * (1 - (flops - cap) / cost) * 0.9) // 8 * 8}



def fit_text(fit: dict | None) -> str:
    """The fit in words, after the diagnosis. Told only 'use fewer or narrower layers', the 1.5B model's
    repairs came back over the budget every time (seed 44, seven iterations): a number is a change it can make."""
    if not fit:
        return ""
    name, width = fit["name"], fit["width"]
    if fit.get("pool"):
        return f" — {name} costs most through its inputs: average-pool the feature map to 1x1 before it"
    if fit["to"] < 8:
        return f" — narrowing {name} alone cannot fit the budget: halve the channels of every large layer"
    units = "output features" if fit["type"] == "Linear" else "output channels"
    return f" — {name} has {width} {units}: give it at most {fit['to']}"
