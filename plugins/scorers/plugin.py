"""ovi's built-in scorers (entry point `scorers` in group `ovi`): clip-score, blip-vqa, detector, 3-in-1,
and the human-preference scorers pickscore, hps and imagereward.

Light on import: the scorer modules import torch and transformers inside their methods.
"""

from __future__ import annotations

from ovi_cli import hookimpl
from ovi_plugins.scorers.blip_vqa import BlipVqa
from ovi_plugins.scorers.clip_score import ClipScore
from ovi_plugins.scorers.detector import Detector
from ovi_plugins.scorers.hps import Hps
from ovi_plugins.scorers.imagereward import ImageRewardScorer
from ovi_plugins.scorers.pickscore import PickScore
from ovi_plugins.scorers.three_in_one import ThreeInOne


@hookimpl
def register_scorers(register):
    for cls in (ClipScore, BlipVqa, Detector, ThreeInOne, PickScore, Hps, ImageRewardScorer):
        register(cls)
