"""The `http` env's options (`env.http.*`): which servers, which protocol, timeouts and retries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agent_sft.envs.http.indices import parse_indices
from agent_sft.envs.specs import EnvOptions, OptionError, PlayedEnv, option

PROTOCOLS = ("agent-sft", "agentgym-webshop", "agentgym-alfworld", "agentgym-babyai", "agentgym-sciworld",
             "agentgym-textcraft")


@dataclass
class HttpOptions(EnvOptions):
    url: list[str] = option(
        [], "Env server URLs (one or more, e.g. http://127.0.0.1:8100): each session goes to the least busy.",
        fingerprint=False)
    protocol: str = option(
        "agent-sft", "The servers' protocol: `agent-sft` (agent-sft serve-env) or an AgentGym server's "
        "(agentgym-webshop, agentgym-alfworld, agentgym-babyai, agentgym-sciworld, agentgym-textcraft).",
        choices=PROTOCOLS)
    served_env: str | None = option(
        None, "The env the servers play, as episodes record it (default: what an agent-sft server reports; "
        "agentgym-<name> for an AgentGym server).")
    data_indices: str = option(
        "0-99", "AgentGym servers: the data indices (tasks) to play, `a-b` (inclusive) or `a,b,c`; they list none.")
    timeout_s: float = option(60.0, "Seconds a request may take (a step of the served env included).",
                              fingerprint=False)
    retries: int = option(3, "Retries (with backoff) of requests that are safe to repeat; a step is never sent "
                             "twice.", fingerprint=False)
    lease_s: float = option(30.0, "agent-sft servers: seconds a session outlives its client, which renews the "
                                  "lease in the background, so a client killed or cut off has its sessions closed "
                                  "this long after (0: ask for none; the server's --idle-timeout-s applies).",
                            fingerprint=False)
    token_env: str = option("AGENT_SFT_ENV_TOKEN", "Environment variable holding the servers' bearer token "
                                                   "(sent when set; never stored).", fingerprint=False)
    served_options: dict = option({}, "The served env's options that decide its episodes, as the agent-sft "
                                      "server reports them at the start of a run (filled in).")
    served: dict = option({}, "What else the agent-sft server reported at the start of the run (experts, "
                              "packages, per-episode info keys); filled in, not set by hand.", fingerprint=False)

    def __post_init__(self) -> None:
        if isinstance(self.url, str):
            self.url = [self.url]
        for u in self.url:
            if not re.match(r"^https?://[^/\s]+", str(u)):
                raise OptionError("url", f"{u!r} is not an http(s) URL such as http://127.0.0.1:8100")
        self.url = [str(u).rstrip("/") for u in self.url]
        if self.protocol not in PROTOCOLS:
            raise OptionError("protocol", f"{self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.timeout_s <= 0:
            raise OptionError("timeout_s", f"must be > 0 (got {self.timeout_s})")
        if self.lease_s < 0:
            raise OptionError("lease_s", f"must be at least 0 (got {self.lease_s})")
        if self.retries < 0:
            raise OptionError("retries", f"must be at least 0 (got {self.retries})")
        try:
            parse_indices(self.data_indices)
        except ValueError as err:
            raise OptionError("data_indices", str(err)) from None
        if self.protocol != "agent-sft" and not self.served_env:
            self.served_env = self.protocol

    def kwargs(self) -> dict[str, Any]:
        return {"url": list(self.url), "protocol": self.protocol, "data_indices": self.data_indices,
                "timeout_s": self.timeout_s, "retries": self.retries, "token_env": self.token_env,
                "lease_s": self.lease_s,
                "served_env": self.served_env}

    def played_env(self) -> PlayedEnv | None:
        from agent_sft.envs.registry import find_spec

        if not self.served_env:
            return None
        s = self.served or {}
        local = find_spec(self.served_env)  # its expert is labelled as the same env played here labels it
        label = local.as_played().expert_label if local is not None else "{name}-{expert}"
        return PlayedEnv(self.served_env, tuple(s.get("experts") or ()), s.get("default_expert"), label,
                         packages=dict(s.get("packages") or {}), episode_keys=tuple(s.get("episode_keys") or ()),
                         has_expert=self.protocol == "agent-sft" and bool(s.get("has_expert", True)))

    def replays(self) -> str:
        """An agent-sft server replays an episode (it takes its seed and task id); an AgentGym server takes no seed."""
        from agent_sft.envs.registry import find_spec

        if self.protocol != "agent-sft":
            return f"{self.protocol} servers take no episode seed to replay an episode with"
        served = find_spec(self.served_env) if self.served_env else None
        if served is not None and not served.card.replays:
            return f"{served.card.title or served.name} (served) cannot replay an episode"
        return ""

    def probe_servers(self) -> dict[str, str]:
        from concurrent.futures import ThreadPoolExecutor

        from agent_sft.envs.http.env import probe_health

        # All at once: the verdict comes within one probe's time however many servers do not answer.
        with ThreadPoolExecutor(max_workers=min(16, len(self.url)) or 1, thread_name_prefix="agent-sft-probe") as pool:
            whys = pool.map(lambda u: probe_health(u, self.protocol, self.timeout_s, self.token_env), self.url)
            return dict(zip(self.url, whys))
