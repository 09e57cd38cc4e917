"""Tests of inference.data: splits equal scikit-learn's, dequantization keeps the levels,
bits/dim follows the dequantization convention, every file format round-trips, and bad
input fails with a message that says what to do."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split

from inference.data.datasets import (
    DataBundle,
    _dequantize,
    available_datasets,
    load_dataset,
    read_idx,
)
from inference.data.toy2d import TOY_DENSITIES, Moons
from vi_models.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset("digits")


def _split(n: int) -> tuple[np.ndarray, np.ndarray]:
    return train_test_split(np.arange(n), test_size=0.2, random_state=0)


def write_idx(path: Path, array: np.ndarray, code: int = 0x08, compress: bool = False) -> Path:
    """An IDX file per the MNIST spec: 0 0 <type> <ndim>, big-endian uint32 sizes, big-endian data."""
    big_endian = {0x08: ">u1", 0x0D: ">f4"}[code]
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(big_endian).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


# ---------------------------------------------------------------- digits


def test_digits_split_and_levels_match_sklearn(digits: DataBundle) -> None:
    data = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.2, random_state=0)
    assert torch.equal(digits.train_levels, torch.as_tensor(X_train.astype(np.int64)))
    assert torch.equal(digits.test_levels, torch.as_tensor(X_test.astype(np.int64)))
    assert torch.equal(digits.train_targets, torch.as_tensor(y_train))
    assert torch.equal(digits.test_targets, torch.as_tensor(y_test))
    assert (digits.kind, digits.num_levels, digits.image_shape) == ("dequantized", 17, (8, 8))
    assert digits.data_shape == (64,)
    assert digits.train.shape == (1437, 64) and digits.train.dtype == torch.get_default_dtype()
    for x, k in ((digits.train, digits.train_levels), (digits.test, digits.test_levels)):
        assert bool(((x >= 0) & (x < 1)).all())
        assert torch.equal(torch.floor(17 * x).long(), k)  # in the data's dtype
        assert torch.equal(torch.floor(17 * x.double()).long(), k)  # and exactly
    # train and test noise come from different streams
    u_train, u_test = 17 * digits.train - digits.train_levels, 17 * digits.test - digits.test_levels
    assert not torch.allclose(u_train[:360], u_test)
    assert digits.split == {"test_size": 0.2, "random_state": 0}


def test_dequantize_is_fresh_noise_on_the_same_levels(digits: DataBundle) -> None:
    fresh = digits.dequantize(digits.train_levels, generator=torch.Generator().manual_seed(1))
    again = digits.dequantize(digits.train_levels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fresh, again) and not torch.equal(fresh, digits.train)
    assert torch.equal(torch.floor(17 * fresh).long(), digits.train_levels)
    assert fresh.dtype == digits.train.dtype
    # the noise is uniform on each bin: mean 1/2, variance 1/12
    u = (17 * fresh.double() - digits.train_levels).flatten()
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / u.numel())
    assert abs(float(u.var()) - 1 / 12) < 0.002
    other_seed = load_dataset("digits", dequantize_seed=1)
    assert torch.equal(other_seed.train_levels, digits.train_levels)
    assert not torch.equal(other_seed.train, digits.train)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dequantize_keeps_floor_at_the_bin_edges(dtype: torch.dtype) -> None:
    """u = 0 and u just below 1 round to the bin edges; floor(L x) == k and x < 1 must still hold."""
    levels = torch.arange(17).repeat(2)
    noise = torch.cat([torch.zeros(17), torch.full((17,), 1 - 2.0**-53)]).double()
    x = _dequantize(levels, noise, 17, dtype)
    assert x.dtype == dtype and bool((x < 1).all())
    assert torch.equal(torch.floor(17 * x).long(), levels)
    assert torch.equal(torch.floor(17 * x.double()).long(), levels)


def test_dequantize_rejects_bad_levels_and_other_kinds(digits: DataBundle) -> None:
    with pytest.raises(DataError, match="expected integer levels"):
        digits.dequantize(digits.train)
    with pytest.raises(DataError, match=r"levels in 0\.\.16, got values in 0\.\.17"):
        digits.dequantize(torch.tensor([0, 17]))
    with pytest.raises(ConfigError, match="expected a bundle of dequantized data.*'continuous'"):
        load_dataset("iris").dequantize(torch.tensor([1]))


def test_digits_binary() -> None:
    bundle = load_dataset("digits-binary")
    X_train, X_test = train_test_split(load_digits().data, test_size=0.2, random_state=0)
    assert bundle.kind == "binary" and bundle.image_shape == (8, 8)
    assert torch.equal(bundle.train, torch.as_tensor(X_train > 8, dtype=bundle.train.dtype))
    assert torch.equal(bundle.test, torch.as_tensor(X_test > 8, dtype=bundle.test.dtype))


# ---------------------------------------------------------------- bits per dim


def test_bits_per_dim_against_a_categorical_pixel_model(digits: DataBundle) -> None:
    """Independent per-pixel categorical (add-one counts), fitted and scored in numpy."""
    k_train, k_test = digits.train_levels.numpy(), digits.test_levels.numpy()
    counts = np.stack([(k_train == level).sum(0) for level in range(17)], -1) + 1.0  # (64, 17)
    probs = counts / counts.sum(-1, keepdims=True)
    log_p = np.log(probs)[np.arange(64), k_test]  # (N_test, 64)
    ll_discrete = log_p.sum(-1).mean()
    bpd = digits.bits_per_dim(ll_discrete, discrete=True)
    assert bpd == pytest.approx(-ll_discrete / (64 * math.log(2)), rel=1e-12)
    assert 0 < bpd < math.log2(17)  # it beats the uniform model
    # the same model as a density on [0, 1)^64: p(x) = prod_d 17 P_d(floor(17 x_d))
    k_from_x = np.floor(17 * digits.test.double().numpy()).astype(int)
    ll_continuous = (np.log(17 * probs)[np.arange(64), k_from_x]).sum(-1).mean()
    assert digits.bits_per_dim(ll_continuous, discrete=False) == pytest.approx(bpd, rel=1e-12)
    # the uniform density on [0, 1)^64 has log p = 0: exactly log2(17) bits/dim
    assert digits.bits_per_dim(0.0, discrete=False) == pytest.approx(math.log2(17), rel=1e-12)
    assert digits.bits_per_dim(torch.zeros(5), discrete=False) == pytest.approx(math.log2(17), rel=1e-12)


def test_bits_per_dim_for_continuous_data() -> None:
    bundle = load_dataset("iris")
    for discrete in (True, False):
        assert bundle.bits_per_dim(-10.0, discrete=discrete) == pytest.approx(10 / (4 * math.log(2)))


# ---------------------------------------------------------------- other bundled data


@pytest.mark.parametrize(("name", "loader"), [("iris", load_iris), ("wine", load_wine)])
def test_standardized_tables(name: str, loader) -> None:
    bundle = load_dataset(name, dtype=torch.float64)
    X = loader().data
    train_rows, test_rows = _split(len(X))
    assert bundle.kind == "continuous" and bundle.data_shape == (X.shape[1],)
    assert torch.allclose(bundle.train.mean(0), torch.zeros(X.shape[1], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(bundle.train.std(0, unbiased=False), torch.ones(X.shape[1], dtype=torch.float64))
    for part, rows in ((bundle.train, train_rows), (bundle.test, test_rows)):
        raw = part * bundle.transform_std + bundle.transform_mean
        assert np.allclose(raw.numpy(), X[rows])


def test_breast_cancer_alias() -> None:
    bundle = load_dataset("breast-cancer")
    assert bundle.name == "breast_cancer" and bundle.data_shape == (30,)


def test_toy_datasets() -> None:
    bundle = load_dataset("Two-Moons", n_samples=500, n_test=300, seed=3, dtype=torch.float64)
    assert bundle.name == "moons" and isinstance(bundle.density, Moons)
    assert bundle.train.shape == (500, 2) and bundle.test.shape == (300, 2) and bundle.train.dtype == torch.float64
    same = load_dataset("moons", n_samples=500, n_test=300, seed=3, dtype=torch.float64)
    other = load_dataset("moons", n_samples=500, n_test=300, seed=4, dtype=torch.float64)
    assert torch.equal(same.train, bundle.train) and torch.equal(same.test, bundle.test)
    assert not torch.equal(other.train, bundle.train)
    assert not torch.equal(bundle.train[:300], bundle.test)  # independent streams
    assert bundle.split == {"n_samples": 500, "n_test": 300, "seed": 3}
    default = load_dataset("checkerboard")
    assert (len(default.train), len(default.test)) == (10_000, 100_000)


def test_available_datasets() -> None:
    names = available_datasets()
    assert {"digits", "digits-binary", "iris", "wine", "breast_cancer"} | set(TOY_DENSITIES) == set(names)


# ---------------------------------------------------------------- files


def test_npy_round_trip(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "my.npy", X)
    bundle = load_dataset(tmp_path / "my.npy", dtype=torch.float64)
    train_rows, test_rows = _split(50)
    assert bundle.name == "my.npy" and bundle.kind == "continuous" and bundle.data_shape == (3,)
    assert np.array_equal(bundle.train.numpy(), X[train_rows]) and np.array_equal(bundle.test.numpy(), X[test_rows])
    # integer files stay continuous floats; multi-dimensional rows keep their shape
    np.save(tmp_path / "counts.npy", np.arange(40).reshape(10, 2, 2))
    counts = load_dataset(str(tmp_path / "counts.npy"))
    assert counts.kind == "continuous" and counts.data_shape == (2, 2) and counts.train.is_floating_point()


def test_npz_variants(tmp_path: Path) -> None:
    X, Y = np.arange(30.0).reshape(10, 3), np.arange(20.0).reshape(10, 2)
    np.savez(tmp_path / "one.npz", anything=X)
    assert load_dataset(tmp_path / "one.npz").data_shape == (3,)
    np.savez(tmp_path / "two.npz", a=X, b=Y)
    assert load_dataset(tmp_path / "two.npz", key="b").data_shape == (2,)
    np.savez(tmp_path / "xy.npz", x=X, y=np.arange(10))
    assert load_dataset(tmp_path / "xy.npz").data_shape == (3,)
    np.savez(tmp_path / "split.npz", train=X, test=Y[:, :1].repeat(3, 1))
    split = load_dataset(tmp_path / "split.npz", dtype=torch.float64)
    assert np.array_equal(split.train.numpy(), X) and split.test.shape == (10, 3)
    assert split.split == {"from_file": "train/test arrays"}
    with pytest.raises(DataError, match=r"got keys \['a', 'b'\]; choose one with load_dataset\(path, key=\.\.\.\)"):
        load_dataset(tmp_path / "two.npz")
    with pytest.raises(DataError, match=r"expected key='c' among the arrays of two.npz, got keys \['a', 'b'\]"):
        load_dataset(tmp_path / "two.npz", key="c")


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    X = np.round(np.random.default_rng(1).normal(size=(20, 3)), 6)
    (tmp_path / "plain.csv").write_text("\n".join(",".join(map(str, row)) for row in X) + "\n")
    (tmp_path / "header.csv").write_text("a,b,c\n" + "\n".join(",".join(map(str, row)) for row in X))
    train_rows, _ = _split(20)
    for name in ("plain.csv", "header.csv"):
        bundle = load_dataset(tmp_path / name, dtype=torch.float64)
        assert np.allclose(bundle.train.numpy(), X[train_rows], rtol=0, atol=1e-12)
    (tmp_path / "spaces.csv").write_text("1 2\n3 4\n5 6\n")
    assert load_dataset(tmp_path / "spaces.csv").data_shape == (2,)


def test_idx_images_labels_and_gzip(tmp_path: Path) -> None:
    images = np.random.default_rng(2).integers(0, 256, size=(30, 5, 4)).astype(np.uint8)
    labels = np.arange(30, dtype=np.uint8) % 10
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / "train-labels.idx1-ubyte", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), images)
    assert np.array_equal(read_idx(tmp_path / "train-labels.idx1-ubyte"), labels)
    bundle = load_dataset(tmp_path / "train-images-idx3-ubyte")
    train_rows, _ = _split(30)
    assert (bundle.kind, bundle.num_levels, bundle.image_shape) == ("dequantized", 256, (5, 4))
    assert bundle.data_shape == (20,)
    assert torch.equal(bundle.train_levels, torch.as_tensor(images[train_rows].reshape(-1, 20).astype(np.int64)))
    assert torch.equal(torch.floor(256 * bundle.train).long(), bundle.train_levels)
    zipped = load_dataset(tmp_path / "train-images-idx3-ubyte.gz")
    assert torch.equal(zipped.train, bundle.train) and torch.equal(zipped.test_levels, bundle.test_levels)
    with pytest.raises(DataError, match="labels file"):
        load_dataset(tmp_path / "train-labels.idx1-ubyte")
    # float IDX data are continuous
    floats = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)
    bundle = load_dataset(write_idx(tmp_path / "features.idx", floats, code=0x0D), dtype=torch.float64)
    assert bundle.kind == "continuous" and bundle.data_shape == (3,)
    assert np.allclose(np.sort(np.concatenate([bundle.train.numpy(), bundle.test.numpy()]), 0), np.sort(floats, 0))


# ---------------------------------------------------------------- bad input


def test_unknown_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"one of digits, .*moons.*got 'bananas'; a path to a data file"):
        load_dataset("bananas")
    with pytest.raises(DataError, match=r"expected an existing data file, got .*nope\.npy"):
        load_dataset(tmp_path / "nope.npy")
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(DataError, match=r"expected a data file of type \.npy, \.npz, \.csv or IDX"):
        load_dataset(tmp_path / "data.txt")


def test_bad_file_contents(tmp_path: Path) -> None:
    bad = np.ones((6, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN/inf"):
        load_dataset(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    with pytest.raises(DataError, match=r"got shape \(10,\).*reshape\(-1, 1\)"):
        load_dataset(tmp_path / "flat.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="expected at least 2 rows"):
        load_dataset(tmp_path / "empty.npy")
    (tmp_path / "zero.npy").write_bytes(b"")
    with pytest.raises(DataError, match="could not read zero.npy"):
        load_dataset(tmp_path / "zero.npy")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="got an empty file"):
        load_dataset(tmp_path / "empty.csv")
    (tmp_path / "header_only.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="got only the header"):
        load_dataset(tmp_path / "header_only.csv")
    (tmp_path / "words.csv").write_text("1,2\n3,four\n")
    with pytest.raises(DataError, match="expected only numbers in words.csv"):
        load_dataset(tmp_path / "words.csv")


def test_malformed_idx(tmp_path: Path) -> None:
    (tmp_path / "bad-ubyte").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match=r"magic bytes 0x00 0x00 <type> <ndim>.*got 12 34 08 01"):
        load_dataset(tmp_path / "bad-ubyte")
    raw = (tmp_path / "ok-ubyte")
    write_idx(raw, np.zeros((4, 3), dtype=np.uint8))
    (tmp_path / "short-ubyte").write_bytes(raw.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(tmp_path / "short-ubyte")


@pytest.mark.parametrize("test_size", [0, 0.0, 1, 1.0, 1.5, -0.2, True, "0.2"])
def test_test_size_must_be_a_fraction(test_size) -> None:
    with pytest.raises(ConfigError, match=r"expected test_size to be a fraction in \(0, 1\)"):
        load_dataset("iris", test_size=test_size)


def test_options_that_do_not_apply(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_samples applies to the 2-D toy datasets only"):
        load_dataset("digits", n_samples=100)
    np.save(tmp_path / "a.npy", np.ones((4, 2)))
    with pytest.raises(ConfigError, match="key selects an array of an .npz file"):
        load_dataset(tmp_path / "a.npy", key="x")
    with pytest.raises(ConfigError, match="floating dtype"):
        load_dataset("iris", dtype=torch.int64)
    with pytest.raises(ConfigError, match="n_test to be an integer >= 1"):
        load_dataset("moons", n_test=0)


def test_bundle_validates_its_shapes() -> None:
    with pytest.raises(DataError, match=r"expected train of shape \(N, 3\), got \(4, 2\)"):
        DataBundle(name="x", train=torch.zeros(4, 2), test=None, data_shape=(3,), kind="continuous")
    with pytest.raises(ConfigError, match="num_levels >= 2"):
        DataBundle(name="x", train=torch.zeros(4, 2), test=None, data_shape=(2,), kind="dequantized")


def test_dtype_and_device_respected() -> None:
    bundle = load_dataset("digits", dtype=torch.float64, device="cpu")
    tensors = [bundle.train, bundle.test, bundle.train_levels, bundle.train_targets]
    assert all(t.device == torch.device("cpu") for t in tensors)
    assert bundle.train.dtype == bundle.test.dtype == torch.float64
    assert torch.equal(torch.floor(17 * bundle.train).long(), bundle.train_levels)
    assert load_dataset("wine", dtype=torch.float64).transform_std.dtype == torch.float64
