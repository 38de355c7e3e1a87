from r1ci import protocol as p
from r1ci.config import ProtocolConfig

CFG = ProtocolConfig()
FENCE = "```"


def block(code, lang="python"):
    return f"{FENCE}{lang}\n{code}\n{FENCE}\n"


def test_first_closed_block_is_found_with_its_code():
    text = "I will compute.\n" + block("print(347 * 29)")
    found = p.find_code_block(text, CFG)
    assert found.code == "print(347 * 29)"
    assert text[found.end:] == ""


def test_py_fence_is_accepted():
    assert p.find_code_block(block("print(1)", "py"), CFG).code == "print(1)"


def test_unclosed_block_at_length_limit_is_not_run():
    text = f"{FENCE}python\nfor i in range(10):\n    print(i"
    assert p.find_code_block(text, CFG) is None
    assert p.has_unclosed_block(text, CFG)
    assert not p.is_well_formed(text, CFG, final=False)


def test_backticks_inside_a_string_do_not_close_the_block():
    code = 'print("```")\nprint(2)'
    assert p.find_code_block(block(code), CFG).code == code


def test_two_blocks_in_one_turn_run_only_the_first():
    text = block("print(1)") + "and\n" + block("print(2)")
    assert p.find_code_block(text, CFG).code == "print(1)"


def test_non_python_fence_is_skipped_not_taken_for_code():
    text = f"{FENCE}\nsome output\n{FENCE}\n" + block("print(3)")
    assert p.find_code_block(text, CFG).code == "print(3)"


def test_answer_inside_code_does_not_count():
    text = block('print("<<<7>>>")')
    assert p.extract_answer(text, CFG) is None


def test_last_of_several_answers_wins():
    assert p.extract_answer("maybe <<<3>>> no, <<< 4 >>>", CFG) == "4"


def test_answer_before_code_wins():
    text = "<<<12>>>\n" + block("print(13)")
    assert p.answer_before_code(text, CFG)
    assert not p.answer_before_code(block("print(13)") + "<<<13>>>", CFG)


def test_empty_output_is_said_explicitly():
    obs = p.format_observation("", "", CFG)
    assert obs == "Code Execution Results:\n(no output)\n"


def test_long_output_is_cut_with_a_visible_marker():
    obs = p.format_observation("a" * 3000 + "TAIL", "", CFG)
    assert "characters truncated" in obs
    assert obs.rstrip().endswith("TAIL")
    assert len(obs) < 2200


def test_stderr_and_executor_note_follow_stdout():
    obs = p.format_observation("1\n", "Traceback ...\nZeroDivisionError", CFG, note="(killed: timeout after 60 s)")
    assert obs.index("1") < obs.index("ZeroDivisionError") < obs.index("killed")


def test_stop_strings_drop_the_fence_on_the_last_turn():
    assert "\n```\n" in p.stop_strings(CFG)
    assert p.stop_strings(CFG, allow_code=False) == [">>>"]


def test_four_prompt_styles_say_how_to_answer():
    for style in p.PROMPT_STYLES:
        msgs = p.build_messages("What is 2+2?", style, CFG)
        assert msgs[1]["content"] == "What is 2+2?"
        assert "<<<answer>>>" in msgs[0]["content"]
    assert "```python" not in p.system_prompt("text", CFG)


def test_every_string_is_configurable():
    cfg = ProtocolConfig(code_open="<code>", code_close="</code>", answer_open="[[", answer_close="]]", result_header="OUT:")
    text = "<code>\nprint(5)\n</code>\n"
    assert p.find_code_block(text, cfg).code == "print(5)"
    assert p.extract_answer("x [[5]]", cfg) == "5"
    assert p.format_observation("5", "", cfg).startswith("OUT:\n")


def test_an_answer_ending_in_the_closing_character_is_read_whole():
    assert p.extract_answer("<<<) >>>>", CFG) == ") >"  # a Dyck answer, not ') '
    assert p.extract_answer("first <<<] >>>> then <<<> >>>>", CFG) == "> >"
    assert p.find_answers("<<<<<<a>>>>>>", CFG) == ["<<<a>>>"]  # nested markers stay: a verifier rejects them
    assert p.extract_answer("<<<a>>>>b>>>", CFG) == "a>"  # the run ends the answer, not the last marker


def test_format_answer_leaves_room_for_a_stop_at_the_first_marker():
    assert p.format_answer(") >", CFG) == "<<<) > >>>"
    assert p.format_answer("42", CFG) == "<<<42>>>"
    for answer in (") >", "42", "] ] >"):
        text = p.format_answer(answer, CFG)
        cut = text[: text.index(">>>") + 3]  # where a rollout stops generating
        assert p.extract_answer(cut, CFG) == answer


def test_an_empty_answer_is_not_a_well_formed_last_turn():
    assert p.extract_answer("<<<>>>", CFG) == ""
    assert not p.is_well_formed("<<<>>>", CFG, final=True)
    assert not p.is_well_formed("<<<   >>>", CFG, final=True)
    assert p.is_well_formed("<<<0>>>", CFG, final=True)


def test_extraction_survives_megabytes_and_binary_text():
    huge = "x" * 3_000_000
    assert p.extract_answer(f"{huge}<<<{huge}>>>", CFG) == huge
    assert p.extract_answer("<<<" + huge, CFG) is None  # never closed
    assert p.extract_answer("\x00\xff<<<\x00\ud800>>>", CFG) == "\x00\ud800"
