"""MMGCN (Wei et al., "MMGCN: Multi-modal Graph Convolution Network for Personalized
Recommendation of Micro-video", ACM MM 2019) on the plugin's multimedia content.

One graph convolution per modality m over the user-item bipartite graph. A user starts
from a learned preference vector u_m in modality m's space, an item from its content
i_m (the modality's slice of m * c_i; a modality wider than ``latent_size`` is first
mapped to ``latent_size`` by a learned linear layer, as the authors do for 2,048-d
visual features); the layer-0 input rows are L2-normalised, as in the authors' release.
Layer l of modality m, for a node v with neighbours N(v):

    h_m   = LeakyReLU( 1/|N(v)| sum_{j in N(v)} W_1 v_j )                  (eq. 1-2, mean)
    v^_m  = LeakyReLU( W_2 v_m + b_2 ) + v_id                               (eq. 5)
    v_m'  = LeakyReLU( W_3 [h_m || v^_m] + b_3 )          combination: concat (eq. 6)
    v_m'  = LeakyReLU( W_3 h_m + b_3 + v^_m )             combination: add  (element-wise)

with W_1, W_2, W_3 per modality and layer and v_id an id embedding shared by all
modalities and layers. The representations are summed over modalities (eq. 7),
u* = sum_m u_m^(L), i* = sum_m i_m^(L), the score is <u*, i*> (eq. 8) and training is
BPR (eq. 9): -log sigma(s_ui - s_uj) for a uniform negative j, plus L2 (``reg_weight``) on
the batch's id embeddings and user preference vectors.

As InvRL's backbone (``invrl_backbone: MMGCN``) it has no eq. 14 form; M3 and M4 take the
forward path (``recbole_invrl.invariance.forward_path``) with ``forward_parts``: the
weights that see c_i directly are each modality's input map, or layer 0's W_1 and W_2
where there is none; the id embeddings and preference vectors stay frozen.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_invrl.invariance.backbone import ForwardParts
from recbole_invrl.model.abstract_recommender import PairwiseDotRecommender
from recbole_invrl.model.common import check_pairwise_sampling, non_negative, positive_int
from recbole_invrl.model.content import ContentEncoder, layout_slices
from recbole_invrl.model.multimodal_graph import EdgeGraph, bipartite_edges, mean_weights, modality_block

COMBINATIONS = ("concat", "add")


class ModalityGraph(nn.Module):
    """The L layers of one modality (eq. 1-6) and its users' preference vectors u_m."""

    def __init__(self, n_users: int, width: int, embedding_size: int, n_layers: int,
                 latent_size: int | None, combination: str):
        super().__init__()
        self.input_map = None
        if latent_size is not None and width > latent_size:
            self.input_map = nn.Linear(width, latent_size)
            nn.init.xavier_normal_(self.input_map.weight)
            width = latent_size
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width)))  # u_m
        self.combination = combination
        self.aggregate, self.transform, self.combine = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for layer in range(n_layers):
            size = width if layer == 0 else embedding_size
            self.aggregate.append(nn.Linear(size, size, bias=False))  # W_1
            self.transform.append(nn.Linear(size, embedding_size))  # W_2, b_2
            combined = size + embedding_size if combination == "concat" else size
            self.combine.append(nn.Linear(combined, embedding_size))  # W_3, b_3
        for linear in [*self.aggregate, *self.transform, *self.combine]:
            nn.init.xavier_normal_(linear.weight)

    def reset_parameters(self) -> None:
        """Draw every parameter again as at construction (Xavier-normal weights)."""
        nn.init.xavier_normal_(self.preference)
        for linear in [*([self.input_map] if self.input_map is not None else []),
                       *self.aggregate, *self.transform, *self.combine]:
            linear.reset_parameters()
            nn.init.xavier_normal_(linear.weight)

    def content_weights(self) -> list[nn.Parameter]:
        """The weights that multiply the modality's content directly."""
        if self.input_map is not None:
            return [self.input_map.weight]
        return [self.aggregate[0].weight, self.transform[0].weight]

    def item_inputs(self, content: ContentEncoder, index: int) -> torch.Tensor:
        """Every item's layer-0 input: modality ``index`` of m * c_i, through the input map
        if there is one (projected from the dataset's matrix without a copy of it)."""
        if self.input_map is None:
            return modality_block(content, index)
        return content.projected_modality(index, self.input_map.weight) + self.input_map.bias

    def forward(self, item_content: torch.Tensor, graph: EdgeGraph, weights: torch.Tensor,
                ids: torch.Tensor) -> torch.Tensor:
        """Every node's layer-L representation in this modality, (n_users + n_items, K), from
        the items' layer-0 inputs ``item_content``, over the bipartite ``graph`` with the
        mean's per-edge ``weights``."""
        x = F.normalize(torch.cat([self.preference, item_content]), dim=-1)
        for aggregate, transform, combine in zip(self.aggregate, self.transform, self.combine):
            h = F.leaky_relu(graph.aggregate(weights, aggregate(x)))  # eq. 2
            x_hat = F.leaky_relu(transform(x)) + ids  # eq. 5
            if self.combination == "concat":
                x = F.leaky_relu(combine(torch.cat([h, x_hat], dim=-1)))  # eq. 6
            else:
                x = F.leaky_relu(combine(h) + x_hat)
        return x


class MMGCN(PairwiseDotRecommender):
    """A graph convolution per modality, with a shared id embedding, summed (eq. 1-9)."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset, shared: "MMGCN | None" = None):
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        self.n_layers = positive_int(config, "n_layers")
        latent_size = None if config["latent_size"] is None else positive_int(config, "latent_size")
        combination = config["combination"]
        if combination not in COMBINATIONS:
            raise ValueError(f"combination: expected one of {COMBINATIONS}, got {combination!r}")
        self.reg_weight = non_negative(config, "reg_weight")
        check_pairwise_sampling(config, "MMGCN")

        n_nodes = self.n_users + self.n_items
        if shared is None:
            self.graph = EdgeGraph(*bipartite_edges(dataset.inter_matrix(form="csr"), self.n_users), n_nodes, n_nodes)
            weights = mean_weights(self.graph)
        else:
            self.graph, weights = shared.graph, shared.mean_weights
        self.register_buffer("mean_weights", weights, persistent=False)  # 1 / |N(v)| per edge j -> v
        self.id_embedding = nn.Embedding(n_nodes, self.embedding_size)  # v_id: users, then items
        nn.init.xavier_normal_(self.id_embedding.weight)
        self.modalities = nn.ModuleList(
            ModalityGraph(self.n_users, width, self.embedding_size, self.n_layers, latent_size, combination)
            for _, width in self.content_layout
        )

    # ----------------------------------------------------------------- vectors
    def propagate(self) -> torch.Tensor:
        """u*, then i*: the sum over modalities of each node's layer-L vector (eq. 7)."""
        ids = self.id_embedding.weight
        outputs = [
            graph(graph.item_inputs(self.content, index), self.graph, self.mean_weights, ids)
            for index, graph in enumerate(self.modalities)
        ]
        return torch.stack(outputs).sum(0)

    def scoring_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = self.propagate()
        return nodes[: self.n_users], nodes[self.n_users :]

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.propagate()[users]

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        item_table = self.propagate()[self.n_users :]
        return item_table if items is None else item_table[items]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """<u*, i*> (eq. 8) of B users against ``items`` (B,) or (B, M), one propagation."""
        return self.table_scores(self.scoring_tables(), users, items)

    # ----------------------------------------------------------------- loss
    def calculate_loss(self, interaction):
        users, items, bpr = self.bpr_loss(interaction)  # eq. 9
        return bpr + self.reg_weight * self.l2_loss(users, items)

    def l2_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """0.5 * squared norms of the batch's id embeddings (user, positive, negative:
        ``items`` (B, 2)) and user preference vectors of every modality, averaged over the
        batch."""
        nodes = torch.cat([users, items.T.reshape(-1) + self.n_users])  # users, positives, negatives
        squares = self.id_embedding(nodes).square().sum()
        squares = squares + sum(graph.preference[users].square().sum() for graph in self.modalities)
        return 0.5 * squares / len(users)

    # ----------------------------------------------------------------- InvRL
    def reset_parameters(self) -> None:
        """Draw every parameter but the content encoder's again, as at construction."""
        nn.init.xavier_normal_(self.id_embedding.weight)
        for graph in self.modalities:
            graph.reset_parameters()

    def forward_parts(self) -> ForwardParts:
        """Each modality's weights on its content (columns at the modality's offset in c_i);
        the id embeddings and preference vectors are the frozen ids."""
        weights = []
        for graph, (_, columns) in zip(self.modalities, layout_slices(self.content_layout)):
            weights += [(weight, columns.start) for weight in graph.content_weights()]
        return ForwardParts(weights=weights,
                            frozen=[self.id_embedding.weight, *(graph.preference for graph in self.modalities)])
