"""The download source, against a local HTTP server: mirrors, MD5 checks, timeouts and the cache."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading
import time

import numpy as np
import pytest

from fwbench.harness import atomic
from fwbench.harness import data
from fwbench.harness.data import download
from fwbench.harness.data import DataError, load_mnist
from fwbench.harness.data.idx import idx_bytes
from mnist_fakes import cache_of, isolated, same, tiny  # noqa: F401


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging each request to stderr."""
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A threaded HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL and folder."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy set for the real mirrors must not catch these
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()  # a short poll interval keeps shutdown() from adding 0.5 s per test
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def publish(folder, arrays) -> dict[str, str]:
    """Write arrays as the four .gz files into folder; returns their MD5s keyed by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for field, name in data.FILES.items():
        body = gzip.compress(idx_bytes(arrays[field]), mtime=0)
        (folder / f"{name}.gz").write_bytes(body)
        md5[f"{name}.gz"] = hashlib.md5(body).hexdigest()
    return md5


@pytest.fixture
def mirror(server, monkeypatch):
    """A good mirror at <server>/good/ serving tiny(5), with download.MD5 set to its checksums."""
    url, root = server
    monkeypatch.setattr(download, "MD5", publish(root / "good", tiny(5)))
    return f"{url}/good/"


def dead_url() -> str:
    """A URL on a local port nothing listens on, so connecting fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_verifies_and_caches(tmp_path, mirror):
    m = load_mnist(mirrors=[mirror], timeout=5)
    assert same(m, tiny(5)) and m.source == f"download {mirror}, cached in {cache_of(tmp_path)}"
    assert sorted(os.listdir(cache_of(tmp_path))) == sorted(data.FILES.values())  # no temp files
    again = load_mnist(mirrors=[], timeout=5)
    assert same(again, tiny(5)) and again.source.startswith("cache ")


def test_checksum_mismatch_falls_to_next_mirror(tmp_path, server, mirror):
    url, root = server
    publish(root / "tampered", tiny(6))  # valid IDX, but not the files the checksums name
    m = load_mnist(mirrors=[f"{url}/tampered/", mirror], timeout=5)
    assert same(m, tiny(5)) and m.source.startswith(f"download {mirror},")
    assert same(load_mnist(mirrors=[]), tiny(5))  # what was cached is the verified copy


def test_checksum_mismatch_everywhere_caches_nothing(tmp_path, server, mirror):
    url, root = server
    publish(root / "tampered", tiny(6))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz \(md5 [0-9a-f]{32}, expected") as e:
        load_mnist(mirrors=[f"{url}/tampered/"], timeout=5)
    assert "FWBENCH_DATA" in str(e.value)
    assert not cache_of(tmp_path).exists()


def test_unreachable_mirror_fails_fast_and_is_skipped(mirror):
    dead = dead_url()
    start = time.perf_counter()
    arrays, urls, tried = download.download_mnist([dead, mirror], timeout=5)
    assert time.perf_counter() - start < 3
    assert len(arrays) == 4 and all(u.startswith(mirror) for u in urls.values())
    assert len(tried) == 1 and tried[0].startswith(f"{dead}train-images")  # asked once, not per file


def test_silent_mirror_times_out(mirror):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        start = time.perf_counter()
        arrays, _, tried = download.download_mnist([url, mirror], timeout=0.3)
    assert time.perf_counter() - start < 3
    assert len(arrays) == 4 and len(tried) == 1 and "timed out" in tried[0]


def test_missing_file_tries_next_mirror_without_dropping_the_first(server, mirror):
    url, root = server
    publish(root / "partial", tiny(5))
    (root / "partial" / "t10k-images-idx3-ubyte.gz").unlink()
    arrays, urls, tried = download.download_mnist([f"{url}/partial/", mirror], timeout=5)
    assert len(arrays) == 4 and tried == [f"{url}/partial/t10k-images-idx3-ubyte.gz (HTTP 404)"]
    assert urls["t10k-images-idx3-ubyte"].startswith(mirror)
    assert urls["t10k-labels-idx1-ubyte"].startswith(f"{url}/partial/")


def test_bad_idx_with_matching_md5_is_refused(server, monkeypatch):
    url, root = server
    (root / "x").mkdir()
    body = gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-1])  # truncated inside the gzip
    (root / "x" / "t10k-images-idx3-ubyte.gz").write_bytes(body)
    got = download.download_file("t10k-images-idx3-ubyte.gz", [f"{url}/x/"], hashlib.md5(body).hexdigest(),
                                 5, set(), tried := [])
    assert got is None and "truncated" in tried[0]


def test_interrupted_cache_write_leaves_no_partial_file(tmp_path, mirror, monkeypatch):
    calls = []
    real_replace = os.replace
    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("disk full")
        real_replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", flaky_replace)
    with pytest.warns(UserWarning, match="could not cache MNIST.*disk full"):
        m = load_mnist(mirrors=[mirror], timeout=5)
    assert same(m, tiny(5)) and m.source.endswith("(not cached)")
    assert len(os.listdir(cache_of(tmp_path))) == 2  # two whole files, no temp file, no half file
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    with pytest.warns(UserWarning, match="ignoring bad MNIST cache.*missing t10k-images"):
        m = load_mnist(mirrors=[mirror], timeout=5)
    assert same(m, tiny(5)) and same(load_mnist(mirrors=[]), tiny(5))


def test_default_mirrors_and_checksums():
    assert download.MD5 == {  # the autouse fixture leaves MD5 alone; it empties MIRRORS
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert download.download_mnist(timeout=1) == ({}, {}, [])  # MIRRORS is () here: nothing is fetched
