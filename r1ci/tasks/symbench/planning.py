"""SymBench planning tasks: robot trajectories among boxes, Blocksworld, BoxLift and BoxNet.
Many plans are right, so every check simulates the proposed plan under the rules and tests
the goal (and the step limit); the reference programs plan by search or by a greedy schedule."""

from __future__ import annotations

import collections
import itertools
import re
from fractions import Fraction

from r1ci.tasks.answers import parse_literal
from r1ci.tasks.symbench.common import SymbenchTask


# ---------------------------------------------------------------- path_plan
# CodeSteer-v1.0 SymBench (benchmark/run_path_plan_continuous_*.py and
# post_process_path_plan_continuous_func.py): a robot in the square inside four walls plans
# straight-line waypoints from a start to an end position that enter some coloured boxes and
# never touch others or the walls. Here environments are drawn at random in the same style
# (SymBench has 14 fixed ones); coordinates are multiples of 0.1.

PATH_WALLS = [[-1.5, -1.4, -1.5, 1.5], [1.4, 1.5, -1.5, 1.5], [-1.5, 1.5, -1.5, -1.4], [-1.5, 1.5, 1.4, 1.5]]
PATH_COLORS = ["yellow", "red", "green", "blue", "pink", "purple", "orange"]


def segment_touches_box(p, q, box):
    """Whether the segment p-q meets the closed box (x_start, x_end, y_start, y_end), boundary
    included (exact for Fractions: the Liang-Barsky clip of the segment against the box)."""
    t0, t1 = 0, 1
    for start, delta, lo, hi in ((p[0], q[0] - p[0], box[0], box[1]), (p[1], q[1] - p[1], box[2], box[3])):
        if delta == 0:
            if start < lo or start > hi:
                return False
            continue
        ta, tb = (lo - start) / delta, (hi - start) / delta
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
        if t0 > t1:
            return False
    return True


def trajectory_ok(waypoints, data):
    """SymBench's check: starts and ends at the given positions, no segment touches a wall or
    a box to avoid, and some segment enters every box to visit (waypoints as Fractions)."""
    exact = lambda v: [Fraction(str(x)) for x in v]  # noqa: E731
    if len(waypoints) < 2 or list(waypoints[0]) != exact(data["start"]) or list(waypoints[-1]) != exact(data["end"]):
        return False
    walls = [exact(w) for w in data["walls"]]
    avoid = [exact(data["boxes"][name]) for name in data["avoid"]]
    entered = set()
    for p, q in zip(waypoints, waypoints[1:]):
        if any(segment_touches_box(p, q, box) for box in walls + avoid):
            return False
        entered |= {name for name in data["visit"] if segment_touches_box(p, q, exact(data["boxes"][name]))}
    return entered == set(data["visit"])


def plan_trajectory(data):
    """Waypoints on the 0.1 lattice: for each order of the boxes to visit, walk breadth-first
    to the nearest lattice point of the next box (then to the end), never onto a point of a
    box to avoid or next to a wall; keep the shortest walk, then drop collinear points."""
    units = lambda v: [round(x * 10) for x in v]  # noqa: E731
    avoid = [units(data["boxes"][name]) for name in data["avoid"]]
    free = {(x, y) for x in range(-13, 14) for y in range(-13, 14)
            if not any(b[0] <= x <= b[1] and b[2] <= y <= b[3] for b in avoid)}  # fmt: skip

    def distances(targets):
        dist, queue = {t: 0 for t in targets}, collections.deque(targets)
        while queue:
            x, y = queue.popleft()
            for nxt in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if nxt in free and nxt not in dist:
                    dist[nxt] = dist[(x, y)] + 1
                    queue.append(nxt)
        return dist

    goals = {}
    for name in data["visit"]:
        b = units(data["boxes"][name])
        goals[name] = [(x, y) for x in range(b[0], b[1] + 1) for y in range(b[2], b[3] + 1) if (x, y) in free]
    end = tuple(units(data["end"]))
    fields = {name: distances(cells) for name, cells in goals.items()}
    fields["end"] = distances([end])
    best = None
    for order in itertools.permutations(data["visit"]):
        here, walk = tuple(units(data["start"])), [tuple(units(data["start"]))]
        for name in [*order, "end"]:
            dist = fields[name]
            if here not in dist:
                walk = None
                break
            while dist[here] > 0:  # downhill to the nearest target
                x, y = here
                here = min((n for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)) if n in dist), key=dist.get)
                walk.append(here)
        if walk is not None and (best is None or len(walk) < len(best)):
            best = walk
    if best is None:
        return None
    corners = [best[0]] + [b for a, b, c in zip(best, best[1:], best[2:]) if (b[0] - a[0], b[1] - a[1]) != (c[0] - b[0], c[1] - b[1])] + [best[-1]]
    return [(x / 10, y / 10) for x, y in corners]


def solve_path_plan(data):
    return str(plan_trajectory(data))


def random_boxes(rng, count):
    """`count` boxes (in units of 0.1) of 0.3-0.8 by 0.3-0.8 inside the walls, at least 0.2 apart."""
    boxes = []
    while len(boxes) < count:
        w, h = rng.randint(3, 8), rng.randint(3, 8)
        x0, y0 = rng.randint(-12, 12 - w), rng.randint(-12, 12 - h)
        box = [x0, x0 + w, y0, y0 + h]
        if all(box[0] > b[1] + 1 or b[0] > box[1] + 1 or box[2] > b[3] + 1 or b[2] > box[3] + 1 for b in boxes):
            boxes.append(box)
    return boxes


def _and(words, last="and"):
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


class PathPlan(SymbenchTask):
    name = "path_plan"
    kind = "planning"
    solver = (plan_trajectory, solve_path_plan)

    def make(self, rng, difficulty):
        while True:
            boxes = dict(zip(PATH_COLORS, ([x / 10 for x in b] for b in random_boxes(rng, len(PATH_COLORS)))))
            inside = lambda x, y: any(b[0] <= x <= b[1] and b[2] <= y <= b[3] for b in boxes.values())  # noqa: E731
            spots = [(x / 10, y / 10) for x in range(-13, 14) for y in range(-13, 14) if not inside(x / 10, y / 10)]
            start, end = rng.sample(spots, 2)
            visit = rng.sample(PATH_COLORS, rng.randint(1, min(2 + difficulty, 4)))
            others = [c for c in PATH_COLORS if c not in visit]
            avoid = others if rng.random() < 0.2 else rng.sample(others, rng.randint(0, min(1 + difficulty, 3)))
            data = {"walls": PATH_WALLS, "boxes": boxes, "start": list(start), "end": list(end), "visit": visit, "avoid": avoid}
            waypoints = plan_trajectory(data)
            if waypoints is not None:
                break
        boxes_text = "; ".join(f"{'an' if c[0] in 'aeiou' else 'a'} {c} colored box {tuple(b)}" for c, b in boxes.items())
        rule = f"Enter the {_and(visit)} box{'es (in any order)' if len(visit) > 1 else ''}"
        if avoid == others and others:
            rule += ", and never enter any other colored box."
        elif avoid:
            rule += f", and never enter the {_and(avoid, 'or')} box."
        else:
            rule += "."
        q = (
            "I am a mobile robot and I hope you can help me plan the trajectory to fulfill the navigation instruction. "
            "I will give you the position and size of each box in the whole environment and the instruction is to "
            "enter or avoid the box. Each box is a rectangle given as (x_start, x_end, y_start, y_end): x_start, x_end "
            "are its boundaries in x and y_start, y_end its boundaries in y.\n"
            f"First, there are four black colored walls with position {', '.join(str(tuple(w)) for w in PATH_WALLS)}. "
            f"Then the boxes are: {boxes_text}.\n"
            "During navigation, the trajectory should always not touch the black wall. The starting position of the car "
            f"is {start}, the ending position of the car is {end}.\n"
            f"The instruction is '{rule}' The car should fulfill the instruction and in the end stop at the end "
            "position. Return the trajectory as a list of waypoints [(x0, y0), (x1, y1), ...], the first being the start "
            "and the last the end position.\n"
            "Note that the whole trajectory is acquired by directly connecting the near waypoints with straight lines. "
            "These straight lines should also fulfill the instruction requirements. Entering a box means the trajectory "
            "intersects the box, including its boundary; hence the trajectory must not touch the boundary of a box to "
            f"avoid. Any trajectory that meets the instruction is accepted. Answer like <<<[{start}, ..., {end}]>>>."
        )
        return q, data, str(waypoints)

    def check(self, answer, instance):
        nums = [Fraction(x) for x in re.findall(r"-?\d+(?:\.\d+)?", answer)[:2000]]
        if len(nums) % 2:
            return 0.0
        return float(trajectory_ok(list(zip(nums[::2], nums[1::2])), instance.data))


# ---------------------------------------------------------------- blocksworld

_MOVE = re.compile(r"move\s+([A-Za-z])\s+from\s+(?:stack\s*)?(\d+)\s+to\s+(?:stack\s*)?(\d+)", re.I)


def blocks_moves(stacks):
    """Every (block, from, to, next_stacks) legal in `stacks` (tuple of bottom-to-top strings)."""
    out = []
    for i, src in enumerate(stacks):
        if not src:
            continue
        for j in range(len(stacks)):
            if j != i:
                nxt = list(stacks)
                nxt[i], nxt[j] = src[:-1], stacks[j] + src[-1]
                out.append((src[-1], i + 1, j + 1, tuple(nxt)))
    return out


def solve_blocksworld(data):
    start, goal = tuple(data["initial"]), tuple(data["goal"])
    parent, queue = {start: None}, collections.deque([start])
    while queue:
        state = queue.popleft()
        if state == goal:
            break
        for block, i, j, nxt in blocks_moves(state):
            if nxt not in parent:
                parent[nxt] = (state, f"Move {block} from {i} to {j}")
                queue.append(nxt)
    plan, state = [], goal
    while parent[state] is not None:
        state, move = parent[state]
        plan.append(move)
    return "\n".join(plan[::-1])


def stacks_text(stacks):
    return "\n".join(f"stack {i + 1}: {' '.join(s) if s else '(empty)'}" for i, s in enumerate(stacks))


class Blocksworld(SymbenchTask):
    name = "blocksworld"
    kind = "planning"
    solver = (blocks_moves, solve_blocksworld)

    def make(self, rng, difficulty):
        blocks = "ABCDEF"[: 3 + min(difficulty, 3)]  # optimal plans by breadth-first search

        def deal():
            stacks = [""] * 3
            for b in rng.sample(blocks, len(blocks)):
                stacks[rng.randrange(3)] += b
            return stacks

        initial, goal = deal(), deal()
        while goal == initial:
            goal = deal()
        data = {"initial": initial, "goal": goal}
        plan = solve_blocksworld(data)
        data["max_moves"] = plan.count("\n") + 1
        q = (
            "Blocksworld. Stacks are listed bottom to top.\nInitial state:\n"
            f"{stacks_text(initial)}\nGoal state:\n{stacks_text(goal)}\n"
            "Only the top block of a stack can move, onto the top of another stack. "
            f"Reach the goal in at most {data['max_moves']} moves. Answer with one move per line, like "
            "<<<Move B from 1 to 3\nMove A from 2 to 1>>>."
        )
        return q, data, plan

    def check(self, answer, instance):
        d = instance.data
        stacks = list(d["initial"])
        moves = _MOVE.findall(answer)
        if not moves or len(moves) > d["max_moves"]:
            return 0.0
        for block, i, j in moves:
            i, j = int(i) - 1, int(j) - 1
            if not (0 <= i < len(stacks) and 0 <= j < len(stacks)) or i == j:
                return 0.0
            if not stacks[i] or stacks[i][-1] != block.upper():
                return 0.0
            stacks[i], stacks[j] = stacks[i][:-1], stacks[j] + stacks[i][-1]
        return float(stacks == list(d["goal"]))


# ---------------------------------------------------------------- boxlift


def greedy_lift_plan(data):
    """Steps of [box index, [lifter indices]]: heaviest boxes first, each with the smallest
    single lifter that suffices or else the strongest free lifters together."""
    weights, caps = data["weights"], data["capacities"]
    left, plan = sorted(range(len(weights)), key=lambda b: -weights[b]), []
    while left:
        free, step = set(range(len(caps))), []
        for b in list(left):
            single = [l for l in free if caps[l] >= weights[b]]
            if single:
                team = [min(single, key=lambda l: caps[l])]
            else:
                team, total = [], 0
                for l in sorted(free, key=lambda l: -caps[l]):
                    if total >= weights[b]:
                        break
                    team.append(l)
                    total += caps[l]
                if total < weights[b]:
                    continue
            free -= set(team)
            step.append([b, sorted(team)])
            left.remove(b)
        plan.append(step)
    return plan


def solve_boxlift(data):
    return str(greedy_lift_plan(data))


class BoxLift(SymbenchTask):
    name = "boxlift"
    kind = "planning"
    solver = (greedy_lift_plan, solve_boxlift)

    def make(self, rng, difficulty):
        caps = [rng.randint(40, 120) for _ in range(3 + difficulty)]
        weights = [rng.randint(20, min(sum(caps), 250)) for _ in range(4 + 3 * difficulty)]
        data = {"weights": weights, "capacities": caps}
        plan = greedy_lift_plan(data)
        data["max_steps"] = len(plan)
        q = (
            f"Boxes with weights {weights} (box indices 0 to {len(weights) - 1}) must all be lifted by lifters with "
            f"capacities {caps} (lifter indices 0 to {len(caps) - 1}). In one step each lifter helps lift at most one "
            "box; several lifters may lift one box together if their capacities add up to at least its weight; a "
            f"lifted box is done. Lift every box in at most {data['max_steps']} steps.\n"
            "Answer with the steps as a list; each step is a list of [box index, [lifter indices]], like "
            "<<<[[[0, [1]], [2, [0, 3]]], [[1, [2]]]]>>>."
        )
        return q, data, str(plan)

    def check(self, answer, instance):
        weights, caps = instance.data["weights"], instance.data["capacities"]
        plan, lifted = parse_literal(answer), set()
        if not isinstance(plan, (list, tuple)) or len(plan) > instance.data["max_steps"]:
            return 0.0
        for step in plan:
            step = list(step.items()) if isinstance(step, dict) else step  # {box: [lifters]} is fine too
            used = []
            for box, team in step:
                if box in lifted or not 0 <= box < len(weights) or not all(0 <= l < len(caps) for l in team):
                    return 0.0
                if sum(caps[l] for l in set(team)) < weights[box]:
                    return 0.0
                used += list(team)
                lifted.add(box)
            if len(used) != len(set(used)):
                return 0.0
        return float(lifted == set(range(len(weights))))


# ---------------------------------------------------------------- boxnet


def greedy_box_schedule(data):
    """Steps of [box, destination]: each step, every agent (one per cell) moves the box in its
    cell that is farthest from its target one cell closer, or into the target when there."""
    where = {box: tuple(cell) for box, cell in data["boxes"].items()}
    goal = {box: tuple(cell) for box, cell in data["targets"].items()}
    plan = []
    while where:
        step, busy = [], set()
        for box in sorted(where, key=lambda b: -(abs(where[b][0] - goal[b][0]) + abs(where[b][1] - goal[b][1]))):
            cell = where[box]
            if cell in busy:
                continue
            busy.add(cell)
            if cell == goal[box]:
                step.append([box, "target"])
            else:
                r, c = cell
                dr, dc = goal[box][0] - r, goal[box][1] - c
                step.append([box, [r + (dr > 0) - (dr < 0), c] if dr else [r, c + (dc > 0) - (dc < 0)]])
        for box, dest in step:
            if dest == "target":
                del where[box]
            else:
                where[box] = tuple(dest)
        plan.append(step)
    return plan


def solve_boxnet(data):
    return str(greedy_box_schedule(data))


class BoxNet(SymbenchTask):
    name = "boxnet"
    kind = "planning"
    solver = (greedy_box_schedule, solve_boxnet)
    colors = ["red", "blue", "green", "purple", "orange", "yellow"]

    def make(self, rng, difficulty):
        rows, cols = 2, 2 + difficulty
        cells = [[r, c] for r in range(rows) for c in range(cols)]
        colors = rng.sample(self.colors, 2 + min(difficulty, 4))
        boxes = {f"box_{k}": rng.choice(cells) for k in colors}
        targets = {f"box_{k}": rng.choice(cells) for k in colors}
        data = {"rows": rows, "cols": cols, "boxes": boxes, "targets": targets}
        plan = greedy_box_schedule(data)
        data["max_steps"] = len(plan)
        q = (
            f"A {rows}x{cols} grid of cells (rows and columns counted from 0) has one agent in every cell.\n"
            + "\n".join(f"{b} is in cell {cell}; its target is in cell {targets[b]}." for b, cell in boxes.items())
            + "\nIn one step every agent may do at most one action on a box in its own cell: move it to a "
            "horizontally or vertically adjacent cell, or put it into its target if the target is in that cell "
            f"(the box is then done). Bring every box to its target in at most {data['max_steps']} steps.\n"
            "Answer with the steps as a list; each step is a list of actions [box, [row, column]] or "
            "[box, 'target'], like <<<[[['box_red', [0, 1]], ['box_blue', 'target']], [['box_red', 'target']]]>>>."
        )
        return q, data, str(plan)

    def check(self, answer, instance):
        d = instance.data
        where = {b: tuple(c) for b, c in d["boxes"].items()}
        plan = parse_literal(answer.lower())  # box names and 'target' in any case
        if not isinstance(plan, (list, tuple)) or len(plan) > d["max_steps"]:
            return 0.0
        for step in plan:
            step = list(step.items()) if isinstance(step, dict) else step  # {box: destination} is fine too
            acting, moved, updates = set(), set(), {}
            for box, dest in step:
                if box not in where or box in moved or where[box] in acting:
                    return 0.0
                cell = where[box]
                acting.add(cell)
                moved.add(box)
                if isinstance(dest, str):
                    if dest != "target" or cell != tuple(d["targets"][box]):
                        return 0.0
                    updates[box] = None
                else:
                    r, c = dest
                    if not (0 <= r < d["rows"] and 0 <= c < d["cols"]) or abs(r - cell[0]) + abs(c - cell[1]) != 1:
                        return 0.0
                    updates[box] = (r, c)
            for box, cell in updates.items():
                if cell is None:
                    del where[box]
                else:
                    where[box] = cell
        return float(not where)


TASKS = [PathPlan, Blocksworld, BoxLift, BoxNet]
