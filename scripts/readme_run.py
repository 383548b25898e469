"""Run every command block of README.md, in order, as a new user would: `make demo` runs this, and
tests/test_readme.py runs it in a temporary folder, so the README cannot drift from what works.

The blocks become one bash script (one shell session, so `source`, `cd` and `export` carry over
from block to block): ```bash blocks verbatim, ```python blocks fed to `python -` with a heredoc.
Servers are started the way the README shows a user (`... &`, then `curl --retry-connrefused`
until they answer, then `kill $!`); whatever is still running when the script ends is stopped.
A block right after a `<!-- readme-run: skip REASON -->` line is not run (the "two commands" block:
it is what runs this). The run happens in `--workdir`, beside a link to the project's `.venv`, so
nothing is written into the checkout.

    python scripts/readme_run.py [--workdir demo_out] [--readme README.md] [--print]
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!--\s*readme-run:\s*skip\b(.*?)-->\s*$")
HEREDOC = "WAYPOST_README_PYTHON"


def blocks(readme: Path) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every bash/python block not marked skip, in order."""
    out: list[tuple[int, str, str]] = []
    lines = readme.read_text().splitlines()
    i, skip_next = 0, False
    while i < len(lines):
        if SKIP.match(lines[i].strip()):
            skip_next = True
        fence = FENCE.match(lines[i])
        if fence and fence.group(1):
            lang, start = fence.group(1), i + 1
            end = next(j for j in range(start, len(lines)) if lines[j].strip() == "```")
            if lang in ("bash", "python") and not skip_next:
                out.append((start + 1, lang, "\n".join(lines[start:end])))
            skip_next = False
            i = end
        i += 1
    return out


def script(readme: Path, workdir: Path) -> str:
    parts = ["set -euo pipefail",
             # stop every server a block left running, whatever happens
             "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
             f"cd {shlex.quote(str(workdir))}"]
    for line, lang, code in blocks(readme):
        parts.append(f"echo \"== README.md line {line} ({lang}), at ${{SECONDS}} s\" >&2")
        if lang == "bash":
            parts.append(code)
        else:
            if HEREDOC in code:
                raise ValueError(f"README.md line {line}: a python block may not contain {HEREDOC}")
            parts.append(f"python - <<'{HEREDOC}'\n{code}\n{HEREDOC}")
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--workdir", type=Path, default=ROOT / "demo_out")
    parser.add_argument("--print", action="store_true", help="print the script instead of running it")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    text = script(args.readme, workdir)
    if args.print:
        sys.stdout.write(text)
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    venv = workdir / ".venv"
    if not venv.exists():
        venv.symlink_to(ROOT / ".venv", target_is_directory=True)
    env = {**os.environ, "DO_NOT_TRACK": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.run(["bash", "-c", text], env=env, cwd=workdir).returncode


if __name__ == "__main__":
    raise SystemExit(main())
