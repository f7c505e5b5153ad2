"""`ovi toy train` (plugins/toy/train.py) with the tiny config: deterministic, and `--reuse-clip`
gives the decoder, prior and stats of a full run."""

from __future__ import annotations

import json

import pytest

from ovi_plugins.toy.train import TrainConfig, train_all
from tests.helpers.reliability import Stop, interrupt_when

WEIGHTS = ["prior/image_encoder/model.safetensors", "prior/text_encoder/model.safetensors",
           "decoder/model.safetensors", "toy_prior/model.safetensors", "stats/embeddings.npy"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy-a")
    report = train_all(out, TrainConfig.tiny(), log=lambda _m: None)
    return out, report


def test_tiny_training_writes_every_stage(full_run):
    out, report = full_run
    for rel in WEIGHTS:
        assert (out / rel).stat().st_size > 0, rel
    assert set(report["losses"]) == {"clip_final", "decoder_final", "prior_final"}
    assert json.loads((out / "train.json").read_text())["config"] == json.loads(
        json.dumps(report["config"]))


def test_training_twice_gives_the_same_bytes(full_run, tmp_path):
    out, _ = full_run
    train_all(tmp_path, TrainConfig.tiny(), log=lambda _m: None)
    for rel in WEIGHTS:
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_reuse_clip_gives_the_full_runs_decoder_prior_and_stats(full_run, tmp_path):
    out, _ = full_run
    train_all(tmp_path, TrainConfig.tiny(), log=lambda _m: None)
    (tmp_path / "decoder/model.safetensors").unlink()
    report = train_all(tmp_path, TrainConfig.tiny(), log=lambda _m: None, reuse_clip=True)
    assert report["reused_clip"] is True
    for rel in WEIGHTS[2:]:
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_reuse_clip_refuses_another_config(full_run):
    out, _ = full_run
    other = TrainConfig.tiny()
    other.seed += 1
    with pytest.raises(ValueError, match="same data and CLIP settings"):
        train_all(out, other, log=lambda _m: None, reuse_clip=True)


def test_reuse_clip_retrains_the_decoder_under_another_decoder_setting(full_run, tmp_path):
    """The decoder's settings may change under --reuse-clip: the CLIP, prior and stats stay those of the
    full run, the decoder is the one its new settings train (here: each image's own background)."""
    out, _ = full_run
    train_all(tmp_path, TrainConfig.tiny(), log=lambda _m: None)
    other = TrainConfig.tiny()
    other.decoder_background = not other.decoder_background
    train_all(tmp_path, other, log=lambda _m: None, reuse_clip=True)
    for rel in WEIGHTS:
        same = (tmp_path / rel).read_bytes() == (out / rel).read_bytes()
        assert same == (not rel.startswith("decoder")), rel



def test_an_interrupted_run_leaves_nothing(tmp_path):
    out = tmp_path / "models"
    with pytest.raises(Stop):
        train_all(out, TrainConfig.tiny(), log=interrupt_when(lambda m: m.startswith("decoder")))
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary beside it


def test_an_interrupted_reuse_leaves_the_earlier_run(full_run, tmp_path):
    out, _ = full_run
    def state():  # the same bytes would be rewritten by retraining: check the files were not touched
        return {p.relative_to(out): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
                for p in out.rglob("*") if p.is_file()}

    before = state()
    with pytest.raises(Stop):
        train_all(out, TrainConfig.tiny(), log=interrupt_when(lambda m: m.startswith("prior")), reuse_clip=True)
    assert state() == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary left


def test_an_empty_out_folder_is_filled(full_run, tmp_path):
    out, _ = full_run
    empty = tmp_path / "empty"
    empty.mkdir()
    train_all(empty, TrainConfig.tiny(), log=lambda _m: None)
    assert (empty / WEIGHTS[2]).read_bytes() == (out / WEIGHTS[2]).read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no temporary left beside it


def test_training_settings_parse_by_their_field_type():
    cfg = TrainConfig().with_settings(["decoder_noise=0", "clip_temperature=0.01", "decoder_background=true",
                                       "clip_steps=10"])
    assert (cfg.decoder_noise, cfg.clip_temperature, cfg.decoder_background, cfg.clip_steps) == (0.0, 0.01, True, 10)
    assert TrainConfig().with_settings([]) == TrainConfig()
    for bad, needle in (("nope=1", "KEY one of"), ("clip_steps", "KEY one of"), ("clip_steps=1.5", "int values"),
                        ("decoder_noise=abc", "float values"), ("decoder_background=maybe", "bool values"),
                        ("clip_temperature=0", "> 0"), ("decoder_noise=-1", ">= 0"), ("clip_lr=nan", "finite")):
        with pytest.raises(ValueError, match=needle):
            TrainConfig().with_settings([bad])


def test_a_trained_folder_is_evaluated_with_its_own_models(full_run, run_cli, tmp_path):
    """`ovi toy train --set ...` then `ovi eval toy --models DIR`: every run generates and scores with the
    folder's CLIP, decoder, stats and toy prior, none with the shipped ones."""
    from tests.helpers.reliability import one_line_error

    models = tmp_path / "models"
    res = run_cli("toy", "train", "--tiny", "--set", "decoder_noise=0", "--set", "decoder_background=true",
                  "--out", models)
    assert res.code == 0, res.stderr
    config = json.loads((models / "train.json").read_text())["config"]
    assert (config["decoder_noise"], config["decoder_background"]) == (0.0, True)
    out = tmp_path / "eval"
    res = run_cli("eval", "toy", "--prompts", "1", "--steps", "2", "--mahalanobis-weights", "0.03",
                  "--models", models, "--out", out, "--quiet")
    assert res.code == 0, res.stderr
    checked = 0
    for bench in out.glob("*/bench.json"):
        settings = json.loads(bench.read_text())["settings"]
        if settings.get("prior") == "real":
            continue
        checked += 1
        assert settings["encoder_model"] == str(models / "prior"), bench
        assert settings["decoder_model"] == str(models / "decoder"), bench
        assert settings["stats"] == str(models / "stats"), bench
        if settings["prior"] == "toy-prior":
            assert settings["options"]["toy-prior"]["model"] == str(models / "toy_prior")
    assert checked == 5  # textemb, ovi, ovi+mahalanobis:0.03, ovi+nn, toy-prior
    one_line_error(run_cli("eval", "toy", "--models", tmp_path, "--out", tmp_path / "e2"),
                   "is not a toy models folder")
    one_line_error(run_cli("toy", "train", "--tiny", "--set", "clip_temperature=0", "--out", tmp_path / "t2"),
                   "--set", "> 0")
