"""Remember the hashes of rendered scripts and files between runs, so a no-op run renders nothing.

Valid while the templates folder and the rendering code are unchanged (the
global key); per task, while everything its templates see is unchanged
(signature.render_key). The hashes go into signatures, so the file is sealed
(sealed.py): one this user's mlbuild did not write is ignored and written anew.
"""

import atexit
import json
from pathlib import Path

from mlbuild.sealed import seal, unseal
from mlbuild.trees import write_atomic

PURPOSE = "render"


class RenderCache:
    def __init__(self, file: Path, global_key: str):
        self.file = file
        self.global_key = global_key
        self.entries: dict[str, tuple[str, dict]] = {}
        self.dirty = False
        self.entries = _load(file, global_key)
        atexit.register(self.save)

    def get(self, task: str, key: str) -> dict | None:
        entry = self.entries.get(task)
        return entry[1] if entry and entry[0] == key else None

    def put(self, task: str, key: str, hashes: dict) -> None:
        self.entries[task] = (key, hashes)
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            data = {"key": self.global_key, "entries": {task: list(entry) for task, entry in self.entries.items()}}
            sealed = seal(PURPOSE, json.dumps(data, separators=(",", ":")).encode())
            try:
                if sealed is not None:  # else no secret to seal with: nobody could trust the file
                    write_atomic(self.file, sealed)
            except OSError:
                pass  # only a cache: the next run renders again
            self.dirty = False


def _load(file: Path, global_key: str) -> dict:
    """The entries, if the file is this cache's sealed JSON for this key; anything else (damaged, old, planted) is dropped.

    Data only: unlike a pickle, nothing in the file can run code when read."""
    try:
        payload = unseal(PURPOSE, file.read_bytes())
        if payload is None:
            return {}
        stored = json.loads(payload)
        if not isinstance(stored, dict) or stored.get("key") != global_key:
            return {}
        entries = {}
        for task, entry in stored["entries"].items():
            key, hashes = entry
            if isinstance(key, str) and isinstance(hashes, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
                entries[task] = (key, hashes)
        return entries
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
