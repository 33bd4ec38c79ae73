"""Download the four gzipped MNIST IDX files from mirrors, verifying each by MD5."""
from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request

import numpy as np

from fwbench.harness.data.errors import DataError
from fwbench.harness.data.idx import gunzip, parse_idx

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# torchvision's checksums; the MD5 is what makes a plain-http mirror safe to use.
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MAX_BYTES = 64 << 20  # the largest real file is 9.9 MB; stop reading a runaway response


def fetch(url: str, timeout: float) -> bytes:
    """The body at url, at most MAX_BYTES; raises OSError, HTTPException or ValueError on failure."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise OSError(f"response larger than {MAX_BYTES} bytes")
    return body


def download_file(name: str, mirrors: list[str], md5: str, timeout: float,
                  dead: set[str], tried: list[str]) -> tuple[np.ndarray, str] | None:
    """The parsed IDX array of one .gz file and its URL from the first mirror that serves it intact."""
    for mirror in mirrors:
        if mirror in dead:
            continue
        url = mirror.rstrip("/") + "/" + name
        try:
            body = fetch(url, timeout)
        except urllib.error.HTTPError as e:  # the server answered: other files may still be there
            tried.append(f"{url} (HTTP {e.code})")
            continue
        except (OSError, ValueError, http.client.HTTPException) as e:  # unreachable, cut off or not a URL:
            # skip this mirror for the remaining files, so a dead host costs one timeout, not four
            dead.add(mirror)
            tried.append(f"{url} ({getattr(e, 'reason', None) or e})")
            continue
        got = hashlib.md5(body).hexdigest()
        if got != md5:
            tried.append(f"{url} (md5 {got}, expected {md5})")
            continue
        try:
            return parse_idx(gunzip(body, url), url), url
        except DataError as e:  # only possible with a wrong expected checksum, but never cache it
            tried.append(f"{url} ({e})")
    return None


def download_mnist(mirrors: list[str] | tuple[str, ...] | None = None, timeout: float = 10.0,
                   md5: dict[str, str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """Arrays and source URLs keyed by IDX name (no .gz) for the files that came intact, and notes on failures."""
    mirrors = list(MIRRORS if mirrors is None else mirrors)
    md5 = MD5 if md5 is None else md5
    arrays: dict[str, np.ndarray] = {}
    urls: dict[str, str] = {}
    tried: list[str] = []
    dead: set[str] = set()  # a mirror that refused a connection is not asked for the next file
    for name, checksum in md5.items():
        got = download_file(name, mirrors, checksum, timeout, dead, tried)
        if got is None:
            break  # without all four files nothing is cached, so stop early
        arrays[name.removesuffix(".gz")], urls[name.removesuffix(".gz")] = got
    return arrays, urls, tried
