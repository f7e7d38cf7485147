"""The documentation builds, its commands resolve, and the README's relative links point at files that exist."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dann.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_docs_build_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link, anchor, nav entry or a page left out of the nav fails."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[test]'), so the docs build is not checked")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "index.html").is_file() and (site / "results" / "mnist-mnistm" / "index.html").is_file()


def _without_code(markdown: str) -> str:
    """The text with fenced code blocks and inline code removed: a link there is an example, not a link."""
    markdown = re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", markdown)


def relative_links(markdown: str) -> list[str]:
    """Link targets of a Markdown text that are paths, without their ``#anchor`` or ``?query``."""
    text = _without_code(markdown)
    inline = re.findall(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)", text)  # [text](target "title")
    targets = [bracketed or plain for bracketed, plain in inline]
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", text, flags=re.M)  # [label]: target
    targets += re.findall(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", text, flags=re.I)
    paths = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith(("#", "//")):
            continue  # a URL (http:, mailto:, ...) or an anchor on the same page
        path = re.split(r"[#?]", target, maxsplit=1)[0]
        if path:
            paths.append(path)
    return paths


def test_relative_links_are_found_however_they_are_written():
    text = """[a](docs/index.md) ![b](docs/img.png "title") [c](<docs/x y.md>) [d](https://e.org) [e](#top)
[f]: docs/guide/runs.md#resume
<a href="LICENSE">g</a> `[h](not/a/link.md)`
```
[i](not/a/link/either.md)
```"""
    assert relative_links(text) == ["docs/index.md", "docs/img.png", "docs/x y.md", "docs/guide/runs.md", "LICENSE"]


def test_every_relative_link_in_the_readme_resolves():
    readme = ROOT / "README.md"
    missing = [link for link in relative_links(readme.read_text(encoding="utf-8")) if not (readme.parent / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def _dann_run_commands() -> list[tuple[str, list[str]]]:
    """``(page:number, arguments)`` of each ``dann run`` command in the docs' shell blocks, leaving
    out placeholders (MODE, N, S) and commands that need an existing run directory or file."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                starts = [i for i in range(len(words) - 1) if words[i : i + 2] == ["dann", "run"]]
                if not starts:
                    continue
                args = words[starts[0] + 1 :]
                if {"--resume", "--list", "--config"} & set(args) or re.search(r"\b(MODE|N|S)\b", " ".join(args)):
                    continue
                found.append((f"{page.relative_to(DOCS)}:{len(found) + 1}", args))
    return found


COMMANDS = _dann_run_commands()


def test_the_docs_have_dann_run_commands_to_check():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where, args", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_dann_run_commands_in_the_docs_resolve(where, args, capsys):
    """Every option a page tells users to set exists and has a valid value (``--print-config`` trains nothing)."""
    assert main([*args, "--print-config"]) == 0, f"{where}: dann run {shlex.join(args)}\n{capsys.readouterr().err}"
