"""LATTICE (Zhang, Zhu, Liu, Wu, Wang, Wang, "Mining Latent Structures for Multimedia
Recommendation", ACM MM 2021) on the plugin's multimedia content.

Per modality m with item features e_i^m (the modality's slice of m * c_i):

    S_ij^m   = cos(e_i^m, e_j^m)                                           (eq. 1)
    S^m      <- top-k of each row i (the rest 0)                          (eq. 2)
    S~^m     = D^-1/2 S^m D^-1/2,  D_ii = sum_j S_ij^m                   (eq. 3) initial graph
    e~_i^m   = W_m e_i^m + b_m                                             (eq. 4)
    A^^m     = eq. 1-3 on e~^m                                             (eq. 5) learned graph
    A^m      = lambda S~^m + (1 - lambda) A^^m                              (eq. 6)
    A        = sum_m alpha_m A^m,  alpha = softmax(modal weights)            (eq. 7)
    h^(l)    = A h^(l-1),  h^(0) = the item id embeddings x_i                 (eq. 8; L = n_layers)
    y~_i     = y_i + h_i^(L) / ||h_i^(L)||                                    (eq. 9)
    s(u, i)  = <y_u, y~_i>                                                    (eq. 10)

trained by BPR, -log sigma(s_ui - s_uj) for a uniform negative j, plus L2 (eq. 11).
lambda weights the initial graph (``lambda_coeff``, 0.9 by default): this is the paper's
eq. 6 and MMRec's ``(1 - lambda_coeff) * learned_adj + lambda_coeff * original_adj``.

The CF part (y_u, y_i) is LightGCN, as in MMRec's ``cf_model: lightgcn`` (the paper plugs
LATTICE into MF, NGCF and LightGCN; only LightGCN is implemented here): the user and item
id embeddings E^(0) propagate over the user-item graph, E^(l+1) = D^-1/2 R D^-1/2 E^(l)
(``n_ui_layers`` layers), and y is the mean of E^(0..n_ui_layers). As in MMRec, the item
id embedding x_i is both the LightGCN item embedding and h^(0).

Where this follows MMRec (``src/models/lattice.py``) and where it differs:

- The learned graph is rebuilt once per training epoch, MMRec's choice
  (``pre_epoch_processing``): the first training batch after ``model.train()`` (RecBole's
  trainer calls it at the start of every epoch) builds it from W_m e^m with gradient, so
  W_m, b_m and the modality weights learn from that batch only; the later batches of the
  epoch propagate over a detached copy. An evaluation builds it afresh from the current
  parameters, once (MMRec rebuilds it in every ``full_sort_predict`` batch). A rebuild
  costs one n_items x n_items similarity pass per modality, O(n_items^2 feat_embed_dim)
  multiply-adds and a top-k over each row (for Kwai, 86,483^2 x 64 ~ 4.8e11 per modality),
  but never holds more than a block of rows x n_items similarities (``KNN_BLOCK_ENTRIES``);
  its gradient goes only through the n_items x k kept similarities, recomputed from the
  gathered rows (the top-k indices are found without gradient). At Kwai's size this is
  the largest cost of a CPU epoch (``bench/bench_kwai_memory.py --models LATTICE``); the
  initial graph, on the 2,048-d rows, is built once (a best-model reload that writes the
  same mask back keeps it), and
  ``modality_rows`` forms the (n_items, width) masked rows at each rebuild (0.7 GB for
  Kwai's visual modality).
- The graphs are kept as padded neighbour lists (n_items, k) of indices and weights (a
  row-sparse matrix), and each layer of eq. 8 is one weighted ``embedding_bag``; no dense
  n_items x n_items matrix is formed.
- The modalities are mixed after normalising each (eq. 6-7 as written); MMRec sums the
  learned kNN graphs first and normalises the sum once. Both normalise the initial graphs
  per modality, so that part is the same.
- c_i is the plugin's content: each float_seq modality L2-normalised, each token_seq
  modality the normalised sum of learned word embeddings. Cosines of the initial graph do
  not change with the row scale; the learned graph sees W_m (c_i / ||c_i||) + b_m where
  MMRec projects the raw rows. MMRec also lets the raw features train (``freeze=False``);
  here dense features stay fixed (word embeddings train, as for every plugin model).
- The initial graph is built when first needed and again whenever the content mask changes
  (``set_content_mask`` or a loaded state), from the masked rows m * c_i, so InvRL's mask
  reaches both graphs. For word-bag modalities it is built from the word embeddings of
  that moment, like MMRec's graph from its (trainable) features at start.
- An item whose row in modality m is all zero (the padding item 0, an item without words, a
  modality masked to 0) has no neighbours in that modality's graphs and is no one's
  neighbour there; a degree <= 0 gives 0 instead of MMRec's inf/nan.
- L2 (``reg_weight``) is MMRec's: 0.5 * the squared norms of the batch's final user, positive
  and negative vectors, over the batch size.
- No learning-rate scheduler (MMRec: x0.96 every 50 epochs); RecBole's trainer has none.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_invrl.model.abstract_recommender import MultimodalRecommender
from recbole_invrl.model.common import MaskWatch, check_pairwise_sampling, gathered_dot, non_negative, positive_int
from recbole_invrl.model.multimodal_graph import bipartite_edges, modality_rows

KNN_BLOCK_ENTRIES = 2**24  # similarities held at once while a kNN graph is built (64 MiB of float32)


def unit_interval(config, key: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{key}: expected a number in [0, 1], got {value!r}")
    return float(value)


def non_negative_int(config, key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: expected an integer >= 0, got {value!r}")
    return value


def knn_neighbours(features: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) indices of each row's k most cosine-similar rows among the ``valid`` ones
    (eq. 1-2), found a block of rows at a time, without gradient."""
    n = len(features)
    k = min(k, n)
    block = max(1, KNN_BLOCK_ENTRIES // max(1, n))
    with torch.no_grad():
        unit = F.normalize(features.detach(), dim=-1)
        excluded = torch.zeros(n, dtype=unit.dtype, device=unit.device).masked_fill_(~valid, -torch.inf)
        return torch.cat([
            (unit[start : start + block] @ unit.T).add_(excluded).topk(k, dim=1).indices
            for start in range(0, n, block)
        ])


def knn_graph(features: torch.Tensor, valid: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised kNN graph D^-1/2 S D^-1/2 of eq. 1-3 as (indices, weights), both
    (n, k): row i's neighbours and their weights (0 where a row or its neighbour is not
    ``valid``). The weights carry gradient to ``features`` through the kept cosines only."""
    neighbours = knn_neighbours(features, valid, k)
    unit = F.normalize(features, dim=-1)
    similarity = gathered_dot(unit, unit, neighbours)  # S_ij for the kept j, with gradient
    similarity = similarity * (valid.unsqueeze(1) & valid[neighbours])
    degree = similarity.sum(1)
    positive = degree > 0  # rsqrt of 1 where not, so that no inf enters the backward pass
    scale = torch.where(positive, torch.where(positive, degree, torch.ones_like(degree)).rsqrt(),
                        torch.zeros_like(degree))
    return neighbours, scale.unsqueeze(1) * similarity * scale[neighbours]


def propagate_rows(neighbours: torch.Tensor, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out_i = sum_e weights[i, e] * x[neighbours[i, e]]: one product with a row-sparse matrix."""
    return F.embedding_bag(neighbours, x, per_sample_weights=weights, mode="sum")


def lightgcn_adjacency(interactions, n_users: int, n_items: int) -> torch.Tensor:
    """Sparse D^-1/2 R D^-1/2 over users then items (LightGCN's propagation matrix)."""
    source, target = bipartite_edges(interactions, n_users)
    n_nodes = n_users + n_items
    degree = torch.bincount(target, minlength=n_nodes).float()
    values = (degree[source] * degree[target]).rsqrt()
    return torch.sparse_coo_tensor(torch.stack([target, source]), values, (n_nodes, n_nodes),
                                   check_invariants=False).coalesce()  # in range by construction


class LATTICE(MultimodalRecommender):
    """LightGCN item embeddings plus propagation over learned item-item graphs (eq. 1-11)."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset, shared: "LATTICE | None" = None):
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        self.feat_embed_dim = positive_int(config, "feat_embed_dim")
        self.knn_k = positive_int(config, "knn_k")
        self.lambda_coeff = unit_interval(config, "lambda_coeff")
        self.n_layers = positive_int(config, "n_layers")
        self.n_ui_layers = non_negative_int(config, "n_ui_layers")
        self.reg_weight = non_negative(config, "reg_weight")
        check_pairwise_sampling(config, "LATTICE")

        if shared is None:
            adjacency = lightgcn_adjacency(dataset.inter_matrix(form="csr"), self.n_users, self.n_items)
        else:
            adjacency = shared.adjacency
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.projections = nn.ModuleList(nn.Linear(width, self.feat_embed_dim) for _, width in self.content_layout)
        n_modalities = len(self.content_layout)
        self.modal_weight = nn.Parameter(torch.full((n_modalities,), 1.0 / n_modalities))
        self._initial_mask = MaskWatch()
        self._initial_graphs = None  # [(neighbours, weights)] per modality: S~^m
        self._item_graph = None  # (neighbours, weights) of A, detached, for the epoch's later batches
        self._rebuild = True

    def train(self, mode: bool = True) -> "LATTICE":
        if mode:
            self._rebuild = True  # a training epoch starts: its first batch rebuilds A
        return super().train(mode)

    # ----------------------------------------------------------------- graphs
    def initial_graphs(self, rows: list[torch.Tensor], valid: list[torch.Tensor]):
        """S~^m of every modality (eq. 1-3 on m * c_i), rebuilt when the mask changes."""
        if self._initial_mask.changed(self.content_mask) or self._initial_graphs is None:
            with torch.no_grad():
                self._initial_graphs = [knn_graph(r, v, self.knn_k) for r, v in zip(rows, valid)]
        return self._initial_graphs

    def item_graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A of eq. 7 as (n_items, 2 * modalities * k) neighbour indices and weights."""
        rows = modality_rows(self.content)
        valid = [r.detach().abs().sum(1) > 0 for r in rows]
        initial = self.initial_graphs(rows, valid)
        alpha = torch.softmax(self.modal_weight, dim=0)
        neighbours, weights = [], []
        for m, (projection, r, v) in enumerate(zip(self.projections, rows, valid)):
            learned = knn_graph(projection(r), v, self.knn_k)  # eq. 4-5
            for (index, weight), share in ((initial[m], self.lambda_coeff), (learned, 1 - self.lambda_coeff)):
                neighbours.append(index)
                weights.append(alpha[m] * share * weight)  # eq. 6-7
        return torch.cat(neighbours, dim=1), torch.cat(weights, dim=1)

    def current_item_graph(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: A rebuilt (with gradient) at an epoch's first call, then its detached
        copy; evaluation: A from the current parameters."""
        if not self.training:
            return self.item_graph()
        if self._rebuild or self._item_graph is None:
            graph = self.item_graph()
            self._item_graph = (graph[0], graph[1].detach())
            self._rebuild = False
            return graph
        return self._item_graph

    # ----------------------------------------------------------------- vectors
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(y_u of every user, y~_i of every item), eq. 8-9 over LightGCN's y."""
        x = self.item_id_embedding.weight
        layer = torch.cat([self.user_embedding.weight, x])
        total = layer
        for _ in range(self.n_ui_layers):
            layer = torch.sparse.mm(self.adjacency, layer)
            total = total + layer
        cf = total / (self.n_ui_layers + 1)
        neighbours, weights = self.current_item_graph()
        h = x
        for _ in range(self.n_layers):
            h = propagate_rows(neighbours, weights, h)  # eq. 8
        return cf[: self.n_users], cf[self.n_users :] + F.normalize(h, dim=-1)

    def scoring_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.propagate()[0][users]

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        item_table = self.propagate()[1]
        return item_table if items is None else item_table[items]

    # ----------------------------------------------------------------- loss
    def sample_negatives(self, batch_size: int) -> torch.Tensor:
        """One uniform negative per positive, drawn on the device (item 0 is padding)."""
        return torch.randint(1, self.n_items, (batch_size,), device=self.item_id_embedding.weight.device)

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        positives = interaction[self.ITEM_ID]
        if self.NEG_ITEM_ID in interaction:
            negatives = interaction[self.NEG_ITEM_ID]
        else:
            negatives = self.sample_negatives(len(users))
        user_table, item_table = self.propagate()
        u, i, j = user_table[users], item_table[positives], item_table[negatives]
        bpr = F.softplus((u * j).sum(-1) - (u * i).sum(-1)).mean()
        l2 = 0.5 * (u.square().sum() + i.square().sum() + j.square().sum()) / len(users)
        return bpr + self.reg_weight * l2
