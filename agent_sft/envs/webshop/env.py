"""WebShop on its real engine (`WebAgentTextEnv` in text mode, imported from a checkout), as a `TextEnv`.

    env = WebshopEnv(path="~/WebShop", game_split="test", expert="oracle")
    task = env.tasks()[0]                      # webshop/human/00000/B07XYZ1234: goal 0, its target product
    obs, info = env.reset(seed=0, options={"task_id": task.task_id})
    obs, reward, terminated, truncated, info = env.step(info["expert_plan"][0])   # search[...]

A task is one of the engine's goals, by its index in the engine's goal list (WebShop shuffles it with a
fixed seed, so indices are stable for a catalog). Actions are `search[query]`, free-form on a page with a
search bar, and `click[x]` for a clickable of the page; the env judges each against the engine's available
actions (`action_valid`, `invalid_reason`) and passes it to the engine as it is. The reward is the
engine's score at purchase (0..1); an episode is won when it buys with the full score (verl-agent's rule).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from agent_sft.envs.base import TaskList, TaskSpec, task_hash
from agent_sft.envs.webshop.checkout import (
    CheckoutError,
    build_engine,
    find_checkout,
    global_random,
    load_engine,
    missing_files,
    quiet,
)
from agent_sft.envs.webshop.expert import Oracle, wanted_options
from agent_sft.envs.webshop.options import GOAL_SETS, OBSERVATIONS, SPLITS

EXPERTS = ("oracle",)
SEARCH_PATTERN = r"search\[.+\]"
SEARCH_SHOWN = "search[<your query>]"  # how verl-agent lists the free-form search among the actions
PAGES = {"": "search", None: "search", "search_results": "results", "item_page": "item",
         "item_sub_page": "sub_page", "done": "done"}
REWARD_KEYS = ("r_type", "r_att", "w_att", "r_option", "w_option", "r_price", "w_price", "query_match",
               "category_match", "title_score")
"""The engine's reward breakdown (`get_reward(..., verbose=True)`), kept as `reward_info.<key>` on the last step."""


def tools(info: dict) -> list:
    """WebShop's actions as tools (`prompt.actions=tools`): `search(query)` and `click(target)`."""
    from agent_sft.envs.tools import Tool

    return [Tool("search", "Search the store (on a page with a search bar).",
                 {"query": {"type": "string", "description": "What to search for."}}, "search[{query}]"),
            Tool("click", "Click a button, link or option of the page (as it is listed, e.g. `buy now`).",
                 {"target": {"type": "string", "description": "The clickable's text."}}, "click[{target}]")]


def stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


def verl_agent_page(text: str, instruction: str) -> str:
    """verl-agent's page text: the elements after the instruction, each quoted, joined by [SEP]."""
    parts = text.split(" [SEP] ")
    if instruction not in parts:
        return text
    return " [SEP] ".join(f"'{p}'" for p in parts[parts.index(instruction) + 1 :])


class WebshopEnv:
    """WebShop's goals on the engine of a WebShop checkout, one episode at a time.

    Args:
        path: the checkout (princeton-nlp/WebShop's layout, or verl-agent's repository or vendored copy);
            default $WEBSHOP_PATH.
        goals: "human" (annotators' instructions) or "synthetic" (one goal per product option combination).
        game_split: "test" (goals 0 .. test_goals-1) or "train" (the rest), as verl-agent splits them.
        test_goals: the number of test goals (verl-agent: 500).
        num_products: the engine's `num_products` (None: all products, index `search_engine/indexes`).
        observation: "verl-agent" (the page after the instruction, elements quoted) or "engine" (as is).
        task_types: product categories to keep (None: all).
        max_steps: steps before an episode is truncated.
        expert: "oracle" or None (no `expert_plan`).

    Raises:
        CheckoutError: no checkout, or one without its catalog files or index.
        ImportError: the engine cannot be imported (the message says what to install).
        ValueError: an unknown option value, task type or expert.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        goals: str = "human",
        game_split: str = "train",
        test_goals: int = 500,
        num_products: int | None = None,
        observation: str = "verl-agent",
        task_types: list[str] | str | None = None,
        max_steps: int = 15,
        expert: str | None = "oracle",
    ) -> None:
        for name, value, allowed in (("goals", goals, GOAL_SETS), ("game_split", game_split, SPLITS),
                                     ("observation", observation, OBSERVATIONS), ("expert", expert, (*EXPERTS, None))):
            if value not in allowed:
                raise ValueError(f"unknown WebShop {name} {value!r}; allowed: {', '.join(map(str, allowed))}")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.root = find_checkout(path)
        missing = missing_files(self.root, num_products)
        if missing:
            raise CheckoutError(f"the WebShop checkout at {self.root} has no {', '.join(missing)} "
                                "(`agent-sft envs webshop` says how to make them)")
        self.goal_set, self.game_split, self.test_goals = goals, game_split, int(test_goals)
        self.observation, self.max_steps, self.expert = observation, int(max_steps), expert
        module = load_engine(self.root)
        self._engine = build_engine(module, human_goals=goals == "human", num_products=num_products)
        self._server = self._engine.server
        from thefuzz import fuzz
        from web_agent_site.engine import engine as engine_mod
        from web_agent_site.engine import goal as goal_mod
        from web_agent_site.engine.normalize import normalize_color

        self._fuzz, self._normalize, self._parse = fuzz, normalize_color, engine_mod.parse_action
        self._search = engine_mod.get_top_n_product_from_keywords
        meta = goal_mod.nlp.meta
        self.spacy_model = f"{meta.get('lang', '')}_{meta.get('name', '')} {meta.get('version', '')}"
        self._tasks = self._list_tasks(task_types)
        self._choice = TaskList(self._tasks, "WebShop", f"goals ({self.goal_set}, {self.game_split} split of {self.root})")
        self._task: TaskSpec | None = None
        self._goal: dict = {}
        self._session = ""
        self._seed = 0
        self._steps = 0
        self._done = True
        self._available: dict = {"has_search_bar": False, "clickables": []}
        self._instruction = ""
        self._oracle: Oracle | None = None

    @property
    def engine(self) -> Any:
        """The engine's own `WebAgentTextEnv` (its `server` holds the goals, products and prices)."""
        return self._engine

    # --- task list --------------------------------------------------------------------------------

    def _list_tasks(self, task_types: list[str] | str | None) -> list[TaskSpec]:
        goals = self._server.goals
        categories = sorted({g["category"] for g in goals})
        if isinstance(task_types, str):
            task_types = [task_types]
        if task_types:
            unknown = [t for t in task_types if t not in categories]
            if unknown:
                raise ValueError(f"unknown WebShop task type(s) {', '.join(unknown)}: the catalog's categories are "
                                 f"{', '.join(categories)}")
        tasks = []
        for i, g in enumerate(goals):
            split = "test" if i < self.test_goals else "train"
            if split != self.game_split or (task_types and g["category"] not in task_types):
                continue
            task_id = f"webshop/{self.goal_set}/{i:05d}/{g['asin']}"
            tasks.append(TaskSpec(task_id, g["category"], split, {"goal_index": i, "asin": g["asin"]}))
        return tasks

    def tasks(self) -> list[TaskSpec]:
        """The goals of the chosen split (and categories), in the engine's goal order."""
        return list(self._tasks)

    # --- TextEnv ----------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        """Start a goal: `options["task_id"]`, else one drawn from `seed`, else the next in order."""
        task = self._choice.choose((options or {}).get("task_id"), seed)
        index = task.extra["goal_index"]
        self._seed = int(seed) if seed is not None else 0
        self._session = str(index)
        with global_random(stable_seed(self._seed, task.task_id)), quiet():
            text, _ = self._engine.reset(session=index)
            self._available = self._engine.get_available_actions()
        self._task, self._goal = task, self._server.goals[index]
        self._steps, self._done = 0, False
        self._instruction = self._goal["instruction_text"].strip()
        if self.expert is not None:
            product = self._server.product_item_dict[self._goal["asin"]]
            chosen = wanted_options(product, self._goal["goal_options"], self._fuzz, self._normalize)
            results = self._results_of
            self._oracle = Oracle(self._goal, product, chosen, results)
        product = self._server.product_item_dict.get(self._goal["asin"])
        return self._page_text(text), {**self._info("search"), "task_hash": task_hash(self._goal, product)}

    def _results_of(self, keywords: list[str]) -> list[dict]:
        s = self._server
        return self._search(keywords, s.search_engine, s.all_products, s.product_item_dict)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._task is None or self._done:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        action = str(action)
        valid, reason = self.judge(action)
        reward, done = 0.0, False
        with global_random(stable_seed(self._seed, self._task.task_id, self._steps)), quiet():
            try:
                text, reward, done, _ = self._engine.step(action)
            except Exception as e:  # e.g. its "<r>" search keyword asks for more products than the catalog has
                text = self._engine.observation
                valid, reason = False, f"the engine failed on this action ({type(e).__name__}: {e})"
            self._available = self._engine.get_available_actions() if not done else {}
        self._steps += 1
        session = self._server.user_sessions.get(self._session, {})
        page = "done" if done else PAGES.get(self._server.get_page_name(self._engine.browser.current_url), "search")
        reward = float(reward or 0.0)
        won = bool(done and reward == 1.0)
        truncated = not done and self._steps >= self.max_steps
        self._done = done or truncated
        info = self._info(page, session)
        info.update(action_valid=valid, invalid_reason=reason)
        if done:
            info["won"] = won
            info.update(self._purchase(session))
            text = self._done_text(text, reward)
        return self._page_text(text), reward, bool(done), truncated, info

    def judge(self, action: str) -> tuple[bool, str]:
        """Whether `action` is one the current page offers (the engine's available actions), and why not."""
        name, arg = self._parse(action)
        avail = self._available or {}
        if name == "search":
            if not avail.get("has_search_bar"):
                return False, "this page has no search bar (click[back to search] first); the engine searched anyway"
            return True, ""
        if name == "click":
            arg = (arg or "").lower()
            if arg == "search":
                return False, "click[search] does nothing: search with search[<your query>]"
            if arg not in (avail.get("clickables") or []):
                return False, f"{arg!r} is not a clickable of this page"
            return True, ""
        return False, "not search[<query>] or click[<a clickable of this page>]"

    def _page_text(self, text: str) -> str:
        if self.observation == "engine":
            return text
        return verl_agent_page(text, self._instruction)

    def _done_text(self, text: str, reward: float) -> str:
        """After a purchase: the done page's visible lines (the engine's text also holds its hidden goal
        details; verl-agent's copy of the engine has already moved to a new session by then)."""
        if self.observation == "engine" and self._engine.session == self._session:
            return text
        return f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {reward}"

    def _purchase(self, session: dict) -> dict:
        """What was bought and the engine's reward breakdown, for the last step's info."""
        verbose = session.get("verbose_info") or {}
        out = {f"reward_info.{k}": verbose[k] for k in REWARD_KEYS if k in verbose}
        out["reward_info.spacy_model"] = self.spacy_model
        out["purchased_asin"] = str(session.get("asin") or "")
        out["purchased_options"] = ", ".join(f"{k}: {v}" for k, v in sorted((session.get("options") or {}).items()))
        return out

    def _actions(self) -> tuple[list[str], list[str]]:
        avail = self._available or {}
        shown = [SEARCH_SHOWN] if avail.get("has_search_bar") else []
        shown += [f"click[{c}]" for c in avail.get("clickables") or [] if c != "search"]
        return shown, [SEARCH_PATTERN] if avail.get("has_search_bar") else []

    def _info(self, page: str, session: dict | None = None) -> dict:
        task = self._task
        admissible, patterns = self._actions()
        info = {
            "admissible_actions": admissible,
            "action_patterns": patterns,
            "task_id": task.task_id,
            "task_type": task.task_type,
            "goal": self._instruction,
            "won": False,
            "game_split": task.game_split,
            "step": self._steps,
            "page": page,
        }
        if self.expert is not None:
            info["expert_plan"] = self._oracle.plan(page, session or {}) if self._oracle else []
            info["expert"] = self.expert
        return info

    def close(self) -> None:
        self._done = True
        self._task = None

    def __enter__(self) -> WebshopEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"WebshopEnv(root={str(self.root)!r}, goals={self.goal_set!r}, game_split={self.game_split!r}, "
                f"tasks={len(self._tasks)}, expert={self.expert!r})")
