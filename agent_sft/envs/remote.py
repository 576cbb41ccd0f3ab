"""`RemoteEnv`: a `TextEnv` played on env servers, one session at a time on the least busy of them.

What a server speaks is its adapter's business (agent-sft's protocol, AgentGym's, OpenEnv's); what every
remote env shares is here: a session opened on the least busy server that answers (at the first reset,
or at once), kept across episodes, and closed after an error (the next reset opens another) and by
`close()`. An adapter has `tasks(client)`, `load(client)` (lower is less busy), `create(client)` (a
session), `reset(client, session, seed, task_id)`, `step(client, session, action)` and
`close(client, session)`, raising `ServerError` when a server fails.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from agent_sft.envs.base import TaskSpec
from agent_sft.envs.remote_client import JsonClient, ServerError

logger = logging.getLogger(__name__)


class RemoteEnv:
    """Play tasks on the servers of `clients` through `adapter`.

    Args:
        clients: one `JsonClient` per server.
        adapter: speaks the servers' protocol (see the module's docstring).
        open_now: open a session at once (a server builds its env meanwhile, while the pool starts its
            envs); when that fails, the first reset tries again.
    """

    def __init__(self, clients: list[JsonClient], adapter: Any, open_now: bool = True) -> None:
        if not clients:
            raise ValueError("a remote env needs at least one server URL")
        self.clients = list(clients)
        self.adapter = adapter
        self._client: JsonClient | None = None
        self._session: Any = None
        self._tie = random.Random()
        self._tasks: list[TaskSpec] | None = None
        if open_now:
            try:
                self._open()
            except ServerError as e:
                logger.info("no env session opened yet (%s); the first reset tries again", e)

    # --- TextEnv --------------------------------------------------------------------------------------

    def tasks(self) -> list[TaskSpec]:
        if self._tasks is None:
            errors = []
            for c in self.clients:
                try:
                    self._tasks = self.adapter.tasks(c)
                    break
                except ServerError as e:
                    errors.append(str(e))
            else:
                raise ServerError("no env server listed its tasks: " + "; ".join(errors))
        return list(self._tasks)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        task_id = (options or {}).get("task_id")
        try:
            if self._session is None:
                self._open()
            return self.adapter.reset(self._client, self._session, seed, task_id)
        except Exception:
            self._drop()
            raise

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._session is None:
            raise RuntimeError("the episode is over (or never started); call reset() first")
        try:
            return self.adapter.step(self._client, self._session, action)
        except Exception:
            self._drop()  # a session in an unknown state is closed; the next reset opens another
            raise

    def close(self) -> None:
        self._drop()
        for c in self.clients:
            c.close()

    # --- sessions -------------------------------------------------------------------------------------

    def _open(self) -> None:
        """Open a session on the least busy server that answers."""
        errors = []
        for c in self._by_load():
            try:
                self._session = self.adapter.create(c)
                self._client = c
                return
            except ServerError as e:
                errors.append(str(e))
        raise ServerError("no env server opened a session: " + "; ".join(errors))

    def _by_load(self) -> list[JsonClient]:
        if len(self.clients) == 1:
            return list(self.clients)
        loads = []
        for i, c in enumerate(self.clients):
            try:
                load = self.adapter.load(c)
            except ServerError:
                load = float("inf")
            # Ties (sessions opened at the same moment see the same loads) are broken at random, so
            # they spread; which server plays an episode never changes what it plays.
            loads.append((load, self._tie.random(), i))
        return [self.clients[i] for _, _, i in sorted(loads)]

    def _drop(self) -> None:
        """Close the session, quietly (one whose close does not get through ends on the server's side)."""
        if self._session is not None and self._client is not None:
            try:
                self.adapter.close(self._client, self._session)
            except Exception as e:  # noqa: BLE001 - retried already; its lease (or the server's idle timeout) ends it
                logger.info("could not close env session %s on %s: %s", self._session, self._client.base_url, e)
        self._session = None
        self._client = None
