"""Private files: ``MINETUNE_HOME`` and its folders are 0700, every file minetune keeps there 0600,
whatever the umask.

- :func:`private_home` runs when a store opens (``Store.open``): it creates the home as 0700 and
  fixes an existing install — the home, its top-level files, and everything under the folders
  minetune writes (``adapters/``, ``models/``, ``dspy-cache/``, ``audio/``). Other folders someone put in the
  home are left as they are (the 0700 home already closes them to other users).
- :func:`private_tree` fixes one folder minetune has just written (an adapter, a job folder).
- :func:`private_file` creates or fixes one file (the SQLite database before SQLite opens it, so
  its ``-wal`` and ``-shm`` files, which SQLite creates with the database's mode, are 0600 too).
- :data:`PRIVATE_UMASK` is what the ``minetune`` command sets for its whole process.

Symbolic links are never followed, and files that are not the user's own are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
# Folders under the home whose whole tree is minetune's (walked and fixed on open).
OWNED_FOLDERS = ("adapters", "models", "dspy-cache", "audio")


def _fix(path: Path) -> None:
    """Folders 0700, files 0600 (an owner's execute bit is kept); links and others' files skipped."""
    try:
        info = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        return
    current = stat.S_IMODE(info.st_mode)
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE | (current & 0o100)
    if current != wanted:
        with contextlib.suppress(OSError):
            os.chmod(path, wanted)


def user_folder(user: str) -> str:
    """A folder name for ``user`` (adapters live in ``adapters/<user>/<program>/``), distinct per
    user name: a name that had to be changed carries a short hash of the original."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in user).strip("._") or "user"
    if cleaned == user:
        return cleaned
    return f"{cleaned}-{hashlib.sha256(user.encode('utf-8')).hexdigest()[:8]}"


def private_tree(folder: str | Path) -> None:
    """Make ``folder`` and everything under it private: folders 0700, files 0600 (an owner's
    execute bit is kept). Links are not followed."""
    root = Path(folder)
    if not root.exists() or root.is_symlink():
        return
    _fix(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in dirnames:
            _fix(base / name)
        for name in filenames:
            _fix(base / name)


def private_file(path: str | Path) -> Path:
    """Create ``path`` (and its missing parent folders, 0700) as an empty 0600 file if it does not
    exist, else make it 0600. An existing parent folder is left as it is."""
    target = Path(path)
    private_dirs(target.parent, fix_existing=False)
    try:
        fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    except OSError:
        _fix(target)
        return target
    os.close(fd)
    _fix(target)
    return target


def private_dirs(folder: str | Path, *, fix_existing: bool = True) -> Path:
    """Create ``folder`` with its missing parents as 0700 folders; an existing ``folder`` is made
    0700 too unless ``fix_existing`` is False (existing parents are always left alone)."""
    target = Path(folder)
    missing = []
    probe = target
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=DIR_MODE)
        _fix(path)
    if fix_existing or missing:
        _fix(target)
    return target


def private_home(home: str | Path) -> Path:
    """Create the home folder as 0700 or fix an existing one: the home 0700, its top-level files
    (the database and its ``-wal``/``-shm``, ``config.toml``, exports) 0600, and the folders
    minetune writes made private throughout."""
    root = private_dirs(Path(home).expanduser())
    try:
        entries = list(root.iterdir())
    except OSError:
        return root
    for entry in entries:
        if entry.name in OWNED_FOLDERS:
            private_tree(entry)
        elif not entry.is_symlink() and entry.is_file():
            _fix(entry)
    return root
