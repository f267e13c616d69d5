#!/usr/bin/env python3
"""The shape of saker's C++: longest functions, largest files, and which folders include which.

    scripts/code_shape.py [ROOT] [--top N]

ROOT is a checkout (default: the one holding this script), so an older commit can be measured
from a worktree: `git worktree add /tmp/before <commit> && scripts/code_shape.py /tmp/before`.
Prints, over the C++ sources (.h .hpp .cc .cpp .cu .cuh) of engine/ kernels/ parallel/ launcher/
scripts/bench/:

  (a) the N longest functions (file:line, name, lines from signature to closing brace);
  (b) the N largest files by lines;
  (c) the #include edges that cross folders: counts of includes from folder X into folder Y, where
      a folder is a top-level folder and its first subfolder (engine/model, launcher/app; files
      directly in a top-level folder count as engine/., launcher/.), and an edge counts when the
      top-level folders differ or when both sides are different parts of launcher/;
  (d) the includes of engine/model/ from outside engine/ and tests/ (any C++ file of the checkout),
      by including file.

(a) needs lizard, a C/C++ function parser: `python3 -m pip install lizard`. Without it (a) is
skipped with that hint; the rest needs only the standard library.
"""

import argparse
import collections
import os
import re
import sys
from pathlib import Path

ROOTS = ["engine", "kernels", "parallel", "launcher", "scripts/bench"]
CXX_SUFFIXES = {".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh"}
SKIP_DIRS = {"build", "third_party", "external", "_deps", "node_modules"}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def cxx_files(root, under):
    """C++ files below root/under, as paths relative to root, sorted."""
    base = root / under
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [
            d for d in dirnames
            if not d.startswith(".") and not d.startswith("build") and d not in SKIP_DIRS
        ]
        for name in filenames:
            if Path(name).suffix in CXX_SUFFIXES:
                found.append((Path(dirpath) / name).relative_to(root))
    return sorted(found)


def source_files(root):
    files = []
    for under in ROOTS:
        if (root / under).is_dir():
            files += cxx_files(root, under)
    return files


def read(root, rel):
    return (root / rel).read_text(encoding="utf-8", errors="replace")


def longest_functions(root, files, top):
    try:
        import lizard
    except ImportError:
        print("  (skipped: needs lizard; install it with `python3 -m pip install lizard`)")
        return
    functions = []
    for rel in files:
        # lizard picks its parser by file name; CUDA sources are parsed as C++.
        name = str(rel) if rel.suffix not in (".cu", ".cuh") else str(rel) + ".cpp"
        info = lizard.analyze_file.analyze_source_code(name, read(root, rel))
        for f in info.function_list:
            functions.append((f.end_line - f.start_line + 1, f"{rel}:{f.start_line}", f.name))
    functions.sort(key=lambda f: (-f[0], f[1]))
    for lines, where, name in functions[:top]:
        print(f"  {lines:5d}  {where:48s} {name}")


def largest_files(root, files, top):
    sizes = sorted(((len(read(root, rel).splitlines()), str(rel)) for rel in files),
                   key=lambda s: (-s[0], s[1]))
    for lines, rel in sizes[:top]:
        print(f"  {lines:5d}  {rel}")


def folder(rel):
    """The folder an include edge is counted at: top-level folder and first subfolder."""
    parts = Path(rel).parts
    return f"{parts[0]}/{parts[1]}" if len(parts) > 2 else f"{parts[0]}/."


def resolve(root, including, target):
    """The checkout file an #include "target" names (project-root or file-relative), or None."""
    for candidate in (Path(target), including.parent / target):
        path = root / candidate
        if path.is_file():
            return Path(os.path.normpath(candidate))
    return None


def include_edges(root, files):
    """(including file, included file) for every quoted #include that names a file of the checkout."""
    for rel in files:
        for target in INCLUDE.findall(read(root, rel)):
            resolved = resolve(root, rel, target)
            if resolved is not None:
                yield rel, resolved


def crosses(src, dst):
    top_src, top_dst = src.split("/")[0], dst.split("/")[0]
    return top_src != top_dst or (top_src == "launcher" and src != dst)


def include_matrix(root, files):
    counts = collections.Counter()
    for rel, target in include_edges(root, files):
        src, dst = folder(rel), folder(target)
        if crosses(src, dst):
            counts[src, dst] += 1
    if not counts:
        print("  (none)")
        return
    sources = sorted({s for s, _ in counts})
    targets = sorted({d for _, d in counts})
    width = max(len(s) for s in sources)
    print("  columns: " + ", ".join(f"[{i}] {t}" for i, t in enumerate(targets)))
    print("  " + " " * width + "".join(f"{'[' + str(i) + ']':>6s}" for i in range(len(targets))))
    for s in sources:
        cells = "".join(f"{counts[s, t] or '.':>6}" for t in targets)
        print(f"  {s:{width}s}{cells}")
    print(f"  edges (from -> into: includes), {sum(counts.values())} in all:")
    for (s, d), n in sorted(counts.items()):
        print(f"    {s} -> {d}: {n}")


def model_includes_outside(root):
    files = [rel for rel in cxx_files(root, ".") if rel.parts[0] not in ("engine", "tests")]
    by_file = collections.Counter()
    for rel, target in include_edges(root, files):
        if target.parts[:2] == ("engine", "model"):
            by_file[str(rel)] += 1
    print(f"  {sum(by_file.values())} includes of engine/model/ from outside engine/ and tests/")
    for f, n in sorted(by_file.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {f}: {n}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=Path(__file__).resolve().parent.parent,
                        type=Path, help="the checkout to measure (default: this one)")
    parser.add_argument("--top", type=int, default=15, help="entries of (a) and (b) (15)")
    args = parser.parse_args()
    root = args.root.resolve()
    files = source_files(root)
    if not files:
        sys.exit(f"code_shape.py: no C++ sources under {root} ({', '.join(ROOTS)})")
    print(f"code shape of {root}: {len(files)} C++ files in {', '.join(ROOTS)}")
    print(f"\n(a) the {args.top} longest functions (lines, file:line, name)")
    longest_functions(root, files, args.top)
    print(f"\n(b) the {args.top} largest files (lines)")
    largest_files(root, files, args.top)
    print("\n(c) #include edges across folders (rows include columns)")
    include_matrix(root, files)
    print("\n(d) engine/model/ included outside engine/ and tests/")
    model_includes_outside(root)


if __name__ == "__main__":
    main()
