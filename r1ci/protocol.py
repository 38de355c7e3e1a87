"""The conversation format of R1-Code-Interpreter: prompts, code blocks, observations, answers.

Pure string functions over `ProtocolConfig`; the rollout, the rewards, the task verifiers
and the synthesis teacher all parse model text here and nowhere else.

Rules for what a model actually writes:
- A code block opens with `code_open` (or an alias such as ```` ```py ````) at the start of
  a line and closes at the next line that starts with `code_close`; fences that appear
  inside a line (e.g. in a string literal) do not close it.
- Only the first closed block of a turn runs: generation stops when it closes, so a
  second block is never seen in the same turn.
- An answer counts only outside code blocks. If text contains several answers, the last
  one wins (the model's final word); an answer written before a code block ends the
  episode there and the code is not run (the rollout stops generation at the answer).
- An unclosed block at the length limit is not run; the turn is ill formed.
- An answer ends where the run of closing-marker characters ends (`<<<) >>>>` answers
  `) >`). Generation stops at the first `>>>`, so in a rollout an answer that itself ends
  in `>` needs a space before the marker (`<<<) > >>>`); tasks whose answers can end in
  `>` say so in their question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1ci.config import PROMPT_STYLES, ProtocolConfig


_STYLE_INSTRUCTIONS = {
    "text": (
        "Think step by step in plain text; do not write code. "
        "End with the final answer in the form {ao}answer{ac}."
    ),
    "code": (
        "Solve the task by writing one complete Python program in a {co} block that prints the answer. "
        "It will be run and its output shown after '{rh}'. Then state the final answer in the form {ao}answer{ac}."
    ),
    "agent": (
        "You can reason in text and run Python code. To run code, write one {co} block that prints what you "
        "want to see; it runs as soon as the block closes and its output appears after '{rh}'. You may run code "
        "up to {n} times. When you are sure, give the final answer in the form {ao}answer{ac}."
    ),
    "guided": (
        "You can reason in text and run Python code. Decide first whether code helps: use it for search, "
        "counting, arithmetic, simulation or checking a candidate; reason in text when symbolic reasoning is "
        "enough. To run code, write one {co} block that prints what you want to see; its output appears after "
        "'{rh}'. If the output shows an error or a wrong result, fix the code and run it again (up to {n} runs). "
        "Check your answer, then give it in the form {ao}answer{ac}."
    ),
}


@dataclass(frozen=True)
class CodeBlock:
    code: str
    start: int  # index of the opening fence in the text
    end: int  # index just past the closing fence line


def system_prompt(style: str, cfg: ProtocolConfig) -> str:
    if style not in _STYLE_INSTRUCTIONS:
        raise ValueError(f"unknown prompt style '{style}'; choose one of {', '.join(PROMPT_STYLES)}")
    return _STYLE_INSTRUCTIONS[style].format(
        co=cfg.code_open, rh=cfg.result_header, ao=cfg.answer_open, ac=cfg.answer_close, n=cfg.max_code_calls
    )


def build_messages(question: str, style: str, cfg: ProtocolConfig) -> list[dict[str, str]]:
    """Chat messages (system + user) for one question in one of the four prompt styles."""
    return [{"role": "system", "content": system_prompt(style, cfg)}, {"role": "user", "content": question}]


def stop_strings(cfg: ProtocolConfig, allow_code: bool = True) -> list[str]:
    """Strings at which the engine stops a turn: a closing fence line, and the answer close."""
    stops = [cfg.answer_close]
    if allow_code:
        stops.append("\n" + cfg.code_close + "\n")
    return stops


def _opening_re(cfg: ProtocolConfig) -> re.Pattern:
    fences = sorted([cfg.code_open, *cfg.code_open_aliases], key=len, reverse=True)
    alts = "|".join(re.escape(f) for f in fences)
    return re.compile(rf"(?m)^[ \t]*(?:{alts})[ \t]*$\n?")


def _blocks(text: str, cfg: ProtocolConfig) -> list[tuple[int, int, int | None, int | None]]:
    """(open_start, body_start, body_end, close_end) for each Python block; None when unclosed.

    Any fenced block (python or not) is skipped past so its closing fence is not taken
    for an opening one.
    """
    out = []
    pos = 0
    opening = _opening_re(cfg)
    close_re = re.compile(rf"(?m)^[ \t]*{re.escape(cfg.code_close)}[ \t]*$")
    while True:
        m = opening.search(text, pos)
        if not m:
            return out
        c = close_re.search(text, m.end())
        if not c:
            out.append((m.start(), m.end(), None, None))
            return out
        end = c.end() + 1 if text[c.end() : c.end() + 1] == "\n" else c.end()
        out.append((m.start(), m.end(), c.start(), end))
        pos = end


def find_code_block(text: str, cfg: ProtocolConfig) -> CodeBlock | None:
    """The first closed Python block in a turn's text, or None."""
    for start, body, body_end, end in _blocks(text, cfg):
        if body_end is None:
            return None
        return CodeBlock(code=text[body:body_end].rstrip("\n"), start=start, end=end)
    return None


def has_unclosed_block(text: str, cfg: ProtocolConfig) -> bool:
    return any(b[2] is None for b in _blocks(text, cfg))


def _outside_code(text: str, cfg: ProtocolConfig) -> str:
    pieces, pos = [], 0
    for start, _, _, end in _blocks(text, cfg):
        pieces.append(text[pos:start])
        if end is None:
            return "".join(pieces)
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def find_answers(text: str, cfg: ProtocolConfig) -> list[str]:
    """Every <<<answer>>> outside code blocks, in order, stripped.

    An answer may itself end in the closing marker's character: when the marker is a run
    of one character (`>>>`), the answer ends where the whole run ends, so `<<<) >>>>` is
    `) >` (a Dyck-language answer), not `) `. Nested markers stay in the payload
    (`<<<<<<a>>>>>>` is `<<<a>>>`), where a verifier sees a wrong answer.
    """
    ao, ac = cfg.answer_open, cfg.answer_close
    run_char = ac[0] if ac and ac == ac[0] * len(ac) else None
    text = _outside_code(text, cfg)
    out, pos = [], 0
    while (start := text.find(ao, pos)) != -1:
        close = text.find(ac, start + len(ao))
        if close == -1:
            break
        end = close + len(ac)
        while run_char is not None and end < len(text) and text[end] == run_char:
            end += 1
        out.append(text[start + len(ao) : end - len(ac)].strip())
        pos = end
    return out


def extract_answer(text: str, cfg: ProtocolConfig | None = None) -> str | None:
    """The final answer of a response: the last <<<...>>> outside code, or None."""
    answers = find_answers(text, cfg or ProtocolConfig())
    return answers[-1] if answers else None


def format_answer(answer: str, cfg: ProtocolConfig) -> str:
    """`answer` as a final answer; one ending in the closing marker's character gets a space
    before the marker, so a rollout that stops at the first marker reads it whole."""
    gap = " " if cfg.answer_close and answer.endswith(cfg.answer_close[0]) else ""
    return f"{cfg.answer_open}{answer}{gap}{cfg.answer_close}"


def answer_before_code(text: str, cfg: ProtocolConfig) -> bool:
    """True when the turn gives an answer before any code block opens (the answer wins)."""
    blocks = _blocks(text, cfg)
    head = text[: blocks[0][0]] if blocks else text
    return bool(find_answers(head, cfg))


def truncate(text: str, limit: int) -> str:
    """Cut the middle of `text` to at most about `limit` chars, with a marker saying how much."""
    if len(text) <= limit:
        return text
    keep = max(limit // 2, 1)
    cut = len(text) - 2 * keep
    return f"{text[:keep]}\n... [{cut} characters truncated] ...\n{text[-keep:]}"


def format_observation(stdout: str, stderr: str, cfg: ProtocolConfig, note: str = "") -> str:
    """The interpreter turn appended after a closed code block.

    `note` carries what the executor says about an abnormal end (timeout, kill, limits).
    """
    body = stdout
    if stderr:
        body = (body + ("\n" if body and not body.endswith("\n") else "") + stderr) if body else stderr
    if note:
        body = (body.rstrip("\n") + "\n" if body else "") + note
    body = body.rstrip("\n") or cfg.empty_output_text
    return f"{cfg.result_header}\n{truncate(body, cfg.max_observation_chars)}\n"


def last_turn_notice(cfg: ProtocolConfig) -> str:
    """Appended once the code-call limit is spent: the next turn must answer without code."""
    return f"You have used all {cfg.max_code_calls} code executions. Give the final answer now as {cfg.answer_open}answer{cfg.answer_close}.\n"


def is_well_formed(turn_text: str, cfg: ProtocolConfig, final: bool) -> bool:
    """A turn is well formed when its blocks are closed and (for the last turn) it gives one
    non-empty answer: an empty <<<>>> is no answer."""
    if has_unclosed_block(turn_text, cfg):
        return False
    if final:
        answers = find_answers(turn_text, cfg)
        return len(answers) == 1 and answers[0] != ""
    return find_code_block(turn_text, cfg) is not None
