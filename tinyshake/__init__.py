"""tinyshake: the "GPT from scratch on tiny Shakespeare" lecture as a terminal tool.

The core (corpus, tokenizer, models, training, sampling, checkpoints and the
demos' math) lives in this package and never imports Rich or Typer, so that
``import tinyshake`` can train a model without a terminal. The command-line
layer lives in :mod:`tinyshake.cli`.
"""

import os

__version__ = "0.1.0"

# OpenMP reads its waiting policy once, when torch loads it, so it is set here, before anything imports torch.
# By default an idle OpenMP thread spins for a long while at every barrier; on a busy machine it spins against
# the very thread it waits for, which the OS has taken off its core, and a training step gets 5 to 70 times
# slower. A short spin (GNU OpenMP counts spins; Intel's runtime counts milliseconds) keeps the back-to-back
# parallel regions of a step as fast as before on a quiet machine, and then sleeps. Values set by the user win.
WAIT_SETTINGS = {"GOMP_SPINCOUNT": "20000", "KMP_BLOCKTIME": "1"}
for _name, _value in WAIT_SETTINGS.items():
    os.environ.setdefault(_name, _value)
