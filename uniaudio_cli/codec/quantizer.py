"""Multi-scale residual VQ whose frozen codebooks are rows of an LLM's embedding table.

Each layer average-pools the residual by its stride, picks the nearest codebook row by cosine
after a learned linear projection into the latent space, repeats the projected vector back to
frame rate and subtracts it from the residual. Parameter names follow the published
checkpoint (``quantizers.{i}.cb_proj``, ``quantizers.{i}.codebook.weight``) so its state dict
loads as is; in our own checkpoints the frozen ``codebook`` rows are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uniaudio_cli.codec.config import RESIDUAL_SEARCHES


def argmax_rows(x: torch.Tensor, block: int = 64) -> torch.Tensor:
    """``x.argmax(dim=-1)`` for a wide ``(N, K)`` matrix, with the same result (the first maximum).

    PyTorch's CPU argmax over a row is scalar code while a row maximum (``amax``) is vectorised.
    So the maxima of blocks of ``block`` columns come first, then the argmax inside the first
    block that holds the row's maximum (or in the last, partial block): about 4x faster on the
    49k-column similarity matrices of the quantizer's search.
    """
    n, k = x.shape
    if k < 8 * block or x.device.type != "cpu" or x.stride(1) != 1:
        return x.argmax(dim=-1)
    nb = k // block
    blocks = x.as_strided((n, nb, block), (x.stride(0), block, 1))
    maxima = blocks.amax(dim=-1)
    first = maxima.argmax(dim=-1)
    rows = torch.arange(n, device=x.device)
    idx = first * block + blocks[rows, first].argmax(dim=-1)
    if nb * block < k:
        tail_max, tail_idx = x[:, nb * block :].max(dim=-1)
        idx = torch.where(tail_max > maxima[rows, first], nb * block + tail_idx, idx)
    return idx


def best_rows(x: torch.Tensor, table: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
    """Exact maximum-dot-product search: ``(N, D)`` queries, ``(K, D)`` table -> ``(N,)`` indices
    of the best row, the rows listed in ``banned`` (indices ``(B,)``) left out."""
    scores = x @ table.t()
    if banned.numel():
        scores.index_fill_(1, banned, float("-inf"))
    return argmax_rows(scores)


def euclidean_table(rows: torch.Tensor) -> torch.Tensor:
    """``(K, D)`` rows ``p_k`` -> ``(K, D + 1)`` rows ``[p_k, -|p_k|^2 / 2]``, scaled to a unit
    maximum norm: their maximum dot product with :func:`euclidean_queries` is the nearest ``p_k``
    (``|z - p_k|^2 = |z|^2 - 2 (z·p_k - |p_k|^2 / 2)``; one scale for all rows keeps the order)."""
    rows = rows.detach().float()
    table = torch.cat([rows, -0.5 * rows.pow(2).sum(1, keepdim=True)], dim=1)
    return table / table.norm(dim=1).max().clamp_min(1e-12)


def euclidean_queries(z: torch.Tensor) -> torch.Tensor:
    """``(B, D, T)`` latents -> ``(B * T, D + 1)`` unit queries ``[z, 1] / |[z, 1]|`` for
    :func:`euclidean_table`."""
    x = z.transpose(1, 2).reshape(-1, z.shape[1]).float()
    return F.normalize(torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1), dim=-1)


class LowRankSearch:
    """Exact maximum-dot-product search over a wide table of unit rows, in two passes.

    The projected codebooks are nearly low-rank (16 directions hold 99.95 % of their energy), so
    scores in the table's top ``rank`` principal directions, ``a = (x V)(T V)^T``, cost
    ``D / rank`` times fewer multiply-adds than the exact ``x T^T``, and the rest is bounded:
    ``|x·t_k - a_k| <= |res(t_k)| |res(x)|`` (Cauchy-Schwarz on the parts outside those
    directions). Every row whose coarse score is within twice that bound of the best coarse score
    is scored exactly, and the exact best among them wins, the lowest index among equals as
    ``argmax`` picks. So the result is the exact search's up to float rounding, on 1.2 to 1.6
    candidates per query (measured on LibriSpeech, rank 32) instead of 49k.

    Args:
        table: ``(K, D)`` unit-norm rows.
        banned: ``(K,)`` bool, rows never returned.
        rank: principal directions in the coarse pass (default ``RANK``).
    """

    # Slack for float32 rounding in the coarse scores, far above it, far below a score gap.
    TOLERANCE = 1e-4
    RANK = 32
    ROWS = 32
    WIDTH = 64  # columns per block of the candidate pass
    # Mean candidate blocks per query above which the exact product is cheaper than gathering them
    # (measured on the default codec's layer-2 table: 16 sent one slice in six to the exact product
    # and encoded 1.5x slower than 32 or 64; tables with fewer candidates are not affected).
    MAX_BLOCKS = 32
    # Rows further than this outside the basis (unit rows of a full-rank table reach ~0.9): the
    # candidates would be too many for the coarse pass to pay for itself.
    MAX_REACH = 0.25

    def __init__(self, table: torch.Tensor, banned: torch.Tensor, rank: int | None = None) -> None:
        with torch.autocast("cpu", enabled=False):
            self._build(table.float(), banned, rank or self.RANK)

    def _build(self, table: torch.Tensor, banned: torch.Tensor, rank: int) -> None:
        # Principal directions from the (D, D) Gram matrix of a sample of rows: far cheaper than
        # an SVD of the table, and any orthonormal basis gives an exact search (the bound below
        # is measured over every row); a good one only keeps the candidates few.
        sample = table[:: max(1, table.shape[0] // 4096)]
        _, vecs = torch.linalg.eigh(sample.t() @ sample)
        self.basis = vecs[:, -rank:].contiguous()  # (D, rank)
        self.coarse = (table @ self.basis).contiguous()  # (K, rank)
        # The part of a row outside the basis has the squared norm |t|^2 - |t V|^2 (Pythagoras).
        outside = (table.pow(2).sum(dim=1) - self.coarse.pow(2).sum(dim=1)).clamp_min(0.0)
        self.reach = float(outside.masked_fill(banned, 0.0).max().sqrt())
        self.table = table
        self.banned = banned.nonzero().squeeze(1)
        self.useful = self.reach <= self.MAX_REACH

    @staticmethod
    def pays_off(table: torch.Tensor) -> bool:
        """Whether the two passes beat one exact product: a wide table on the CPU."""
        return table.device.type == "cpu" and table.shape[0] >= 8192 and table.shape[1] >= 4 * LowRankSearch.RANK

    @classmethod
    def where_it_pays(cls, table: torch.Tensor, banned: torch.Tensor) -> LowRankSearch | None:
        """A search over ``table`` where it beats the exact product (:meth:`pays_off`, and rows
        close enough to the basis: ``useful``), else ``None`` for the caller's exact product."""
        if not cls.pays_off(table):
            return None
        search = cls(table, banned)
        return search if search.useful else None

    def argmax(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` unit queries -> ``(N,)`` indices of the table's best row (banned left out).

        Always in float32, also inside a bfloat16 autocast (training on a CPU with native bf16):
        the bound that makes the candidates exact is measured in float32, and the score buffer
        is reused through ``out=``, which autocast's bf16 products cannot fill."""
        with torch.autocast("cpu", enabled=False):
            return self._argmax(x.float())

    def _argmax(self, x: torch.Tensor) -> torch.Tensor:
        low = x @ self.basis  # (N, rank)
        miss = (x - low @ self.basis.t()).norm(dim=1)  # (N,)
        best = torch.empty(x.shape[0], dtype=torch.long)
        # Queries in small slices, each written into the same buffer: a fresh (N, K) score matrix
        # costs more in page faults and cache misses than the multiply-adds that fill it (a
        # 512-row one three times the time per row of a reused 32-row one).
        buffer = torch.empty(min(self.ROWS, x.shape[0]), self.coarse.shape[0])
        for start in range(0, x.shape[0], self.ROWS):
            end = start + self.ROWS
            best[start:end] = self._argmax_slice(x[start:end], low[start:end], miss[start:end], buffer)
        return best

    def _argmax_slice(
        self, x: torch.Tensor, low: torch.Tensor, miss: torch.Tensor, buffer: torch.Tensor
    ) -> torch.Tensor:
        coarse = torch.matmul(low, self.coarse.t(), out=buffer[: x.shape[0]])  # (n, K)
        if self.banned.numel():
            coarse.index_fill_(1, self.banned, float("-inf"))
        n, k = coarse.shape
        # Candidates through the maxima of column blocks (one vectorised pass over the matrix)
        # rather than a comparison of every score: a row's scores are read again only in the
        # few blocks that reach its threshold.
        w = self.WIDTH
        blocks = coarse[:, : k // w * w].view(n, k // w, w)
        block_max = blocks.amax(dim=-1)  # (n, K // w)
        tail = coarse[:, k // w * w :]
        top = block_max.amax(dim=1)
        if tail.shape[1]:
            top = torch.maximum(top, tail.amax(dim=1))
        floor = top - 2 * self.reach * miss - self.TOLERANCE
        hit_rows, hit_blocks = (block_max >= floor[:, None]).nonzero(as_tuple=True)
        if hit_rows.numel() > self.MAX_BLOCKS * n:
            # Queries far outside the table's principal span: one exact product is cheaper.
            return best_rows(x, self.table, self.banned)
        pick, offset = (blocks[hit_rows, hit_blocks] >= floor[hit_rows, None]).nonzero(as_tuple=True)
        rows, cols = hit_rows[pick], hit_blocks[pick] * w + offset
        if tail.shape[1]:
            tail_rows, tail_cols = (tail >= floor[:, None]).nonzero(as_tuple=True)
            rows, cols = torch.cat([rows, tail_rows]), torch.cat([cols, tail_cols + k // w * w])
        exact = (x[rows] * self.table[cols]).sum(dim=1)
        top_exact = torch.full((n,), float("-inf")).scatter_reduce(0, rows, exact, "amax")
        winners = exact == top_exact[rows]
        first = torch.full((n,), k, dtype=torch.long).scatter_reduce(0, rows[winners], cols[winners], "amin")
        lost = first == k
        if lost.any():  # a NaN query reaches no candidate; the exact product still names a row
            first[lost] = best_rows(x[lost], self.table, self.banned)
        return first


class FrozenCodebook(nn.Module):
    """Holds a frozen ``(K, E)`` table as ``weight`` (a buffer, so optimisers never see it)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(size, dim), persistent=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class LLMVectorQuantizer(nn.Module):
    """One VQ layer with a frozen LLM codebook and a learned projection into the latent space.

    Args:
        input_dim: latent channels D.
        codebook_size: rows K of the frozen table.
        codebook_dim: columns E of the frozen table.
        stride: temporal pooling factor of this layer.
        reference_ties: break near-ties as the reference release does (see :meth:`nearest`).
        map_hidden: width of a residual MLP added to the linear map ``cb_proj`` (0: none).
    """

    def __init__(
        self,
        input_dim: int,
        codebook_size: int,
        codebook_dim: int,
        stride: int = 1,
        reference_ties: bool = False,
        map_hidden: int = 0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.reference_ties = reference_ties
        self.codebook = FrozenCodebook(codebook_size, codebook_dim)
        self.cb_proj = nn.Linear(codebook_dim, input_dim)
        # A linear map of the LLM's embeddings leaves the projected table nearly low-rank (15 of
        # 256 directions hold 99.9 % of its energy); a residual MLP beside it can place the rows
        # where the residuals are. Its last layer starts at zero: adding it changes no code.
        self.cb_mlp: nn.Sequential | None = None
        if map_hidden:
            self.cb_mlp = nn.Sequential(
                nn.Linear(codebook_dim, map_hidden), nn.GELU(), nn.Linear(map_hidden, input_dim)
            )
            nn.init.zeros_(self.cb_mlp[2].weight)
            nn.init.zeros_(self.cb_mlp[2].bias)
        # Codes that must never be chosen (e.g. special tokens of the LLM); not part of the weights.
        self.register_buffer("banned", torch.zeros(codebook_size, dtype=torch.bool), persistent=False)
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self._cache_normed: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cache_low_rank: LowRankSearch | None = None
        self._cache_euclidean: tuple[torch.Tensor, LowRankSearch | None] | None = None
        self.search_snapshot: dict[str, torch.Tensor] | None = None
        self._search: tuple[torch.Tensor, torch.Tensor | None, LowRankSearch | None] | None = None
        self._search_key: tuple | None = None
        self._search_gen = 0  # bumped by every (un)freeze, so a new snapshot never reuses an old table

    @property
    def codebook_size(self) -> int:
        return self.codebook.weight.shape[0]

    def projection_params(self) -> dict[str, torch.Tensor]:
        """The map's parameters by name (``weight``, ``bias``, and ``mlp.*`` with a residual MLP):
        what :meth:`freeze_search` snapshots."""
        params = {"weight": self.cb_proj.weight, "bias": self.cb_proj.bias}
        if self.cb_mlp is not None:
            params.update({f"mlp.{k}": v for k, v in self.cb_mlp.named_parameters()})
        return params

    def project(self, rows: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Codebook rows ``(N, E)`` -> latent vectors ``(N, D)``: the linear ``cb_proj``, plus the
        residual MLP where there is one; with ``params`` (a :meth:`projection_params` snapshot)
        instead of the current weights."""
        if params is None:
            out = self.cb_proj(rows)
            return out + self.cb_mlp(rows) if self.cb_mlp is not None else out
        out = F.linear(rows, params["weight"], params["bias"])
        if self.cb_mlp is not None:
            hidden = F.gelu(F.linear(rows, params["mlp.0.weight"], params["mlp.0.bias"]))
            out = out + F.linear(hidden, params["mlp.2.weight"], params["mlp.2.bias"])
        return out

    def projected_codebook(self) -> torch.Tensor:
        """``(K, D)`` codebook rows mapped into the latent space.

        Cached outside autograd: projecting a 49k-row table costs more than the rest of an
        inference pass. The key uses the tensors' version counters, which every in-place
        update (optimizer step, ``load_state_dict``, ``set_codebooks``) bumps.
        """
        if torch.is_grad_enabled():
            return self.project(self.codebook.weight)
        key = self._projection_key()
        if self._cache_key != key:
            self._set_cache(self.project(self.codebook.weight), key)
        return self._cache

    def install_projected_codebook(self, table: torch.Tensor) -> bool:
        """Take ``table`` ``(K, D)`` as :meth:`projected_codebook`'s result for the weights as they
        are now (a table stored by :mod:`~uniaudio_cli.codec.table_cache`, computed from these
        weights), if its shape, dtype and device match them; returns whether it was taken."""
        w, cb = self.cb_proj.weight, self.codebook.weight
        if table.shape != (cb.shape[0], w.shape[0]) or table.dtype != w.dtype or table.device != w.device:
            return False
        self._set_cache(table, self._projection_key())
        return True

    def _projection_key(self) -> tuple:
        w, cb = self.cb_proj.weight, self.codebook.weight
        return (
            tuple((t._version, t.data_ptr()) for t in self.projection_params().values()),
            cb._version,
            cb.data_ptr(),
            w.dtype,
            w.device,
        )

    def _set_cache(self, table: torch.Tensor, key: tuple) -> None:
        self._cache = table
        normed = F.normalize(table, dim=-1)
        self._cache_normed = (normed, normed.pow(2).sum(1))
        self._cache_low_rank = None
        self._cache_euclidean = None
        self._cache_key = key

    def nearest(self, z: torch.Tensor, projected: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine nearest neighbour. ``z``: ``(B, D, T)`` pooled latents -> codes ``(B, T)``.

        The inference search. With ``reference_ties`` (the published checkpoint) it computes the
        squared distance between unit vectors as the reference release does, so that near-ties
        break the same way and codes match it exactly. Otherwise it ranks by the dot product
        alone, as training's :meth:`search` does (the same order up to float rounding): the
        distance's two extra passes over the ``(N, K)`` matrix and the mask took 40 % of encoding.
        On the CPU a wide, nearly low-rank table (the LLM's: 49k rows) is searched by
        :class:`LowRankSearch`, the same codes at half the encoding time.
        """
        cb = projected if projected is not None else self.projected_codebook()
        enc = F.normalize(z.transpose(1, 2).reshape(-1, z.shape[1]), dim=-1)
        if cb is self._cache and self._cache_normed is not None:
            cbn, cb_sq = self._cache_normed
        else:
            cbn, cb_sq = F.normalize(cb, dim=-1), None
        if self.reference_ties:
            if cb_sq is None:
                cb_sq = cbn.pow(2).sum(1)
            sim = 2 * enc @ cbn.t() - enc.pow(2).sum(1, keepdim=True) - cb_sq[None]
            if self.banned.any():
                sim.masked_fill_(self.banned, float("-inf"))
            return argmax_rows(sim).view(z.shape[0], z.shape[2])
        if cb is self._cache and LowRankSearch.pays_off(cbn):
            if self._cache_low_rank is None:
                self._cache_low_rank = LowRankSearch(cbn, self.banned)
            if self._cache_low_rank.useful:
                return self._cache_low_rank.argmax(enc).view(z.shape[0], z.shape[2])
        return best_rows(enc, cbn, self.banned.nonzero().squeeze(1)).view(z.shape[0], z.shape[2])

    def nearest_euclidean(self, z: torch.Tensor, projected: torch.Tensor | None = None) -> torch.Tensor:
        """Euclidean nearest neighbour among the projected rows ``p_k``: ``z`` ``(B, D, T)``
        pooled residual -> codes ``(B, T)``, banned rows left out.

        The cosine search of :meth:`nearest` ignores the rows' lengths, so the chosen vector can
        overshoot or fall short of the residual; this one minimises ``|z - p_k|^2``, the error
        the next layer and the decoder are left with. Over a layer of stride ``s`` the frames'
        summed error is smallest at the row nearest their mean, which is what ``z`` holds.
        It is a maximum dot product (:func:`euclidean_table`, :func:`euclidean_queries`),
        searched by :class:`LowRankSearch` where that pays.
        """
        cb = projected if projected is not None else self.projected_codebook()
        from_cache = cb is self._cache
        if from_cache and self._cache_euclidean is not None:
            table, fast = self._cache_euclidean
        else:
            table = euclidean_table(cb)
            fast = LowRankSearch.where_it_pays(table, self.banned)
            if from_cache:
                self._cache_euclidean = (table, fast)
        x = euclidean_queries(z)
        best = fast.argmax(x) if fast is not None else best_rows(x, table, self.banned.nonzero().squeeze(1))
        return best.view(z.shape[0], z.shape[2])

    def freeze_search(
        self, snapshot: dict[str, torch.Tensor] | tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        """Make :meth:`search` rank with the projection as it is now (or as ``snapshot``: a
        :meth:`projection_params` dict, or for a linear map its ``(weight, bias)`` pair), until
        the next call; ``unfreeze_search`` undoes it.

        Training refreshes it every few optimiser steps: a step moves the projection very little,
        while projecting (and under autocast casting) a 49k-row table every step took a third of
        a CPU step. The snapshot is small (the map's weights), so a resumed run rebuilds the same
        table.
        """
        if snapshot is None:
            params = self.projection_params()
        elif isinstance(snapshot, tuple):
            params = {"weight": snapshot[0], "bias": snapshot[1]}
        else:
            params = dict(snapshot)
        if set(params) != set(self.projection_params()):
            raise ValueError(f"search snapshot has {sorted(params)}, the map {sorted(self.projection_params())}")
        self.search_snapshot = {k: v.detach().clone() for k, v in params.items()}
        self._search_gen += 1

    def unfreeze_search(self) -> None:
        """Rank with the current projection again (the default)."""
        self.search_snapshot = None
        self._search_gen += 1

    def search(self, z: torch.Tensor, euclidean: bool = False) -> torch.Tensor:
        """Training-time nearest codes: pooled latents ``(B, D, T)`` -> codes ``(B, T)``.

        Ranks by the dot product with the unit-norm projected rows, banned rows left out (the
        order of :meth:`nearest` up to float rounding), or with ``euclidean`` by the distance
        (the order of :meth:`nearest_euclidean`), with the projection frozen by
        :meth:`freeze_search` if it was; through :class:`LowRankSearch` where it pays. The chosen
        rows are projected afresh (with gradients) by the caller.
        """
        params = self.search_snapshot if self.search_snapshot is not None else self.projection_params()
        cb = self.codebook.weight
        dtype = torch.get_autocast_dtype(z.device.type) if torch.is_autocast_enabled(z.device.type) else None
        versions = tuple(t._version for t in params.values())
        key = (self._search_gen, versions, cb._version, cb.data_ptr(), cb.device, dtype, euclidean)
        if self._search is None or self._search_key != key:
            with torch.no_grad():
                rows = self.project(cb, params)
                table = euclidean_table(rows) if euclidean else F.normalize(rows, dim=-1)
                fast = LowRankSearch.where_it_pays(table, self.banned)
                ids = None
                if fast is None and self.banned.any():
                    ids = (~self.banned).nonzero().squeeze(1)
                    table = table[ids]
                self._search = (table.contiguous(), ids, fast)
            self._search_key = key
        table, ids, fast = self._search
        enc = euclidean_queries(z) if euclidean else F.normalize(z.transpose(1, 2).reshape(-1, z.shape[1]), dim=-1)
        if fast is not None:
            return fast.argmax(enc).view(z.shape[0], z.shape[2])
        best = argmax_rows(enc @ table.t())
        if ids is not None:
            best = ids[best]
        return best.view(z.shape[0], z.shape[2])

    def pool(self, z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(z, self.stride, self.stride) if self.stride > 1 else z

    def embed(self, codes: torch.Tensor, projected: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``(B, T_i)`` -> projected code vectors at frame rate ``(B, D, T_i * stride)``."""
        cb = projected if projected is not None else self.projected_codebook()
        z_q = F.embedding(codes, cb).transpose(1, 2)
        return z_q.repeat_interleave(self.stride, dim=-1) if self.stride > 1 else z_q


@dataclass
class QuantizerOutput:
    """``z_q``: ``(B, D, T)`` sum of the layers; ``codes``: per layer ``(B, T // stride_i)``;
    ``layers``: per-layer quantized contribution ``(B, D, T)`` (straight-through);
    ``pooled``: per-layer pooled pre-quantization residual ``(B, D, T // stride_i)``;
    ``commitment``: scalar commitment loss (encoder pulled towards the chosen codes)."""

    z_q: torch.Tensor
    codes: list[torch.Tensor]
    layers: list[torch.Tensor]
    pooled: list[torch.Tensor]
    commitment: torch.Tensor


class MultiScaleRVQ(nn.Module):
    """Residual VQ over layers with strides ``vq_strides`` (default ``[4, 2, 1]``).

    ``reference_ties``: break the inference search's near-ties as the reference release does
    (see :meth:`LLMVectorQuantizer.nearest`); set for the published checkpoint.
    ``residual_search``: ``"euclidean"`` makes :meth:`encode` and training's :meth:`forward` pick
    the codes of every layer after the first by the Euclidean distance
    (:meth:`LLMVectorQuantizer.nearest_euclidean`; see ``CodecConfig``).
    ``map_hidden``: width of a residual MLP beside the linear codebook map of every layer after
    the first (0: linear only, the paper's; see ``CodecConfig.codebook_map_hidden``).
    """

    def __init__(
        self,
        input_dim: int,
        strides: list[int],
        sizes: list[int],
        dims: list[int],
        reference_ties: bool = False,
        residual_search: str = "cosine",
        map_hidden: int = 0,
    ) -> None:
        super().__init__()
        if residual_search not in RESIDUAL_SEARCHES:
            raise ValueError(f"residual_search must be one of {RESIDUAL_SEARCHES}, not {residual_search!r}")
        self.residual_search = residual_search
        if not len(strides) == len(sizes) == len(dims):
            raise ValueError("vq_strides, codebook_sizes and codebook_dims must have one entry per layer")
        # The semantic layer keeps its linear map: the semantic loss pulls text embeddings through
        # it, and its rows stay a linear image of the LLM's words.
        self.quantizers = nn.ModuleList(
            LLMVectorQuantizer(input_dim, k, e, s, reference_ties, map_hidden if i > 0 else 0)
            for i, (s, k, e) in enumerate(zip(strides, sizes, dims, strict=True))
        )

    @property
    def strides(self) -> list[int]:
        return [q.stride for q in self.quantizers]

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """``z``: ``(B, D, T)`` with ``T`` a multiple of every stride."""
        residual = z
        z_q = torch.zeros_like(z)
        codes, layers, pooled = [], [], []
        commitment = z.new_zeros(())
        for i, q in enumerate(self.quantizers):
            z_e = q.pool(residual)
            # Search under no_grad and re-project only the chosen rows: projecting the whole
            # table (up to 49k x 576) with autograd would dominate a CPU training step.
            with torch.no_grad():
                idx = q.search(z_e, euclidean=i > 0 and self.residual_search == "euclidean")
            z_c = q.project(q.codebook(idx)).transpose(1, 2)
            # Codebook rows are frozen but the projection learns, so both sides get a gradient.
            commitment = commitment + F.mse_loss(z_e, z_c.detach()) + F.mse_loss(z_c, z_e.detach())
            z_c = z_e + (z_c - z_e).detach()
            z_i = z_c.repeat_interleave(q.stride, dim=-1) if q.stride > 1 else z_c
            z_q = z_q + z_i
            residual = residual - z_i
            codes.append(idx)
            layers.append(z_i)
            pooled.append(z_e)
        return QuantizerOutput(z_q, codes, layers, pooled, commitment)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``(B, D, T)`` -> per-layer codes ``(B, T // stride_i)``, without gradients."""
        residual = z
        codes = []
        for i, q in enumerate(self.quantizers):
            projected = q.projected_codebook()
            z_e = q.pool(residual)
            if i > 0 and self.residual_search == "euclidean":
                idx = q.nearest_euclidean(z_e, projected)
            else:
                idx = q.nearest(z_e, projected)
            # z_e + (z_c - z_e) rather than z_c: the training-time straight-through form, kept
            # so that the residual, and so the next layer's codes, are bit-identical to training.
            z_c = z_e + (F.embedding(idx, projected).transpose(1, 2) - z_e)
            residual = residual - (z_c.repeat_interleave(q.stride, dim=-1) if q.stride > 1 else z_c)
            codes.append(idx)
        return codes

    def decode(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """Per-layer codes ``(B, T // stride_i)`` -> summed latent ``(B, D, T)``."""
        if len(codes) != len(self.quantizers):
            raise ValueError(f"expected {len(self.quantizers)} code layers, got {len(codes)}")
        return sum(q.embed(c) for q, c in zip(self.quantizers, codes, strict=True))
