"""`nasloop report RUN_DIR`: a self-contained report.html plus PNGs, from the run's files only.

Plots: accuracy (or, for a proxy-only search, the proxy score) per iteration with the best-so-far line;
the proxy score vs the trained accuracy for runs that scored candidates (with Spearman rho); outcome classes over time; accuracy vs
parameters and vs FLOPs with the Pareto front marked; LLM vs training time per iteration. A top-10 table
shows each net's code. The PNGs are written next to the HTML and embedded in it (data URIs), so the page
can be mailed or archived on its own.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from nasloop.agent.loop import record  # noqa: E402
from nasloop.agent.runs.replay import parent_diff  # noqa: E402
from nasloop.agent.runs.store import RunStore  # noqa: E402
from nasloop.tools.outcome import KINDS  # noqa: E402
from nasloop.tools.text import human  # noqa: E402

COLORS = {"ok": "#2a9d55", "syntax_error": "#9b59b6", "invalid_code": "#8e44ad", "interface_error": "#e67e22",
          "shape_error": "#e74c3c", "runtime_error": "#c0392b", "host_oom": "#34495e", "gpu_oom": "#2c3e50",
          "timeout": "#f1c40f", "diverged": "#16a085", "sandbox_error": "#7f8c8d"}


def pareto(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Points (cost, accuracy, iteration) not beaten by a cheaper-or-equal point with higher accuracy."""
    front, best = [], -1.0
    for cost, acc, it in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc, it))
            best = acc
    return front


def _fig_accuracy(results: list[dict], path: Path, metric: str = "accuracy") -> None:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ok = [(r["iteration"], record.fitness(r)) for r in results if record.fitness(r) is not None]
    bad = [r["iteration"] for r in results if r.get("outcome") != "ok"]
    if ok:
        ax.scatter([i for i, _ in ok], [v for _, v in ok], s=18, color=COLORS["ok"], label="valid candidate", zorder=3)
    line = [(r["iteration"], best if best is not None else float("nan")) for r, best in record.best_so_far(results)]
    if line:
        ax.step(*zip(*line, strict=False), where="post", color="#1d3557", label="best so far")
    floor = 0.0 if metric == "accuracy" or not ok else min(v for _, v in ok)
    if bad:
        ax.scatter(bad, [floor] * len(bad), marker="x", s=14, color="#c0392b", label=f"failed (no {metric})")
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    if metric == "accuracy":
        ax.set_ylim(-0.03, 1.0)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=3, fontsize=8, frameon=False)  # above: hides nothing
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def proxy_pairs(results: list[dict], proxy: str, final: dict | None = None) -> list[tuple[float, float, int]]:
    """(proxy score, trained accuracy, iteration) for every net that has both numbers."""
    pairs = [(float(r["scores"][proxy]), float(r["accuracy"]), r["iteration"]) for r in results
             if r.get("outcome") == "ok" and r.get("accuracy") is not None and proxy in (r.get("scores") or {})]
    if final and final.get("accuracy") is not None and final.get("score") is not None:
        pairs.append((float(final["score"]), float(final["accuracy"]), final["iteration"]))
    return [p for p in pairs if abs(p[0]) != float("inf")]


def _fig_proxy(pairs: list[tuple[float, float, int]], proxy: str, path: Path) -> None:
    """How well the proxy ranked the nets that were also trained (ladder steps, the seed, the final net)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=22, color=COLORS["ok"], zorder=3)
    for score, acc, it in pairs:
        ax.annotate(str(it), (score, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    title = f"{len(pairs)} nets with both numbers"
    if len(pairs) >= 3:
        from scipy.stats import spearmanr

        title += f"; Spearman rho = {spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic:.2f}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"{proxy} score (before training)")
    ax.set_ylabel("accuracy after training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_outcomes(results: list[dict], path: Path) -> None:
    kinds = [k for k in KINDS if any(r.get("outcome") == k for r in results)] or ["ok"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(kinds) + 1.2))
    for y, kind in enumerate(kinds):
        its = [r["iteration"] for r in results if r.get("outcome") == kind]
        ax.scatter(its, [y] * len(its), s=22, marker="|" if len(results) > 200 else "s", color=COLORS.get(kind, "k"))
    ax.set_yticks(range(len(kinds)), [f"{k} ({sum(r.get('outcome') == k for r in results)})" for k in kinds])
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_pareto(results: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "flops", "FLOPs per image")):
        pts = [(r[key], r["accuracy"], r["iteration"]) for r in results
               if r.get("outcome") == "ok" and r.get(key) and r.get("accuracy") is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=16, color="#a8b5c4", label="candidates")
            front = pareto(pts)
            ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="#e63946", ms=5, label="Pareto front")
            for c, a, it in front:
                ax.annotate(str(it), (c, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            # short labels at 1-2-5 steps (95k, 200k, 500k), none on the minor ticks: they ran into each other
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, frameon=False)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fig_time(results: list[dict], path: Path) -> dict[str, float]:
    its = [r["iteration"] for r in results]
    imp = [((r.get("llm") or {}).get("improver_seconds") or 0.0) for r in results]
    gen = [((r.get("llm") or {}).get("generator_seconds") or 0.0) for r in results]
    ev = [r.get("seconds") or 0.0 for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(its, imp, color="#457b9d", label="Improver LLM")
    ax.bar(its, gen, bottom=imp, color="#a8dadc", label="Generator LLM")
    ax.bar(its, ev, bottom=[a + b for a, b in zip(imp, gen, strict=False)], color="#e9c46a", label="evaluation (sandbox)")
    totals = {"improver": sum(imp), "generator": sum(gen), "evaluation": sum(ev)}
    whole = sum(totals.values()) or 1.0
    ax.set_title("  ".join(f"{k}: {v / whole:.0%}" for k, v in totals.items()), fontsize=9)
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return totals


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nasloop report · {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #1d3557; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
img {{ max-width: 100%; }} pre {{ background: #f5f5f5; padding: 8px; overflow-x: auto; font-size: 12px; }}
.k {{ color: #666; }}
</style></head>
<body>
<h1>nasloop run {title}</h1>
<p><b>{status}</b></p>
<p class="k">{summary}</p>
<details><summary>Run settings</summary><table>{settings}</table></details>
{best_section}
<h2>{metric_title} per iteration</h2><img alt="{metric} per iteration" src="data:image/png;base64,{img_accuracy}">
{proxy_section}
<h2>Outcome classes over time</h2><img alt="outcomes over time" src="data:image/png;base64,{img_outcomes}">
<h2>Accuracy vs size (Pareto front)</h2><img alt="accuracy vs params and FLOPs" src="data:image/png;base64,{img_pareto}">
<h2>Where the time went</h2><img alt="LLM vs training time" src="data:image/png;base64,{img_time}">
<h2>Every iteration</h2>
<table><tr><th>iteration</th><th>outcome</th><th>accuracy</th><th>suggestion (who wrote it)</th><th>repairs, fixes</th><th>diagnosis</th><th>change</th></tr>
{iterations}
</table>
<h2>Top {top_n} nets</h2>
<table><tr><th>#</th><th>iteration</th>{rank_header}<th>accuracy</th><th>params</th><th>FLOPs (reported)</th><th>code</th></tr>
{rows}
</table>
<p class="k">✓ verified by the host: accuracy from the returned predictions scored against test labels that never
entered the sandbox; parameters and buffers counted from the returned tensors. Unmarked values (FLOPs always) are
reported from inside the sandbox, where the candidate's code runs.</p>
<script>
var nasloopErrors = 0;
window.addEventListener("error", function () {{ nasloopErrors += 1; }}, true);
window.addEventListener("load", function () {{
  document.body.setAttribute("data-errors", String(nasloopErrors));
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""


def _status(results: list[dict], cfg: dict, path: Path, running: bool = False) -> str:
    """Whether the run did all it was asked to: a run stopped at 6 of 7 must not look complete, nor a run
    still going look stopped."""
    asked = cfg.get("iterations")
    last = max((r["iteration"] for r in results), default=-1)
    if running:
        return (f"Running: {max(last, 0)} of {asked if isinstance(asked, int) else '?'} iterations after the seed "
                f"so far (this page is a snapshot: run nasloop report {path} again for more).")
    if not isinstance(asked, int) or last >= asked:
        return f"Complete: {last} of {asked if isinstance(asked, int) else '?'} iterations after the seed."
    target = cfg.get("target_accuracy")
    best = max((r.get("accuracy") or 0.0 for r in results), default=0.0)
    if isinstance(target, (int, float)) and best >= target:
        return f"Stopped at iteration {last} of {asked}: the target accuracy {target} was reached."
    return (f"Stopped early: {max(last, 0)} of {asked} iterations after the seed "
            f"(resume with: nasloop search --resume {path}).")


def _settings_rows(cfg: dict) -> str:
    return "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in sorted(cfg.items()) if v not in (None, False, [], ""))


def _changes(store: RunStore, results: list[dict], proxy: str | None) -> dict[int, str]:
    """Each candidate's diff against what it was made from (its parent, or the best net so far), as replay
    shows it."""
    best: dict | None = None
    out = {}
    for r in results:
        code = store.candidate_code(r["iteration"])
        out[r["iteration"]] = parent_diff(store, r, code, best) if r["iteration"] else ""
        if record.improves(best, r):
            best = record.best_entry(r, code, proxy)
    return out


def _change_cell(diff: str) -> str:
    if not diff:
        return "<td>-</td>"
    lines = diff.splitlines()
    plus = sum(1 for x in lines if x.startswith("+") and not x.startswith("+++"))
    minus = sum(1 for x in lines if x.startswith("-") and not x.startswith("---"))
    return (f"<td><details><summary>+{plus} −{minus}</summary><pre>{html.escape(diff)}</pre></details></td>")


def _best_section(store: RunStore, best: dict | None, metric: str) -> str:
    """The best net's code near the top of the page (and as a download carried in the page)."""
    if not best:
        return ""
    code = store.candidate_code(best["iteration"]) or "(code not recorded)"
    name = f"{best['iteration']:04d}.py"
    embedded = base64.b64encode(code.encode()).decode()
    return (f"<h2>Best net: iteration {best['iteration']}, {html.escape(metric)} {record.fitness(best) or 0:.4g}</h2>"
            f"<p><a download=\"{name}\" href=\"data:text/x-python;base64,{embedded}\">download {name}</a></p>"
            f"<details open><summary>code</summary><pre>{html.escape(code)}</pre></details>")


def _iteration_rows(results: list[dict], changes: dict[int, str] | None = None) -> list[str]:
    """One row per iteration: what was asked (and whether the model, a fallback or an escape asked it),
    what came of it, which repairs and fixes it took, and the change against its parent (collapsed)."""
    rows = []
    for r in results:
        acc = r.get("accuracy")
        fixes = record.fixes_of(r)
        extra = ", ".join(x for x in (f"{len(r['repairs'])} repair(s)" if r.get("repairs") else "",
                                      ", ".join(f.get("name", "?") for f in fixes),
                                      f"escape: {r['escape']['name']}" if isinstance(r.get("escape"), dict) else "") if x)
        sugg = r.get("suggestion") or ""
        rows.append(
            f"<tr><td>{r['iteration']}</td><td>{html.escape(str(r.get('outcome')))}</td>"
            f"<td>{'-' if acc is None else f'{acc:.4f}'}</td>"
            f"<td>{html.escape(sugg[:220])}{' …' if len(sugg) > 220 else ''} "
            f"<span class=\"k\">({html.escape(record.suggestion_source(r)) if r['iteration'] else 'seed'})</span></td>"
            f"<td>{html.escape(extra) or '-'}</td><td class=\"k\">{html.escape((r.get('diagnosis') or '')[:200])}</td>"
            f"{_change_cell((changes or {}).get(r['iteration'], ''))}</tr>")
    return rows


def _top_rows(store: RunStore, ranked: list[dict], final: dict | None, by_accuracy: bool = True) -> list[str]:
    """The top-nets table: rank, iteration, the proxy score it was ranked by (unless that is the accuracy),
    accuracy (✓ when the host measured it), size, and the code: shown in place and as a download carried
    in the page itself, so the report stays whole when it is mailed."""
    rows = []
    for i, r in enumerate(ranked, 1):
        code = store.candidate_code(r["iteration"]) or "(code not recorded)"
        acc = r.get("accuracy")
        if acc is None and final and final.get("iteration") == r["iteration"]:
            acc = final.get("accuracy")
        ok = set(r.get("verified") or ())
        mark = {k: " ✓" if k in ok else "" for k in ("accuracy", "params")}
        name = f"{r['iteration']:04d}.py"
        embedded = base64.b64encode(code.encode()).decode()
        score = "" if by_accuracy else f"<td>{record.fitness(r) or 0:.4g}</td>"
        rows.append(
            f"<tr><td>{i}</td><td>{r['iteration']}</td>{score}"
            f"<td>{'-' if acc is None else f'{acc:.4f}'}{mark['accuracy']}</td>"
            f"<td>{human(r.get('params') or 0)}{mark['params']}</td><td>{human(r.get('flops') or 0)}</td>"
            f"<td><a download=\"{name}\" href=\"data:text/x-python;base64,{embedded}\">{name}</a>"
            f"<details><summary>show</summary><pre>{html.escape(code)}</pre></details></td></tr>")
    return rows


def write_report(run: str | Path, top_n: int = 10) -> Path:
    """Write runs/<id>/report.html and its PNGs; returns the HTML path."""
    store = RunStore.open(run, writable=False)
    results = sorted(store.results(), key=lambda r: r["iteration"])
    out = store.path
    cfg = store.config.get("args", {})
    metric = cfg.get("proxy", "naswot") if cfg.get("fidelity") == "proxy" else "accuracy"
    final = (store.summary() or {}).get("best") if cfg.get("fidelity") == "proxy" else None
    figs = {"accuracy": lambda res, png: _fig_accuracy(res, png, metric), "outcomes": _fig_outcomes,
            "pareto": _fig_pareto, "time": _fig_time}
    images: dict[str, str] = {}
    totals: dict[str, float] = {}
    for name, fn in figs.items():
        png = out / f"report-{name}.png"
        got = fn(results, png)
        if name == "time" and got:
            totals = got
        images[f"img_{name}"] = base64.b64encode(png.read_bytes()).decode()
    proxy_section = ""
    pairs = proxy_pairs(results, cfg.get("proxy", "naswot"), final)
    if cfg.get("fidelity") in ("proxy", "ladder") and pairs:
        png = out / "report-proxy.png"
        _fig_proxy(pairs, cfg.get("proxy", "naswot"), png)
        proxy_section = (f'<h2>{html.escape(cfg.get("proxy", "naswot"))} score vs trained accuracy</h2>'
                         f'<img alt="proxy vs accuracy" src="data:image/png;base64,'
                         f'{base64.b64encode(png.read_bytes()).decode()}">')
    ranked = sorted((r for r in results if record.fitness(r) is not None), key=lambda r: -(record.fitness(r) or 0))[:top_n]
    rows = _top_rows(store, ranked, final, by_accuracy=metric == "accuracy")
    n = len(results)
    valid = sum(r.get("outcome") == "ok" for r in results)
    best = ranked[0] if ranked else None
    seed: dict = next((r for r in results if r["iteration"] == 0), {})
    summary = (f"{n} iterations, {valid} valid ({valid / max(n, 1):.0%}); seed accuracy "
               f"{seed.get('accuracy', float('nan')):.4f}; best {metric} {record.fitness(best) or 0:.4g} at iteration "
               f"{best['iteration']}" if best else f"{n} iterations, no valid candidate")
    if final and final.get("accuracy") is not None:
        summary += f" (trained after the search: accuracy {final['accuracy']:.4f})"
    summary += "; time: " + ", ".join(f"{k} {v:.0f} s" for k, v in totals.items())
    summary += f"; data set {cfg.get('dataset', '?')}, LLM {cfg.get('llm', '?')}"
    fixes = record.fix_counts(results)
    if fixes:
        summary += "; fixes applied: " + ", ".join(f"{name} {n}" for name, n in sorted(fixes.items()))
    page = PAGE.format(title=html.escape(out.name), summary=html.escape(summary), rows="\n".join(rows),
                       iterations="\n".join(_iteration_rows(results, _changes(store, results, cfg.get("proxy")))),
                       status=html.escape(_status(results, cfg, out, store.running())),
                       best_section=_best_section(store, best, metric),
                       settings=_settings_rows(cfg),
                       top_n=len(ranked), metric=html.escape(metric),
                       rank_header="" if metric == "accuracy" else f"<th>{html.escape(metric)} (ranked by)</th>", metric_title=html.escape(metric.capitalize()),
                       proxy_section=proxy_section, **images)
    target = out / "report.html"
    target.write_text(page, encoding="utf-8")
    (out / "report.json").write_text(json.dumps({"summary": summary, "top": [r["iteration"] for r in ranked],
                                                         "fixes": fixes}))
    return target
