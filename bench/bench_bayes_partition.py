"""How well the generator's own model separates the planted environments of a test bed.

The spurious-feature test bed (``recbole_invrl.data.synthetic``) draws every training
interaction of user u in environment e from softmax_i(f_ui + w_e g_ui), with w_A = 4,
w_B = -1 and a 70 / 30 share. Knowing those logits, the Bayes rule assigns (u, i) to
argmax_e log pi_e + log p_e(i | u); without the share, to argmax_e log p_e(i | u). This
script re-draws the world of each seed as the generator does (the same random stream, so
the same interactions and planted ``train_env``), applies both rules and prints their
purity and adjusted Rand index against the planted environments, the most that a partition
learned from data can reach and the yardstick for M3's ``purity`` and ``ari``
(``run_experiment.py --experiment=recovery``). It also prints ``spread``, how far apart the
two environments' log-likelihoods of an interaction lie: the standard deviation of
log p_e(i | u) about its mean over the environments, in nats.
The draws are without replacement; the rule ignores that, which the printed purity
includes.

    python bench/bench_bayes_partition.py [--preset tiktok] [--scale 0.02] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import adjusted_rand_score

from recbole_invrl.data import synthetic
from recbole_invrl.invariance.truth import purity


def environment_log_likelihoods(world, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(n, 2): log p_e(i | u) under each planted environment's softmax over all items."""
    pref = synthetic.PREF_WEIGHT * world.P @ world.Q.T / np.sqrt(synthetic.K_PREF) + world.bias
    style = world.A @ world.S.T / np.sqrt(synthetic.K_STYLE)
    columns = []
    for _, _, weight in synthetic.ENVIRONMENTS:
        logits = pref + weight * style
        top = logits.max(1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(1))
        columns.append(logits[users, items] - log_z[users])
    return np.stack(columns, axis=1)


def bayes_partition(preset: str, scale: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    world = synthetic._sample_world(rng, *synthetic.sizes(preset, scale))
    users, items = world.splits["train"]
    truth = world.train_env.astype(np.int64)
    log_lik = environment_log_likelihoods(world, users, items)
    log_share = np.log([share for _, share, _ in synthetic.ENVIRONMENTS])
    out = {"majority_share": float(np.bincount(truth).max() / len(truth)),
           "spread": float((log_lik - log_lik.mean(1, keepdims=True)).std())}
    for rule, scores in (("likelihood", log_lik), ("posterior", log_lik + log_share)):
        assigned = scores.argmax(1)
        out[f"{rule}_purity"] = float(purity(assigned, truth))
        out[f"{rule}_ari"] = float(adjusted_rand_score(truth, assigned))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiktok", choices=sorted(synthetic.PRESETS))
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    print(f"Bayes partition of the planted environments ({args.preset}, scale {args.scale})")
    print("seed  majority  purity(likelihood)  ARI(likelihood)  purity(posterior)  ARI(posterior)  spread")
    for seed in args.seeds:
        r = bayes_partition(args.preset, args.scale, seed)
        print(f"{seed:>4}  {r['majority_share']:8.4f}  {r['likelihood_purity']:18.4f}  {r['likelihood_ari']:15.3f}"
              f"  {r['posterior_purity']:17.4f}  {r['posterior_ari']:14.3f}  {r['spread']:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
