"""Write docs/cli.md: the ``--help`` text of every edgeprune command, read from the click tree.

    .venv/bin/python docs/gen_cli_reference.py    # or: make docs

tests/test_docs.py renders it in memory and fails when the committed docs/cli.md differs. Only
click and ``edgeprune.cli`` are imported (no TensorFlow). The help is rendered at a fixed width,
so the output does not depend on the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"
WIDTH = 100


def _contexts(
    cmd: click.Command, name: str, parent: click.Context | None
) -> Iterator[tuple[click.Context, click.Command]]:
    """Every command under ``cmd`` (itself first), depth first, in click's listing order."""
    settings = {**cmd.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(cmd, info_name=name, parent=parent, **settings)
    yield ctx, cmd
    if isinstance(cmd, click.Group):
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                yield from _contexts(sub, sub_name, ctx)


def render() -> str:
    """docs/cli.md's text."""
    if str(ROOT) not in sys.path:  # this checkout's edgeprune, whatever the venv points at
        sys.path.insert(0, str(ROOT))
    from edgeprune.cli import main

    found = list(_contexts(main, "edgeprune", None))
    lines = [
        "# CLI reference",
        "",
        "Generated from the commands' `--help` by `docs/gen_cli_reference.py` (`make docs`); do "
        "not edit by hand. tests/test_docs.py fails when this file is out of date.",
        "",
    ]
    for ctx, cmd in found[1:]:
        lines.append(f"- `{ctx.command_path}`: {cmd.get_short_help_str(limit=90)}")
    lines.append("")
    for ctx, cmd in found:
        lines += [f"## {ctx.command_path}", "", "```text", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
