"""The benchmark layout: names the official T2I-CompBench scripts parse back exactly."""

from __future__ import annotations

import pytest

from ovi_cli.bench.layout import check_prompt, parse_sample_name, sample_index, sample_name
from ovi_cli.errors import OviError


@pytest.mark.parametrize("prompt", ["a green bench and a blue bowl", "a cat", "été à la plage"])
@pytest.mark.parametrize("i, j, k", [(0, 0, 10), (3, 7, 10), (299, 9, 10), (12, 0, 1)])
def test_names_parse_back_with_the_official_rules(prompt, i, j, k):
    index = sample_index(i, j, k)
    name = sample_name(prompt, index)
    assert name == f"{prompt}_{i * k + j:06d}.png"
    # the official scripts: prompt = name.split('_')[0], index = int(name.split('_')[-1][:-4])
    assert (name.split("_")[0], int(name.split("_")[-1][:-4])) == (prompt, index)
    assert parse_sample_name(name) == (prompt, index)


@pytest.mark.parametrize("prompt, message", [
    ("a_cat", "contains '_'"),
    ("a/cat", "path separator"),
    ("   ", "empty prompt"),
    ("x" * 300, "too long for a file name"),
])
def test_prompts_the_layout_cannot_hold_are_refused(prompt, message):
    with pytest.raises(OviError, match=message):
        check_prompt(prompt)
