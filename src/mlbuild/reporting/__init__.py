"""What a run tells: the live progress display, run statistics and their charts, sizes per component
and the graph view.
"""
