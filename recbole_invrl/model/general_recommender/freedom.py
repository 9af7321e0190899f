"""FREEDOM (Xin Zhou and Zhiqi Shen, "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation", ACM MM 2023) on the plugin's multimedia content.

Two graphs. The item-item graph is built once from the content and then frozen (§3.1):

    S^m_ij = <e^m_i, e^m_j> / (|e^m_i| |e^m_j|)                 cosine per modality (eq. 1)
    S^m_ij <- 1 if S^m_ij is among the top-k of row i, else 0   kNN, unweighted (eq. 2)
    S~^m   = (D^m)^-1/2 S^m (D^m)^-1/2,  D^m_ii = sum_j S^m_ij  (eq. 3)
    S      = sum_m alpha_m S~^m                                  (eq. 4)

with e^m_i the modality-m slice of m * c_i (the content mask reaches the graph). The
user-item graph is denoised by degree-sensitive edge pruning (§3.2): each epoch keeps
(1 - rho)|E| of the training edges, drawn without replacement with probability
proportional to p_e = 1 / sqrt(d_u d_i) (degrees in the full graph), and normalises the
kept graph as D^-1/2 A_rho D^-1/2 with the kept graph's degrees. Evaluation uses the
full, normalised graph. Representations (§3.3):

    h~_i^(l) = sum_j S_ij h~_j^(l-1),  h~_i^(0) = e_i (item id embedding)    item graph
    h^(l)    = A_rho h^(l-1),  h^(0) = [e_u; e_i];  h^ = mean_{l=0..L} h^(l)  LightGCN
    h_u = h^_u,   h_i = h^_i + h~_i^(L_mm),   y_ui = <h_u, h_i>

and the loss (§3.4), for a positive i and a negative j of user u:

    x^m_i = W_m e^m_i + b_m                                     projected features
    L = -log sigma(y_ui - y_uj) + lambda sum_m -log sigma(<h_u, x^m_i> - <h_u, x^m_j>)
        + reg_weight * 0.5 (|e_u|^2 + |e_i|^2 + |e_j|^2)          (averaged over the batch)

The equation numbers are as we read them in the arXiv version (2211.06924); where they
differ from the published version, the section (§) and the formula are what count.

Follows MMRec's ``src/models/freedom.py`` (enoche/MMRec): self-loops are kept in the kNN
graph (an item is its own nearest neighbour, so it takes one of the k places), S~^m
is normalised by row degrees (every row of a kNN graph has k entries, so each entry is
1/k), the modality weights are alpha_visual = ``visual_weight`` (``mm_image_weight``,
0.1) and 1 - alpha for text, the pruned graph is drawn with ``torch.multinomial`` over
the normalised edge weights and renormalised, the modality BPR terms score the
propagated user vector h_u against the projected features, and ``lambda`` is what MMRec
calls ``reg_weight``.

Differs from MMRec, and why:

- Any number of modalities (float_seq features, token_seq word bags): alpha is
  ``visual_weight`` on the widest modality (the visual one: 4,096-d image vs 384-d text
  in the paper's Amazon sets, 2,048-d vs 128-d on Kwai) and 1 - ``visual_weight`` shared
  equally by the others; a single modality has alpha = 1. A word-bag modality's e^m_i is
  its (normalised) sum of learned word embeddings as the graph is built (random at
  initialisation: a random projection of the bag, which keeps cosines approximately).
- The kNN graph is built blockwise (rows in chunks, ``torch.topk`` per chunk) into a
  sparse tensor, never a dense n_items x n_items similarity (MMRec forms it whole);
  the padding item 0 and items whose modality row is zero (an empty word bag, a masked
  modality) have no edges in that modality (MMRec would divide by a zero norm).
- The graph is rebuilt when the content mask changes (InvRL sets it) or the model moves
  to another device; otherwise it stays frozen, as in the paper.
- Raw dense features are fixed buffers: MMRec fine-tunes them (``freeze=False``), which
  for Kwai would add 86,483 x 2,048 parameters and their Adam state; word embeddings are
  learned, through the modality BPR terms.
- MMRec has no L2 term (its weight_decay is 0); ``reg_weight`` here is an L2 on the
  batch's ego embeddings, default 0, so the default loss is MMRec's.
- Only the batch's items are projected for the modality terms (MMRec projects the
  whole catalogue at every step); the numbers are the same.
- The per-epoch pruned graph is built without host round trips (degrees by
  ``index_add``, edges sorted and marked coalesced); ``torch.multinomial``, as in
  MMRec, bounds the training edges at 2^24.

Cost of the frozen graph on a Kwai-shaped catalogue (86,483 items): 193 rows are ranked
at a time (64 MiB of similarities), 86,483^2 x 2,048 ~ 1.5e13 multiply-adds for the
2,048-d visual modality. It is built once: a best-model reload that writes the same mask
back keeps it (``MaskWatch``).

Resampling: RecBole's trainer calls nothing per epoch but ``model.train()`` at the start
of each training epoch. ``train(True)`` drops the pruned graph, and the next
``calculate_loss`` draws a new one from torch's generator on the model's device: one
draw per ``train()`` call, i.e. per RecBole epoch, at a fixed point of the random stream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_invrl.model.abstract_recommender import MultimodalRecommender
from recbole_invrl.model.common import MaskWatch, check_pairwise_sampling, non_negative, positive_int
from recbole_invrl.model.multimodal_graph import bipartite_edges, modality_rows

KNN_BLOCK_ENTRIES = 2**24  # similarities formed at once while building the kNN graph (64 MiB)


def knn_edges(rows: torch.Tensor, k: int, block_entries: int = KNN_BLOCK_ENTRIES) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) item ids of the cosine top-k of every item (eq. 1-2), itself included.

    Items 0 (padding) and zero rows take no part; a row has min(k, #eligible) entries.
    Rows are ranked a block at a time: never more than ``block_entries`` similarities."""
    norms = rows.norm(dim=1)
    eligible = norms > 0
    eligible[0] = False
    unit = rows / norms.clamp_min(torch.finfo(rows.dtype).tiny).unsqueeze(1)
    n_items = len(rows)
    k = min(k, int(eligible.sum()))
    if k == 0:
        empty = torch.zeros(0, dtype=torch.long, device=rows.device)
        return empty, empty
    block = max(1, block_entries // n_items)
    sources, targets = [], []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        similarity = unit[start:stop] @ unit.T
        similarity.masked_fill_(~eligible, -torch.inf)
        top = similarity.topk(k, dim=1).indices
        keep = eligible[start:stop]
        sources.append(torch.arange(start, stop, device=rows.device)[keep].repeat_interleave(k))
        targets.append(top[keep].reshape(-1))
    return torch.cat(sources), torch.cat(targets)


def symmetric_values(source: torch.Tensor, target: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """1 / sqrt(d_r d_c) of each bipartite edge (row id ``source``, column id ``target``),
    with d_r the edges of its row and d_c the edges of its column."""
    return counts(source, n_rows)[source].rsqrt() * counts(target, n_cols)[target].rsqrt()


def counts(ids: torch.Tensor, size: int) -> torch.Tensor:
    """How often each of 0..size-1 occurs in ``ids`` (float), without ``bincount``'s host
    round trip on an accelerator."""
    return torch.zeros(size, device=ids.device).index_add_(0, ids, torch.ones(len(ids), device=ids.device))


class FREEDOM(MultimodalRecommender):
    """A frozen kNN item graph and a degree-pruned user-item graph (§3.1-3.4)."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset, shared: "FREEDOM | None" = None):
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        self.knn_k = positive_int(config, "knn_k")
        self.n_mm_layers = positive_int(config, "n_mm_layers")
        self.n_ui_layers = positive_int(config, "n_ui_layers")
        self.edge_dropout = non_negative(config, "edge_dropout")
        if self.edge_dropout >= 1:
            raise ValueError(f"edge_dropout: expected a number in [0, 1), got {config['edge_dropout']!r}")
        visual_weight = non_negative(config, "visual_weight")
        if visual_weight > 1:
            raise ValueError(f"visual_weight: expected a number in [0, 1], got {config['visual_weight']!r}")
        self.mm_loss_weight = non_negative(config, "mm_loss_weight")
        self.reg_weight = non_negative(config, "reg_weight")
        check_pairwise_sampling(config, "FREEDOM")
        self.modality_weights = self.alphas(visual_weight)

        if shared is None:
            source, target = bipartite_edges(dataset.inter_matrix(form="csr"), self.n_users)
            n_edges = len(source) // 2
            edge_users, edge_items = source[:n_edges], target[:n_edges] - self.n_users
        else:
            edge_users, edge_items = shared.edge_users, shared.edge_items
        self.register_buffer("edge_users", edge_users, persistent=False)
        self.register_buffer("edge_items", edge_items, persistent=False)  # item ids, not node ids
        self.register_buffer(
            "edge_weight", symmetric_values(edge_users, edge_items, self.n_users, self.n_items), persistent=False
        )  # p_e = 1 / sqrt(d_u d_i) of the full graph
        self.register_buffer(
            "full_adjacency",
            shared.full_adjacency if shared is not None else self.bipartite_adjacency(edge_users, edge_items),
            persistent=False,
        )
        self._pruned: torch.Tensor | None = None
        self._item_graph: torch.Tensor | None = None
        self._item_graph_mask = MaskWatch()

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.projections = nn.ModuleList(nn.Linear(width, self.embedding_size) for _, width in self.content_layout)

    def alphas(self, visual_weight: float) -> list[float]:
        """alpha_m of eq. 4: ``visual_weight`` on the widest modality, the rest shared equally."""
        widths = [width for _, width in self.content_layout]
        if len(widths) == 1:
            return [1.0]
        visual = widths.index(max(widths))
        rest = (1.0 - visual_weight) / (len(widths) - 1)
        return [visual_weight if m == visual else rest for m in range(len(widths))]

    # ----------------------------------------------------------------- graphs
    def bipartite_adjacency(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """D^-1/2 A D^-1/2 over the edges (users, items), both directions, degrees counted on
        these edges -> sparse (n_users + n_items)^2."""
        values = symmetric_values(users, items, self.n_users, self.n_items)
        item_nodes = items + self.n_users
        rows, cols = torch.cat([users, item_nodes]), torch.cat([item_nodes, users])
        n_nodes = self.n_users + self.n_items
        # distinct edges: sorted by (row, column) they are coalesced, with no host round trip
        order = torch.argsort(rows * n_nodes + cols)
        return torch.sparse_coo_tensor(
            torch.stack([rows[order], cols[order]]), torch.cat([values, values])[order], (n_nodes, n_nodes),
            is_coalesced=True, check_invariants=False,
        )

    def sample_pruned(self) -> torch.Tensor:
        """Degree-sensitive edge pruning (§3.2): (1 - rho)|E| edges drawn without
        replacement with probability proportional to 1 / sqrt(d_u d_i), renormalised."""
        if self.edge_dropout == 0:
            return self.full_adjacency
        n_keep = max(1, int(len(self.edge_weight) * (1.0 - self.edge_dropout)))
        kept = torch.multinomial(self.edge_weight, n_keep, replacement=False)
        return self.bipartite_adjacency(self.edge_users[kept], self.edge_items[kept])

    def pruned_adjacency(self) -> torch.Tensor:
        """This epoch's pruned graph, drawn at the first training step after ``train()``."""
        if self._pruned is None or self._pruned.device != self.edge_weight.device:
            self._pruned = self.sample_pruned()
        return self._pruned

    def train(self, mode: bool = True) -> "FREEDOM":
        if mode:
            self._pruned = None  # RecBole calls train() once per epoch: resample then
        return super().train(mode)

    @torch.no_grad()
    def build_item_graph(self) -> torch.Tensor:
        """S of eq. 1-4 from the masked content: sparse (n_items, n_items)."""
        indices, values = [], []
        for alpha, rows in zip(self.modality_weights, modality_rows(self.content)):
            source, target = knn_edges(rows.float(), self.knn_k)
            if alpha == 0 or len(source) == 0:
                continue
            indices.append(torch.stack([source, target]))
            values.append(alpha * self._knn_values(source, target))
        device = self.content_mask.device
        if not indices:
            return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long, device=device),
                                           torch.zeros(0, device=device), (self.n_items,) * 2, check_invariants=False).coalesce()
        return torch.sparse_coo_tensor(torch.cat(indices, 1), torch.cat(values), (self.n_items,) * 2, check_invariants=False).coalesce()

    def _knn_values(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 3: 1 / sqrt(D_ii D_jj) with D the row degrees of the kNN graph."""
        degree = counts(source, self.n_items)
        return degree[source].rsqrt() * degree[target].rsqrt()

    def item_graph(self) -> torch.Tensor:
        """The frozen S, rebuilt only when the content mask changed or moved device."""
        if self._item_graph_mask.changed(self.content_mask) or self._item_graph is None:
            self._item_graph = self.build_item_graph()
        return self._item_graph

    # ----------------------------------------------------------------- vectors
    def propagate(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_u of every user, h_i of every item) over the user-item graph ``adjacency``."""
        items = self.item_embedding.weight
        item_graph = self.item_graph()
        h = items
        for _ in range(self.n_mm_layers):
            h = torch.sparse.mm(item_graph, h)
        x = torch.cat([self.user_embedding.weight, items])
        total = x
        for _ in range(self.n_ui_layers):
            x = torch.sparse.mm(adjacency, x)
            total = total + x
        nodes = total / (self.n_ui_layers + 1)
        return nodes[: self.n_users], nodes[self.n_users :] + h

    def current_adjacency(self) -> torch.Tensor:
        return self.pruned_adjacency() if self.training else self.full_adjacency

    def scoring_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.full_adjacency)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.propagate(self.current_adjacency())[0][users]

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        item_table = self.propagate(self.current_adjacency())[1]
        return item_table if items is None else item_table[items]

    # ----------------------------------------------------------------- loss
    def sample_negatives(self, batch_size: int) -> torch.Tensor:
        """One uniform negative per positive, drawn on the device (item 0 is padding)."""
        return torch.randint(1, self.n_items, (batch_size,), device=self.item_embedding.weight.device)

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        positives = interaction[self.ITEM_ID]
        if self.NEG_ITEM_ID in interaction:
            negatives = interaction[self.NEG_ITEM_ID]
        else:
            negatives = self.sample_negatives(len(users))
        user_table, item_table = self.propagate(self.pruned_adjacency())
        user_vectors = user_table[users]
        items = torch.stack([positives, negatives], dim=1)  # (B, 2)
        scores = (user_vectors.unsqueeze(1) * item_table[items]).sum(-1)
        loss = F.softplus(scores[:, 1] - scores[:, 0]).mean()
        if self.mm_loss_weight > 0:
            for projection, rows in zip(self.projections, modality_rows(self.content, items)):
                features = projection(rows)  # x^m of the positive and the negative, (B, 2, K)
                mm_scores = (user_vectors.unsqueeze(1) * features).sum(-1)
                loss = loss + self.mm_loss_weight * F.softplus(mm_scores[:, 1] - mm_scores[:, 0]).mean()
        if self.reg_weight > 0:
            squares = (self.user_embedding(users).square().sum() + self.item_embedding(items).square().sum())
            loss = loss + self.reg_weight * 0.5 * squares / len(users)
        return loss
