"""Every subcommand's --help renders (argparse formats help strings lazily, so typos hide)."""

from __future__ import annotations

import pytest

from vlastack.cli.main import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return sorted(action.choices)  # type: ignore[attr-defined]
    return []


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("data", "collect", "train", "eval", "serve", "demo", "list"):
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: vlastack" in capsys.readouterr().out


def test_user_error_has_no_traceback(capsys):
    rc = main(["data", "info", "/nonexistent/dataset"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and "error:" in err
