"""The progress bar draws on a terminal and stays out of logs."""
import io

from fwbench.harness.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_draws_bar_count_and_eta_on_a_terminal():
    out = Terminal()
    bar = Progress(10, "epoch 1/2", stream=out)
    bar.update(10, "loss 0.5")
    bar.close()
    text = out.getvalue()
    assert "epoch 1/2 [" + "#" * 30 + "] 10/10 ETA" in text and "loss 0.5" in text


def test_silent_in_a_log_file_or_when_disabled():
    log = io.StringIO()
    Progress(4, stream=log).update(4)
    quiet = Terminal()
    Progress(4, enabled=False, stream=quiet).update(4)
    assert log.getvalue() == "" and quiet.getvalue() == ""
