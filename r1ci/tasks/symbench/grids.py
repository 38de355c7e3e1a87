"""SymBench grid tasks where code computes the answer by simulation: pooling, matrix
transformations, largest uniform squares, Reversi, light puzzles and 2048. Grids compare
row by row, so an answer of the wrong shape is wrong even with the right cells in order."""

from __future__ import annotations

from fractions import Fraction

from r1ci.tasks.symbench.common import SymbenchTask, char_rows, same_value


def grid_text(grid):
    return "\n".join(" ".join(str(x) for x in row) for row in grid)


# ---------------------------------------------------------------- pooling


def solve_pooling(data):
    m, k, s = data["matrix"], data["window"], data["stride"]
    out = []
    for r in range(0, len(m) - k + 1, s):
        row = []
        for c in range(0, len(m[0]) - k + 1, s):
            cells = [m[r + i][c + j] for i in range(k) for j in range(k)]
            if data["mode"] == "max":
                row.append(max(cells))
            else:
                row.append(round(sum(cells) / len(cells), 2))
        out.append(row)
    return str(out)


class Pooling(SymbenchTask):
    name = "pooling"
    kind = "execution"
    solver = (solve_pooling,)

    def make(self, rng, difficulty):
        size = rng.randint(3 + difficulty, 4 + difficulty)
        window = rng.randint(2, 3)
        stride = rng.choice([1, window])
        mode = rng.choice(["max", "average"])
        matrix = [[rng.randint(-10, 10) for _ in range(size)] for _ in range(size)]
        data = {"matrix": matrix, "window": window, "stride": stride, "mode": mode}
        q = (
            f"Apply {mode} pooling with a {window}x{window} window and stride {stride} (no padding) to the matrix:\n"
            f"{grid_text(matrix)}\n"
            + ("Round averages to 2 decimals. " if mode == "average" else "")
            + "Answer with the result as a list of rows, like <<<[[1, 2], [3, 4]]>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        half_cent = Fraction(1, 200) if instance.data["mode"] == "average" else Fraction(0)  # averages asked to 2 decimals
        return float(same_value(answer, instance.answer, abs_tol=half_cent))


# ---------------------------------------------------------------- matrix_transformation

_TRANSFORMS = {
    "rotate 90 degrees clockwise": "rot90",
    "rotate 180 degrees": "rot180",
    "rotate 90 degrees counterclockwise": "rot270",
    "transpose (swap rows and columns)": "transpose",
    "mirror left to right": "fliplr",
    "mirror top to bottom": "flipud",
}


def transform(grid, op):
    if op == "rot90":
        return [list(r) for r in zip(*grid[::-1])]
    if op == "rot180":
        return [row[::-1] for row in grid[::-1]]
    if op == "rot270":
        return [list(r) for r in zip(*grid)][::-1]
    if op == "transpose":
        return [list(r) for r in zip(*grid)]
    if op == "fliplr":
        return [row[::-1] for row in grid]
    return grid[::-1]


def solve_matrix_transformation(data):
    grid = data["grid"]
    for op in data["ops"]:
        grid = transform(grid, op)
    return str(["".join(row) for row in grid])


class MatrixTransformation(SymbenchTask):
    name = "matrix_transformation"
    kind = "execution"
    solver = (transform, solve_matrix_transformation)

    def make(self, rng, difficulty):
        rows, cols = rng.randint(2, 3 + difficulty), rng.randint(2, 3 + difficulty)
        grid = [[rng.choice("ABCDEFGHJKMNPQRSTUVWXYZ23456789") for _ in range(cols)] for _ in range(rows)]
        names = rng.choices(list(_TRANSFORMS), k=rng.randint(1, 1 + difficulty))
        data = {"grid": grid, "ops": [_TRANSFORMS[n] for n in names]}
        steps = "\n".join(f"{i + 1}. {n}" for i, n in enumerate(names))
        q = (
            f"Start from the character matrix (one row per line):\n{grid_text(grid)}\n"
            f"Apply, in order:\n{steps}\n"
            "Answer with the final matrix as a list of row strings, like <<<['AB', 'CD']>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return float(char_rows(answer, alphabet) == char_rows(instance.answer, alphabet))


# ---------------------------------------------------------------- pattern_recognition


def solve_pattern_recognition(data):
    g = data["grid"]
    rows, cols = len(g), len(g[0])
    size = [[0] * cols for _ in range(rows)]  # size[r][c]: largest uniform square ending at (r, c)
    for r in range(rows):
        for c in range(cols):
            size[r][c] = 1
            if r and c and g[r][c] == g[r - 1][c] == g[r][c - 1] == g[r - 1][c - 1]:
                size[r][c] = 1 + min(size[r - 1][c], size[r][c - 1], size[r - 1][c - 1])
    k = max(max(row) for row in size)
    top, left = min((r - k + 1, c - k + 1) for r in range(rows) for c in range(cols) if size[r][c] >= k)
    best = [top, left, k]
    return str(list(best))


class PatternRecognition(SymbenchTask):
    name = "pattern_recognition"
    kind = "execution"
    solver = (solve_pattern_recognition,)

    def make(self, rng, difficulty):
        rows, cols = rng.randint(6, 7 + 2 * difficulty), rng.randint(6, 7 + 2 * difficulty)
        alphabet = rng.sample("abcdefghxyz#@*", 3)
        grid = [[rng.choice(alphabet) for _ in range(cols)] for _ in range(rows)]
        k = rng.randint(3, min(rows, cols) - 2)
        top, left, ch = rng.randint(0, rows - k), rng.randint(0, cols - k), rng.choice(alphabet)
        for r in range(top, top + k):
            for c in range(left, left + k):
                grid[r][c] = ch
        data = {"grid": ["".join(row) for row in grid]}
        q = (
            "Find the largest square block of identical characters in the grid below (rows and columns "
            f"counted from 0):\n{chr(10).join(data['grid'])}\n"
            "If several squares have the largest size, take the one whose top-left corner has the smallest row, "
            "then the smallest column. Answer with [row, column, size] of its top-left corner, like <<<[2, 3, 4]>>>."
        )
        return q, data, self.solve(data)


# ---------------------------------------------------------------- reversi

def reversi_flips(board, player, r, c):
    """Cells flipped when `player` ('1' black, '0' white) plays (r, c); empty if illegal."""
    n = len(board)
    if board[r][c] != "*":
        return []
    other = "0" if player == "1" else "1"
    flips = []
    for dr, dc in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:
        line, rr, cc = [], r + dr, c + dc
        while 0 <= rr < n and 0 <= cc < n and board[rr][cc] == other:
            line.append((rr, cc))
            rr, cc = rr + dr, cc + dc
        if line and 0 <= rr < n and 0 <= cc < n and board[rr][cc] == player:
            flips.extend(line)
    return flips


def reversi_play(board, player, r, c):
    board = [list(row) for row in board]
    for rr, cc in reversi_flips(board, player, r, c):
        board[rr][cc] = player
    board[r][c] = player
    return ["".join(row) for row in board]


def solve_reversi(data):
    board = data["board"]
    for player, r, c in data["moves"]:
        board = reversi_play(board, player, r, c)
    return str(board)


class Reversi(SymbenchTask):
    name = "reversi"
    kind = "execution"
    solver = (reversi_flips, reversi_play, solve_reversi)

    def make(self, rng, difficulty):
        n = 6 if difficulty == 1 else 8
        start = ["*" * n for _ in range(n)]
        start[n // 2 - 1] = "*" * (n // 2 - 1) + "01" + "*" * (n // 2 - 1)
        start[n // 2] = "*" * (n // 2 - 1) + "10" + "*" * (n // 2 - 1)
        board, player, played = start, "1", []
        for _ in range(rng.randint(2, 10) + 1 + difficulty):
            legal = [(r, c) for r in range(n) for c in range(n) if reversi_flips(board, player, r, c)]
            if not legal:
                break
            r, c = rng.choice(legal)
            played.append([player, r, c])
            board = reversi_play(board, player, r, c)
            player = "0" if player == "1" else "1"
        # the question shows the board after the opening moves and asks for the last few
        split = max(0, len(played) - rng.randint(1, 1 + difficulty))
        shown = start
        for p, r, c in played[:split]:
            shown = reversi_play(shown, p, r, c)
        data = {"board": shown, "moves": played[split:]}
        listing = "\n".join(f"{'black (1)' if p == '1' else 'white (0)'} plays row {r}, column {c}" for p, r, c in data["moves"])
        q = (
            f"A game of Reversi (Othello) on a {n}x{n} board: '1' is black, '0' is white, '*' is empty; rows and "
            f"columns are counted from 0. The board is now:\n{chr(10).join(shown)}\n"
            f"Then these moves are played (each is legal and flips every outflanked line of discs):\n{listing}\n"
            "Answer with the final board as a list of row strings, like <<<['**01**', ...]>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        return float(char_rows(answer, "01*") == char_rows(instance.answer, "01*"))


# ---------------------------------------------------------------- light_puzzles


def solve_light_puzzles(data):
    grid = [list(row) for row in data["grid"]]
    for name in data["presses"]:
        for r, c in data["buttons"][name]:
            grid[r][c] = "1" if grid[r][c] == "0" else "0"
    return str(["".join(row) for row in grid])


class LightPuzzles(SymbenchTask):
    name = "light_puzzles"
    kind = "execution"
    solver = (solve_light_puzzles,)

    def make(self, rng, difficulty):
        n = 2 + difficulty + rng.randint(0, 1)
        grid = ["".join(rng.choice("01") for _ in range(n)) for _ in range(n)]
        cells = [(r, c) for r in range(n) for c in range(n)]
        buttons = {b: sorted(rng.sample(cells, rng.randint(2, max(2, n * n // 2)))) for b in "ABC"[: 2 + min(difficulty, 1)]}
        presses = rng.choices(list(buttons), k=rng.randint(2, 3 + 2 * difficulty))
        data = {"grid": grid, "buttons": {b: [list(p) for p in v] for b, v in buttons.items()}, "presses": presses}
        controls = "\n".join(f"Button {b} toggles the lights at (row, column) {', '.join(map(str, v))}" for b, v in buttons.items())
        q = (
            f"A {n}x{n} grid of lights, '1' on and '0' off, rows and columns counted from 0:\n{chr(10).join(grid)}\n"
            f"{controls}\nThe buttons are pressed in this order: {', '.join(presses)}.\n"
            "Answer with the final grid as a list of row strings, like <<<['010', '111', '000']>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        return float(char_rows(answer, "01") == char_rows(instance.answer, "01"))


# ---------------------------------------------------------------- 2048
# CodeSteer-v1.0 SymBench (create_dataset_2048.py): one number moves from a given cell along
# a string of single steps; it slides into an empty cell, merges into an equal number (and
# moves on as the sum), and stays put before a different number or the edge.


def step_2048(grid, pos, move):
    """The grid and the moving number's cell after one step ('u', 'd', 'l' or 'r')."""
    (r, c), (dr, dc) = pos, {"u": (-1, 0), "d": (1, 0), "l": (0, -1), "r": (0, 1)}[move]
    nr, nc = r + dr, c + dc
    if not (0 <= nr < len(grid) and 0 <= nc < len(grid)) or grid[nr][nc] not in (0, grid[r][c]):
        return grid, pos
    grid = [list(row) for row in grid]
    grid[nr][nc] += grid[r][c]
    grid[r][c] = 0
    return grid, (nr, nc)


def solve_2048(data):
    grid, pos = data["grid"], tuple(data["start"])
    for move in data["moves"]:
        grid, pos = step_2048(grid, pos, move)
    return str(grid)


class Game2048(SymbenchTask):
    name = "2048"
    kind = "execution"
    solver = (step_2048, solve_2048)

    def make(self, rng, difficulty):
        n = rng.randint(2, 3 + min(difficulty, 2))  # SymBench: 2x2 to 5x5 grids, 2 to 6 moves
        cells = [(r, c) for r in range(n) for c in range(n)]
        filled = rng.sample(cells, rng.randint(n, min(2 * n, n * n)))
        grid = [[2 ** rng.randint(1, 5) if (r, c) in filled else 0 for c in range(n)] for r in range(n)]
        start = rng.choice(filled)  # SymBench may pick an empty cell; a number must be there to move
        moves = "".join(rng.choice("udlr") for _ in range(rng.randint(2, 3 + difficulty)))
        data = {"grid": grid, "start": list(start), "moves": moves}
        q = (
            f"In an {n}x{n} grid, there are several squares containing powers of 2. We define the '2048' game: the "
            "numbers in the grid can move in any direction. When a moving number encounters a number that is the same "
            "power of 2, they combine to form a larger number that is the next power of 2 (2 meets 2 -> 4; 4 meets 4 -> "
            "8; 16 meets 16 -> 32), and the combined number goes on moving. When it encounters a different number or "
            "the edge of the grid, it stays where it is for that step. 0 is an empty square.\n"
            "u: represents moving up one step\nd: represents moving down one step\n"
            "l: represents moving left one step\nr: represents moving right one step\n\n"
            f"Now, in the following matrix, move the number in position ({start[0] + 1}, {start[1] + 1}) (row, column, "
            f"counted from 1) using the sequence '{moves}':\n"
            + "\n".join(", ".join(str(x) for x in row) for row in grid)
            + "\n\nWhat is the matrix after moving? Answer with the matrix as a list of rows, like <<<[[2, 0], [4, 8]]>>>."
        )
        return q, data, self.solve(data)


TASKS = [Pooling, MatrixTransformation, PatternRecognition, Reversi, LightPuzzles, Game2048]
