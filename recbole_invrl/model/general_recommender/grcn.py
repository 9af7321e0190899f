"""GRCN (Wei, Wang, Nie, Li, Li and Chua, "Graph-Refined Convolutional Network for
Multimedia Recommendation with Implicit Feedback", ACM MM 2020) on the plugin's content.

GRCN learns which user-item edges are trustworthy from the content and convolves the id
embeddings over the refined graph. Nodes are users, then items; N(v) are v's neighbours
in the training graph.

**Graph refining (§3.2), per modality m.** An item's content is f_i = LeakyReLU(W_m c_i^m +
b_m) (c_i^m: the modality's slice of m * c_i), a user has a preference vector p_u; both
are L2-normalised. Prototypical routing, ``num_routing`` times:

    a_ui = softmax_{i in N(u)} <p_u, f_i>,   p_u <- normalize(p_u + sum_{i in N(u)} a_ui f_i)

Then with x = [p; f], one attention convolution over both directions of every edge,

    alpha^m_vj = softmax_{j in N(v)} <x_v, x_j>,   r^m_v = x_v + sum_{j in N(v)} alpha^m_vj x_j,

gives the modality's representation r^m and the edge affinity alpha^m of each message
j -> v.

**Fusion and pruning (§3.2.3).** ``weight_mode``: ``confid`` (the default of the authors'
and MMRec's code) scales each modality's affinity by a learned confidence of the message's
source node, w_jv = max_m alpha^m_vj * kappa_j^m; ``max`` takes max_m alpha^m_vj; ``mean``
their mean. ``pruning`` keeps w = ReLU(w), cutting the edges with negative weight.

**Graph convolution (§3.3)** over the refined graph, two layers on the L2-normalised id
embeddings e: h^(l+1)_v = sum_{j in N(v)} w_jv h^(l)_j; the id representation is
e + h^(1) + h^(2).

**Prediction and loss (§3.4).** A node's representation concatenates the id
representation and every r^m; the score is their dot product, trained by BPR with L2
(``reg_weight``) as in the authors' code: the mean square of the batch's id embeddings
(users, positives, negatives) plus, per modality, the mean square of the batch users'
preference vectors.

Differences from MMRec's ``grcn.py``: there the routing messages flow along (user, item)
edges into items only, so the users' preferences never change; here they flow from items
to users, as §3.2.1 writes the routing. MMRec reads only visual and text features; here
every modality of the content encoder has its own branch, and token_seq words enter as
their summed embeddings (``word_embedding_size``) through the same W_m.

As InvRL's backbone (``invrl_backbone: GRCN``) M3 and M4 take the forward path
(``recbole_invrl.invariance.forward_path``): the weights on c_i are the W_m; the id
embeddings, confidences and preference vectors stay frozen.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_invrl.invariance.backbone import ForwardParts
from recbole_invrl.model.abstract_recommender import PairwiseDotRecommender
from recbole_invrl.model.common import check_pairwise_sampling, non_negative, positive_int
from recbole_invrl.model.content import layout_slices
from recbole_invrl.model.multimodal_graph import EdgeGraph, bipartite_edges, modality_rows

WEIGHT_MODES = ("confid", "max", "mean")


def attention_convolution(rows: torch.Tensor, cols: torch.Tensor, graph: EdgeGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_j alpha_vj x_j for every target node v, alpha per edge), alpha the softmax of
    <x_v, x_j> over the edges into v; ``rows`` are the target nodes' x, ``cols`` the sources'."""
    alpha = graph.softmax(graph.edge_dot(rows, cols))
    return graph.aggregate(alpha, cols), alpha


class ModalityRefiner(nn.Module):
    """One modality's content projection, user preferences, routing and attention layer."""

    def __init__(self, n_users: int, width: int, latent_size: int, num_routing: int):
        super().__init__()
        self.n_users = n_users
        self.num_routing = num_routing
        self.projection = nn.Linear(width, latent_size)  # W_m, b_m
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, latent_size)))  # p_u
        nn.init.xavier_normal_(self.projection.weight)

    def reset_parameters(self) -> None:
        """Draw the parameters again as at construction (Xavier-normal weights)."""
        self.projection.reset_parameters()
        nn.init.xavier_normal_(self.projection.weight)
        nn.init.xavier_normal_(self.preference)

    def forward(self, rows: torch.Tensor, graph: EdgeGraph, routing: EdgeGraph):
        """(r^m for every node, alpha^m per edge of ``graph``); ``routing`` holds the
        item -> user edges."""
        features = F.normalize(F.leaky_relu(self.projection(rows)), dim=-1)
        preference = F.normalize(self.preference, dim=-1)
        for _ in range(self.num_routing):  # prototypical routing (§3.2.1)
            routed, _ = attention_convolution(preference, torch.cat([preference, features]), routing)
            preference = F.normalize(preference + routed, dim=-1)
        x = torch.cat([preference, features])
        messages, alpha = attention_convolution(x, x, graph)
        return x + messages, alpha


class GRCN(PairwiseDotRecommender):
    """Content-refined user-item graph, id convolution over it, concatenated representations."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset, shared: "GRCN | None" = None):
        super().__init__(config, dataset, shared)
        self.embedding_size = positive_int(config, "embedding_size")
        latent_size = positive_int(config, "latent_size")
        num_routing = positive_int(config, "num_routing")
        self.weight_mode = config["weight_mode"]
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"weight_mode: expected one of {WEIGHT_MODES}, got {self.weight_mode!r}")
        self.pruning = bool(config["pruning"])
        self.reg_weight = non_negative(config, "reg_weight")
        check_pairwise_sampling(config, "GRCN")

        n_nodes = self.n_users + self.n_items
        if shared is None:
            source, target = bipartite_edges(dataset.inter_matrix(form="csr"), self.n_users)
            self.graph = EdgeGraph(source, target, n_nodes, n_nodes)
            to_users = target < self.n_users
            self.routing = EdgeGraph(source[to_users], target[to_users], self.n_users, n_nodes)
        else:
            self.graph, self.routing = shared.graph, shared.routing
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, self.embedding_size)))
        self.refiners = nn.ModuleList(
            ModalityRefiner(self.n_users, width, latent_size, num_routing) for _, width in self.content_layout
        )
        self.confidence = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, len(self.refiners))))  # kappa

    # ----------------------------------------------------------------- vectors
    def edge_weights(self, alphas: list[torch.Tensor]) -> torch.Tensor:
        """The refined weight of every message j -> v from the modalities' affinities."""
        alpha = torch.stack(alphas, dim=1)  # (E, M)
        if self.weight_mode == "confid":
            weight = (alpha * self.confidence.index_select(0, self.graph.source)).amax(1)
        elif self.weight_mode == "max":
            weight = alpha.amax(1)
        else:
            weight = alpha.mean(1)
        return F.relu(weight) if self.pruning else weight

    def propagate(self) -> torch.Tensor:
        """Every node's representation [id representation || r^1 || ... || r^M]."""
        refined = [
            refiner(rows, self.graph, self.routing)
            for refiner, rows in zip(self.refiners, modality_rows(self.content))
        ]
        weight = self.edge_weights([alpha for _, alpha in refined])
        x = F.normalize(self.id_embedding, dim=-1)
        first = self.graph.aggregate(weight, x)
        second = self.graph.aggregate(weight, first)
        return torch.cat([x + first + second, *(r for r, _ in refined)], dim=1)

    def scoring_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = self.propagate()
        return nodes[: self.n_users], nodes[self.n_users :]

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.propagate()[users]

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        item_table = self.propagate()[self.n_users :]
        return item_table if items is None else item_table[items]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of B users against ``items`` (B,) or (B, M), one propagation."""
        return self.table_scores(self.scoring_tables(), users, items)

    # ----------------------------------------------------------------- loss
    def calculate_loss(self, interaction):
        users, items, bpr = self.bpr_loss(interaction)
        return bpr + self.reg_weight * self.l2_loss(users, items)

    def l2_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean square of the batch's id embeddings (each user paired with its positive and
        its negative: ``items`` (B, 2)) plus, per modality, the mean square of the users'
        preferences."""
        pair_users = users.repeat_interleave(2)
        pair_items = items.reshape(-1) + self.n_users
        ids = (self.id_embedding[pair_users].square() + self.id_embedding[pair_items].square()).mean()
        return ids + sum(refiner.preference[pair_users].square().mean() for refiner in self.refiners)

    # ----------------------------------------------------------------- InvRL
    def reset_parameters(self) -> None:
        """Draw every parameter but the content encoder's again, as at construction."""
        for parameter in (self.id_embedding, self.confidence):
            nn.init.xavier_normal_(parameter)
        for refiner in self.refiners:
            refiner.reset_parameters()

    def forward_parts(self) -> ForwardParts:
        """Each modality's W_m on its content (columns at the modality's offset in c_i); the
        id embeddings, confidences and preference vectors are the frozen ids."""
        slices = layout_slices(self.content_layout)
        return ForwardParts(
            weights=[(refiner.projection.weight, columns.start)
                     for refiner, (_, columns) in zip(self.refiners, slices)],
            frozen=[self.id_embedding, self.confidence, *(refiner.preference for refiner in self.refiners)],
        )
