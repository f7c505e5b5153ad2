"""Constraints: the pure maths on exact values, the built-in plugins on a real store, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ovi_cli.losses import mahalanobis_sq, nn_term

# ---- pure maths ----------------------------------------------------------------------------------


def test_mahalanobis_sq_identity_is_squared_euclidean():
    e = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    mean = torch.tensor([0.0, 0.0], dtype=torch.float64)
    chol = torch.eye(2, dtype=torch.float64)
    assert mahalanobis_sq(e, mean, chol).tolist() == [25.0, 2.0]


def test_mahalanobis_sq_exact_value_with_correlated_precision():
    # P = L L^T = [[4, 2], [2, 10]]; d = e - mu = [1, -1]: d^T P d = 4 - 2 - 2 + 10 = 10
    chol = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    assert torch.equal(chol @ chol.T, torch.tensor([[4.0, 2.0], [2.0, 10.0]], dtype=torch.float64))
    e = torch.tensor([[2.0, 0.0]])
    mean = torch.tensor([1.0, 1.0], dtype=torch.float64)
    out = mahalanobis_sq(e, mean, chol)
    assert out.dtype == torch.float64
    assert out.tolist() == [10.0]


def test_mahalanobis_sq_matches_explicit_quadratic_form_and_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    precision = a @ a.T + 5 * torch.eye(5, dtype=torch.float64)
    chol = torch.linalg.cholesky(precision)
    mean = torch.randn(5, generator=g, dtype=torch.float64)
    e = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    d = e - mean
    expected = torch.einsum("bi,ij,bj->b", d, precision, d)
    torch.testing.assert_close(mahalanobis_sq(e, mean, chol), expected, rtol=1e-12, atol=1e-12)
    mahalanobis_sq(e, mean, chol).sum().backward()
    torch.testing.assert_close(e.grad, 2 * (e - mean).detach() @ precision, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: mahalanobis_sq(x, mean, chol), (e,))


def test_nn_term_exact_values():
    e = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 5.0]])
    neighbours = torch.tensor([
        [[3.0, 0.0]],  # same direction: 0
        [[0.0, 1.0]],  # orthogonal: 1
        [[0.0, -2.0]],  # opposite: 2
    ])
    assert nn_term(e, neighbours).tolist() == [0.0, 1.0, 2.0]
    # the mean over k: (0 + 1) / 2 and (1 - cos 45deg + 1 - 1) / 2
    two = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 7.0]]])
    out = nn_term(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), two)
    torch.testing.assert_close(out, torch.tensor([0.5, (1 - math.sqrt(0.5)) / 2]))


def test_nn_term_gradient_flows_to_the_embedding_only():
    e = torch.tensor([[1.0, 1.0]], requires_grad=True)
    n = torch.tensor([[[1.0, 0.0]]])
    nn_term(e, n).sum().backward()
    # d/de (1 - e_x / |e|) at (1, 1): -(|e|^2 - e_x^2, -e_x e_y) / |e|^3 = (-1/2^1.5, 1/2^1.5)
    torch.testing.assert_close(e.grad, torch.tensor([[-(2**-1.5), 2**-1.5]]))


# ---- a real store of tiny-encoder image embeddings -----------------------------------------------


def tiny_images(n: int, seed: int = 0):
    """`n` small RGB images: a random flat colour plus noise (varied, cheap)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, size=(1, 1, 3))
        arr = np.clip(base + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr))
    return out


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, encoders, encoder_repo):
    from ovi_stats.store import write_store

    emb = encoders.encode_images(tiny_images(48)).numpy()
    files = [f"img/{i:03d}.png" for i in range(len(emb))]
    path = tmp_path_factory.mktemp("stats") / "tiny"
    write_store(path, emb, files, encoder={"source": str(encoder_repo), "fingerprint": encoders.fingerprint()})
    return path


@pytest.fixture(scope="module")
def store(store_dir):
    from ovi_stats.store import open_store

    return open_store(str(store_dir))


def maha(store, embeds):
    """(e - mu)^T P (e - mu) per row, float64, from the store's mean and precision factor."""
    from ovi_cli.losses import mahalanobis_sq

    return mahalanobis_sq(embeds.double(), store.mean, store.precision_cholesky)


def make(name: str, store, encoders, weight: float | None = None, **options):
    from ovi_cli.api import ConstraintContext
    from ovi_cli.plugins import get_registry

    cls = get_registry().get("constraint", name)
    ctx = ConstraintContext(encoders=encoders, device=torch.device("cpu"), dtype=torch.float32,
                            store=store, options=options, weight=weight)
    return cls(ctx)


def test_builtin_constraints_are_registered_with_paper_defaults():
    from ovi_cli.plugins import load_registry

    reg = load_registry()
    maha, nn = reg.entries["constraint"]["mahalanobis"], reg.entries["constraint"]["nn"]
    assert maha.package == nn.package == "ovi"
    assert maha.cls.default_weight == 0.009 and nn.cls.default_weight == 0.5
    assert maha.cls.needs_stats and nn.cls.needs_stats
    # the formulas are in the docstrings (item 1)
    assert "(e - mu)^T P (e - mu)" in maha.cls.__doc__ and "1 - cos(e, n_j)" in nn.cls.__doc__


def test_mahalanobis_term_is_the_quadratic_form_of_the_stores_precision(store, encoders):
    c = make("mahalanobis", store, encoders)
    assert c.weight == 0.009 and c.chol.dtype == torch.float64
    e = torch.randn(3, store.dim, requires_grad=True)
    out = c.term(e, 0, torch.arange(3))
    assert out.shape == (3,) and out.dtype == torch.float32
    precision = store.precision_cholesky @ store.precision_cholesky.T
    d = e.detach().double() - store.mean
    torch.testing.assert_close(out.double(), torch.einsum("bi,ij,bj->b", d, precision, d), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()
    rep = c.report(store.mean.float()[None])
    assert rep[0]["distance"] == pytest.approx(0.0, abs=1e-5)  # the mean rounded to float32
    assert rep[0]["cosine_to_mean"] == pytest.approx(1.0, abs=1e-6)


def brute_force_neighbours(store, e: torch.Tensor, k: int):
    emb = torch.from_numpy(np.asarray(store.embeddings, dtype=np.float32))
    cos = torch.nn.functional.cosine_similarity(e[:, None, :], emb[None], dim=-1)
    return cos.topk(k, dim=-1)


def test_nn_term_uses_the_nearest_stored_embeddings(store, encoders):
    c = make("nn", store, encoders, k=2)
    e = torch.randn(2, store.dim, requires_grad=True)
    out = c.term(e, 0, torch.arange(2))
    best, ids = brute_force_neighbours(store, e.detach(), 2)
    torch.testing.assert_close(out, (1 - best).mean(-1), rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0
    rep = c.report(e.detach())
    assert [h["id"] for h in rep[0]["neighbours"]] == ids[0].tolist()
    assert rep[0]["neighbours"][0]["file"] == store.files[int(ids[0, 0])]
    assert rep[0]["neighbours"][0]["cosine"] == pytest.approx(float(best[0, 0]), abs=1e-3)
    assert rep[0]["k"] == 2 and rep[0]["every"] == 1


def test_nn_every_reuses_neighbours_per_original_row(store, encoders):
    emb = np.asarray(store.embeddings, dtype=np.float32)
    a, b = torch.from_numpy(emb[0:1].copy()), torch.from_numpy(emb[1:2].copy())
    c = make("nn", store, encoders, every=3)
    # step 0: rows 0 and 1 sit on stored images 0 and 1: their own neighbours, term ~0
    assert c.term(torch.cat([a, b]), 0, torch.tensor([0, 1])).max() < 1e-3
    # step 1 (no search): only row 1 is left and it moved onto image 0; it keeps image 1
    moved = c.term(a, 1, torch.tensor([1]))
    expected = 1 - torch.nn.functional.cosine_similarity(a, b)
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-4)
    assert moved.item() > 1e-3
    # step 3 searches again: image 0 is now its neighbour
    assert c.term(a, 3, torch.tensor([1])).item() < 1e-3
    # the final evaluation (no autograd) always searches
    c.term(torch.cat([a, b]), 4, torch.tensor([0, 1]))
    with torch.no_grad():
        assert c.term(torch.cat([b, a]), 5, torch.tensor([0, 1])).max() < 1e-3
    assert [r["searches"] for r in c.report(torch.cat([b, a]))] == [2, 3]


@pytest.mark.parametrize("options, message", [
    ({"k": 0}, "--option nn.k must be a whole number >= 1"),
    ({"every": 0}, "--option nn.every must be a whole number >= 1"),
    ({"k": 1000}, "--option nn.k=1000 is more than the 48 images"),
])
def test_nn_options_are_checked(store, encoders, options, message):
    from ovi_cli.errors import OviError

    with pytest.raises(OviError, match=message):
        make("nn", store, encoders, **options)


def test_constraints_without_a_store_name_build_stats(encoders):
    from ovi_cli.errors import OviError

    for name in ("mahalanobis", "nn"):
        with pytest.raises(OviError, match="ovi build-stats"):
            make(name, None, encoders)


# ---- OVI with constraints (library) --------------------------------------------------------------

PROMPTS = ["a red car on a beach", "a cat sleeping on a sofa"]


def run_ovi(encoders, store_dir, constraints=(), steps=30, **options):
    from ovi_cli.pipeline import OviPipeline
    from ovi_cli.settings import GenSettings

    settings = GenSettings(
        decoder="embeds", encoder_model="unused", steps=steps, device="cpu", constraints=list(constraints),
        stats=str(store_dir), options={"nn": options},
    )
    pipe = OviPipeline(settings, encoders=encoders)
    return pipe, pipe.embed(PROMPTS, seeds=[0, 1])


@pytest.fixture(scope="module")
def free(encoders, store_dir):
    """The unconstrained result for PROMPTS (30 steps, seeds 0 and 1)."""
    return run_ovi(encoders, store_dir)[1]


def test_weight_zero_is_exactly_the_unconstrained_result(encoders, store_dir):
    _, free = run_ovi(encoders, store_dir, steps=10)
    _, zero = run_ovi(encoders, store_dir, ["mahalanobis:0", "nn:0"], steps=10)
    assert torch.equal(zero.image_embeds, free.image_embeds)
    assert zero.records[0]["history"]["loss"] == free.records[0]["history"]["loss"]
    assert zero.records[0]["constraint_values"]["nn"]["weight"] == 0.0


def test_mahalanobis_lowers_the_distance_and_raises_cosine_to_the_mean(encoders, store_dir, store, free):
    pipe, held = run_ovi(encoders, store_dir, ["mahalanobis"])  # the paper's default weight 0.009
    mean = store.mean.float()[None]
    d_free, d_held = maha(store, free.image_embeds), maha(store, held.image_embeds)
    assert (d_held < 0.5 * d_free).all(), (d_free, d_held)
    cos = torch.nn.functional.cosine_similarity
    assert (cos(held.image_embeds, mean) > cos(free.image_embeds, mean) + 0.05).all()
    # the records carry the term per step and its final value (item 4)
    rec = held.records[0]
    values = rec["constraint_values"]["mahalanobis"]
    assert values["weight"] == 0.009
    assert values["final"] == pytest.approx(float(d_held[0]), rel=1e-4)
    assert values["distance"] == pytest.approx(math.sqrt(values["final"]), rel=1e-4)
    assert len(rec["history"]["mahalanobis"]) == 30
    assert rec["history"]["mahalanobis"][-1] < rec["history"]["mahalanobis"][0]


def test_large_mahalanobis_weight_collapses_every_prompt_to_the_mean(encoders, store_dir, store, free):
    cos = torch.nn.functional.cosine_similarity
    _, room = run_ovi(encoders, store_dir, ["mahalanobis:5"])
    mean = store.mean.float()[None]
    typical = maha(store, torch.from_numpy(np.asarray(store.embeddings, dtype=np.float32))).median()
    d_room = maha(store, room.image_embeds)
    # both prompts end closer to the mean than a typical stored image, and to each other
    assert (d_room < 0.25 * typical).all(), (d_room, typical)
    assert (cos(room.image_embeds, mean) > 0.98).all()
    gap = lambda e: (e[0] - e[1]).norm().item()  # noqa: E731
    assert gap(room.image_embeds) < 0.5 * gap(free.image_embeds)
    # and the text is lost: the paper's generic "room" for every prompt
    assert max(r["prior_text_cosine"] for r in room.records) < 0.2
    assert min(r["prior_text_cosine"] for r in free.records) > 0.5


def test_nn_raises_cosine_to_the_nearest_stored_image(encoders, store_dir, store, free):
    _, held = run_ovi(encoders, store_dir, ["nn"])
    best_free, _ = brute_force_neighbours(store, free.image_embeds, 1)
    best_held, ids = brute_force_neighbours(store, held.image_embeds, 1)
    assert (best_held[:, 0] > best_free[:, 0] + 0.05).all(), (best_free, best_held)
    values = held.records[0]["constraint_values"]["nn"]
    assert values["weight"] == 0.5 and values["searches"] == 31
    assert values["neighbours"][0]["file"] == store.files[int(ids[0, 0])]
    assert values["final"] == pytest.approx(1 - values["neighbours"][0]["cosine"], abs=1e-4)


# ---- the CLI ---------------------------------------------------------------------------------------


def test_gen_with_two_constraints_records_terms_finals_and_neighbours(run_cli, tiny_gen_args, tmp_path, store_dir,
                                                                     store):
    out = tmp_path / "car.png"
    res = run_cli("gen", "blue old car on a beach", *tiny_gen_args, "--decoder", "embeds", "--out", out,
                  "-c", "nn", "--constraint", "mahalanobis:0.01", "--stats", store_dir,
                  "--nn-k", "2", "--nn-every", "5")
    assert res.code == 0, res.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["constraints"] == [{"name": "nn", "weight": 0.5}, {"name": "mahalanobis", "weight": 0.01}]
    assert side["models"]["stats"]["path"] == str(store_dir)
    values = side["constraint_values"]
    assert "text_cosine" in side and set(values) == {"nn", "mahalanobis"}
    nn = values["nn"]
    assert nn["weight"] == 0.5 and nn["k"] == 2 and nn["every"] == 5
    assert nn["searches"] == 5  # steps 0, 5, 10, 15 of 20, and the final embedding
    assert [h["file"] for h in nn["neighbours"]] == [store.files[h["id"]] for h in nn["neighbours"]]
    assert nn["neighbours"][0]["cosine"] >= nn["neighbours"][1]["cosine"]
    assert nn["final"] == pytest.approx(1 - (nn["neighbours"][0]["cosine"] + nn["neighbours"][1]["cosine"]) / 2,
                                        abs=1e-4)
    emb = load_file(out.with_suffix(".safetensors"))["image_embeds"]
    assert values["mahalanobis"]["final"] == pytest.approx(float(maha(store, emb)[0]), rel=1e-4)
    for name in ("nn", "mahalanobis", "text_cosine", "loss"):
        assert len(side["history"][name]) == 20, name
    # the loss per step is the OVI term plus the weighted constraint terms
    h = side["history"]
    assert h["loss"][3] == pytest.approx(1 - h["text_cosine"][3] + 0.5 * h["nn"][3] + 0.01 * h["mahalanobis"][3],
                                         rel=1e-5)


def test_gen_finds_the_newest_store_of_its_encoder_in_ovi_home(run_cli, tiny_gen_args, tmp_path, monkeypatch,
                                                               encoders, encoder_repo):
    from ovi_stats.store import write_store

    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))
    emb = encoders.encode_images(tiny_images(8, seed=1)).numpy()
    write_store(tmp_path / "home" / "stats" / "mine", emb, [f"{i}.png" for i in range(8)],
                encoder={"source": str(encoder_repo), "fingerprint": encoders.fingerprint()})
    out = tmp_path / "x.png"
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "--out", out, "-c", "mahalanobis")
    assert res.code == 0, res.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["models"]["stats"]["name"] == "mine"
    assert side["constraint_values"]["mahalanobis"]["weight"] == 0.009


def assert_one_line_error(res, *needles):
    assert res.code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovi: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("name", ["nn", "mahalanobis"])
def test_constraint_without_a_store_names_build_stats(run_cli, tiny_gen_args, tmp_path, monkeypatch, name):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "empty"))
    out = tmp_path / "x.png"
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "--out", out, "-c", name)
    assert_one_line_error(res, "no statistics store", "ovi build-stats")
    assert list(tmp_path.glob("x.*")) == []


def test_store_of_another_encoder_or_dimension_is_refused(run_cli, tiny_gen_args, tmp_path, encoders, encoder_repo):
    from ovi_stats.store import write_store

    rng = np.random.default_rng(0)
    other = write_store(tmp_path / "other-encoder", rng.normal(size=(10, 16)), [str(i) for i in range(10)],
                        encoder={"source": "some/other-clip", "fingerprint": "0123456789abcdef"})
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "-c", "nn", "--stats", other.path)
    assert_one_line_error(res, "0123456789abcdef", encoders.fingerprint(), "some/other-clip")
    wide = write_store(tmp_path / "other-dim", rng.normal(size=(10, 8)), [str(i) for i in range(10)],
                       encoder={"source": str(encoder_repo), "fingerprint": encoders.fingerprint()})
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "-c", "mahalanobis", "--stats", wide.path)
    assert_one_line_error(res, "dim 8", "dim 16")


@pytest.mark.parametrize("args, needles", [
    (["-c", "nope"], ["unknown constraint 'nope'", "mahalanobis", "nn"]),
    (["-c", "nn:abc"], ["malformed --constraint 'nn:abc'", "not a number"]),
    (["-c", "nn:"], ["malformed --constraint 'nn:'"]),
    (["-c", ":0.5"], ["malformed --constraint ':0.5'"]),
    (["-c", "nn:-1"], ["malformed --constraint 'nn:-1'", ">= 0"]),
    (["-c", "nn", "-c", "mahalanobis:nan"], ["malformed --constraint 'mahalanobis:nan'"]),
    (["-c", "nn", "--nn-k", "0"], ["--option nn.k must be >= 1"]),
    (["-c", "nn", "--nn-every", "0"], ["--option nn.every must be >= 1"]),
    (["-c", "nn", "--nn-k", "49"], ["--option nn.k=49 is more than the 48 images"]),
    (["-c", "nn", "--option", "nn.k=x"], ["--option nn.k: 'x' is not a valid int"]),
    (["-c", "nn", "--option", "nn.kk=1"], ["'nn' has no option 'kk'"]),
    (["-c", "nn", "--option", "nope.k=1"], ["no prior, constraint or decoder is named 'nope'"]),
    (["-c", "nn", "--option", "nn.k"], ["malformed --option 'nn.k'"]),
])
def test_constraint_usage_errors_are_one_line(run_cli, tiny_gen_args, tmp_path, store_dir, args, needles):
    out = tmp_path / "x.png"
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "--out", out, "--stats", store_dir, *args)
    assert_one_line_error(res, *needles)
    assert list(tmp_path.glob("x.*")) == []
