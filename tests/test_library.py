"""The library below the CLI: encoders, OVI on a reachable target, outputs, prompt validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ovi_cli.engine import OviSettings, optimize
from ovi_cli.errors import OviError
from ovi_cli.outputs import atomic_outputs, slugify


def test_encoders_load_from_the_prior_layout(encoders, encoder_repo):
    assert (encoder_repo / "prior").is_dir()  # present like in the hub repo, and ignored
    assert encoders.embed_dim == 16 and encoders.token_width == 32
    assert all(not p.requires_grad for p in encoders.image_encoder.parameters())
    assert all(not p.requires_grad for p in encoders.text_encoder.parameters())
    text = encoders.encode_text(["a", "b c"])
    assert text.text_embeds.shape == (2, 16)
    assert text.truncated == [False, False]


def test_ovi_reaches_a_reachable_target_and_keeps_no_encoder_grads(encoders):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    target = encoders.encode_images(images)
    res = optimize(encoders.encode_pseudo_tokens, target, token_width=encoders.token_width, seeds=[0, 1],
                   settings=OviSettings(steps=60))
    assert min(res.text_cosine) > 0.9
    assert len(res.history[0]["text_cosine"]) == 60
    assert res.history[0]["text_cosine"][-1] > res.history[0]["text_cosine"][0]
    assert all(p.grad is None for p in encoders.image_encoder.parameters())


def test_pseudo_token_forward_matches_the_vision_tower_on_patches(encoders):
    """With one token per patch position, the OVI forward is the tower's own forward minus the conv."""
    from ovi_cli.pseudo_tokens import encode_pseudo_tokens

    vm = encoders.image_encoder.vision_model
    pixels = torch.randn(1, 3, 32, 32)
    patches = vm.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [1, 16, 32]
    ours = encode_pseudo_tokens(encoders.image_encoder, patches)
    theirs = encoders.image_encoder(pixel_values=pixels).image_embeds
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_atomic_outputs_leave_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError), atomic_outputs() as out:
        out.write_text(tmp_path / "a.json", "{}")
        out.write_bytes(tmp_path / "b.bin", b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_outputs() as out:
        out.write_text(tmp_path / "a.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_slugify():
    assert slugify("Blue old car on a beach!") == "blue-old-car-on-a-beach"
    assert slugify("!!!") == "prompt"


def test_empty_prompt_is_refused_by_the_library(encoder_repo, decoder_repo):
    from ovi_cli.pipeline import OviPipeline
    from ovi_cli.settings import GenSettings

    pipe = OviPipeline(GenSettings(encoder_model=str(encoder_repo), decoder="embeds", device="cpu"))
    with pytest.raises(OviError, match="empty prompt"):
        pipe.embed(["  "])


def test_constraint_spec_parsing():
    from ovi_cli.api import ConstraintSpec

    assert ConstraintSpec.parse("nn") == ConstraintSpec("nn", None)
    assert ConstraintSpec.parse("mahalanobis:0.009") == ConstraintSpec("mahalanobis", 0.009)
    for bad in ("nn:", ":1", "nn:abc", "nn:-1", "nn:inf"):
        with pytest.raises(OviError):
            ConstraintSpec.parse(bad)
