"""Runs are library objects (issue 18, items 1-3): `ovi gen --prompts`, `ovi bench generate` and the toy
evaluation from Python behave as the CLI; one resume policy; the run flags and the plugins' flags
declared once.

The runs use the shipped toy world (`--model toy`, offline, CPU) with a few OVI steps.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ovi_cli.errors import OviError
from ovi_cli.reporter import Reporter
from ovi_cli.resume import CLASH, NEW, REDO, SKIP, check_resume, resume_action
from ovi_cli.settings import GenSettings

PROMPTS = "a red circle\na green triangle\na blue square\n"


class Recorder(Reporter):
    """A Reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counted: list[tuple[str, int | None]] = []
        self.advanced = 0

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append("warning: " + message)

    def start(self, label: str, total: int | None) -> None:
        self.counted.append((label, total))

    def advance(self, done: int = 1, info: str = "") -> None:
        self.advanced += done


def _toy(**given) -> GenSettings:
    from ovi_cli.presets import apply_model

    return apply_model(GenSettings(**given), "toy", set(given))


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


# ---- 1. runs from Python are the CLI's runs -------------------------------------------------------
def test_gen_prompts_run_from_python_is_the_cli_and_resumes(run_cli, tmp_path):
    from ovi_cli.gen_run import GenRun

    prompts = tmp_path / "p.txt"
    prompts.write_text(PROMPTS)
    cli = tmp_path / "cli"
    res = run_cli("gen", "--prompts", prompts, "--model", "toy", "--steps", "3", "--batch", "2", "--seed", "5",
                  "-o", cli, "--quiet")
    assert res.code == 0, res.stderr

    lib = tmp_path / "lib"
    run = GenRun(_toy(steps=3, batch=2, seed=5), prompts_file=prompts, out=lib)
    assert run.plan() == [0, 1, 2]
    sidecars = run.run()
    assert [s["prompt"] for s in sidecars] == PROMPTS.split("\n")[:3]
    assert _pngs(lib) == _pngs(cli) and len(_pngs(lib)) == 3  # the same bytes
    for side in sorted(cli.glob("*.json")):
        assert json.loads(side.read_text())["settings"] == json.loads((lib / side.name).read_text())["settings"]
    assert json.loads((lib / "0000-a-red-circle.json").read_text())["settings"]["batch"] == 2  # recorded
    assert not (lib / ".ovi-gen.json").exists()  # the claim is gone with the run

    seen = Recorder()  # resume from Python: everything done, said through the Reporter
    again = GenRun(_toy(steps=3, batch=2, seed=5), prompts_file=prompts, out=cli, reporter=seen)
    assert again.plan() == [] and again.run() == []
    assert seen.lines == ["resuming: 3 of 3 prompts already done, skipped"]
    res = run_cli("gen", "--prompts", prompts, "--model", "toy", "--steps", "3", "--batch", "2", "--seed", "5",
                  "-o", lib)
    assert res.code == 0 and "resuming: 3 of 3 prompts already done, skipped" in res.stderr


def test_toy_evaluation_calls_the_bench_and_score_runs_and_matches_the_cli(run_cli, tmp_path):
    from ovi_plugins.toy.eval import Method, generate_runs, run_folder, score_runs

    seen = Recorder()
    runs = generate_runs(tmp_path / "eval", steps=3, images_per_prompt=2, seed=7, limit=1,
                         methods=[Method("ovi+nn", "ovi", ["nn"])], real=False, reporter=seen)
    assert runs == [run_folder(tmp_path / "eval", "ovi+nn")]
    assert ("images", 4) in seen.counted and seen.advanced == 4  # 2 categories x 1 prompt x 2 images
    res = run_cli("bench", "generate", "toy", "--model", "toy", "--prior", "ovi", "-c", "nn", "--steps", "3",
                  "-k", "2", "--seed", "7", "--limit", "1", "--out", tmp_path / "cli", "--quiet")
    assert res.code == 0, res.stderr
    assert _pngs(runs[0]) == _pngs(tmp_path / "cli") and len(_pngs(runs[0])) == 4
    lib_json = json.loads((runs[0] / "bench.json").read_text())
    cli_json = json.loads((tmp_path / "cli" / "bench.json").read_text())
    assert lib_json["settings"] == cli_json["settings"] and lib_json["identity"] == cli_json["identity"]

    scored = Recorder()
    score_runs(runs, scored)
    assert {label for label, _ in scored.counted} == {"single: clip-score", "single: oracle", "binding: clip-score",
                                                      "binding: oracle"}
    assert json.loads((runs[0] / "scores.json").read_text())["categories"]["single"]["oracle"]["images"] == 2


def test_toy_plugin_drives_runs_not_argv():
    import ovi_plugins.toy.commands as commands
    import ovi_plugins.toy.eval as toy_eval

    source = inspect.getsource(toy_eval)
    assert "ovi_cli.cli" not in source and "core_app" not in source and "argv" not in source
    assert "ovi_cli.commands" not in inspect.getsource(commands) and "ovi_cli.console" not in \
        inspect.getsource(commands)


# ---- 2. one resume policy ----------------------------------------------------------------------
def test_one_resume_policy_names_what_differs():
    assert resume_action(None, {"steps": 3}) == (NEW, [])
    assert resume_action({"steps": 3}, {"steps": 3.0}) == (SKIP, [])
    assert resume_action({"steps": 3}, {"steps": 4}) == (CLASH, [("steps", 3, 4)])
    assert resume_action({"steps": 3}, {"steps": 4}, overwrite=True) == (REDO, [])
    check_resume(None, {"a": 1}, "X", "do Y")  # nothing recorded: a new run
    check_resume({"device": "cpu"}, {"device": "cuda"}, "X", "do Y")  # where it runs is not a setting
    with pytest.raises(OviError, match=r"^RUN was made with other settings \(prompts of c 1 -> 2, "
                                       r"steps 3 -> 4\); start again$"):
        check_resume({"steps": 3}, {"steps": 4}, "RUN", "start again", extra=[("prompts of c", 1, 2)])
    check_resume({"a": 1}, {"a": 1, "b": 2}, "X", "Y", only_shared=True)
    import ovi_cli.resume as resume

    imports = {line.split()[1] for line in inspect.getsource(resume).splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "collections.abc", "typing", "ovi_cli.errors"}  # pure: any layer may use it


def test_one_bench_json_reader_for_generating_and_scoring(run_cli, tmp_path):
    from ovi_cli.bench import runlog, score

    assert not hasattr(score, "read_bench_json") or score.read_bench_json is runlog.read_bench_json
    assert not hasattr(runlog, "open_run")  # one open_run: reading a run folder to score it
    run = tmp_path / "run"
    (run / "single" / "samples").mkdir(parents=True)
    (run / "bench.json").write_text("{not json")
    for args in (("bench", "score", run, "--scorers", "oracle", "-q"),
                 ("bench", "generate", "toy", "--model", "toy", "--out", run, "--limit", "1", "-k", "1", "-q")):
        res = run_cli(*args)
        assert res.code == 2 and "bench.json" in res.stderr and "not valid JSON" in res.stderr, res.stderr


# ---- 3. flags declared once ----------------------------------------------------------------------
def _settings_of(*args: str, command: str = "gen") -> GenSettings:
    """The settings the one builder makes of `args` on a RunCommand shaped like `command`."""
    from ovi_cli.commands.common import run_command, settings_from_params

    got: list[GenSettings] = []
    app = typer.Typer()

    @app.command(cls=run_command(several_priors=command == "compare"))
    def probe(ctx: typer.Context) -> None:
        got.append(settings_from_params(ctx))

    @app.command("other")
    def other() -> None:  # two commands: the app is a group
        pass

    res = CliRunner().invoke(app, ["probe", *args])
    assert res.exit_code == 0, (res.output, res.exception)
    return got[0]


def test_plugin_flags_are_mounted_from_the_registry_and_parsed_by_the_plugin():
    assert _settings_of("--nn-k", "2").options == {"nn": {"k": 2}}
    assert _settings_of("--option", "nn.k=2").options == {"nn": {"k": 2}}  # the same setting, recorded as 2
    assert _settings_of("--option", "nn.k=3", "--nn-k", "2").options == {"nn": {"k": 3}}  # --option wins
    assert _settings_of("--prior", "eclipse", "--prior-model", "M").options == {"eclipse": {"model": "M"}}
    assert _settings_of("--prior", "kandinsky", "--prior-model", "M", "--prior-steps", "3").options == \
        {"kandinsky": {"model": "M", "steps": 3}}
    assert _settings_of("--eclipse-model", "E", "--kandinsky-model", "K", command="compare").options == \
        {"eclipse": {"model": "E"}, "kandinsky": {"model": "K"}}


def test_the_core_names_no_plugin_flag_and_the_commands_restate_no_run_flag():
    import ovi_cli.commands.bench_generate as bench_generate
    import ovi_cli.commands.common as common
    import ovi_cli.commands.compare as compare
    import ovi_cli.commands.gen as gen
    import ovi_cli.options as options

    for module in (options, common, gen, compare, bench_generate):
        text = inspect.getsource(module)
        for flag in ("--nn-k", "--nn-every", "--prior-model", "--prior-steps", "--prior-guidance", "nn_k",
                     "eclipse_model"):
            assert flag not in text, (module.__name__, flag)
    shared = set(inspect.signature(options.run_flags).parameters)
    for module, fn in ((gen, gen.gen), (compare, compare.compare), (bench_generate, bench_generate.generate)):
        own = set(inspect.signature(fn).parameters)
        assert not own & (shared - {"stats"}), (module.__name__, own & shared)  # compare's --stats has its help


@pytest.mark.parametrize("command", [["gen"], ["compare"], ["bench", "generate"]])
def test_every_run_command_takes_the_shared_and_the_plugin_flags(command):
    from ovi_cli.cli import cli_command

    cmd = cli_command()
    for name in command:
        cmd = cmd.commands[name]
    flags = {o for p in cmd.params for o in p.opts}
    assert {"--model", "--decoder", "--tokens", "--steps", "--lr", "--option", "--height", "--device", "--quiet",
            "--nn-k", "--nn-every", "--prior-steps", "--prior-guidance"} <= flags
    if command == ["compare"]:
        assert {"--eclipse-model", "--kandinsky-model"} <= flags and "--prior-model" not in flags
    else:
        assert {"--prior", "--prior-model", "--constraint", "--patience", "--compile"} <= flags


def test_bench_score_mounts_the_scorers_flags_from_the_registry():
    import ovi_cli.commands.bench_score as bench_score
    from ovi_cli.cli import cli_command

    cmd = cli_command().commands["bench"].commands["score"]
    assert {"--clip-model", "--blip-model", "--detector-model"} <= {o for p in cmd.params for o in p.opts}
    text = inspect.getsource(bench_score)
    assert "--clip-model" not in text and "clip_model" not in text and "blip_model" not in text


def test_a_plugin_flag_beside_from_changes_the_recipe(run_cli, tmp_path):
    """`--from IMAGE --nn-k 2`: a plugin's flag counts as an explicit option, as `--option nn.k=2` does."""
    first = tmp_path / "a.png"
    assert run_cli("gen", "a red circle", "--model", "toy", "--steps", "3", "-c", "nn", "-o", first, "-q").code == 0
    again = tmp_path / "b.png"
    res = run_cli("gen", "--from", first, "--nn-k", "2", "-o", again, "-q")
    assert res.code == 0, res.stderr
    assert json.loads(again.with_suffix(".json").read_text())["settings"]["options"]["nn"] == {"k": 2}
