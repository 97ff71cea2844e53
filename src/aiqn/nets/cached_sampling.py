"""Cached autoregressive sampling for the Gated PixelCNN (both heads, every conditioning mode).

The naive sampler (`aiqn.nets.sampling`) runs the whole network once per pixel-channel, so most of
its work recomputes features that did not change. Following Fast PixelCNN++ (Ramachandran et
al. 2017, "Fast Generation for Convolutional Autoregressive Models"), this sampler computes each
layer's output at a position once, from cached values of the layers below:

- vertical stack, row by row: when image row r-1 is complete, every block's vertical features
  for row r-1 are computed from a rolling window of the k//2+1 rows of its input above (one
  small convolution per block and row), and the v->h term every position of row r needs is
  computed once for the whole row;
- horizontal stack, pixel by pixel: at (r, c) each block reads the k//2+1 cached horizontal
  inputs to its left (one matrix product), adds the cached v->h term and the conditioning,
  gates, and writes its output into the next block's cache; the output stage and head run at
  that one position only;
- colour channels in order: the horizontal pass at (r, c) is repeated for each channel, as the
  naive sampler repeats its forward pass. Features of colour group g depend only on channels
  < g of the pixel, so after the last pass every cached value at (r, c) is final.

It consumes exactly the draws of `aiqn.nets.draws.draw_noise` (uniforms for the categorical head,
tau for the quantile head) and returns the same uint8 samples as the naive sampler (tested per
layer and end to end). NOTE: the two samplers add the same numbers in a different order, so
float32 results differ by rounding (~1e-6); a draw falling within that distance of a category
boundary could in principle pick the neighbouring level. Tests compare in float64 and float32.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from aiqn.nets import GatedPixelCNN, to_unit
from aiqn.nets.layers import GatedBlock, gate, group_ids, tap_matrix
from aiqn.nets.draws import choose_level, keep_known, start_images


def _matrix(conv) -> torch.Tensor:
    """A 1x1 (or 1 x w) convolution's (masked) weight as an (in, out) matrix for x @ W."""
    return tap_matrix(conv).t().contiguous()  # (w*in, out), rows ordered (tap, in)


class _BlockWeights:
    """One GatedBlock's horizontal-stack weights, masked once and laid out for per-position
    matrix products (x @ W)."""

    def __init__(self, block: GatedBlock):
        self.block = block
        self.half = block.filter_size // 2
        self.h_matrix = _matrix(block.h_conv)  # (taps * in, 2P), rows ordered (tap, in)
        self.skip_matrix = _matrix(block.skip)  # (P, skip_planes)
        self.res_matrix = None if block.residual is None else _matrix(block.residual)  # (P, P)
        self.res_bias = None if block.residual is None else block.residual.bias


class CachedSampler:
    """Cached sampler bound to one model (weights are read once; rebuild after training)."""

    def __init__(self, model: GatedPixelCNN):
        if not isinstance(model, GatedPixelCNN):
            raise ValueError(f"cached sampling needs the Gated PixelCNN's two stacks, not {type(model).__name__}; "
                             "sample it with method 'naive' (sampling.method / --method naive)")
        self.model = model
        self.config = model.config
        with torch.no_grad():
            self.blocks = [_BlockWeights(block) for block in model.blocks]
            # sum_i gated_i @ skip_i + b_i == cat(gated_0, ..., gated_L) @ vstack(skip_i) + sum_i b_i
            skip_matrix = torch.cat([bw.skip_matrix for bw in self.blocks], dim=0)
            skip_bias = torch.stack([block.skip.bias for block in model.blocks]).sum(0)
            out_matrix, out_bias = _matrix(model.output_conv), model.output_conv.bias
            head_matrix, head_bias = _matrix(model.head.proj), model.head.proj.bias
            self.full_stage = (skip_bias, skip_matrix, out_bias, out_matrix, head_bias, head_matrix)
            # The output stage is colour-masked, so the head of colour c reads only the skip and
            # output planes of colours <= c: a prefix of each (groups are contiguous). Drawing
            # colour c needs only those planes and that colour's head columns.
            C = self.config.channels
            per_colour = self.config.levels if self.config.head == "categorical" else 1
            skip_groups = group_ids(skip_matrix.shape[1], C)
            out_groups = group_ids(out_matrix.shape[1], C)
            self.stages = []
            for c in range(C):
                n_skip, n_out = int((skip_groups <= c).sum()), int((out_groups <= c).sum())
                head_cols = slice(c * per_colour, (c + 1) * per_colour)
                self.stages.append((skip_bias[:n_skip].contiguous(), skip_matrix[:, :n_skip].contiguous(),
                                    out_bias[:n_out].contiguous(), out_matrix[:n_skip, :n_out].contiguous(),
                                    head_bias[head_cols].contiguous(), head_matrix[:n_out, head_cols].contiguous()))

    # ----------------------------------------------------------------------------- the core

    def _start(self, batch: int, device, dtype, tau, cond_map, class_onehot) -> dict:
        """Per-sample state: rolling vertical windows, horizontal row caches, conditioning."""
        cfg = self.config
        W = cfg.width
        state = {"tau": tau, "cond_map": cond_map, "class_onehot": class_onehot, "v_window": [], "h_row": [],
                 "v2h": [], "row_term": [None] * len(self.blocks)}
        for i, bw in enumerate(self.blocks):
            in_planes = cfg.channels if i == 0 else cfg.planes
            # rows r-half..r of this block's vertical input, zero-padded like pad_vertical
            state["v_window"].append(torch.zeros(batch, in_planes, bw.half + 1, W + 2 * bw.half, device=device,
                                                 dtype=dtype))
            # this block's horizontal input along the current row, (B, W + half, in), left-padded
            state["h_row"].append(torch.zeros(batch, W + bw.half, in_planes, device=device, dtype=dtype))
            # row 0 has only zero padding above it: its v->h term is the link's bias
            state["v2h"].append(bw.block.v_to_h.bias.to(dtype).reshape(1, -1, 1).expand(batch, -1, W))
        return state

    def _conditioned_state(self, batch: int, noise, class_labels, cond_map) -> tuple[dict, object, object]:
        """Fresh state for `batch` samples: tau from `noise` (B, C, H, W) for the quantile head,
        one-hot classes and the conditioning map, on the model's device and dtype."""
        cfg = self.config
        param = next(self.model.parameters())
        device, dtype = param.device, param.dtype
        tau = 2.0 * noise.to(device=device, dtype=dtype) - 1.0 if cfg.head == "quantile" else None
        class_onehot = None
        if cfg.num_classes:
            if class_labels is None:
                raise ValueError("a class-conditional model needs class_labels")
            class_onehot = F.one_hot(class_labels.to(device), cfg.num_classes).to(dtype)
        cond_map = None if cond_map is None else cond_map.to(device=device, dtype=dtype)
        return self._start(batch, device, dtype, tau, cond_map, class_onehot), device, dtype

    def _vertical_row(self, state: dict, row: int, image_row: torch.Tensor) -> list[torch.Tensor]:
        """Push complete image row `row` (B, C, W) in [-1, 1] through every block's vertical
        stack and keep the v->h term of row `row + 1`. Returns each block's v output (B, P, W)."""
        v_in = image_row
        outputs = []
        for i, bw in enumerate(self.blocks):
            block = bw.block
            new_row = F.pad(v_in, (bw.half, bw.half))[:, :, None]  # (B, in, 1, W + 2 half)
            window = torch.cat([state["v_window"][i][:, :, 1:], new_row], dim=2)
            state["v_window"][i] = window
            v_pre = block.v_conv(window)  # (B, 2P, 1, W)
            state["v2h"][i] = block.v_to_h(v_pre)[:, :, 0]  # (B, 2P, W)
            cond = block._conditioning("v", _row(state["tau"], row), _row(state["cond_map"], row),
                                       state["class_onehot"])
            v_in = gate(v_pre + cond)[:, :, 0]  # (B, P, W)
            outputs.append(v_in)
        return outputs

    def _begin_row(self, state: dict, row: int) -> None:
        """Everything the horizontal stack adds at each position of `row` that does not depend
        on the row's own pixels: the v->h term, tau, the conditioning map, the class and the
        convolution's bias, summed per block as (W, B, 2P)."""
        for i, bw in enumerate(self.blocks):
            block = bw.block
            cond = block._conditioning("h", _row(state["tau"], row), _row(state["cond_map"], row),
                                       state["class_onehot"])
            term = state["v2h"][i][:, :, None] + cond + block.h_conv.bias[:, None, None]  # (B, 2P, 1, W)
            state["row_term"][i] = term[:, :, 0].permute(2, 0, 1).contiguous()

    def _horizontal_position(self, state: dict, col: int, pixel: torch.Tensor, channel: int | None = None,
                             record: bool = False):
        """Horizontal stack, output stage and head at column `col` of the current row, given the
        pixel's current values (B, C) in [-1, 1]. Returns the head output for `channel`
        ((B, L) logits or (B, 1) quantile), or for all channels ((B, C*L) or (B, C)) when
        `channel` is None; and, when `record`, each block's h output and running skip sum."""
        h_in = pixel
        gated_all = []
        details = {"h": [], "skip": []}
        for i, bw in enumerate(self.blocks):
            h_row = state["h_row"][i]
            h_row[:, bw.half + col] = h_in
            window = h_row[:, col : col + bw.half + 1].reshape(h_row.shape[0], -1)  # cols col-half..col
            gated = gate(torch.addmm(state["row_term"][i][col], window, bw.h_matrix))  # (B, P)
            gated_all.append(gated)
            h_in = gated if bw.res_matrix is None else torch.addmm(h_in, gated, bw.res_matrix).add_(bw.res_bias)
            if record:
                details["h"].append(h_in)
                details["skip"].append(sum(g @ b.skip_matrix + b.block.skip.bias
                                           for g, b in zip(gated_all, self.blocks)))
        skip_bias, skip_matrix, out_bias, out_matrix, head_bias, head_matrix = (
            self.full_stage if channel is None else self.stages[channel])
        skips = torch.addmm(skip_bias, torch.cat(gated_all, dim=1), skip_matrix)
        features = F.relu(torch.addmm(out_bias, F.relu(skips), out_matrix))
        return torch.addmm(head_bias, features, head_matrix), details

    # ------------------------------------------------------------------------------ public

    @torch.no_grad()
    def sample_progressive(
        self,
        noise: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        cond_map: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
    ) -> Iterator[tuple[tuple[int, int, int], torch.Tensor]]:
        """Same interface and draws as `aiqn.nets.sampling.sample_progressive`."""
        cfg = self.config
        state, device, dtype = self._conditioned_state(noise.shape[0], noise, class_labels, cond_map)
        noise = noise.to(device)
        C = cfg.channels
        images, known, known_mask = start_images(noise, (C, cfg.height, cfg.width), known, known_mask)
        for row in range(cfg.height):
            self._begin_row(state, row)
            for col in range(cfg.width):
                for channel in range(C):
                    pixel = to_unit(images[:, :, row, col], cfg.levels).to(dtype)  # (B, C)
                    out, _ = self._horizontal_position(state, col, pixel, channel)
                    at = out if cfg.head == "categorical" else out[:, 0]  # (B, L) or (B,)
                    value = choose_level(cfg.head, at, noise[:, channel, row, col], cfg.levels)
                    images[:, channel, row, col] = keep_known(value, known, known_mask, channel, row, col)
                    yield (row, col, channel), images
                # later columns read this pixel through the first block's horizontal window
                first = self.blocks[0]
                state["h_row"][0][:, first.half + col] = to_unit(images[:, :, row, col], cfg.levels).to(dtype)
            if row + 1 < cfg.height:  # row complete: its vertical features feed the rows below
                self._vertical_row(state, row, to_unit(images[:, :, row], cfg.levels).to(dtype))

    @torch.no_grad()
    def teacher_forced(self, images: torch.Tensor, noise: torch.Tensor | None = None, class_labels=None,
                       cond_map=None) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """Run the cached computation over a complete image (no sampling) and return every
        block's vertical output, horizontal output and running skip sum, and the head output,
        each as a full map (B, F, H, W): what the per-layer tests compare with the full network."""
        cfg = self.config
        state, device, dtype = self._conditioned_state(images.shape[0], noise, class_labels, cond_map)
        unit = to_unit(images.to(device).long(), cfg.levels).to(dtype)
        maps: dict = {"v": [[] for _ in self.blocks], "h": [[] for _ in self.blocks],
                      "skip": [[] for _ in self.blocks], "out": []}
        for row in range(cfg.height):
            self._begin_row(state, row)
            out_row, h_rows, skip_rows = [], [[] for _ in self.blocks], [[] for _ in self.blocks]
            for col in range(cfg.width):
                out, details = self._horizontal_position(state, col, unit[:, :, row, col], record=True)
                out_row.append(out)
                for i in range(len(self.blocks)):
                    h_rows[i].append(details["h"][i])
                    skip_rows[i].append(details["skip"][i])
            maps["out"].append(torch.stack(out_row, dim=-1))  # (B, F, W)
            for i, v in enumerate(self._vertical_row(state, row, unit[:, :, row])):
                maps["v"][i].append(v)
                maps["h"][i].append(torch.stack(h_rows[i], dim=-1))
                maps["skip"][i].append(torch.stack(skip_rows[i], dim=-1))
        result: dict = {"out": torch.stack(maps["out"], dim=-2)}  # (B, F, H, W)
        for key in ("v", "h", "skip"):
            result[key] = [torch.stack(rows, dim=-2) for rows in maps[key]]
        return result


def _row(tensor: torch.Tensor | None, row: int) -> torch.Tensor | None:
    """(B, F, H, W) -> (B, F, 1, W) slice at `row`, or None."""
    return None if tensor is None else tensor[:, :, row : row + 1]


def sample_cached(model: GatedPixelCNN, noise: torch.Tensor, **conditioning) -> torch.Tensor:
    """Drain the cached sampler: (B, C, H, W) uint8 on the CPU, same as `aiqn.nets.sampling.sample`."""
    images = None
    for _, images in CachedSampler(model).sample_progressive(noise, **conditioning):
        pass
    return images.to(torch.uint8).cpu()
