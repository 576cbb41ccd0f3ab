"""Loopback fakes of AgentGym's env servers, each wrapping a real env of agent-sft behind that server's routes.

The routes, request fields, reply shapes and error styles are those of AgentGym's servers at commit
3ef9235d23e68e7c2920c5422ad957dc8ced5c6c (agentenv-<env>/agentenv_<env>/{server,model,environment,
env_wrapper}.py): ids handed out by /create (a bare random int for WebShop), a reset reply of
`[observation, null]` for WebShop, HTTP 200 `{"error": ...}` for a failure where the server catches it,
500 where it does not (all of WebShop, SciWorld's second /close), 404 for the /close WebShop and ALFWorld
lack. The visual-mode routes (BabyAI's /render, SciWorld's /step_visual and friends) are left out.

What each plays:
- WebShop: the built-in TextWorld games (the data index is the goal); a search page first, then the
  game with its admissible commands as the page's clickables; the game's end plays the part of
  `click[buy now]`: done, with reward 1.0 when won and 0.0 when lost.
- ALFWorld: `AlfworldEnv(data_path="builtin")`, game index -> its task list; the server's 50-step limit.
- BabyAI: `BabyAIEnv` on AgentGym's level (`data_idx % 40 + 1`) and layout seed (`data_idx // 40`),
  restricted to the levels installed minigrid registers (another level's reset is an `{"error"}`); the
  actions are agent-sft's action words, listed as AgentGym lists its own.
- SciWorld: the built-in TextWorld games as (task, variation) pairs; score 0..100 (the game's score
  scaled), -100 when the game is lost; an action the game does not admit gets SciWorld's "No known
  action matches that input." without reaching the game.
- TextCraft: FrozenLake (random 4x4 maps, one per task; `data_idx` modulo the task count); its moves
  are the "crafting commands", anything else "Could not execute ...". A fall into a hole also ends it.

Test hooks, outside the HTTP routes: `plans[data_idx]` is the wrapped env's expert plan now (AgentGym
servers expose none; a test's scripted policy reads it), and `faults[data_idx] = k` makes the k-th step
after a reset of that index fail the way the server reports failures.

    with BabyAIServer().serve() as url:
        ...  # env.http.url=url env.http.protocol=agentgym-babyai
"""

import asyncio
import random
import re
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from agent_sft.envs.http.agentgym import babyai_level

BIG = 10**6  # the wrapped envs' own step limit: the servers (and the client's max_steps) cut episodes


# --- request and reply models, as the servers' model.py files declare them ---------------------------


class IdStep(BaseModel):
    id: int
    action: str


class DataReset(BaseModel):
    id: int
    data_idx: int


class CraftReset(BaseModel):
    id: int
    data_idx: int | None = 0


class CraftCreate(BaseModel):
    commands: str | None = None
    goal: str | None = None


class GameReset(BaseModel):
    id: int
    game: int
    world_type: str


class Close(BaseModel):
    id: int


class StepQuery(BaseModel):
    env_idx: int
    action: str


class StepResponse(BaseModel):
    state: str
    reward: float
    done: bool
    info: None


class AvailableActionsResponse(BaseModel):
    has_search_bar: bool
    clickables: list[str]


class StateResponse(BaseModel):
    url: str
    html: str
    instruction_text: str


class ResetQuery(BaseModel):
    env_idx: int
    session_id: int | None = None


# --- serving ------------------------------------------------------------------------------------------


class Served:
    """A FastAPI app served by uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: FastAPI):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        self.stop()


class FakeServer:
    """What the fakes share: sequential ids, requests served one at a time (the wrapped envs are not
    thread-safe; AgentGym's ALFWorld server serves one at a time too), the test hooks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plans: dict[int, list[str]] = {}
        self.faults: dict[int, int] = {}
        self.env: dict[int, object] = {}
        self.info: dict[int, dict] = {}
        self.ls: list[int] = []
        self.index: dict[int, int] = {}  # env id -> the data index it plays
        self.steps: dict[int, int] = {}  # env id -> steps since its reset
        self._max_id = 0
        self.app = self.make_app()

    def serve(self) -> Served:
        return Served(self.app)

    def new_id(self) -> int:
        with self.lock:
            idx = self._max_id
            self._max_id += 1
        return idx

    def started(self, idx: int, data_idx: int, info: dict) -> None:
        self.index[idx], self.steps[idx] = data_idx, 0
        self.plans[data_idx] = list(info.get("expert_plan") or [])

    def stepped(self, idx: int) -> None:
        """Count a step of env `idx`; raise the injected fault when this is the step asked for."""
        self.steps[idx] = self.steps.get(idx, 0) + 1
        data_idx = self.index.get(idx)
        if self.faults.get(data_idx) == self.steps[idx]:
            raise RuntimeError(f"injected fault at step {self.steps[idx]} of data index {data_idx}")

    def noted(self, idx: int, info: dict) -> None:
        self.plans[self.index[idx]] = list(info.get("expert_plan") or [])

    def check_id(self, idx: int, is_reset: bool = False, done_check: bool = True) -> None:
        if idx not in self.info:
            raise ValueError(f"The id {idx} is not valid.")
        if self.info[idx]["deleted"]:
            raise ValueError(f"The task with environment {idx} has been deleted.")
        if done_check and not is_reset and self.info[idx]["done"]:
            raise ValueError(f"The task with environment {idx} has finished.")

    def new_app(self) -> FastAPI:
        app, one = FastAPI(), asyncio.Lock()

        @app.middleware("http")
        async def one_at_a_time(request, call_next):
            async with one:
                return await call_next(request)

        return app

    def make_app(self) -> FastAPI:
        raise NotImplementedError


def _error(e: Exception) -> dict:
    return {"error": str(e)}


# --- BabyAI -------------------------------------------------------------------------------------------


class BabyAIServer(FakeServer):
    """agentenv-babyai around `agent_sft.envs.babyai.BabyAIEnv`."""

    def create(self) -> dict:
        idx = self.new_id()
        self.info[idx] = {"deleted": False, "done": False}
        self.ls.append(idx)
        return {"id": idx}

    @staticmethod
    def _listing(env) -> str:
        return "\nAvailable actions: [" + ", ".join(f'"{a}"' for a in [*env.actions, "check available actions"]) + "]"

    @staticmethod
    def _description(text: str) -> str:
        lines = text.split("\n")
        return "\n".join(lines[1:] if lines and lines[0].startswith("Mission:") else lines)

    def reset(self, idx: int, data_idx: int) -> dict:
        from agent_sft.envs.babyai import BabyAIEnv

        try:
            self.check_id(idx, True)
            if data_idx < 0:
                raise ValueError(f"Seed must be greater or equal to zero, actual value: {data_idx}")
            level, seed = babyai_level(data_idx)
            env = BabyAIEnv(levels=[level], seeds_per_level=1, seed_offset=seed, expert="bot", max_steps=BIG)
            obs, info = env.reset(options={"task_id": env.tasks()[0].task_id})
            goal = info["goal"].replace("then", "and").replace("after you", "and")
            old = self.env.get(idx)
            if old is not None:
                old.close()
            self.env[idx] = env
            self.started(idx, data_idx, info)
            payload = {"observation": f"Your goal: {goal}\n{self._description(obs)}{self._listing(env)}",
                       "reward": 0, "score": 0, "deleted": False, "done": False}
            self.info[idx].update(payload)
            return payload
        except Exception as e:
            return _error(e)

    def step(self, idx: int, action: str) -> dict:
        try:
            self.check_id(idx)
            env, info = self.env[idx], self.info[idx]
            self.stepped(idx)
            action = action.lower().strip()
            reward, done = info["reward"], False  # an action that does not act keeps the last reward
            if "check" in action:
                text = "You can take the following actions: " + ", ".join([*env.actions, "check available actions"])
            elif action == "":
                text = "No change in state."
            elif action not in env.actions:
                text = "The action is not recognized. Please check valid actions."
            else:
                obs, reward, terminated, _, step_info = env.step(action)
                self.noted(idx, step_info)
                text = self._description(obs)
                done = bool(terminated and reward > 0.5)  # AgentGym: a success reward of 0.5 or less goes on
                if done:
                    text += "\n The task is completed."
            payload = {"observation": text + self._listing(env), "reward": reward, "score": info["score"] + reward,
                       "done": done}
            info.update(payload)
            return payload
        except Exception as e:
            return _error(e)

    def observe(self, idx: int) -> dict:
        try:
            self.check_id(idx)
            if self.env.get(idx) is None:
                return {"observation": "Environment not initialized", "reward": 0, "score": 0, "done": False,
                        "deleted": self.info[idx]["deleted"]}
            info = self.info[idx]
            return {k: info[k] for k in ("observation", "reward", "score", "done", "deleted")}
        except Exception as e:
            return _error(e)

    def close(self, idx: int) -> bool:
        try:
            self.ls.remove(idx)
            env = self.env.pop(idx, None)
            if env is not None:
                env.close()
            del self.info[idx]
            return True
        except (KeyError, ValueError):
            return False

    def make_app(self) -> FastAPI:
        app = self.new_app()

        @app.get("/")
        def hello():
            return "This is environment BabyAI."

        @app.post("/create")
        def create():
            return self.create()

        @app.post("/step")
        def step(body: IdStep):
            return self.step(body.id, body.action)

        @app.post("/reset")
        def reset(body: DataReset):
            return self.reset(body.id, body.data_idx)

        @app.get("/observation")
        def get_observation(id: int):
            return self.observe(id)

        @app.post("/close")
        def close(body: Close):
            return self.close(body.id)

        return app


# --- ALFWorld -----------------------------------------------------------------------------------------


class AlfworldServer(FakeServer):
    """agentenv-alfworld around `agent_sft.envs.alfworld.AlfworldEnv(data_path="builtin")`."""

    MAX_STEPS = 50  # base_config.yaml's max_nb_steps_per_episode (training_method: dagger)

    def __init__(self) -> None:
        super().__init__()
        self.env_init: dict[int, object] = {}  # set by a reset, as the server's own
        self.games: list | None = None

    def _make(self):
        from agent_sft.envs.alfworld import AlfworldEnv

        env = AlfworldEnv(data_path="builtin", expert="planner", max_steps=self.MAX_STEPS)
        if self.games is None:
            self.games = env.tasks()
        return env

    def create(self) -> dict:
        try:
            idx = self.new_id()
            self.env[idx] = self._make()
            self.info[idx] = {"done": False, "reward": 0, "deleted": False}
            self.ls.append(idx)
            return {"id": idx}
        except Exception as e:
            return {"error": f"{e}"}

    def reset(self, idx: int, game: int, world_type: str) -> dict:
        if world_type not in ["Text", "Embody", "Hybrid"]:
            return {"error": 'world_type must be one of "Text", "Embody" and "Hybrid"'}
        try:
            self.check_id(idx, True)
            task = self.games[game]
            env = self.env[idx]
            ob, info = env.reset(options={"task_id": task.task_id})
            self.env_init[idx] = env
            self.started(idx, game, info)
            ob = "\n".join(ob.split("\n\n")[1:])  # drops "-= Welcome to TextWorld, ALFRED! =-"
            payload = {"id": idx, "observation": ob, "available_actions": info["admissible_actions"],
                       "task_type": "/".join(task.task_id.split("/")[-2:])}
            self.info[idx] = {"world_type": world_type, "game": game, "observation": ob,
                              "available_actions": info["admissible_actions"], "done": False, "reward": 0,
                              "deleted": False}
            return payload
        except Exception as e:
            return {"error": str(e)}

    def step(self, idx: int, action: str) -> dict:
        try:
            self.check_id(idx)
            env = self.env_init[idx]
            self.stepped(idx)
            ob, _, terminated, truncated, info = env.step(action)
            self.noted(idx, info)
            if ob.startswith("You arrive at loc "):
                ob = ob[ob.find(". ") + 2:]
            payload = {"observation": ob, "reward": float(info["won"]), "available_actions": info["admissible_actions"],
                       "done": bool(terminated or truncated)}
            self.info[idx].update(payload)
            return payload
        except Exception as e:
            return {"error": f"{e}"}

    def get(self, idx: int, key: str | None):
        try:
            self.check_id(idx)
            return self.info[idx][key] if key else self.info[idx]
        except Exception as e:
            return {"error": str(e)}

    def make_app(self) -> FastAPI:
        app = self.new_app()

        @app.get("/")
        def hello():
            return "This is environment AlfWorld."

        @app.post("/create")
        def create():
            return self.create()

        @app.post("/step")
        def step(body: IdStep):
            return self.step(body.id, body.action)

        @app.post("/reset")
        def reset(body: GameReset):
            return self.reset(body.id, body.game, body.world_type)

        @app.get("/available_actions")
        def get_available_actions(id: int):
            return self.get(id, "available_actions")

        @app.get("/observation")
        def get_observation(id: int):
            return self.get(id, "observation")

        @app.get("/detail")
        def get_detailed_info(id: int):
            return self.get(id, None)

        return app


# --- SciWorld -----------------------------------------------------------------------------------------


class SciWorldServer(FakeServer):
    """agentenv-sciworld around the built-in TextWorld games (`TextworldEnv`), one per (task, variation)."""

    UNKNOWN = "No known action matches that input."

    def __init__(self) -> None:
        super().__init__()
        self.games: list[dict] | None = None

    def _make(self):
        from agent_sft.envs.textworld import TextworldEnv

        env = TextworldEnv(expert="walkthrough", max_steps=BIG)
        if self.games is None:
            counts: dict[str, int] = {}
            self.games = []
            for t in env.tasks():  # sorted by path: a task type's games in a row, as SciWorld's variations
                self.games.append({"taskName": t.task_type, "variationIdx": counts.get(t.task_type, 0), "task": t})
                counts[t.task_type] = counts.get(t.task_type, 0) + 1
        return env

    def create(self) -> dict:
        try:
            idx = self.new_id()
            self.env[idx] = self._make()
            self.info[idx] = {"deleted": False, "done": False}
            self.ls.append(idx)
            return {"id": idx}
        except Exception as e:
            return {"error": str(e)}

    @staticmethod
    def _score(info: dict) -> int:
        if info["lost"]:
            return -100
        return round(100 * info["score"] / max(1, info["max_score"]))

    def reset(self, idx: int, data_idx: int) -> dict:
        try:
            self.check_id(idx, True)
            game = self.games[data_idx]
            obs, info = self.env[idx].reset(options={"task_id": game["task"].task_id})
            self.started(idx, data_idx, info)
            self.info[idx]["admissible"] = [a.lower() for a in info["admissible_actions"]]
            payload = {"task_name": game["taskName"], "var_num": game["variationIdx"], "task_description": info["goal"],
                       "observation": obs, "reward": 0, "score": 0, "deleted": False, "done": False}
            self.info[idx].update(payload)
            return payload
        except Exception as e:
            return {"error": str(e)}

    def step(self, idx: int, action: str) -> dict:
        try:
            self.check_id(idx)
            info = self.info[idx]
            self.stepped(idx)
            command = action.strip().lower()
            if command not in info["admissible"]:
                payload = {"observation": self.UNKNOWN, "reward": 0, "score": info["score"], "done": False}
            else:
                obs, _, terminated, _, step_info = self.env[idx].step(command)
                self.noted(idx, step_info)
                info["admissible"] = [a.lower() for a in step_info["admissible_actions"]]
                score = self._score(step_info)
                payload = {"observation": obs, "reward": score - info["score"], "score": score, "done": terminated}
            info.update(payload)
            return {k: payload[k] for k in ("observation", "reward", "score", "done")}
        except Exception as e:
            return {"error": str(e)}

    def close(self, idx: int) -> bool:
        # Uncaught, as the server's: an unknown id or a second close is an HTTP 500.
        if self.info[idx]["deleted"]:
            raise ValueError(f"The task with environment {idx} has been deleted.")
        self.env[idx].close()
        self.info[idx]["deleted"] = True
        self.ls.remove(idx)
        return True

    def get(self, idx: int, what: str):
        try:
            self.check_id(idx)
            info = self.info[idx]
            if what == "observation":
                return info["observation"]
            if what == "action_hint":
                return {"possible_actions": list(info["admissible"]), "possible_objects": []}
            if what == "goals":
                return {"goals": f"score {info['score']}"}
            return {k: v for k, v in info.items() if k != "admissible"}
        except Exception as e:
            return {"error": str(e)}

    def make_app(self) -> FastAPI:
        app = self.new_app()

        @app.get("/")
        def hello():
            return "This is environment ScienceWorld."

        @app.post("/create")
        def create():
            return self.create()

        @app.post("/step")
        def step(body: IdStep):
            return self.step(body.id, body.action)

        @app.post("/reset")
        def reset(body: DataReset):
            return self.reset(body.id, body.data_idx)

        @app.post("/close")
        def close(body: Close):
            return self.close(body.id)

        @app.get("/observation")
        def get_observation(id: int):
            return self.get(id, "observation")

        @app.get("/action_hint")
        def get_action_hint(id: int):
            return self.get(id, "action_hint")

        @app.get("/goals")
        def get_goals(id: int):
            return self.get(id, "goals")

        @app.get("/detail")
        def get_detailed_info(id: int):
            return self.get(id, "detail")

        return app


# --- TextCraft ----------------------------------------------------------------------------------------


class TextCraftServer(FakeServer):
    """agentenv-textcraft around FrozenLake (`FrozenLakeTextEnv`, a random map per task)."""

    TASKS = 16

    def __init__(self) -> None:
        super().__init__()
        self.over: set[int] = set()  # envs whose game ended (their steps no longer reach it)

    def _reset(self, idx: int, data_idx: int) -> str:
        env = self.env[idx]
        self.over.discard(idx)
        task = env.tasks()[data_idx % len(env.tasks())]
        obs, info = env.reset(options={"task_id": task.task_id})
        self.started(idx, data_idx, info)
        commands = "\n".join(env.action_names)
        return f"Crafting commands:\n{commands}\n\n{obs}\n\nGoal: {info['goal']}"

    def create(self) -> dict:
        from agent_sft.envs.gym import FrozenLakeTextEnv

        try:
            idx = self.new_id()
            self.env[idx] = FrozenLakeTextEnv(seeds=self.TASKS, expert="shortest_path", max_steps=BIG)
            ob = self._reset(idx, idx)  # the server resets a new env on the task numbered as its id
            self.ls.append(idx)
            self.info[idx] = {"observation": ob, "done": False, "reward": 0, "deleted": False}
            return {"id": idx, "observation": ob, "done": False, "reward": 0}
        except Exception as e:
            return {"error": f"{e}"}

    def reset(self, idx: int, data_idx: int) -> dict:
        try:
            self.check_id(idx, done_check=False)
            ob = self._reset(idx, data_idx)
            self.info[idx].update({"observation": ob, "done": False, "reward": 0, "deleted": False})
            return {"id": idx, "observation": ob, "done": False, "reward": 0}
        except Exception as e:
            return {"error": str(e)}

    def step(self, idx: int, action: str) -> dict:
        try:
            self.check_id(idx, done_check=False)  # TextCraft does not stop steps after done
            env = self.env[idx]
            self.stepped(idx)
            if action in env.action_names and idx not in self.over:
                ob, reward, terminated, _, info = env.step(action)
                self.noted(idx, info)
                payload = {"observation": ob, "reward": int(reward), "done": bool(terminated)}
                if terminated:
                    self.over.add(idx)
            else:
                payload = {"observation": f"Could not execute {action}", "reward": 0, "done": False}
            self.info[idx].update(payload)
            return payload
        except Exception as e:
            return {"error": f"{e}"}

    def close(self, idx: int) -> bool:
        try:
            self.ls.remove(idx)
            self.env.pop(idx).close()
            del self.info[idx]
            return True
        except (KeyError, ValueError):
            return False

    def get(self, idx: int, key: str | None):
        try:
            self.check_id(idx, done_check=False)
            return self.info[idx][key] if key else self.info[idx]
        except Exception as e:
            return {"error": str(e)}

    def make_app(self) -> FastAPI:
        app = self.new_app()

        @app.get("/")
        def hello():
            return "This is environment TextCraft."

        @app.post("/create")
        def create(body: CraftCreate):
            return self.create()

        @app.post("/step")
        def step(body: IdStep):
            return self.step(body.id, body.action)

        @app.post("/reset")
        def reset(body: CraftReset):
            return self.reset(body.id, body.data_idx)

        @app.get("/observation")
        def get_observation(id: int):
            return self.get(id, "observation")

        @app.get("/commands")
        def get_commands(id: int):
            raise AttributeError("'TextCraft_Wrapper' object has no attribute 'get_commands'")  # as the server's

        @app.get("/goal")
        def get_goal(id: int):
            raise AttributeError("'TextCraft_Wrapper' object has no attribute 'get_goal'")  # as the server's

        @app.get("/detail")
        def get_detailed_info(id: int):
            return self.get(id, None)

        @app.post("/close")
        def close(body: Close):
            return self.close(body.id)

        return app


# --- WebShop ------------------------------------------------------------------------------------------


class WebShopServer(FakeServer):
    """agentenv-webshop around the built-in TextWorld games (`TextworldEnv`): search page, game, done page.

    WebShop catches nothing: an unknown env id, a goal index past the end or an injected fault is an
    HTTP 500.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(48950076)
        self.tasks: list | None = None

    def create(self) -> int:
        from agent_sft.envs.textworld import TextworldEnv

        idx = self.rng.randint(0, 48950076)
        env = TextworldEnv(expert="walkthrough", max_steps=BIG)
        self.tasks = self.tasks or env.tasks()
        self.env[idx] = {"tw": env}
        self.ls.append(idx)
        self.reset(idx, None)  # the server resets a new env on a random goal
        return idx

    @staticmethod
    def _page(goal: str, text: str) -> str:
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        return " [SEP] ".join(["Instruction:", goal, *lines])

    def reset(self, idx: int, session_id: int | None) -> tuple[str, None]:
        e = self.env[idx]
        goal_index = self.rng.randrange(len(self.tasks)) if session_id is None else session_id
        task = self.tasks[goal_index]
        obs, info = e["tw"].reset(options={"task_id": task.task_id})
        e.update(page="search", goal=info["goal"], game_obs=obs, clickables=["search"], session=goal_index,
                 text=f"WebShop [SEP] Instruction: [SEP] {info['goal']} [SEP] Search")
        e["game_clickables"] = [a.lower() for a in info["admissible_actions"]]
        self.started(idx, goal_index, info)
        return e["text"], None

    def step(self, idx: int, action: str) -> StepResponse:
        e = self.env[idx]
        self.stepped(idx)
        reward, done = 0.0, False
        m = re.match(r"(.+)\[(.+)\]", action)
        name, arg = (m.group(1), m.group(2).lower()) if m else ("", "")
        if name == "search" and arg.strip() and e["page"] == "search":
            e.update(page="game", clickables=e["game_clickables"], text=self._page(e["goal"], e["game_obs"]))
        elif name == "click" and arg in e["clickables"] and arg != "search":
            obs, _, terminated, _, info = e["tw"].step(arg)
            self.noted(idx, info)
            if terminated:
                reward, done = (1.0 if info["won"] else 0.0), True
                e.update(page="done", clickables=[], text=" [SEP] ".join(
                    ["Thank you for shopping with us!", *[s.strip() for s in obs.split("\n") if s.strip()],
                     "Your score (min 0.0, max 1.0)", str(reward)]))
            else:
                e.update(clickables=[a.lower() for a in info["admissible_actions"]], text=self._page(e["goal"], obs))
        return StepResponse(state=e["text"], reward=reward, done=done, info=None)

    def make_app(self) -> FastAPI:
        app = self.new_app()

        @app.get("/", response_model=str)
        async def generate_ok():
            return "ok"

        @app.get("/list_envs", response_model=list[int])
        def list_envs():
            return list(self.env.keys())

        @app.post("/create", response_model=int)
        def create():
            return self.create()

        @app.post("/step", response_model=StepResponse)
        def step(step_query: StepQuery):
            return self.step(step_query.env_idx, step_query.action)

        @app.get("/available_actions", response_model=AvailableActionsResponse)
        def get_available_actions(env_idx: int):
            e = self.env[env_idx]
            return AvailableActionsResponse(has_search_bar=e["page"] == "search", clickables=list(e["clickables"]))

        @app.get("/instruction_text", response_model=str)
        def get_instruction_text(env_idx: int):
            return f"Instruction: {self.env[env_idx]['goal']}"

        @app.get("/observation", response_model=str)
        def observation(env_idx: int):
            return self.env[env_idx]["text"]

        @app.get("/state", response_model=StateResponse)
        def get_state(env_idx: int):
            e = self.env[env_idx]
            return StateResponse(url=f"http://127.0.0.1:3000/{e['session']}", html=f"<html><body>{e['text']}</body></html>",
                                 instruction_text=f"Instruction: {e['goal']}")

        @app.post("/reset", response_model=tuple[str, None])
        def reset(reset_query: ResetQuery):
            return self.reset(reset_query.env_idx, reset_query.session_id)

        return app


SERVERS = {
    "agentgym-webshop": WebShopServer,
    "agentgym-alfworld": AlfworldServer,
    "agentgym-babyai": BabyAIServer,
    "agentgym-sciworld": SciWorldServer,
    "agentgym-textcraft": TextCraftServer,
}
