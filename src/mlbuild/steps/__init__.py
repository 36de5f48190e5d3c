"""One module per kind of task: fetch, build, target, images."""
