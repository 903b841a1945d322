#!/usr/bin/env python3
"""Point the ROS 2 wheels' exported CMake files at this interpreter's include directories.

The wheels record the Python and numpy include directories of the machine they were built on;
building this package's interfaces needs the ones of the running interpreter. Idempotent.
"""
import re
import sys
import sysconfig
from pathlib import Path

import numpy

PATTERNS = {
    re.compile(r"[^;\"' ]*/include/python3\.\d+"): sysconfig.get_paths()["include"],
    re.compile(r"[^;\"' ]*/site-packages/numpy/_core/include"): numpy.get_include(),
}


def main(prefix: str) -> int:
    changed = 0
    for path in Path(prefix, "share").rglob("*.cmake"):
        text = path.read_text()
        new = text
        for pattern, replacement in PATTERNS.items():
            new = pattern.sub(lambda m: m.group(0) if Path(m.group(0)).exists() else replacement, new)
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"[setup] CMake exports updated: {changed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else sys.prefix))
