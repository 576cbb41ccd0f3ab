"""AgentGym's env servers (WebShop, ALFWorld, BabyAI, SciWorld, TextCraft) behind the `http` env.

AgentGym (github.com/WooooDyy/AgentGym) serves each environment with a FastAPI app of its own routes.
These adapters speak them as AgentGym's own clients do (`agentenv/agentenv/envs/<env>.py`), read at
commit 3ef9235d23e68e7c2920c5422ad957dc8ced5c6c, and give agent-sft's `TextEnv` view of an episode:

    agent-sft collect env.env_name=http env.http.protocol=agentgym-babyai \
        env.http.url=http://127.0.0.1:36001 env.http.data_indices=0-199

What is the same for all five:

- Tasks are the servers' data indices (`env.http.data_indices`; no server lists or counts its tasks):
  task id `<protocol>/<index>`, game split "agentgym". The servers take no seed: an episode is a
  function of the index alone (as far as the server is deterministic).
- Observations, rewards and scores pass through as the server gives them; the server's `score`
  (BabyAI, SciWorld) is kept in the info. `won` follows AgentGym's `Evaluator`, which counts an
  episode a success when its final reward is 1 (100 for SciWorld's score); see each adapter.
- A reply `{"error": ...}` (HTTP 200: how ALFWorld, BabyAI, SciWorld and TextCraft report any failure,
  "... has finished." after the episode ended among them) raises `ServerError` with the server's
  message: the episode ends as an error and the next reset opens a new session.
- `truncated` is set when `max_steps` steps were played without the server ending the episode.
- The servers cannot say how busy they are (WebShop aside): `load` is then 0.0.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from agent_sft.envs.base import TaskSpec
from agent_sft.envs.http.client import JsonClient, ServerError
from agent_sft.envs.http.indices import parse_indices

GAME_SPLIT = "agentgym"

BABYAI_LEVELS = (
    "GoToRedBallGrey", "GoToRedBall", "GoToRedBallNoDists", "GoToObjS6", "GoToLocalS8N7", "GoToObjMazeS7",
    "GoToImpUnlock", "GoToSeqS5R2", "GoToRedBlueBall", "GoToDoor", "GoToObjDoor", "Open", "OpenRedDoor",
    "OpenDoorLoc", "OpenRedBlueDoorsDebug", "OpenDoorsOrderN4Debug", "Pickup", "UnblockPickup", "PickupLoc",
    "PickupDistDebug", "PickupAbove", "PutNextLocalS6N4", "PutNextS7N4Carrying", "Unlock", "UnlockLocalDist",
    "KeyInBox", "UnlockPickupDist", "BlockedUnlockPickup", "UnlockToUnlock", "ActionObjDoor", "FindObjS7",
    "KeyCorridorS6R3", "OneRoomS20", "MoveTwoAcrossS8N9", "SynthS5R2", "SynthLoc", "SynthSeq", "MiniBossLevel",
    "BossLevel", "BossLevelNoUnlock",
)
"""AgentGym's BabyAI levels 1..40 (`all_levels` in agentenv-babyai/agentenv_babyai/environment.py), as
`BabyAI-<name>-v0`; data index i plays level `i % 40 + 1` on layout seed `i // 40`."""


def babyai_level(index: int) -> tuple[str, int]:
    """The BabyAI level id and layout seed AgentGym's server plays for a data index."""
    return f"BabyAI-{BABYAI_LEVELS[index % 40]}-v0", index // 40


def clean_action(text: str) -> str:
    """The BabyAI and TextCraft clients' cleaning: letters, digits, commas and spaces, whitespace collapsed."""
    return " ".join(re.sub(r"[^A-Za-z0-9, ]+", "", text).split())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _goal_after(pattern: str, text: str) -> str:
    """The last match of `pattern` in `text` on one line, without a final period ("" when absent)."""
    found = re.findall(pattern, text, re.MULTILINE)
    return _one_line(found[-1]).removesuffix(".").strip() if found else ""


@dataclass
class _Episode:
    task: TaskSpec
    goal: str
    keep: dict  # what the server said of the task at reset, repeated in every info (the collector keeps step infos)
    steps: int = 0


class AgentGymAdapter:
    """What the five adapters share: tasks from data indices, episode bookkeeping, replies checked.

    Args:
        data_indices: the data indices to play (`indices.parse_indices` syntax).
        max_steps: steps after which an episode the server has not ended is truncated.
    """

    protocol = ""
    short = ""  # the task type, where the index alone says nothing more
    title = ""
    greeting = ""  # what GET / answers

    def __init__(self, data_indices: str = "0-99", max_steps: int = 50):
        self.indices = parse_indices(data_indices)
        self.max_steps = int(max_steps)
        self._episodes: dict[Any, _Episode] = {}
        self._cursor = 0

    # --- tasks ------------------------------------------------------------------------------------

    def task(self, index: int) -> TaskSpec:
        return TaskSpec(f"{self.protocol}/{index}", self.short, GAME_SPLIT, {"data_idx": index})

    def tasks(self, c: JsonClient | None = None) -> list[TaskSpec]:
        """One task per data index (no server call: AgentGym servers list no tasks)."""
        return [self.task(i) for i in self.indices]

    def _pick(self, task_id: str | None, seed: int | None) -> TaskSpec:
        if task_id is None:
            if seed is not None:
                return self.task(random.Random(seed).choice(self.indices))
            index = self.indices[self._cursor % len(self.indices)]
            self._cursor += 1
            return self.task(index)
        prefix, _, rest = str(task_id).partition("/")
        if prefix != self.protocol or not rest.isdigit():
            raise KeyError(f"unknown {self.protocol} task_id {task_id!r}; expected {self.protocol}/<data index>")
        return self.task(int(rest))

    # --- server calls -----------------------------------------------------------------------------

    def load(self, c: JsonClient) -> float:
        return 0.0  # the server says nothing about how many envs it holds

    def _call(self, c: JsonClient, method: str, path: str, body: Any = None, *, idempotent: bool = True,
              params: dict | None = None, keys: tuple[str, ...] = ()) -> Any:
        """The reply's JSON; a 200 `{"error": ...}` and a reply without `keys` raise `ServerError`."""
        r = c.call(method, path, body, idempotent=idempotent, params=params)
        if isinstance(r, dict) and "error" in r:
            raise ServerError(f"{self.title} server {c.base_url}: {method} {path}: {r['error']}", 200, "env_error")
        if keys and not (isinstance(r, dict) and all(k in r for k in keys)):
            raise ServerError(f"{self.title} server {c.base_url}: {method} {path}: malformed reply "
                              f"(expected the keys {', '.join(keys)}): {str(r)[:200]}")
        return r

    def _id(self, c: JsonClient, r: Any) -> int:
        sid = r.get("id") if isinstance(r, dict) else r
        if isinstance(sid, bool) or not isinstance(sid, int):
            raise ServerError(f"{self.title} server {c.base_url}: POST /create gave no env id: {str(r)[:200]}")
        return sid

    def create(self, c: JsonClient) -> int:
        return self._id(c, self._call(c, "POST", "/create"))

    def close(self, c: JsonClient, sid: Any) -> None:
        self._episodes.pop(sid, None)
        self._call(c, "POST", "/close", {"id": sid})

    # --- episodes ---------------------------------------------------------------------------------

    def _begin(self, sid: Any, task: TaskSpec, goal: str, **keep: Any) -> _Episode:
        ep = self._episodes[sid] = _Episode(task, goal, keep)
        return ep

    def _episode(self, sid: Any) -> _Episode:
        ep = self._episodes.get(sid)
        if ep is None:
            raise RuntimeError(f"no episode on {self.protocol} env {sid}; call reset() first")
        return ep

    def _info(self, ep: _Episode, won: bool = False, **more: Any) -> dict:
        return {"task_id": ep.task.task_id, "task_type": ep.task.task_type, "goal": ep.goal, "won": bool(won),
                "game_split": GAME_SPLIT, "step": ep.steps, **ep.keep, **more}

    def _end_step(self, ep: _Episode, obs: Any, reward: Any, terminated: bool, won: bool,
                  **more: Any) -> tuple[str, float, bool, bool, dict]:
        ep.steps += 1
        truncated = not terminated and ep.steps >= self.max_steps
        return str(obs), float(reward), bool(terminated), truncated, self._info(ep, won, **more)


class WebShopAdapter(AgentGymAdapter):
    """WebShop (agentenv-webshop/agentenv_webshop/server.py and environment.py; client
    agentenv/agentenv/envs/webshop.py, at AgentGym 3ef9235d23e68e7c2920c5422ad957dc8ced5c6c).

    The data index is the goal (`session_id` of /reset). The observation is the page text the client
    reads (GET /observation), the goal the instruction (GET /instruction_text). Validity comes from GET
    /available_actions: `click[<clickable>]` for each clickable, and `search[...]` (a pattern) where the
    page has a search bar. Actions go as the client sends them (`search[..]` / `click[..]`, stripped).
    The reward is WebShop's: 0 until `click[buy now]` ends the episode with the purchase's score in
    [0, 1]; won when that score is 1. Errors are HTTP 500 (WebShop catches nothing).
    """

    protocol, short, title, greeting = "agentgym-webshop", "webshop", "WebShop", "ok"
    SLOTS = 8000  # environments a WebShop server makes before it hands out existing ones again

    def load(self, c: JsonClient) -> float:
        envs = c.call("GET", "/list_envs")
        return len(envs) / self.SLOTS if isinstance(envs, list) else 0.0

    def reset(self, c: JsonClient, sid: int, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        task = self._pick(task_id, seed)
        r = self._call(c, "POST", "/reset", {"env_idx": sid, "session_id": task.extra["data_idx"]})
        if not isinstance(r, list) or not r:
            raise ServerError(f"WebShop server {c.base_url}: POST /reset: malformed reply: {str(r)[:200]}")
        obs = self._call(c, "GET", "/observation", params={"env_idx": sid})
        instruction = self._call(c, "GET", "/instruction_text", params={"env_idx": sid})
        goal = _one_line(str(instruction)).removeprefix("Instruction:").strip()
        ep = self._begin(sid, task, goal)
        return str(obs), self._info(ep, **self._actions(c, sid))

    def step(self, c: JsonClient, sid: int, action: str) -> tuple[str, float, bool, bool, dict]:
        ep = self._episode(sid)
        r = self._call(c, "POST", "/step", {"env_idx": sid, "action": action.strip()}, idempotent=False,
                       keys=("state", "reward", "done"))
        reward, done = float(r["reward"] or 0.0), bool(r["done"])
        return self._end_step(ep, r["state"], reward, done, done and reward == 1.0, **self._actions(c, sid))

    def _actions(self, c: JsonClient, sid: int) -> dict:
        r = self._call(c, "GET", "/available_actions", params={"env_idx": sid}, keys=("has_search_bar", "clickables"))
        # `click[search]` is refused by the server: the search button is used through `search[...]`.
        out: dict[str, Any] = {"admissible_actions": [f"click[{x}]" for x in r["clickables"] if x != "search"]}
        if r["has_search_bar"]:
            out["action_patterns"] = [r"search\[.+\]"]
        return out

    def close(self, c: JsonClient, sid: int) -> None:
        self._episodes.pop(sid, None)  # no /close route: the server keeps its envs until it stops


class AlfworldAdapter(AgentGymAdapter):
    """ALFWorld (agentenv-alfworld/agentenv_alfworld/server.py and env_wrapper.py; client
    agentenv/agentenv/envs/alfworld.py, at AgentGym 3ef9235d23e68e7c2920c5422ad957dc8ced5c6c).

    The data index is the game (`game` of /reset, world type "Text"): 0..2419 train, 2420..2619 the
    servers' test games. The admissible actions are the `available_actions` of each reply (the client
    also appends them to its first prompt; agent-sft's prompt lists them itself), the goal the text
    after "Your task is to: ", and the server's `task_type` (the game's folder) goes in the info as
    `alfworld_task`. The reward is 1.0 when the game is won (then won and terminated); the
    server also ends a game after its own 50 steps, which counts as truncated.
    """

    protocol, short, title, greeting = "agentgym-alfworld", "alfworld", "ALFWorld", "This is environment AlfWorld."

    def reset(self, c: JsonClient, sid: int, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        task = self._pick(task_id, seed)
        r = self._call(c, "POST", "/reset", {"id": sid, "game": task.extra["data_idx"], "world_type": "Text"},
                       keys=("observation", "available_actions"))
        obs = str(r["observation"])
        ep = self._begin(sid, task, _goal_after(r"Your task is to: (.*)$", obs),
                         alfworld_task=str(r.get("task_type") or ""))
        return obs, self._info(ep, admissible_actions=list(r["available_actions"]))

    def step(self, c: JsonClient, sid: int, action: str) -> tuple[str, float, bool, bool, dict]:
        ep = self._episode(sid)
        r = self._call(c, "POST", "/step", {"id": sid, "action": action.strip()}, idempotent=False,
                       keys=("observation", "reward", "available_actions", "done"))
        won = float(r["reward"]) == 1.0
        out = self._end_step(ep, r["observation"], r["reward"], won, won,
                             admissible_actions=list(r["available_actions"]))
        if r["done"] and not won:  # the server's own step limit
            out = (*out[:3], True, out[4])
        return out

    def close(self, c: JsonClient, sid: int) -> None:
        self._episodes.pop(sid, None)  # no /close route: the server keeps its envs until it stops


class BabyAIAdapter(AgentGymAdapter):
    """BabyAI (agentenv-babyai/agentenv_babyai/server.py and environment.py; client
    agentenv/agentenv/envs/babyai.py, at AgentGym 3ef9235d23e68e7c2920c5422ad957dc8ced5c6c).

    Data index i plays level `i % 40 + 1` of AgentGym's list on layout seed `i // 40` (the task type
    is the level's short name, e.g. `GoToRedBall`). The observation carries the goal ("Your goal: ...",
    first observation only) and the admissible actions ("Available actions: [...]", parsed from it).
    Actions are cleaned as the client cleans them (`clean_action`). The reward is the server's
    `reward` (BabyAI's, 1 - 0.9 * steps / level limit on success), whose running sum is the `score`
    the client reports. AgentGym's evaluator wants a final reward of exactly 1, which that discounted
    score never reaches; won is therefore the server's `done`, which it sets only when the task is
    completed (with a reward above 0.5).
    """

    protocol, short, title, greeting = "agentgym-babyai", "babyai", "BabyAI", "This is environment BabyAI."
    _ACTIONS = re.compile(r"\nAvailable actions: \[(.*?)\]?\s*$", re.DOTALL)

    def task(self, index: int) -> TaskSpec:
        level, seed = babyai_level(index)
        return TaskSpec(f"{self.protocol}/{index}", BABYAI_LEVELS[index % 40], GAME_SPLIT,
                        {"data_idx": index, "level": level, "layout_seed": seed})

    def _admissible(self, obs: str) -> list[str]:
        m = self._ACTIONS.search(obs)
        return re.findall(r'"([^"]*)"', m.group(1)) if m else []

    def reset(self, c: JsonClient, sid: int, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        task = self._pick(task_id, seed)
        r = self._call(c, "POST", "/reset", {"id": sid, "data_idx": task.extra["data_idx"]},
                       keys=("observation", "score"))
        obs = str(r["observation"])
        ep = self._begin(sid, task, _goal_after(r"^Your goal: (.*)$", obs))
        return obs, self._info(ep, admissible_actions=self._admissible(obs), score=r["score"])

    def step(self, c: JsonClient, sid: int, action: str) -> tuple[str, float, bool, bool, dict]:
        ep = self._episode(sid)
        sent = clean_action(action)
        r = self._call(c, "POST", "/step", {"id": sid, "action": sent}, idempotent=False,
                       keys=("observation", "reward", "score", "done"))
        obs, done = str(r["observation"]), bool(r["done"])
        more = {"sent_action": sent} if sent != action else {}
        return self._end_step(ep, obs, r["reward"], done, done, admissible_actions=self._admissible(obs),
                              score=r["score"], **more)


class SciWorldAdapter(AgentGymAdapter):
    """SciWorld (agentenv-sciworld/agentenv_sciworld/server.py and environment.py; client
    agentenv/agentenv/envs/sciworld.py, at AgentGym 3ef9235d23e68e7c2920c5422ad957dc8ced5c6c).

    The data index is a (task, variation) of the server's list (0..4638 with scienceworld 1.2.3).
    The first observation is the client's: the task description, a newline, the look around; the
    goal is the task description, and the server's `task_name` and `var_num` go in the info. There is
    no list of actions: any action goes to the server, which answers "No known action matches that
    input." to one it cannot parse (recorded as `action_valid` False). The reward is the server's
    (the change of score), `score` the running score (0..100, -100 when the task failed, which ends
    it); won when the score is 100, as AgentGym's evaluator counts SciWorld.
    """

    protocol, short, title, greeting = "agentgym-sciworld", "sciworld", "SciWorld", "This is environment ScienceWorld."
    UNKNOWN = "No known action matches that input."

    def reset(self, c: JsonClient, sid: int, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        task = self._pick(task_id, seed)
        r = self._call(c, "POST", "/reset", {"id": sid, "data_idx": task.extra["data_idx"]},
                       keys=("task_description", "observation", "score"))
        description = str(r["task_description"])
        ep = self._begin(sid, task, _one_line(description), task_name=str(r.get("task_name") or ""),
                         var_num=r.get("var_num"))
        return f"{description}\n{r['observation']}", self._info(ep, score=r["score"])

    def step(self, c: JsonClient, sid: int, action: str) -> tuple[str, float, bool, bool, dict]:
        ep = self._episode(sid)
        r = self._call(c, "POST", "/step", {"id": sid, "action": action.strip()}, idempotent=False,
                       keys=("observation", "reward", "score", "done"))
        obs = str(r["observation"])
        valid = obs.strip() != self.UNKNOWN
        return self._end_step(ep, obs, r["reward"], bool(r["done"]), float(r["score"]) == 100.0, score=r["score"],
                              action_valid=valid, invalid_reason="" if valid else obs.strip())

    def close(self, c: JsonClient, sid: int) -> None:
        self._episodes.pop(sid, None)
        # Sent once: a second close of the same env is an HTTP 500, which a retry would only repeat.
        self._call(c, "POST", "/close", {"id": sid}, idempotent=False)


class TextCraftAdapter(AgentGymAdapter):
    """TextCraft (agentenv-textcraft/agentenv_textcraft/server.py and env_wrapper.py; client
    agentenv/agentenv/envs/textcraft.py, at AgentGym 3ef9235d23e68e7c2920c5422ad957dc8ced5c6c).

    The data index picks the goal item (modulo the server's 544 craftable items). /create needs a JSON
    body: the client's is sent. The goal is the observation's "Goal: ..." line; there is no list of
    actions (the crafting commands are in the observation): any action goes to the server, cleaned as
    the client cleans it (`clean_action`), and the server's "Could not ..." / "Wrong item format"
    answers are recorded as `action_valid` False. The reward is 1 when the goal is crafted (then won
    and terminated), else 0.
    """

    protocol, short, title, greeting = "agentgym-textcraft", "textcraft", "TextCraft", "This is environment TextCraft."
    _REFUSED = ("Could not ", "Wrong item format")

    def create(self, c: JsonClient) -> int:
        body = {"minecraft_dir": "agentenv_textcraft/", "commands": None, "goal": None}
        return self._id(c, self._call(c, "POST", "/create", body, keys=("id",)))

    def reset(self, c: JsonClient, sid: int, seed: int | None, task_id: str | None) -> tuple[str, dict]:
        task = self._pick(task_id, seed)
        r = self._call(c, "POST", "/reset", {"id": sid, "data_idx": task.extra["data_idx"]}, keys=("observation",))
        obs = str(r["observation"])
        ep = self._begin(sid, task, _goal_after(r"^Goal: (.*)$", obs))
        return obs, self._info(ep)

    def step(self, c: JsonClient, sid: int, action: str) -> tuple[str, float, bool, bool, dict]:
        ep = self._episode(sid)
        sent = clean_action(action)
        r = self._call(c, "POST", "/step", {"id": sid, "action": sent}, idempotent=False,
                       keys=("observation", "reward", "done"))
        obs = str(r["observation"])
        valid = not obs.startswith(self._REFUSED)
        more = {"sent_action": sent} if sent != action else {}
        return self._end_step(ep, obs, r["reward"], bool(r["done"]), float(r["reward"]) == 1.0,
                              action_valid=valid, invalid_reason="" if valid else obs, **more)


ADAPTERS: dict[str, type[AgentGymAdapter]] = {
    a.protocol: a for a in (WebShopAdapter, AlfworldAdapter, BabyAIAdapter, SciWorldAdapter, TextCraftAdapter)
}


def make_adapter(protocol: str, data_indices: str = "0-99", max_steps: int = 50) -> AgentGymAdapter:
    """The adapter speaking `protocol` (a key of `ADAPTERS`).

    Raises:
        ValueError: an unknown protocol, or bad data indices.
    """
    cls = ADAPTERS.get(protocol)
    if cls is None:
        raise ValueError(f"unknown AgentGym protocol {protocol!r}; known: {', '.join(ADAPTERS)}")
    return cls(data_indices=data_indices, max_steps=max_steps)


def probe(protocol: str, url: str, timeout_s: float = 10.0, token_env: str | None = None) -> None:
    """Check that `url` answers as the AgentGym server of `protocol` does (its GET /; WebShop's also
    lists its envs).

    Raises:
        ServerError: no answer, or another answer than that server's.
    """
    adapter = make_adapter(protocol)
    c = JsonClient(url, min(float(timeout_s), 10.0), retries=1, token_env=token_env)
    try:
        hello = c.call("GET", "/")
        ok = hello == adapter.greeting
        if ok and protocol == "agentgym-webshop":
            ok = isinstance(c.call("GET", "/list_envs"), list)
    except ServerError as err:
        raise ServerError(f"{url} does not answer as AgentGym's {adapter.title} server ({err})",
                          err.status, err.kind) from None
    finally:
        c.close()
    if not ok:
        raise ServerError(f"{url} does not answer as AgentGym's {adapter.title} server: GET / gave "
                          f"{str(hello)[:100]!r}, not {adapter.greeting!r} (is env.http.protocol={protocol} right?)")


__all__ = ["ADAPTERS", "AgentGymAdapter", "BABYAI_LEVELS", "babyai_level", "clean_action", "make_adapter", "probe"]
