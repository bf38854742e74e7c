#!/usr/bin/env python3
"""Mutation testing: would the tests notice if this module were wrong?

For one module it makes small changes one at a time (a flipped or off-by-one comparison,
`and`/`or` swapped, `continue`/`break` swapped, a dropped `raise`, `return`, `not`, call
statement or `if` branch, a boolean or integer constant changed, a loop over nothing), runs
that module's tests against each (`-x`, the quick tier without a libvirt daemon), and prints
the score and every mutant the tests let through ("survived"), as `file:line: change`. For
the libvirt hook's shell front, a hand-written list of textual mutants.

The mutants run in a scratch copy of this checkout with a virtual environment of its own
that imports the copy (the dependencies come from this environment's site-packages), so
tests that start `python -I` subprocesses, install the hook or run the shell front all run
the mutant; the checkout itself is never touched.

A surviving mutant is a test to write, or a change that cannot alter behaviour (an
equivalent mutant): those are listed with the reason in tools/equivalent-mutants.txt, and
the score is the share of the others that the tests kill. A test that compares a committed
generated file with its generator (marker `freshness`: the sidecar ConfigMap carries
engine.py and options.py verbatim) fails on any edit and so would "kill" every mutant of
the files it carries without testing behaviour: such tests are deselected here.

    .venv/bin/python tools/mutate.py nfd_snp/hook.py           # one module
    .venv/bin/python tools/mutate.py all --jobs 2              # every module in MODULES
    .venv/bin/python tools/mutate.py nfd_snp/hook.py --list    # the mutants, not run
    .venv/bin/python tools/mutate.py nfd_snp/hook.py --only 12,40 --keep

It takes minutes per module (a killed mutant costs one pytest start, a survivor the whole
of the module's tests): it is not part of the test suite.

Why not a PyPI tool: mutmut 3 runs its mutants from a copy of the sources whose trampolines
pick the mutant by an environment variable, which neither a `python -I` subprocess nor the
hook (libvirt clears its environment) imports or sees; cosmic-ray mutates in place but has
no notion of a shell file and makes every pair of operators (182 mutants for hook.py, with
variable swaps that mostly say nothing), without this list's dropped calls and branches.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

REPO = Path(__file__).resolve().parent.parent
EQUIVALENT_FILE = REPO / "tools" / "equivalent-mutants.txt"
HOOK_FRONT = "nfd_snp/data/qemu-hook"
MARKERS = "not system and not libvirtd and not freshness"

# Each module and its tests, the quickest and most pointed first (-x stops at the first
# failure, so a killed mutant costs little; a survivor runs all of them).
_HOOK_TESTS = ["tests/test_hook_fail_closed.py", "tests/test_hook.py"]
_FACTS_TESTS = [
    "tests/test_facts_cache_reader.py",
    "tests/test_facts_cache.py",
    "tests/test_hook_fail_closed.py",
    "tests/test_hook.py",
    "tests/test_golden.py",
]
_DOMAIN_TESTS = [
    "tests/test_domain_fail_closed.py",
    "tests/test_options.py",
    "tests/test_domain.py",
    "tests/test_golden.py",
    "tests/test_hook_fail_closed.py",
    "tests/test_hook.py",
    "tests/test_convert.py",
    "tests/test_kubevirt.py",
]
_CHECK_TESTS = [
    "tests/test_checks_snp.py",
    "tests/test_checks.py",
    "tests/test_golden.py",
    "tests/test_rmp.py",
    "tests/test_hook_loaded.py",
    "tests/test_real_hosts.py",
]
MODULES: Dict[str, List[str]] = {
    "nfd_snp/hook.py": _HOOK_TESTS,
    HOOK_FRONT: _HOOK_TESTS,
    "nfd_snp/facts_cache.py": _FACTS_TESTS,
    "nfd_snp/domain/options.py": _DOMAIN_TESTS,
    "nfd_snp/domain/engine.py": _DOMAIN_TESTS,
    "nfd_snp/checks/sev_snp.py": _CHECK_TESTS,
    "nfd_snp/checks/kinds.py": _CHECK_TESTS,
    "nfd_snp/checks/evidence.py": _CHECK_TESTS,
    "nfd_snp/checks/snp_features.py": _CHECK_TESTS,
}

# The shell front's mutants: (the text replaced, its replacement, what that breaks).
SHELL_MUTANTS: List[Tuple[str, str, str]] = [
    ('"prepare begin" | ', "", "prepare no longer checked"),
    (' | "migrate begin"', "", "migrate no longer rewritten"),
    (' | "restore begin"', "", "restore no longer rewritten"),
    ("*) exit 0 ;;\nesac\n# The", "*) ;;\nesac\n# The", "every operation starts Python"),
    ("xml=$(cat)", "xml=$(head -c 65536)", "only the first 64 KiB of the XML read"),
    ("*urn:nfd-snp:1*) ;;", "*<snp:sev-snp*) ;;", "the request found by its usual prefix only"),
    (
        "*urn:nfd-snp:1*) ;;\n*) exit 0 ;;",
        "*urn:nfd-snp:1*) ;;\n*) ;;",
        "every domain starts Python",
    ),
    ('if [ ! -x "$PYTHON" ]', "if false", "a missing interpreter not caught"),
    (
        'the nfd-snp-libvirt package)" >&2\n\texit 1',
        'the nfd-snp-libvirt package)" >&2\n\texit 0',
        "a missing interpreter lets the domain start",
    ),
    ("    sys.exit(1)\n", "    sys.exit(0)\n", "nfd_snp failing to import lets the domain start"),
    ("except Exception as exc:", "except ImportError as exc:", "only ImportError caught"),
    ("printf '%s\\n' \"$xml\" |", 'echo "$xml" |', "the XML passed through echo"),
    ('"$PYTHON" -I -c', '"$PYTHON" -c', "Python started without -I"),
    ("PATH=/usr/sbin:/usr/bin:/sbin:/bin\n", "", "the caller's PATH kept"),
    ("sys.exit(main(sys.argv[1:]))", "main(sys.argv[1:])", "the hook's exit status dropped"),
]


@dataclass
class Mutant:
    number: int
    path: str
    line: int
    scope: str  # the enclosing class and function, e.g. `Fact.read`
    context: str  # the original line, stripped
    change: str
    text: str  # the whole mutated file

    @property
    def key(self) -> str:
        """What names the mutant whatever the lines above it: scope, line text, change."""
        return f"{self.path} :: {self.scope} :: {self.context} :: {self.change}"


# -- making mutants --------------------------------------------------------------------------

_NEGATE = {
    ast.Lt: ast.GtE,
    ast.LtE: ast.Gt,
    ast.Gt: ast.LtE,
    ast.GtE: ast.Lt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_BINOP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
_SYMBOL = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.Add: "+",
    ast.Sub: "-",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
}


class _Source:
    """Character offsets of AST positions (col_offset counts UTF-8 bytes)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1].encode()
        return self.starts[lineno - 1] + len(line[:col].decode())

    def span(self, node) -> Tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def replace(self, node, new: str) -> str:
        start, end = self.span(node)
        return self.text[:start] + new + self.text[end:]


def _skipped_nodes(tree) -> set:
    """Nodes not to mutate: docstrings, annotations, f-strings (messages) and what is under
    them, `if __name__ == "__main__"` and `if TYPE_CHECKING` blocks."""
    skip = set()

    def all_under(node):
        skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                all_under(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                if arg.annotation is not None:
                    all_under(arg.annotation)
            if node.returns is not None:
                all_under(node.returns)
        if isinstance(node, ast.AnnAssign):
            all_under(node.annotation)
        if isinstance(node, ast.JoinedStr):
            all_under(node)
        if isinstance(node, ast.ImportFrom):
            all_under(node)
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test in ("TYPE_CHECKING", "__name__ == '__main__'"):
                all_under(node)
    return skip


def _function_bodies(tree) -> Dict[int, list]:
    """id(Return) -> whether it is the last statement of its function's own body."""
    last = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            tail = node.body[-1]
            if isinstance(tail, ast.Return):
                last[id(tail)] = True
    return last


def _expr_mutants(node) -> Iterator[Tuple[str, str]]:
    """(replacement source, change) for an expression node."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for table in (_NEGATE, _BOUNDARY):
                new_op = table.get(type(op))
                if new_op is None:
                    continue
                ops = list(node.ops)
                ops[i] = new_op()
                mutated = ast.Compare(node.left, ops, node.comparators)
                change = f"`{_SYMBOL[type(op)]}` -> `{_SYMBOL[new_op]}`"
                yield ast.unparse(mutated), change
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        names = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        yield ast.unparse(ast.BoolOp(other, node.values)), f"`{names[0]}` -> `{names[1]}`"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert, ast.USub)):
        symbol = {ast.Not: "not", ast.Invert: "~", ast.USub: "-"}[type(node.op)]
        yield ast.unparse(node.operand), f"drop `{symbol}`"
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
        new_op = _BINOP[type(node.op)]
        mutated = ast.BinOp(node.left, new_op(), node.right)
        yield ast.unparse(mutated), f"`{_SYMBOL[type(node.op)]}` -> `{_SYMBOL[new_op]}`"
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool):
            yield repr(not node.value), f"`{node.value}` -> `{not node.value}`"
        elif isinstance(node.value, int):
            yield repr(node.value + 1), f"`{node.value}` -> `{node.value + 1}`"
    elif isinstance(node, ast.IfExp):
        yield (
            ast.unparse(ast.IfExp(ast.Constant(False), node.body, node.orelse)),
            ("conditional expression always `else`"),
        )


def python_mutants(path: str, text: str) -> List[Mutant]:
    tree = ast.parse(text)
    source = _Source(text)
    skip = _skipped_nodes(tree)
    last_return = _function_bodies(tree)
    found: List[Tuple[int, int, str, str]] = []  # (line, offset, new text, change)

    def add(node, new_text: str, change: str) -> None:
        found.append((node.lineno, source.span(node)[0], new_text, change))

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.expr) and not isinstance(getattr(node, "ctx", None), ast.Store):
            for replacement, change in _expr_mutants(node):
                add(node, source.replace(node, f"({replacement})"), change)
        if isinstance(node, (ast.If, ast.While)) and not isinstance(node.test, ast.Constant):
            add(
                node.test,
                source.replace(node.test, "False"),
                f"`{type(node).__name__.lower()}` condition -> False",
            )
        elif isinstance(node, ast.For):
            add(node.iter, source.replace(node.iter, "()"), "loop over nothing")
        elif isinstance(node, ast.Continue):
            add(node, source.replace(node, "break"), "`continue` -> `break`")
        elif isinstance(node, ast.Break):
            add(node, source.replace(node, "continue"), "`break` -> `continue`")
        elif isinstance(node, ast.Raise):
            if node.exc is not None and "NotImplementedError" in ast.unparse(node.exc):
                continue
            add(node, source.replace(node, "pass"), "drop `raise`")
        elif isinstance(node, ast.Return):
            if not last_return.get(id(node)):
                add(node, source.replace(node, "pass"), "drop early `return`")
            if node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None
            ):
                add(node, source.replace(node, "return None"), "`return ...` -> `return None`")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            name = ast.unparse(node.value.func)
            add(node, source.replace(node, "pass"), f"drop the call `{name}(...)`")
        elif isinstance(node, ast.AugAssign) and type(node.op) in (ast.Add, ast.Sub):
            new_op = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
            mutated = ast.AugAssign(node.target, new_op(), node.value)
            change = f"`{_SYMBOL[type(node.op)]}=` -> `{_SYMBOL[new_op]}=`"
            add(node, source.replace(node, ast.unparse(mutated)), change)

    found.sort(key=lambda m: (m[0], m[1]))
    return _numbered(
        path, text, [(line, new, change) for line, _o, new, change in found], _scopes(tree)
    )


def _scopes(tree) -> List[Tuple[int, int, str]]:
    """(first line, last line, qualified name) of every class and function."""
    found = []

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((child.lineno, child.end_lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def shell_mutants(path: str, text: str) -> List[Mutant]:
    found = []
    for old, new, why in SHELL_MUTANTS:
        if text.count(old) != 1:
            raise SystemExit(f"{path}: the shell mutant's text {old!r} is not there exactly once")
        line = text[: text.index(old)].count("\n") + 1
        shown_old = old.strip().splitlines()[0]
        found.append((line, text.replace(old, new), f"{why} ({shown_old!r} changed)"))
    return _numbered(path, text, found, [])


def _numbered(path: str, text: str, found, scopes) -> List[Mutant]:
    lines = text.splitlines()
    mutants, seen = [], {}
    for line, new_text, change in found:
        context = lines[line - 1].split("  # ")[0].strip()  # without a trailing comment
        inside = [s for s in scopes if s[0] <= line <= s[1]]
        scope = max(inside)[2] if inside else "<module>"
        # The same change to the same text twice in one scope (two `<` on a line, or two
        # equal lines): numbered in order, so that each key names one mutant.
        n = seen[(scope, context, change)] = seen.get((scope, context, change), 0) + 1
        if n > 1:
            change = f"{change} (#{n})"
        mutants.append(Mutant(len(mutants) + 1, path, line, scope, context, change, new_text))
    return mutants


def mutants_of(path: str) -> List[Mutant]:
    text = (REPO / path).read_text()
    return shell_mutants(path, text) if path == HOOK_FRONT else python_mutants(path, text)


# -- equivalent mutants ----------------------------------------------------------------------


def equivalents() -> Dict[str, str]:
    """key -> why, from tools/equivalent-mutants.txt: a key line, then indented reason lines."""
    found: Dict[str, str] = {}
    key = None
    if not EQUIVALENT_FILE.exists():
        return found
    for raw in EQUIVALENT_FILE.read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw[0].isspace():
            if key is None:
                raise SystemExit(f"{EQUIVALENT_FILE}: a reason before any mutant: {raw!r}")
            found[key] = (found[key] + " " + raw.strip()).strip()
        else:
            key = raw.strip()
            found[key] = ""
    empty = [k for k, why in found.items() if not why]
    if empty:
        raise SystemExit(f"{EQUIVALENT_FILE}: no reason given for {empty[0]}")
    return found


# -- running them ----------------------------------------------------------------------------


class Scratch:
    """A copy of the checkout (git's tracked and unignored files) with a virtual environment
    whose Python imports the copy and this environment's dependencies."""

    def __init__(self, base: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nfd-snp-mutate-", dir=base))
        os.chmod(self.dir, 0o755)  # tests that drop to another user still import the copy
        self.repo = self.dir / "repo"
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        for rel in filter(None, files.split("\0")):
            src, dst = REPO / rel, self.repo / rel
            if not (src.exists() or src.is_symlink()):
                continue  # deleted in the work tree
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
        for name in ("nfd_snp.egg-info",):
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, self.repo / name)
        if (REPO / ".cache").exists():
            (self.repo / ".cache").symlink_to((REPO / ".cache").resolve())
        shared = REPO.parent / "shared"
        if shared.exists():
            (self.dir / "shared").symlink_to(shared.resolve())
        self.venv = self.dir / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.python = self.venv / "bin" / "python"
        site = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        Path(site, "nfd_snp_mutate.pth").write_text(
            "\n".join([str(self.repo), *sorted(ours)]) + "\n"
        )
        for tool in ("nfd-snp", "ruff"):
            script = self.venv / "bin" / tool
            if tool == "nfd-snp":
                script.write_text(
                    f"#!{self.python}\nimport sys\nfrom nfd_snp.cli import main\nsys.exit(main())\n"
                )
                script.chmod(0o755)
            elif Path(sys.executable).with_name(tool).exists():
                script.symlink_to(Path(sys.executable).with_name(tool))

    def write(self, path: str, text: str) -> None:
        target = self.repo / path
        target.write_text(text)
        # A mutant of the same size written within the same second would otherwise be
        # served from the previous one's bytecode (its check is mtime and size).
        cache = target.parent / "__pycache__"
        if cache.is_dir():
            for pyc in cache.glob(target.stem + ".*.pyc"):
                pyc.unlink()
        shutil.rmtree(self.repo / ".hypothesis", ignore_errors=True)

    def pytest(self, tests: List[str], timeout: float) -> Tuple[str, float]:
        """("passed" | "failed" | "timeout" | "error <code>", seconds)."""
        command = [str(self.python), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        command += ["--hypothesis-seed=0", "-m", MARKERS, *tests]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=self.repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return "timeout", time.monotonic() - start
        seconds = time.monotonic() - start
        return {0: "passed", 1: "failed", 2: "failed"}.get(code, f"error {code}"), seconds

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_module(path: str, args) -> Tuple[int, int, List[Mutant], float]:
    """(mutants run, killed, unexplained survivors, seconds) of one module."""
    tests = args.tests or MODULES[path]
    missing = [t for t in tests if not (REPO / t).exists()]
    tests = [t for t in tests if t not in missing]
    mutants = mutants_of(path)
    if args.only:
        mutants = [m for m in mutants if m.number in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.number:4} {m.path}:{m.line}: {m.change}    [{m.context}]")
        return len(mutants), 0, [], 0.0
    base = Path(args.scratch) if args.scratch else None
    pool = [Scratch(base) for _ in range(max(1, min(args.jobs, len(mutants))))]
    original = (REPO / path).read_text()
    known = equivalents()
    started = time.monotonic()
    try:
        outcome, baseline = pool[0].pytest(tests, 1800)
        if outcome != "passed":
            raise SystemExit(f"{path}: its tests do not pass unmutated ({outcome}): fix that first")
        timeout = max(60.0, 4 * baseline)
        print(
            f"{path}: {len(mutants)} mutants; tests {' '.join(tests)} "
            f"({baseline:.0f} s unmutated; timeout {timeout:.0f} s)"
            + (f"; not found: {' '.join(missing)}" if missing else ""),
            flush=True,
        )
        free = list(pool)
        lock = threading.Lock()
        results: Dict[int, str] = {}

        def run(mutant: Mutant) -> None:
            with lock:
                scratch = free.pop()
            try:
                scratch.write(path, mutant.text)
                outcome, seconds = scratch.pytest(tests, timeout)
                scratch.write(path, original)
            finally:
                with lock:
                    free.append(scratch)
            verdict = {"failed": "killed", "timeout": "killed (timeout)"}.get(outcome, outcome)
            if outcome == "passed":
                verdict = "equivalent" if mutant.key in known else "SURVIVED"
            results[mutant.number] = verdict
            if not args.verbose and len(results) % 25 == 0:
                print(f"  ... {len(results)} of {len(mutants)} run", flush=True)
            if args.verbose or verdict == "SURVIVED":
                print(
                    f"  {mutant.number:4} {verdict:16} {seconds:5.1f} s  "
                    f"{mutant.path}:{mutant.line}: {mutant.change}    [{mutant.context}]",
                    flush=True,
                )

        with ThreadPoolExecutor(len(pool)) as executor:
            list(executor.map(run, mutants))
    finally:
        if args.keep:
            print(f"scratch copies kept: {' '.join(str(s.dir) for s in pool)}")
        else:
            for scratch in pool:
                scratch.remove()
    seconds = time.monotonic() - started
    errors = [m for m in mutants if results[m.number].startswith("error")]
    for m in errors:
        print(f"  {m.number:4} {results[m.number]}: {m.path}:{m.line}: {m.change}")
    killed = sum(1 for m in mutants if results[m.number].startswith("killed"))
    equivalent = [m for m in mutants if results[m.number] == "equivalent"]
    survivors = [m for m in mutants if results[m.number] == "SURVIVED"]
    stale = [m for m in mutants if m.key in known and results[m.number] != "equivalent"]
    counted = len(mutants) - len(equivalent)
    score = 100.0 * killed / counted if counted else 100.0
    print(
        f"{path}: {score:.1f}% of {counted} non-equivalent mutants killed ({killed} killed, "
        f"{len(survivors)} survived, {len(equivalent)} equivalent"
        + (f", {len(errors)} errors" if errors else "")
        + f"; {len(mutants)} in all, {seconds / 60:.1f} min)"
    )
    for m in survivors:
        print(f"  survived: {m.path}:{m.line}: {m.change}    [{m.context}]")
        print(f"    key: {m.key}")
    for m in stale:
        print(f"  listed as equivalent but {results[m.number]}: {m.key}")
    return len(mutants), killed, survivors, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"Modules: {', '.join(MODULES)}, or all.",
    )
    parser.add_argument("module", help="a path relative to the checkout, or `all`")
    parser.add_argument("--tests", nargs="+", help="test files to run instead of the module's")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument(
        "--only",
        type=lambda s: {int(n) for n in s.split(",")},
        default=None,
        help="run only these mutant numbers (as --list shows them)",
    )
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument("--scratch", help="where scratch copies go (default: the temp dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant")
    args = parser.parse_args(argv)
    paths = list(MODULES) if args.module == "all" else [args.module]
    for path in paths:
        if path not in MODULES and not args.tests:
            parser.error(f"{path}: not in MODULES; name its tests with --tests")
        if not (REPO / path).is_file():
            parser.error(f"{path}: no such file in {REPO}")
    survived = 0
    for path in paths:
        _n, _killed, survivors, _s = run_module(path, args)
        survived += len(survivors)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
