"""The stores' seams: one rule for names, a run lock taken with filelock, and no import cycle between them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinyshake import corpus
from tinyshake.store import names, record, runlock
from tinyshake.errors import UsageError


@pytest.mark.parametrize("bad", ["nl\n", "", "a/b", "..", "-x", ".hidden", "x" * 65, None])
def test_runs_and_corpora_refuse_the_same_names_in_the_same_words(bad):
    with pytest.raises(UsageError, match=r"^invalid run name .*: use letters, digits, '\.', '_' or '-'$"):
        record.run_dir(bad)
    with pytest.raises(UsageError, match=r"^invalid corpus name .*: use letters, digits, '\.', '_' or '-'$"):
        corpus.validate_name(bad)
    with pytest.raises(UsageError, match="invalid run name"):
        runlock.lock_path(bad)


@pytest.mark.parametrize("good", ["mini", "x" * 64, "a.b_c-d", "0"])
def test_a_valid_name_is_valid_for_both(good):
    assert names.is_valid(good)
    assert record.run_dir(good).name == good and corpus.corpus_dir(good).name == good


def test_the_lock_modules_import_neither_each_other_nor_filelock_until_used():
    code = ("import sys\nimport tinyshake.store.runlock\n"
            "print(sorted(m for m in ('tinyshake.store.record', 'filelock') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # --help loads runlock and must start fast


def test_a_second_hold_in_the_same_process_is_refused_with_the_owners_pid_and_purpose(home):
    with runlock.hold("twice", "rm"):
        assert runlock.holder("twice") == os.getpid()
        with pytest.raises(UsageError, match=rf"^run 'twice' is in use by process {os.getpid()} \(rm\); wait for it "
                                             "to end, or stop it first$"):
            with runlock.hold("twice"):
                pass
    assert runlock.holder("twice") is None
    assert runlock.lock_path("twice").is_file()  # lock files are never deleted
    assert not runlock.owner_path("twice").exists()  # the owner's pid goes with its lock


def test_holder_of_a_run_never_locked_creates_nothing(home):
    assert runlock.holder("never") is None
    assert not runlock.lock_path("never").parent.exists()


def test_holder_needs_no_right_to_write(home):
    with runlock.hold("ro"):
        runlock.lock_path("ro").chmod(0o444)  # the owner's descriptor is open already; a looker's is read-only
        try:
            assert runlock.holder("ro") == os.getpid()
        finally:
            runlock.lock_path("ro").chmod(0o644)
