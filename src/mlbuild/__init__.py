"""mlbuild: a minimal static Linux built from upstream sources with LLVM."""
