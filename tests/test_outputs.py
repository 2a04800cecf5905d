"""Issue #24, class 1: an output the user names (``plot --svg``, ``train --metrics``) never replaces what is not its own.

One rule for every output (:func:`tinyshake.store.atomic.output_target`): nothing inside tinyshake's data folder, nothing
over a target that exists and is not a regular file (it is refused in one line), a regular file replaced atomically,
and a link followed to the file it names. Devices, FIFOs and sockets go through the installed entry point.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import subprocess_env
from test_environment import template, trained  # noqa: F401 - the module's tiny run, trained once
from test_train import TINY_ARGS, TINYSHAKE, snapshot, tiny_run

OUTPUTS = {"svg": ["plot", "r", "--svg"], "metrics": ["train", *TINY_ARGS, "--run", "m", "--sample-chars", "0",
                                                      "--metrics"]}


def installed(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed entry point, with a timeout: writing into a FIFO with no reader would wait for ever."""
    return subprocess.run([TINYSHAKE, *args], env=subprocess_env(home), capture_output=True, text=True, timeout=120)


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write"), done.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("where", ["runs/r/config.json", "cache/new.svg"])
def test_every_output_refuses_a_path_inside_the_data_folder(trained, home, output, where):
    before = snapshot(home)
    assert_refused(installed(home, *OUTPUTS[output], str(home / where)), "inside tinyshake's data folder")
    assert snapshot(home) == before


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_link_into_the_data_folder_is_refused_too(trained, home, tmp_path, output):
    link = tmp_path / "innocent.svg"
    link.symlink_to(home / "runs" / "r" / "config.json")
    before = snapshot(home)
    assert_refused(installed(home, *OUTPUTS[output], str(link)), "inside tinyshake's data folder")
    assert snapshot(home) == before and link.is_symlink()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def _folder(path: Path) -> None:
    path.mkdir()


def _null_device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a character device needs root")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a copy of /dev/null


MAKERS = {"fifo": (_fifo, "a FIFO"), "socket": (_socket, "a socket"), "folder": (_folder, "a folder"),
          "device": (_null_device, "a character device")}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("kind", MAKERS)
def test_a_target_that_is_not_a_regular_file_is_refused_and_stays(trained, home, tmp_path, output, kind):
    make, words = MAKERS[kind]
    target = tmp_path / "target"
    make(target)
    before = os.lstat(target)
    assert_refused(installed(home, *OUTPUTS[output], str(target)), words, "never replaces")
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_link_is_followed_and_the_file_it_names_is_replaced(trained, home, tmp_path, output):
    target, link = tmp_path / "real.out", tmp_path / "link.out"
    target.write_text("old\n")
    link.symlink_to(target.name)
    done = installed(home, *OUTPUTS[output], str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == target.name
    assert target.read_text() != "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["home", "link.out",
                                                                                            "real.out"]
