"""`python -m precall dial`: a plain line, never a traceback, when the local Twilio is not there."""

from __future__ import annotations

from precall.__main__ import main
from sandbox.processes import ROOT, free_port


def test_dial_without_the_local_twilio_says_what_to_do(capsys):
    port = free_port()
    assert main(["dial", str(ROOT / "samples" / "sample.wav"), "--twilio-url", f"http://127.0.0.1:{port}"]) == 2
    assert "start make run and use the --twilio-url it prints" in capsys.readouterr().err


def test_dial_of_a_missing_file_is_a_usage_error(capsys):
    assert main(["dial", "no-such.wav"]) == 2
    assert "no-such.wav is not a file" in capsys.readouterr().err
