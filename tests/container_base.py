"""A stand-in for the official ``python:3.11-slim-bookworm`` image, made locally for podman.

No image registry is reachable here, so the base image the Dockerfile names is built from a
debootstrap of Debian bookworm (whose Python is 3.11) and imported with ``podman import`` under
exactly the name the Dockerfile pulls, ``docker.io/library/python:3.11-slim-bookworm``. Where
the Dockerfile relies on the official image, the root is made to look like it:

- ``python`` and ``pip`` on PATH (symlinks in /usr/local/bin, as the official image has them);
- Debian marks its Python as externally managed (PEP 668) and its pip then refuses to install
  into the system; the official image has no such marker, so
  ``/usr/lib/python3.11/EXTERNALLY-MANAGED`` is removed;
- ``PATH``, ``LANG`` and ``CMD`` are set as in the official image;
- this machine's CA bundle replaces the root's, so pip inside ``podman build`` trusts whatever
  this machine trusts (e.g. a TLS-intercepting egress proxy). The official image needs no such
  thing on an open network.

The root's tarball is cached under ``~/.cache/edgeprune-test/`` (``$EDGEPRUNE_TEST_CACHE``
overrides) and the image is re-imported from it when podman's storage lost it; both are made
from nothing on a fresh machine (debootstrap takes a few minutes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
BASE_VERSION = "1"  # bump when the way the root is made changes
SUITE = "bookworm"
INCLUDE = ["python3", "python3-venv", "python3-pip", "ca-certificates", "netbase", "passwd"]
OFFICIAL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeprune-test"
    return Path(os.environ.get("EDGEPRUNE_TEST_CACHE", default))


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm (deb822 or one-line sources)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):  # deb822: URIs + Suites in one stanza
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():  # one-line format: deb [opts] URI SUITE COMPONENTS
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if m and m.group(2) == SUITE:
                return m.group(1)
    return "http://deb.debian.org/debian"


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def _image_version(name: str) -> str | None:
    res = subprocess.run(
        ["podman", "image", "inspect", "--format",
         '{{index .Config.Labels "edgeprune.test.base"}}', name],
        capture_output=True, text=True,
    )
    return res.stdout.strip() if res.returncode == 0 else None


def _make_rootfs_tar(tar: Path) -> None:
    """debootstrap bookworm, make it look like the official image, and tar it."""
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=tar.parent) as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
               SUITE, str(root), debian_mirror()]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}")
        (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        for name, dest in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
            link = root / "usr/local/bin" / name
            link.unlink(missing_ok=True)
            link.symlink_to(dest)
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        # What the slim image leaves out: package lists and the .deb cache.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tar.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "--exclude=./dev/*", "-C", str(root),
                        "-cf", str(partial), "."],
                       check=True)
        partial.rename(tar)


def ensure_base_image(name: str = BASE_IMAGE) -> str:
    """Import the stand-in base image under ``name`` unless podman already has this version."""
    if _image_version(name) == BASE_VERSION:
        return name
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tar = cache / f"python-3.11-slim-{SUITE}-v{BASE_VERSION}.tar"
    with _locked(cache / "base.lock"):
        if _image_version(name) == BASE_VERSION:
            return name
        if not tar.is_file():
            _make_rootfs_tar(tar)
        changes = [f"ENV {k}={v}" for k, v in OFFICIAL_ENV.items()]
        changes += ['CMD ["python3"]', f"LABEL edgeprune.test.base={BASE_VERSION}"]
        args = ["podman", "import"]
        for change in changes:
            args += ["--change", change]
        res = subprocess.run([*args, str(tar), name], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"podman import failed: {res.stderr[-2000:]}")
    return name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


if __name__ == "__main__":
    print(ensure_base_image())
