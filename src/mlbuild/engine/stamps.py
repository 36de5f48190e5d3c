"""Stamps: the record of each finished task (build/state/<task>.json), independent of doit's DB.

A task's stamp is written last, after its output was renamed into place, so a
task killed at any moment has no valid stamp and runs again. The stamp holds
the task's inputs (to explain a rebuild), their hash (the signature, see
signature.py) and a hash of the output (for early cutoff).
"""

import json
import sys
from pathlib import Path

from mlbuild.engine.signature import ENGINE_FORMAT, signature_of
from mlbuild.trees import remove_tree, write_atomic


class StampStore:
    """Stamps on disk, with a per-process cache: only this process writes them while it holds the tree lock."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[str, dict | None] = {}
        self._warned: set[str] = set()  # damaged stamps already reported by this process

    def path(self, task: str) -> Path:
        return self.folder / (task.replace(":", "_") + ".json")

    def read(self, task: str) -> dict | None:
        """The task's stamp; None when there is none or it is damaged (said once: the task runs again)."""
        if task not in self._cache:
            path = self.path(task)
            try:
                record = json.loads(path.read_bytes())
                problem = _stamp_problem(record)
            except FileNotFoundError:
                record, problem = None, None
            except (OSError, ValueError) as error:  # not UTF-8, not JSON, a folder, unreadable
                record, problem = None, getattr(error, "strerror", None) or "not a JSON stamp"
            if problem and task not in self._warned:
                self._warned.add(task)
                print(f"mlbuild: warning: {path}: damaged stamp ({problem}); {task} counts as not built and runs again",
                      file=sys.stderr, flush=True)
            if problem:
                record = None
            self._cache[task] = record
        return self._cache[task]

    def write(self, task: str, inputs: dict, output_hash: str, text: str | None = None, restored_from: str | None = None,
              provenance: dict | None = None) -> None:
        """Record a finished task; text (its build script) is kept beside it for `mlbuild explain`.

        restored_from names the artifact cache its output came from (None: built here); provenance, who signed
        that entry (host, user, time, key: engine/cache/signing.py), for explain."""
        if text is not None:
            write_atomic(self.path(task).with_suffix(".sh"), text.encode())
        record = {"task": task, "format": ENGINE_FORMAT, "signature": signature_of(inputs), "inputs": inputs, "output_hash": output_hash}
        if restored_from:
            record["restored_from"] = restored_from
        if provenance:
            record["provenance"] = provenance
        write_atomic(self.path(task), json.dumps(record, indent=1, sort_keys=True).encode())
        self._cache[task] = json.loads(json.dumps(record))  # exactly what a later read gives

    def read_text(self, task: str) -> str:
        try:
            return self.path(task).with_suffix(".sh").read_text()
        except FileNotFoundError:
            return ""

    def refresh(self) -> None:
        """Drop the cache: called once the tree lock is held, since others may have written before."""
        self._cache.clear()

    def forget(self, task: str) -> None:
        remove_tree(self.path(task))  # a stamp replaced by a folder heals too
        self._cache[task] = None


# What a stamp holds (StampStore.write); anything else is damage.
_STAMP_SHAPE = {"task": str, "format": str, "signature": str, "inputs": dict, "output_hash": str}


def _stamp_problem(record) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for key, kind in _STAMP_SHAPE.items():
        if not isinstance(record.get(key), kind):
            return f"{key}: expected {'an object' if kind is dict else 'a string'}"
    return None
