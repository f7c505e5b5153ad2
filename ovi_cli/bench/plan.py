"""The work of a benchmark run, cut into groups that do not depend on how many processes run it.

A work unit is one image: prompt i, image j of a category, file index `i*K + j`, decoder seed
`seed + j`. Its OVI start is seed `seed + j` too (one OVI per image), or `seed` for every image of
the prompt (one OVI per prompt feeds all K decoder seeds).

A *group* is what is computed together: one OVI batch and its decoder batches. Batched matrix
products round differently for different batch shapes, so groups are fixed by `--batch`,
`--images-per-prompt` and `--ovi-per` alone, never by the number of processes or by what is
already done: a group is computed whole (only its missing images are written), on whichever
process owns it, so the union of any shares is the single-process output bit for bit.

- one OVI per image: a group is up to `batch` images of one prompt (`batch < K`), or `batch // K`
  whole prompts (`batch >= K`); the decoder takes the group in one call.
- one OVI per prompt: a group is `batch` prompts in one OVI call; their `batch * K` images are
  decoded `batch` at a time.

Groups are dealt round robin to the shares, starting at a per-category offset, so every share
gets work in every category and the deal does not change with `--limit` or `--categories`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ovi_cli.bench.layout import sample_index
from ovi_cli.distributed import Share, stable_offset
from ovi_cli.errors import OviError

OVI_PER = ("image", "prompt")


@dataclass(frozen=True)
class Unit:
    """One image of the benchmark."""

    category: str
    prompt_index: int
    image_index: int
    prompt: str
    index: int  # the file's six-digit counter, i*K + j
    seed: int  # the decoder's noise seed: --seed + j
    ovi_seed: int  # OVI's start: --seed + j (per image) or --seed (per prompt)


@dataclass(frozen=True)
class Group:
    """Units computed together: one OVI batch, then the decoder batches `decode_chunks`."""

    category: str
    number: int  # within its category: what the shares are dealt by
    units: tuple[Unit, ...]
    ovi_rows: tuple[tuple[str, int], ...]  # (prompt, seed) of each row of the OVI batch
    unit_rows: tuple[int, ...]  # the OVI row of each unit
    decode_chunks: tuple[tuple[int, ...], ...]  # positions in `units` decoded in one call


def check_plan_options(images_per_prompt: int, batch: int, ovi_per: str) -> None:
    if images_per_prompt < 1:
        raise OviError("--images-per-prompt must be >= 1")
    if batch < 1:
        raise OviError("--batch must be >= 1")
    if ovi_per not in OVI_PER:
        raise OviError(f"--ovi-per must be one of {', '.join(OVI_PER)}, got {ovi_per!r}")


def _unit(category: str, prompts: Sequence[str], i: int, j: int, k: int, seed: int, ovi_per: str) -> Unit:
    return Unit(category, i, j, prompts[i], sample_index(i, j, k), seed + j, seed + j if ovi_per == "image" else seed)


def plan_category(
    category: str, prompts: Sequence[str], images_per_prompt: int, seed: int, batch: int, ovi_per: str = "image"
) -> list[Group]:
    """Every group of one category, in file order."""
    check_plan_options(images_per_prompt, batch, ovi_per)
    k = images_per_prompt
    groups: list[Group] = []
    if ovi_per == "image":
        if batch < k:  # several groups per prompt
            per_prompt = -(-k // batch)
            blocks = [(i * per_prompt + c, [(i, j) for j in range(c * batch, min(k, (c + 1) * batch))])
                      for i in range(len(prompts)) for c in range(per_prompt)]
        else:  # whole prompts per group
            p = batch // k
            blocks = [(g, [(i, j) for i in range(g * p, min(len(prompts), (g + 1) * p)) for j in range(k)])
                      for g in range(-(-len(prompts) // p))]
        for number, pairs in blocks:
            units = tuple(_unit(category, prompts, i, j, k, seed, ovi_per) for i, j in pairs)
            groups.append(Group(category, number, units, tuple((u.prompt, u.ovi_seed) for u in units),
                                tuple(range(len(units))), (tuple(range(len(units))),)))
        return groups
    for g in range(-(-len(prompts) // batch)):
        first, last = g * batch, min(len(prompts), (g + 1) * batch)
        units = tuple(_unit(category, prompts, i, j, k, seed, ovi_per) for i in range(first, last) for j in range(k))
        chunks = tuple(tuple(range(s, min(len(units), s + batch))) for s in range(0, len(units), batch))
        groups.append(Group(category, g, units, tuple((prompts[i], seed) for i in range(first, last)),
                            tuple(u.prompt_index - first for u in units), chunks))
    return groups


def owned(groups: Sequence[Group], share: Share) -> list[Group]:
    """The groups of `share` (round robin from a per-category offset)."""
    return [g for g in groups if share.owns(g.number, stable_offset(g.category))]
