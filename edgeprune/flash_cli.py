"""``edgeprune flash``: the click command (registered by cli.py with ``main.add_command``).

Only parsing and printing live here; ``edgeprune.deploy.flash`` does the work and returns the
commands, so ``--dry-run`` prints exactly what a real run would execute.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeprune.cli_support import CONTEXT, handle_errors


def _flash(**kwargs) -> int:
    from edgeprune.deploy.flash import flash as do_flash
    from edgeprune.targets import load_target

    result = do_flash(load_target(kwargs.pop("target")), **kwargs)
    if result.dry_run:
        click.echo(f"# dry run: what `edgeprune flash` would do on {result.device}")
        for line in result.commands:
            click.echo(line)
        return 0
    for note in result.notes:
        click.echo(note)
    if result.remote_dir:
        if kwargs["rollback"]:
            click.echo(f"rolled back {result.device}:{result.remote_dir}: current = release "
                       f"{result.release}, previous = {result.previous}")
        elif result.changed:
            click.echo(f"flashed {result.device}:{result.remote_dir}/current → release "
                       f"{result.release} (previous: {result.previous or 'none'})")
        else:
            click.echo(f"{result.device} already runs release {result.release}; nothing changed")
    return 0


@click.command(context_settings=CONTEXT)
@click.option("--target", "target", required=True, help="Target name or profile .toml path.")
@click.option("--artifacts", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The folder `edgeprune build` wrote for this target (with manifest.json).")
@click.option("--device", "device_uri", metavar="URI",
              help="ssh://user@host[:port] (Linux), pyocd:TARGET or esptool:PORT (Cortex-M).")
@click.option("--dry-run", is_flag=True, help="Print the exact commands; change nothing.")
@click.option("--rollback", is_flag=True,
              help="Make the previous release current again (Linux devices).")
@click.option("--remote-dir", metavar="PATH",
              help="Install folder on the device [default: /opt/edgeprune/<model>].")
@click.option("--known-hosts", type=click.Path(path_type=Path, dir_okay=False),
              help="known_hosts file to check the device's host key [default: "
                   "~/.ssh/known_hosts]. Unknown or changed keys are refused.")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False),
              help="Private key for SSH [default: ssh-agent, then ~/.ssh/id_*].")
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, help="Seconds to wait for the device to answer.")
def flash(**kwargs) -> None:
    """Put built artifacts on a device: upload, verify sha256, switch atomically.

    Linux devices keep the previous release for --rollback. Cortex-M targets get a TFLite-Micro
    bundle (DIR/firmware) that pyOCD or esptool flashes once built.
    """
    handle_errors(_flash)(**kwargs)
