"""README.md's commands still run as written (issue 20): every ``sluice`` command of its bash
blocks parses with today's options, the configs it names load with its ``--set``s, and each
``sluice run`` plans (``--dry-run``, nothing heavy: the commands as written train a 1B model
or need a cluster). The whole job with small settings runs in test_status / test_outputs."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.golden import REPO_ROOT


def readme_commands() -> list[list[str]]:
    """The ``sluice`` commands of README's bash blocks (continuations joined, comments and
    ``[optional]`` parts dropped), as argv without the program."""
    text = (REPO_ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            while (inner := re.sub(r"\[[^\[\]]*\]", " ", line)) != line:  # nested [a [b]]
                line = inner
            line = line.strip()
            words = shlex.split(line) if line else []
            if words and words[0] in ("sluice", ".venv/bin/sluice"):
                out.append(words[1:])
    return out


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    names = {c[0] for c in COMMANDS}
    assert {"server", "run", "deploy", "train", "sweep", "end-to-end"} <= names, names


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_a_readme_command_runs_as_written(argv, monkeypatch, tmp_path, capsys):
    from flows.cli import _load, build_parser, check_training_configs, main

    monkeypatch.chdir(REPO_ROOT)
    if argv[0] == "train":
        from train.cli import parser
        from train.trainer import TrainConfig

        args = parser().parse_args(argv[1:])
        TrainConfig.from_yaml(args.config, args.overrides)
    elif argv[0] == "sweep":
        from train.sweep import SweepConfig
        from train.sweep_cli import parser

        SweepConfig.from_yaml(parser().parse_args(argv[1:]).config)
    else:
        args = build_parser().parse_args(argv)
        if argv[0] == "run":
            monkeypatch.setenv("SLUICE_QUIET", "1")
            sets = [s for s in args.set if not s.startswith("run_dir=")]
            sets.append(f"run_dir={tmp_path}/run")  # the plan is the same; nothing is written
            assert (
                main(
                    [
                        "run",
                        "--config",
                        args.config,
                        "--dry-run",
                        *sum((["--set", s] for s in sets), []),
                    ]
                )
                == 0
            )
            assert "extract" in capsys.readouterr().out
        elif argv[0] == "ablate":
            from flows.cli import load_ablation_args

            load_ablation_args(args)  # the ablation and every variant's config validate
        elif argv[0] == "end-to-end":
            _load(args.config, args.set, args.run_name)
            check_training_configs(args.train_config, args.train_set, args.sweep_config)
