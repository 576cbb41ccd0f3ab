"""Authoring of one ALFWorld game: a scene (receptacles and objects of an ALFRED room), a task drawn
from it, its PDDL problem (`initial_state.pddl`) and its `traj_data.json`, deterministic from a seed.

Needs the alfworld package (its object tables and goal library) when imported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

OPENABLE = {"Fridge", "Cabinet", "Microwave", "Drawer", "Safe", "Box"}
MOVABLE_RECEPTACLES = {"Bowl", "Box", "Cup", "Mug", "Plate", "Pan", "Pot"}
# Receptacles per room: (type, min, max). Scene numbers follow ALFRED's floor plans.
ROOMS = {
    "kitchen": {
        "scenes": range(1, 31),
        "receptacles": [
            ("Fridge", 1, 1), ("Microwave", 1, 1), ("SinkBasin", 1, 1), ("CounterTop", 1, 3),
            ("Cabinet", 3, 9), ("Drawer", 1, 6), ("StoveBurner", 2, 4), ("CoffeeMachine", 1, 1),
            ("GarbageCan", 1, 1), ("Toaster", 0, 1), ("DiningTable", 0, 1), ("Shelf", 0, 3),
            ("SideTable", 0, 1),
        ],
        "objects": [
            "Apple", "Bread", "ButterKnife", "Bowl", "Cup", "DishSponge", "Egg", "Fork", "Kettle", "Knife",
            "Ladle", "Lettuce", "Mug", "Pan", "PepperShaker", "Plate", "Pot", "Potato", "SaltShaker",
            "SoapBottle", "Spatula", "Spoon", "Tomato", "WineBottle", "Glassbottle", "CellPhone",
            "CreditCard", "PaperTowel",
        ],
        "lamp": None,
    },
    "livingroom": {
        "scenes": range(201, 231),
        "receptacles": [
            ("Sofa", 1, 1), ("ArmChair", 0, 2), ("CoffeeTable", 1, 2), ("SideTable", 1, 3), ("Drawer", 0, 6),
            ("Cabinet", 0, 4), ("Shelf", 0, 6), ("Dresser", 0, 1), ("TVStand", 0, 1), ("GarbageCan", 1, 1),
            ("Ottoman", 0, 1), ("DiningTable", 0, 1), ("Safe", 0, 1),
        ],
        "objects": [
            "Book", "Box", "CellPhone", "CreditCard", "KeyChain", "Laptop", "Newspaper", "Pillow",
            "RemoteControl", "Statue", "Vase", "Watch", "TissueBox", "WateringCan", "Bowl", "Plate", "Candle",
        ],
        "lamp": ("FloorLamp", ["SideTable", "Dresser", "CoffeeTable"]),
    },
    "bedroom": {
        "scenes": range(301, 331),
        "receptacles": [
            ("Bed", 1, 1), ("Desk", 0, 1), ("SideTable", 1, 2), ("Dresser", 0, 1), ("Drawer", 2, 8),
            ("Shelf", 0, 6), ("GarbageCan", 1, 1), ("LaundryHamper", 0, 1), ("Safe", 0, 1),
            ("ArmChair", 0, 1), ("Cabinet", 0, 2),
        ],
        "objects": [
            "AlarmClock", "BaseballBat", "BasketBall", "Book", "Bowl", "Box", "CD", "CellPhone", "Cloth",
            "CreditCard", "KeyChain", "Laptop", "Mug", "Pen", "Pencil", "Pillow", "TennisRacket", "Watch",
            "Vase", "Statue", "TissueBox",
        ],
        "lamp": ("DeskLamp", ["Desk", "SideTable", "Dresser"]),
    },
    "bathroom": {
        "scenes": range(401, 431),
        "receptacles": [
            ("Toilet", 1, 1), ("SinkBasin", 1, 2), ("BathtubBasin", 0, 1), ("Cabinet", 1, 6),
            ("CounterTop", 1, 1), ("Drawer", 0, 6), ("GarbageCan", 1, 1), ("HandTowelHolder", 0, 2),
            ("TowelHolder", 0, 1), ("ToiletPaperHanger", 1, 1), ("Shelf", 0, 3), ("Cart", 0, 1),
        ],
        "objects": [
            "Candle", "Cloth", "DishSponge", "HandTowel", "SoapBar", "SoapBottle", "SprayBottle",
            "TissueBox", "ToiletPaper", "Towel", "Plunger",
        ],
        "lamp": None,
    },
}
TASK_ROOMS = {
    "pick_and_place_simple": ["kitchen", "livingroom", "bedroom", "bathroom"],
    "look_at_obj_in_light": ["livingroom", "bedroom"],
    "pick_clean_then_place_in_recep": ["kitchen", "bathroom"],
    "pick_heat_then_place_in_recep": ["kitchen"],
    "pick_cool_then_place_in_recep": ["kitchen"],
    "pick_two_obj_and_place": ["kitchen", "livingroom", "bedroom", "bathroom"],
}
# The object property a task needs, and the receptacle a task's target may not be.
TASK_PROPERTY = {
    "pick_clean_then_place_in_recep": ("Cleanable", "SinkBasin"),
    "pick_heat_then_place_in_recep": ("Heatable", "Microwave"),
    "pick_cool_then_place_in_recep": ("Coolable", "Fridge"),
}
# Receptacles per scene. The planner's search for two objects grows steeply with the scene (a
# 25-receptacle pick_two kitchen took ~10 s of CPU per plan), so pick_two scenes stay smaller.
SCENE_SIZE = {"pick_two_obj_and_place": (10, 16)}
DEFAULT_SCENE_SIZE = (10, 25)
# Types the domain names in preconditions: they must exist in every problem.
DOMAIN_OTYPES = {"KnifeType", "ButterKnifeType"}
DOMAIN_RTYPES = {"SinkBasinType", "MicrowaveType", "FridgeType"}


def _constants():
    import alfworld.gen.constants as c
    import alfworld.gen.goal_library as glib

    return c.VAL_RECEPTACLE_OBJECTS, c.VAL_ACTION_OBJECTS, glib.gdict


CAN_CONTAIN, ACTION_OBJECTS, GOALS = _constants()


def mangle(text: str) -> str:
    """ALFRED ids to PDDL names, as ALFRED writes them (`Apple|+00.10|...` -> `Apple_bar__plus_00_dot_10...`)."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        text = text.replace(a, b)
    return text


@dataclass
class Scene:
    room: str
    scene_num: int
    receptacles: list[tuple[str, str, str]] = field(default_factory=list)  # (id, type, location)
    objects: list[tuple[str, str, str]] = field(default_factory=list)  # (id, type, receptacle id)
    start: str = ""
    used_coords: set = field(default_factory=set)
    used_locs: set = field(default_factory=set)

    def coord_id(self, rng: random.Random, kind: str, suffix: str = "") -> str:
        while True:
            xyz = tuple(round(rng.uniform(-4.5, 4.5), 2) if i != 1 else round(rng.uniform(0, 2.3), 2) for i in range(3))
            if xyz not in self.used_coords:
                self.used_coords.add(xyz)
                break
        return kind + "".join(f"|{v:+06.2f}" for v in xyz) + (f"|{suffix}" if suffix else "")

    def location(self, rng: random.Random) -> str:
        while True:
            loc = (rng.randint(-12, 12), rng.randint(-12, 12), rng.randint(0, 3), rng.choice((0, 15, 30, 45, 60)))
            if loc not in self.used_locs:
                self.used_locs.add(loc)
                return "loc|{}|{}|{}|{}".format(*loc)

    def add_receptacle(self, rng: random.Random, rtype: str) -> None:
        if rtype == "SinkBasin":
            rid = self.coord_id(rng, "Sink", "SinkBasin")
        elif rtype == "BathtubBasin":
            rid = self.coord_id(rng, "Bathtub", "BathtubBasin")
        else:
            rid = self.coord_id(rng, rtype)
        self.receptacles.append((rid, rtype, self.location(rng)))

    def holders(self, otype: str, exclude: set[str] = frozenset()) -> list[str]:
        return [rid for rid, rtype, _ in self.receptacles if otype in CAN_CONTAIN.get(rtype, ()) and rid not in exclude]

    def put(self, rng: random.Random, otype: str, rid: str) -> None:
        self.objects.append((self.coord_id(rng, otype), otype, rid))


def make_scene(rng: random.Random, room: str, size: tuple[int, int] = DEFAULT_SCENE_SIZE) -> Scene:
    """Receptacles of a room (`size` bounds their number), each at its own location; the agent
    starts at a location of its own ("in the middle of a room")."""
    spec = ROOMS[room]
    scene = Scene(room, rng.choice(list(spec["scenes"])))
    counts = {rtype: lo for rtype, lo, _ in spec["receptacles"]}
    room_max = {rtype: hi for rtype, _, hi in spec["receptacles"]}
    target = max(rng.randint(*size), sum(counts.values()))
    while sum(counts.values()) < target:
        open_types = [t for t in counts if counts[t] < room_max[t]]
        if not open_types:
            break
        counts[rng.choice(open_types)] += 1
    for rtype, n in counts.items():
        for _ in range(n):
            scene.add_receptacle(rng, rtype)
    rng.shuffle(scene.receptacles)
    scene.start = scene.location(rng)
    return scene


def choose_task(rng: random.Random, task_type: str, scene: Scene) -> dict | None:
    """pddl_params for a task that this scene can host, or None."""
    pool = [o for o in ROOMS[scene.room]["objects"] if scene.holders(o)]
    rtypes = sorted({rtype for _, rtype, _ in scene.receptacles})
    params = {
        "object_target": "", "parent_target": "", "toggle_target": "", "mrecep_target": "", "object_sliced": False,
    }
    if task_type == "look_at_obj_in_light":
        lamp = ROOMS[scene.room]["lamp"]
        if lamp is None or not any(t in lamp[1] for t in rtypes):
            return None
        params.update(object_target=rng.choice(pool), toggle_target=lamp[0])
        return params
    prop, banned = TASK_PROPERTY.get(task_type, (None, None))
    if prop is not None:
        if banned not in rtypes:
            return None
        pool = [o for o in pool if o in ACTION_OBJECTS[prop]]
    def holders_elsewhere(o: str, r: str) -> list[str]:
        return scene.holders(o, {rid for rid, t, _ in scene.receptacles if t == r})

    pairs = [
        (o, r) for o in pool for r in rtypes
        if r != banned and o in CAN_CONTAIN.get(r, ()) and holders_elsewhere(o, r)
    ]
    if not pairs:
        return None
    obj, recep = rng.choice(pairs)
    params.update(object_target=obj, parent_target=recep)
    return params


def populate(rng: random.Random, task_type: str, scene: Scene, params: dict) -> None:
    """Place the lamp, the task's target objects (never already in the goal receptacle; often behind
    a closed door) and distractors."""
    obj, recep = params["object_target"], params["parent_target"]
    goal_receps = {rid for rid, t, _ in scene.receptacles if t == recep}
    lamp = ROOMS[scene.room]["lamp"]
    if task_type == "look_at_obj_in_light":
        stands = [rid for rid, t, _ in scene.receptacles if t in lamp[1]]
        scene.put(rng, lamp[0], rng.choice(stands))
    holders = scene.holders(obj, goal_receps)
    closed = [rid for rid in holders if rid.split("|")[0] in OPENABLE]
    lo = 2 if task_type == "pick_two_obj_and_place" else 1
    for _ in range(rng.randint(lo, lo + 1)):
        spot = holders if not closed or rng.random() < 0.6 else closed
        scene.put(rng, obj, rng.choice(spot))
    pool = [o for o in ROOMS[scene.room]["objects"] if o != obj and scene.holders(o)]
    for _ in range(rng.randint(6, 16)):
        other = rng.choice(pool)
        if sum(1 for _, t, _ in scene.objects if t == other) < 3:
            scene.put(rng, other, rng.choice(scene.holders(other)))


def problem_pddl(scene: Scene, task_type: str, params: dict, name: str) -> str:
    """The PDDL problem, laid out as ALFRED's initial_state.pddl files are."""
    recep_loc = {rid: loc for rid, _, loc in scene.receptacles}
    otypes = sorted({f"{t}Type" for _, t, _ in scene.objects} | DOMAIN_OTYPES)
    rtypes = sorted({f"{t}Type" for _, t, _ in scene.receptacles} | DOMAIN_RTYPES)
    locations = sorted(set(recep_loc.values()) | {scene.start})
    objects = ["agent1 - agent"]
    objects += [f"{t} - otype" for t in otypes] + [f"{t} - rtype" for t in rtypes]
    objects += [f"{mangle(oid)} - object" for oid, _, _ in sorted(scene.objects)]
    objects += [f"{mangle(rid)} - receptacle" for rid, _, _ in sorted(scene.receptacles)]
    objects += [f"{mangle(loc)} - location" for loc in locations]

    init = [f"(atLocation agent1 {mangle(scene.start)})"]
    for rid, rtype, loc in sorted(scene.receptacles):
        init.append(f"(receptacleType {mangle(rid)} {rtype}Type)")
        init.append(f"(receptacleAtLocation {mangle(rid)} {mangle(loc)})")
        if rtype in OPENABLE:
            init.append(f"(openable {mangle(rid)})")
    for oid, otype, rid in sorted(scene.objects):
        o = mangle(oid)
        init.append(f"(objectType {o} {otype}Type)")
        init.append(f"(inReceptacle {o} {mangle(rid)})")
        init.append(f"(objectAtLocation {o} {mangle(recep_loc[rid])})")
        if otype in ACTION_OBJECTS["Toggleable"]:
            init.append(f"(toggleable {o})")
        else:
            init.append(f"(pickupable {o})")
        for prop in ("Cleanable", "Heatable", "Coolable", "Sliceable"):
            if otype in ACTION_OBJECTS[prop]:
                init.append(f"({prop.lower()} {o})")
        if otype in MOVABLE_RECEPTACLES:
            init.append(f"(isReceptacleObject {o})")
    scene_otypes = {t for _, t, _ in scene.objects}
    for rtype in sorted({t for _, t, _ in scene.receptacles}):
        for otype in sorted(scene_otypes & set(CAN_CONTAIN.get(rtype, ()))):
            init.append(f"(canContain {rtype}Type {otype}Type)")

    goal = GOALS[task_type]["pddl"].format(
        obj=params["object_target"], recep=params["parent_target"], toggle=params["toggle_target"], mrecep=""
    ).replace("#", "-")
    body = "\n        ".join(objects)
    facts = "\n    ".join(init)
    return (
        f"(define (problem plan_{name})\n(:domain alfred)\n(:objects\n        {body}\n        )\n\n"
        f"(:init\n    {facts}\n)\n\n{goal.strip()}\n"
    )


def traj_data(task_type: str, params: dict, scene: Scene, trial: str, seed: int) -> dict:
    fill = dict(obj=params["object_target"].lower(), recep=params["parent_target"].lower(),
                toggle=params["toggle_target"].lower(), mrecep="")
    descs = [t.format(**fill) for t in GOALS[task_type]["templates"]]
    return {
        "task_id": trial,
        "task_type": task_type,
        "pddl_params": params,
        "scene": {"scene_num": scene.scene_num, "floor_plan": f"FloorPlan{scene.scene_num}", "random_seed": seed},
        "turk_annotations": {
            "anns": [
                {"task_desc": d[0].upper() + d[1:] + ".", "high_descs": [], "assignment_id": "template"} for d in descs
            ]
        },
        "builtin": {"generator": "agent-sft agent_sft.envs.alfworld.make_games", "room": scene.room,
                    "receptacles": len(scene.receptacles), "objects": len(scene.objects)},
    }


def author(task_type: str, seed: int, index: int) -> tuple[str, str, dict]:
    """One candidate game (folder name, problem text, traj_data), deterministic from its arguments."""
    for attempt in range(100):
        rng = random.Random(f"{seed}/{task_type}/{index}/{attempt}")
        scene = make_scene(rng, rng.choice(TASK_ROOMS[task_type]), SCENE_SIZE.get(task_type, DEFAULT_SCENE_SIZE))
        params = choose_task(rng, task_type, scene)
        if params is None:
            continue
        populate(rng, task_type, scene, params)
        second = params["toggle_target"] if task_type == "look_at_obj_in_light" else params["parent_target"]
        folder = f"{task_type}-{params['object_target']}-None-{second}-{scene.scene_num}"
        trial = f"trial_B{seed:04d}_{index:03d}_{attempt:02d}"
        traj = traj_data(task_type, params, scene, trial, seed)
        return f"{folder}/{trial}", problem_pddl(scene, task_type, params, trial), traj
    raise RuntimeError(f"could not author a {task_type} game from seed {seed}, index {index}")
