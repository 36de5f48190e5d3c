"""The commands people type: the loaded Project, doit's tasks and commands (dodo.py, doit list/info/
forget) and the mlbuild command line.
"""
