"""Shared fixtures: tiny random models saved in the hub layouts, and a CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the hub from tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tests.helpers import tiny_models  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread, and do not stall on a busy shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def encoder_repo(tmp_path_factory) -> Path:
    """A folder in the kandinsky-2-2-prior layout with tiny random CLIP towers."""
    return tiny_models.make_encoder_repo(tmp_path_factory.mktemp("models") / "prior")


@pytest.fixture(scope="session")
def decoder_repo(tmp_path_factory) -> Path:
    """A folder in the kandinsky-2-2-decoder layout with a tiny random U-Net and MoVQ."""
    return tiny_models.make_decoder_repo(tmp_path_factory.mktemp("models") / "decoder")


@pytest.fixture(scope="session")
def encoders(encoder_repo):
    from ovi_cli.encoders import Encoders

    return Encoders.load(str(encoder_repo), device="cpu")


@pytest.fixture(scope="session")
def scorer_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP, BLIP-VQA and OWLv2 folders in their hub layouts (tests/helpers/tiny_scorers.py)."""
    from tests.helpers import tiny_scorers

    root = tmp_path_factory.mktemp("scorer-models")
    return {"clip": tiny_scorers.make_clip_repo(root / "clip"), "blip": tiny_scorers.make_blip_repo(root / "blip"),
            "owl": tiny_scorers.make_owl_repo(root / "owl")}


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run `ovi ARGS...` in-process through the real console-script entry (`ovi_cli.cli.main`)."""
    from ovi_cli.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture
def tiny_gen_args(encoder_repo, decoder_repo) -> list[str]:
    """Flags that point `ovi gen` at the tiny models and keep it fast."""
    return [
        "--encoder-model", str(encoder_repo), "--decoder-model", str(decoder_repo),
        "--height", "32", "--width", "32", "--decoder-steps", "2", "--steps", "20",
        "--device", "cpu", "--quiet",
    ]
