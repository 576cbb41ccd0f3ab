"""The `openenv` env's options (`env.openenv.*`): which servers, which tasks, how success and text are read."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent_sft.envs.specs import EnvOptions, OptionError, PlayedEnv, option


def _check_function(name: str, ref: str | None) -> None:
    if not ref:
        return
    from agent_sft.envs.hooks import load_function

    try:
        load_function(ref)
    except ValueError as err:
        raise OptionError(name, str(err)) from None


SPACE_TOKEN_ENV = "HF_TOKEN"


def is_loopback(url: str) -> bool:
    """Whether `url`'s host is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_env_for(url: str, token_env: str | None) -> str | None:
    """The environment variable whose token goes to `url`: `token_env` when set; else `HF_TOKEN` for a Hub
    Space (https://*.hf.space) and none for any other server, so a Hub token reaches only the Hub."""
    if token_env:
        return token_env
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return SPACE_TOKEN_ENV if parts.scheme == "https" and host.endswith(".hf.space") else None


@dataclass
class OpenEnvOptions(EnvOptions):
    url: list[str] = option(
        [], "OpenEnv server URLs (one or more, e.g. http://127.0.0.1:8000 or a Space's https://<user>-<space>.hf.space): "
        "each session goes to the one with the fewest sessions of this process.", fingerprint=False)
    split: str | None = option(
        None, "The Task API split to play, of any type (default: the splits the server types train; an agent-sft "
        "server's env: all its splits); a server without a Task API plays seeds instead.")
    seeds: int = option(100, "Servers without a Task API: how many tasks, one per reset seed, the seeds seed_offset, "
                             "seed_offset + 1, ...")
    seed_offset: int = option(0, "Servers without a Task API: the first task seed.")
    success_reward: float | None = option(
        None, "Won when the episode ends (done) on a step rewarded at least this (the default rule, at 1.0, when "
        "no rule is set).")
    success_field: str | None = option(
        None, "Won when this field is true at the end of the episode: `observation.<name>` (the last observation) "
        "or `state.<name>` (the env's state, asked once the episode is done; one that cannot be read scores the "
        "episode not won, the reason in its info).")
    success_fn: str | None = option(
        None, "`module:function` (or `file.py:function`) given the last step as a dict (observation, reward, done) "
        "and answering whether the episode was won; `def won(step, state)` is also given the env's state (asked "
        "once the episode is done; one that cannot be read scores the episode not won, the reason in its info).")
    obs_to_text: str | None = option(
        None, "`module:function` (or `file.py:function`) turning an observation (a dict, as the server sent it) into "
        "the text the model reads; default: the rendering the README describes.")
    token_env: str = option(
        "", "Environment variable holding a bearer token, sent as Authorization: Bearer to every server (never "
        "stored; over plain http only to loopback servers), else HF_TOKEN, sent only to Hub Spaces "
        "(https://*.hf.space).", fingerprint=False)
    timeout_s: float = option(60.0, "Seconds a reply (a step of the env included) may take.", fingerprint=False)
    retries: int = option(3, "Retries (with backoff) of what is safe to repeat (the server's routes, a reset); a "
                             "step is never sent twice.", fingerprint=False)
    capacity_wait_s: float = option(
        30.0, "Seconds a server that answered CAPACITY_REACHED is offered no more sessions.", fingerprint=False)
    served: dict = option({}, "What the servers reported at the start of the run (env name and version, Task API, "
                              "task set fingerprint, MCP); filled in, not set by hand.")

    def __post_init__(self) -> None:
        if isinstance(self.url, str):
            self.url = [self.url]
        for u in self.url:
            if not re.match(r"^https?://[^/\s]+", str(u)):
                raise OptionError("url", f"{u!r} is not an http(s) URL such as http://127.0.0.1:8000")
        self.url = [str(u).rstrip("/") for u in self.url]
        if self.token_env:
            bare = [u for u in self.url if u.startswith("http://") and not is_loopback(u)]
            if bare:
                raise OptionError("token_env", f"a token is not sent over plain http to {bare[0]}: use its https "
                                               "URL, or leave token_env unset")
        if self.timeout_s <= 0:
            raise OptionError("timeout_s", f"must be > 0 (got {self.timeout_s})")
        if self.retries < 0:
            raise OptionError("retries", f"must be at least 0 (got {self.retries})")
        if self.capacity_wait_s < 0:
            raise OptionError("capacity_wait_s", f"must be at least 0 (got {self.capacity_wait_s})")
        if isinstance(self.seeds, bool) or int(self.seeds) < 1:
            raise OptionError("seeds", f"must be a whole number >= 1, got {self.seeds!r}")
        if isinstance(self.seed_offset, bool) or int(self.seed_offset) < 0:
            raise OptionError("seed_offset", f"must be a whole number >= 0, got {self.seed_offset!r}")
        rules = [k for k in ("success_reward", "success_field", "success_fn") if getattr(self, k) not in (None, "")]
        if len(rules) > 1:
            raise OptionError(rules[1], f"set one success rule, not {' and '.join(rules)}")
        if self.success_field and not re.fullmatch(r"(observation|state)\.[A-Za-z_][\w.]*", self.success_field):
            raise OptionError("success_field", f"{self.success_field!r} is not observation.<name> or state.<name>")
        _check_function("success_fn", self.success_fn)
        _check_function("obs_to_text", self.obs_to_text)

    def success_rule(self) -> str:
        """The success rule in words (the card says it)."""
        if self.success_field:
            return f"{self.success_field} is true at the end"
        if self.success_fn:
            where, _, name = self.success_fn.rpartition(":")
            short = os.path.basename(where) if where.endswith(".py") else where  # no local path on the card
            return f"{short}:{name} says so"
        return f"the episode ends on a step rewarded at least {1.0 if self.success_reward is None else self.success_reward:g}"

    def kwargs(self) -> dict[str, Any]:
        return {"url": list(self.url), "split": self.split, "seeds": int(self.seeds), "seed_offset": int(self.seed_offset),
                "success_reward": self.success_reward, "success_field": self.success_field,
                "success_fn": self.success_fn, "obs_to_text": self.obs_to_text, "token_env": self.token_env,
                "timeout_s": self.timeout_s, "retries": self.retries, "capacity_wait_s": self.capacity_wait_s,
                "served": dict(self.served)}

    def played_env(self) -> PlayedEnv:
        """An agent-sft server's env, as its /metadata describes it (`served["agent_sft"]`): episodes record
        its name, experts, packages and per-episode info keys. Any other server gives no expert's plan."""
        from agent_sft.envs.registry import find_spec

        own = (self.served or {}).get("agent_sft")
        if not isinstance(own, dict) or not own.get("env"):
            return PlayedEnv("openenv", has_expert=False)
        local = find_spec(own["env"])  # its expert is labelled as the same env played here labels it
        label = local.as_played().expert_label if local is not None else "{name}-{expert}"
        return PlayedEnv(str(own["env"]), tuple(own.get("experts") or ()), own.get("default_expert"), label,
                         packages=dict(own.get("packages") or {}), episode_keys=tuple(own.get("episode_keys") or ()),
                         has_expert=bool(own.get("has_expert")))

    def probe_servers(self) -> dict[str, str]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(16, len(self.url)) or 1, thread_name_prefix="agent-sft-probe") as pool:
            return dict(zip(self.url, pool.map(self._probe, self.url)))

    def _probe(self, url: str) -> str:
        """"" when `url` answers and still plays what the run recorded (`served`), else why not."""
        from agent_sft.envs.openenv.server import changed, describe
        from agent_sft.envs.remote_client import JsonClient, ServerError, probe_health

        token_env = token_env_for(url, self.token_env)
        why = probe_health(url, "/health", self.timeout_s, token_env)
        if why or not self.served:
            return why
        c = JsonClient(url, min(self.timeout_s, 5.0), retries=1, token_env=token_env)
        try:
            return changed(self.served, describe(c, self.split))
        except ServerError as err:
            return str(err)
        finally:
            c.close()
