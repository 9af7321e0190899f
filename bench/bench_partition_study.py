"""Where M3's alternation of eq. 6 and eq. 7 settles on the spurious-feature test beds.

For each test bed the script pretrains the backbone once (the dataset's schedule), then
runs M3 alone from that backbone with the first iteration's mask (m = 0.5) under several
variants, and prints the purity and ARI of the environments against the planted ones
after the first and the last partition round, at each ``--num_envs``, and how sure the
last round's models are (``spread``: the standard deviation of an interaction's
log-likelihood under each environment's model about its mean over the environments):

* ``default``: the dataset's settings (shared environment models, ``score`` start,
  ``likelihood`` rule, ``partition_epochs`` per round, new models every round);
* ``random start``: ``partition_start: random``;
* ``release models``: ``partition_models: fresh``, the authors' release's environment
  models (new ids and projection, trained from scratch on the full content);
* ``20 epochs``: ``partition_epochs: 20`` (the paper's);
* ``warm models``: the environment models of one round go on training in the next;
* ``oracle Psi``: the variant representation Psi = (1 - m) * c with the planted mask
  (m = 0 on spurious dimensions, 1 elsewhere), as if M4 had found it exactly;
* ``with shares``: eq. 7 plus the log of each environment's share (the posterior rule);
* ``planted start``: the alternation started from the planted environments (num_envs 2),
  with 10 epochs per round: how well the environment models classify when trained on
  the truth, and where the alternation drifts from there.

``planted start`` runs with 2 environments whatever ``--num_envs`` says. Every variant
starts from the same seed; the figures depend on it.

    python bench/bench_partition_study.py [--datasets synthetic-tiktok ...] [--num_envs 5 2]
        [--rounds 6] [--seed 2020] [--variants default "20 epochs" ...] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

from recbole_invrl.threads import configure_threads

configure_threads()  # before torch starts its OpenMP threads

import torch  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_invrl.data import create_dataset, data_preparation  # noqa: E402
from recbole_invrl.invariance import TrainingInteractions  # noqa: E402
from recbole_invrl.invariance.partition import initial_environments, train_environments  # noqa: E402
from recbole_invrl.invariance.paths import backbone_view, environment_models_for  # noqa: E402
from recbole_invrl.invariance.truth import PlantedTruth  # noqa: E402
from recbole_invrl.quick_start import load_config  # noqa: E402
from recbole_invrl.utils import get_model, get_trainer  # noqa: E402

TEST_BEDS = ("synthetic-tiktok", "synthetic-tiktok-seed1", "synthetic-tiktok-seed2")


class Study:
    """A test bed's pretrained backbone, its training interactions and its planted truth."""

    def __init__(self, dataset: str, seed: int):
        self.config = load_config("InvRL", dataset, None, {"seed": seed, "show_progress": False, "state": "WARNING"})
        init_seed(seed, True)
        train, valid, _ = data_preparation(self.config, create_dataset(self.config))
        self.model = get_model("InvRL")(self.config, train._dataset).to(self.config["device"])
        trainer = get_trainer(self.config["MODEL_TYPE"], "InvRL")(self.config, self.model)
        trainer.pretrain(train, valid, verbose=False, show_progress=False)
        self.frozen = backbone_view(self.model.backbone, "eq14")
        self.interactions = TrainingInteractions.from_dataset(train._dataset, self.config["device"])
        self.truth = PlantedTruth.load(self.config["data_path"], self.model.content_layout, len(self.interactions))
        if self.truth is None or self.truth.envs is None:
            raise SystemExit(f"{dataset}: no planted environments in {self.config['data_path']}")

    def run(self, num_envs: int, rounds: int, seed: int, *, start: str | None = None, epochs: int | None = None,
            warm: bool = False, oracle_psi: bool = False, shares: bool = False,
            planted: bool = False, kind: str | None = None) -> dict[str, Any]:
        """M3 for ``rounds`` rounds under one variant; ARI and purity after each round."""
        config = self.config
        torch.manual_seed(seed)
        mask = torch.full_like(self.model.mask, 0.5)
        if oracle_psi:
            mask = torch.as_tensor(self.truth.oracle_mask(), dtype=mask.dtype, device=mask.device)
        if planted:
            envs = torch.as_tensor(self.truth.envs, dtype=torch.long, device=mask.device)
        else:
            envs = initial_environments(start or config["partition_start"], self.frozen, self.interactions, num_envs)
        models = None
        scores = []
        for _ in range(rounds):
            if models is None or not warm:
                models = environment_models_for(self.frozen, kind or config["partition_models"], num_envs, mask,
                                                config["partition_l1_weight"])
            train_environments(models, self.interactions, envs, epochs or config["partition_epochs"],
                               config["train_batch_size"], config["learning_rate"])
            envs = assign(models, self.interactions, envs, config, shares)
            scores.append(self.truth.partition_scores(envs))
        return {"first": scores[0], "last": scores[-1], "sizes": torch.bincount(envs, minlength=num_envs).tolist(),
                "spread": log_likelihood_spread(models, self.interactions, config["partition_samples"])}


def log_likelihood_spread(models, interactions: TrainingInteractions, samples: int) -> float:
    """How sure the models are: the standard deviation, over interactions and environments,
    of log p_e(i | u) less its mean over the environments (nats)."""
    scores = models.assignment_scores(interactions, "likelihood", samples)
    return float((scores - scores.mean(1, keepdim=True)).std())


@torch.no_grad()
def assign(models, interactions: TrainingInteractions, envs: torch.Tensor, config, shares: bool) -> torch.Tensor:
    """Eq. 7 as ``partition_assign`` sets it, or with log(share of e) added (the posterior)."""
    if not shares:
        return models.assign(interactions, config["partition_assign"], config["partition_samples"])
    log_share = torch.bincount(envs, minlength=models.num_envs).float().div(len(envs)).clamp_min(1e-6).log()
    return (models.assignment_scores(interactions, "likelihood", config["partition_samples"]) + log_share).argmax(1)


VARIANTS: dict[str, Callable[[Study, int, int, int], dict[str, Any]]] = {
    "default": lambda s, e, r, seed: s.run(e, r, seed),
    "random start": lambda s, e, r, seed: s.run(e, r, seed, start="random"),
    "release models": lambda s, e, r, seed: s.run(e, r, seed, kind="fresh"),
    "20 epochs": lambda s, e, r, seed: s.run(e, r, seed, epochs=20),
    "warm models": lambda s, e, r, seed: s.run(e, r, seed, warm=True),
    "oracle Psi": lambda s, e, r, seed: s.run(e, r, seed, oracle_psi=True),
    "with shares": lambda s, e, r, seed: s.run(e, r, seed, shares=True),
    "planted start": lambda s, e, r, seed: s.run(2, r, seed, planted=True, epochs=10),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(TEST_BEDS))
    parser.add_argument("--num_envs", type=int, nargs="+", default=[5, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'dataset':24s} {'variant':14s} |E| {'round 1 ARI/purity':>19s} {'last ARI/purity':>16s} spread  sizes")
    for dataset in args.datasets:
        start = time.perf_counter()
        study = Study(dataset, args.seed)
        for name in args.variants:
            for num_envs in args.num_envs if name != "planted start" else [2]:
                result = VARIANTS[name](study, num_envs, args.rounds, args.seed)
                rows.append({"dataset": dataset, "variant": name, "num_envs": num_envs, "rounds": args.rounds, **result})
                first, last = result["first"], result["last"]
                print(f"{dataset:24s} {name:14s} {num_envs:3d} {first['ari']:9.3f} {first['purity']:.3f}"
                      f" {last['ari']:9.3f} {last['purity']:.3f} {result['spread']:6.3f}  {result['sizes']}", flush=True)
        print(f"# {dataset}: {time.perf_counter() - start:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
