"""The command line tells a user what exists: its version, the shipped configurations and every
field ``--set`` accepts, each with its meaning."""
import dataclasses

import pytest

import punl
from punl.commands.cli import build_parser, main
from punl.core.config import Config, field_meanings, valid_keys
from punl.core.yamlfiles import builtin_configs


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"punl {punl.__version__}"


def test_help_is_plain_text():
    text = build_parser().format_help()
    assert "``" not in text and ":mod:" not in text
    for command in ("train", "run", "sweep", "book", "configs", "fields"):
        assert command in text


def test_configs_lists_every_shipped_configuration(capsys):
    assert main(["configs"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert [r.split()[0] for r in rows] == list(builtin_configs())
    assert "digits-quick" in builtin_configs() and all(len(r.split()) > 2 for r in rows)


def test_every_field_has_a_meaning_and_fields_lists_them(capsys):
    meanings = field_meanings()
    assert [k for k in valid_keys() if not meanings.get(k)] == []
    assert main(["fields"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert [r.split()[0] for r in rows] == valid_keys()
    sigma = next(r for r in rows if r.startswith("sigma "))
    assert "train" in sigma and "1.0" in sigma and meanings["sigma"] in sigma


def test_fields_of_one_stage(capsys):
    assert main(["fields", "--stage", "score"]) == 0
    names = [r.split()[0] for r in capsys.readouterr().out.strip().splitlines()]
    assert names == [f.name for f in dataclasses.fields(Config) if f.metadata["stage"] == "score"]


def test_a_field_comment_spanning_lines_is_read_whole():
    assert field_meanings()["heldout_requests"].startswith("held-out deletion requests of each")
    assert "validate punl.analysis.predict" in field_meanings()["heldout_requests"]


def test_init_lays_out_a_book_folder_and_never_overwrites(tmp_path, capsys):
    from punl.core.resources import BOOK_SKELETON, resource
    assert main(["init", str(tmp_path / "b")]) == 0
    for name in BOOK_SKELETON:
        assert (tmp_path / "b" / name).exists(), name
    assert (tmp_path / "b/book/intro.md").read_text() == resource("book/intro.md").read_text()
    (tmp_path / "b/book/intro.md").write_text("mine")
    assert main(["init", str(tmp_path / "b")]) == 2
    assert "already holds _config.yml" in capsys.readouterr().err
    assert (tmp_path / "b/book/intro.md").read_text() == "mine"


def test_book_without_a_book_folder_says_how_to_make_one(tmp_path, capsys):
    assert main(["book", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"punl init {tmp_path}" in err


def test_a_checkout_reads_its_own_folders():
    from punl.core.resources import CHECKOUT, resource
    assert resource("configs") == CHECKOUT / "configs"
    assert resource("notebooks") == CHECKOUT / "notebooks"


def test_every_command_takes_quiet():
    """``--quiet`` is accepted by every subcommand, before or after its other arguments."""
    from punl.commands.cli import build_parser
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert any("--quiet" in a.option_strings for a in sub._actions), name
    assert parser.parse_args(["train", "--quiet", "digits-quick"]).quiet
    assert parser.parse_args(["fields", "--quiet"]).quiet
    assert not parser.parse_args(["configs"]).quiet


def test_quiet_training_draws_no_bar(tmp_path, capsys, monkeypatch):
    """A quiet command prints its results and no progress bar; without ``--quiet`` the same
    command draws one (so the check can fail)."""
    from punl.commands.cli import main
    monkeypatch.chdir(tmp_path)
    tiny = ["--set", "n_train=300", "--set", "runs=1", "--set", "epochs=3", "--set", "width=16",
            "--set", "batch_size=32", "--set", "sigma=0.1", "--set", "record_every=5"]
    assert main(["train", "digits-quick", *tiny, "--out", "a", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "final test accuracy per run" in out.out and "it/s" not in out.err
    assert main(["train", "digits-quick", *tiny, "--out", "b"]) == 0
    assert "it/s" in capsys.readouterr().err
