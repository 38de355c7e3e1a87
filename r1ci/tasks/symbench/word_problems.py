"""Procedural word problems with computed answers: GSM-style arithmetic stories, counting and
probability, and geometry. Each question comes from a template and its parameters; the
solver function holds the one formula per template, used for the gold answer and as the
reference program."""

from __future__ import annotations

import math
from fractions import Fraction

from r1ci.tasks.symbench.common import SymbenchTask, number_equal

_PEOPLE = ["Ana", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kira", "Liam"]


def number_text(x):
    """Integers as '12', other rationals as a reduced fraction '3/8', floats to 2 decimals."""
    if isinstance(x, float):
        return f"{x:.2f}"
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


# ---------------------------------------------------------------- gsm


def solve_gsm(data):
    p, t = data["params"], data["template"]
    if t == "change":
        value = p["bill"] - (p["a"] * p["price_a"] + p["b"] * p["price_b"])
    elif t == "defects":
        made = p["rate"] * p["hours"] * p["days"]
        value = made - Fraction(made * p["percent"], 100)
    elif t == "ages":
        value = p["gap"] - p["years"]
    elif t == "savings":
        value = math.ceil(Fraction(p["cost"] - p["have"], p["weekly"]))
    elif t == "trip":
        value = p["v1"] * p["t1"] + p["v2"] * p["t2"]
    elif t == "recipe":
        value = Fraction(p["flour"] * p["want"], p["batch"])
    elif t == "discount":  # to the cent: the generator avoids exact half cents
        value = round(Fraction(p["price"]) * (100 - p["off"]) * (100 + p["tax"]) / 100, 0) / 100
        return f"{float(value):.2f}"
    elif t == "pipes":
        value = Fraction(p["a"] * p["b"], p["a"] + p["b"])
    elif t == "average":
        value = (len(p["scores"]) + 1) * p["mean"] - sum(p["scores"])
    elif t == "profit":
        value = p["days"] * (p["loaves"] * (p["price"] - p["cost"]) - p["rent"])
    elif t == "growth":
        value = Fraction(p["people"]) * (100 + p["rate"]) ** 2 / 10000
    else:  # fence
        value = 2 * (p["length"] + p["width"]) * p["cost"] - p["gate"]
    return number_text(value)


def gsm_question(rng, difficulty):
    who = rng.choice(_PEOPLE)
    big = 10 * difficulty
    t = rng.choice(["change", "defects", "ages", "savings", "trip", "recipe", "discount", "fence", "pipes", "average", "profit", "growth"])
    if t == "change":
        p = {"a": rng.randint(2, 6 + big), "price_a": rng.randint(2, 9), "b": rng.randint(2, 6), "price_b": rng.randint(1, 5)}
        p["bill"] = 50 * (1 + (p["a"] * p["price_a"] + p["b"] * p["price_b"]) // 50)
        q = (f"{who} buys {p['a']} notebooks at ${p['price_a']} each and {p['b']} pens at ${p['price_b']} each, "
             f"and pays with ${p['bill']}. How many dollars of change does {who} get?")
    elif t == "defects":
        p = None
        while p is None or p["rate"] * p["hours"] * p["days"] * p["percent"] % 100:  # whole toys only
            p = {"rate": rng.randint(4, 12 + big), "hours": rng.randint(2, 8), "days": rng.randint(2, 6), "percent": rng.choice([5, 10, 20, 25, 50])}
        q = (f"A machine makes {p['rate']} toys per hour. It runs {p['hours']} hours a day for {p['days']} days, and "
             f"{p['percent']}% of the toys are defective. How many toys are not defective?")
    elif t == "ages":
        p = {"years": rng.randint(1, 10), "gap": 0}
        p["gap"] = p["years"] + rng.randint(1, 20 + big)
        q = (f"{who} is {p['gap']} years older than a cousin. In {p['years']} years, {who} will be twice as old as "
             "the cousin. How old is the cousin now?")
    elif t == "savings":
        p = {"weekly": rng.randint(5, 25), "have": rng.randint(0, 60), "cost": rng.randint(100, 300 + 10 * big)}
        q = (f"{who} has ${p['have']} and saves ${p['weekly']} every week. A bike costs ${p['cost']}. After how many "
             "weeks of saving can the bike be bought for the first time?")
    elif t == "trip":
        p = {"v1": rng.randint(30, 90), "t1": rng.randint(1, 4 + difficulty), "v2": rng.randint(30, 90), "t2": rng.randint(1, 4)}
        q = (f"A car drives {p['t1']} hours at {p['v1']} km/h and then {p['t2']} hours at {p['v2']} km/h. "
             "How many kilometres does it travel in total?")
    elif t == "recipe":
        p = {"batch": rng.choice([6, 8, 12, 16, 24]), "flour": rng.randint(1, 5), "want": rng.randint(2, 60 + big)}
        q = (f"A recipe for {p['batch']} muffins needs {p['flour']} cups of flour. How many cups of flour are needed "
             f"for {p['want']} muffins? Give a fraction if needed.")
    elif t == "discount":
        p = None
        while p is None or p["price"] * (100 - p["off"]) * (100 + p["tax"]) % 100 == 50:  # a half cent rounds either way
            p = {"price": rng.randint(20, 300 + big), "off": rng.choice([10, 15, 20, 25, 30, 40]), "tax": rng.choice([5, 8, 10, 12])}
        q = (f"A jacket costs ${p['price']}. It is {p['off']}% off, and then a {p['tax']}% sales tax is added to the "
             "discounted price. What is the final price in dollars, to the cent?")
    elif t == "pipes":
        p = {"a": rng.randint(2, 12 + big), "b": rng.randint(2, 12)}
        q = (f"One pipe fills a tank in {p['a']} hours and another fills it in {p['b']} hours. How many hours do they "
             "take to fill the empty tank together? Give a fraction if needed.")
    elif t == "average":
        scores = [rng.randint(60, 100) for _ in range(2 + difficulty)]
        last = rng.randint(50, 100)
        last -= (sum(scores) + last) % (len(scores) + 1)
        p = {"scores": scores, "mean": (sum(scores) + last) // (len(scores) + 1)}
        q = (f"{who} scored {', '.join(map(str, scores))} on the first {len(scores)} tests. What score on the next "
             f"test makes the average of all {len(scores) + 1} tests exactly {p['mean']}?")
    elif t == "profit":
        p = {"loaves": rng.randint(20, 80 + big), "price": rng.randint(3, 8), "cost": rng.randint(1, 2), "rent": rng.randint(10, 60), "days": rng.randint(2, 7)}
        q = (f"A baker sells {p['loaves']} loaves a day at ${p['price']} each. Ingredients cost ${p['cost']} per loaf "
             f"and the shop costs ${p['rent']} a day. What is the profit in dollars over {p['days']} days?")
    elif t == "growth":
        p = {"people": 400 * rng.randint(2, 50 + big), "rate": rng.choice([5, 10, 20, 25, 50])}
        q = (f"A town has {p['people']} people and its population grows by {p['rate']}% each year. How many people "
             "live there after 2 years?")
    else:
        p = {"length": rng.randint(5, 30 + big), "width": rng.randint(3, 20), "cost": rng.randint(2, 15), "gate": rng.randint(0, 3) * 10}
        q = (f"A rectangular garden is {p['length']} m long and {p['width']} m wide. Fencing costs ${p['cost']} per "
             f"metre, and a coupon takes ${p['gate']} off the total. How many dollars does fencing the whole garden cost?")
    return t, p, q


class Gsm(SymbenchTask):
    name = "gsm"
    kind = "reasoning"
    solver = (number_text, solve_gsm)

    def make(self, rng, difficulty):
        template, params, text = gsm_question(rng, difficulty)
        data = {"template": template, "params": params}
        return f"{text}\nAnswer with the number only, like <<<42>>>.", data, self.solve(data)

    def check(self, answer, instance):  # exact, but "to the cent" is exact to 2 decimals
        return float(number_equal(answer, instance.answer, decimals=2 if instance.data["template"] == "discount" else None))


# ---------------------------------------------------------------- counting_and_probability


def solve_counting_and_probability(data):
    p, t = data["params"], data["template"]
    if t == "committee":
        value = math.comb(p["n"], p["k"]) - math.comb(p["n"] - 2, p["k"] - 2)
    elif t == "anagrams":
        value = math.factorial(len(p["word"]))
        for ch in set(p["word"]):
            value //= math.factorial(p["word"].count(ch))
    elif t == "same_color":
        r, b = p["red"], p["blue"]
        value = Fraction(r * (r - 1) + b * (b - 1), (r + b) * (r + b - 1))
    elif t == "dice":
        hits = sum(1 for x in range(1, p["sides"] + 1) for y in range(1, p["sides"] + 1) if x + y == p["total"])
        value = Fraction(hits, p["sides"] ** 2)
    elif t == "coins":
        value = 1 - Fraction(1, 2 ** p["flips"])
    elif t == "divisible":
        n, a, b = p["n"], p["a"], p["b"]
        value = n // a + n // b - n // (a * b // math.gcd(a, b))
    elif t == "handshakes":
        value = math.comb(p["n"], 2)
    elif t == "plates":
        value = math.perm(26, p["letters"]) * 10 ** p["digits"]
    elif t == "round_table":
        value = math.factorial(p["n"] - 1)
    else:  # lattice paths
        value = math.comb(p["right"] + p["up"], p["right"])
    return number_text(value)


def counting_question(rng, difficulty):
    t = rng.choice(["committee", "anagrams", "same_color", "dice", "coins", "divisible", "paths", "handshakes", "plates", "round_table"])
    if t == "committee":
        p = {"n": rng.randint(6, 10 + 2 * difficulty), "k": 0}
        p["k"] = rng.randint(2, p["n"] - 2)
        q = (f"A committee of {p['k']} is chosen from {p['n']} people, two of whom refuse to serve together. "
             "How many different committees are possible?")
    elif t == "anagrams":
        p = {"word": rng.choice(["BANANA", "LETTER", "BALLOON", "COMMITTEE", "SUCCESS", "PEPPER", "ARRAY", "LEVEL",
                                 "MISSISSIPPI", "TOMORROW", "COFFEE", "GRAMMAR", "PAPAYA", "ASSESS", "BOOKKEEPER"])}
        q = f"How many distinct arrangements of the letters of the word {p['word']} are there?"
    elif t == "same_color":
        p = {"red": rng.randint(2, 8 + difficulty), "blue": rng.randint(2, 8 + difficulty)}
        q = (f"A bag holds {p['red']} red and {p['blue']} blue balls. Two balls are drawn without replacement. What "
             "is the probability that they have the same colour?")
    elif t == "dice":
        p = {"sides": rng.choice([4, 6, 8, 10, 12]), "total": 0}
        p["total"] = rng.randint(2, 2 * p["sides"])
        q = f"Two fair {p['sides']}-sided dice numbered 1 to {p['sides']} are rolled. What is the probability that the sum is {p['total']}?"
    elif t == "coins":
        p = {"flips": rng.randint(2, 8 + difficulty)}
        q = f"A fair coin is flipped {p['flips']} times. What is the probability of at least one head?"
    elif t == "divisible":
        p = {"n": rng.randint(50, 500 * difficulty), "a": rng.randint(2, 9), "b": rng.randint(2, 13)}
        q = f"How many integers from 1 to {p['n']} inclusive are divisible by {p['a']} or by {p['b']}?"
    elif t == "handshakes":
        p = {"n": rng.randint(3, 40 * difficulty)}
        q = f"At a party {p['n']} people each shake hands with everyone else exactly once. How many handshakes are there?"
    elif t == "plates":
        p = {"letters": rng.randint(1, 3), "digits": rng.randint(1, 3 + difficulty)}
        q = (f"A licence plate has {p['letters']} letters (A-Z, no letter repeated) followed by {p['digits']} digits "
             "(0-9, repeats allowed). How many different plates are possible?")
    elif t == "round_table":
        p = {"n": rng.randint(3, 8 + difficulty)}
        q = (f"In how many ways can {p['n']} people sit around a round table, if seatings that differ only by a "
             "rotation count as the same?")
    else:
        p = {"right": rng.randint(2, 6 + difficulty), "up": rng.randint(2, 6 + difficulty)}
        q = (f"A path on a grid goes from (0, 0) to ({p['right']}, {p['up']}) using unit steps right or up. "
             "How many such paths are there?")
    return t, p, q


class CountingAndProbability(SymbenchTask):
    name = "counting_and_probability"
    kind = "execution"
    solver = (number_text, solve_counting_and_probability)

    def make(self, rng, difficulty):
        template, params, text = counting_question(rng, difficulty)
        data = {"template": template, "params": params}
        q = f"{text}\nAnswer with an integer or a reduced fraction, like <<<12>>> or <<<3/8>>>."
        return q, data, self.solve(data)

    def check(self, answer, instance):
        return float(number_equal(answer, instance.answer))  # integers and fractions: exact


# ---------------------------------------------------------------- geometry


def solve_geometry(data):
    p, t = data["params"], data["template"]
    if t == "triangle_area":
        (x1, y1), (x2, y2), (x3, y3) = p["points"]
        value = Fraction(abs(x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2)), 2)
    elif t == "distance":
        (x1, y1), (x2, y2) = p["points"]
        value = math.hypot(x2 - x1, y2 - y1)
    elif t == "hypotenuse":
        value = math.isqrt(p["a"] ** 2 + p["b"] ** 2)
    elif t == "circle_area":
        value = math.pi * p["r"] ** 2
    elif t == "interior_angle":
        value = Fraction(180 * (p["n"] - 2), p["n"])
    elif t == "cylinder":
        value = math.pi * p["r"] ** 2 * p["h"]
    elif t == "sphere":
        value = 4 / 3 * math.pi * p["r"] ** 3
    elif t == "diagonals":
        value = p["n"] * (p["n"] - 3) // 2
    elif t == "rectangle_diagonal":
        value = math.hypot(p["length"], p["width"])
    else:  # trapezoid
        value = Fraction((p["a"] + p["b"]) * p["h"], 2)
    return number_text(value)


def geometry_question(rng, difficulty):
    span = 10 * difficulty
    t = rng.choice(["triangle_area", "distance", "hypotenuse", "circle_area", "interior_angle", "cylinder", "trapezoid",
                    "sphere", "diagonals", "rectangle_diagonal"])  # fmt: skip
    if t == "triangle_area":
        p = None
        while p is None or solve_geometry({"template": t, "params": p}) == "0":  # collinear vertices are no triangle
            p = {"points": [[rng.randint(-span, span), rng.randint(-span, span)] for _ in range(3)]}
        q = f"What is the area of the triangle with vertices {', '.join(f'({x}, {y})' for x, y in p['points'])}?"
    elif t == "distance":
        p = None
        while p is None or p["points"][0] == p["points"][1]:
            p = {"points": [[rng.randint(-span, span), rng.randint(-span, span)] for _ in range(2)]}
        q = f"What is the distance between the points ({p['points'][0][0]}, {p['points'][0][1]}) and ({p['points'][1][0]}, {p['points'][1][1]})? Round to 2 decimal places."
    elif t == "hypotenuse":
        a, b = rng.choice([(3, 4), (5, 12), (8, 15), (7, 24), (20, 21), (9, 40)])
        k = rng.randint(1, 5 * difficulty)
        p = {"a": a * k, "b": b * k}
        q = f"A right triangle has legs of length {p['a']} and {p['b']}. How long is its hypotenuse?"
    elif t == "circle_area":
        p = {"r": rng.randint(1, 20 * difficulty)}
        q = f"What is the area of a circle with radius {p['r']}? Round to 2 decimal places."
    elif t == "interior_angle":
        p = {"n": rng.randint(3, 20 + span)}
        q = f"What is the measure, in degrees, of each interior angle of a regular polygon with {p['n']} sides?"
    elif t == "cylinder":
        p = {"r": rng.randint(1, 10 * difficulty), "h": rng.randint(1, 20)}
        q = f"What is the volume of a cylinder with radius {p['r']} and height {p['h']}? Round to 2 decimal places."
    elif t == "sphere":
        p = {"r": rng.randint(1, 15 * difficulty)}
        q = f"What is the volume of a sphere with radius {p['r']}? Round to 2 decimal places."
    elif t == "diagonals":
        p = {"n": rng.randint(4, 30 + span)}
        q = f"How many diagonals does a convex polygon with {p['n']} sides have?"
    elif t == "rectangle_diagonal":
        p = {"length": rng.randint(1, 20 + span), "width": rng.randint(1, 20)}
        q = f"How long is the diagonal of a {p['length']} by {p['width']} rectangle? Round to 2 decimal places."
    else:
        p = {"a": rng.randint(2, 20 + span), "b": rng.randint(2, 20), "h": rng.randint(1, 15)}
        q = f"A trapezoid has parallel sides of length {p['a']} and {p['b']} and height {p['h']}. What is its area?"
    return t, p, q


class Geometry(SymbenchTask):
    name = "geometry"
    kind = "reasoning"
    solver = (number_text, solve_geometry)

    def make(self, rng, difficulty):
        template, params, text = geometry_question(rng, difficulty)
        data = {"template": template, "params": params}
        if template in GEOMETRY_ROUNDED:
            q = f"{text}\nAnswer with the number only, like <<<12.57>>>."
        else:
            q = f"{text}\nAnswer with the exact number only (a fraction if it is not a whole number), like <<<12>>> or <<<25/2>>>."
        return q, data, self.solve(data)

    def check(self, answer, instance):  # exact, except where the question asks for 2 decimal places
        decimals = 2 if instance.data["template"] in GEOMETRY_ROUNDED else None
        return float(number_equal(answer, instance.answer, decimals=decimals))


GEOMETRY_ROUNDED = {"distance", "circle_area", "cylinder", "sphere", "rectangle_diagonal"}  # "Round to 2 decimal places"


TASKS = [Gsm, CountingAndProbability, Geometry]
