"""Bad input, bad plugins and interruptions through the real CLI (issue 12, items 3, 6, 7 and 8).

Each case was a traceback after the expensive work, a wrong result with exit 0, or a plugin taking
ovi down on the old main. Checks that must happen before any model loads use an encoder path that
does not exist: if the check came later, the error would be about the missing model instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch

from ovi_cli import hookimpl
from ovi_cli.api import Constraint, Prior, PriorOutput
from ovi_cli.plugins import load_registry, set_registry
from tests.helpers.reliability import one_line_error, snapshot


@pytest.fixture
def no_model(tmp_path):
    return ["--encoder-model", str(tmp_path / "no-such-model"), "--decoder-model", str(tmp_path / "no-such-model"),
            "--device", "cpu", "--quiet"]


@pytest.fixture
def afile(tmp_path):
    p = tmp_path / "afile"
    p.write_text("not a folder")
    return p


# ---- output locations, before any model loads --------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["gen", "x", "-o", "{afile}/x.png"], "is a file, not a folder"),
    (["gen", "x", "-o", "/proc/x.png"], "under /proc, a system pseudo-filesystem"),
    (["gen", "x", "-o", "."], "--out '.' is a folder; give a file name"),
    (["gen", "x", "-o", "{tmp}"], "is a folder; give a file name"),
    (["gen", "--prompts", "{prompts}", "-o", "{afile}"], "is a file, not a folder"),
    (["gen", "--prompts", "{prompts}", "-o", "{afile}/sub"], "is a file, not a folder"),
    (["compare", "x", "--priors", "textemb", "-o", "{afile}/sub"], "is a file, not a folder"),
    (["compare", "x", "--priors", "textemb", "-o", "/sys/x"], "under /sys"),
])
def test_output_location_problems_are_found_before_any_model_loads(run_cli, tmp_path, afile, no_model, args, needle):
    """Old main: `-o afile/x.png`, `-o /proc/x.png`, `-o .`, `--prompts F -o afile`, `compare -o afile/sub`
    were found after OVI and decoding ran, as tracebacks."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    args = [a.format(afile=afile, tmp=tmp_path, prompts=prompts) for a in args]
    before = snapshot(tmp_path)
    one_line_error(run_cli(*args, *no_model), needle)
    assert snapshot(tmp_path) == before


def test_a_sidecar_path_taken_by_a_folder_is_found_first(run_cli, tmp_path, no_model):
    (tmp_path / "x.json").mkdir()
    one_line_error(run_cli("gen", "x", "-o", tmp_path / "x.png", *no_model), "x.json' is a folder")


def test_toy_commands_check_their_folders_and_numbers_first(run_cli, tmp_path, afile):
    """Old main: `ovi toy dataset afile` raised NotADirectoryError; `ovi toy train --threads -1` a RuntimeError."""
    before = snapshot(tmp_path)
    one_line_error(run_cli("toy", "dataset", afile), "is a file, not a folder")
    one_line_error(run_cli("toy", "dataset", afile / "sub"), "is a file, not a folder")
    one_line_error(run_cli("toy", "train", "--threads", "-1", "-o", tmp_path / "t"), "--threads must be >= 1")
    one_line_error(run_cli("toy", "train", "--seed", str(2**64 - 2), "-o", tmp_path / "t"), "exceeds 2**64-1")
    one_line_error(run_cli("eval", "toy", "--seed", "99999999999999999999", "-o", tmp_path / "e"),
                   "--seed must be <= 18446744073709551615")
    one_line_error(run_cli("toy", "eval", "--steps", "0", "-o", tmp_path / "e"), "--steps must be >= 1")
    one_line_error(run_cli("eval", "toy", "-o", afile), "is a file, not a folder")
    assert snapshot(tmp_path) == before


# ---- numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, needle", [
    (["--seed", "99999999999999999999"], "--seed must be <= 18446744073709551615"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--height", "100000", "--width", "100000"], "--height must be <= 4096"),
    (["--width", "0"], "--width must be >= 1"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
    (["--min-delta", "nan"], "--min-delta must be a finite number"),
    (["--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
    (["--steps", "1000000000"], "--steps must be <= 1000000"),
    (["--tokens", "0"], "--tokens must be >= 1"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["-c", "nn:1e308"], "the weight must be <= 1e+06"),
    (["-c", "nn:nan"], "weight must be a finite number"),
    (["--option", "nn.k=inf"], "not a valid int"),
])
def test_bad_numbers_are_one_line_before_any_model_loads(run_cli, tmp_path, no_model, flags, needle):
    """Old main: a huge seed was `Overflow when unpacking long long`; 100000 x 100000 a MemoryError;
    `--lr inf` a black PNG with NaN in the sidecar; `--min-delta nan` stopped every prompt at step 10;
    `-c nn:1e308` ended in a message about --nn-k."""
    one_line_error(run_cli("gen", "x", "-o", tmp_path / "x.png", *flags, *no_model), needle)
    assert list(tmp_path.iterdir()) == []


def test_seeds_of_a_prompt_file_must_all_fit(run_cli, tmp_path, no_model):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\n")
    one_line_error(run_cli("gen", "--prompts", prompts, "--seed", str(2**64 - 2), "-o", tmp_path / "o", *no_model),
                   "with 3 prompts the last seed")
    one_line_error(run_cli("compare", "x", "--seed", str(2**64), "-o", tmp_path / "c", *no_model), "--seed must be <=")


def test_largest_seed_works_end_to_end(run_cli, tmp_path, tiny_gen_args):
    out = tmp_path / "s.png"
    res = run_cli("gen", "x", *tiny_gen_args, "--seed", str(2**64 - 1), "--steps", "2", "-o", out)
    assert res.code == 0, res.stderr
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 2**64 - 1


def test_a_bom_in_a_prompt_file_is_dropped(run_cli, tmp_path, tiny_gen_args):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes("\ufeffa red cube\n".encode())
    res = run_cli("gen", "--prompts", prompts, *tiny_gen_args, "--decoder", "embeds", "--steps", "2",
                  "-o", tmp_path / "o")
    assert res.code == 0, res.stderr
    (side,) = (tmp_path / "o").glob("*.json")
    assert json.loads(side.read_text())["prompt"] == "a red cube"


# ---- plugins: wrong outputs, failures at start, collisions -------------------------------------
class _Scalar(Constraint):
    name = "scalar"

    def term(self, embeds, step, rows):
        return embeds.pow(2).sum()  # [] instead of [B]


class _Detached(Constraint):
    name = "detached"

    def term(self, embeds, step, rows):
        return embeds.detach().norm(dim=-1)


class _NanTerm(Constraint):
    name = "nanterm"

    def term(self, embeds, step, rows):
        return embeds.norm(dim=-1) * float("nan")


class _Numpy(Constraint):
    name = "numpyterm"

    def term(self, embeds, step, rows):
        return embeds.detach().norm(dim=-1).numpy()


class _InitFails(Constraint):
    name = "initfails"

    def __init__(self, context):
        raise RuntimeError("cannot find my data file")

    def term(self, embeds, step, rows):
        raise AssertionError


class _InitExits(_InitFails):
    name = "initexits"

    def __init__(self, context):
        sys.exit(3)


class _WrongShapePrior(Prior):
    name = "wrongshape"

    def embed(self, job):
        return PriorOutput(torch.zeros(len(job.prompts), 5), [{} for _ in job.prompts])


class _NanPrior(Prior):
    name = "nanprior"

    def embed(self, job):
        return PriorOutput(job.text.text_embeds * float("nan"), [{} for _ in job.prompts])


class _BadPlugins:
    @hookimpl
    def register_constraints(self, register):
        for cls in (_Scalar, _Detached, _NanTerm, _Numpy, _InitFails, _InitExits):
            register(cls)

    @hookimpl
    def register_priors(self, register):
        register(_WrongShapePrior)
        register(_NanPrior)


class _Impostor(Constraint):
    name = "nn"

    def term(self, embeds, step, rows):
        return embeds.norm(dim=-1)


class _Collides:
    @hookimpl
    def register_constraints(self, register):
        register(_Impostor)


class _Broken:
    @hookimpl
    def register_constraints(self, register):
        raise ImportError("No module named 'somedep'")


class _Commands:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("gen")
        def fake_gen() -> None:
            print("hijacked")


class _ExitInCommands:
    @hookimpl
    def register_commands(self, cli):
        raise SystemExit(3)


class _Boom:
    @hookimpl
    def register_commands(self, cli):
        @cli.command("boom")
        def boom() -> None:
            raise ValueError("kaput")

        @cli.command("hang")
        def hang() -> None:
            raise KeyboardInterrupt


@pytest.fixture
def plugins():
    def use(*extra):
        set_registry(load_registry(extra=list(extra)))

    yield use
    set_registry(None)


@pytest.mark.parametrize("flags, needles", [
    (["-c", "scalar"], ["constraint 'scalar' (tests.test_reliability_cli)",
                        "term() returned a float32 tensor of shape []", "shape [1]"]),
    (["-c", "detached"], ["constraint 'detached'", "without gradient"]),
    (["-c", "nanterm"], ["constraint 'nanterm'", "NaN or infinite values at the first OVI step"]),
    (["-c", "numpyterm"], ["constraint 'numpyterm'", "term() returned a ndarray"]),
    (["-c", "initfails"], ["constraint 'initfails' (tests.test_reliability_cli) failed to start",
                           "RuntimeError: cannot find my data file"]),
    (["-c", "initexits"], ["constraint 'initexits'", "failed to start: SystemExit: 3"]),
    (["--prior", "wrongshape"], ["prior 'wrongshape'", "float32 tensor of shape [1, 5]",
                                 "expected a float tensor [1, 16]"]),
    (["--prior", "nanprior"], ["prior 'nanprior'", "NaN or infinite image embeddings for prompt 1"]),
])
def test_a_plugins_wrong_output_is_one_line_naming_it(run_cli, plugins, tiny_gen_args, tmp_path, flags, needles):
    """Old main: a scalar term was a 41-line traceback inside plugins/priors.py, an exception in
    __init__ a raw traceback, a detached term silently accepted, a NaN a black image."""
    plugins(("bad", _BadPlugins()))
    res = run_cli("gen", "a cat", *tiny_gen_args, "--steps", "3", "-o", tmp_path / "x.png", *flags)
    one_line_error(res, *needles)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_mentions_the_plugin_that_failed_to_load(run_cli, plugins, tiny_gen_args, tmp_path):
    plugins(("broken", _Broken()))
    one_line_error(run_cli("gen", "x", *tiny_gen_args, "-c", "broken", "-o", tmp_path / "x.png"),
                   "unknown constraint 'broken'", "plugin 'broken' from <in-process> failed to load",
                   "No module named 'somedep'")


def test_a_plugin_cannot_replace_a_builtin_or_a_core_command(run_cli, plugins):
    """Old main: a plugin named `nn` replaced the built-in (which was reported as the failure), and a
    plugin could replace `gen`."""
    plugins(("impostor", _Collides()), ("hijack", _Commands()))
    from ovi_cli.plugins import get_registry

    reg = get_registry()
    assert reg.entries["constraint"]["nn"].package == "ovi"
    (failure,) = [f for f in reg.failures if f.plugin == "impostor"]
    assert "constraint 'nn' from <in-process> refused" in failure.error and "already registered by ovi" in failure.error
    res = run_cli("gen", "--help")
    assert res.code == 0 and "hijacked" not in res.stdout and "--prompts" in res.stdout
    assert "plugin 'hijack' from <in-process> tried to replace the command(s) gen" in res.stderr


def test_exits_in_plugins_are_contained(run_cli, plugins, monkeypatch):
    """Old main: `sys.exit` at a plugin's import killed every command, `--version` included, and a
    SystemExit in register_commands exited 3."""
    import ovi_cli.plugins as plugin_mod

    real = plugin_mod._entry_points

    def with_exiting_plugin():
        ep = EntryPoint("exits", "tests.helpers.exits_on_import", "ovi")
        return real() + [ep]

    monkeypatch.setattr(plugin_mod, "_entry_points", with_exiting_plugin)
    plugins(("exitcmds", _ExitInCommands()))
    res = run_cli("--version")
    assert res.code == 0 and res.stdout.startswith("ovi "), res.stderr
    assert "plugin 'exitcmds' from <in-process> failed to add its commands: SystemExit: 3" in res.stderr
    data = json.loads(run_cli("plugins", "--json").stdout)
    assert any(f["plugin"] == "exits" and "SystemExit" in f["error"] for f in data["failures"])


def test_unexpected_errors_and_ctrl_c_are_one_line(run_cli, plugins, monkeypatch):
    plugins(("boom", _Boom()))
    monkeypatch.delenv("OVI_DEBUG", raising=False)
    res = run_cli("boom")
    assert res.code == 1 and res.stderr == ("ovi: error: unexpected error: ValueError: kaput "
                                            "(set OVI_DEBUG=1 for the traceback)\n")
    monkeypatch.setenv("OVI_DEBUG", "1")
    res = run_cli("boom")
    assert res.code == 1 and "Traceback" in res.stderr and "ValueError: kaput" in res.stderr
    monkeypatch.delenv("OVI_DEBUG")
    res = run_cli("hang")
    assert res.code == 130 and res.stderr == "ovi: error: interrupted; files of unfinished results were not written\n"


def test_ctrl_c_while_building_the_app_is_one_line(run_cli, monkeypatch):
    import ovi_cli.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(ovi_cli.cli, "build_app", interrupted)
    res = run_cli("gen", "x")
    assert res.code == 130 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


CTRL_C_DURING_IMPORT = textwrap.dedent("""
    import builtins, os, signal, sys
    real = builtins.__import__
    def imp(name, *args, **kwargs):
        if name == "ovi_cli.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return real(name, *args, **kwargs)
    builtins.__import__ = imp
    from ovi_cli.entry import main
    sys.argv = ["ovi", "--version"]
    sys.exit(main())
""")


def test_ctrl_c_while_ovi_is_still_importing_is_one_line():
    """Old main: Ctrl-C during start-up (importing Typer, Rich and the commands) printed a
    KeyboardInterrupt traceback."""
    res = subprocess.run([sys.executable, "-c", CTRL_C_DURING_IMPORT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 130 and "Traceback" not in res.stderr
    assert res.stderr == "ovi: error: interrupted; files of unfinished results were not written\n"


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_a_real_run_is_one_line(tmp_path):
    """SIGINT at 0.1 .. 3 s into `ovi gen --model toy`: never a traceback (the first ~0.1 s, while the
    interpreter itself starts, are Python's)."""
    import time

    exe = os.path.join(os.path.dirname(sys.executable), "ovi")
    for delay in (0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0, 3.0):
        p = subprocess.Popen([exe, "gen", "a red circle", "--model", "toy", "-o", str(tmp_path / "x.png"), "-q"],
                             stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1]
        assert "Traceback" not in err, (delay, err)
        assert p.returncode in (0, 130), (delay, p.returncode, err)


def test_help_and_version_do_not_import_torch():
    code = ("import sys\nfrom ovi_cli.cli import main\nfor args in (['--help'], ['--version'], ['gen', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "False", res.stderr


# ---- faults while writing results -----------------------------------------------------------------
DISK_FULL_GEN = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (500, 500))
    from ovi_cli.entry import main
    sys.argv = ["ovi"] + sys.argv[1:]
    sys.exit(main())
""")


def test_a_write_failure_in_gen_is_one_line_and_leaves_no_file(tmp_path, encoder_repo):
    """Old main: gen raised an OSError traceback when its outputs could not be written. Here the OS
    refuses every write past 500 bytes (RLIMIT_FSIZE), like a full disk."""
    out = tmp_path / "o" / "x.png"
    res = subprocess.run([sys.executable, "-c", DISK_FULL_GEN, "gen", "a cat", "--encoder-model", str(encoder_repo),
                          "--decoder", "embeds", "--steps", "3", "--device", "cpu", "--quiet", "-o", str(out)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("ovi: error: cannot write ") and "File too large" in res.stderr
    assert res.stderr.count("\n") == 1
    assert list((tmp_path / "o").iterdir()) == []


def test_no_nan_reaches_json_even_from_a_per_step_history(tmp_path):
    from ovi_cli.outputs import finite_or_none, json_text

    side = {"text_cosine": 0.5, "history": finite_or_none({"nn": [0.1, float("nan")]})}
    assert json.loads(json_text(side))["history"]["nn"] == [0.1, None]


def test_compare_offline_advises_a_flag_compare_accepts(run_cli, tmp_path, encoder_repo, decoder_repo):
    """Old main: compare, offline, advised `--prior-model` (a gen flag) instead of its own."""
    res = run_cli("compare", "x", "--priors", "textemb,eclipse", "--encoder-model", encoder_repo,
                  "--decoder-model", decoder_repo, "--decoder", "embeds", "-q", "-o", tmp_path / "c")
    msg = one_line_error(res, "--option eclipse.model")
    assert "--prior-model" not in msg
    res = run_cli("compare", "x", "--priors", "textemb,eclipse", "--encoder-model", encoder_repo,
                  "--decoder", "embeds", "-q", "-o", tmp_path / "c", "--option", f"eclipse.model={tmp_path / 'e'}")
    one_line_error(res, str(tmp_path / "e"))

