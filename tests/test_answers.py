"""Lenient answer comparison: formatting never decides a verdict, content always does."""

import pytest

from r1ci.tasks.answers import (
    choice_letter,
    normalize_text,
    parse_list,
    parse_number,
    same_answer,
    same_choice,
    same_number,
    same_text,
)


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("1/2", "0.5"),
        ("50%", "0.5"),
        ("1,000", "1000"),
        ("  Paris. ", "paris"),
        ('"abc"', "abc"),
        ("[1, 2, 3]", "1,2,3"),
        ("(1, 2.0, 3)", "[1, 2, 3]"),
        ("Yes!", "yes"),
        ("-3.50", "-7/2"),
    ],
)
def test_equivalent_formats_match(answer, gold):
    assert same_answer(answer, gold)


@pytest.mark.parametrize(
    "answer, gold",
    [("3", "4"), ("2400601", "2400600"), ("[1, 2]", "[2, 1]"), ("[1, 2]", "[1, 2, 3]"), ("paris", "rome"), ("", "0")],
)
def test_different_content_does_not_match(answer, gold):
    assert not same_answer(answer, gold)


def test_unordered_lists_compare_as_multisets():
    assert same_answer("[b, a, a]", "a, a, b", ordered=False)
    assert not same_answer("[b, a]", "a, a, b", ordered=False)


def test_case_is_kept_when_asked():
    assert same_text("Hello World", "hello   world")
    assert not same_text("Hello World", "hello world", case=True)


def test_number_parsing_refuses_non_numbers():
    assert parse_number("abc") is None and parse_number("1/0") is None and parse_number("1.2.3") is None
    assert parse_number("$1,234.5") == parse_number("1234.5")
    assert same_number("0.30000000000000004", "0.3") and not same_number("0.30000000004", "0.3")
    assert not same_number("100000000000000000001", "100000000000000000000")  # integers are exact


def test_lists_need_a_separator():
    assert parse_list("a b c") is None
    assert parse_list("{x; y}") == ["x", "y"]
    assert normalize_text("  A  b. ") == "a b"


@pytest.mark.parametrize("answer", ["(C)", "C", "c", "C)", "(C) blue", "C. blue", "Option C", "blue", "Blue."])
def test_choice_accepts_letter_or_option_text(answer):
    assert same_choice(answer, "C", "blue")


@pytest.mark.parametrize("answer", ["(A)", "A", "red", "(A) blue", None, "", "(C) or (A)", "(A) or (C)", "C, A", "C or A", "C and A", "(C) red", "blue or red"])
def test_choice_rejects_other_letters_and_texts(answer):
    assert not same_choice(answer, "C", "blue")


def test_choice_letter_ignores_words():
    assert choice_letter("No") is None and choice_letter("(b)") == "B"


def test_numbers_asked_to_a_precision_match_within_half_a_unit():
    assert same_number("3.14", "3.14", decimals=2) and same_number("3.1416", "3.14", decimals=2)
    assert not same_number("3.15", "3.14", decimals=2) and not same_number("3.13", "3.14", decimals=2)
    assert not same_number("3.1", "3.14", decimals=2)  # too coarse to round to the gold
    assert same_number("$23.10", "23.1", decimals=2)


def test_huge_exponents_are_not_numbers():
    assert parse_number("1e99999999") is None and parse_number("2e300") == 2 * 10**300
