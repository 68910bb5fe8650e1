"""The README's library example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["./scripts/serve", "./scripts/test"]
    assert text.index(first_block.group(0)) < 40


def test_the_library_example_runs_and_prints_the_demo_answer(tmp_path: Path) -> None:
    (example,) = python_blocks()
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": ":".join(sys.path)},
        check=True,
    )
    assert "chatcore" in out.stdout
    assert "What is chatcore?" in out.stdout  # the demo model quotes the question
    assert "litellm" not in out.stderr.lower()
