"""The 27 BIG-Bench-Hard tasks: 3 generated procedurally, 24 built from BIG-bench's task.json files.

boolean_expressions, multistep_arithmetic_two and web_of_lies are programs in BIG-bench
too, so they are generated here (with reference solutions). The other 24 read
`<data_dir>/bigbench/<source>/task.json` (fetched by `python jobs/data.py fetch-bbh`) and
turn each example into BBH's question format: lettered options "(A) ..." where BBH has
them, a short word answer ("Yes", "valid", "yes") or free text otherwise, with BBH's
exact-match target as the gold answer. Questions are deduplicated; `generate` returns a
seed-ordered sample of the pool, so a source with fewer examples than asked gives fewer
instances (the pool size is in each instance's metadata).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from r1ci.errors import MissingInput
from r1ci.tasks.answers import normalize_text, same_answer, same_choice, same_text
from r1ci.tasks.base import Instance, Task

FETCH_HINT = "python jobs/data.py fetch-bbh"
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen".split()
MIN_INSTANCES = 200  # the suite's per-task guarantee; smaller BIG-bench sources say so in metadata
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class BigBenchDataMissing(MissingInput, RuntimeError):
    """The BIG-bench task files are not in the data directory."""


_DATA_DIR: Path | None = None  # set by every job from model.data_dir (set_data_dir)


def set_data_dir(path: str | Path) -> None:
    """Where BIG-bench files are read from (`<path>/bigbench`): every job entry sets it from
    `model.data_dir` before any task is built, so all jobs of one config read the same files."""
    global _DATA_DIR
    _DATA_DIR = Path(path).expanduser()


def data_dir() -> Path:
    """Root of cached data: what `set_data_dir` was given, else ModelConfig.data_dir's default."""
    from r1ci.config import ModelConfig

    return _DATA_DIR or Path(ModelConfig().data_dir).expanduser()


def bigbench_dir(root: Path | None = None) -> Path:
    return (root or data_dir()) / "bigbench"


# ---------------------------------------------------------------------------------------
# The 24 tasks built from BIG-bench data


@dataclass(frozen=True)
class BigBenchSpec:
    """How one BBH task is built from a BIG-bench task.json.

    style: "letters" (options (A)..., gold "(X)"), "words" (gold is a word from `words`,
    optionally listed as "- word" options) or "free" (gold is the source target).
    """

    source: str  # directory under benchmark_tasks/, e.g. "logical_deduction/three_objects"
    style: str
    prefix: str = ""  # text before the example's input
    suffix: str = ""  # text after the input (before options)
    use_task_prefix: bool = False  # prepend the file's own task_prefix
    words: dict[str, str] = field(default_factory=dict)  # source label -> BBH answer word
    list_words: bool = True  # show "Options:\n- w1\n- w2" for words style
    shuffle: bool = False  # shuffle options (source lists the right one first)
    split_options: str = ""  # regex that cuts inline options out of the input (hyperbaton, snarks)
    strict: bool = False  # free style: compare tokens exactly (case kept)
    strip_period: bool = False  # options end in "." in the source but not in BBH ("pink ball")
    number_words: bool = False  # counts are listed twice ("3" and "three"); BBH's options are the words
    note: str = ""  # a line after the question: what the BBH format leaves unsaid for our answer markers


BIGBENCH_SPECS: dict[str, BigBenchSpec] = {
    "causal_judgement": BigBenchSpec(
        "causal_judgment", "words", use_task_prefix=True, words={"Yes": "Yes", "No": "No"}
    ),
    "date_understanding": BigBenchSpec("date_understanding", "letters", shuffle=True),
    "disambiguation_qa": BigBenchSpec("disambiguation_qa", "letters", use_task_prefix=True, prefix="Sentence: "),
    "dyck_languages": BigBenchSpec(
        "dyck_languages", "free", use_task_prefix=True, prefix="Input: ", strict=True,
        note="(If your answer ends with '>', put a space before the closing >>>.)",
    ),
    "formal_fallacies": BigBenchSpec(
        "formal_fallacies_syllogisms_negation", "words", words={"valid": "valid", "invalid": "invalid"}
    ),
    "geometric_shapes": BigBenchSpec("geometric_shapes", "letters"),
    "hyperbaton": BigBenchSpec("hyperbaton", "letters", split_options=r'\b([ab]) " (.+?) "'),
    "logical_deduction_five_objects": BigBenchSpec("logical_deduction/five_objects", "letters", use_task_prefix=True),
    "logical_deduction_seven_objects": BigBenchSpec("logical_deduction/seven_objects", "letters", use_task_prefix=True),
    "logical_deduction_three_objects": BigBenchSpec("logical_deduction/three_objects", "letters", use_task_prefix=True),
    "movie_recommendation": BigBenchSpec("movie_recommendation", "letters", prefix="Find a movie similar to "),
    "navigate": BigBenchSpec("navigate", "words", use_task_prefix=True, words={"True": "Yes", "False": "No"}),
    "object_counting": BigBenchSpec("object_counting", "free"),
    "penguins_in_a_table": BigBenchSpec("penguins_in_a_table", "letters", use_task_prefix=True),
    "reasoning_about_colored_objects": BigBenchSpec("reasoning_about_colored_objects", "letters", number_words=True),
    "ruin_names": BigBenchSpec("ruin_names", "letters"),
    "salient_translation_error_detection": BigBenchSpec("salient_translation_error_detection", "letters", use_task_prefix=True),
    "snarks": BigBenchSpec("snarks", "letters", split_options=r"\(([ab])\) (.+?)(?= \([ab]\) |$)"),
    "sports_understanding": BigBenchSpec(
        "sports_understanding",
        "words",
        prefix='Is the following sentence plausible? "',
        suffix='."',
        words={"plausible": "yes", "implausible": "no"},
        list_words=False,
    ),
    "temporal_sequences": BigBenchSpec("temporal_sequences", "letters", shuffle=True),
    "tracking_shuffled_objects_five_objects": BigBenchSpec("tracking_shuffled_objects/five_objects", "letters", strip_period=True),
    "tracking_shuffled_objects_seven_objects": BigBenchSpec("tracking_shuffled_objects/seven_objects", "letters", strip_period=True),
    "tracking_shuffled_objects_three_objects": BigBenchSpec("tracking_shuffled_objects/three_objects", "letters", strip_period=True),
    "word_sorting": BigBenchSpec("word_sorting", "free", use_task_prefix=True, prefix="List: "),
}

KINDS: dict[str, str] = {
    "boolean_expressions": "execution",
    "multistep_arithmetic_two": "execution",
    "web_of_lies": "reasoning",
    "dyck_languages": "execution",
    "object_counting": "execution",
    "word_sorting": "execution",
    "geometric_shapes": "execution",
    "navigate": "execution",
    "date_understanding": "execution",
    "temporal_sequences": "reasoning",
    "logical_deduction_three_objects": "planning",
    "logical_deduction_five_objects": "planning",
    "logical_deduction_seven_objects": "planning",
    "tracking_shuffled_objects_three_objects": "execution",
    "tracking_shuffled_objects_five_objects": "execution",
    "tracking_shuffled_objects_seven_objects": "execution",
    "penguins_in_a_table": "execution",
    "reasoning_about_colored_objects": "reasoning",
}


@functools.lru_cache(maxsize=64)
def _load(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise BigBenchDataMissing(f"BIG-bench data not found at {p}; run `{FETCH_HINT}` (or point model.data_dir at a folder holding bigbench/)")
    return json.loads(p.read_text())


def _stable_rng(text: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


def _split_inline(text: str, pattern: str) -> tuple[str, dict[str, str]]:
    """Cut 'a " X " b " Y "' / '(a) X (b) Y' option lists out of an input: (stem, {label: text})."""
    found = {m.group(1): m.group(2).strip() for m in re.finditer(pattern, text)}
    stem = re.split(pattern, text, maxsplit=1)[0].strip()
    return stem, found


def _build_example(spec: BigBenchSpec, task_prefix: str, example: dict) -> dict | None:
    """One example as {question, answer, data}; None when the example has no single right answer."""
    body = example["input"].strip()
    if spec.suffix.startswith("."):
        body = body.rstrip(".")
    scores = example.get("target_scores") or {}
    if spec.number_words:  # '3' and 'three' are one option, shown as the word
        scores = {k: v for k, v in scores.items() if not (k.isdigit() and int(k) < len(NUMBER_WORDS) and NUMBER_WORDS[int(k)] in scores)}
    head = (task_prefix.strip() + "\n" if spec.use_task_prefix and task_prefix.strip() else "") + spec.prefix
    if spec.style == "free":
        targets = example.get("target")
        if targets is None:  # dyck_languages keeps its answer in target_scores
            targets = [k for k, v in scores.items() if v == 1]
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets:
            return None
        # object_counting lists ("three", "3"): BBH's target is the digits
        gold = next((t for t in targets if t.strip().isdigit()), targets[0]).strip()
        return {"question": head + body + spec.suffix, "answer": gold, "data": {"accept": targets}}
    best = [k for k, v in scores.items() if v == max(scores.values(), default=0)]
    if len(best) != 1 or max(scores.values()) <= 0:
        return None
    if spec.style == "words":
        gold = spec.words[best[0]]
        options = "\nOptions:\n" + "\n".join(f"- {w}" for w in spec.words.values()) if spec.list_words else ""
        return {
            "question": head + body + spec.suffix + options,
            "answer": gold,
            "data": {"accept": [gold, best[0]]},
        }
    labels = list(scores)
    texts = {k: k for k in labels}
    if spec.split_options:
        stem, inline = _split_inline(body, spec.split_options)
        texts = {k: inline[k.strip("()")] for k in labels}
        body = stem
    if spec.shuffle:
        _stable_rng(body).shuffle(labels)
    option_texts = [texts[k].strip().rstrip(".") if spec.strip_period else texts[k].strip() for k in labels]
    letter = LETTERS[labels.index(best[0])]
    options = "\n".join(f"({LETTERS[i]}) {t}" for i, t in enumerate(option_texts))
    return {
        "question": head + body + spec.suffix + "\nOptions:\n" + options,
        "answer": f"({letter})",
        "data": {"letter": letter, "option": option_texts[labels.index(best[0])], "options": option_texts},
    }


@functools.lru_cache(maxsize=64)
def build_pool(name: str, root: str) -> tuple[dict, ...]:
    """Every distinct BBH-style question of one task from its source file, in file order.

    A question that appears twice with different answers is dropped; exact repeats kept once.
    """
    spec = BIGBENCH_SPECS[name]
    raw = _load(str(bigbench_dir(Path(root)) / spec.source / "task.json"))
    built: dict[str, dict | None] = {}
    for example in raw["examples"]:
        item = _build_example(spec, raw.get("task_prefix", ""), example)
        if item is None:
            continue
        if spec.note:
            item["question"] += "\n" + spec.note
        q = item["question"]
        if q in built and (built[q] is None or built[q]["answer"] != item["answer"]):
            built[q] = None  # conflicting duplicates: neither is trustworthy
        elif q not in built:
            built[q] = item
    return tuple(v for v in built.values() if v is not None)


class BigBenchTask(Task):
    """A BBH task built from BIG-bench data; instances are a seed-ordered sample of the pool."""

    family = "bbh"

    def __init__(self, name: str):
        self.name = name
        self.kind = KINDS.get(name, "reasoning")
        self.spec = BIGBENCH_SPECS[name]

    def pool_size(self) -> int | None:
        return len(build_pool(self.name, str(data_dir())))

    def generate(self, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
        """min(n, pool size) instances; the pool is fixed by the source file (difficulty is not used)."""
        pool = build_pool(self.name, str(data_dir()))
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        meta = {"source": f"bigbench/{self.spec.source}", "pool_size": len(pool)}
        if len(pool) < MIN_INSTANCES:
            meta["note"] = f"the BIG-bench source has only {len(pool)} distinct questions (fewer than {MIN_INSTANCES})"
        return [
            Instance(
                task=self.name,
                seed=seed,
                index=i,
                question=pool[j]["question"],
                answer=pool[j]["answer"],
                data=pool[j]["data"],
                metadata={**meta, "source_index": j},
            )
            for i, j in enumerate(order[:n])
        ]

    def score(self, answer: str | None, instance: Instance) -> float:
        if answer is None:
            return 0.0
        d = instance.data
        if self.spec.style == "letters":
            return float(same_choice(answer, d["letter"], d["option"]))
        if self.spec.strict:  # a bracket sequence: every symbol matters, spacing and separators do not
            return float(_symbols(answer) == _symbols(instance.answer))
        if self.name == "word_sorting":
            return float(_words(answer) == instance.answer.lower().split())
        return float(any(same_answer(answer, a) for a in d["accept"]))


def _symbols(text: str) -> str:
    return re.sub(r"[\s,]+", "", normalize_text(text, case=True))


def _words(text: str) -> list[str]:
    """A word list written with spaces, commas, brackets or quotes, lower-cased."""
    s = normalize_text(text)
    if len(s) >= 2 and s[0] + s[-1] in ("[]", "()"):
        s = s[1:-1]
    return [w.strip("\"'`") for w in re.split(r"[\s,]+", s) if w.strip("\"'`")]


# ---------------------------------------------------------------------------------------
# The 3 procedural tasks


def _distinct(make, rng: random.Random, n: int, limit: int = 50) -> list:
    """Draw items from `make(rng)` until `n` distinct ones (by their question), or fail loudly."""
    out, seen = [], set()
    for _ in range(limit * n):
        item = make(rng)
        if item[0] not in seen:
            seen.add(item[0])
            out.append(item)
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} distinct questions after {limit * n} draws (asked {n})")


class _ProceduralTask(Task):
    family = "bbh"

    def make(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        """(question, gold answer, reference program)."""
        raise NotImplementedError

    def generate(self, seed: int, n: int, difficulty: int = 1) -> list[Instance]:
        rng = random.Random(f"{self.name}/{seed}/{difficulty}")
        items = _distinct(lambda r: self.make(r, difficulty), rng, n)
        return [
            Instance(self.name, seed, i, q, a, data={"program": p}, metadata={"source": "procedural", "difficulty": difficulty})
            for i, (q, a, p) in enumerate(items)
        ]

    def reference_solution(self, instance: Instance) -> str | None:
        return instance.data["program"]


class BooleanExpressions(_ProceduralTask):
    """'not ( True ) and ( True ) is' -> 'False' (BBH: constants, not/and/or, parentheses)."""

    name = "boolean_expressions"
    kind = "execution"

    def _expr(self, rng: random.Random, literals: int) -> str:
        if literals == 1:
            e = rng.choice(["True", "False"])
        else:
            left = rng.randint(1, literals - 1)
            parts = [self._expr(rng, left), self._expr(rng, literals - left)]
            parts = [f"( {p} )" if " " in p and rng.random() < 0.4 else p for p in parts]
            e = f"{parts[0]} {rng.choice(['and', 'or'])} {parts[1]}"
        if rng.random() < 0.3:
            e = f"not ( {e} )" if " " in e else f"not {e}"
        return e

    def make(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        expr = self._expr(rng, rng.randint(2, 3 + difficulty))
        return f"{expr} is", str(eval(expr)), f"print({expr})"  # eval of our own True/False/and/or text

    def score(self, answer: str | None, instance: Instance) -> float:
        return float(answer is not None and same_text(answer, instance.answer))


class MultistepArithmeticTwo(_ProceduralTask):
    """'((-5 + 9 * -4 - 0) * (4 + -7 + 0 * -5)) =' -> '-1166' (two groups of 3 + difficulty terms)."""

    name = "multistep_arithmetic_two"
    kind = "execution"

    def make(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        def group() -> str:
            terms = [str(rng.randint(-9, 9)) for _ in range(3 + difficulty)]
            return "(" + "".join(t + f" {rng.choice('+-*')} " for t in terms[:-1]) + terms[-1] + ")"

        expr = f"({group()} {rng.choice('+-*')} {group()})"
        return f"{expr} =", str(eval(expr)), f"print({expr})"

    def score(self, answer: str | None, instance: Instance) -> float:
        return float(answer is not None and same_answer(answer, instance.answer))


_NAMES = (
    "Fidel Jerry Vina Millicent Raymond Kristian Helene Sherrie Alejandro Ka Elanor Leda Ryan Delbert Inga Jamey "
    "Andree Bernita Gwenn Shenna Antwan Jim Michaela Rashida Osvaldo Lorine Shalonda Tamika Audrie Crista Delfina "
    "Jaymie Maybelle Yoland Christie Phoebe Ellie Sal Conception Willian"
).split()


class WebOfLies(_ProceduralTask):
    """A chain of people saying the previous one lies or tells the truth; does the last tell the truth?"""

    name = "web_of_lies"
    kind = "reasoning"

    def make(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        people = rng.sample(_NAMES, 4 + difficulty)
        truthful = rng.random() < 0.5
        sentences = [f"{people[0]} {'tells the truth' if truthful else 'lies'}."]
        claims = []
        for prev, who in zip(people, people[1:]):
            says_truth = rng.random() < 0.5
            claims.append(says_truth)
            sentences.append(f"{who} says {prev} {'tells the truth' if says_truth else 'lies'}.")
        value = truthful
        for says_truth in claims:
            value = value == says_truth  # a claim is true iff it matches; the speaker is truthful iff the claim is true
        q = f"Question: {' '.join(sentences)} Does {people[-1]} tell the truth?"
        program = (
            f"truthful = {truthful}\nfor claim in {claims}:\n    truthful = truthful == claim\n"
            "print('Yes' if truthful else 'No')"
        )
        return q, "Yes" if value else "No", program

    def score(self, answer: str | None, instance: Instance) -> float:
        return float(answer is not None and same_text(answer, instance.answer))


PROCEDURAL_TASKS: list[type[Task]] = [BooleanExpressions, MultistepArithmeticTwo, WebOfLies]

BBH_TASK_NAMES: list[str] = sorted([t.name for t in PROCEDURAL_TASKS] + list(BIGBENCH_SPECS))


def bbh_tasks() -> list[Task]:
    return [t() for t in PROCEDURAL_TASKS] + [BigBenchTask(name) for name in BIGBENCH_SPECS]
