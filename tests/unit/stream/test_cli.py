"""The command line, in process: parsing and offline scoring."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from feedwarden.cli import STREAM_COMMANDS, build_parser, main
from feedwarden.models.bundle import Bundle


def test_score_writes_one_line_per_input_line(tiny_bundle: Bundle, tmp_path: Path, capsys) -> None:
    source, sink = tmp_path / "posts.jsonl", tmp_path / "decisions.jsonl"
    source.write_bytes(b'{"id": "a", "text": "verify password"}\n[]\n{"id": "b", "text": "match"}\n')
    code = main(
        [
            "score",
            "--in",
            str(source),
            "--out",
            str(sink),
            "--bundle",
            str(tiny_bundle.path),
            "--providers",
            "cpu",
        ]
    )
    assert code == 0
    lines = [orjson.loads(line) for line in sink.read_bytes().splitlines()]
    assert [line.get("id", line.get("line")) for line in lines] == ["a", 2, "b"]
    assert lines[0]["action"] == "hide" and lines[1]["error"] == "not_an_object"
    assert "2 decided, 1 bad lines" in capsys.readouterr().err


def test_score_reads_stdin_and_writes_stdout_for_a_dash(
    tiny_bundle: Bundle, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"id": "a", "text": "match"}\n[]\n')))
    code = main(["score", "--in", "-", "--out", "-", "--bundle", str(tiny_bundle.path), "--providers", "cpu"])
    captured = capsysbinary.readouterr()
    assert code == 0 and not Path("-").exists()
    lines = [orjson.loads(line) for line in captured.out.splitlines()]
    assert [line.get("id", line.get("line")) for line in lines] == ["a", 2]
    assert b"1 decided, 1 bad lines" in captured.err


def test_every_stream_command_is_registered_without_training() -> None:
    parser = build_parser(with_training=False)
    for command in STREAM_COMMANDS:
        extra = ["--in", "x", "--out", "y"] if command == "score" else []
        assert parser.parse_args([command, *extra]).command == command


def test_a_command_is_required() -> None:
    with pytest.raises(SystemExit):
        main([])
