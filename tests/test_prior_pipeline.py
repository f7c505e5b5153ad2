"""`OviPriorPipeline`: diffusers' prior interface over OVI; the docs' diffusers examples run on tiny models."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_models

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"


@pytest.fixture(scope="module")
def prior(encoder_repo):
    from ovi_cli import OviPriorPipeline

    return OviPriorPipeline.from_pretrained(str(encoder_repo), steps=20)


def test_output_shapes_and_seeds_like_the_diffusers_prior(prior):
    from diffusers.pipelines.kandinsky import KandinskyPriorPipelineOutput

    out = prior(["a red circle", "a blue square"], num_images_per_prompt=2,
                generator=torch.Generator().manual_seed(5))
    assert isinstance(out, KandinskyPriorPipelineOutput)
    assert out.image_embeds.shape == (4, tiny_models.EMBED_DIM) == out.negative_image_embeds.shape
    again = prior(["a red circle", "a blue square"], num_images_per_prompt=2,
                  generator=torch.Generator().manual_seed(5), return_dict=False)
    assert isinstance(again, tuple) and torch.equal(again[0], out.image_embeds)  # same seed, same embeddings
    assert not torch.equal(out.image_embeds[0], out.image_embeds[1])  # each image of a prompt its own seed
    other = prior("a red circle", generator=torch.Generator().manual_seed(6)).image_embeds
    assert not torch.equal(other[0], out.image_embeds[0])
    # the negative without a negative prompt: the mean-grey image's embedding, as diffusers' prior gives
    assert torch.allclose(out.negative_image_embeds[0], prior.encoders.zero_image_embeds()[0])
    neg = prior("a red circle", negative_prompt="blurry", generator=torch.Generator().manual_seed(5))
    # (a batch of 1 and of 4 agree up to float rounding: the matmuls run on other shapes)
    assert torch.allclose(neg.image_embeds[0], out.image_embeds[0], atol=1e-5)
    assert not torch.allclose(neg.negative_image_embeds[0], out.negative_image_embeds[0])
    assert prior("a red circle", output_type="np").image_embeds.dtype == np.float32


def test_equal_to_what_ovi_gen_computes(prior, run_cli, encoder_repo, tmp_path):
    from safetensors.torch import load_file

    res = run_cli("gen", "a red circle", "--encoder-model", str(encoder_repo), "--decoder", "embeds", "--steps",
                  "20", "--seed", "3", "--device", "cpu", "--quiet", "--out", str(tmp_path / "a.png"))
    assert res.code == 0, res.stderr
    from_gen = load_file(tmp_path / "a.safetensors")
    ours = prior("a red circle", generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours.image_embeds, from_gen["image_embeds"])
    assert torch.equal(ours.negative_image_embeds, from_gen["negative_image_embeds"])


def test_other_priors_and_settings_per_call(prior):
    text = prior("a red circle", prior="textemb").image_embeds
    assert torch.allclose(text, prior.encoders.encode_text(["a red circle"]).text_embeds)
    fewer = prior("a red circle", num_inference_steps=2).image_embeds
    assert not torch.equal(fewer, prior("a red circle").image_embeds)
    from ovi_cli.errors import OviError

    with pytest.raises(OviError, match="unknown argument"):
        prior("x", stepz=3)
    with pytest.raises(OviError, match="latents"):
        prior("x", latents=torch.zeros(1))


def _blocks() -> list[str]:
    text = DOCS.read_text()
    section = text[text.index("## In diffusers code"):text.index("## Progress and warnings")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_docs_diffusers_examples_run_on_tiny_models(encoder_repo, decoder_repo, tmp_path, monkeypatch):
    from ovi_stats.store import write_store

    root = tmp_path / "models"
    repos = {
        "kandinsky-community/kandinsky-2-2-prior": encoder_repo,
        "kandinsky-community/kandinsky-2-2-decoder-inpaint": tiny_models.make_decoder_repo(root / "i", task="inpaint"),
        "kandinsky-community/kandinsky-2-2-controlnet-depth":
            tiny_models.make_decoder_repo(root / "c", task="controlnet"),
        "kandinsky-community/kandinsky-2-2-decoder": decoder_repo,
    }
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    from ovi_cli.encoders import Encoders

    enc = Encoders.load(str(encoder_repo))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(40)]
    from ovi_stats.store import stats_root

    write_store(stats_root() / "tiny", enc.encode_images(images).numpy(), [str(i) for i in range(40)],
                encoder={"source": str(encoder_repo), "fingerprint": enc.fingerprint()})
    Image.new("RGB", (64, 64), (90, 90, 90)).save(tmp_path / "depth.png")
    blocks = _blocks()
    assert len(blocks) == 4
    code = "\n".join(blocks)
    for hub_id, folder in repos.items():
        code = code.replace(f'"{hub_id}"', repr(str(folder)))
    code = code.replace('"cuda"', '"cpu"').replace("torch.float16", "torch.float32").replace(".half()", "")
    # img2img runs strength x steps: 4 steps at 0.3 is one
    code = code.replace("768", "64").replace("num_inference_steps=50", "num_inference_steps=4")
    code = code.replace('torch_dtype=torch.float32)\nprior.to', 'torch_dtype=torch.float32, steps=5)\nprior.to')
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - the docs' own code
    assert Image.open(tmp_path / "cat.png").size == (64, 64)
    assert namespace["image"].size == (64, 64)
    assert namespace["out"].image_embeds.shape == (1, tiny_models.EMBED_DIM)


def test_the_trained_priors_through_the_same_interface(run_cli, tmp_path_factory, tmp_path):
    """`prior="kandinsky"` (diffusers' own prior, its steps and guidance as diffusers names them) and
    `prior="eclipse"`: the same call, the same embeddings as `ovi gen --prior ...`."""
    from safetensors.torch import load_file

    from ovi_cli import OviPriorPipeline
    from tests.helpers import tiny_priors

    repos = tiny_priors.session_repos(tmp_path_factory)
    kandinsky, eclipse = str(repos["kandinsky"]), str(repos["eclipse"])
    pipe = OviPriorPipeline.from_pretrained(kandinsky, prior="kandinsky", options={"kandinsky": {"model": kandinsky}})
    ours = pipe("a red circle", num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    res = run_cli("gen", "a red circle", "--encoder-model", kandinsky, "--prior", "kandinsky", "--prior-model",
                  kandinsky, "--prior-steps", "3", "--prior-guidance", "2", "--seed", "1", "--decoder", "embeds",
                  "--device", "cpu", "--quiet", "--out", str(tmp_path / "k.png"))
    assert res.code == 0, res.stderr
    assert torch.equal(ours.image_embeds, load_file(tmp_path / "k.safetensors")["image_embeds"])
    one_pass = pipe("a red circle", prior="eclipse", options={"eclipse": {"model": eclipse}},
                    generator=torch.Generator().manual_seed(1)).image_embeds
    assert one_pass.shape == ours.image_embeds.shape and not torch.equal(one_pass, ours.image_embeds)
