"""tinyshake: the "GPT from scratch on tiny Shakespeare" lecture as a terminal tool.

The core (corpus, tokenizer, models, training, sampling, checkpoints and the
demos' math) lives in this package and never imports Rich or Typer, so that
``import tinyshake`` can train a model without a terminal. The command-line
layer lives in :mod:`tinyshake.cli`.
"""

__version__ = "0.1.0"
