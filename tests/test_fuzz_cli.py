"""Property-based fuzz (hypothesis) of the CLI's flags and of store files (issue 12, item 9).

Whatever the input, a failing run must: print exactly one `ovi: error:` line on stderr, exit
non-zero, show no traceback, leave nothing behind, and touch nothing outside `--out`. The fast
fuzzes point at a model that does not exist, so no model ever loads (a run whose flags all pass
ends in the one-line "model not available" error: the invariants still hold); the slow one runs
tiny real models with flags that may all be valid, and then also checks what a success writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.reliability import one_line_error, snapshot

# CI: 40 fixed examples per fuzz; OVI_FUZZ_EXAMPLES=N runs N random ones (a longer hunt)
_LONG = int(os.environ.get("OVI_FUZZ_EXAMPLES", "0"))
FAST = settings(max_examples=_LONG or 40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=not _LONG, database=None)
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---- values a hostile user types ---------------------------------------------------------------
EDGE_INTS = [0, -1, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(min_value=-(2**70), max_value=2**70)).map(str)
floats = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "1e-320", "NaN", "Infinity"]),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
junk = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
value = st.one_of(ints, floats, junk)

GEN_NUMERIC = ["--steps", "--tokens", "--lr", "--weight-decay", "--patience", "--min-delta", "--seed", "--height",
               "--width", "--decoder-steps", "--guidance-scale", "--batch", "--nn-k", "--nn-every", "--prior-steps",
               "--prior-guidance"]
gen_flags = st.lists(st.tuples(st.sampled_from(GEN_NUMERIC), value), min_size=1, max_size=4)
constraints = st.lists(st.tuples(st.sampled_from(["nn", "mahalanobis", "nope", ""]), st.one_of(st.none(), floats)),
                       max_size=2).map(lambda cs: [f"{n}:{w}" if w is not None else n for n, w in cs])
BUILD_NUMERIC = ["--batch-size", "--limit", "--workers", "--checkpoint-every", "--shard", "--index"]
build_flags = st.lists(st.tuples(st.sampled_from(BUILD_NUMERIC), value), min_size=1, max_size=4)


def _out_place(kind: str, root: Path) -> Path:
    """An output location of some kind, inside the sandbox `root`."""
    (root / "afile").write_text("a file")
    (root / "adir").mkdir(exist_ok=True)
    return {"fresh": root / "new" / "x.png", "file-parent": root / "afile" / "x.png", "dir": root / "adir",
            "dot": Path("."), "proc": Path("/proc/ovi-fuzz/x.png"), "deep": root / "a" / "b" / "c" / "x.png",
            "existing-file": root / "afile"}[kind]


out_kinds = st.sampled_from(["fresh", "file-parent", "dir", "dot", "proc", "deep", "existing-file"])


class Sandbox:
    """A fresh folder per example (hypothesis reuses the test's fixtures), with a sentinel beside it."""

    def __enter__(self) -> Path:
        self.root = Path(tempfile.mkdtemp(prefix="ovi-fuzz-"))
        (self.root / "sentinel").mkdir()
        (self.root / "sentinel" / "keep.txt").write_text("untouched")
        (self.root / "sentinel" / "link").symlink_to(self.root / "sentinel" / "keep.txt")
        self.cwd = os.getcwd()
        os.chdir(self.root)
        return self.root

    def __exit__(self, *exc) -> None:
        os.chdir(self.cwd)
        shutil.rmtree(self.root, ignore_errors=True)


def _check_failure(res, root: Path, before: dict) -> None:
    one_line_error(res)
    assert snapshot(root) == before, "a failed run left or changed files"


@FAST
@given(flags=gen_flags, cons=constraints, where=out_kinds)
def test_fuzz_gen_flags(run_cli, flags, cons, where):
    with Sandbox() as root:
        out = _out_place(where, root)
        before = snapshot(root)
        args = ["gen", "a red circle", "-o", str(out), "--encoder-model", str(root / "no-model"),
                "--decoder-model", str(root / "no-model"), "--decoder", "embeds", "--quiet"]
        for flag, v in flags:
            args += [flag, v]
        for c in cons:
            args += ["-c", c]
        _check_failure(run_cli(*args), root, before)


@FAST
@given(flags=build_flags, where=st.sampled_from(["fresh", "dir", "existing-file", "file-parent", "source", "proc"]),
       force=st.booleans(), resume=st.booleans())
def test_fuzz_build_stats_flags(run_cli, flags, where, force, resume):
    with Sandbox() as root:
        src = root / "imgs"
        src.mkdir()
        (src / "a.png").write_bytes(b"\x89PNG not really")
        (root / "adir").mkdir()
        (root / "adir" / "user.txt").write_text("mine")
        (root / "afile").write_text("a file")
        out = {"fresh": root / "store", "dir": root / "adir", "existing-file": root / "afile", "source": src,
               "file-parent": root / "afile" / "store", "proc": Path("/proc/ovi-fuzz")}[where]
        before = snapshot(root)
        args = ["build-stats", str(src), "--out", str(out), "--encoder-model", str(root / "no-model"), "--quiet"]
        args += ["--force"] * force + ["--resume"] * resume
        for flag, v in flags:
            args += [flag, v]
        _check_failure(run_cli(*args), root, before)


# ---- store files -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    from ovi_stats.store import write_store

    x = (np.random.default_rng(0).normal(size=(20, 8)) + 0.5).astype(np.float32)
    return write_store(tmp_path_factory.mktemp("pristine") / "s", x, [f"{i}.png" for i in range(20)],
                       encoder={"source": "fuzz", "fingerprint": "f"}).path


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=False), st.text(max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children,
                                                                                 max_size=3)),
    max_leaves=6)
META_KEYS = ["count", "dim", "format_version", "encoder", "index", "skipped", "name", "created", "source_dir"]
mutations = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(["meta.json", "moments.safetensors", "embeddings.npy", "files.json",
                                                  "index.faiss", "ovi-store.json"])),
    st.tuples(st.just("truncate"), st.sampled_from(["moments.safetensors", "embeddings.npy", "index.faiss",
                                                    "files.json", "meta.json"]), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.sampled_from(["moments.safetensors", "embeddings.npy", "index.faiss"]),
              st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("meta"), st.sampled_from(META_KEYS), json_values),
    st.tuples(st.just("json"), st.sampled_from(["meta.json", "files.json", "ovi-store.json"]), json_values),
)


def _mutate(store: Path, m: tuple) -> None:
    kind, name = m[0], m[1]
    p = store / ("meta.json" if kind == "meta" else name)
    if not p.exists() and kind != "json":
        return
    if kind == "delete":
        p.unlink()
    elif kind == "truncate":
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * m[2])])
    elif kind == "flip":
        data = bytearray(p.read_bytes())
        data[min(int(len(data) * m[2]), len(data) - 1)] = m[3]
        p.write_bytes(bytes(data))
    elif kind == "meta":
        try:
            meta = json.loads(p.read_text())
        except ValueError:
            return
        if isinstance(meta, dict):
            meta[name] = m[2]
            p.write_text(json.dumps(meta))
    else:
        p.write_text(json.dumps(m[2]))


@FAST
@given(muts=st.lists(mutations, min_size=1, max_size=3))
def test_fuzz_store_files(run_cli, pristine, muts, monkeypatch):
    """A damaged store: `stats info` is one line or a valid answer, `stats list` always answers, and
    the nearest-neighbour search (what -c nn uses) works or raises a one-line OviError."""
    from ovi_cli.errors import OviError
    from ovi_stats.store import open_store

    with Sandbox() as root:
        monkeypatch.setenv("OVI_HOME", str(root / "home"))
        store = root / "home" / "stats" / "s"
        shutil.copytree(pristine, store)
        for m in muts:
            _mutate(store, m)
        before = snapshot(root)
        res = run_cli("stats", "info", store, "--json")
        if res.code == 0:
            info = json.loads(res.stdout)
            assert math.isfinite(info["mean_norm"]) and info["count"] >= 2
            try:
                s = open_store(store)
                s.search(np.ones((1, s.dim), dtype=np.float32), 3)
            except OviError as exc:
                assert "\n" not in str(exc)
        else:
            line = one_line_error(res)
            assert "bad statistics store" in line or "is not a statistics store" in line, line
        listed = run_cli("stats", "list", "--json")
        assert listed.code == 0 and "Traceback" not in listed.stderr
        assert len([s for s in json.loads(listed.stdout) if not s["preset"]]) == (1 if res.code == 0 else 0)
        assert snapshot(root) == before


@pytest.mark.slow
@SLOW
@given(flags=st.lists(st.tuples(st.sampled_from(["--steps", "--tokens", "--lr", "--seed", "--patience",
                                                 "--min-delta", "--weight-decay"]),
                                st.one_of(st.sampled_from(["1", "2", "3", "0.01", "0", "1e-3"]), value)),
                      max_size=3),
       where=out_kinds)
def test_fuzz_gen_on_tiny_models(run_cli, encoder_repo, flags, where):
    """Flags that may all be valid, on tiny real models: a success writes only its three result
    files, under --out, as valid JSON without NaN; a failure is one line and writes nothing."""
    with Sandbox() as root:
        out = _out_place(where, root)
        before = snapshot(root)
        args = ["gen", "a red circle", "-o", str(out), "--encoder-model", str(encoder_repo), "--decoder", "embeds",
                "--steps", "2", "--device", "cpu", "--quiet"]
        for flag, v in flags:
            args += [flag, v]
        res = run_cli(*args)
        if res.code != 0:
            _check_failure(res, root, before)
            return
        after = snapshot(root)
        new = sorted(set(after) - set(before))
        changed = [k for k in before if before[k] != after.get(k)]
        assert changed == [] or changed == [str(Path(os.path.relpath(out.parent, root)))], changed
        side = out.with_suffix(".json") if out.suffix == ".png" else out.with_name(out.name + ".json")
        json.loads(side.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert all((root / n).resolve().is_relative_to(root.resolve()) for n in new)


# ---- issue 22: bench generate / score / table, stats merge, the plugin hooks --------------------
# CI: a fixed, small budget each (the whole file stays well under a minute); the marked `slow`
# variants below run many more examples.
SMALL = settings(max_examples=_LONG or 8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                 derandomize=not _LONG, database=None)
LARGE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                 database=None)

BENCH_NUMERIC = ["-k", "--limit", "--seed", "--steps", "--batch", "--shard", "--categories", "--ovi-per"]
bench_flags = st.lists(st.tuples(st.sampled_from(BENCH_NUMERIC), value), min_size=1, max_size=4)
prompt_lines = st.lists(st.one_of(st.sampled_from(["...and a blue ball", ".", "..", "a_b", "a/b", "", "#", "-",
                                                   "a red star", "x" * 300]), junk), max_size=4)


def _bench_generate_failure(run_cli, flags, lines, use_file):
    with Sandbox() as root:
        args = ["bench", "generate", "toy", "--out", str(root / "run"), "--encoder-model", str(root / "no-model"),
                "--decoder", "embeds", "--quiet"]
        if use_file:
            (root / "p.txt").write_text("\n".join(lines), encoding="utf-8")
            args += ["--prompt-file", f"single={root / 'p.txt'}"]
        for flag, v in flags:
            args += [flag, v]
        before = snapshot(root)
        _check_failure(run_cli(*args), root, before)


@SMALL
@given(flags=bench_flags, lines=prompt_lines, use_file=st.booleans())
def test_fuzz_bench_generate_flags_and_prompt_files(run_cli, flags, lines, use_file):
    """No model exists: every run fails, in one line, having written nothing."""
    _bench_generate_failure(run_cli, flags, lines, use_file)


@pytest.mark.slow
@LARGE
@given(flags=bench_flags, lines=prompt_lines, use_file=st.booleans())
def test_fuzz_bench_generate_many(run_cli, flags, lines, use_file):
    _bench_generate_failure(run_cli, flags, lines, use_file)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A scored one-prompt toy run (2 images, 2 OVI steps): what bench score and table are fuzzed on."""
    from ovi_cli.cli import main

    run = tmp_path_factory.mktemp("toy-run") / "run"
    for args in (["bench", "generate", "toy", "--model", "toy", "--out", str(run), "-k", "2", "--limit", "1",
                  "--steps", "2", "--categories", "single", "--quiet"],
                 ["bench", "score", str(run), "--scorers", "oracle", "--quiet"]):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, exc.code
    return run


run_mutations = st.one_of(
    st.tuples(st.just("sample"), st.sampled_from(["truncate", "junk", "delete", "folder", "empty"]), st.floats(0, 1)),
    st.tuples(st.just("json"), st.sampled_from(["bench.json", "scores.json"]), json_values),
    st.tuples(st.just("meta"), st.sampled_from(["bench.json", "scores.json"]),
              st.sampled_from(["format", "categories", "settings", "benchmark", "scores", "name"]), json_values),
    st.tuples(st.just("bytes"), st.sampled_from(["bench.json", "scores.json", "single/records.jsonl",
                                                 "single/scores/oracle.jsonl"]), st.binary(max_size=20)),
)


def _mutate_run(run: Path, m: tuple) -> None:
    if m[0] == "sample":
        samples = sorted((run / "single" / "samples").glob("*.png"))
        if not samples:
            return
        p = samples[0]
        if m[1] == "truncate":
            p.write_bytes(p.read_bytes()[: int(p.stat().st_size * m[2])])
        elif m[1] == "junk":
            p.write_bytes(b"not a png at all")
        elif m[1] == "delete":
            p.unlink()
        elif m[1] == "folder":
            p.unlink()
            p.mkdir()
        else:
            p.write_bytes(b"")
    elif m[0] == "json":
        (run / m[1]).write_text(json.dumps(m[2]))
    elif m[0] == "meta":
        p = run / m[1]
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            return
        if isinstance(doc, dict):
            doc[m[2]] = m[3]
            p.write_text(json.dumps(doc))
    else:
        p = run / m[1]
        if p.parent.is_dir():
            p.write_bytes(m[2])


def _score_and_table(run_cli, toy_run, muts, batch):
    with Sandbox() as root:
        run = root / "run"
        shutil.copytree(toy_run, run, symlinks=True)
        for m in muts:
            _mutate_run(run, m)
        (root / "sentinel" / "ok").write_text("x")
        res = run_cli("bench", "score", run, "--scorers", "oracle", "--batch-size", batch, "--quiet")
        if res.code != 0:
            one_line_error(res)
        else:
            assert "Traceback" not in res.stderr
            json.loads((run / "scores.json").read_text())
        for fmt in ([], ["--json"], ["--csv"], ["--markdown"]):
            res = run_cli("bench", "table", run, *fmt)
            if res.code != 0:
                one_line_error(res)
            else:
                assert "Traceback" not in res.stderr and res.stdout.strip()
                if fmt == ["--json"]:
                    json.loads(res.stdout)
        assert (root / "sentinel" / "keep.txt").read_text() == "untouched"


@SMALL
@given(muts=st.lists(run_mutations, min_size=1, max_size=2), batch=st.sampled_from(["1", "2", "16"]))
def test_fuzz_bench_score_and_table_on_damaged_runs(run_cli, toy_run, muts, batch):
    """A run damaged by hand or by a crash: scoring and every table format either answer or fail in
    one line; nothing outside the run is touched."""
    _score_and_table(run_cli, toy_run, muts, batch)


@pytest.mark.slow
@LARGE
@given(muts=st.lists(run_mutations, min_size=1, max_size=3), batch=st.sampled_from(["1", "2", "3", "16", "0", "-1"]))
def test_fuzz_bench_score_and_table_many(run_cli, toy_run, muts, batch):
    _score_and_table(run_cli, toy_run, muts, batch)


merge_parts = st.lists(st.sampled_from(["a", "b", "a-again", "a-link", "a-copy", "overlap", "other-encoder",
                                        "damaged", "missing", "not-a-store"]), min_size=1, max_size=4)


def _merge(run_cli, pristine, parts, where):
    from ovi_stats.store import StatsStore, write_store

    with Sandbox() as root:
        x = (np.random.default_rng(1).normal(size=(10, 8)) + 0.5).astype(np.float32)
        stores = {"a": root / "a", "b": root / "b"}
        write_store(stores["a"], x, [f"a{i}.png" for i in range(10)], encoder={"source": "fuzz", "fingerprint": "f"},
                    source_dir="/imgs")
        write_store(stores["b"], x * 2, [f"b{i}.png" for i in range(10)],
                    encoder={"source": "fuzz", "fingerprint": "f"}, source_dir="/imgs")
        write_store(root / "overlap", x[:3], [f"a{i}.png" for i in range(3)],
                    encoder={"source": "fuzz", "fingerprint": "f"}, source_dir="/imgs")
        write_store(root / "other-encoder", x, [f"c{i}.png" for i in range(10)],
                    encoder={"source": "other", "fingerprint": "g"})
        shutil.copytree(stores["a"], root / "a-copy")
        (root / "a-link").symlink_to(stores["a"])
        shutil.copytree(stores["a"], root / "damaged")
        (root / "damaged" / "embeddings.npy").write_bytes(b"junk")
        (root / "not-a-store").mkdir()
        paths = [root / ("a" if p == "a-again" else p) for p in parts]
        out = {"fresh": root / "m", "existing-store": stores["b"], "file": root / "sentinel" / "keep.txt",
               "proc": Path("/proc/ovi-fuzz")}[where]
        before = snapshot(root)
        res = run_cli("stats", "merge", *paths, "--out", out, "--json", "--quiet")
        if res.code != 0:
            _check_failure(res, root, before)
            return
        merged = StatsStore(out)
        distinct = {os.path.realpath(p) for p in paths}
        assert len(distinct) == len(paths) and set(parts) <= {"a", "b"}, parts  # only a and b merge
        assert merged.count == 10 * len(paths) and json.loads(res.stdout)["count"] == merged.count


@SMALL
@given(parts=merge_parts, where=st.sampled_from(["fresh", "existing-store", "file", "proc"]))
def test_fuzz_stats_merge(run_cli, pristine, parts, where):
    """Only distinct stores of one encoder that share no image merge, and every image counts once;
    anything else is one line and writes nothing."""
    _merge(run_cli, pristine, parts, where)


@pytest.mark.slow
@LARGE
@given(parts=merge_parts, where=st.sampled_from(["fresh", "existing-store", "file", "proc"]))
def test_fuzz_stats_merge_many(run_cli, pristine, parts, where):
    _merge(run_cli, pristine, parts, where)


HOOKS_FUZZED = ["register_priors", "register_scorers", "register_benchmarks", "register_models",
                "register_constraints", "register_decoders"]
hook_behaviours = st.one_of(
    st.sampled_from(["ValueError('bad')", "SystemExit(0)", "SystemExit(3)", "RecursionError()", "TypeError()",
                     "OSError(28, 'No space left on device')", "MemoryError()", "GeneratorExit()"]).map(
        lambda e: ("raise", e)),
    st.tuples(st.just("name"), st.one_of(junk, st.sampled_from(["..", ".", "../x", "a/b", ".hidden", "ok-name",
                                                                "nul\x00", "é"]))),
)


def _hooks(run_cli, hook, behaviour):
    import types

    from ovi_cli.checks import check_path_name
    from ovi_cli.errors import OviError
    from ovi_cli.plugins import HOOKS, PATH_NAMED, load_registry, set_registry

    kind = {v: k for k, v in HOOKS.items()}[hook]
    base = {"prior": "Prior", "scorer": "Scorer", "benchmark": "Benchmark", "model": "ModelPreset",
            "constraint": "Constraint", "decoder": "Decoder"}[kind]
    if behaviour[0] == "raise":
        body = f"    raise {behaviour[1]}\n"
    else:
        body = f"    register(type('C', (api.{base},), {{'name': {behaviour[1]!r}, 'categories': ('c',)}}))\n"
    module = types.ModuleType("fuzzhook")
    exec(f"from ovi_cli import hookimpl, api\n\n@hookimpl\ndef {hook}(register):\n{body}",  # noqa: S102
         module.__dict__)
    reg = load_registry(extra=[("fuzzhook", module)], third_party=False)
    for f in reg.failures:
        if f.plugin == "fuzzhook":
            assert f.error.startswith(f"{hook}: ") and "\n" not in f.error, f.error
    for name in reg.names(kind):
        if kind in PATH_NAMED:
            try:
                check_path_name(name, kind)
            except OviError:
                pytest.fail(f"{kind} {name!r} registered though it is no file name")
    set_registry(reg)
    try:
        for args in (["plugins", "--json"], ["plugins"], ["--help"]):
            res = run_cli(*args)
            assert res.code == 0 and "Traceback" not in res.stderr, (args, res.stderr)
        failures = json.loads(run_cli("plugins", "--json").stdout)["failures"]
        assert all(f["error"].startswith(f"{hook}: ") for f in failures if f["plugin"] == "fuzzhook")
    finally:
        set_registry(None)


@SMALL
@given(hook=st.sampled_from(HOOKS_FUZZED), behaviour=hook_behaviours)
def test_fuzz_plugin_hooks(run_cli, hook, behaviour):
    """A plugin hook that raises anything (SystemExit included) or registers any name: ovi still
    starts, lists the failure by plugin and hook, and never registers a scorer or benchmark whose
    name is no plain file name."""
    _hooks(run_cli, hook, behaviour)


@pytest.mark.slow
@LARGE
@given(hook=st.sampled_from(HOOKS_FUZZED), behaviour=hook_behaviours)
def test_fuzz_plugin_hooks_many(run_cli, hook, behaviour):
    _hooks(run_cli, hook, behaviour)
