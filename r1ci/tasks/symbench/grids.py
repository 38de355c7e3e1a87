"""SymBench grid tasks where code computes the answer by simulation: pooling, matrix
transformations, largest uniform squares, Reversi, light puzzles and 2048."""

from __future__ import annotations

from r1ci.tasks.symbench.common import SymbenchTask, atoms_equal, chars_equal


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
        return float(atoms_equal(answer, instance.answer, abs_tol=0.006))  # averages are rounded to 2 decimals


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
        return float(chars_equal(answer, instance.answer, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


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
        return float(chars_equal(answer, instance.answer, "01*"))


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
        return float(chars_equal(answer, instance.answer, "01"))


# ---------------------------------------------------------------- 2048


def slide_row_left(row):
    tiles = [x for x in row if x]
    out = []
    while tiles:
        if len(tiles) > 1 and tiles[0] == tiles[1]:
            out.append(tiles[0] * 2)
            tiles = tiles[2:]
        else:
            out.append(tiles.pop(0))
    return out + [0] * (len(row) - len(out))


def solve_2048(data):
    grid = [list(row) for row in data["grid"]]
    for move in data["moves"]:
        if move == "left":
            grid = [slide_row_left(row) for row in grid]
        elif move == "right":
            grid = [slide_row_left(row[::-1])[::-1] for row in grid]
        else:
            cols = [list(col) for col in zip(*grid)]
            cols = [slide_row_left(col) if move == "up" else slide_row_left(col[::-1])[::-1] for col in cols]
            grid = [list(row) for row in zip(*cols)]
    return str(grid)


class Game2048(SymbenchTask):
    name = "2048"
    kind = "execution"
    solver = (slide_row_left, solve_2048)

    def make(self, rng, difficulty):
        n = 3 + difficulty
        grid = [[rng.choice([0, 0, 0, 2, 2, 4, 8]) for _ in range(n)] for _ in range(n)]
        moves = rng.choices(["up", "down", "left", "right"], k=rng.randint(1, 2 + difficulty))
        data = {"grid": grid, "moves": moves}
        q = (
            f"A {n}x{n} 2048 board (0 is an empty cell):\n{grid_text(grid)}\n"
            f"Apply the moves {', '.join(moves)} in order. On each move every tile slides as far as possible in "
            "that direction; two equal tiles that meet merge into their sum, a tile merges at most once per move, "
            "and merging starts from the side the tiles move towards. No new tiles appear.\n"
            "Answer with the final board as a list of rows, like <<<[[2, 0], [4, 8]]>>>."
        )
        return q, data, self.solve(data)


TASKS = [Pooling, MatrixTransformation, PatternRecognition, Reversi, LightPuzzles, Game2048]
