"""What the problem-document module decides on its own, without an application."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException

from slidebank.web.problems import refuse_declared_body_over


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(HTTPException) as refused:
        refuse_declared_body_over("1048577", 1024 * 1024)
    assert refused.value.status_code == 413
    assert "at most 1,048,576 bytes" in str(refused.value.detail)
    for declared in (None, "1048576", "0"):
        refuse_declared_body_over(declared, 1024 * 1024)  # the body is counted as it comes


@pytest.mark.parametrize("declared", ["²", "1e9", "-5", " 9", "९९९९९९९"])
def test_a_length_that_is_not_ascii_digits_is_left_to_the_count(declared: str) -> None:
    # int() refuses '²' although str.isdigit() accepts it, and reads Devanagari digits:
    # neither may turn into a 500 or a refusal of a body that is in fact small.
    refuse_declared_body_over(declared, 10)
