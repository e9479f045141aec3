"""What the console and the plots of one tiny run show: periodic evaluation lines on their own line
(tqdm.write, not glued after the progress bar), and the final evaluation drawn in loss_curve.png."""

from __future__ import annotations

import contextlib
import io
import re

import matplotlib.figure
from conftest import run_recipe


def test_eval_lines_stand_alone_and_the_final_eval_is_in_the_loss_curve(tmp_path, cache_dir, monkeypatch):
    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        drawn[str(path).rsplit("/", 1)[-1]] = fig
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    console = io.StringIO()  # stdout and stderr in one stream, as a terminal shows them
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        results = run_recipe("causal", tmp_path / "out", "--train.max_steps=4", "--train.warmup_steps=1", "--train.eval_steps=2",
                             "--train.eval_max_batches=1", "--data.max_train_documents=40")  # fmt: skip
    text = console.getvalue()
    # A terminal line ends at \n or \r: tqdm redraws its bar after \r, so a print glued to the bar
    # would sit in the same segment as a bar fragment.
    segments = re.split(r"[\r\n]", text)
    evals = [s for s in segments if "eval_loss=" in s and "final evaluation" not in s]
    assert len(evals) == 1, text[-3000:]
    # step 2's eval, then the bar goes on (redrawn after the line; how often tqdm redraws depends on timing)
    assert text.rindex("train:") > text.index(evals[0]), text[-3000:]
    assert evals[0].startswith("step 2: eval_loss="), evals  # not after a bar fragment

    ax_loss = drawn["loss_curve.png"].axes[0]
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    assert list(lines["final eval loss"].get_xdata()) == [results["steps"]] == [4]
    assert list(lines["final eval loss"].get_ydata()) == [results["eval_loss"]]
    assert list(lines["eval loss"].get_xdata()) == [2]  # the periodic one (the last step's is the final)
