"""Fix `rename-net` (stage reply): the only nn.Module of a reply, under another name, becomes `Net`.
"""
from __future__ import annotations

import re

from nasloop.agent.llm.parsing import CODE_FENCE

_MODULE_CLASS = re.compile(r"^class ([A-Za-z_]\w*)\((?:nn|torch\.nn)\.Module\):", re.MULTILINE)


def adopt_net(text: str) -> tuple[str | None, str]:
    """Deterministic repair of a renamed network: a reply whose code block defines exactly one
    `nn.Module` subclass, under another name (`class ModifiedNet(nn.Module)`), gets it renamed to `Net`.
    Returns (code, what was changed), or (None, "") when there is no such block."""
    for lang, body in CODE_FENCE.findall(text or ""):
        names = _MODULE_CLASS.findall(body)
        if lang.lower() in ("", "python", "py", "python3") and len(names) == 1 and names[0] != "Net" \
                and not re.search(r"\bNet\b", body):
            return re.sub(rf"\b{names[0]}\b", "Net", body).strip() + "\n", f"class {names[0]} renamed to Net"
    return None, ""
