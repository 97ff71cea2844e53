"""An autoregressive implicit quantile network (AIQN) over a low-dimensional latent space, built as a
masked MLP in the manner of MADE (Germain et al. 2015). Used by the AIQN-VAE (Ostrovski et al. 2018,
appendix "AIQN-VAE"): an MLP of three fully connected ReLU layers of width 512 that models the
distribution of a VAE's encoder means z in R^d.

What the network computes
-------------------------
An AIQN represents the joint quantile function of z autoregressively,

    Q_tau(z) = (Q_1(tau_1), Q_2(tau_2 | z_1), ..., Q_d(tau_d | z_<d)),   tau ~ U[0, 1]^d,

so output i is the conditional tau_i-quantile of z_i given the earlier latent dimensions. The network
takes the pair (tau, z) and returns all d conditional quantiles in one pass:

    forward(tau (B, d), z (B, d)) -> q (B, d),   q_i = Q_i(tau_i | z_<i),

with the structural guarantee that q_i depends on z_j only for j < i and on tau_j only for j = i.

- Training (on data): z are the encoder means of a batch, tau ~ U[0, 1]^d independent of z; one pass
  gives every q_i at the data's own z_<i, and the Huber quantile loss rho^kappa_tau_i(z_i - q_i)
  summed over i trains all conditionals at once (teacher forcing, as for PixelIQN).
- Sampling: draw tau, then for i = 1..d run the network on the z generated so far and set
  z_i = q_i (d passes; `sample`). Then z_i is a function of tau_1..tau_i, as in the paper's
  y = d(Q_tau).

Input layout and masks
----------------------
The input is concat[z, 2 tau - 1] (2d features; tau rescaled to [-1, 1] as in PixelIQN). Every unit
carries a degree m and a tau tag s (0 = no tau):

    input z_j          : m = j,     s = 0          (j = 1..d)
    input tau_i        : m = 0,     s = i
    context hidden unit: m in 1..d-1, s = 0         (sees z_<=m, no tau; plain MADE units)
    tau hidden unit    : m = i - 1, s = i           (one output dimension i: sees z_<i and tau_i)
    output i           : m = i - 1, s = i

and a connection u -> v is kept iff  m(u) <= m(v)  and  (s(u) = 0 or s(u) = s(v)).
By induction every unit with tag s = i depends on z_<i and tau_i only, and every context unit of
degree m on z_<=m only; so output i sees z_<i and tau_i. The network is one MLP of `layers` masked
fully connected ReLU layers of width `hidden` and a masked linear output layer, plus a direct masked
linear input -> output connection (as in MADE); a fraction `tau_fraction` of each hidden layer are
tau units, split evenly over the d output dimensions (hidden 512, d = 32, fraction 1/2: 8 per
dimension, each fed by the 256 dense context units), the rest are MADE context units with degrees
cycling through 1..d-1. Plain MADE with tau as d more inputs of degree i could not do this: its
output i would also see tau_<i, which is noise independent of the data's z_<i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLinear(nn.Linear):
    """nn.Linear whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        if mask.shape != (out_features, in_features):
            raise ValueError(f"mask shape {tuple(mask.shape)} != {(out_features, in_features)}")
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _connectivity(m_in: torch.Tensor, s_in: torch.Tensor, m_out: torch.Tensor, s_out: torch.Tensor) -> torch.Tensor:
    """Mask (out, in): 1 where m_in <= m_out and (s_in == 0 or s_in == s_out)."""
    degree_ok = m_in[None, :] <= m_out[:, None]  # (out, in)
    tag_ok = (s_in[None, :] == 0) | (s_in[None, :] == s_out[:, None])  # (out, in)
    return (degree_ok & tag_ok).float()


class AutoregressiveQuantileMLP(nn.Module):
    """AIQN over R^dim: q = f(tau, z) with q_i = Q_i(tau_i | z_<i) (see the module docstring).

    dim: latent dimension d; hidden: width of each hidden layer; layers: number of hidden layers
    (masked fully connected + ReLU); tau_fraction: share of each hidden layer given to the
    per-dimension tau units (at least one per dimension).
    """

    def __init__(self, dim: int, hidden: int = 512, layers: int = 3, tau_fraction: float = 0.5):
        super().__init__()
        if dim < 1 or layers < 1:
            raise ValueError(f"need dim >= 1 and layers >= 1, got dim={dim}, layers={layers}")
        n_tau = dim * max(1, int(round(hidden * tau_fraction / dim))) if dim > 1 else hidden
        n_context = hidden - n_tau if dim > 1 else 0
        if dim > 1 and (n_tau > hidden - 1 or n_context < 1):
            raise ValueError(f"hidden={hidden} is too narrow for dim={dim} "
                             f"(needs >= {dim} tau units plus context units)")
        self.dim, self.hidden, self.layers = dim, hidden, layers
        d = dim
        idx = torch.arange(1, d + 1)
        m_in = torch.cat([idx, torch.zeros(d, dtype=torch.long)])  # z_j: j; tau_i: 0
        s_in = torch.cat([torch.zeros(d, dtype=torch.long), idx])  # z_j: 0; tau_i: i
        k_ctx = torch.arange(n_context)
        m_ctx = k_ctx % max(d - 1, 1) + 1  # degrees cycling through 1..d-1
        s_tau = torch.arange(n_tau) % d + 1  # output dimension of each tau unit
        m_hid = torch.cat([m_ctx, s_tau - 1])
        s_hid = torch.cat([torch.zeros(n_context, dtype=torch.long), s_tau])
        m_out, s_out = idx - 1, idx
        net = []
        m_prev, s_prev, width = m_in, s_in, 2 * d
        for _ in range(layers):
            net.append(MaskedLinear(width, hidden, _connectivity(m_prev, s_prev, m_hid, s_hid)))
            m_prev, s_prev, width = m_hid, s_hid, hidden
        self.hidden_layers = nn.ModuleList(net)
        self.output = MaskedLinear(hidden, d, _connectivity(m_hid, s_hid, m_out, s_out))
        # direct linear input -> output connections under the same rule (as in MADE): every q_i is
        # affine in tau_i and z_<i plus the MLP's term, so no output can lose its tau_i to dead ReLUs
        self.skip = MaskedLinear(2 * d, d, _connectivity(m_in, s_in, m_out, s_out), bias=False)

    def forward(self, tau: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """tau (B, d) in [0, 1], z (B, d) (None: zeros, only valid for output 1) -> quantiles (B, d)."""
        if z is None:
            z = torch.zeros_like(tau)
        x = torch.cat([z, 2.0 * tau - 1.0], dim=1)  # (B, 2d)
        h = x
        for layer in self.hidden_layers:
            h = F.relu(layer(h))  # (B, hidden)
        return self.output(h) + self.skip(x)  # (B, d)

    @torch.no_grad()
    def sample(self, tau: torch.Tensor) -> torch.Tensor:
        """Generate z (B, d) from tau (B, d) dimension by dimension: z_i = Q_i(tau_i | z_<i) (d passes)."""
        z = torch.zeros_like(tau)
        for i in range(self.dim):
            z[:, i] = self.forward(tau, z)[:, i]
        return z
