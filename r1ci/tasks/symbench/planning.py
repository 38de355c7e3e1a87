"""SymBench planning tasks: grid paths, Blocksworld, BoxLift and BoxNet. Many plans are
right, so every check simulates the proposed plan under the rules and tests the goal and
the step limit; the reference programs plan by search or by a greedy schedule."""

from __future__ import annotations

import collections
import itertools
import re

from r1ci.tasks.symbench.common import SymbenchTask, cell_pairs, parse_literal


# ---------------------------------------------------------------- path_plan


def grid_distances(grid, start):
    """Breadth-first distances and parents from `start` over '.' cells (any non-'#')."""
    rows, cols = len(grid), len(grid[0])
    dist, parent, queue = {start: 0}, {start: None}, collections.deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] != "#" and (nr, nc) not in dist:
                dist[(nr, nc)] = dist[(r, c)] + 1
                parent[(nr, nc)] = (r, c)
                queue.append((nr, nc))
    return dist, parent


def shortest_tour(grid, start, goals):
    """The shortest path from `start` through every goal (any order) as a list of cells."""
    best = None
    for order in itertools.permutations(goals):
        path, here = [start], start
        for goal in order:
            _, parent = grid_distances(grid, here)
            leg, cell = [], goal
            while cell != here:
                leg.append(cell)
                cell = parent[cell]
            path += leg[::-1]
            here = goal
        if best is None or len(path) < len(best):
            best = path
    return best


def solve_path_plan(data):
    start, goals = tuple(data["start"]), [tuple(g) for g in data["goals"]]
    return str([list(cell) for cell in shortest_tour(data["grid"], start, goals)])


class PathPlan(SymbenchTask):
    name = "path_plan"
    kind = "planning"
    solver = (grid_distances, shortest_tour, solve_path_plan)

    def make(self, rng, difficulty):
        while True:
            n = 4 + difficulty + rng.randint(0, 1)
            cells = [(r, c) for r in range(n) for c in range(n)]
            picked = rng.sample(cells, 2 + min(difficulty, 3) + n * n // 4)
            start, goals, walls = picked[0], sorted(picked[1 : 2 + min(difficulty, 3)]), picked[2 + min(difficulty, 3) :]
            grid = ["".join("#" if (r, c) in walls else "." for c in range(n)) for r in range(n)]
            dist, _ = grid_distances(grid, start)
            if all(g in dist for g in goals):
                break
        data = {"grid": grid, "start": list(start), "goals": [list(g) for g in goals]}
        path = shortest_tour(grid, start, goals)
        data["max_moves"] = len(path) - 1
        shown = [list(row) for row in grid]
        shown[start[0]][start[1]] = "S"
        for r, c in goals:
            shown[r][c] = "G"
        q = (
            f"A robot on the grid below starts at S ({start[0]}, {start[1]}) and must visit every goal G "
            f"({'; '.join(f'{r}, {c}' for r, c in goals)}) in any order. '#' cells are walls; each move goes one cell "
            "up, down, left or right. Rows and columns are counted from 0.\n"
            f"{chr(10).join(''.join(row) for row in shown)}\n"
            f"Use at most {data['max_moves']} moves. Answer with the visited cells from the start, as a list of "
            "[row, column], like <<<[[0, 0], [0, 1], [1, 1]]>>>."
        )
        return q, data, str([list(cell) for cell in path])

    def check(self, answer, instance):
        d = instance.data
        grid, path = d["grid"], cell_pairs(answer)
        if not path or list(path[0]) != d["start"] or len(path) - 1 > d["max_moves"]:
            return 0.0
        for (r1, c1), (r2, c2) in zip(path, path[1:]):
            if abs(r1 - r2) + abs(c1 - c2) != 1:
                return 0.0
        if any(not (0 <= r < len(grid) and 0 <= c < len(grid[0])) or grid[r][c] == "#" for r, c in path):
            return 0.0
        return float({tuple(g) for g in d["goals"]} <= set(path))


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
        plan = parse_literal(answer)
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
