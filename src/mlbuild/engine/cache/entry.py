"""What every part of the artifact cache agrees on about an entry: its format and the error a bad one raises.

Its own module so that archive.py (packing, restoring) and manifest.py (the manifest's model, loaded
only when a manifest is read) both import it without importing each other."""

FORMAT = 1  # the manifest's format: an entry of another format is not used


class EntryError(Exception):
    """A cache entry that cannot be used (corrupt, made for another task, unsafe): a one-line reason."""
