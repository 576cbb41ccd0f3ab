"""Figures per task: attempts, successes and pass@k, per task and averaged over the tasks of each env and
task type.

A task is an (env, task_id) pair; its attempts are its episodes in the folder (every sample index, error
episodes included, as the success rate counts them). Two values of k are reported: 1, and the run's
samples per task when above 1, taken as the most common number of attempts per task (the larger on a
tie), so a run cut short or a folder merged from runs with another `env.samples_per_task` still reports
the k the run was made for. pass@k of a task is Chen et al. (2021)'s unbiased estimator; a group's pass@k
averages its tasks with at least k attempts (a task with fewer has none), and says how many that is.
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that k attempts drawn without replacement from a task's n attempts, c of them
    successful, hold at least one success: 1 - C(n-c, k) / C(n, k), the unbiased pass@k estimator
    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

    Args:
        n: attempts at the task.
        c: successful attempts among them.
        k: attempts drawn, 1 <= k <= n.

    Returns:
        A probability in [0, 1]: 0 when c == 0, 1 when fewer than k attempts failed.

    Raises:
        ValueError: k outside 1..n, or c outside 0..n.
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n; got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n successes; got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


class TaskTally:
    """Attempts and successes per task, counted episode by episode (memory grows with tasks, not episodes)."""

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str], list] = {}

    def add(self, env: str, task_id: str, task_type: str, success: bool) -> None:
        t = self.tasks.setdefault((env, task_id), [0, 0, task_type])
        t[0] += 1
        t[1] += int(success)

    def run_k(self) -> int:
        """The run's samples per task: the most common number of attempts per task (1 when none)."""
        counts = Counter(n for n, _, _ in self.tasks.values())
        return max(counts.items(), key=lambda nc: (nc[1], nc[0]))[0] if counts else 1

    def figures(self) -> tuple[dict[str, dict], dict[str, Any]]:
        """Per task ("env/task_id" -> attempts, successes, pass@1, pass@k) and the averages: overall, by
        env (and task type within it) and by task type, each with tasks, attempts and successes."""
        k = self.run_k()
        keys = ["pass@1"] + ([f"pass@{k}"] if k > 1 else [])
        by_task: dict[str, dict] = {}
        top = _Group()
        by_env: dict[str, _Group] = {}
        by_env_type: dict[str, dict[str, _Group]] = {}
        by_type: dict[str, _Group] = {}
        for (env, task_id), (n, c, tt) in sorted(self.tasks.items()):
            row: dict[str, Any] = {"attempts": n, "successes": c, "pass@1": c / n}
            if k > 1:
                row[f"pass@{k}"] = pass_at_k(n, c, k) if n >= k else None
            by_task[f"{env}/{task_id}"] = row
            for g in (top, by_env.setdefault(env, _Group()), by_env_type.setdefault(env, {}).setdefault(tt, _Group()),
                      by_type.setdefault(tt, _Group())):
                g.add(row, keys)
        out = {"k": k, "samples_per_task": {str(n): t for n, t in sorted(Counter(n for n, _, _ in self.tasks.values()).items())},
               **top.done(keys),
               "by_env": {env: {**g.done(keys), "by_task_type": {tt: t.done(keys) for tt, t in sorted(by_env_type[env].items())}}
                          for env, g in sorted(by_env.items())},
               "by_task_type": {tt: g.done(keys) for tt, g in sorted(by_type.items())}}
        return by_task, out


class _Group:
    """Sums over the tasks of one env, task type, or the whole folder."""

    def __init__(self) -> None:
        self.tasks = self.attempts = self.successes = 0
        self.sums: Counter = Counter()
        self.covered: Counter = Counter()

    def add(self, row: dict, keys: list[str]) -> None:
        self.tasks += 1
        self.attempts += row["attempts"]
        self.successes += row["successes"]
        for key in keys:
            if row[key] is not None:
                self.sums[key] += row[key]
                self.covered[key] += 1

    def done(self, keys: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"tasks": self.tasks, "attempts": self.attempts, "successes": self.successes}
        for key in keys:
            out[key] = self.sums[key] / self.covered[key] if self.covered[key] else None
        if len(keys) > 1:
            out[f"tasks_{keys[1]}"] = self.covered[keys[1]]  # how many tasks the pass@k average covers
        return out


def percent(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def info_lines(pk: dict[str, Any]) -> list[str]:
    """One line per env for `agent-sft info`: tasks, attempts, pass@1 and pass@k."""
    k = pk.get("k", 1)
    out = []
    for env, e in (pk.get("by_env") or {}).items():
        line = (f"pass@k {env}: {count(e['tasks'], 'task')}, {count(e['attempts'], 'attempt')}, {e['successes']} won; "
                f"pass@1 {percent(e['pass@1'])}")
        if k > 1:
            line += f", pass@{k} {percent(e[f'pass@{k}'])} (over {count(e[f'tasks_pass@{k}'], 'task')} with {k}+ attempts)"
        elif e["tasks"] == e["attempts"]:
            line += " (one attempt per task: the success rate)"
        out.append(line)
    return out
