"""Proves a built layer is what Lambda should load: ``python scripts/check_layer.py LAYER_DIR --arch aarch64``.

- every ``.py`` under ``LAYER_DIR/python`` has ``__pycache__/<name>.cpython-313.pyc`` with
  CPython 3.13's magic number, the unchecked-hash flag (a zip keeps no source timestamps; a
  timestamp or checked .pyc would be recompiled or re-hashed on every cold start) and the hash of
  the source beside it (so it was compiled from that very file);
- the native libraries exist and are all built for the given machine (ELF ``e_machine``).

Standard library only, Python 3.13: it runs on sam's own interpreter in ``make template-check``.
Exits non-zero with what is wrong.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

# pyc header: magic (4 bytes), flags (4, little-endian), then hash (8) or mtime + size.
_FLAG_HASH_BASED = 0b01
_FLAG_CHECK_SOURCE = 0b10
_ELF_MACHINES = {"aarch64": 0xB7, "x86_64": 0x3E}


def bytecode_problems(python_dir: Path) -> tuple[int, list[str]]:
    sources = sorted(python_dir.rglob("*.py"))
    problems: list[str] = []
    for source in sources:
        pyc = Path(importlib.util.cache_from_source(str(source)))
        where = source.relative_to(python_dir)
        if not pyc.is_file():
            problems.append(f"{where}: no {pyc.name}")
            continue
        header = pyc.read_bytes()[:16]
        flags = int.from_bytes(header[4:8], "little")
        if header[:4] != importlib.util.MAGIC_NUMBER:
            problems.append(f"{where}: {pyc.name} is not CPython 3.13 bytecode")
        elif flags != _FLAG_HASH_BASED:
            kind = "checked-hash" if flags == _FLAG_HASH_BASED | _FLAG_CHECK_SOURCE else f"flags {flags:#b}"
            problems.append(
                f"{where}: {pyc.name} is {kind if flags else 'timestamp-based'}, not unchecked-hash"
            )
        elif header[8:16] != importlib.util.source_hash(source.read_bytes()):
            problems.append(f"{where}: {pyc.name} was compiled from another version of the source")
    return len(sources), problems


def native_problems(python_dir: Path, machine: str) -> tuple[int, list[str]]:
    libraries = sorted(python_dir.rglob("*.so"))
    wanted = _ELF_MACHINES[machine].to_bytes(2, "little")
    problems = [
        f"{library.relative_to(python_dir)}: not {machine}"
        for library in libraries
        if library.read_bytes()[:20][18:20] != wanted
    ]
    if not libraries:
        problems.append("no native libraries (cryptography's should be there)")
    return len(libraries), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("layer_dir", type=Path, help="the layer's root, e.g. .aws-sam/build/AlipayAuthLayer")
    parser.add_argument("--arch", choices=sorted(_ELF_MACHINES), required=True)
    args = parser.parse_args(argv)
    if sys.version_info[:2] != (3, 13):
        sys.exit(f"check_layer: run me on Python 3.13 (the layer's), not {sys.version.split()[0]}")
    python_dir = args.layer_dir / "python"
    if not python_dir.is_dir():
        sys.exit(f"check_layer: {python_dir} does not exist; build the layer first")
    modules, bytecode = bytecode_problems(python_dir)
    libraries, native = native_problems(python_dir, args.arch)
    problems = bytecode + native
    for problem in problems[:40]:
        print(f"  {problem}", file=sys.stderr)
    if problems:
        sys.exit(f"check_layer: {len(problems)} problems in {python_dir} (first 40 above)")
    print(
        f"{python_dir}: {modules} modules, each with unchecked-hash cpython-313 bytecode; "
        f"{libraries} native libraries, all {args.arch}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
