"""SymBench constraint tasks: arrangements, grid selections, Latin letter diagrams, Sudoku,
queens and password cracking. Where several answers are right the check validates the
answer against the rules; the reference programs search."""

from __future__ import annotations

import itertools
import math
import re
from functools import lru_cache

from r1ci.tasks.symbench.common import SymbenchTask, cell_pairs, chars_equal, shuffled

# ---------------------------------------------------------------- permutations_and_combinations


def arrangement_ok(order, constraints):
    """Whether `order` (names left to right) meets every [kind, a, b] constraint."""
    pos = {name: i for i, name in enumerate(order)}
    for kind, a, b in constraints:
        if kind == "left" and not pos[a] < pos[b]:
            return False
        if kind == "adjacent" and abs(pos[a] - pos[b]) != 1:
            return False
        if kind == "not_adjacent" and abs(pos[a] - pos[b]) == 1:
            return False
        if kind == "position" and pos[a] != b - 1:
            return False
        if kind == "not_position" and pos[a] == b - 1:
            return False
        if kind == "end" and pos[a] not in (0, len(order) - 1):
            return False
    return True


def arrangement_sentence(constraint):
    kind, a, b = constraint
    return {
        "left": f"Book {a} must be somewhere to the left of book {b}.",
        "adjacent": f"Book {a} must be next to book {b}.",
        "not_adjacent": f"Book {a} must not be next to book {b}.",
        "position": f"Book {a} must be in position {b}.",
        "not_position": f"Book {a} cannot be in position {b}.",
        "end": f"Book {a} must be at one of the two ends.",
    }[kind]


def random_arrangement_constraint(rng, names, truth=None):
    """A random constraint; with `truth` (an order) one that the order satisfies."""
    while True:
        kind = rng.choice(["left", "adjacent", "not_adjacent", "position", "not_position", "end"])
        a, b = rng.sample(names, 2)
        c = [kind, a, rng.randint(1, len(names))] if "position" in kind else [kind, a, b if kind != "end" else ""]
        if truth is None or arrangement_ok(truth, [c]):
            return c


def solve_permutations_and_combinations(data):
    for p in itertools.permutations(data["names"]):
        if arrangement_ok(p, data["constraints"]):
            return str(list(p))
    return None


class PermutationsAndCombinations(SymbenchTask):
    name = "permutations_and_combinations"
    kind = "planning"
    solver = (arrangement_ok, solve_permutations_and_combinations)

    def make(self, rng, difficulty):
        books = [chr(ord("A") + i) for i in range(5 + min(difficulty, 3))]  # orders are searched by brute force
        truth = shuffled(rng, books)
        constraints = []
        while len(constraints) < len(books) + difficulty:
            c = random_arrangement_constraint(rng, books, truth)
            if c not in constraints:
                constraints.append(c)
        data = {"names": books, "constraints": constraints}
        listing = "\n".join(f"{i + 1}. {arrangement_sentence(c)}" for i, c in enumerate(constraints))
        q = (
            f"A librarian shelves {len(books)} books labeled {', '.join(books)} in positions 1 to {len(books)} from "
            f"left to right. The constraints are:\n{listing}\nAny arrangement that meets every constraint is "
            f"accepted. Answer with the books from position 1 to {len(books)} as a list, like <<<{books}>>>."
        )
        return q, data, str(truth)

    def check(self, answer, instance):
        order = [w.upper() for w in re.findall(r"\b[A-Za-z]\b", answer)]
        if sorted(order) != sorted(instance.data["names"]):
            return 0.0
        return float(arrangement_ok(order, instance.data["constraints"]))


# ---------------------------------------------------------------- constrained_linear_arrangement

_CARD_GAMES = {
    "stick": (
        "Both players hold the four cards Stick (A), Tiger (B), Chicken (C) and Worm (D). Stick beats Tiger, Tiger "
        "eats Chicken, Chicken eats Worm and Worm beats Stick; any other pair of cards (the same card, or cards two "
        "steps apart in this cycle) is a draw.",
        "ABCD",
    ),
    "elements": (
        "Both players hold the five element cards Metal (A), Wood (B), Water (C), Fire (D) and Earth (E). Wood "
        "generates Fire, Fire generates Earth, Earth generates Metal, Metal generates Water and Water generates "
        "Wood; Wood overcomes Earth, Earth overcomes Water, Water overcomes Fire, Fire overcomes Metal and Metal "
        "overcomes Wood. If your card generates the opponent's card you lose the round; if your card overcomes "
        "it you win; otherwise (the same card included) the round is a draw.",
        "ABCDE",
    ),
    "animals": (
        "Both players hold the eight animal pieces Elephant (A), Lion (B), Tiger (C), Leopard (D), Wolf (E), "
        "Dog (F), Cat (G) and Mouse (H), ranked from largest to smallest. The larger piece wins, the same piece "
        "is a draw, and as the one exception the Mouse beats the Elephant.",
        "ABCDEFGH",
    ),
}


_VERB = {"win": "win", "loss": "lose", "draw": "draw"}


def duel(game, mine, theirs):
    """'win', 'loss' or 'draw' for the player of `mine` against `theirs` in one card game."""
    if mine == theirs:
        return "draw"
    if game == "stick":
        beats = {"A": "B", "B": "C", "C": "D", "D": "A"}
        return "win" if beats[mine] == theirs else "loss" if beats[theirs] == mine else "draw"
    if game == "elements":
        generates = {"B": "D", "D": "E", "E": "A", "A": "C", "C": "B"}
        overcomes = {"B": "E", "E": "C", "C": "D", "D": "A", "A": "B"}
        return "loss" if generates[mine] == theirs else "win" if overcomes[mine] == theirs else "draw"
    if {mine, theirs} == {"A", "H"}:
        return "win" if mine == "H" else "loss"
    return "win" if mine < theirs else "loss"  # A is the largest animal


def solve_constrained_linear_arrangement(data):
    for cards in itertools.permutations(data["cards"], len(data["mine"])):
        if all(duel(data["game"], m, t) == r for m, t, r in zip(data["mine"], cards, data["results"])):
            return ", ".join(cards)
    return None


class ConstrainedLinearArrangement(SymbenchTask):
    name = "constrained_linear_arrangement"
    kind = "reasoning"
    solver = (duel, solve_constrained_linear_arrangement)

    def make(self, rng, difficulty):
        game = rng.choice(sorted(_CARD_GAMES))
        rules, cards = _CARD_GAMES[game]
        rounds = min(len(cards), 2 + difficulty + rng.randint(0, 1))
        mine, theirs = rng.sample(cards, rounds), rng.sample(cards, rounds)
        results = [duel(game, m, t) for m, t in zip(mine, theirs)]
        data = {"game": game, "cards": cards, "mine": mine, "results": results}
        listing = "\n".join(f"Round {i + 1}: you play {m}, you {_VERB[r]}." for i, (m, r) in enumerate(zip(mine, results)))
        q = (
            f"Two players play a card game. {rules} Each card can be played only once; both players play one card "
            f"per round at the same time.\n{listing}\nDeduce which card your opponent played in each round. Any "
            f"sequence consistent with all results is accepted. Answer with the opponent's cards in round order, "
            f"like <<<{', '.join(cards[:rounds])}>>>."
        )
        return q, data, ", ".join(theirs)

    def check(self, answer, instance):
        d = instance.data
        cards = [w.upper() for w in re.findall(r"\b[A-Za-z]\b", answer)]
        if len(cards) != len(d["mine"]) or len(set(cards)) != len(cards) or not set(cards) <= set(d["cards"]):
            return 0.0
        return float(all(duel(d["game"], m, t) == r for m, t, r in zip(d["mine"], cards, d["results"])))


# ---------------------------------------------------------------- logic_puzzle
# CodeSteer-v1.0 SymBench (create_dataset_logic_puzzle.py): select k cells holding k
# different numbers, the top-right cell first, so that every row and column with a selected
# cell meets the rule (sum <= 4 on the small grids, product > 0 on the larger ones).

_LOGIC_LEVELS = [  # SymBench's complexity 1-10: (grid size, cells to select, value range, rule)
    (2, 3, (1, 3), "sum_le_4"), (3, 4, (1, 4), "sum_le_4"), (4, 6, (-5, 8), "product_gt_0"),
    (5, 9, (-8, 8), "product_gt_0"), (5, 10, (-10, 10), "product_gt_0"), (6, 12, (-12, 12), "product_gt_0"),
    (7, 16, (-14, 14), "product_gt_0"), (8, 18, (-16, 16), "product_gt_0"), (9, 20, (-18, 18), "product_gt_0"),
    (10, 25, (-20, 20), "product_gt_0"),
]  # fmt: skip


def selection_ok(grid, cells, k, rule):
    """Whether `cells` ((row, col) pairs) is a valid selection: k distinct cells in the grid,
    the top-right one among them, k different numbers, and every row and column that holds
    a selected cell meeting the rule."""
    n = len(grid)
    if len(cells) != k or len(set(cells)) != k or (0, n - 1) not in cells:
        return False
    if any(not (0 <= r < n and 0 <= c < n) for r, c in cells):
        return False
    values = [grid[r][c] for r, c in cells]
    if len(set(values)) != k:
        return False
    lines = {}
    for (r, c), v in zip(cells, values):
        lines.setdefault(("row", r), []).append(v)
        lines.setdefault(("col", c), []).append(v)
    if rule == "sum_le_4":
        return all(sum(vs) <= 4 for vs in lines.values())
    return all(math.prod(vs) > 0 for vs in lines.values())


def solve_logic_puzzle(data):
    """A valid selection. Small grids: every subset. Product rule: positive numbers with
    different values, plus 'rectangles' of four negative cells (which give each of their
    rows and columns two negatives) where there are too few positives or the first cell is negative."""
    g, k, rule = data["grid"], data["select"], data["rule"]
    n, start = len(g), (0, len(data["grid"]) - 1)
    cells = [(r, c) for r in range(n) for c in range(n)]
    if rule == "sum_le_4":
        for rest in itertools.combinations([x for x in cells if x != start], k - 1):
            if selection_ok(g, [start, *rest], k, rule):
                return ", ".join(f"{r} {c}" for r, c in [start, *rest])
        return None
    rects = []
    for r1, r2 in itertools.combinations(range(n), 2):
        for c1, c2 in itertools.combinations(range(n), 2):
            quad = [(r1, c1), (r1, c2), (r2, c1), (r2, c2)]
            if all(g[r][c] < 0 for r, c in quad) and len({g[r][c] for r, c in quad}) == 4:
                rects.append(quad)
    positives = {}
    for r, c in ([start] if g[0][n - 1] > 0 else []) + cells:
        if g[r][c] > 0:
            positives.setdefault(g[r][c], (r, c))

    def extend(chosen, first):
        used = [x for quad in chosen for x in quad]
        need = k - len(used)
        if (g[0][n - 1] < 0) == (start in used) and 0 <= need <= len(positives) and (g[0][n - 1] < 0 or need >= 1):
            return used + list(positives.values())[:need]
        for i in range(first, len(rects)):
            quad = rects[i]
            values = {g[r][c] for r, c in used}
            if need >= 4 and not set(quad) & set(used) and not {g[r][c] for r, c in quad} & values:
                found = extend(chosen + [quad], i + 1)
                if found:
                    return found
        return None

    found = extend([], 0)
    return ", ".join(f"{r} {c}" for r, c in found) if found else None


class LogicPuzzle(SymbenchTask):
    name = "logic_puzzle"
    kind = "planning"
    solver = (selection_ok, solve_logic_puzzle)

    def make(self, rng, difficulty):
        level = rng.randint(min(difficulty, 10), min(difficulty + 4, 10))
        n, k, (lo, hi), rule = _LOGIC_LEVELS[level - 1]
        while True:
            if lo < 0:  # SymBench: 70% positive, so that solutions are likely
                grid = [[rng.randint(1, hi) if rng.random() < 0.7 else rng.randint(lo, -1) for _ in range(n)] for _ in range(n)]
            else:
                grid = [[rng.randint(lo, hi) for _ in range(n)] for _ in range(n)]
            data = {"grid": grid, "select": k, "rule": rule}
            answer = self.solve(data)
            if answer is not None:
                break
        rule_text = {
            "sum_le_4": "The sum of the selected numbers in each row and each column should be less than or equal to 4.",
            "product_gt_0": "The product of the selected numbers in each row and each column must be greater than 0.",
        }[rule]
        flat = [x for row in grid for x in row]
        q = (
            f"Given a {n}*{n} grid where each cell contains a number (between {min(flat)} to {max(flat)}), you must "
            f"select {k} different numbers from these cells (no two selected cells may hold the same number). "
            f"{rule_text} Rows and columns without a selected number are not constrained. The numbers in the same row "
            "are separated by ',', and rows and columns are counted from 0, starting at the top-left cell.\n"
            f"Using the number {grid[0][n - 1]} in the top-rightmost square (0,{n - 1}) as the first selected number\n"
            + "\n".join(", ".join(map(str, row)) for row in grid)
            + "\n\nAny selection that meets the rules is accepted. Return your answer with the format <<<list of "
            "selected number positions>>>, where each position is given as row column (0-based indices). For "
            "example, <<<0 3, 1 0, 2 4>>> means numbers selected are at positions (0,3), (1,0), and (2,4)."
        )
        return q, data, answer

    def check(self, answer, instance):
        d = instance.data
        return float(selection_ok(d["grid"], cell_pairs(answer), d["select"], d["rule"]))


# ---------------------------------------------------------------- grid filling (shared by Latin diagrams and Sudoku)


def backtrack_fill(grid, candidates):
    """Fill the None cells of `grid` (list of lists) in place, trying the cell with the fewest
    candidates first; `candidates(grid, r, c)` lists the values allowed there. True if filled."""
    best = None
    for r, row in enumerate(grid):
        for c, value in enumerate(row):
            if value is None:
                options = candidates(grid, r, c)
                if best is None or len(options) < len(best[2]):
                    best = (r, c, options)
    if best is None:
        return True
    r, c, options = best
    for value in options:
        grid[r][c] = value
        if backtrack_fill(grid, candidates):
            return True
    grid[r][c] = None
    return False


def latin_candidates(grid, r, c):
    """Letters allowed at (r, c): unused in its row and column; on the minor diagonal, equal
    to the diagonal's letter once one is placed."""
    n = len(grid)
    used = set(grid[r]) | {grid[i][c] for i in range(n)}
    options = [ch for ch in "abcdefghij"[:n] if ch not in used]
    if r + c == n - 1:
        diagonal = {grid[i][n - 1 - i] for i in range(n)} - {None}
        options = [ch for ch in options if not diagonal or ch in diagonal]
    return options


def solve_letter_logic_diagram(data):
    grid = [[ch if ch != "." else None for ch in row] for row in data["puzzle"]]
    backtrack_fill(grid, latin_candidates)
    return str(["".join(row) for row in grid])


def latin_ok(rows, n, puzzle):
    letters = sorted("abcdefghij"[:n])
    if len(rows) != n or any(len(row) != n for row in rows):
        return False
    if any(sorted(row) != letters for row in rows) or any(sorted(col) != letters for col in zip(*rows)):
        return False
    if len({rows[i][n - 1 - i] for i in range(n)}) != 1:
        return False
    return all(p == "." or p == rows[r][c] for r, row in enumerate(puzzle) for c, p in enumerate(row))


class LetterLogicDiagram(SymbenchTask):
    name = "letter_logic_diagram"
    kind = "planning"
    solver = (backtrack_fill, latin_candidates, solve_letter_logic_diagram)

    def make(self, rng, difficulty):
        n = 6 + min(difficulty, 3)
        letters = shuffled(rng, "abcdefghij"[:n])
        p = shuffled(rng, range(n))
        q_cols = [n - 1 - p[n - 1 - c] for c in range(n)]
        solution = [[None] * n for _ in range(n)]
        for r in range(n):
            for c in range(n):
                solution[p[r]][q_cols[c]] = letters[(r + c) % n]
        if rng.random() < 0.5:
            solution = [list(col) for col in zip(*solution)]
        blanks = set(rng.sample(range(n * n), n * n // 2 + 2 * difficulty))
        puzzle = ["".join("." if r * n + c in blanks else solution[r][c] for c in range(n)) for r in range(n)]
        data = {"puzzle": puzzle}
        q = (
            f"Fill the {n}x{n} grid below ('.' is empty) with the letters {', '.join(sorted(letters))} so that every "
            "row and every column contains each letter exactly once, and all cells on the minor diagonal (from the "
            f"top-right to the bottom-left corner) hold the same letter.\n{chr(10).join(puzzle)}\n"
            "Any grid that meets the rules and keeps the given letters is accepted. Answer with the rows as a list of "
            "strings, like <<<['abc...', ...]>>>."
        )
        return q, data, str(["".join(row) for row in solution])

    def check(self, answer, instance):
        n = len(instance.data["puzzle"])
        cells = [ch for ch in answer.lower() if ch in "abcdefghij"[:n]]
        rows = ["".join(cells[i : i + n]) for i in range(0, len(cells), n)]
        return float(len(cells) == n * n and latin_ok(rows, n, instance.data["puzzle"]))


# ---------------------------------------------------------------- standard_sudoku


def sudoku_candidates(grid, r, c):
    used = set(grid[r]) | {grid[i][c] for i in range(9)}
    br, bc = 3 * (r // 3), 3 * (c // 3)
    used |= {grid[br + i][bc + j] for i in range(3) for j in range(3)}
    return [d for d in range(1, 10) if d not in used]


def solve_standard_sudoku(data):
    grid = [[d or None for d in row] for row in data["puzzle"]]
    backtrack_fill(grid, sudoku_candidates)
    return str(grid)


def sudoku_ok(grid, puzzle):
    digits = list(range(1, 10))
    units = [row for row in grid] + [list(col) for col in zip(*grid)]
    units += [[grid[3 * (b // 3) + i][3 * (b % 3) + j] for i in range(3) for j in range(3)] for b in range(9)]
    if any(sorted(u) != digits for u in units):
        return False
    return all(p == 0 or p == grid[r][c] for r, row in enumerate(puzzle) for c, p in enumerate(row))


class StandardSudoku(SymbenchTask):
    name = "standard_sudoku"
    kind = "planning"
    solver = (backtrack_fill, sudoku_candidates, solve_standard_sudoku)

    def make(self, rng, difficulty):
        digits = shuffled(rng, range(1, 10))
        rows = [3 * band + r for band in shuffled(rng, range(3)) for r in shuffled(rng, range(3))]
        cols = [3 * stack + c for stack in shuffled(rng, range(3)) for c in shuffled(rng, range(3))]
        solution = [[digits[(3 * (r % 3) + r // 3 + c) % 9] for c in cols] for r in rows]
        if rng.random() < 0.5:
            solution = [list(col) for col in zip(*solution)]
        blanks = set(rng.sample(range(81), min(60, 35 + 5 * difficulty)))
        puzzle = [[0 if r * 9 + c in blanks else solution[r][c] for c in range(9)] for r in range(9)]
        data = {"puzzle": puzzle}
        shown = "\n".join(" ".join(str(d) if d else "." for d in row) for row in puzzle)
        q = (
            f"Solve this Sudoku ('.' is an empty cell): fill the grid with digits 1-9 so that every row, column "
            f"and 3x3 box contains each digit once, keeping the given digits.\n{shown}\n"
            "Answer with the 9 rows as a list of lists, like <<<[[5, 3, 4, ...], ...]>>>."
        )
        return q, data, str(solution)

    def check(self, answer, instance):
        digits = [int(d) for d in re.findall(r"[1-9]", answer)]
        if len(digits) != 81:
            return 0.0
        grid = [digits[i : i + 9] for i in range(0, 81, 9)]
        return float(sudoku_ok(grid, instance.data["puzzle"]))


# ---------------------------------------------------------------- eight_queens


def solve_eight_queens(data):
    n = data["n"]
    blocked = {tuple(x) for x in data["blocked"]}
    fixed = {r: c for r, c in data["queens"]}

    def place(r, cols):
        if r == n:
            return cols
        options = [fixed[r]] if r in fixed else range(n)
        for c in options:
            if (r, c) in blocked or any(c == cc or abs(c - cc) == r - rr for rr, cc in enumerate(cols)):
                continue
            found = place(r + 1, cols + [c])
            if found:
                return found
        return None

    return str([[r, c] for r, c in enumerate(place(0, []))])


@lru_cache(maxsize=None)
def queen_solutions(n: int) -> tuple[tuple[int, ...], ...]:
    """All solutions of the n-queens problem, as column tuples indexed by row."""
    out = []

    def place(cols):
        r = len(cols)
        if r == n:
            out.append(tuple(cols))
            return
        for c in range(n):
            if all(c != cc and abs(c - cc) != r - rr for rr, cc in enumerate(cols)):
                place(cols + [c])

    place([])
    return tuple(out)


class EightQueens(SymbenchTask):
    name = "eight_queens"
    kind = "planning"
    solver = (solve_eight_queens,)

    def make(self, rng, difficulty):
        n = 7 + min(difficulty, 3)  # all solutions are enumerated: 10 queens have 724
        cols = rng.choice(queen_solutions(n))
        queens = sorted([r, cols[r]] for r in rng.sample(range(n), rng.randint(1, 2)))
        free = [(r, c) for r in range(n) for c in range(n) if cols[r] != c]
        blocked = sorted([r, c] for r, c in rng.sample(free, rng.randint(2, 4 + 2 * difficulty)))
        data = {"n": n, "queens": queens, "blocked": blocked}
        board = [["." for _ in range(n)] for _ in range(n)]
        for r, c in queens:
            board[r][c] = "Q"
        for r, c in blocked:
            board[r][c] = "X"
        q = (
            f"Place {n} queens on the {n}x{n} board below so that no two attack each other (same row, column or "
            "diagonal). 'Q' marks queens already placed, which must stay; no queen may stand on an 'X'. Rows and "
            f"columns are counted from 0.\n{chr(10).join(''.join(row) for row in board)}\n"
            f"Any valid placement is accepted. Answer with the [row, column] of all {n} queens, like "
            "<<<[[0, 3], [1, 5], ...]>>>."
        )
        return q, data, str([[r, c] for r, c in enumerate(cols)])

    def check(self, answer, instance):
        n = instance.data["n"]
        listed = cell_pairs(answer)
        cells = set(listed)
        if len(listed) != n or len(cells) != n or any(not (0 <= r < n and 0 <= c < n) for r, c in cells):
            return 0.0
        if {tuple(q) for q in instance.data["queens"]} - cells or cells & {tuple(b) for b in instance.data["blocked"]}:
            return 0.0
        for (r1, c1), (r2, c2) in itertools.combinations(cells, 2):
            if r1 == r2 or c1 == c2 or abs(r1 - r2) == abs(c1 - c2):
                return 0.0
        return 1.0


# ---------------------------------------------------------------- cryptanalysis


def crack_feedback(guess, secret):
    """(correct and in place, correct but elsewhere) for two-symbol guess and secret."""
    exact = sum(g == s for g, s in zip(guess, secret))
    return [exact, len(set(guess) & set(secret)) - exact]


def solve_cryptanalysis(data):
    answer = []
    for part, alphabet in (("digit_clues", data["digits"]), ("letter_clues", data["letters"])):
        for pair in itertools.permutations(alphabet, 2):
            if all(crack_feedback(guess, pair) == fb for guess, fb in data[part]):
                answer.extend(pair)
                break
    return str(answer)


def feedback_text(feedback, noun):
    exact, moved = feedback
    parts = []
    if exact:
        parts.append(f"{exact} {noun}{'s are' if exact > 1 else ' is'} correct and in the correct position")
    if moved:
        parts.append(f"{moved} {noun}{'s are' if moved > 1 else ' is'} correct but in the wrong position")
    if not parts:
        parts.append(f"both {noun}s are incorrect")
    elif exact + moved == 1:
        parts.append(f"one {noun} is incorrect")
    return "; ".join(parts)


class Cryptanalysis(SymbenchTask):
    name = "cryptanalysis"
    kind = "execution"
    solver = (crack_feedback, solve_cryptanalysis)

    def make(self, rng, difficulty):
        digits = "0123456789"
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: 6 + 4 * difficulty]
        secret = rng.sample(digits, 2) + rng.sample(letters, 2)
        clues = {}
        for part, alphabet, truth in (("digit_clues", digits, secret[:2]), ("letter_clues", letters, secret[2:])):
            candidates = list(itertools.permutations(alphabet, 2))
            clues[part] = []
            while len(candidates) > 1:
                guess = rng.sample(alphabet, 2)
                fb = crack_feedback(guess, truth)
                kept = [c for c in candidates if crack_feedback(guess, c) == fb]
                if len(kept) < len(candidates):
                    clues[part].append(["".join(guess), fb])
                    candidates = kept
        data = {"digits": digits, "letters": letters, **clues}
        rounds = list(itertools.zip_longest(clues["digit_clues"], clues["letter_clues"]))
        lines = []
        for i, (dg, lt) in enumerate(rounds):
            dg = dg or [rng.choice([d + e for d, e in itertools.permutations(digits, 2)]), None]
            lt = lt or [rng.choice([d + e for d, e in itertools.permutations(letters, 2)]), None]
            dfb = dg[1] if dg[1] is not None else crack_feedback(dg[0], secret[:2])
            lfb = lt[1] if lt[1] is not None else crack_feedback(lt[0], secret[2:])
            lines.append(f"{i + 1}. Guess {dg[0]}{lt[0]}: {feedback_text(dfb, 'number')}; {feedback_text(lfb, 'letter')}.")
        # padding guesses only add true information, so the clue lists in `data` stay sufficient
        q = (
            "Crack a 4-character password: two different digits followed by two different letters from "
            f"{letters[0]}-{letters[-1]}. Feedback on each guess:\n{chr(10).join(lines)}\n"
            "Answer with the four characters as a list, like <<<['3', '8', 'B', 'E']>>>."
        )
        return q, data, str(secret)

    def check(self, answer, instance):
        return float(chars_equal(answer, instance.answer, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


TASKS = [
    PermutationsAndCombinations,
    ConstrainedLinearArrangement,
    LogicPuzzle,
    LetterLogicDiagram,
    StandardSudoku,
    EightQueens,
    Cryptanalysis,
]
