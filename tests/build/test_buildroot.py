"""buildroot-configs/ (the BR2_EXTERNAL tree of the Atom appliance) against a real Buildroot release, offline.

A full build downloads sources and cannot run here; what Buildroot can check without them is checked:
nsg_atom_defconfig resolves with every symbol it and the tree rely on, savedefconfig gives it back byte
for byte, `make show-info` parses (python-nsg built from this repository, a hash for every download),
and utils/check-package is clean on every file of the tree.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

from tests.build.conftest import DEFCONFIG, EXTERNAL, REPO, br_make, clean_env, expand, parse_config
from tests.peers import missing_commands, require_peer

PYTHON_NSG = EXTERNAL / "package" / "python-nsg"
RSYNC_VARS = ("PYTHON_NSG_OVERRIDE_SRCDIR", "PYTHON_NSG_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS", "RSYNC_VCS_EXCLUSIONS")


def _missing_modules(modules: dict[str, str]) -> list[str]:
    out = []
    for mod, dist in modules.items():
        try:
            __import__(mod)
        except ImportError:
            out.append(f"python module {mod} not importable (pip: {dist}, the [test] extra)")
    return out


pytestmark = require_peer(
    missing_commands({"make": "make", "gcc": "gcc", "xz": "xz-utils", "shellcheck": "shellcheck", "rsync": "rsync"})
    + _missing_modules({"flake8": "flake8", "magic": "python-magic"}))

# Symbols the tree relies on that nsg_atom_defconfig does not spell out (defaults, or selected), with why.
RELIED_ON = {
    "BR2_x86_64": "y",                          # the Atom appliance
    "BR2_TOOLCHAIN_USES_GLIBC": "y",            # glibc (systemd needs it)
    "BR2_INIT_SYSTEMD": "y",
    "BR2_PACKAGE_SYSTEMD": "y",                 # python-nsg installs nsg.service
    "BR2_INIT_SYSTEMD_VAR_FACTORY": "y",        # read-only root: /var is a tmpfs
    "BR2_ROOTFS_MERGED_USR": "y",               # post-build.sh finds GRUB under usr/lib/grub
    "BR2_PACKAGE_BUSYBOX": "y",                 # nsg runs busybox udhcpc on its uplinks
    "BR2_PACKAGE_PYTHON3_SSL": "y",             # mTLS channel, hashlib
    "BR2_LINUX_KERNEL_BZIMAGE": "y",            # post-build.sh renames boot/bzImage to boot/vmlinuz
    "BR2_KERNEL_HEADERS_AS_KERNEL": "y",        # headers from the hashed kernel tarball
    "BR2_TARGET_ROOTFS_EXT2_GEN": "4",          # genimage.cfg takes rootfs.ext4
    "BR2_PACKAGE_HOST_E2FSPROGS": "y",          # genimage makes nsg-data.ext4 with mke2fs
    "BR2_TARGET_GRUB2_HAS_LEGACY_BOOT": "y",
    "BR2_TARGET_GRUB2_HAS_EFI_BOOT": "y",
}

# Symbols holding paths into this tree: each must name something that exists.
PATH_SYMBOLS = {
    "BR2_GLOBAL_PATCH_DIR": "dir",
    "BR2_ROOTFS_OVERLAY": "dir",
    "BR2_ROOTFS_POST_BUILD_SCRIPT": "exe",
    "BR2_ROOTFS_POST_IMAGE_SCRIPT": "exe",
    "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES": "file",
    "BR2_TARGET_GRUB2_BUILTIN_CONFIG_PC": "file",
    "BR2_TARGET_GRUB2_BUILTIN_CONFIG_EFI": "file",
}

# What the kernel fragment must turn on (issue 15 §4, and what nsg drives).
KERNEL_REQUIRED = (
    "XFRM_USER", "INET_ESP", "INET_ESP_OFFLOAD", "CRYPTO_GCM", "CRYPTO_AES", "CRYPTO_AES_NI_INTEL",
    "CRYPTO_SEQIV", "VXLAN", "BRIDGE", "BRIDGE_NETFILTER", "VETH", "TUN", "IFB", "NF_TABLES", "NF_TABLES_INET",
    "NF_TABLES_BRIDGE", "NFT_BRIDGE_META", "NFT_CT", "NFT_NAT", "NFT_MASQ", "NFT_LIMIT", "NFT_LOG",
    "NFT_REJECT", "NET_SCH_HTB", "NET_SCH_INGRESS", "NET_CLS_U32", "NET_ACT_MIRRED", "NAMESPACES", "NET_NS",
    "PID_NS", "IPC_NS", "UTS_NS", "CGROUPS", "MEMCG", "CGROUP_PIDS", "CGROUP_BPF", "OVERLAY_FS",
    "SECCOMP_FILTER", "EFI_PARTITION", "EXT4_FS", "VFAT_FS",
)


def test_defconfig_resolves_with_every_symbol_relied_on(configured):
    out, messages = configured
    noise = [ln for ln in messages.splitlines() if re.search(r"warning|error", ln, re.IGNORECASE)]
    assert not noise, "kconfig complained while resolving nsg_atom_defconfig:\n" + "\n".join(noise)

    config = parse_config(out / ".config")
    wanted = parse_config(DEFCONFIG)
    assert wanted, f"{DEFCONFIG} sets nothing"
    lost = {sym: (val, config.get(sym, "<absent>")) for sym, val in {**wanted, **RELIED_ON}.items()
            if config.get(sym) != val}
    assert not lost, "symbols not as relied on in .config (want, got): " + json.dumps(lost, indent=1)


def test_paths_in_the_defconfig_exist(configured):
    config = parse_config(configured[0] / ".config")
    for sym, kind in PATH_SYMBOLS.items():
        assert config.get(sym), f"{sym} is not set"
        for path in expand(config[sym]):
            assert path.is_relative_to(EXTERNAL), f"{sym}: {path} is outside buildroot-configs/"
            ok = {"dir": path.is_dir(), "file": path.is_file(),
                  "exe": path.is_file() and path.stat().st_mode & 0o111}[kind]
            assert ok, f"{sym}: {path} is not an existing {kind}"


def test_python_nsg_selects_every_runtime_dependency_of_pyproject(configured):
    """A dependency added to pyproject.toml must reach the image: selected by python-nsg, set in .config."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] for d in deps]
    assert names, "pyproject.toml lists no dependencies"
    selects = set(re.findall(r"^\s*select (BR2_\w+)", (PYTHON_NSG / "Config.in").read_text(), re.MULTILINE))
    config = parse_config(configured[0] / ".config")
    for name in names:
        sym = "BR2_PACKAGE_PYTHON_" + re.sub(r"[-_.]+", "_", name).upper()
        assert sym in selects, f"{name} (pyproject.toml): python-nsg/Config.in does not select {sym}"
        assert config.get(sym) == "y", f"{name}: {sym} is not set in .config"
    for sym in selects:
        assert config.get(sym) == "y", f"python-nsg selects {sym}, but .config does not have it"


@pytest.fixture(scope="module")
def queried(buildroot_tree, configured, tmp_path_factory) -> tuple[bytes, dict, dict, dict]:
    """(savedefconfig's output, `make python-nsg-show-info`, `make show-info`, printvars of python-nsg's
    rsync), from one make run: each of these makes Buildroot read every package's .mk, which is most of
    the time this module takes."""
    saved = tmp_path_factory.mktemp("saved") / "nsg_atom_defconfig"  # BR2_DEFCONFIG's default is ours
    proc = br_make(buildroot_tree, configured[0], "savedefconfig", "python-nsg-show-info", "show-info",
                   "printvars", "-s", BR2_DEFCONFIG=str(saved), VARS=" ".join(RSYNC_VARS))
    lines = proc.stdout.splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(docs) == 2, f"expected two JSON documents, got {len(docs)}:\n{proc.stdout[:2000]}"
    printed = dict(line.split("=", 1) for line in lines if line.split("=", 1)[0] in RSYNC_VARS)
    return saved.read_bytes(), docs[0], docs[1], printed


def test_savedefconfig_gives_back_the_committed_defconfig(queried):
    want, got = DEFCONFIG.read_bytes(), queried[0]
    if want != got:
        diff = difflib.unified_diff(want.decode().splitlines(), got.decode().splitlines(),
                                    "committed", "savedefconfig", lineterm="")
        pytest.fail("nsg_atom_defconfig drifted from savedefconfig:\n" + "\n".join(diff))


def test_python_nsg_show_info_builds_nsg_from_this_repository(queried):
    info = queried[1]
    assert list(info) == ["python-nsg"], f"show-info named {list(info)}"
    pkg = info["python-nsg"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert (pkg["type"], pkg["version"]) == ("target", version)
    uris = [u for d in pkg["downloads"] for u in d["uris"]]
    assert uris and uris[0] == f"local+{REPO}", f"python-nsg is not taken from {REPO}: {uris}"
    # python-package infrastructure, setuptools flavour (pyproject's build backend)
    assert {"host-python3", "host-python-setuptools", "python3"} <= set(pkg["dependencies"])
    assert str(PYTHON_NSG / "python-nsg.hash") in pkg["hashes"]


def test_python_nsg_source_is_this_project_without_its_clutter(queried, tmp_path):
    """The rsync Buildroot's local site method runs (pkg-generic.mk), with the .mk's exclusions: what
    setuptools needs arrives, the venv, build outputs (an O= under build/), tests and this tree do not."""
    v = queried[3]
    assert v["PYTHON_NSG_OVERRIDE_SRCDIR"] == str(REPO)
    excl = shlex.split(v["PYTHON_NSG_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS"]) + shlex.split(v["RSYNC_VCS_EXCLUSIONS"])
    dest = tmp_path / "python-nsg"
    subprocess.run(["rsync", "-au", "--chmod=u=rwX,go=rX", *excl, f"{REPO}/", str(dest)], check=True, timeout=60)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = ["pyproject.toml", project["project"]["readme"], *queried[1]["python-nsg"]["license_files"]]
    wanted += [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    missing = [w for w in wanted if not (dest / w).exists() and (REPO / w).exists()]
    assert not missing, f"left out of python-nsg's build directory: {missing}"
    for clutter in (".venv", "build", "tests", "buildroot-configs", ".git"):
        assert not (dest / clutter).exists(), f"{clutter} copied into python-nsg's build directory"
    assert not list(dest.rglob("__pycache__")), "__pycache__ copied"


def test_python_nsg_hash_names_this_repository_files(queried):
    """Nothing is downloaded for a local package; its .hash holds the license file's hash, which
    legal-info checks. Each line must match the file in this repository."""
    pkg = queried[1]["python-nsg"]
    lines = [ln.split() for ln in (PYTHON_NSG / "python-nsg.hash").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert {f for _, _, f in lines} == set(pkg["license_files"]), "the .hash must cover the license files"
    for algo, digest, name in lines:
        path = REPO / name
        assert path.is_file(), f"python-nsg.hash names {name}, which this repository does not have"
        assert hashlib.new(algo, path.read_bytes()).hexdigest() == digest, f"{name}: {algo} differs"


def test_every_download_of_the_image_has_a_hash(buildroot_tree, queried):
    """BR2_DOWNLOAD_FORCE_CHECK_HASHES is on, so a source with no hash would stop the build: the
    pinned kernel's hash comes from board/nsg-atom/patches/ (GLOBAL_PATCH_DIR)."""
    packages = queried[2]
    for name in ("python-nsg", "linux", "linux-headers", "grub2", "host-grub2", "host-genimage",
                 "host-dosfstools", "host-mtools", "host-e2fsprogs", "systemd", "docker-engine", "nftables"):
        assert name in packages, f"{name} is not part of the build"
    unhashed = []
    for name, pkg in packages.items():
        listed = set()
        for h in pkg.get("hashes", []):
            path = buildroot_tree / h  # relative to the Buildroot tree, or absolute for ours
            if path.is_file():
                listed |= {ln.split()[2] for ln in path.read_text().splitlines()
                           if len(ln.split()) == 3 and not ln.startswith("#")}
        for dl in pkg.get("downloads", []):
            if not any(u.startswith("local+") for u in dl["uris"]) and dl["source"] not in listed:
                unhashed.append(f"{name}: {dl['source']}")
    assert not unhashed, "downloads with no hash: " + ", ".join(unhashed)


def test_kernel_fragment_enables_what_nsg_needs():
    text = (EXTERNAL / "board" / "nsg-atom" / "linux.fragment").read_text()
    options = dict(re.findall(r"^CONFIG_(\w+)=(\S+)$", text, re.MULTILINE))
    off = [o for o in KERNEL_REQUIRED if options.get(o) not in ("y", "m")]
    assert not off, f"linux.fragment does not enable: {off}"


def test_check_package_is_clean_on_the_whole_tree(buildroot_tree):
    files = sorted(str(p.relative_to(EXTERNAL)) for p in EXTERNAL.rglob("*") if not p.is_dir())
    assert "configs/nsg_atom_defconfig" in files and "package/python-nsg/python-nsg.mk" in files
    # our interpreter: the venv has flake8 and python-magic, which check-package imports
    proc = subprocess.run([sys.executable, str(buildroot_tree / "utils" / "check-package"), "-b", *files],
                          cwd=EXTERNAL, env=clean_env(), capture_output=True, text=True, timeout=120, check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "0 warnings generated" in report, f"check-package:\n{report}"
    processed = re.search(r"(\d+) lines processed", report)
    assert processed and int(processed[1]) > 100, f"check-package looked at (almost) nothing:\n{report}"
