"""Provision, once, what emulated ARM runs need: an arm64 Debian root with LiteRT, and a TCG
plugin that counts executed instructions.

Cached under ``$EDGEPRUNE_CACHE`` (else ``$XDG_CACHE_HOME/edgeprune``, else
``~/.cache/edgeprune``). Provisioning holds an fcntl lock and builds into a temporary folder that
is renamed into place only when complete, so concurrent or interrupted runs never see half a root.

How the root is made (no binfmt_misc needed, so it works in containers): ``debootstrap --foreign``
downloads and unpacks the essential packages, then every downloaded .deb (python3 and its
libraries) is unpacked with ``dpkg-deb -x``; no maintainer scripts are needed to run Python.
aarch64 wheels of ai-edge-litert and numpy are fetched with ``pip download`` for the root's
Python and unzipped into ``ROOT/opt/edgeprune/site``.

The plugin: Debian ships no QEMU plugin header (no package contains ``qemu-plugin.h``), so the
few plugin API calls used are declared below from QEMU's documented, versioned plugin API
(``QEMU_PLUGIN_VERSION`` 1, QEMU 4.2–8.2; Debian bookworm has 7.2). ``-plugin`` only works with
the dynamically linked ``qemu-aarch64`` (package qemu-user), not the static one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeprune.atomic import staged_folder
from edgeprune.errors import ToolError

log = logging.getLogger(__name__)

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT_VERSION = 1  # bump when the way a root is built changes
SITE = "opt/edgeprune/site"

# The guest marks the start and end of the timed invokes with lseek(-1, MARK, 0) (harmless:
# EBADF); the plugin snapshots its counter at those syscalls, so the count covers exactly the
# invokes and nothing of Python's start-up, whose instruction count varies from run to run.
MARK_START, MARK_END = 0x65700001, 0x65700002
PLUGIN_SOURCE = r"""
/* edgeprune: count guest instructions; snapshot the count at the lseek(-1, MARK, 0) markers
 * and write "total start end" to out=FILE at exit.
 * Declarations from QEMU's plugin API, version 1 (include/qemu/qemu-plugin.h). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stddef.h>
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t, void *);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t, unsigned int, int64_t,
                                              uint64_t, uint64_t, uint64_t, uint64_t,
                                              uint64_t, uint64_t, uint64_t, uint64_t);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op,
                                              void *, uint64_t);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t, qemu_plugin_vcpu_syscall_cb_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void *);

#define NR_LSEEK_AARCH64 62
#define MARK_START 0x65700001ULL
#define MARK_END 0x65700002ULL

__attribute__((visibility("default"))) int qemu_plugin_version = 1;
static uint64_t insns; /* inline add: not atomic, so count single-threaded guests only */
static uint64_t marks[2];
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns,
                                           qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8) {
  (void)id; (void)vcpu; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
  if (num == NR_LSEEK_AARCH64 && a1 == UINT64_MAX && (a2 == MARK_START || a2 == MARK_END))
    marks[a2 - MARK_START] = insns;
}

static void on_exit_cb(qemu_plugin_id_t id, void *p) {
  (void)id; (void)p;
  FILE *f = fopen(out_path, "w");
  if (f) {
    fprintf(f, "%llu %llu %llu\n", (unsigned long long)insns, (unsigned long long)marks[0],
            (unsigned long long)marks[1]);
    fclose(f);
  }
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++)
    if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
  if (!out_path[0]) return -1;
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
  return 0;
}
"""


@dataclass(frozen=True)
class ArmRoot:
    root: Path  # the arm64 Debian root
    python: Path  # its python3, as a host path
    site: Path  # unpacked aarch64 wheels (ai_edge_litert, numpy)
    python_version: str  # e.g. "3.11"
    plugin: Path | None  # the instruction-counting plugin, when it could be built
    plugin_problem: str  # why there is no plugin


def cache_dir() -> Path:
    if os.environ.get("EDGEPRUNE_CACHE"):
        return Path(os.environ["EDGEPRUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeprune"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on ``path`` (other edgeprune processes wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org."""
    if os.environ.get("EDGEPRUNE_DEBIAN_MIRROR"):
        return os.environ["EDGEPRUNE_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "/debian" in uris[1]:
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                uri = next((p for p in parts[1:] if "://" in p), "")
                if "/debian" in uri:
                    return uri
    return DEFAULT_MIRROR


def _run(argv: list[str], what: str, fix: str, timeout: float = 1800, **kw) -> str:
    log.debug("running %s", " ".join(argv))
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError:
        raise ToolError(what, f"{argv[0]} is not installed", fix) from None
    except subprocess.TimeoutExpired:
        raise ToolError(what, f"did not finish within {timeout:g} s", fix) from None
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
        raise ToolError(what, f"{' '.join(argv[:3])} … exited with {res.returncode}: {tail}", fix)
    return res.stdout


def _litert_requirement() -> list[str]:
    """The host's pinned versions, so the emulated run uses the same LiteRT release."""
    reqs = []
    for dist in ("ai-edge-litert", "numpy"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _build_root(tmp: Path) -> str:
    root = tmp / "root"
    mirror = debian_mirror()
    fix = ("Install debootstrap (apt install debootstrap) and run as root with access to the "
           f"Debian mirror {mirror}; set EDGEPRUNE_DEBIAN_MIRROR to use another")
    if os.geteuid() != 0:
        raise ToolError("debootstrap", "provisioning the arm64 root needs root", fix)
    _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
          SUITE, str(root), mirror], "debootstrap (arm64 Debian root)", fix)
    archives = root / "var/cache/apt/archives"
    for deb in sorted(archives.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}", fix)
        deb.unlink()
    pythons = sorted(root.glob("usr/bin/python3.[0-9]*"))
    pythons = [p for p in pythons if re.fullmatch(r"python3\.\d+", p.name)]
    if not pythons:
        raise ToolError("arm64 root", "no python3 after debootstrap", fix)
    version = pythons[-1].name.removeprefix("python")
    wheels = tmp / "wheels"
    platforms = [f"manylinux_2_{v}_aarch64" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
          "--implementation", "cp", "--python-version", version,
          "--abi", f"cp{version.replace('.', '')}",
          *[a for p in platforms for a in ("--platform", p)],
          "-d", str(wheels), *_litert_requirement()],
         "pip download (aarch64 wheels of ai-edge-litert, numpy)",
         "Check that PyPI is reachable; reproduce the command with -v")
    site = root / SITE
    site.mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    shutil.rmtree(wheels)
    _compile_and_smoke_test(root, version)
    return version


def _compile_and_smoke_test(root: Path, version: str) -> None:
    """Byte-compile the root's Python once, under the guest Python itself.

    Debian compiles .pyc files in maintainer scripts, which the unpacked root never ran; left
    out, the first emulated run would compile them and count millions of extra instructions.
    Then import LiteRT once: a root that cannot is not worth caching."""
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    fix = "apt install qemu-user; reproduce with qemu-aarch64 -L ROOT ROOT/usr/bin/python3"
    if qemu is None:
        raise ToolError("qemu-aarch64", "QEMU user-mode emulation is not installed", fix)
    python = str(root / "usr/bin" / f"python{version}")
    env = {"QEMU_CPU": "cortex-a72", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    subprocess.run([qemu, "-L", str(root), python, "-S", "-s", "-E", "-m", "compileall", "-q",
                    str(root / f"usr/lib/python{version}"), str(root / SITE)],
                   env=env, capture_output=True, timeout=1800)  # a few test files never compile
    code = f"import sys; sys.path.insert(0, {str(root / SITE)!r}); " \
        "import numpy, ai_edge_litert.interpreter; print(numpy.__version__)"
    _run([qemu, "-L", str(root), python, "-S", "-s", "-E", "-B", "-c", code],
         "importing LiteRT in the arm64 root under QEMU", fix, timeout=600, env=env)


def _build_plugin(out: Path) -> str:
    """Compile the counting plugin; returns '' or why it could not be built."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return "no C compiler (apt install gcc) to build the instruction-counting plugin"
    src = out.with_suffix(".c")
    src.write_text(PLUGIN_SOURCE)
    res = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src)],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        return f"the plugin did not compile: {res.stderr.strip()[-300:]}"
    return ""


def provision(cache: Path | None = None) -> ArmRoot:
    """The cached arm64 root (built on first use, minutes) and the counting plugin."""
    cache = cache or cache_dir()
    name = f"arm64-{SUITE}-v{ROOT_VERSION}-" + "-".join(_litert_requirement()).replace("==", "")
    final = cache / name
    plugin_tag = hashlib.sha256(PLUGIN_SOURCE.encode()).hexdigest()[:12]
    plugin = cache / f"qemu-icount-{plugin_tag}.so"
    with locked(cache / "qemu.lock"):
        if not (final / "edgeprune-root.json").is_file():
            log.info("provisioning an arm64 Debian root with LiteRT in %s (once; minutes)", final)
            with staged_folder(final) as tmp:  # replaces an older incomplete attempt
                version = _build_root(tmp)
                (tmp / "edgeprune-root.json").write_text(json.dumps(
                    {"suite": SUITE, "python": version, "mirror": debian_mirror(),
                     "packages": _litert_requirement(), "version": ROOT_VERSION}))
        problem = ""
        if not plugin.is_file():
            tmp_plugin = cache / f".{plugin.name}.tmp"
            problem = _build_plugin(tmp_plugin)
            if not problem:
                tmp_plugin.rename(plugin)
    info = json.loads((final / "edgeprune-root.json").read_text())
    root = final / "root"
    return ArmRoot(
        root=root,
        python=root / "usr/bin" / f"python{info['python']}",
        site=root / SITE,
        python_version=info["python"],
        plugin=plugin if plugin.is_file() else None,
        plugin_problem=problem,
    )
