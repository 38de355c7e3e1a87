"""SymBench tasks that follow written rules step by step over strings, hands of cards and
item counts: statistical counting, Mahjong, synthesis, splitting, decomposition, insertion,
deletion/modification and letter counting."""

from __future__ import annotations

from r1ci.tasks.answers import normalize_text
from r1ci.tasks.symbench.common import SymbenchTask, number_equal

_WORDS = (
    "strawberry banana pineapple raspberry mississippi bookkeeper committee assessment necessary "
    "embarrass occurrence possession accommodate parallel millennium questionnaire referral tomorrow "
    "successful address balloon coffee bubble giraffe hippopotamus intelligence kangaroo lollipop "
    "marshmallow noodle opossum pepper quarrel rhythm scissors tattoo umbrella vacuum whippersnapper "
    "zucchini abracadabra barrel cinnamon dilemma eccentric fluffy grammar hallway illusion jellybean"
).split()


# ---------------------------------------------------------------- statistical_counting


def solve_statistical_counting(data):
    s, total, i = data["string"], 0, 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        for letter, min_len, points in data["rules"]:
            if s[i] == letter and j - i >= min_len:
                total += points
        i = j
    return str(total)


class StatisticalCounting(SymbenchTask):
    name = "statistical_counting"
    kind = "execution"
    solver = (solve_statistical_counting,)

    def make(self, rng, difficulty):
        letters = "ABC"[: 2 + min(difficulty, 1)] + ("D" if difficulty > 2 else "")
        s = "".join(rng.choice(letters) for _ in range(rng.randint(10, 15 + 10 * difficulty)))
        rules = [[rng.choice(letters), rng.randint(1, 3), rng.choice([-3, -2, -1, 1, 2, 3, 5])] for _ in range(rng.randint(2, 3 + difficulty))]
        data = {"string": s, "rules": rules}
        listing = "\n".join(
            f"- every maximal run of at least {k} consecutive '{ch}' {'adds' if p > 0 else 'subtracts'} {abs(p)} point{'s' * (abs(p) > 1)}"
            for ch, k, p in rules
        )
        q = (
            f"Score the string {s} with these rules (a run is a maximal block of equal consecutive letters; "
            f"every rule applies to every run independently, starting from 0 points):\n{listing}\n"
            "Answer with the total score as an integer, like <<<7>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        return float(number_equal(answer, instance.answer))


# ---------------------------------------------------------------- mahjong_pattern


def mahjong_result(hand, card):
    if hand.count(card) >= 2:
        return "Peng"
    have = set(hand)
    o = ord(card)
    for a, b in ((o - 2, o - 1), (o - 1, o + 1), (o + 1, o + 2)):
        if chr(a) in have and chr(b) in have:
            return "Chi"
    return "Pass"


def solve_mahjong_pattern(data):
    hand, result = list(data["hand"]), None
    for new, removed in data["rounds"]:
        result = mahjong_result(hand, new)
        hand.append(new)
        hand.remove(removed)
    return result


class MahjongPattern(SymbenchTask):
    name = "mahjong_pattern"
    kind = "execution"
    solver = (mahjong_result, solve_mahjong_pattern)

    def make(self, rng, difficulty):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        hand = sorted(rng.choice(alphabet) for _ in range(13))
        rounds, current = [], list(hand)
        for _ in range(rng.randint(1, 2 + difficulty)):
            new = rng.choice(current + [rng.choice(alphabet)]) if rng.random() < 0.5 else rng.choice(alphabet)
            removed = rng.choice(current + [new])
            rounds.append([new, removed])
            current.append(new)
            current.remove(removed)
        data = {"hand": hand, "rounds": rounds}
        listing = "\n".join(f"Round {i + 1}: add a {a} card and remove a {b} card." for i, (a, b) in enumerate(rounds))
        q = (
            f"Initial cards: {''.join(hand)}\nEach round a new card is drawn; judge the round by the cards held "
            "before the new card is added:\n"
            "1. 'Peng' if the hand already holds two or more cards equal to the new card;\n"
            "2. otherwise 'Chi' if two cards in the hand form three consecutive letters with the new card;\n"
            "3. otherwise 'Pass'.\nThen the new card joins the hand and the named card is removed.\n"
            f"{listing}\nWhat is the result of the last round? Answer with Peng, Chi or Pass, like <<<Chi>>>."
        )
        return q, data, self.solve(data)

    def check(self, answer, instance):
        given = normalize_text(answer)
        return float({"1": "peng", "2": "chi", "0": "pass"}.get(given, given) == instance.answer.lower())  # SymBench's codes


# ---------------------------------------------------------------- string_synthesis, string_splitting, synthesis_decomposition


def run_count_rules(data):
    """Final item counts (in the order of data['items']) after applying the rules until none
    applies. Mode 'cycle': visit the rules round-robin and apply the visited rule once if its
    inputs are there. Mode 'exhaust': visit them in order and apply each as often as possible."""
    counts, rules = dict(data["counts"]), data["rules"]

    def ready(rule):
        return all(counts[item] >= k for item, k in rule["in"].items())

    visit = 0
    while any(ready(rule) for rule in rules):
        rule = rules[visit % len(rules)]
        while ready(rule):
            for item, k in rule["in"].items():
                counts[item] -= k
            for item, k in rule["out"].items():
                counts[item] += k
            if data["mode"] == "cycle":
                break
        visit += 1
    return str([counts[item] for item in data["items"]])


_MODE_TEXT = {
    "cycle": "Cycle through the methods in the given order, one method at a time: if the current method's inputs are "
    "available, execute it once; then go on to the next method, and after the last method start again from "
    "method 1. Stop as soon as no method can be executed.",
    "exhaust": "Cycle through the methods in the given order, executing each one as many times as its inputs allow "
    "before going on to the next; after the last method start again from method 1. Stop when no method can be "
    "executed.",
}


def count_rules_question(data, intro):
    have = ", ".join(f"{k} {item}" for item, k in data["counts"].items() if k)
    listing = "\n".join(
        f"Method {i + 1}: " + " + ".join(f"{k} {x}" for x, k in r["in"].items()) + " -> " + " + ".join(f"{k} {x}" for x, k in r["out"].items())
        for i, r in enumerate(data["rules"])
    )
    example = [i % 3 for i in range(len(data["items"]))]
    return (
        f"{intro} Methods ('2 P + 1 Q -> 1 R' uses up two P and one Q and makes one R):\n{listing}\n{_MODE_TEXT[data['mode']]}\n"
        f"Initially there are {have} (every other item 0).\n"
        f"Answer with the final counts of {', '.join(data['items'])}, in that order, as a list like <<<{example}>>>."
    )


class StringSynthesis(SymbenchTask):
    name = "string_synthesis"
    kind = "execution"
    solver = (run_count_rules,)
    items = ["[A]", "[B]", "[C]", "{A}", "{B}", "{C}", "(A)", "(B)", "(C)"]
    rules = [  # the six block-combining methods of SymBench
        {"in": {"[A]": 1, "[B]": 1, "[C]": 1}, "out": {"{A}": 1}},
        {"in": {"[A]": 1, "[B]": 1}, "out": {"{C}": 1}},
        {"in": {"[B]": 1, "[C]": 1}, "out": {"{B}": 1}},
        {"in": {"[C]": 2}, "out": {"{C}": 1}},
        {"in": {"{A}": 1, "{C}": 1}, "out": {"(A)": 1, "(B)": 1}},
        {"in": {"{B}": 2}, "out": {"(C)": 1}},
    ]

    def make(self, rng, difficulty):
        counts = dict.fromkeys(self.items, 0)
        for item, top in zip(self.items, (4, 7, 6)):
            counts[item] = rng.randint(1, top + 2 * difficulty)
        data = {"items": self.items, "counts": counts, "rules": self.rules, "mode": "exhaust"}
        q = count_rules_question(data, f"There are nine kinds of blocks: {', '.join(self.items)}.")
        return q, data, self.solve(data)


class StringSplitting(SymbenchTask):
    name = "string_splitting"
    kind = "execution"
    solver = (run_count_rules,)
    items = ["A", "B", "C", "X", "Y", "Z"]  # machines A, B, C; parts X, Y, Z

    def make(self, rng, difficulty):
        two = lambda: rng.randint(1, 2)  # noqa: E731
        rules = [  # SymBench's five dismantling methods, with amounts drawn per instance
            {"in": {"A": 1}, "out": {"X": two(), "Y": two()}},
            {"in": {"B": 2}, "out": {"X": two()}},
            {"in": {"C": 2}, "out": {"Y": two()}},
            {"in": {"B": 1, "C": 1}, "out": {"A": 1}},
            {"in": {"X": two(), "Y": two()}, "out": {"Z": 1}},
        ]
        counts = {item: (rng.randint(1, 3 + 2 * difficulty) if item in "ABC" else 0) for item in self.items}
        data = {"items": self.items, "counts": counts, "rules": rules, "mode": "cycle"}
        q = count_rules_question(data, "An engineer dismantles old machines A, B and C into parts X, Y and Z.")
        return q, data, self.solve(data)


class SynthesisDecomposition(SymbenchTask):
    name = "synthesis_decomposition"
    kind = "execution"
    solver = (run_count_rules,)
    rank = {"A": 0, "B": 0, "C": 1, "X": 2, "Y": 3}  # a method only turns items into higher-ranked ones

    def make(self, rng, difficulty):
        items = ["A", "B", "C", "X"] + ["Y"] * (difficulty > 1)
        rules = []
        products = items[3:]
        for i in range(rng.randint(len(products) + 1, 3 + min(difficulty, 2))):
            out = products[i] if i < len(products) else rng.choice([x for x in items if self.rank[x] > 0])
            lower = [x for x in items if self.rank[x] < self.rank[out]]
            inputs = sorted(rng.sample(lower, rng.randint(1, min(3, len(lower)))))
            rule = {"in": {x: rng.randint(1, 3) for x in inputs}, "out": {out: rng.randint(1, 3)}}
            rules.insert(rng.randint(0, len(rules)), rule)
        counts = {x: (rng.randint(3, 6 + 2 * difficulty) if self.rank[x] < 2 else 0) for x in items}
        data = {"items": items, "counts": counts, "rules": rules, "mode": "cycle"}
        q = count_rules_question(
            data, f"Xiao Li's farm grows crops A, B and C and exchanges them for product{'s' * (len(products) > 1)} {' and '.join(products)}."
        )
        return q, data, self.solve(data)


# ---------------------------------------------------------------- string_insertion


def solve_string_insertion(data):
    s = data["string"]
    inserts = []
    for order, (pattern, ch) in enumerate(data["rules"]):
        start = s.find(pattern)
        while start != -1:
            inserts.append((start + len(pattern), order, ch))
            start = s.find(pattern, start + 1)
    out, last = [], 0
    for pos, _, ch in sorted(inserts):
        out.append(s[last:pos] + ch)
        last = pos
    return "".join(out) + s[last:]


class StringInsertion(SymbenchTask):
    name = "string_insertion"
    kind = "execution"
    solver = (solve_string_insertion,)

    def make(self, rng, difficulty):
        alphabet = "ABCDE"
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 14 + 6 * difficulty)))
        rules = []
        for _ in range(3 + difficulty):
            start = rng.randint(0, len(s) - 3)
            pattern = s[start : start + rng.randint(2, 3)] if rng.random() < 0.7 else "".join(rng.choices(alphabet, k=3))
            rules.append([pattern, rng.choice(alphabet)])
        data = {"string": s, "rules": rules}
        listing = "\n".join(f"{i + 1}. After every occurrence of '{p}', insert '{c}'." for i, (p, c) in enumerate(rules))
        q = (
            f"Modify the string {s} with these rules:\n{listing}\n"
            "Find all occurrences in the original string first (occurrences may overlap), then make all insertions "
            "at once; insertions at the same position appear in rule order.\n"
            "Answer with the resulting string, like <<<ABCDEA>>>."
        )
        return q, data, self.solve(data)


# ---------------------------------------------------------------- string_deletion_and_modification


def apply_edit_rule(s, rule):
    """The string after `rule` or None when the rule does not apply."""
    kind, x, y = rule
    if kind == "delete" and x in s:
        return s.replace(x, "", 1)
    if kind == "replace" and x in s:
        return s.replace(x, y, 1)
    if kind == "drop_first" and s.startswith(x):
        return s[1:]
    if kind == "swap_end" and s.endswith(x):
        return s[: -len(x)] + x[::-1]
    if kind == "drop_last" and s.startswith(x) and len(s) > int(y):
        return s[:-1]
    return None


def solve_string_deletion_and_modification(data):
    s, seen = data["string"], set()
    while s not in seen:
        seen.add(s)
        for rule in data["rules"]:
            changed = apply_edit_rule(s, rule)
            if changed is not None and changed != s:
                s = changed
                break
        else:
            return s
    return s


def edit_rule_text(rule):
    kind, x, y = rule
    return {
        "delete": f"If the string contains '{x}', delete its first occurrence.",
        "replace": f"If the string contains '{x}', replace its first occurrence with '{y}'.",
        "drop_first": f"If the string starts with '{x}', remove the first character.",
        "swap_end": f"If the string ends with '{x}', replace that ending with '{x[::-1]}'.",
        "drop_last": f"If the string starts with '{x}' and is longer than {y} characters, remove the last character.",
    }[kind]


class StringDeletionAndModification(SymbenchTask):
    name = "string_deletion_and_modification"
    kind = "execution"
    solver = (apply_edit_rule, solve_string_deletion_and_modification)

    def make(self, rng, difficulty):
        alphabet = "abc"
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 10 + 5 * difficulty)))
        pair = lambda: "".join(rng.choices(alphabet, k=2))  # noqa: E731
        makers = [
            lambda: ["delete", pair(), ""],
            lambda: ["replace", pair(), rng.choice(alphabet)],
            lambda: ["drop_first", rng.choice(alphabet), ""],
            lambda: ["swap_end", pair(), ""],
            lambda: ["drop_last", rng.choice(alphabet), str(rng.randint(3, 8))],
        ]
        rules = [rng.choice(makers)() for _ in range(3 + difficulty)]
        data = {"string": s, "rules": rules}
        answer = self.solve(data)
        if not answer:  # an empty answer cannot be written as <<<>>>: draw again
            return self.make(rng, difficulty)
        listing = "\n".join(f"{i + 1}. {edit_rule_text(r)}" for i, r in enumerate(rules))
        q = (
            f"Transform the string {s} with these rules:\n{listing}\n"
            "Repeatedly apply the first rule in the list that changes the string (once), then start again from "
            "rule 1. Stop when no rule changes the string, or when the string becomes one it has already been "
            "(then that string is the result).\nAnswer with the final string, like <<<abca>>>."
        )
        return q, data, answer


# ---------------------------------------------------------------- letters


def solve_letters(data):
    text, letter = data["text"], data["letter"]
    positions = [i + 1 for i, ch in enumerate(text) if ch == letter]
    return str([len(positions), positions])


class Letters(SymbenchTask):
    name = "letters"
    kind = "execution"
    solver = (solve_letters,)

    def make(self, rng, difficulty):
        text = "".join(rng.sample(_WORDS, rng.randint(1, 1 + difficulty)))
        letter = rng.choice(sorted(set(text)) + ["z", "q"] * (rng.random() < 0.1))
        data = {"text": text, "letter": letter}
        q = (
            f"How many times does the letter '{letter}' occur in '{text}', and at which positions (counted from 1)? "
            "Answer with the count and the list of positions, like <<<[2, [3, 7]]>>>."
        )
        return q, data, self.solve(data)


TASKS = [
    StatisticalCounting,
    MahjongPattern,
    StringSynthesis,
    StringSplitting,
    SynthesisDecomposition,
    StringInsertion,
    StringDeletionAndModification,
    Letters,
]
