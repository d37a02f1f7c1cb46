"""The shared result comparison and the vote among candidates by their results."""

from __future__ import annotations

import pytest

from route_graph.evaluation import metrics
from route_graph.results import answer_is_empty, results_match, vote_by_result

FRANCE = [("Edith",), ("Jacques",)]
ALL = [("Edith",), ("Adele",), ("Jacques",)]


def test_evaluation_uses_the_same_comparison() -> None:
    assert metrics.results_match is results_match  # one normaliser, not a copy


@pytest.mark.parametrize(
    ("rows", "empty"),
    [([], True), ([(None,), (None,)], True), ([(None, None)], True), ([(None, 1)], False), ([(0,)], False)],
)
def test_answer_is_empty(rows: list[tuple], empty: bool) -> None:
    assert answer_is_empty(rows) is empty


def test_vote_majority_wins_over_a_later_candidate() -> None:
    vote = vote_by_result([("draft", ALL), ("generate", list(reversed(ALL))), ("noise_correct", FRANCE)])
    assert vote.groups == (("draft", "generate"), ("noise_correct",))
    assert vote.winner == "generate"  # the latest of the largest group
    assert vote.empty == (False, False)


def test_vote_tie_goes_to_the_latest_candidate() -> None:
    vote = vote_by_result([("draft", FRANCE), ("generate", ALL), ("continue_write", [("x",)])])
    assert vote.winner == "continue_write"
    assert vote.groups == (("continue_write",), ("generate",), ("draft",))


@pytest.mark.parametrize("useless", [[], [(None,)]])
def test_vote_tie_an_empty_or_null_result_loses(useless: list[tuple]) -> None:
    vote = vote_by_result([("draft", FRANCE), ("generate", useless)])
    assert vote.winner == "draft" and vote.empty == (False, True)


def test_vote_an_empty_majority_loses_to_rows() -> None:
    vote = vote_by_result([("draft", []), ("generate", []), ("noise_correct", FRANCE)])
    assert vote.winner == "noise_correct" and vote.empty == (False, True)
    assert vote.groups == (("noise_correct",), ("draft", "generate"))


def test_vote_empty_results_win_when_nothing_has_rows() -> None:
    vote = vote_by_result([("draft", []), ("generate", [])])
    assert vote.winner == "generate" and vote.empty == (True,)


def test_vote_compares_like_the_evaluation() -> None:
    # columns permuted, integral floats, rounding noise: the same answer
    vote = vote_by_result([("a", [(1, "x", 2.0)]), ("b", [("x", 1, 2.0000000001)]), ("c", [(1, "x", 3)])])
    assert vote.groups[0] == ("a", "b")


def test_vote_needs_unique_names_and_a_candidate() -> None:
    with pytest.raises(ValueError):
        vote_by_result([])
    with pytest.raises(ValueError):
        vote_by_result([("a", []), ("a", [])])
