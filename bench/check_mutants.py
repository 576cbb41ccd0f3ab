"""Mutation check of tests/test_promises.py and tests/test_folder_checks.py: each bug below, put into a
copy of the repository one at a time, must make at least one test fail; the unmutated copy must pass.

    python bench/check_mutants.py                 # the unmutated copy, then every mutant
    python bench/check_mutants.py 5 6 10b         # only these mutants (the unmutated copy still runs first)
    python bench/check_mutants.py --quick         # per mutant, only the tests meant to catch it
    python bench/check_mutants.py --base HEAD     # mutate the last commit (plus untracked files) instead
                                                  # of the working tree

Each mutant is a textual replacement in one source file. A mutant lists alternative (file, old, new)
triples: the first `old` found exactly once in its file is replaced; when none is found the script stops,
naming the mutant, before any test runs, so a pattern that no longer matches the code never passes
silently; tests/test_mutants.py checks that every pattern applies (in the default test run, without
running the mutants). Update MUTANTS (top of this file) when the code moves.

The copy holds the repository's tracked and untracked, not ignored, files. Tests run there with
`cwd` and `PYTHONPATH` set to the copy, so `import agent_sft` (and the env worker processes it spawns)
load the copy, not the editable install. Exit status 1 when the unmutated copy fails or a mutant survives.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TEST_FILES = ["tests/test_promises.py", "tests/test_folder_checks.py"]


@dataclass
class Mutant:
    id: str
    bug: str
    # alternatives (file, old, new): the first whose `old` occurs exactly once in its file is applied
    replacements: list[tuple[str, str, str]]
    tests: str  # pytest -k expression of the tests meant to catch it


def alt(file: str, *pairs: tuple[str, str]) -> list[tuple[str, str, str]]:
    return [(file, old, new) for old, new in pairs]


SEAL_TMP = ('return os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{name}")', "return path")
DROPS = ("drops.update(d)", "drops = Counter(d)")
SFT_CALL = "                        unit.sft = self.deriver.write_for(self.path, split, name, self.generation, srows, self.additions)\n"
README_FIRST = (SFT_CALL,
                # the raw shard sealed on its own, and listed, before the sft shard is written
                "                        group.__exit__(None, None, None)\n"
                "                        write_readme(self.path, F.scan(self.path, self.generation))\n"
                "                        group.__enter__()\n" + SFT_CALL)

MUTANTS = [
    Mutant("1", "collect ignores filters.* and SFT_REQUIRE_SUCCESS", alt("agent_sft/collection.py",
        ("build=None if default else BuildSpec(style=cfg.output.sft_style, filters=filters),", "build=None,"),
    ), "require_success"),
    Mutant("2", "episode seed ignores the sample index", alt("agent_sft/records.py",
        ('key = f"{run_seed}\\x1f{task_id}\\x1f{sample_index}"', 'key = f"{run_seed}\\x1f{task_id}"'),
    ), "seeds_and_ids"),
    Mutant("3", "split hashed from the episode id instead of the task id", alt("agent_sft/rollout/tasks.py",
        ("split=task_split(spec.task_id, cfg.data.val_fraction),",
         "split=task_split(episode_id(env_name, spec.task_id, run_seed, s), cfg.data.val_fraction),"),
    ), "both_splits"),
    Mutant("4", "data.val_fraction ignored (the default used)", alt("agent_sft/rollout/tasks.py",
        ("split=task_split(spec.task_id, cfg.data.val_fraction),", "split=task_split(spec.task_id, 0.1),"),
    ), "val_fraction"),
    Mutant("5", "shard written in place instead of temp file + rename",
           alt("agent_sft/dataset/shards.py", SEAL_TMP), "midway or mid_shard or final_name"),
    Mutant("6", "README rewritten before the sft shard of a flush is sealed",
           alt("agent_sft/dataset/writer.py", README_FIRST), "sft_shard or every_flush"),
    Mutant("7", "drop counts overwritten per record batch instead of added",
           alt("agent_sft/dataset/derive.py", DROPS), "several_record_batches"),
    Mutant("8", "card totals taken from the last run only", alt("agent_sft/dataset/card.py",
        ('"total_episodes": st["total_episodes"],',
         '"total_episodes": (st.get("run") or {}).get("episodes", st["total_episodes"]),'),
    ), "card_totals"),
    Mutant("9", "a plain HTTP 400 retried", alt("agent_sft/policies/openai.py",
        ("if r.status_code in _RETRY_STATUS or r.status_code >= 500:",
         "if r.status_code in _RETRY_STATUS or r.status_code >= 500 or r.status_code == 400 and not _CONTEXT_RE.search(detail):"),
    ), "openai"),
    Mutant("10a", "success computed as reward > 0 instead of the env's verdict", alt("agent_sft/rollout/episode.py",
        ("ep.success = reason == END_SUCCESS", "ep.success = ep.final_reward > 0"),
    ), "envs_verdict"),
    Mutant("10b", "final_reward the last reward instead of the sum", alt("agent_sft/records.py",
        ("return float(sum(self.rewards))", "return float(self.rewards[-1]) if self.rewards else 0.0"),
    ), "envs_verdict"),
    Mutant("11", "the listing ignores a shard's `after` marker (a rewrite not switched on counts)", alt("agent_sft/dataset/layout.py",
        ('return any(a in metas and a not in replaced for a in m.get("after", []))', "return False"),
    ), "splitting_out_error"),
    Mutant("12", "the shards of a flush renamed sft before raw", alt("agent_sft/dataset/shards.py",
        ("        for st in staged:\n            os.replace(st.tmp, st.path)",
         "        for st in reversed(staged):\n            os.replace(st.tmp, st.path)"),
    ), "second_rename"),
    Mutant("13", "a resume does not verify its raw shards before playing", alt("agent_sft/dataset/writer.py",
        ("check_not_corrupt(self.path, s, verify=True)", "check_not_corrupt(self.path, s)"),
    ), "damaged_raw_shard or damaged_sft_shard"),
]


class PatternError(RuntimeError):
    pass


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True).stdout


def make_copy(dest: str, base: str) -> None:
    """The repository's files into `dest`: the working tree, or commit `base` plus untracked files."""
    if base == "worktree":
        files = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0")
    else:
        with tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", base))) as tar:
            tar.extractall(dest, filter="data")
        files = _git("ls-files", "-z", "--others", "--exclude-standard").decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(REPO, rel)
        if not os.path.isfile(src):  # deleted in the working tree
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def source(rel: str, base: str) -> str | None:
    """The text of `rel` in the working tree or in commit `base`; None when it has no such file."""
    if base == "worktree":
        path = os.path.join(REPO, rel)
        if not os.path.isfile(path):
            return None
        with open(path) as fh:
            return fh.read()
    out = subprocess.run(["git", "-C", REPO, "show", f"{base}:{rel}"], capture_output=True)
    return out.stdout.decode() if out.returncode == 0 else None


def mutate(m: Mutant, read) -> tuple[str, str]:
    """(file, mutated text) of the mutant's first alternative that matches; `read(file)` gives a file's text."""
    for file, old, new in m.replacements:
        text = read(file)
        if text is None:
            continue
        n = text.count(old)
        if n == 1:
            return file, text.replace(old, new)
        if n > 1:
            raise PatternError(f"mutant {m.id}: pattern occurs {n} times in {file}: {old!r}")
    raise PatternError(f"mutant {m.id} ({m.bug}): no pattern found; update MUTANTS in {__file__}:\n  "
                       + "\n  ".join(f"{file}: {old!r}" for file, old, _ in m.replacements))


def apply(m: Mutant, root: str) -> str:
    """Mutate the copy at `root`; returns the file changed."""
    file, text = mutate(m, lambda rel: source_in(root, rel))
    path = os.path.join(root, file)
    with open(path, "w") as fh:
        fh.write(text)
    try:
        compile(text, path, "exec")
    except SyntaxError as e:
        raise PatternError(f"mutant {m.id}: the mutated {file} does not compile: {e}") from None
    return file


def source_in(root: str, rel: str) -> str | None:
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return fh.read()


def env_for(root: str) -> dict:
    """The copy first on the path: `agent_sft` from root/agent_sft."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports(root: str) -> str:
    code = "import agent_sft, agent_sft.dataset.builder as b; print(agent_sft.__file__); print(b.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env_for(root), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the copy does not import:\n{out.stderr[-3000:]}")
    where = out.stdout.split()
    for path in where:
        if not os.path.realpath(path).startswith(os.path.realpath(root) + os.sep):
            raise RuntimeError(f"{path} is imported instead of the copy's file (copy: {root})")
    return ", ".join(where)


def run_tests(root: str, k: str | None, log_dir: str, label: str) -> tuple[int, int, list[str], float]:
    """(tests run, tests failed or errored, their names, seconds)."""
    xml = os.path.join(log_dir, f"{label}.xml")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *TEST_FILES]
    if k:
        cmd += ["-k", k]
    t = time.monotonic()
    with open(os.path.join(log_dir, f"{label}.log"), "w") as log:
        subprocess.run(cmd, cwd=root, env=env_for(root), stdout=log, stderr=subprocess.STDOUT, timeout=900)
    dt = time.monotonic() - t
    if not os.path.exists(xml):
        return 0, 1, ["(pytest wrote no report; see the log)"], dt
    failed, total = [], 0
    for case in ET.parse(xml).iter("testcase"):
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(case.get("name"))
    return total, len(failed), failed, dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mutants", nargs="*", help="mutant ids (default: all)")
    ap.add_argument("--base", default="worktree", help="`worktree` (default) or a commit such as HEAD")
    ap.add_argument("--quick", action="store_true", help="per mutant, run only the tests meant to catch it")
    ap.add_argument("--keep", action="store_true", help="keep the copies and logs")
    ap.add_argument("--baseline-only", action="store_true", help="only run the tests on the unmutated copy")
    a = ap.parse_args()
    chosen = [m for m in MUTANTS if not a.mutants or m.id in a.mutants]
    unknown = set(a.mutants) - {m.id for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutant(s) {', '.join(sorted(unknown))}; known: {', '.join(m.id for m in MUTANTS)}")

    work = tempfile.mkdtemp(prefix="agent-sft-mutants-")
    logs = os.path.join(work, "logs")
    os.makedirs(logs)
    try:
        for m in chosen:  # every pattern is checked before any test runs
            mutate(m, lambda rel: source(rel, a.base))

        clean = os.path.join(work, "clean")
        os.makedirs(clean)
        make_copy(clean, a.base)
        print(f"copies of {REPO} ({a.base}) under {work}")
        print(f"the copy imports {check_imports(clean)}")
        total, n_failed, names, dt = run_tests(clean, None, logs, "clean")
        print(f"unmutated copy: {total - n_failed}/{total} tests pass ({dt:.0f} s)" + (f"; failing: {', '.join(names)}" if n_failed else ""))
        ok = n_failed == 0 and total > 0
        failing_anyway = set(names)  # a test failing without any mutant catches nothing

        rows = []
        for m in ([] if a.baseline_only else chosen):
            root = os.path.join(work, f"mutant-{m.id}")
            os.makedirs(root)
            make_copy(root, a.base)
            changed = apply(m, root)
            total, _, names, dt = run_tests(root, m.tests if a.quick else None, logs, f"mutant-{m.id}")
            names = [n for n in names if n not in failing_anyway]
            n_failed = len(names)
            rows.append((m, changed, total, n_failed, names, dt))
            print(f"  mutant {m.id}: {n_failed}/{total} tests failed ({dt:.0f} s)", flush=True)
            if not a.keep:
                shutil.rmtree(root, ignore_errors=True)

        print()
        print("| mutant | bug | file changed | tests failed | caught | failing tests |")
        print("|---|---|---|---|---|---|")
        for m, changed, total, n_failed, names, _ in rows:
            print(f"| {m.id} | {m.bug} | {changed} | {n_failed} of {total} | {'yes' if n_failed else 'NO'} | {', '.join(names) or '-'} |")
        survivors = [m.id for m, _, _, n, _, _ in rows if not n]
        if not ok:
            print(f"\nthe unmutated copy fails {len(failing_anyway)} test(s), not counted above: {', '.join(sorted(failing_anyway))}")
        if survivors:
            print(f"\nsurviving mutants: {', '.join(survivors)}")
        return 1 if survivors or not ok else 0
    except PatternError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if a.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
