"""Decoder plugins for every Kandinsky 2.2 task (img2img, inpaint, controlnet), end to end on tiny models
saved in the real repos' layouts, and their inputs checked before any model loads."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.helpers import tiny_models


@pytest.fixture(scope="module")
def task_repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-decoders")
    return {task: tiny_models.make_decoder_repo(root / task, task=task) for task in ("inpaint", "controlnet")}


@pytest.fixture
def pictures(tmp_path):
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "init.png")
    mask = Image.new("RGB", (40, 40), (0, 0, 0))
    mask.paste((255, 255, 255), (10, 10, 30, 30))
    mask.save(tmp_path / "mask.png")
    Image.new("RGB", (20, 20), (255, 255, 255)).save(tmp_path / "small-mask.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return tmp_path


def _gen(run_cli, tiny_gen_args, out, *extra):
    return run_cli("gen", "a red circle", *tiny_gen_args, "--steps", "3", "--out", str(out), *extra)


def test_img2img_decodes_through_the_diffusers_pipeline(run_cli, tiny_gen_args, pictures):
    res = _gen(run_cli, tiny_gen_args, pictures / "a.png", "--decoder", "kandinsky22-img2img",
               "--option", f"kandinsky22-img2img.image={pictures / 'init.png'}",
               "--option", "kandinsky22-img2img.strength=0.5")
    assert res.code == 0, res.stderr
    assert Image.open(pictures / "a.png").size == (32, 32)
    import json

    side = json.loads((pictures / "a.json").read_text())
    assert side["models"]["decoder"]["pipeline"] == "KandinskyV22Img2ImgPipeline"
    assert side["options"]["kandinsky22-img2img"]["strength"] == 0.5


def test_inpaint_and_controlnet_decode_from_their_repos(run_cli, tiny_gen_args, pictures, task_repos):
    res = _gen(run_cli, tiny_gen_args, pictures / "i.png", "--decoder", "kandinsky22-inpaint",
               "--option", f"kandinsky22-inpaint.image={pictures / 'init.png'}",
               "--option", f"kandinsky22-inpaint.mask={pictures / 'mask.png'}",
               "--option", f"kandinsky22-inpaint.model={task_repos['inpaint']}")
    assert res.code == 0, res.stderr
    assert Image.open(pictures / "i.png").size == (32, 32)
    res = _gen(run_cli, tiny_gen_args, pictures / "c.png", "--decoder", "kandinsky22-controlnet",
               "--option", f"kandinsky22-controlnet.hint={pictures / 'init.png'}",
               "--option", f"kandinsky22-controlnet.model={task_repos['controlnet']}",
               "--height", "64", "--width", "64")  # its MoVQ scales by 8, as the hint block does
    assert res.code == 0, res.stderr
    assert Image.open(pictures / "c.png").size == (64, 64)


@pytest.mark.parametrize(("decoder", "options", "message"), [
    ("kandinsky22-img2img", ["image=missing.png"], "no such file 'missing.png'"),
    ("kandinsky22-img2img", ["image=broken.png"], "cannot read"),
    ("kandinsky22-img2img", ["image=init.png", "strength=1.5"], "strength must be between 0 and 1"),
    ("kandinsky22-img2img", [], "needs an init image"),
    ("kandinsky22-inpaint", ["image=init.png", "mask=small-mask.png"], "the mask is 20x20 but the image is 40x40"),
    ("kandinsky22-controlnet", ["hint=missing.png"], "no such file"),
])
def test_bad_inputs_are_one_line_before_any_model_loads(run_cli, pictures, monkeypatch, decoder, options, message):
    monkeypatch.chdir(pictures)
    # the models named do not exist: an input error must come first, from the decoder's own check
    args = ["gen", "x", "--encoder-model", str(pictures / "nope-enc"), "--decoder-model", str(pictures / "nope-dec"),
            "--decoder", decoder, "--quiet", "--out", str(pictures / "x.png")]
    for o in options:
        args += ["--option", f"{decoder}.{o}"]
    res = run_cli(*args)
    assert res.code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_task_inputs_have_their_own_flags(run_cli, tiny_gen_args, pictures, task_repos):
    """`--init-image`, `--strength`, `--mask-image`, `--hint-image`: declared by the decoder plugins
    (PluginOption.flag), each going to the chosen --decoder; the same bytes as the --option form."""
    import json

    flags = _gen(run_cli, tiny_gen_args, pictures / "f.png", "--decoder", "kandinsky22-img2img",
                 "--init-image", pictures / "init.png", "--strength", "0.5")
    assert flags.code == 0, flags.stderr
    opts = _gen(run_cli, tiny_gen_args, pictures / "o.png", "--decoder", "kandinsky22-img2img",
                "--option", f"kandinsky22-img2img.image={pictures / 'init.png'}",
                "--option", "kandinsky22-img2img.strength=0.5")
    assert opts.code == 0, opts.stderr
    assert Image.open(pictures / "f.png").tobytes() == Image.open(pictures / "o.png").tobytes()
    assert json.loads((pictures / "f.json").read_text())["options"]["kandinsky22-img2img"]["strength"] == 0.5
    res = _gen(run_cli, tiny_gen_args, pictures / "i.png", "--decoder", "kandinsky22-inpaint",
               "--init-image", pictures / "init.png", "--mask-image", pictures / "small-mask.png",
               "--option", f"kandinsky22-inpaint.model={task_repos['inpaint']}")
    assert res.code == 2 and "the mask is 20x20 but the image is 40x40" in res.stderr
    res = _gen(run_cli, tiny_gen_args, pictures / "h.png", "--decoder", "kandinsky22-controlnet",
               "--hint-image", pictures / "missing.png")
    assert res.code == 2 and "missing.png" in res.stderr
    assert not (pictures / "h.png").exists()
