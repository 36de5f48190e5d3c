"""Remember the hashes of rendered scripts and files between runs, so a no-op run renders nothing.

Valid while the templates folder, the configuration and the rendering code are
unchanged (the global key); per task, while its recipe and arch are unchanged.
"""

import atexit
import hashlib
import os
import pickle
from pathlib import Path

from .state import write_atomic


def tree_key(folder: Path, *extra: str) -> str:
    digest = hashlib.sha256("\0".join(extra).encode())
    files = [Path(top, name) for top, _, names in os.walk(folder, followlinks=True) for name in names]
    for path in sorted(files):
        digest.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


class RenderCache:
    def __init__(self, file: Path, global_key: str):
        self.file = file
        self.global_key = global_key
        self.entries: dict[str, tuple[str, dict]] = {}
        self.dirty = False
        try:
            with open(file, "rb") as handle:
                stored_key, entries = pickle.load(handle)
            if stored_key == global_key:
                self.entries = entries
        except Exception:  # a cache from another version, or damaged: start empty
            pass
        atexit.register(self.save)

    def get(self, task: str, key: str) -> dict | None:
        entry = self.entries.get(task)
        return entry[1] if entry and entry[0] == key else None

    def put(self, task: str, key: str, hashes: dict) -> None:
        self.entries[task] = (key, hashes)
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            write_atomic(self.file, pickle.dumps((self.global_key, self.entries), protocol=pickle.HIGHEST_PROTOCOL))
            self.dirty = False
