"""Published T2I-CompBench numbers, shown beside a user's runs by `ovi bench table --published`.

From the ECLIPSE paper (CVPR 2024), Table 1, as recorded in the project's PAPER_NOTES.md:
BLIP-VQA for color, shape and texture, UniDet for spatial, CLIPScore for non-spatial. Their
spatial column is UniDet's; ovi's `detector` is an OWLv2 substitute (see docs/benchmark.md),
so a run's spatial number is comparable only roughly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE = "ECLIPSE paper (Patel et al., CVPR 2024), Table 1"
# the scorer each published column corresponds to in ovi
PAPER_SCORERS = {"color": "blip-vqa", "shape": "blip-vqa", "texture": "blip-vqa", "spatial": "detector",
                 "non_spatial": "clip-score"}


@dataclass(frozen=True)
class PublishedRow:
    name: str
    scores: dict[str, float] = field(default_factory=dict)  # category -> published mean
    source: str = SOURCE


PUBLISHED: tuple[PublishedRow, ...] = (
    PublishedRow("Kandinsky 2.2 prior", {"color": 0.5768, "shape": 0.4999, "texture": 0.5760, "spatial": 0.1912,
                                         "non_spatial": 0.3132}),
    PublishedRow("ECLIPSE prior", {"color": 0.6119, "shape": 0.5429, "texture": 0.6165, "spatial": 0.1903,
                                   "non_spatial": 0.3139}),
)
