"""The VAE-style emission (tsgen/components/latent_emission.py): its importance estimate against the closed-form
marginal of a linear-Gaussian decoder, its bias in K, partial observation, sampling, gradients and errors."""
import math

import pytest
import torch
from scipy import stats
from torch.distributions import Independent, MultivariateNormal, Normal

from tsgen.components.heads import is_exact, make_head
from tsgen.components.latent_emission import LatentVariableDistribution, LatentVariableEmission
from tsgen.protocol import factorises
from test_energy_emission import maximise_log_prob

DOUBLE = torch.float64
L, D = 2, 3


def linear_gaussian(n_samples, replicates=1, posterior="exact"):
    """``u ~ N(0, I_2)``, ``x | u ~ N(W u + c, s^2 I_3)``: marginal ``N(c, W W' + s^2 I)``.

    ``posterior="exact"``: the encoder is the exact posterior of the observed components (the weights are then
    constant and the estimate exact for any K); ``"rough"``: its mean shrunk and its spread doubled.
    """
    W = torch.tensor([[1.0, 0.5], [-0.3, 1.2], [0.8, -0.7]], dtype=DOUBLE)
    c, s = torch.tensor([0.5, -1.0, 2.0], dtype=DOUBLE), 0.6
    zeros = torch.zeros(replicates, L, dtype=DOUBLE)
    prior = Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def decoder(u):
        return Independent(Normal(u @ W.T + c, s), 1)

    def encoder(x, mask):
        m = mask.to(DOUBLE)
        Wo = W * m.unsqueeze(-1)  # rows of unobserved components dropped
        precision = torch.eye(L, dtype=DOUBLE) + Wo.transpose(-1, -2) @ Wo / s**2
        covariance = torch.linalg.inv(precision)
        mean = (covariance @ (Wo.transpose(-1, -2) @ ((x - c) * m).unsqueeze(-1))).squeeze(-1) / s**2
        if posterior == "rough":
            mean, covariance = 0.5 * mean, 4 * covariance
        return MultivariateNormal(mean, covariance)

    marginal = MultivariateNormal(c, W @ W.T + s**2 * torch.eye(D, dtype=DOUBLE))
    return LatentVariableDistribution(prior, decoder, encoder, (D,), n_samples), marginal


def test_exact_posterior_gives_the_exact_marginal_for_any_k():
    torch.manual_seed(0)
    x = torch.randn(5, D, dtype=DOUBLE)
    for k in (1, 7):
        dist, marginal = linear_gaussian(k)
        assert torch.allclose(dist.log_prob(x), marginal.log_prob(x), atol=1e-10)


def test_estimate_is_unbiased_for_the_density_and_its_log_bias_shrinks_with_k():
    torch.manual_seed(0)
    replicates = 4000
    x = torch.tensor([1.5, 0.0, 0.5], dtype=DOUBLE)
    truth = float(linear_gaussian(1)[1].log_prob(x))
    biases, errors = {}, {}
    for k in (1, 4, 32, 256):
        dist, _ = linear_gaussian(k, replicates, posterior="rough")
        estimates = dist.log_prob(x.expand(replicates, D))
        ratio = torch.exp(estimates - truth)  # E exp(log p^) = p: the weights' mean is unbiased
        assert abs(float(ratio.mean()) - 1) < 4 * float(ratio.std()) / math.sqrt(replicates)
        biases[k] = float(estimates.mean()) - truth
        errors[k] = float(estimates.std()) / math.sqrt(replicates)
        assert biases[k] < 4 * errors[k]  # Jensen: the IWAE bound is below log p
    # the bias falls like 1/K once K is moderate (measured: -2.80, -0.45, -0.034, -0.002 nats)
    for small, large in ((1, 4), (4, 32), (32, 256)):
        assert -biases[small] > -biases[large] + 4 * (errors[small] + errors[large])
    assert abs(biases[256]) < 4 * errors[256] + 0.005


def test_partially_observed_vectors_are_scored_on_their_observed_marginal():
    torch.manual_seed(1)
    dist, marginal = linear_gaussian(3)
    x = torch.randn(4, D, dtype=DOUBLE)
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True], [False] * 3])
    estimate = dist.observed_log_prob(x, mask)
    for row in range(4):
        observed = mask[row]
        if not observed.any():
            assert float(estimate[row]) == 0.0
            continue
        block = MultivariateNormal(marginal.loc[observed], marginal.covariance_matrix[observed][:, observed])
        assert float(estimate[row]) == pytest.approx(float(block.log_prob(x[row, observed])), abs=1e-10)


def test_samples_match_the_marginal():
    torch.manual_seed(2)
    dist, marginal = linear_gaussian(8)
    draws = dist.sample((3000,)).squeeze(1)
    assert draws.shape == (3000, D) and dist.rsample((2,)).shape == (2, 1, D)
    for d in range(D):
        sd = float(marginal.covariance_matrix[d, d].sqrt())
        assert stats.kstest(draws[:, d].numpy(), stats.norm(float(marginal.loc[d]), sd).cdf).pvalue > 0.01
    moments = linear_gaussian(4000)[0]
    assert torch.allclose(moments.mean.squeeze(0), marginal.loc, atol=0.1)
    assert torch.allclose(moments.variance.squeeze(0), marginal.covariance_matrix.diagonal(), rtol=0.1)


def test_head_trains_through_the_iwae_estimate():
    torch.manual_seed(0)
    head = make_head("vae", 5, D)
    assert isinstance(head, LatentVariableEmission)
    features, scale = torch.randn(6, 5), torch.full((6, D), 3.0)
    dist = head(features, scale)
    assert not factorises(dist) and not is_exact(dist)
    x = dist.sample((2,))
    assert x.shape == (2, 6, D) and dist.log_prob(x).shape == (2, 6) and dist.mean.shape == (6, D)
    (-dist.log_prob(x).mean()).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_vae_head_learns_a_correlated_bimodal_vector_better_than_a_diagonal_gaussian():
    gen = torch.Generator().manual_seed(0)

    def draw(n):
        sign = torch.where(torch.rand(n, 1, generator=gen) < 0.5, -1.0, 1.0)
        return sign * torch.tensor([1.5, 1.5]) + 0.3 * torch.randn(n, 2, generator=gen)

    train, test = draw(1000), draw(1000)
    torch.manual_seed(0)
    head = LatentVariableEmission(1, 2, latent_dim=2, hidden=16, n_samples=8)
    features = torch.ones(1, 1)
    maximise_log_prob(head, features, train, steps=150, lr=0.02)
    head.n_samples = 256
    with torch.no_grad():
        held_out = float(head(features).log_prob(test).mean())
    diagonal = float(Normal(train.mean(0), train.std(0)).log_prob(test).sum(-1).mean())
    print(f"vae {held_out:.3f} diagonal gaussian {diagonal:.3f}")
    assert held_out > diagonal + 0.5


def test_bernoulli_decoder_and_bad_arguments():
    head = LatentVariableEmission(4, 3, decoder="bernoulli")
    assert head.support == "binary values (0 or 1)" and not head.scalable
    draws = head(torch.randn(2, 4)).sample((5,))
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(NotImplementedError, match="rsample"):
        head(torch.randn(2, 4)).rsample()
    with pytest.raises(ValueError, match="latent_dim"):
        LatentVariableEmission(4, 3, latent_dim=0)
    with pytest.raises(ValueError, match="n_samples"):
        LatentVariableEmission(4, 3, n_samples=1.5)
    with pytest.raises(ValueError, match="decoder"):
        LatentVariableEmission(4, 3, decoder="energy_nce")


def test_models_score_partially_observed_vectors_through_the_emission():
    import warnings

    import numpy as np
    import pandas as pd

    import tsgen

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(80, 2)).cumsum(0), columns=["a", "b"],
                         index=pd.period_range("2000-01", periods=80, freq="M"))
    frame.iloc[[10, 30, 31], 0] = np.nan
    frame.iloc[[50], 1] = np.nan
    model = tsgen.RNNForecaster(emission="vae", hidden_dim=8, max_epochs=2, random_state=0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(frame)
    steps = model.log_likelihood(frame, per_step=True).to_numpy()
    # the random walks are modelled by their first differences: the first step has no lagged value and is not
    # scored (NaN, as ARIMA's first d steps); every other step, partially observed ones included, is
    assert model.differencing_ is not None and model.differencing_.lag == 1
    assert np.isnan(steps[0]) and np.isfinite(steps[1:]).all()
    with pytest.raises(ValueError, match="emission"), warnings.catch_warnings():  # a joint energy: no block marginal
        warnings.simplefilter("ignore")
        tsgen.RNNForecaster(emission="energy_nce", hidden_dim=8, max_epochs=1, random_state=0,
                            progress=False).fit(frame)
