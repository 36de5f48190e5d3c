"""scripts/ninja_time.py: where an LLVM build's time goes, from its ninja log."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ninja_time.py"
sys.path.insert(0, str(SCRIPT.parent))
import ninja_time  # noqa: E402

# An interrupted build resumed: Sema.cpp.o was built twice (the second run counts), the rest once;
# the link has two outputs (one command hash), so two lines: one step.
LOG = """# ninja log v5
0\t60000\t1\ttools/clang/lib/Sema/CMakeFiles/obj.clangSema.dir/Sema.cpp.o\tab
0\t30000\t1\tlib/CodeGen/CMakeFiles/LLVMCodeGen.dir/MachineInstr.cpp.o\tcd
30000\t50000\t1\tlib/Target/AArch64/CMakeFiles/LLVMAArch64CodeGen.dir/AArch64ISelLowering.cpp.o\tef
0\t120000\t1\ttools/clang/lib/Sema/CMakeFiles/obj.clangSema.dir/Sema.cpp.o\tab
0\t6000\t1\ttools/lld/ELF/CMakeFiles/lldELF.dir/Driver.cpp.o\t01
6000\t9000\t1\tbin/llvm\t02
6000\t9000\t1\tbin/clang\t02
"""


def test_each_output_counts_once_with_its_last_run_and_by_part_of_the_tree(tmp_path):
    (tmp_path / ".ninja_log").write_text(LOG)
    rows = {name: (steps, seconds) for name, steps, seconds in ninja_time.breakdown(tmp_path)}
    assert rows == {"clang lib/Sema": (1, 120.0), "LLVM lib/CodeGen": (1, 30.0), "LLVM lib/Target/AArch64": (1, 20.0),
                    "lld ELF": (1, 6.0), "other (tablegen'd files, links, install)": (1, 3.0)}
    lines = ninja_time.table(tmp_path, top=2)
    assert lines[2] == "| clang lib/Sema | 1 | 2 min | 67% |"
    assert lines[4] == "| the other 3 parts | 3 | 0 min | 16% |"
    assert lines[-1] == "| **all** | **5** | **3 min** | |"


def test_a_folder_without_a_ninja_log_is_one_line_and_a_failure(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, tmp_path], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"ninja_time: {tmp_path}/.ninja_log: no ninja log (is {tmp_path} an LLVM build folder that ran?)"
    assert "Traceback" not in result.stderr
