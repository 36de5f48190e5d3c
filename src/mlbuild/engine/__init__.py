"""The incremental engine: a task's signature and stamp, the up-to-date decision, running a step into a
staging folder, the plan of a run, offline checks, the tree lock and the artifact cache (cache/).
"""
