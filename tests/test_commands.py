"""The eight command lines share one style (cxr_utils.command): --help ends with what each exit
status means, and a bad argument is one line on stderr with exit status 2."""

import importlib

import pytest

from cxr_utils import command

COMMANDS = ("run", "study.cli", "data.cli", "training_cli", "predict", "external", "model_card", "publish")


@pytest.mark.parametrize("name", COMMANDS)
def test_help_names_the_exit_statuses_and_a_bad_argument_is_one_line_with_status_2(name, capsys):
    main = importlib.import_module(f"cxr_utils.{name}").main
    for argv, status in ((["--help"], command.EXIT_OK), (["--no-such-option"], command.EXIT_USAGE)):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == status, argv
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: python -m cxr_utils.{name.removesuffix('.cli')}")
    assert "Exit status: 0 " in out and " 2 " in out.split("Exit status:")[1]
    assert err.count("\n") == 1 and "error:" in err and "(see --help)" in err


def test_an_error_while_running_is_one_line_with_its_status(capsys):
    assert command.fail("first line\n   second line", command.EXIT_FAILED) == 1
    assert capsys.readouterr().err == "error: first line second line\n"
