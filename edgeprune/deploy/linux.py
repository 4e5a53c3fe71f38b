"""Put built artifacts on a Linux device over SSH.

Linux devices (``ssh://``): releases are content-addressed folders; ``current`` and ``previous``
are symlinks switched atomically (a new symlink renamed over the old one), so the device always
runs a complete, verified release:

    REMOTE_DIR/releases/<id>/...   one folder per release (id = hash of the manifest's artifacts)
    REMOTE_DIR/current  -> releases/<id>
    REMOTE_DIR/previous -> releases/<older id>
    REMOTE_DIR/.incoming-<random>/  an upload in progress (removed on any failure)

Files are uploaded under the temporary name, their sha256 is computed on the device and checked
against the artifacts folder's manifest.json, and only then is the folder renamed into
``releases/`` and ``current`` switched. ``rollback`` swaps ``current`` and ``previous``.

Faults (tests/test_flash_faults.py): a connection cut, a full disk or a device reboot at any step
leaves ``current`` naming the complete release it named before, and ends in a ToolError (exit 3)
saying which release the device runs. Free space is checked before uploading; ``sync`` runs
before the switch, so a power cut cannot leave ``current`` naming files still only in the page
cache; ``.incoming-*`` folders left by an interrupted flash are removed by the next one (so one
flash at a time per device folder). A release folder is trusted only after its hashes match,
the running one too: flashing the release the device already runs checks its files, and
uploads them again if they changed on the device (``previous`` stays as it was).

``dry_run`` returns the exact commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from edgeprune.deploy.result import FlashResult
from edgeprune.device import SshDevice
from edgeprune.errors import BadInputError, ToolError
from edgeprune.manifest import sha256_file

log = logging.getLogger(__name__)

DEFAULT_REMOTE_ROOT = "/opt/edgeprune"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")
_SAFE_REMOTE = re.compile(r"/[A-Za-z0-9._+/-]{1,1023}")


# -- the artifacts folder ---------------------------------------------------------------------
def safe_relative(name: str, what: str) -> PurePosixPath:
    """A relative artifact name with no '..', no absolute path, no odd characters."""
    p = PurePosixPath(name)
    if (not name or p.is_absolute() or "\\" in name or any(part in ("", ".", "..")
                                                           for part in name.split("/"))
            or not all(_SAFE_NAME.fullmatch(part) for part in p.parts)):
        raise BadInputError(what, f"artifact name {name!r} is not a plain relative path",
                            "Names may not contain '..', start with '/' or use shell characters;"
                            " rebuild the artifacts with edgeprune build")
    return p


def read_manifest(artifacts: Path) -> dict[str, str]:
    """``{relative name: sha256}`` from DIR/manifest.json, each checked against the file."""
    path = Path(artifacts) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"--artifacts {artifacts}", "has no manifest.json",
                            "Point --artifacts at a folder written by edgeprune build") from None
    except (OSError, ValueError) as exc:
        raise BadInputError(str(path), f"cannot be read ({exc})", "Rebuild the artifacts") from None
    entries = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise BadInputError(str(path), "has no 'artifacts' table", "Rebuild the artifacts")
    base = Path(artifacts).resolve()
    checked: dict[str, str] = {}
    for name, digest in sorted(entries.items()):
        rel = safe_relative(str(name), str(path))
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BadInputError(str(path), f"{name}: {digest!r} is not a sha256", "Rebuild")
        local = (base / rel).resolve()
        if not local.is_relative_to(base) or not local.is_file():
            raise BadInputError(f"--artifacts {artifacts}", f"{name} is listed but missing",
                                "Rebuild the artifacts")
        if sha256_file(local) != digest:
            raise BadInputError(f"{artifacts}/{name}", "does not match its sha256 in manifest.json"
                                " (changed after the build)", "Rebuild the artifacts")
        checked[rel.as_posix()] = digest
    return checked


def release_id(entries: dict[str, str]) -> str:
    text = "".join(f"{name}\0{digest}\n" for name, digest in sorted(entries.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_name(artifacts: Path) -> str:
    """The folder name under /opt/edgeprune: the input model's stem, else the .tflite's."""
    try:
        inputs = json.loads((Path(artifacts) / "manifest.json").read_text()).get("inputs", {})
        stem = Path(inputs["model"]["path"]).stem
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        stem = next((p.stem for p in sorted(Path(artifacts).glob("*.tflite"))), "model")
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".-") or "model"
    return stem[:64]


def check_remote_dir(remote_dir: str) -> str:
    p = PurePosixPath(remote_dir)
    if (not _SAFE_REMOTE.fullmatch(remote_dir) or ".." in p.parts or len(p.parts) < 2
            or "//" in remote_dir):
        raise BadInputError(f"--remote-dir {remote_dir!r}", "is not an absolute, plain folder "
                            "path (no '..', no shell characters, not '/')",
                            f"Use e.g. {DEFAULT_REMOTE_ROOT}/mymodel")
    return str(p)


# -- talking to the device --------------------------------------------------------------------
class _Remote(Protocol):
    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True): ...
    def put(self, local: Path, remote: str) -> None: ...


def upload(remote: _Remote, local: Path, dest: str) -> None:
    """One file to the device (a seam for tests that inject a broken upload)."""
    remote.put(local, dest)


def checkpoint(step: str) -> None:
    """Called between device steps ("uploaded": verified, not yet switched). Does nothing: a
    seam where tests/test_flash_faults.py makes the device go away."""


@dataclass
class _Recorded:
    status: int = 1
    stdout: str = ""
    stderr: str = ""


class _DryRun:
    """Records what would run; answers as an empty device would."""

    def __init__(self, device: SshDevice) -> None:
        self.device = device
        self.commands: list[str] = []

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> _Recorded:
        self.commands.append(_ssh_line(self.device, argv))
        return _Recorded(status=0 if check else 1)

    def put(self, local: Path, remote: str) -> None:
        self.commands.append(f"sftp -P {self.device.port} {self.device.user}@{self.device.host}"
                             f" <<< {shlex.quote(shlex.join(['put', str(local), remote]))}")


def _ssh_line(device: SshDevice, argv: list[str]) -> str:
    return shlex.join(["ssh", "-p", str(device.port), f"{device.user}@{device.host}",
                       shlex.join(argv)])


class _Logged:
    """A live session that also records each command, for the result."""

    def __init__(self, session, device: SshDevice) -> None:
        self.session, self.device, self.commands = session, device, []

    def run(self, argv: list[str], timeout: float = 60.0, check: bool = True):
        self.commands.append(_ssh_line(self.device, argv))
        return self.session.run(argv, timeout=timeout, check=check)

    def put(self, local: Path, remote: str) -> None:
        self.commands.append(f"sftp put {local} {remote}")
        self.session.put(local, remote)


# Each remote step is one fixed script run as `sh -c SCRIPT edgeprune ARG…`: device paths and
# names travel as positional parameters ("$1"…), never as shell text, and one round trip does
# what would otherwise take several.
_STATE = """
mkdir -p -- "$1/releases" || exit 1
rm -rf -- "$1"/.incoming-*
for link in current previous; do
  target=$(readlink -- "$1/$link") && printf '%s=%s\\n' "$link" "$target"
done
[ -d "$1/releases/$2" ] && echo have=yes
exit 0
"""
# Symlinks are switched by renaming a new symlink over the old one: rename(2) is atomic, so
# `current` always names a complete release. `previous` is switched first.
_SWITCH = """
dir=$1 new=$2 old=$3
if [ -n "$old" ]; then
  ln -sfn -- "$old" "$dir/.previous.new" && mv -Tf -- "$dir/.previous.new" "$dir/previous" || exit 1
fi
ln -sfn -- "$new" "$dir/.current.new" && mv -Tf -- "$dir/.current.new" "$dir/current"
"""
# Move a verified upload into releases/, switch, then drop releases neither link names.
# sync first: the hashes were checked against the page cache, and after a power cut `current`
# must not name files that never reached the disk. A non-zero exit means `current` is unchanged.
_COMMIT = """
dir=$1 incoming=$2 id=$3 old=$4
sync
# Replacing a damaged copy of this release, if any (when `current` names it, it dangles between
# rm and mv: it named damaged files already).
if [ -n "$incoming" ]; then
  rm -rf -- "$dir/releases/$id" && mv -T -- "$incoming" "$dir/releases/$id" || exit 1
fi
sh -c "$5" edgeprune "$dir" "releases/$id" "$old" || exit 1
sync
for r in "$dir"/releases/*; do
  name=${r##*/}
  [ "releases/$name" = "releases/$id" ] || [ "releases/$name" = "$old" ] || rm -rf -- "$r"
done
exit 0
"""


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script.strip(), "edgeprune", *args]


def _state(remote: _Remote, remote_dir: str, rid: str) -> dict[str, str]:
    res = remote.run(_sh(_STATE, remote_dir, rid))
    state = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    for link in ("current", "previous"):  # only links we made count
        if not re.fullmatch(r"releases/[0-9a-f]{16}", state.get(link, "")):
            state.pop(link, None)
    return state


def _remote_hashes(remote: _Remote, folder: str, names: list[str]) -> dict[str, str]:
    res = remote.run(["sha256sum", "--", *[f"{folder}/{n}" for n in names]], check=False,
                     timeout=300)
    got = {}
    for line in res.stdout.splitlines():
        digest, _, path = line.partition("  ")
        if path.startswith(folder + "/"):
            got[path[len(folder) + 1:]] = digest.strip()
    return got


def free_bytes(remote: _Remote, folder: str) -> int | None:
    """Bytes available in ``folder`` on the device (``df -Pk``), None when df cannot tell."""
    res = remote.run(["df", "-Pk", "--", folder], check=False)
    try:
        return int(res.stdout.strip().splitlines()[-1].split()[3]) * 1024
    except (IndexError, ValueError):
        return None


def _runs(current: str | None) -> str:
    """What the device runs after a failed flash, for the error message."""
    if current:
        return f"still runs release {current.split('/')[1]}"
    return "has no release installed yet"


def _discard(remote: _Remote, incoming: str, label: str) -> None:
    """Remove a staging folder, best effort: after a lost connection the next flash does it."""
    if not incoming or isinstance(remote, _DryRun):
        return
    try:
        remote.run(["rm", "-rf", "--", incoming], check=False)
    except ToolError as exc:  # never hide the fault that brought us here
        log.warning("could not remove %s on %s (%s); the next flash removes it", incoming,
                    label, exc.problem)


def _check_space(remote: _Remote, artifacts: Path, entries: dict[str, str], remote_dir: str,
                 label: str, state: dict[str, str]) -> None:
    """Refuse before uploading when the release cannot fit beside the ones kept."""
    if isinstance(remote, _DryRun):
        return
    need = sum(-(-(Path(artifacts) / n).stat().st_size // 4096) * 4096 for n in entries)
    free = free_bytes(remote, remote_dir)
    if free is None or free >= need:
        return
    fix = f"Free at least {(need - free) / 2**20:.1f} MiB on the device, then flash again"
    previous = state.get("previous")
    if previous and previous != state.get("current"):  # a successful flash drops it anyway
        fix += (f"; the previous release is dropped by a successful flash anyway, so removing it"
                f" is safe (only --rollback is lost): rm -rf -- {remote_dir}/{previous}")
    raise ToolError(f"flash to {label}",
                    f"{remote_dir} has {free / 2**20:.1f} MiB free, the new release needs "
                    f"{need / 2**20:.1f} MiB; nothing was changed, the device "
                    f"{_runs(state.get('current'))}", fix)


def _upload_release(remote: _Remote, artifacts: Path, entries: dict[str, str],
                    remote_dir: str, label: str, current: str | None) -> str:
    """Upload into a fresh .incoming-* folder and verify it; return that folder."""
    incoming = f"{remote_dir}/.incoming-{secrets.token_hex(6)}"
    names = sorted(entries)
    folders = sorted({str(PurePosixPath(n).parent) for n in names} - {"."})
    try:
        remote.run(["mkdir", "-p", "--", incoming, *[f"{incoming}/{d}" for d in folders]])
        for name in names:
            upload(remote, Path(artifacts) / name, f"{incoming}/{name}")
        got = _remote_hashes(remote, incoming, names)
    except ToolError as exc:  # a lost connection, a full disk, ...
        free = None
        with contextlib.suppress(ToolError):  # measured before the partial files are removed
            free = free_bytes(remote, remote_dir)
        _discard(remote, incoming, label)
        space = "" if free is None else f"; {remote_dir} had {free / 2**20:.1f} MiB free then"
        raise ToolError(
            f"flash to {label}",
            f"the upload failed ({exc.what}: {exc.problem}){space}; nothing was switched, the "
            f"device {_runs(current)}",
            f"Check that the device is on and reachable and has free space in {remote_dir} "
            "(df -h), then flash again; the next flash removes any partial upload",
        ) from None
    except BaseException:
        _discard(remote, incoming, label)
        raise
    bad = [n for n in names if got.get(n) != entries[n]]
    if bad and not isinstance(remote, _DryRun):
        _discard(remote, incoming, label)
        raise ToolError(
            f"flash to {label}",
            f"checksum mismatch on the device for {', '.join(bad)} (device "
            f"{got.get(bad[0], 'no file')}, manifest {entries[bad[0]]}); the upload was "
            "discarded and the device still runs its current release",
            "Check the connection and free space on the device, then flash again",
        )
    return incoming


def _install(remote: _Remote, artifacts: Path, entries: dict[str, str], remote_dir: str,
             label: str) -> tuple[str, str | None, bool]:
    rid = release_id(entries)
    new = f"releases/{rid}"
    state = _state(remote, remote_dir, rid)
    current, previous = state.get("current"), state.get("previous")
    intact = bool(state.get("have")) and _remote_hashes(
        remote, f"{remote_dir}/{new}", sorted(entries)) == entries
    if current == new and intact:
        log.info("%s already runs release %s", label, rid)
        return rid, previous and previous.split("/")[1], False
    if current == new:  # the files it runs were changed on the device: put them back
        log.warning("%s runs release %s, but its files differ from the manifest; uploading "
                    "it again", label, rid)
    old = previous if current == new else current  # re-installing keeps `previous` as it is
    incoming = ""
    if not intact:
        _check_space(remote, artifacts, entries, remote_dir, label, state)
        incoming = _upload_release(remote, artifacts, entries, remote_dir, label, current)
    try:
        checkpoint("uploaded")
        res = remote.run(_sh(_COMMIT, remote_dir, incoming, rid, old or "", _SWITCH.strip()),
                         check=False)
    except ToolError as exc:
        _discard(remote, incoming, label)
        # Unless the command never started (runners.ssh.ConnectionLost.started), the switch
        # may have happened before the connection died: say both.
        runs = _runs(current) if getattr(exc, "started", True) is False else \
            f"runs release {current.split('/')[1] if current else '(none)'} or {rid}, whichever " \
            "the switch left (each complete)"
        raise ToolError(f"flash to {label}", f"switching to release {rid} failed ({exc.what}: "
                        f"{exc.problem}); the device {runs}",
                        "Check that the device is on and reachable, then flash again: it "
                        "finishes or redoes the switch") from None
    except BaseException:
        _discard(remote, incoming, label)
        raise
    if res.status != 0 and not isinstance(remote, _DryRun):
        _discard(remote, incoming, label)
        raise ToolError(f"flash to {label}", f"the device could not switch to release {rid} "
                        f"(exit {res.status}: {res.stderr.strip()[-300:] or 'no output'}); "
                        f"the device {_runs(current)}",
                        f"Check free space and permissions in {remote_dir} on the device, then "
                        "flash again")
    return rid, old.split("/")[1] if old else None, True


def _rollback(remote: _Remote, remote_dir: str, label: str) -> tuple[str, str]:
    state = _state(remote, remote_dir, "0" * 16)
    current, previous = state.get("current"), state.get("previous")
    if isinstance(remote, _DryRun):
        current, previous = current or "releases/CURRENT", previous or "releases/PREVIOUS"
    if not previous or not current:
        raise BadInputError(f"--rollback on {label}", f"{remote_dir} has no previous release",
                            "Flash at least twice before rolling back")
    try:
        remote.run(_sh('[ -d "$1/$2" ] || exit 9\n' + _SWITCH.strip(), remote_dir, previous,
                       current))
    except ToolError as exc:
        raise ToolError(f"--rollback on {label}", f"cannot switch to {remote_dir}/{previous} "
                        f"({exc.problem})", "Flash the wanted artifacts again instead") from None
    return previous.split("/")[1], current.split("/")[1]


def flash_linux(
    artifacts: Path, device: SshDevice, *, remote_dir: str | None = None, dry_run: bool = False,
    rollback: bool = False, known_hosts: Path | None = None, identity: Path | None = None,
    connect_timeout: float = 10.0,
) -> FlashResult:
    """Install (or roll back) a release on a Linux device over SSH."""
    entries = {} if rollback else read_manifest(artifacts)
    if entries:  # the manifest goes along, so the device can tell what it runs
        entries["manifest.json"] = sha256_file(Path(artifacts) / "manifest.json")
    remote_dir = check_remote_dir(remote_dir or f"{DEFAULT_REMOTE_ROOT}/{model_name(artifacts)}")
    label = device.label
    if dry_run:
        rec = _DryRun(device)
        if rollback:
            rid, prev = _rollback(rec, remote_dir, label)
        else:
            rid, prev, _ = _install(rec, artifacts, entries, remote_dir, label)
        return FlashResult(label, True, rec.commands, True, rid, prev, remote_dir)
    from edgeprune.runners.ssh import SshSession  # paramiko only when a device is used

    with SshSession(device, known_hosts, identity, connect_timeout) as session:
        remote = _Logged(session, device)
        if rollback:
            rid, prev = _rollback(remote, remote_dir, label)
            changed = True
        else:
            rid, prev, changed = _install(remote, artifacts, entries, remote_dir, label)
    return FlashResult(label, False, remote.commands, changed, rid, prev, remote_dir)
