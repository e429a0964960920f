"""The command line's manners (issue 20): heartbeats on long steps, -v/-q on every command,
--version."""

from __future__ import annotations

import argparse
import importlib
import os
import time

import pytest

from curate.progress import heartbeat
from flows.cli import FORWARDED, build_parser, main
from tests.imports import modules_imported


def test_a_long_step_says_it_is_alive_and_a_short_one_does_not(capsys, monkeypatch):
    monkeypatch.delenv("SLUICE_QUIET", raising=False)
    with heartbeat("tokenizer", every=0.2):
        time.sleep(0.7)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all(line.startswith("tokenizer: still running (") for line in lines)
    with heartbeat("quick", every=5):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("SLUICE_QUIET", "1")  # -q
    with heartbeat("tokenizer", every=0.1):
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


def test_every_command_takes_v_and_q():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        if name in FORWARDED:
            continue  # main() takes -v/-q off their argv
        flags = {s for a in command._actions for s in a.option_strings}
        assert {"-v", "-q"} <= flags, name
    args = parser.parse_args(["-v", "status", "runs/x", "-v"])
    assert args.verbose + args.verbose_sub == 2


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("sluice ")


@pytest.mark.parametrize("argv", [["-q", "train"], ["train", "-q"], ["-v", "-q", "sweep", "-q"]])
def test_v_and_q_reach_forwarded_commands_before_or_after_the_name(argv, monkeypatch):
    """``sluice -q train ...`` is the forwarded command with -q, not an argparse error."""
    seen: dict[str, list[str]] = {}

    def forwarded_main(rest: list[str]) -> int:
        seen["rest"] = rest
        return 0

    name = next(a for a in argv if not a.startswith("-"))
    monkeypatch.setattr(importlib.import_module(FORWARDED[name][0]), "main", forwarded_main)
    monkeypatch.setenv("SLUICE_QUIET", "")  # recorded, so that -q's setting is undone after
    monkeypatch.delenv("SLUICE_QUIET")
    assert main([*argv, "--config", "x.yaml"]) == 0
    assert seen["rest"] == ["--config", "x.yaml"]  # the flags are taken off what it parses
    if argv.count("-q") > argv.count("-v"):
        assert os.environ.get("SLUICE_QUIET") == "1"


def test_commands_other_than_deploy_do_not_import_prefect():
    """`sluice run --local` and the others parse without flows.deploy (Prefect: ~1 s of every
    run's start); `sluice deploy` still gets its options."""
    code = (
        "from flows.cli import build_parser\n"
        "build_parser(with_deploy=False).parse_args(['status', 'runs/x'])"
    )
    assert modules_imported(code, ["prefect", "flows.deploy"]) == []
    args = build_parser().parse_args(["deploy", "--cron", "0 3 * * *"])
    assert args.cron == "0 3 * * *"
