"""What a training run will do, decided once: its settings, corpus, device, name and stored state.

``tinyshake train`` used to resolve the device in three places and read a
resumed run's record in four. :func:`make_plan` now makes every such decision
in one place, before anything is fetched or written, and returns a frozen
:class:`Plan`: the CLI renders it, :func:`tinyshake.training.train.train` executes it
(holding the run's lock while it does), and a ladder of runs can make one plan
per stage the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Mapping, Optional

from tinyshake import checkpoint, tokens
from tinyshake.store import runlock
from tinyshake.training import machine, sizing, stages, threads as cpu_threads, tuning
from tinyshake.corpus import DEFAULT_CORPUS, validate_name
from tinyshake.training.device import DeviceChoice, resolve
from tinyshake.errors import UsageError
from tinyshake.models.model import ModelConfig

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16", "auto")  # auto: bf16 where the hardware multiplies it natively
OPTIMIZERS = ("adamw", "muon")
TORCH_INT_MAX = 2**63 - 1  # sizes and seeds end up in int64 tensors or torch's seed


@dataclass(frozen=True)
class EvalSteps:
    """The steps that evaluate before training: 0, every interval, and the last one from residual on.

    A predicate, not a set: ``max_iters`` may be astronomically large with a
    time budget, and nothing may grow with it. A time budget's run skips step 0
    (``first`` false): every model starts near ln(vocabulary), and the seconds
    that evaluation takes are better spent training.
    """

    max_iters: int
    interval: int
    last: bool
    first: bool = True

    def __contains__(self, step: object) -> bool:
        if not isinstance(step, int) or not 0 <= step < self.max_iters or (step == 0 and not self.first):
            return False
        return step % self.interval == 0 or (self.last and step == self.max_iters - 1)

    def count(self) -> int:
        """How many steps evaluate (not ``len``: that cannot exceed ``sys.maxsize``)."""
        regular = -(-self.max_iters // self.interval) - int(not self.first and self.max_iters > 0)  # 0, interval, ...
        return regular + int(self.last and self.max_iters > 0 and (self.max_iters - 1) % self.interval != 0)


@dataclass
class TrainConfig:
    """A stage's preset after the user's overrides: everything a run needs to be repeated."""

    stage: str
    run: str
    model: ModelConfig
    batch_size: int
    learning_rate: float
    max_iters: int
    eval_interval: int
    eval_iters: int = stages.LECTURE_EVAL_ITERS
    eval_last: bool = False
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"
    compile: bool = False
    time_budget: Optional[float] = None  # seconds of training (evaluations excluded); the schedule follows it
    optimizer: str = "adamw"  # "adamw" (the lecture) or "muon" (hidden matrices; AdamW for the rest)
    muon_lr: float = 0.02
    warmup: float = 0.0  # fraction of the run spent warming the rate up from 0
    warmdown: float = 0.0  # fraction of the run at its end spent cooling the rate down to 0
    plain: bool = False  # the lecture's modules and optimizer exactly as written, without the speed layer
    tokenizer: str = "char"  # "char" (the lecture's) or "bpe" (the sequel's, learned from the train split)
    bpe_vocab: Optional[int] = None  # the BPE's size (--vocab-size); None for characters

    @property
    def block_size(self) -> int:
        return self.model.block_size

    def hyper(self) -> dict[str, Any]:
        """The hyperparameters as stored in a run's config.json."""
        data = asdict(self)
        data.pop("model")
        return data

    def eval_steps(self) -> EvalSteps:
        """Steps that evaluate before training (see :class:`EvalSteps`); ``step in config.eval_steps()`` is O(1)."""
        return EvalSteps(self.max_iters, self.eval_interval, self.eval_last, first=self.time_budget is None)


STAGE_KEYS = ("batch_size", "block_size", "learning_rate", "max_iters", "eval_interval",
              "n_embd", "n_head", "n_layer", "dropout")
# What a resumed run may change: how long and how it runs, never what it computes per step.
CHOICE_KEYS = ("device", "dtype", "optimizer")  # taken whatever their case, as every choice is
SESSION_KEYS = ("max_iters", "eval_interval", "eval_iters", "device", "dtype", "compile", "time_budget")
FIXED_KEYS = ("stage", "batch_size", "learning_rate", "seed", "block_size", "n_embd", "n_head", "n_layer", "dropout",
              "optimizer", "muon_lr", "warmup", "warmdown", "plain", "tokenizer", "bpe_vocab")
DEFAULT_BPE_VOCAB = 512  # about 2 characters a token on tiny Shakespeare; learned in about a second


def make_config(stage_name: str, vocab_size: int = ModelConfig.vocab_size, run: Optional[str] = None,
                **overrides: Any) -> TrainConfig:
    """Merge a stage's preset with overrides (``None`` keeps the preset) and check that the sizes make sense.

    A time budget without ``max_iters`` trains until the budget is spent,
    however many steps that takes on this machine, and without ``eval_iters``
    estimates its losses on :data:`~tinyshake.training.stages.BUDGET_EVAL_ITERS` batches per split.

    ``vocab_size`` may be left out while the corpus is not loaded yet, so bad
    flags are refused before anything is fetched; :func:`with_vocab` fills it in.
    An empty run name is a name (and an invalid one), not a missing one.
    """
    if overrides.get("time_budget") is not None:
        # a stage's step count would end the budget early, and the lecture's 200 batches per split at each tenth
        # of the budget would take longer than the training
        for key, default in (("max_iters", stages.UNTIL_BUDGET), ("eval_iters", stages.BUDGET_EVAL_ITERS)):
            if overrides.get(key) is None:
                overrides[key] = default
    stage = stages.with_overrides(stages.get(stage_name), **{k: overrides.pop(k, None) for k in STAGE_KEYS})
    overrides.update({k: overrides[k].lower() for k in CHOICE_KEYS if isinstance(overrides.get(k), str)})
    config = TrainConfig(
        stage=stage.name,
        run=stage.name if run is None else run,
        model=ModelConfig(vocab_size=vocab_size, block_size=stage.block_size, **stage.model),
        batch_size=stage.batch_size,
        learning_rate=stage.learning_rate,
        max_iters=stage.max_iters,
        eval_interval=stage.eval_interval,
        eval_last=stage.eval_last,
        **{**stage.hyper, "dtype": stage.dtype, **{k: v for k, v in overrides.items() if v is not None}},
    )
    if config.tokenizer == tokens.BPE and config.bpe_vocab is None:
        config = replace(config, bpe_vocab=DEFAULT_BPE_VOCAB)
    validate(config)
    return config


def with_vocab(config: TrainConfig, vocab_size: int) -> TrainConfig:
    """The same config for a corpus with ``vocab_size`` distinct characters."""
    return replace(config, model=replace(config.model, vocab_size=vocab_size))


def resume_config(record: checkpoint.RunRecord, **given: Any) -> TrainConfig:
    """A stored run's own settings, so ``--resume`` needs no flags to go on exactly as it started.

    Given values (``None`` means not given) may change how long and where the
    run goes on; one that would change the computation itself is refused, since
    the optimizer state and the step's losses belong to the stored settings.
    """
    try:
        model = ModelConfig.from_dict(dict(record.model))
        names = {f.name for f in fields(TrainConfig)} - {"model"}
        config = TrainConfig(model=model, **{k: v for k, v in record.hyper.items() if k in names})
        validate(config)  # a value of the wrong type fails here with a TypeError
    except (KeyError, TypeError, AttributeError, UsageError):
        raise checkpoint.CheckpointError(f"the settings stored for run {record.name!r} are unreadable; "
                                         "retrain it with --overwrite") from None
    stored = dict(config.hyper(), **asdict(model))
    for key in FIXED_KEYS:
        if given.get(key) is not None and given[key] != stored[key]:
            raise UsageError(f"run {config.run!r} was trained with {key} {stored[key]}; --resume keeps a run's "
                             "settings (leave that option out, or start a new run with --run NAME)")
    config = replace(config, **{k: given[k] for k in SESSION_KEYS if given.get(k) is not None})
    validate(config)  # the new values
    return config


def flag(key: str) -> str:
    """The option that sets the setting ``key``, as the user types it: an error names what they typed."""
    return "--lr" if key == "learning_rate" else "--" + key.replace("_", "-")


def _finite_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{flag(name)} must be a positive finite number, got {value}")


def validate(config: TrainConfig) -> None:
    """Reject values that cannot train, with a one-line reason, before torch ever sees them."""
    m = config.model
    positive = {"batch_size": config.batch_size, "block_size": m.block_size, "eval_interval": config.eval_interval,
                "eval_iters": config.eval_iters}
    if m.arch != "bigram":
        positive.update(n_embd=m.n_embd, n_head=m.n_head, n_layer=m.n_layer)
    whole = dict(positive, max_iters=config.max_iters, seed=config.seed)
    for name, value in whole.items():  # a stored record can hold 1.5 or "x" where the CLI only gives ints
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{flag(name)} must be a whole number, got {value!r}")
    for name, value in positive.items():
        if value <= 0:
            raise UsageError(f"{flag(name)} must be positive, got {value}")
        if name != "eval_interval" and value > TORCH_INT_MAX:
            raise UsageError(f"{flag(name)} {value} is too large (at most {TORCH_INT_MAX})")
    if config.max_iters < 0:
        raise UsageError(f"--max-iters must be 0 or more, got {config.max_iters}")
    if not 0 <= config.seed <= TORCH_INT_MAX:
        raise UsageError(f"--seed must be between 0 and {TORCH_INT_MAX}, got {config.seed}")
    _finite_positive("learning_rate", config.learning_rate)
    _finite_positive("muon_lr", config.muon_lr)  # checked whatever the optimizer: a typo'd value is never ignored
    if not 0 <= m.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {m.dropout}")
    if m.arch != "bigram" and m.n_embd % m.n_head:
        raise UsageError(f"--n-embd ({m.n_embd}) must be divisible by --n-head ({m.n_head})")
    if config.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}")
    if config.time_budget is not None:
        _finite_positive("time_budget", config.time_budget)
    if config.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
    if not (0 <= config.warmup <= 1 and 0 <= config.warmdown <= 1):
        raise UsageError("--warmup and --warmdown are fractions of the run, between 0 and 1")
    _validate_tokenizer(config)


def _validate_tokenizer(config: TrainConfig) -> None:
    """A BPE needs a model that reads context: the bigram is the lecture's character table, and stays one."""
    tokens.check_kind(config.tokenizer)
    if config.tokenizer == tokens.CHAR and config.bpe_vocab is not None:
        raise UsageError("--vocab-size sets a BPE's size; give --tokenizer bpe with it")
    if config.tokenizer == tokens.BPE and config.model.arch == "bigram":
        raise UsageError("the bigram stage reads the next character off a table of character pairs, the lecture's "
                         "first model; a BPE needs a stage with attention (head or later, e.g. --model mini)")
    if config.bpe_vocab is not None and config.bpe_vocab < 1:
        raise UsageError(f"--vocab-size must be positive, got {config.bpe_vocab}")
    if config.bpe_vocab is not None:
        tokens.check_vocab_size(config.bpe_vocab, 1)  # too large; the corpus's alphabet is checked once it is loaded


def resolve_dtype(device: torch.device, dtype: str, notices: list[str]) -> str:
    """The autocast dtype this device can use for ``dtype``, with a notice where it falls back.

    ``auto`` is bfloat16 where the hardware multiplies it natively (a CPU with
    AMX or AVX512-BF16, a CUDA device with bf16) and float32 elsewhere: emulated
    bf16 is slower than float32, so it would buy nothing for its rounding.
    """
    kind = device.type
    if dtype == "auto":
        native = machine.native_bf16() if kind == "cpu" else kind == "cuda" and _cuda_bf16()
        return "bfloat16" if native else "float32"
    if kind == "mps" and dtype == "bfloat16":
        notices.append("bfloat16 autocast is not supported on MPS here; using float32")
        return "float32"
    if kind == "cpu" and dtype == "float16":
        notices.append("float16 autocast is slow or missing on CPUs; using bfloat16")
        return "bfloat16"
    return dtype


def _cuda_bf16() -> bool:
    import torch
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class Plan:
    """One training session, decided: run it with :func:`tinyshake.training.train.train`.

    ``resume`` is the stored record of the run that goes on (read once, here),
    or ``None`` for a new run. A new run's vocabulary size is filled in from the
    corpus when training starts, because the corpus is fetched after planning.
    """

    config: TrainConfig
    corpus: str
    device: DeviceChoice
    dtype: str  # the autocast dtype actually used on this device
    resume: Optional[checkpoint.RunRecord] = None
    overwrite: bool = False
    notices: tuple[str, ...] = field(default=())
    threads: Optional[cpu_threads.Choice] = None  # the CPU threads and why; None leaves the process's count alone
    sized: Optional[sizing.Sizing] = None  # the stage --time-budget chose, when --model was not given

    @property
    def run(self) -> str:
        return self.config.run

    @property
    def start_step(self) -> int:
        return self.resume.step if self.resume is not None else 0

    @property
    def trained_seconds(self) -> float:
        """Seconds a resumed run has trained so far (what ``--time-budget`` counts); 0 for a new run."""
        return self.resume.train_seconds if self.resume is not None else 0.0

    @property
    def steps_done(self) -> bool:
        """A resumed run that has already trained all its ``max_iters`` steps."""
        return self.resume is not None and self.start_step >= self.config.max_iters

    @property
    def budget_spent(self) -> bool:
        """A resumed run that has trained at least its ``--time-budget`` (its own, or the one given now)."""
        budget = self.config.time_budget
        return self.resume is not None and budget is not None and self.trained_seconds >= budget

    @property
    def complete(self) -> bool:
        """A resumed run that has already trained all its steps, or all its time: there is nothing left to do."""
        return self.steps_done or self.budget_spent


def next_free_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ...: the first name no run takes yet."""
    name, n = base, 1
    while _taken(name):
        n += 1
        name = f"{base}-{n}"
    return name


def for_config(config: TrainConfig, corpus: str = DEFAULT_CORPUS, overwrite: bool = True) -> Plan:
    """A plan for a config built by hand (scripts, benchmarks, tests): a new run that may replace its namesake."""
    choice = resolve(config.device)
    notices: list[str] = []
    return Plan(config, corpus, choice, resolve_dtype(choice.device, config.dtype, notices), None, overwrite, tuple(notices))


def make_plan(stage: Optional[str] = None, run: Optional[str] = None, corpus: Optional[str] = None,
              resume: bool = False, overwrite: bool = False, threads_requested: Optional[int] = None,
              **settings: Any) -> Plan:
    """Decide a training session from the user's choices (``None`` means not given), or refuse it in one line.

    The CPU threads come from the free cores unless ``threads_requested``
    (``--threads``) says; training takes the CPU routes measured for that count
    (:mod:`tinyshake.training.tuning`) once it starts, so a refused plan measures nothing;
    only a plan that a time budget sizes measures this machine's speed (once, then
    cached), after its flags are checked.

    A new run merges the stage's preset with ``settings``; without ``run`` it
    takes the stage's name, or the next free one (``bigram-2``, ...) with a
    notice, so re-running a stage never fails. An explicit ``run`` that exists
    is refused unless ``overwrite``. A resumed run takes its stored settings
    and, unless told otherwise, its own corpus. A new run with a time budget
    and no stage takes the stage that budget is best spent on here
    (:mod:`tinyshake.training.sizing`).
    """
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite replaces it; choose one")
    if stage is not None:
        stages.get(stage)
    if corpus is not None:
        validate_name(corpus)
    notices: list[str] = []
    record: Optional[checkpoint.RunRecord] = None
    threads = cpu_threads.decide(threads_requested)
    sized = None
    if stage is None and settings.get("time_budget") is not None and not (resume and run is not None):
        if not resume:  # bad flags are refused before the machine's speed is measured
            make_config(sizing.FRONTIER[0].stage, run=run, **settings)
        sized = _sized(settings["time_budget"], settings.get("device"), threads)
        stage = sized.stage  # a resumed run of that name, or a new one of that stage
        if not resume:
            notices.append(sized.describe())
    if resume:
        name = run if run is not None else stage if stage is not None else stages.DEFAULT_STAGE
        if not checkpoint.exists(name):
            raise UsageError(f"there is no run {name!r} to resume; start it without --resume")
        runlock.refuse_held(name)
        record = checkpoint.read_record(name)
        # the folder names the run: a copied folder goes on as the copy, not as the run its record came from
        config = replace(resume_config(record, stage=stage, **settings), run=name)
        corpus = corpus if corpus is not None else record.corpus_name or DEFAULT_CORPUS
    else:
        config = make_config(stage if stage is not None else stages.DEFAULT_STAGE, run=run, **settings)
        if _taken(config.run) and not overwrite:
            if run is not None:
                runlock.refuse_held(config.run)
                raise UsageError(f"run {config.run!r} already exists{_at_step(config.run)}; use --resume to continue "
                                 "it, --overwrite to replace it, or --run NAME for a new one")
            name = next_free_name(config.run)
            notices.append(f"run {config.run!r} exists, so this run is {name!r} (--run NAME chooses a name)")
            config = replace(config, run=name)
        corpus = corpus if corpus is not None else DEFAULT_CORPUS
    runlock.refuse_held(config.run)
    choice = resolve(config.device)
    dtype = resolve_dtype(choice.device, config.dtype, notices)
    if threads.busy:
        notices.append(threads.notice())
    return Plan(config, corpus, choice, dtype, record, overwrite, tuple(notices), threads, sized)


def _sized(budget: float, device: Optional[str], threads: cpu_threads.Choice) -> sizing.Sizing:
    """The stage for ``budget`` seconds on this machine: by its measured speed on a CPU; on a GPU, the longest
    budget's."""
    _finite_positive("time_budget", budget)
    on_cpu = resolve(device if device is not None else "auto").device.type == "cpu"
    return sizing.choose(budget, tuning.decide(threads.threads).modern_step if on_cpu else None)


def _taken(run: str) -> bool:
    """A run with a record, or one a training holds before its first save.

    A folder that a killed first save left with neither (a ``.part`` file, say)
    is no run: a new one starts there, and its first save clears the leftovers.
    """
    return checkpoint.exists(run) or runlock.holder(run) is not None


def _at_step(run: str) -> str:
    """`` (step N)`` for a run with a record; a damaged record is reported as such (it says to use --overwrite)."""
    return f" (step {checkpoint.read_record(run).step})"
