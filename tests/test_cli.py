"""The `litgpt` command line: the verb table, help, --config files and one-line errors."""

import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

import litgpt.__main__ as cli

CALLS = []


def fake_verb(checkpoint_dir: Path, *, model_name: Optional[str] = None, n: int = 3) -> None:
    """A verb for the tests.

    Args:
        checkpoint_dir: a folder.
        model_name: a name.
        n: how many.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    CALLS.append((checkpoint_dir, model_name, n))


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(cli.VERBS, "fake", (__name__, "fake_verb", "A verb for the tests."))
    CALLS.clear()
    return CALLS


def test_top_level_help_lists_every_verb_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb, (_, _, summary) in cli.VERBS.items():
        assert f"  {verb}" in out and summary in out
    assert "\n" not in "".join(summary for _, _, summary in cli.VERBS.values())


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_every_verb_builds_its_parser_from_the_signature(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out
    fn = cli.resolve(verb)
    assert fn.__doc__ and "Args:" in fn.__doc__, f"{verb}: the function needs a docstring with Args:"


def test_positional_flags_and_config_file(fake, tmp_path):
    assert cli.main(["fake", "some/dir", "--model_name", "x", "--n", "5"]) == 0
    assert fake[-1] == (Path("some/dir"), "x", 5)
    cfg = tmp_path / "verb.yaml"
    cfg.write_text("model_name: from-yaml\nn: 7\n")
    assert cli.main(["fake", "d", "--config", str(cfg)]) == 0
    assert fake[-1] == (Path("d"), "from-yaml", 7)
    # a flag after --config overrides the file
    assert cli.main(["fake", "d", "--config", str(cfg), "--n", "1"]) == 0
    assert fake[-1] == (Path("d"), "from-yaml", 1)


def test_verb_error_is_one_line(fake, capsys):
    assert cli.main(["fake", "d", "--n", "-1"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "litgpt fake: error: n must be >= 0, got -1"


def test_bad_flag_type_is_rejected_by_the_parser(fake, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["fake", "d", "--n", "many"])
    assert exc.value.code != 0
    assert not fake


def test_unknown_verb_suggests_close_names(capsys):
    assert cli.main(["donwload"]) == 2
    assert "Did you mean: download?" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "litgpt", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "convert_to_litgpt" in proc.stdout
    script = Path(sys.executable).parent / "litgpt"
    if script.exists():  # the console script of the installed package
        proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "download" in proc.stdout
