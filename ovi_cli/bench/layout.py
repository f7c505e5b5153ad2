"""Where a benchmark run keeps its files: the official T2I-CompBench layout, and ovi's own files.

    RUN/bench.json                               settings, versions, models, prompt-list hashes
    RUN/scores.json                              every scorer's numbers, per category
    RUN/<category>/samples/{prompt}_{NNNNNN}.png the images (NNNNNN = i * K + j: prompt i, image j)
    RUN/<category>/records.jsonl                 one JSON line per image: the prior's outputs
    RUN/<category>/records.parts/part-*.jsonl    the same lines as each process appends them (merged above)

The official scorers read the prompt back as `name.split('_')[0]` and the index as
`int(name.split('_')[-1][:-4])`, so a prompt must not contain `_` (nor a path separator).
"""

from __future__ import annotations

from pathlib import Path

from ovi_cli.errors import OviError

SAMPLES = "samples"
BENCH_JSON = "bench.json"
SCORES_JSON = "scores.json"
RECORDS = "records.jsonl"
RECORD_PARTS = "records.parts"
MAX_NAME_BYTES = 255  # a file name's limit on common filesystems


def sample_index(prompt_index: int, image_index: int, images_per_prompt: int) -> int:
    """The six-digit counter of image `image_index` of prompt `prompt_index` (file order)."""
    return prompt_index * images_per_prompt + image_index


def sample_name(prompt: str, index: int) -> str:
    """`{prompt}_{index:06d}.png`, the name the official scripts parse."""
    return f"{prompt}_{index:06d}.png"


def parse_sample_name(name: str) -> tuple[str, int]:
    """(prompt, index) from a sample's file name, by the official scripts' own rules."""
    return name.split("_")[0], int(name.split("_")[-1][:-4])


def check_prompt(prompt: str, where: str = "") -> None:
    """A prompt the official layout can hold, or a one-line `OviError`."""
    place = f" ({where})" if where else ""
    if not prompt.strip():
        raise OviError(f"empty prompt{place}")
    if "_" in prompt:
        raise OviError(f"prompt {prompt!r}{place} contains '_': the official scorers read the prompt back "
                       "from the file name up to the first '_'; remove it from the prompt file")
    if prompt.startswith("."):
        raise OviError(f"prompt {prompt!r}{place} starts with '.': its image file would be hidden from the scorers "
                       "(or no file at all, for '.' and '..'); reword the line")
    if "/" in prompt or "\\" in prompt or "\0" in prompt:
        raise OviError(f"prompt {prompt!r}{place} contains a path separator and cannot be a file name")
    if len(sample_name(prompt, 0).encode("utf-8")) > MAX_NAME_BYTES:
        raise OviError(f"prompt {prompt[:40]!r}...{place} is too long for a file name "
                       f"(at most {MAX_NAME_BYTES - 11} bytes)")


def category_dir(run: Path, category: str) -> Path:
    return Path(run) / category


def samples_dir(run: Path, category: str) -> Path:
    return category_dir(run, category) / SAMPLES


def sample_path(run: Path, category: str, prompt: str, index: int) -> Path:
    return samples_dir(run, category) / sample_name(prompt, index)


def records_path(run: Path, category: str) -> Path:
    return category_dir(run, category) / RECORDS


def record_parts_dir(run: Path, category: str) -> Path:
    return category_dir(run, category) / RECORD_PARTS


def bench_json_path(run: Path) -> Path:
    return Path(run) / BENCH_JSON


def scores_json_path(run: Path) -> Path:
    return Path(run) / SCORES_JSON
