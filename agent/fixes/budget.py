"""Fix `budget` (stage pre-flight): a net over the parameter or FLOP budget gets its largest (costliest)
layer narrowed to the width the host worked out from the pre-flight's numbers (tools/budget_fit.py `param_fit`,
`flop_fit`) — a Conv2d's out_channels or a Linear's out_features, where `__init__` writes it as a number. The layers after it no
longer match; the `shapes` fix resizes them, one pre-flight each. In a CIFAR-10 search the 1.5B model's
repairs of budget errors came back over the budget every time, even when told the width that fits.
"""
from __future__ import annotations


from nasloop.agent.fixes.ast_tools import SIZE_ARGS, constant, init_methods, layer_call, size_arg
from nasloop.agent.python_source import parse_source


def budget_fit(failure: object) -> dict | None:
    """The narrowing the host computed for a BudgetError (name, type, to), when it is one this fix can make."""
    budget = failure.get("budget") if isinstance(failure, dict) else None
    fit = budget.get("fit") if isinstance(budget, dict) else None
    if not (isinstance(fit, dict) and isinstance(fit.get("name"), str) and fit["name"].isidentifier()
            and fit.get("type") in ("Conv2d", "Linear") and type(fit.get("to")) is int and fit["to"] >= 8):
        return None
    return fit


def fit_budget(code: str, failure: dict) -> tuple[str, str]:
    """`self.<name> = nn.Conv2d(a, 512, ...)` -> `nn.Conv2d(a, 152, ...)`: only a statement directly in
    `__init__`, on one line, whose output size is arithmetic on numbers larger than the fit. Returns
    (code, what was changed)."""
    fit = budget_fit(failure)
    if fit is None:
        return code, ""
    name, kind, to = fit["name"], fit["type"], fit["to"]
    keyword = SIZE_ARGS[kind][1][1]
    try:
        tree = parse_source(code)
    except SyntaxError:
        return code, ""
    for init in init_methods(tree):
        found = layer_call(init, name, kind)
        if found is None:
            continue
        arg = size_arg(found[1], keyword, 1)
        now = constant(arg) if arg is not None else None
        if now is None or now <= to or arg is None or arg.lineno != arg.end_lineno:
            return code, ""
        lines = code.splitlines(keepends=True)
        line = lines[arg.lineno - 1]
        b = len(line.encode()[:arg.col_offset].decode())  # ast offsets are in bytes
        e = len(line.encode()[:arg.end_col_offset].decode())
        lines[arg.lineno - 1] = line[:b] + str(to) + line[e:]
        return "".join(lines), (f"self.{name} = nn.{kind}(...): {keyword} {line[b:e]} -> {to} "
                                f"(to fit the budget)")
    return code, ""
