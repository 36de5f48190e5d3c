"""The kinds of task (fetch, build, target, images, toolchain), each a Step (base.py), and what builds
them: the build spec (run in the sandbox of mlbuild/sandbox.py), ccache, distcc, the compiler in use, kconfig checks and menuconfig.
"""

