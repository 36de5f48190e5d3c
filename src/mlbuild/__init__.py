"""mlbuild: a minimal static Linux built from pristine sources by a dependency graph.

The folders are the layers, each importing only those listed before it:
model (recipes, configuration, graph) → sources (download, unpack) → engine
(signatures, stamps, execution, artifact cache) → system (what goes into a
target and its images) → steps (the kinds of task and what builds them), boot
(QEMU) and reporting → exports (SBOM, legal-info, shell script) → frontend
(the doit and mlbuild commands). The modules here are the ground floor that
every layer shares: errors, file trees, child processes, the sandbox, sealed
cache files, templates and the pinned build environment.
"""
