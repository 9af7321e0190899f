"""``LegacyNDCG``: the NDCG of the GRCN / MMGCN / InvRL evaluation code.

Those codebases divide DCG@K by an ideal DCG built from the number of *hits* in the top K,
min(hits@K, K), instead of from the number of relevant items min(|R(u)|, K) as the standard
definition (RecBole's ``NDCG``) does:

    LegacyNDCG@K(u) = sum_{i<=K} delta(i in R(u)) / log2(i + 1)  /  sum_{i<=hits@K(u)} 1 / log2(i + 1)

A user with no hit in the top K scores 0. Since hits@K <= min(|R(u)|, K), the legacy value is
never below the standard one, and equals 1 whenever the hits fill the top positions (one hit at
rank 1 scores 1.0 for a user with 10 relevant items; one hit at rank 10 scores
1 / log2(11) ~ 0.289). Use it only to line numbers up with the paper's Table 2; report
RecBole's ``NDCG`` for honest numbers.

``register_legacy_ndcg()`` makes the metric known to RecBole 1.2.1 under the name
``LegacyNDCG`` (``metrics: [..., LegacyNDCG]``, ``valid_metric: LegacyNDCG@10``). RecBole
looks metrics up in these places, all filled in at its import time:

- ``recbole.evaluator.register.metric_types`` (the same dict object is imported by
  ``recbole.config.configurator`` and ``recbole.evaluator``): ``Config._set_default_parameters``
  checks every configured metric there and derives ``eval_type``;
- ``recbole.evaluator.register.smaller_metrics``: ``valid_metric_bigger``;
- ``recbole.evaluator.register.metric_information``: ``Register`` (inside ``Collector``)
  reads what each metric needs (``rec.topk``);
- ``recbole.evaluator.register.metrics_dict`` (imported by ``recbole.evaluator.evaluator``):
  ``Evaluator`` instantiates the metric classes from it;
- ``recbole.evaluator.metrics`` (and the ``recbole.evaluator`` package, which star-imports it):
  the module where RecBole's own metric classes live.

The dicts and the list are updated in place, so every module that imported them sees the
entry; calling the function again changes nothing.
"""
from __future__ import annotations

import numpy as np
from recbole.evaluator.base_metric import TopkMetric

METRIC_NAME = "legacyndcg"


class LegacyNDCG(TopkMetric):
    r"""NDCG with the ideal DCG taken over the hits in the top K (GRCN/MMGCN family).

    .. math::
        \mathrm{LegacyNDCG@K} = \frac{1}{|U|} \sum_{u \in U}
        \frac{\sum_{i=1}^{K} \delta(i \in R(u)) \frac{1}{\log_2(i+1)}}
             {\sum_{i=1}^{h_K(u)} \frac{1}{\log_2(i+1)}},
        \qquad h_K(u) = |\hat R_K(u) \cap R(u)|,

    with 0 for users where :math:`h_K(u) = 0`.
    """

    def __init__(self, config):
        super().__init__(config)

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)
        result = self.metric_info(pos_index, pos_len)
        return self.topk_result(METRIC_NAME, result)

    def metric_info(self, pos_index, pos_len=None):
        """Per-user values at every cutoff 1..max K -> (n_users, max K).

        ``pos_len`` (the number of relevant items) is accepted for the TopkMetric interface
        and deliberately unused: that is the difference from the standard NDCG."""
        pos_index = np.asarray(pos_index, dtype=bool)
        width = pos_index.shape[1]
        discount = 1.0 / np.log2(np.arange(2, width + 2, dtype=np.float64))  # rank 1..width
        dcg = np.cumsum(np.where(pos_index, discount, 0.0), axis=1)
        hits = np.cumsum(pos_index, axis=1)  # hits in the top k, already <= k
        ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[h]: DCG of h hits on top
        idcg = ideal[hits]
        return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=hits > 0)


def register_legacy_ndcg() -> None:
    """Make ``LegacyNDCG`` a RecBole metric (idempotent; see the module docstring)."""
    import recbole.evaluator
    import recbole.evaluator.metrics
    import recbole.evaluator.register as register

    register.metrics_dict[METRIC_NAME] = LegacyNDCG
    register.metric_types[METRIC_NAME] = LegacyNDCG.metric_type
    register.metric_information[METRIC_NAME] = LegacyNDCG.metric_need
    if LegacyNDCG.smaller and METRIC_NAME not in register.smaller_metrics:
        register.smaller_metrics.append(METRIC_NAME)
    recbole.evaluator.metrics.LegacyNDCG = LegacyNDCG
    recbole.evaluator.LegacyNDCG = LegacyNDCG
