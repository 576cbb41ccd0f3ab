"""A number-guessing text game on OpenEnv's server classes, with a Task API (splits train and test).

    python -m openenv_envs.guess --port 8000 [--max-sessions 8] [--hang-on 7] [--garbage-on 8] [--token T]

The target is the task's (split and index) or, reset without one, drawn from the seed. A guess of 6 makes
the env raise, and so does asking the state of a solved game whose target is 5; `--hang-on N` makes a guess
of N hang for 5 s; `--garbage-on N` makes the server answer a guess of N with a frame that is not JSON (faults
for the tests); `--token T` refuses every request without
`Authorization: Bearer T` (as a private Space does; OpenEnv's server itself checks none).
"""

import argparse
import random
import time

import uvicorn
from openenv.core.env_server import Action, Environment, Observation, State, create_app
from openenv.core.env_server.types import EnvironmentMetadata
from pydantic import Field

TASKS = {"train": [3, 7, 1, 9, 5], "test": [2, 8, 4]}
MAX_ATTEMPTS = 6


class GuessAction(Action):
    guess: int = Field(ge=0, le=10, description="your guess, 0 to 10")


class GuessObservation(Observation):
    text: str = ""
    attempts: int = 0


class GuessState(State):
    target: int | None = None
    solved: bool = False


class GuessEnv(Environment[GuessAction, GuessObservation, GuessState]):
    SUPPORTS_CONCURRENT_SESSIONS = True
    HANG_ON: int | None = None

    def __init__(self):
        super().__init__()
        self._state = GuessState()

    # The Task API, as OpenEnv's TaskProvider protocol declares it.
    def list_splits(self):
        return ["train", "test"]

    def list_tasks(self, split):
        return [{"id": f"{split}-{i}", "goal": "Guess the number between 0 and 10."} for i in range(len(TASKS[split]))]

    def num_tasks(self, split):
        return len(TASKS[split])

    def get_task(self, split, index):
        if not 0 <= index < len(TASKS[split]):
            raise IndexError(index)
        return self.list_tasks(split)[index]

    def get_task_range(self, split, start=None, stop=None):
        return self.list_tasks(split)[start:stop]

    def reset(self, seed=None, episode_id=None, split=None, index=None, **kw):
        target = TASKS[split][int(index)] if split is not None else random.Random(seed).randint(0, 10)
        self._state = GuessState(episode_id=episode_id, step_count=0, target=target)
        return GuessObservation(text="Guess a number from 0 to 10.")

    def step(self, action, timeout_s=None, **kw):
        if action.guess == 6:
            raise ValueError("six is cursed")
        if action.guess == self.HANG_ON:
            time.sleep(5)
        self._state.step_count += 1
        n, target = self._state.step_count, self._state.target
        if action.guess == target:
            self._state.solved = True
            return GuessObservation(text="Correct!", attempts=n, done=True, reward=1.0)
        hint = "higher" if action.guess < target else "lower"
        return GuessObservation(text=f"{action.guess} is wrong: guess {hint}.", attempts=n, done=n >= MAX_ATTEMPTS,
                                reward=0.0)

    @property
    def state(self):
        if self._state.solved and self._state.target == 5:
            raise RuntimeError("the state of a solved five is sealed")
        return self._state

    def get_metadata(self):
        return EnvironmentMetadata(name="guess", description="Guess a number from 0 to 10.", version="0.3.1",
                                   author="agent-sft tests")


def app(max_sessions: int = 8, garbage_on: int | None = None, token: str | None = None):
    made = create_app(GuessEnv, GuessAction, GuessObservation, env_name="guess", max_concurrent_envs=max_sessions,
                      state_cls=GuessState)
    if garbage_on is not None:
        made.add_middleware(GarbageOn, guess=garbage_on)
    if token:
        made.add_middleware(BearerOnly, token=token)
    return made


class BearerOnly:
    """ASGI middleware: a request or WebSocket handshake without `Authorization: Bearer <token>` is refused."""

    def __init__(self, app, token):
        self.app, self.want = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or dict(scope["headers"]).get(b"authorization") == self.want:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"detail": "a bearer token is required"}'})


class GarbageOn:
    """ASGI middleware: a /ws step guessing `guess` is answered with a text frame that is not JSON."""

    def __init__(self, app, guess):
        self.app, self.guess = app, guess

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        import json

        pending = {"garbage": False}

        async def recv():
            message = await receive()
            if message.get("type") == "websocket.receive" and message.get("text"):
                try:
                    body = json.loads(message["text"])
                except ValueError:
                    body = {}
                pending["garbage"] = body.get("type") == "step" and (body.get("data") or {}).get("guess") == self.guess
            return message

        async def snd(message):
            if message.get("type") == "websocket.send" and pending["garbage"]:
                pending["garbage"] = False
                message = {**message, "text": "<html>502 Bad Gateway</html>", "bytes": None}
            await send(message)

        await self.app(scope, recv, snd)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-sessions", type=int, default=8)
    p.add_argument("--hang-on", type=int, default=None)
    p.add_argument("--garbage-on", type=int, default=None)
    p.add_argument("--token", default=None)
    a = p.parse_args()
    GuessEnv.HANG_ON = a.hang_on
    uvicorn.run(app(a.max_sessions, a.garbage_on, a.token), host="127.0.0.1", port=a.port, log_level="warning")
