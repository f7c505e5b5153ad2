"""Baseline priors `eclipse` and `kandinsky` on tiny random models saved in the published layouts."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ovi_cli.encoders import Encoders
from ovi_cli.errors import OviError
from tests.helpers import tiny_priors


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return tiny_priors.session_repos(tmp_path_factory)


@pytest.fixture(scope="module")
def prior_encoders(repos):
    return Encoders.load(str(repos["kandinsky"]), device="cpu")


def _gen_args(repos, tmp_path, *extra):
    return ["gen", "a red car on a beach", "--encoder-model", str(repos["kandinsky"]),
            "--decoder-model", str(repos["decoder"]), "--height", "32", "--width", "32",
            "--decoder-steps", "2", "--device", "cpu", "--quiet", "--json", "--save-embedding", *extra]


def _reference_eclipse_forward(pt, noise, text_embeds, hidden, mask):
    """ECLIPSE's forward written with the modules of diffusers' own `PriorTransformer`: the same
    `BasicTransformerBlock`s and projections, minus the time token (as in eclipse-t2i/eclipse-inference)."""
    b = noise.shape[0]
    tokens = torch.cat([
        pt.encoder_hidden_states_proj(hidden), pt.embedding_proj(text_embeds)[:, None], pt.proj_in(noise)[:, None],
        pt.prd_embedding.expand(b, -1, -1),
    ], dim=1) + pt.positional_embedding
    m = F.pad((1 - mask.float()) * -10000.0, (0, pt.additional_embeddings), value=0.0)
    m = (m[:, None, :] + pt.causal_attention_mask).repeat_interleave(pt.config.num_attention_heads, dim=0)
    for block in pt.transformer_blocks:
        tokens = block(tokens, attention_mask=m)
    return pt.proj_to_clip_embeddings(pt.norm_out(tokens)[:, -1])


# ---- ECLIPSE ------------------------------------------------------------------------------------
def test_eclipse_repo_has_the_published_layout_and_loads_strictly(repos):
    from ovi_plugins.eclipse_net import ECLIPSE_CONFIG_KEYS, load_eclipse_prior

    root = repos["eclipse"]
    config = json.loads((root / "config.json").read_text())
    assert config["_class_name"] == "PriorTransformer"
    assert set(config) - {"_class_name", "_diffusers_version", "_name_or_path"} == set(ECLIPSE_CONFIG_KEYS)
    state = load_file(str(root / "diffusion_pytorch_model.safetensors"))
    assert not any(k.startswith("time_") for k in state)
    model = load_eclipse_prior(str(root), torch.device("cpu"), torch.float32)
    assert set(model.state_dict()) == set(state)  # strict load: same names, same shapes
    assert model.positional_embedding.shape[1] == 77 + 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_eclipse_forward_matches_diffusers_blocks(repos, prior_encoders):
    from ovi_plugins.eclipse_net import load_eclipse_prior

    model = load_eclipse_prior(str(repos["eclipse"]), torch.device("cpu"), torch.float32)
    reference = tiny_priors.diffusers_eclipse_reference()  # same seed: the weights saved in the repo
    text = prior_encoders.encode_text(["a red car", "two small green birds on a wire"])
    assert text.attention_mask[0].sum() < text.attention_mask[1].sum()  # the padding mask matters
    noise = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(noise, text.text_embeds, text.last_hidden_state, text.attention_mask)
        theirs = _reference_eclipse_forward(reference, noise, text.text_embeds, text.last_hidden_state,
                                            text.attention_mask)
    assert ours.shape == (2, 16)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_eclipse_refuses_a_diffusion_prior_and_missing_weights(repos, tmp_path):
    from ovi_plugins.eclipse_net import load_eclipse_prior

    with pytest.raises(OviError, match="timestep embedding"):
        load_eclipse_prior(str(repos["kandinsky"] / "prior"), torch.device("cpu"), torch.float32)
    broken = tmp_path / "eclipse"
    shutil.copytree(repos["eclipse"], broken)
    (broken / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(OviError, match="no diffusion_pytorch_model"):
        load_eclipse_prior(str(broken), torch.device("cpu"), torch.float32)
    with pytest.raises(OviError, match="no config.json"):
        load_eclipse_prior(str(tmp_path), torch.device("cpu"), torch.float32)


def test_gen_with_eclipse_prior(run_cli, repos, tmp_path):
    out = tmp_path / "e.png"
    args = _gen_args(repos, tmp_path, "--prior", "eclipse", "--prior-model", str(repos["eclipse"]))
    res = run_cli(*args, "--out", out)
    assert res.code == 0, res.stderr
    sidecar = json.loads(res.stdout.strip().splitlines()[-1])
    assert sidecar["prior"] == "eclipse" and sidecar["prior_model"] == str(repos["eclipse"])
    assert out.exists() and out.with_suffix(".json").exists()
    emb = load_file(str(out.with_suffix(".safetensors")))["image_embeds"]
    assert emb.shape == (1, 16) and torch.isfinite(emb).all()
    # one forward pass from seeded noise: the same seed gives the same embedding, another seed another
    again = tmp_path / "e2.png"
    assert run_cli(*args, "--out", again).code == 0
    assert torch.equal(emb, load_file(str(again.with_suffix(".safetensors")))["image_embeds"])
    other = tmp_path / "e3.png"
    assert run_cli(*args, "--out", other, "--seed", "5").code == 0
    assert not torch.equal(emb, load_file(str(other.with_suffix(".safetensors")))["image_embeds"])


def test_eclipse_with_mismatched_text_tower_is_a_one_line_error(run_cli, repos, encoder_repo, decoder_repo, tmp_path):
    # the shared tiny encoder has a 24-wide text tower; the tiny ECLIPSE expects 16
    res = run_cli("gen", "x", "--prior", "eclipse", "--prior-model", str(repos["eclipse"]),
                  "--encoder-model", str(encoder_repo), "--decoder", "embeds", "--device", "cpu", "--quiet",
                  "--out", tmp_path / "x.png")
    assert res.code == 2
    assert res.stderr.startswith("ovi: error: the ECLIPSE prior expects 16-d") and res.stderr.count("\n") == 1


# ---- Kandinsky prior ----------------------------------------------------------------------------
def test_gen_with_kandinsky_prior_matches_diffusers_pipeline(run_cli, repos, tmp_path):
    from diffusers import KandinskyV22PriorPipeline

    out = tmp_path / "k.png"
    # no --prior-model: the encoder folder holds prior/ and scheduler/, so it is used
    res = run_cli(*_gen_args(repos, tmp_path, "--prior", "kandinsky", "--prior-steps", "3",
                             "--prior-guidance", "4.0", "--seed", "7"), "--out", out)
    assert res.code == 0, res.stderr
    sidecar = json.loads(res.stdout.strip().splitlines()[-1])
    assert sidecar["prior"] == "kandinsky" and sidecar["prior_steps"] == 3 and sidecar["prior_guidance"] == 4.0
    assert sidecar["prior_model"] == str(repos["kandinsky"])
    ours = load_file(str(out.with_suffix(".safetensors")))["image_embeds"]
    # the same diffusers pipeline loaded whole from the folder, same steps, guidance and generator
    pipe = KandinskyV22PriorPipeline.from_pretrained(repos["kandinsky"])
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red car on a beach", num_inference_steps=3, guidance_scale=4.0,
               generator=[torch.Generator("cpu").manual_seed(7)]).image_embeds
    assert torch.allclose(ours, ref.float(), atol=1e-5)
    # its own steps flag changes the result
    out2 = tmp_path / "k2.png"
    assert run_cli(*_gen_args(repos, tmp_path, "--prior", "kandinsky", "--prior-steps", "2", "--seed", "7"),
                   "--out", out2).code == 0
    assert not torch.allclose(ours, load_file(str(out2.with_suffix(".safetensors")))["image_embeds"])


def test_kandinsky_prior_not_available_offline_is_one_line(run_cli, encoder_repo, tmp_path):
    # the shared tiny encoder folder has no scheduler/, so the default hub id is tried: offline in tests
    res = run_cli("gen", "x", "--prior", "kandinsky", "--encoder-model", str(encoder_repo),
                  "--decoder", "embeds", "--device", "cpu", "--quiet", "--out", tmp_path / "x.png")
    assert res.code == 2
    assert "kandinsky-community/kandinsky-2-2-prior" in res.stderr and res.stderr.count("\n") == 1
    assert "Traceback" not in res.stderr


def test_baselines_are_listed_as_plugins(run_cli):
    res = run_cli("plugins", "--json")
    assert res.code == 0
    priors = {p["name"]: p for p in json.loads(res.stdout)["plugins"] if p["kind"] == "prior"}
    assert {"eclipse", "kandinsky"} <= set(priors)
    assert priors["eclipse"]["plugin"] == "baselines"
