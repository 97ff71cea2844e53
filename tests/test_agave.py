"""AGAVE (Lucas & Verbeek 2018): the PixelCNN decoder stays autoregressive given f(z), eq. 10 over the
auxiliary image's levels, the auxiliary images, the terms of eq. 7, both bounds in bits per dimension
on cases with a known likelihood, exact resume (also when continuing from another checkpoint), the
no-auxiliary ablation, and seeded sampling conditioned on f(z) (cached == naive)."""

import csv
import math

import numpy as np
import pytest
import scipy.stats
import torch

from aiqn.methods.agave.bounds import elbo_bits_per_dim, evaluate_agave, importance_bits_per_dim, importance_bits_per_image
from aiqn.methods.agave.objective import agave_objective, agave_terms, decoder_terms
from aiqn.methods.agave.sampling import generate_agave, reconstruct_agave
from aiqn.methods.agave.train import AgaveTrainConfig, agave_from_checkpoint, train_agave
from aiqn.data.registry import load_split
from aiqn.nets.likelihood import bits_per_dim, bits_per_dim_per_image
from aiqn.nets import to_unit
from aiqn.methods.agave.model import Agave, AgaveConfig, aux_image, aux_log_prob, aux_to_levels, parse_aux
from aiqn.nets.objectives import categorical_nll


def tiny(**overrides) -> AgaveConfig:
    base = dict(latent_dim=4, base_channels=8, max_channels=16, cond_layers=1, cond_planes=4, blocks=2, planes=8,
                output_planes=16)
    return AgaveConfig(**{**base, **overrides})


def read_log(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def sigmoid(v: float) -> float:
    return 0.0 if v == -math.inf else 1.0 if v == math.inf else 1.0 / (1.0 + math.exp(-v))


# --- the PixelCNN decoder given f(z) ---------------------------------------------------------------

@pytest.mark.parametrize("channels,aux", [(1, "full"), (3, "lowres:2"), (3, "grey:1"), (1, "quantized:1")])
def test_pixelcnn_decoder_is_autoregressive_and_reads_fz(channels, aux):
    torch.manual_seed(0)
    cfg = tiny(channels=channels, height=4, width=4, levels=4, aux=aux, planes=12, output_planes=48)
    model = Agave(cfg).double()
    x = torch.rand(2, channels, 4, 4, dtype=torch.double, requires_grad=True)
    z = torch.randn(2, cfg.latent_dim, dtype=torch.double, requires_grad=True)
    means = model.decode(z)
    assert means.shape == (2, *model.aux.shape)
    logits = model.pixel_logits(x, model.condition(means))  # (2, C, L, 4, 4)
    order = [(r, c, ch) for r in range(4) for c in range(4) for ch in range(channels)]  # raster, then colour
    for i, (r, c, ch) in enumerate(order):
        gx, gz = torch.autograd.grad(logits[0, ch, :, r, c].sum(), [x, z], retain_graph=True)
        for j, (r2, c2, ch2) in enumerate(order):
            if j >= i:
                assert gx[0, ch2, r2, c2] == 0, f"output {(r, c, ch)} sees input {(r2, c2, ch2)}"
        if i > 0:
            assert torch.any(gx[0] != 0), f"output {(r, c, ch)} sees no earlier input"
        assert torch.any(gz[0] != 0), f"output {(r, c, ch)} ignores f(z)"
        assert torch.all(gx[1] == 0) and torch.all(gz[1] == 0), "batch rows are mixed"


# --- the auxiliary image and eq. 10 ----------------------------------------------------------------

AUX_CASES = [("full", 1, 17), ("quantized:2", 1, 17), ("quantized:4", 1, 17), ("grey:3", 3, 17),
             ("quantized:5", 3, 256), ("grey:4", 3, 256), ("lowres:2", 3, 256), ("quantized:1", 1, 2)]


@pytest.mark.parametrize("spec,channels,levels", AUX_CASES)
def test_eq10_sums_to_one_over_y_levels_and_is_the_papers_formula(spec, channels, levels):
    aux = parse_aux(spec, channels, 4, 4, levels)
    b, L = aux.levels, levels
    gen = torch.Generator().manual_seed(0)
    mean = (torch.rand(7, dtype=torch.double, generator=gen) * 3 - 1.5).view(7, 1)  # x's unit scale
    log_scale = (torch.rand(7, dtype=torch.double, generator=gen) * 4 - 4).view(7, 1)
    ks = torch.arange(b).view(1, b)
    lp = aux_log_prob(ks.expand(7, b), mean.expand(7, b), log_scale, aux)  # (7, b)
    assert torch.allclose(lp.exp().sum(1), torch.ones(7, dtype=torch.double), rtol=0, atol=1e-10)
    # eq. 10 on the continuous range [0, L) (x-level j = [j, j+1)), c = L / b, outer intervals open
    c = L / b
    for row in range(7):
        m = (mean[row, 0].item() + 1) * (L - 1) / 2 + 0.5
        s = math.exp(log_scale[row, 0].item()) * (L - 1) / 2
        for k in range(b):
            hi = math.inf if k == b - 1 else (c * (k + 1) - m) / s
            lo = -math.inf if k == 0 else (c * k - m) / s
            assert math.isclose(lp[row, k].exp().item(), sigmoid(hi) - sigmoid(lo), rel_tol=1e-9, abs_tol=1e-12)


def test_aux_images_have_the_right_shapes_and_levels():
    x = torch.arange(17).view(1, 1, 1, 17).expand(2, 1, 17, 17).contiguous()  # every level, 17x17 (lowres:1 only)
    q = aux_image(x, parse_aux("quantized:2", 1, 17, 17, 17))  # 4 levels: centres j + 1/2 in [4.25 k, 4.25 (k+1))
    assert q.shape == x.shape and q.dtype == torch.long
    assert q[0, 0, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 5 + [3] * 4  # 8.5 opens bin 2
    assert torch.equal(aux_image(x, parse_aux("grey:2", 1, 17, 17, 17)), q)  # one channel: grey == quantized
    assert torch.equal(aux_image(x, parse_aux("full", 1, 17, 17, 17)), x)
    assert torch.equal(aux_to_levels(x, parse_aux("full", 1, 17, 17, 17)), x.to(torch.uint8))

    digits = torch.randint(0, 17, (3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    low = parse_aux("lowres:4", 1, 8, 8, 17)
    y = aux_image(digits, low)
    assert low.shape == (1, 4, 4) and low.levels == 17 and y.shape == (3, 1, 4, 4)
    assert y[1, 0, 2, 3] == math.floor(digits[1, 0, 4:6, 6:8].double().mean().item() + 0.5)

    rgb = torch.tensor([[[[255]], [[0]], [[0]]], [[[10]], [[200]], [[30]]]])  # (2, 3, 1, 1)
    grey = parse_aux("grey:4", 3, 1, 1, 256)
    assert grey.shape == (1, 1, 1) and grey.levels == 16
    expected = [math.floor((0.299 * r + 0.587 * g + 0.114 * b + 0.5) * 16 / 256)
                for r, g, b in ((255, 0, 0), (10, 200, 30))]
    assert aux_image(rgb, grey).flatten().tolist() == expected
    assert parse_aux("quantized:5", 3, 32, 32, 256).shape == (3, 32, 32)
    assert parse_aux("lowres:8", 3, 32, 16, 256).shape == (3, 8, 4)
    for bad in ("lowres:3", "quantized:5", "grey:0", "blurry", "full:2", "lowres:x"):
        with pytest.raises(ValueError):
            parse_aux(bad, 1, 8, 8, 17)


@pytest.mark.parametrize("aux", ["full", "lowres:4", "quantized:3"])
def test_terms_against_closed_forms_and_torch_distributions(aux):
    torch.manual_seed(0)
    model = Agave(tiny(aux=aux)).double()
    images = torch.randint(0, 17, (3, 1, 8, 8))
    noise = torch.randn(3, 4, dtype=torch.double)
    terms = agave_terms(model, images, noise)
    mean, logvar = model.encode(images)
    std = torch.exp(0.5 * logvar)
    z = mean + std * noise
    means = model.decode(z)
    logits = model.pixel_logits(to_unit(images, 17).double(), model.condition(means))
    assert torch.allclose(terms["reconstruction"], categorical_nll(logits, images).sum((1, 2, 3)))
    y = aux_image(images, model.aux)
    aux_lp = aux_log_prob(y, means, model.aux_log_scale.view(1, -1, 1, 1), model.aux)
    assert torch.allclose(terms["auxiliary"], -aux_lp.sum((1, 2, 3)))
    q = torch.distributions.Normal(mean, std)
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    assert torch.allclose(terms["kl"], torch.distributions.kl_divergence(q, p).sum(1))
    assert torch.allclose(terms["log_weight"], (p.log_prob(z) - q.log_prob(z)).sum(1))
    lam = 3.0
    expected = (terms["reconstruction"] + terms["auxiliary"] + lam * terms["kl"]).mean()
    assert torch.allclose(agave_objective(terms, lam), expected)
    assert torch.allclose(agave_objective(terms, lam, use_aux=False),
                          (terms["reconstruction"] + lam * terms["kl"]).mean())


# --- bits per dimension ----------------------------------------------------------------------------

def ignore_z(model: Agave, posterior_mean: float = 0.0, posterior_var: float = 1.0) -> Agave:
    """Make p(x | z) independent of z (zero every conditioning weight of the PixelCNN) and
    q(z | x) = N(posterior_mean, posterior_var) for every x (zero encoder output weights)."""
    with torch.no_grad():
        for block in model.pixelcnn.blocks:
            block.cond_v.weight.zero_()
            block.cond_h.weight.zero_()
        d = model.config.latent_dim
        model.to_latent.weight.zero_()
        model.to_latent.bias.copy_(torch.tensor([posterior_mean] * d + [math.log(posterior_var)] * d))
    return model.eval()


def test_both_bounds_equal_the_pixelcnn_likelihood_when_z_carries_nothing(digits_dir):
    images = load_split(digits_dir / "test.npz")[0][:40]
    torch.manual_seed(0)
    model = ignore_z(Agave(tiny()))  # q(z|x) = p(z) and p(x|z) = p(x): -log p(x) is the PixelCNN's
    exact = bits_per_dim(model.pixelcnn, images)
    elbo = elbo_bits_per_dim(model, images, seed=3, batch_size=16)
    assert elbo["kl"] == 0.0
    assert math.isclose(elbo["bpd"], exact, rel_tol=1e-6) and math.isclose(elbo["reconstruction"], exact, rel_tol=1e-6)
    assert math.isclose(importance_bits_per_dim(model, images, k=7, batch_size=16, k_batch=3), exact, rel_tol=1e-6)
    # each image's bound is its exact bits/dim too: both bounds' intervals over test images are scipy's of those
    per_image = bits_per_dim_per_image(model.pixelcnn, images)
    ci = scipy.stats.t.interval(0.95, 39, loc=per_image.mean(), scale=scipy.stats.sem(per_image))
    assert elbo["bpd_interval"] == pytest.approx(list(ci), rel=1e-5)
    assert importance_bits_per_image(model, images, k=3, batch_size=16) == pytest.approx(per_image, rel=1e-5)
    # the arithmetic by hand: nats summed over the 40 x 64 dimensions, / ln 2
    with torch.no_grad():
        x = torch.from_numpy(images).long()
        nats = categorical_nll(model.pixelcnn(to_unit(x, 17)), x).double().sum().item()
    assert math.isclose(exact, nats / (40 * 64 * math.log(2)), rel_tol=1e-9)


def test_importance_bound_k1_is_the_elbo_in_expectation_and_tightens_with_k(digits_dir):
    images = np.repeat(load_split(digits_dir / "test.npz")[0][:4], 100, axis=0)  # 400 images
    torch.manual_seed(0)
    # p(x|z) = p(x) known exactly; q(z|x) = N(1.5, 0.25) per dimension: KL = 4 * 1.443 nats, all wasted
    model = ignore_z(Agave(tiny(blocks=1, planes=4, output_planes=8)), posterior_mean=1.5, posterior_var=0.25)
    exact = bits_per_dim(model.pixelcnn, images)
    kl_bits = 4 * 0.5 * (1.5**2 + 0.25 - 1 - math.log(0.25)) / (64 * math.log(2))
    elbo = elbo_bits_per_dim(model, images)
    assert math.isclose(elbo["bpd"], exact + kl_bits, rel_tol=1e-6) and math.isclose(elbo["kl"], kl_bits, rel_tol=1e-6)
    is1 = importance_bits_per_dim(model, images, k=1, seed=1)
    is10 = importance_bits_per_dim(model, images, k=10, seed=1)
    is50 = importance_bits_per_dim(model, images, k=50, seed=1, k_batch=50)
    # K = 1: -log p(x|z) - log p(z) + log q(z|x) averages to the ELBO (std of the mean here ~0.002 bits)
    assert abs(is1 - elbo["bpd"]) < 0.01, (is1, elbo["bpd"])
    # towards -log p(x) as K grows (measured: 4.318 < 4.393 < 4.412 < 4.448; seed-to-seed std ~0.002)
    assert exact < is50 < is10 - 0.01 < elbo["bpd"] - 0.02, (exact, is50, is10, elbo["bpd"])

    # a decoder that reads z, an encoder with informative means: the same two properties
    torch.manual_seed(1)
    model = Agave(tiny(blocks=1, planes=4, output_planes=8)).eval()
    with torch.no_grad():
        model.to_latent.weight.mul_(20.0)  # KL ~0.04 bits/dim
    elbo = elbo_bits_per_dim(model, images, samples=4)["bpd"]
    assert abs(importance_bits_per_dim(model, images, k=4, seed=2, k_batch=1) -
               importance_bits_per_dim(model, images, k=4, seed=2, k_batch=4)) < 1e-6  # chunking changes no draw
    with torch.no_grad():
        x = torch.from_numpy(images).long()
        mean, logvar = model.encode(x)
        gen = torch.Generator().manual_seed(5)
        single = [decoder_terms(model, x, mean, logvar, torch.randn(mean.shape, generator=gen)) for _ in range(4)]
    is1 = np.mean([(t["reconstruction"] - t["log_weight"]).double().mean().item() for t in single]) / (64 * math.log(2))
    assert abs(is1 - elbo) < 0.01, (is1, elbo)
    assert importance_bits_per_dim(model, images, k=50, k_batch=50) < elbo - 0.02  # measured 4.151 vs 4.185


# --- training, resume, ablation --------------------------------------------------------------------

@pytest.mark.parametrize("continued", [False, True])
def test_resume_is_exact(digits_dir, tmp_path, continued):
    images = load_split(digits_dir / "train.npz")[0]
    cfg = tiny(aux="lowres:4")
    init = None
    if continued:  # continue another run's checkpoint without the auxiliary term (the ablation)
        init = train_agave(cfg, AgaveTrainConfig(steps=3, batch_size=8, seed=5), images, tmp_path / "init",
                           progress=False)[3]
    tcfg = AgaveTrainConfig(steps=6, batch_size=8, checkpoint_steps=[3], seed=3, kl_weight=4.0,
                            use_aux=not continued)
    straight = train_agave(cfg, tcfg, images, tmp_path / "a", progress=False, init_from=init)
    first = train_agave(cfg, tcfg, images, tmp_path / "b", stop_after=4, progress=False, init_from=init)
    assert list(first) == [3]
    resumed = train_agave(cfg, tcfg, images, tmp_path / "b", progress=False, init_from=init)
    assert list(straight) == list(resumed) == [3, 6]
    a, b = (torch.load(run[6], weights_only=False) for run in (straight, resumed))
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert a["init"] == b["init"] and (a["init"] is not None) == continued
    log_a, log_b = (read_log(tmp_path / run / "train_log.csv") for run in ("a", "b"))
    assert [int(r["step"]) for r in log_a] == list(range(1, 7))
    assert log_a == log_b  # the wall seconds are in train_times.runinfo.csv, apart from the log


def test_training_lowers_the_loss_and_the_ablation_logs_kl(digits_dir, tmp_path):
    images = load_split(digits_dir / "train.npz")[0]
    cfg = tiny(latent_dim=8)
    tcfg = AgaveTrainConfig(steps=120, batch_size=32, kl_weight=2.0, seed=1)
    ckpt = train_agave(cfg, tcfg, images, tmp_path / "agave", progress=False)[120]
    rows = read_log(tmp_path / "agave" / "train_log.csv")
    assert list(rows[0]) == ["step", "loss", "reconstruction", "auxiliary", "kl", "lr"]
    first = np.mean([float(r["loss"]) for r in rows[:10]])
    last = np.mean([float(r["loss"]) for r in rows[-10:]])
    assert last < 0.8 * first, (first, last)  # measured 317 -> 235 nats
    for r in rows:
        total = float(r["reconstruction"]) + float(r["auxiliary"]) + 2.0 * float(r["kl"])
        assert math.isclose(float(r["loss"]), total, rel_tol=1e-4)
    aux_first, aux_last = (np.mean([float(r["auxiliary"]) for r in part]) for part in (rows[:10], rows[-10:]))
    # the auxiliary decoder learns and z carries information (measured: 169 -> 117 nats, KL 0.5 nats)
    assert aux_last < 0.85 * aux_first and float(rows[-1]["kl"]) > 0.1, (aux_first, aux_last)
    assert float(rows[0]["lr"]) == 0.002

    # the ablation: continue without the auxiliary term; the weights start as the checkpoint's
    still = AgaveTrainConfig(steps=1, batch_size=8, lr=0.0, use_aux=False, kl_weight=1.0)
    after = train_agave(cfg, still, images, tmp_path / "still", progress=False, init_from=ckpt)[1]
    start, after = torch.load(ckpt, weights_only=False), torch.load(after, weights_only=False)
    assert all(torch.equal(start["model"][k], after["model"][k]) for k in start["model"])
    ablation = AgaveTrainConfig(steps=20, batch_size=32, use_aux=False, kl_weight=1.0, seed=2)
    train_agave(cfg, ablation, images, tmp_path / "ablation", progress=False, init_from=ckpt)
    rows = read_log(tmp_path / "ablation" / "train_log.csv")
    assert len(rows) == 20 and all(float(r["kl"]) > 0 for r in rows[:3])
    for r in rows:  # the auxiliary term is logged but not optimised
        assert math.isclose(float(r["loss"]), float(r["reconstruction"]) + float(r["kl"]), rel_tol=1e-4)
    with pytest.raises(ValueError, match="another model config"):
        train_agave(tiny(latent_dim=6), ablation, images, tmp_path / "other", progress=False, init_from=ckpt)
    with pytest.raises(ValueError, match="another folder"):
        train_agave(cfg, ablation, images, tmp_path / "agave", progress=False, init_from=ckpt)


# --- sampling and evaluation from a checkpoint ------------------------------------------------------

@pytest.fixture(scope="module")
def lowres_checkpoint(tmp_path_factory):
    from aiqn.data.prepare import prepare_dataset

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("agave_digits")
    prepare_dataset("digits", out / "raw", out, {"test_fraction": 0.2, "split_seed": 0})
    images = load_split(out / "train.npz")[0]
    tcfg = AgaveTrainConfig(steps=30, batch_size=16, ema_rate=0.5)
    return train_agave(tiny(aux="lowres:4"), tcfg, images, out / "run", progress=False)[30], out


def test_sampling_is_seeded_and_cached_equals_naive(lowres_checkpoint):
    ckpt, _ = lowres_checkpoint
    out = generate_agave(ckpt, 3, seed=0, samples_per_latent=2, batch_size=2)
    assert out["latents"].shape == (3, 4)
    assert out["aux_means"].shape == (3, 1, 4, 4) and out["aux_means"].dtype == np.float32
    assert out["aux_images"].shape == (3, 1, 4, 4) and out["aux_images"].max() < 17
    assert out["images"].shape == (3, 2, 1, 8, 8) and out["images"].dtype == np.uint8 and out["images"].max() < 17
    naive = generate_agave(ckpt, 3, seed=0, samples_per_latent=2, method="naive", batch_size=2)
    for key in out:
        assert np.array_equal(out[key], naive[key]), key
    other = generate_agave(ckpt, 3, seed=0, samples_per_latent=2, batch_size=3)  # draws do not depend on batches
    assert np.array_equal(other["images"], out["images"]) and np.array_equal(other["latents"], out["latents"])
    assert np.allclose(other["aux_means"], out["aux_means"], atol=1e-6)  # float rounding of another batch size
    assert not np.array_equal(out["images"], generate_agave(ckpt, 3, seed=1, samples_per_latent=2)["images"])
    # the model reloaded from the checkpoint alone decodes the same f(z)
    model = agave_from_checkpoint(ckpt)
    with torch.no_grad():
        assert np.allclose(model.decode(torch.from_numpy(out["latents"])).numpy(), out["aux_means"], atol=1e-6)


def test_reconstruction_and_evaluation_from_a_checkpoint(lowres_checkpoint):
    ckpt, data = lowres_checkpoint
    test = load_split(data / "test.npz")[0][:12]
    rec = reconstruct_agave(ckpt, test[:3], seed=0, samples_per_image=2)
    assert rec["images"].shape == (3, 2, 1, 8, 8) and rec["targets"].shape == (3, 1, 4, 4)
    assert rec["aux_images"].shape == (3, 1, 4, 4)
    drawn = reconstruct_agave(ckpt, test[:3], seed=0, posterior_mean=False, batch_size=2)
    assert not np.array_equal(drawn["latents"], rec["latents"])
    again = reconstruct_agave(ckpt, test[:3], seed=0, posterior_mean=False)["latents"]  # another batch size
    assert np.allclose(drawn["latents"], again, atol=1e-6)
    result = evaluate_agave(ckpt, test, k=5, batch_size=5, k_batch=2)
    assert set(result["elbo"]) == {"bpd", "bpd_interval", "reconstruction", "kl", "auxiliary", "vae_bpd"}
    low, high = result["elbo"]["bpd_interval"]
    assert low < result["elbo"]["bpd"] < high
    low, high = result["importance"]["bpd_interval"]
    assert low < result["importance"]["bpd"] < high
    assert math.isclose(result["elbo"]["bpd"], result["elbo"]["reconstruction"] + result["elbo"]["kl"])
    assert 0 < result["importance"]["bpd"] < 2 * result["elbo"]["bpd"] and result["importance"]["k"] == 5
    assert "importance" not in evaluate_agave(ckpt, test, k=0)
