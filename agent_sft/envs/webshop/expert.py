"""The oracle buyer: reads the goal's target (its query, product and options) from the engine and plans
the rest of the purchase from the page the episode is on, in actions the engine accepts.

From the search page it searches the goal's query (or, when the target is not among the query's results,
the product's title), pages to the result page holding the target, opens it, clicks each wanted option
and buys. Off that path (another product, a sub page such as Reviews) it goes back first. A goal option
the product does not offer cannot be chosen: that purchase scores what the engine gives it.
"""

from __future__ import annotations

from typing import Any

RESULTS_PER_PAGE = 10  # the engine's PRODUCT_WINDOW
SEARCH_RESULTS = 50  # the engine's SEARCH_RETURN_N: results past it are never shown


def wanted_options(product: dict, goal_options: Any, fuzz: Any, normalize_color: Any) -> dict[str, str]:
    """Option name -> the product's value to click, for each goal option the product offers.

    Synthetic goals name the option and value; human goals list values, matched to the product's values
    exactly, else as the engine's reward matches them (fuzzy, after its color normalization, above 85).
    """
    offered: dict[str, list[str]] = product.get("options") or {}
    if isinstance(goal_options, dict):
        return {k: v for k, v in goal_options.items() if v in offered.get(k, ())}
    out: dict[str, str] = {}
    for g in goal_options or []:
        exact = [(name, v) for name, values in offered.items() for v in values if v == g and name not in out]
        if exact:
            out[exact[0][0]] = exact[0][1]
            continue
        scored = [
            (fuzz.token_set_ratio(normalize_color(v), normalize_color(g)), name, v)
            for name, values in offered.items() if name not in out for v in values
        ]
        best = max(scored, default=None, key=lambda t: t[0])
        if best is not None and best[0] > 85:
            out[best[1]] = best[2]
    return out


class Oracle:
    """Plans of one episode. `results(keywords)` is the engine's ranked product list for a search."""

    def __init__(self, goal: dict, product: dict, options: dict[str, str], results) -> None:
        self.asin = goal["asin"]
        self.options = options
        self._results = results
        self._positions: dict[tuple[str, ...], int | None] = {}
        self.query = goal["query"]
        if self.position(self.query.split(" ")) is None:
            self.query = product["Title"].lower()

    def position(self, keywords: list[str]) -> int | None:
        """Where the target ranks among a search's shown results (None: not shown)."""
        key = tuple(keywords)
        if key not in self._positions:
            try:
                asins = [p["asin"] for p in self._results(list(keywords))[:SEARCH_RESULTS]]
            except Exception:  # a search the engine cannot run (its <r>/<a> keywords)
                asins = []
            self._positions[key] = asins.index(self.asin) if self.asin in asins else None
        return self._positions[key]

    def plan(self, page: str, session: dict) -> list[str]:
        """The remaining actions from `page` ("search", "results", "item", "sub_page", "done")."""
        if page == "done":
            return []
        if page == "search":
            return self._from_search()
        if page == "results":
            return self._from_results(session.get("keywords") or [], session.get("page") or 1)
        if page == "sub_page":
            return ["click[< prev]", *self._from_item(session)]
        if page == "item":
            return self._from_item(session)
        return ["click[back to search]", *self._from_search()]

    def _from_search(self) -> list[str]:
        pos = self.position(self.query.split(" "))
        pages = ["click[next >]"] * ((pos or 0) // RESULTS_PER_PAGE)
        return [f"search[{self.query}]", *pages, *self._buy({})]

    def _from_results(self, keywords: list[str], page: int) -> list[str]:
        pos = self.position(keywords)
        if pos is None:
            return ["click[back to search]", *self._from_search()]
        target = pos // RESULTS_PER_PAGE + 1
        moves = ["click[next >]"] * (target - page) + ["click[< prev]"] * (page - target)
        return [*moves, *self._buy({})]

    def _from_item(self, session: dict) -> list[str]:
        if (session.get("asin") or "").upper() == self.asin:
            return self._buy(session.get("options") or {}, opened=True)
        return ["click[< prev]", *self._from_results(session.get("keywords") or [], session.get("page") or 1)]

    def _buy(self, chosen: dict, opened: bool = False) -> list[str]:
        clicks = [f"click[{v}]" for k, v in self.options.items() if chosen.get(k) != v]
        return ([] if opened else [f"click[{self.asin.lower()}]"]) + clicks + ["click[buy now]"]
