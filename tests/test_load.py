"""``tsgen.load`` on files it must refuse: one ValueError, never code execution."""
import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen import ARIMA, LinearGaussianSSM

NOT_A_MODEL = "not a tsgen model file"


@pytest.fixture(scope="module")
def lds_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "lds.tsgen"
    y = pd.Series(np.random.default_rng(0).normal(size=60).cumsum(), index=pd.date_range("2021", periods=60, freq="D"))
    LinearGaussianSSM(n_dim_state=2, max_iter=3, random_state=0).fit(y).save(path)
    return path


def _tampered(source, target, edit_tensors=None, edit_meta=None):
    payload = torch.load(source, weights_only=True)
    meta = json.loads(payload["meta"])
    if edit_meta is not None:
        edit_meta(meta)
    if edit_tensors is not None:
        edit_tensors(payload["tensors"])
    torch.save({"meta": json.dumps(meta), "tensors": payload["tensors"]}, target)
    return target


def test_a_valid_file_still_loads(lds_file):
    model = tsgen.load(lds_file)
    assert isinstance(model, LinearGaussianSSM) and len(model.predict(3)) == 3


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage \x00\x01 not a model", json.dumps({"format": "tsgen-model"}).encode()],
    ids=["empty", "garbage", "json"],
)
def test_empty_garbage_and_foreign_files(tmp_path, content):
    path = tmp_path / "bad.tsgen"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=NOT_A_MODEL):
        tsgen.load(path)


def test_truncated_file(tmp_path, lds_file):
    data = lds_file.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 20):
        path = tmp_path / f"cut{cut}.tsgen"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=NOT_A_MODEL):
            tsgen.load(path)


def test_mislabelled_files(tmp_path, lds_file):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"meta": "{not json", "tensors": {}}, tmp_path / "meta.pt")
    _tampered(lds_file, tmp_path / "format.pt", edit_meta=lambda m: m.update(format="other"))
    _tampered(lds_file, tmp_path / "class.pt", edit_meta=lambda m: m.update({"class": "NotAModel"}))
    _tampered(lds_file, tmp_path / "version.pt", edit_meta=lambda m: m.pop("version"))
    _tampered(lds_file, tmp_path / "params.pt", edit_meta=lambda m: m.pop("params"))
    for name in ("other", "tensor", "meta", "format", "class", "version", "params"):
        with pytest.raises(ValueError, match=NOT_A_MODEL):
            tsgen.load(tmp_path / f"{name}.pt")


def test_a_newer_format_version_is_refused_clearly(tmp_path, lds_file):
    path = _tampered(lds_file, tmp_path / "future.pt", edit_meta=lambda m: m.update(version=99))
    with pytest.raises(ValueError, match="format version 99.*Upgrade tsgen"):
        tsgen.load(path)


class _CreatesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_no_crafted_file_runs_code(tmp_path):
    target = tmp_path / "created_by_unpickling"
    crafted = {"meta": json.dumps({"format": "tsgen-model", "version": 1}), "tensors": {"x": _CreatesAFile(str(target))}}
    torch.save(crafted, tmp_path / "zip.pt")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(crafted))
    for name in ("zip.pt", "raw.pt"):
        with pytest.raises(ValueError, match=NOT_A_MODEL):
            tsgen.load(tmp_path / name)
    assert not os.path.exists(target)


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda t: t["observation_covariance"].fill_(float("nan")), "NaN"),
        (lambda t: t["transition_covariance"].mul_(-1.0), "positive semi-definite"),
        (lambda t: t["initial_state_covariance"].copy_(torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "positive semi-definite"),
        (lambda t: t.update(transition_matrices=torch.eye(3, dtype=torch.float64)), "shape"),
        (lambda t: t.pop("observation_matrices"), "missing"),
    ],
    ids=["nan", "negative-variance", "not-psd", "shape", "missing"],
)
def test_invalid_lds_parameters_are_refused(tmp_path, lds_file, edit, reason):
    def edit_model(tensors):
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        edit(model)
        for key in [k for k in tensors if k.startswith("model.")]:
            del tensors[key]
        tensors.update({f"model.{k}": v for k, v in model.items()})

    path = _tampered(lds_file, tmp_path / "bad.pt", edit_tensors=edit_model)
    with pytest.raises(ValueError, match=f"{NOT_A_MODEL}.*{reason}"):
        tsgen.load(path)


def test_stored_sizes_are_checked(tmp_path, lds_file):
    too_long = _tampered(lds_file, tmp_path / "lengths.pt",
                         edit_tensors=lambda t: t["history.lengths"].fill_(10**6))
    wrong_dims = _tampered(lds_file, tmp_path / "dims.pt", edit_meta=lambda m: m.update(n_dims=3))
    for path in (too_long, wrong_dims):
        with pytest.raises(ValueError, match=NOT_A_MODEL):
            tsgen.load(path)


def test_non_stationary_or_invalid_arima_parameters_are_refused(tmp_path):
    y = pd.Series(np.random.default_rng(1).normal(size=80))
    ARIMA(order=(1, 0, 0)).fit(y).save(tmp_path / "arima.tsgen")
    assert isinstance(tsgen.load(tmp_path / "arima.tsgen"), ARIMA)

    def set_param(position, value):
        return lambda t: t["model.params.0"].__setitem__(position, value)

    cases = {
        "nonstationary": (set_param(1, 1.5), "non-stationary"),  # [const, ar.L1, sigma2]
        "sigma2": (set_param(2, -1.0), "sigma2"),
        "size": (lambda t: t.update({"model.params.0": torch.zeros(7, dtype=torch.float64)}), "shape"),
    }
    for name, (edit, reason) in cases.items():
        path = _tampered(tmp_path / "arima.tsgen", tmp_path / f"{name}.pt", edit_tensors=edit)
        with pytest.raises(ValueError, match=f"{NOT_A_MODEL}.*{reason}"):
            tsgen.load(path)
