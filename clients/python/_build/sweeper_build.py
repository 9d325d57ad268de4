"""A PEP 517 build backend in the standard library alone, so that
``pip install ./clients/python`` works offline: a backend from PyPI
(setuptools, hatchling) would have to be downloaded into pip's isolated
build environment first. It builds a pure-Python wheel of the package named
in pyproject.toml, an sdist, and an editable wheel (a .pth file)."""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
    text = open(os.path.join(_ROOT, "pyproject.toml"), encoding="utf-8").read()
    section = text.split("[project]", 1)[1].split("\n[", 1)[0]

    def field(name):
        m = re.search(r'^%s\s*=\s*"([^"]*)"' % name, section, re.M)
        if not m:
            raise ValueError("pyproject.toml: [project] has no %s" % name)
        return m.group(1)

    return {
        "name": field("name"),
        "version": field("version"),
        "summary": field("description"),
        "requires_python": field("requires-python"),
    }


def _dist(p):
    return p["name"].replace("-", "_")


def _metadata(p):
    readme = open(os.path.join(_ROOT, "README.md"), encoding="utf-8").read()
    return (
        "Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\nRequires-Python: %s\n"
        "Description-Content-Type: text/markdown\n\n%s"
        % (p["name"], p["version"], p["summary"], p["requires_python"], readme)
    )


def _package_files():
    pkg = os.path.join(_ROOT, "sweeper_client")
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in sorted(filenames):
            if f.endswith((".py", ".typed")):
                full = os.path.join(dirpath, f)
                yield full, os.path.relpath(full, _ROOT).replace(os.sep, "/")


def _write_wheel(wheel_directory, files):
    """files: list of (archive name, bytes); adds the dist-info and RECORD."""
    p = _project()
    dist = "%s-%s" % (_dist(p), p["version"])
    info = dist + ".dist-info"
    files = list(files) + [
        (info + "/METADATA", _metadata(p).encode("utf-8")),
        (info + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: sweeper_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = []
    name = dist + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files:
            z.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (arc, digest, len(data)))
        record.append(info + "/RECORD,,")
        z.writestr(info + "/RECORD", "\n".join(record) + "\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [(arc, open(full, "rb").read()) for full, arc in _package_files()])


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, [("sweeper_client_editable.pth", (_ROOT + "\n").encode("utf-8"))])


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = "%s-%s" % (_dist(p), p["version"])
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ["pyproject.toml", "README.md", "_build/sweeper_build.py"]:
            t.add(os.path.join(_ROOT, rel), arcname=base + "/" + rel)
        for full, arc in _package_files():
            t.add(full, arcname=base + "/" + arc)
        pkg_info = _metadata(p).encode("utf-8")
        ti = tarfile.TarInfo(base + "/PKG-INFO")
        ti.size = len(pkg_info)
        t.addfile(ti, io.BytesIO(pkg_info))
    return name
