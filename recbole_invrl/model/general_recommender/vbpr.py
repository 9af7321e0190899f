"""VBPR (He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback",
AAAI 2016) on the plugin's multimedia content.

    score(u, i) = beta_i + <gamma_u, gamma_i> + <theta_u, E c_i> + <beta', c_i>

``c_i`` is the content vector of ``ContentEncoder`` (the same ``content_fields`` as
UltraGCN-MM: each float_seq modality L2-normalised, token_seq word bags through a learned
word embedding), ``E`` a (content dim -> ``visual_size``) linear map and ``beta'`` a content
bias vector. The user bias and the global offset cancel in BPR and are left out, as in the
paper. Training is BPR on RecBole's own negative sampler (``InputType.PAIRWISE``; the
RecBole default ``train_neg_sample_args``, one uniform negative per positive) plus L2
(``reg_weight``) on the embeddings and item biases the batch uses.

Internally the item side is one vector ``[gamma_i, E c_i]`` and one bias
``beta_i + <beta', c_i>``, the user side one vector ``[gamma_u, theta_u]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_invrl.model.common import AllItemsCache, distinct_items, non_negative, positive_int
from recbole_invrl.model.content import ContentEncoder

PROJECTION_CHUNK = 8192  # items whose content is projected at once when scoring all items


class VBPR(GeneralRecommender):
    """Visual BPR: matrix factorisation plus a linear projection of item content."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = positive_int(config, "embedding_size")
        self.visual_size = _visual_size(config, self.embedding_size)
        self.id_size = self.embedding_size - self.visual_size
        self.reg_weight = non_negative(config, "reg_weight")
        _check_negative_sampling(config)

        self.content = ContentEncoder(
            dataset, config["content_fields"], positive_int(config, "word_embedding_size")
        )
        # user: [gamma_u, theta_u]; item: gamma_i and beta_i
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.id_size)
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.visual_projection = nn.Linear(self.content.dim, self.visual_size, bias=False)  # E
        self.content_bias = nn.Linear(self.content.dim, 1, bias=False)  # beta'
        nn.init.xavier_normal_(self.user_embedding.weight)
        nn.init.xavier_normal_(self.item_embedding.weight)
        nn.init.xavier_normal_(self.visual_projection.weight)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.content_bias.weight)
        self._all_items = AllItemsCache()

    @property
    def content_layout(self) -> list[tuple[str, int]]:
        """(field, width) of each modality in c_i, in order."""
        return self.content.layout

    # ----------------------------------------------------------------- item side
    def _content_terms(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E c_i, <beta', c_i>) for a 1-D tensor of items."""
        content = self.content(items)
        return self.visual_projection(content), self.content_bias(content).squeeze(-1)

    def item_terms(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item vectors [gamma_i, E c_i] (*shape, embedding_size) and biases
        beta_i + <beta', c_i> (*shape) for ``items`` of any shape; the content of each
        distinct item is encoded and projected once."""
        unique, inverse = distinct_items(items, self.n_items)
        visual, content_bias = self._content_terms(unique)
        vectors = torch.cat([self.item_embedding(items), F.embedding(inverse, visual)], dim=-1)
        biases = self.item_bias(items).squeeze(-1) + content_bias[inverse]
        return vectors, biases

    def all_item_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``item_terms`` of every item, content projected in chunks on the model's device;
        cached (outside autograd) until a parameter or the content mask changes."""
        return self._all_items.get(self, self._compute_all_item_terms)

    def _compute_all_item_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.arange(self.n_items, device=self.item_embedding.weight.device)
        visual, content_bias = zip(*(self._content_terms(c) for c in items.split(PROJECTION_CHUNK)))
        vectors = torch.cat([self.item_embedding.weight, torch.cat(visual)], dim=1)
        return vectors, self.item_bias.weight.squeeze(-1) + torch.cat(content_bias)

    # ----------------------------------------------------------------- scoring and loss
    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of B users against ``items`` of shape (B,)."""
        vectors, biases = self.item_terms(items)
        return (self.user_embedding(users) * vectors).sum(-1) + biases

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        positives = interaction[self.ITEM_ID]
        negatives = interaction[self.NEG_ITEM_ID]
        items = torch.stack([positives, negatives], dim=1)  # (B, 2): one unique() for both
        vectors, biases = self.item_terms(items)
        user_vectors = self.user_embedding(users)
        scores = (user_vectors.unsqueeze(1) * vectors).sum(-1) + biases
        bpr = F.softplus(scores[:, 1] - scores[:, 0]).mean()  # -log sigma(s_ui - s_uj)
        return bpr + self.reg_weight * self.l2_loss(users, items)

    def l2_loss(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """0.5 * squared norms of the batch's gamma_u, theta_u, gamma_i, gamma_j, beta_i and
        beta_j, averaged over the batch."""
        squares = (
            self.user_embedding(users).square().sum()
            + self.item_embedding(items).square().sum()
            + self.item_bias(items).square().sum()
        )
        return 0.5 * squares / len(users)

    # ----------------------------------------------------------------- RecBole API
    def predict(self, interaction):
        return self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        vectors, biases = self.all_item_terms()
        users = self.user_embedding(interaction[self.USER_ID])
        return (torch.addmm(biases.unsqueeze(0), users, vectors.T)).reshape(-1)


def _visual_size(config, embedding_size: int) -> int:
    """``visual_size`` of the user vector's ``embedding_size``; ``~`` = half of it."""
    value = config["visual_size"]
    if value is None:
        if embedding_size < 2:
            raise ValueError(
                f"embedding_size: expected an integer >= 2 to split into id and visual parts "
                f"(or set visual_size), got {embedding_size!r}"
            )
        return embedding_size // 2
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < embedding_size:
        raise ValueError(
            f"visual_size: expected an integer in [1, embedding_size - 1] = [1, {embedding_size - 1}], "
            f"got {value!r}"
        )
    return value


def _check_negative_sampling(config) -> None:
    args = config["train_neg_sample_args"]
    sample_num = args.get("sample_num") if isinstance(args, dict) else None
    if (
        not isinstance(args, dict)
        or args.get("distribution") not in ("uniform", "popularity")
        or isinstance(sample_num, bool)
        or not isinstance(sample_num, int)
        or sample_num < 1
    ):
        raise ValueError(
            "train_neg_sample_args: VBPR is trained pairwise (BPR) and needs RecBole's negative "
            "sampler, e.g. {distribution: uniform, sample_num: 1}; got "
            f"{args!r}"
        )
