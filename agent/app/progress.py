"""The search's live display: one rich line on a terminal, plain lines for logs and CI."""
from __future__ import annotations

import time

from nasloop.agent.loop import record
from nasloop.tools.text import human


class Progress:
    """A live line on a terminal — iteration, the step running now (Improver, Generator, repair, sandbox), an
    LLM call's tokens and tokens/s, a candidate's training steps, the best so far and an ETA from the mean iteration time — plus one plain
    line per finished iteration (always: logs and CI read those)."""

    STEPS = {"seed": "training the seed", "select": "selecting a parent", "improve": "Improver",
             "generate": "Generator", "evaluate": "sandbox (pre-flight, training)", "repair": "repair"}

    def __init__(self, total: int, state: dict):
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(stderr=True, soft_wrap=True)
        best = state.get("best") or {}
        self.best = record.best_fitness(best)
        self.bar = RichProgress(TextColumn("iter {task.fields[current]}/{task.fields[of]}"), BarColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console,
                                disable=not self.console.is_terminal)
        done = state.get("iteration", 0)
        self.task = self.bar.add_task("search", total=total + 1, completed=done, info="", current=done, of=total)
        self.total, self.done = total, done
        self.info = ""  # best and last outcome
        self.step = ""
        self.training: dict[int, str] = {}  # iteration -> "step/steps": several at once with --workers > 1
        self.started = time.monotonic()  # of this session's first iteration: for the ETA
        self.finished = 0  # iterations finished in this session

    def __enter__(self) -> "Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def eta(self) -> str:
        if not self.finished:
            return ""
        left = (time.monotonic() - self.started) / self.finished * max(0, self.total + 1 - self.done)
        return f" | ETA {int(left // 60)}:{int(left % 60):02d}"

    def _show(self, extra: str = "") -> None:
        parts = [p for p in (self.step, extra, self.info) if p]
        self.bar.update(self.task, info=" | ".join(parts) + self.eta())

    def event(self, data: dict) -> None:
        """A node's custom stream event: a step starting, an LLM call's tokens so far, or training steps."""
        if not isinstance(data, dict):
            return
        if "step" in data:
            step = data["step"]
            self.step = self.STEPS.get(step.get("node"), step.get("node", ""))
            self.bar.update(self.task, current=step.get("iteration", self.done))
            self._show()
        elif "llm" in data:
            llm = data["llm"]
            rate = llm["tokens"] / llm["seconds"] if llm.get("seconds") else 0.0
            self._show(f"{llm['tokens']} tokens, {rate:.1f} tok/s")
        elif "train" in data:  # the harness's steps so far (its word: shown, never recorded)
            train = data["train"]
            self.step = "training the seed" if train.get("iteration") == 0 else "training"
            self.training[train.get("iteration", 0)] = f"{train['step']}/{train['steps']}"
            self._show(self._steps())

    def _steps(self) -> str:
        """Training steps of the candidate in training, or of each one training now (fanned out)."""
        if len(self.training) == 1:
            return f"step {next(iter(self.training.values()))}"
        return ", ".join(f"iter {it} step {s}" for it, s in sorted(self.training.items()))

    def update(self, update: dict) -> None:
        for node, delta in update.items():
            if node == "candidate":  # a fanned-out candidate finished (merge folds the round in order later)
                for item in (delta or {}).get("batch") or []:
                    self._finished(item["last"], item.get("best"))
            elif node in ("seed", "evaluate") and delta and "last" in delta:  # else a repair is pending
                self._finished(delta["last"], delta.get("best"))

    def _finished(self, last: dict, new_best: dict | None) -> None:
        out = last["outcome"]
        fit = record.best_fitness(new_best) if new_best else None
        if fit is not None and (self.best is None or fit > self.best):
            self.best = fit
        it = last["iteration"]
        self.training.pop(it, None)
        acc = f"{out['accuracy']:.3f}" if out.get("accuracy") is not None else "-"
        if out.get("scores"):
            acc += "  " + " ".join(f"{k} {v:.4g}" for k, v in out["scores"].items())
        best = "-" if self.best is None else f"{self.best:.3f}" if abs(self.best) <= 1 else f"{self.best:.4g}"
        llm = sum(v or 0 for v in (last.get("llm") or {}).values())
        self.info = f"best {best} | last {out['kind']}"
        line = (f"iter {it}/{self.total}  {out['kind']:<15} acc {acc}  best {best}  "
                f"params {human(out.get('params') or 0)}  llm {llm:.1f}s  eval {out.get('seconds') or 0:.1f}s")
        if last.get("repairs"):
            line += f"  (after {last['repairs']} repair{'s' if last['repairs'] > 1 else ''})"
        if last.get("escape"):
            line += f"  [escape: {last['escape']}]"
        if out.get("diagnosis"):
            line += f"  | {out['diagnosis'][:120]}"
        self.console.print(line, markup=False, highlight=False)
        self.done, self.finished = max(self.done, it + 1), self.finished + 1
        self.bar.update(self.task, completed=self.done)
        self._show()
