"""WebShop's options (`env.webshop.*`), checked when the config is read, before any env starts."""

from __future__ import annotations

from dataclasses import dataclass

from agent_sft.envs.specs import EnvOptions, OptionError, option
from agent_sft.envs.webshop.checkout import INDEXES, CheckoutError, find_checkout, missing_files

GOAL_SETS = ("human", "synthetic")
SPLITS = ("train", "test")
OBSERVATIONS = ("verl-agent", "engine")


@dataclass
class WebshopOptions(EnvOptions):
    path: str | None = option(
        None,
        "WebShop checkout (default $WEBSHOP_PATH; `agent-sft envs webshop` checks it): a clone of princeton-nlp/"
        "WebShop (web_agent_site/, data/, search_engine/indexes) or verl-agent's repository (its vendored copy).",
        fingerprint=False,
    )
    goals: str = option("human", "Goals to play: human instructions (WebShop's default) or synthetic ones.",
                        choices=GOAL_SETS)
    game_split: str = option(
        "train", "Goals to play: test (goals 0 to test_goals-1, verl-agent's evaluation goals, flagged on the card) "
        "or train (the rest).", choices=SPLITS,
    )
    test_goals: int = option(500, "Goals in the test split, from goal 0 (verl-agent: 500).")
    num_products: int | None = option(
        None, "Products the engine loads and the index it searches, as WebShop's num_products: none (all; "
        "search_engine/indexes), 100, 1000 or 100000 (indexes_100, indexes_1k, indexes_100k).",
        choices=tuple(INDEXES),
    )
    observation: str = option(
        "verl-agent", "Page text: verl-agent's (the page after the instruction, each element quoted) or the "
        "engine's own text observation.", choices=OBSERVATIONS,
    )
    task_types: list[str] = option(
        [], "Only goals of these product categories (WebShop's: beauty, electronics, fashion, food, furniture); "
        "empty for all.", fingerprint=False,
    )

    def __post_init__(self) -> None:
        for name, allowed in (("goals", GOAL_SETS), ("game_split", SPLITS), ("observation", OBSERVATIONS)):
            if getattr(self, name) not in allowed:
                raise OptionError(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.num_products not in INDEXES:
            raise OptionError("num_products", f"{self.num_products!r} is not one of none, 100, 1000, 100000")
        if isinstance(self.test_goals, bool) or not isinstance(self.test_goals, int) or self.test_goals < 0:
            raise OptionError("test_goals", f"must be a whole number >= 0, got {self.test_goals!r}")
        if self.path not in (None, ""):
            try:
                root = find_checkout(self.path)
            except CheckoutError as err:
                raise OptionError("path", str(err)) from None
            missing = missing_files(root, self.num_products)
            if missing:
                raise OptionError("path", f"the WebShop checkout at {root} has no {', '.join(missing)} "
                                          "(`agent-sft envs webshop` says how to make them)")

    def kwargs(self) -> dict:
        out = {k: getattr(self, k) for k in ("path", "goals", "game_split", "test_goals", "num_products", "observation")}
        if self.task_types:
            out["task_types"] = list(self.task_types)
        return out
