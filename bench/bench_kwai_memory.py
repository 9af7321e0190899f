"""Wall time and peak RSS per stage of UltraGCN-MM and InvRL on a full-size Kwai-shaped set.

Generates (once; reused if present) the synthetic test bed with the ``kwai`` preset
(7,010 users, 86,483 items, ~300,000 interactions, one 2,048-d ``v_feat``) at ``--scale``
in RecBole atomic files under ``--out``, then runs, each in a fresh Python process:

* ``dataset``: the dataset alone; parses the 2,048-d item file and writes the feature
  cache (into the default cache folder if it is empty, so the model runs then load the
  cache, as any second run does; else into a temporary one);
* ``UltraGCN-MM``: dataset (cached), model build, ``--epochs`` epochs with a full-sort
  validation after each, the full-sort test;
* ``InvRL`` with a short schedule: ``--epochs`` pretrain and final epochs, T = 1,
  ``--envs`` environments, 1 partition round of 1 epoch, ``--mask_epochs`` mask epochs.

``--max_batches N`` stops every training epoch (RecBole's, M3's, M4's) after N batches:
a step's memory is the same all epoch long, so the peaks hold, and the full-size run
takes minutes instead of hours on 2 CPU cores (evaluations are never capped).

Stages are marked by wrapping the library's functions (dataset build, model build,
``Trainer._train_epoch``/``_valid_epoch``/``evaluate``, ``InvRLTrainer.pretrain``/
``partition``/``learn_mask``, ``FrozenBackbone``, ...). Peak RSS of a stage is exact where
the kernel lets a process reset its high-water mark (``5 > /proc/self/clear_refs``; the
mark is read before every reset and at every stage end), else sampled every 5 ms.
It includes file pages mapped by the process (the memory-mapped feature cache).
Each run also lists the big objects (feature matrix, content buffers, neighbour table,
M3/M4 content table) and how many distinct bytes they hold.

    python bench/bench_kwai_memory.py --max_batches 20   # full size: ~15 min on 2 busy cores
    python bench/bench_kwai_memory.py --scale 0.1 --max_batches 3   # a quick reduced run
    options: --out bench/out, --models dataset ultragcn invrl, --epochs 1, --envs 3,
             --mask_epochs 1, --json FILE
    python bench/bench_kwai_memory.py --markdown FILE   # the saved results' tables in Markdown
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

MODELS = {"dataset": None, "ultragcn": "UltraGCNMM", "invrl": "InvRL"}


# -- peak RSS per stage --------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Stage:
    name: str
    depth: int
    start: float
    peak_kib: int
    seconds: float = 0.0
    end_kib: int = 0


@dataclass
class StageRecorder:
    """Nested stages with wall time, peak RSS and RSS at the end."""

    exact: bool = field(default_factory=_reset_peak)
    done: list[Stage] = field(default_factory=list)
    active: list[Stage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.exact:
            threading.Thread(target=self._sample_forever, daemon=True).start()

    def _sample_forever(self) -> None:
        while True:
            self._observe()
            time.sleep(0.005)

    def _observe(self) -> None:
        """Raise the peak of every active stage to the current high-water mark (or RSS)."""
        value = _status_kib("VmHWM" if self.exact else "VmRSS")
        with self.lock:
            for stage in self.active:
                stage.peak_kib = max(stage.peak_kib, value)

    def begin(self, name: str) -> Stage:
        self._observe()
        if self.exact:
            _reset_peak()
        stage = Stage(name, len(self.active), time.perf_counter(), _status_kib("VmRSS"))
        with self.lock:
            self.active.append(stage)
            self.done.append(stage)
        return stage

    def end(self, stage: Stage) -> None:
        self._observe()
        stage.seconds = time.perf_counter() - stage.start
        stage.end_kib = _status_kib("VmRSS")
        with self.lock:
            self.active.remove(stage)

    def run(self, name: str, fn: Callable, *args, **kwargs):
        stage = self.begin(name)
        try:
            return fn(*args, **kwargs)
        finally:
            self.end(stage)

    def wrap(self, owner: Any, attr: str, name: str | Callable[..., str]) -> None:
        """Make ``owner.attr`` (a function or method) a stage; ``name`` may depend on the call."""
        original = getattr(owner, attr)

        @functools.wraps(original, updated=())  # original may be a class (ContentEncoder)
        def staged(*args, **kwargs):
            label = name(*args, **kwargs) if callable(name) else name
            return self.run(label, original, *args, **kwargs)

        setattr(owner, attr, staged)


# -- one measured run (child process) -----------------------------------------------------


def schedule(args) -> dict:
    return {
        "epochs": args.epochs, "pretrain_epochs": args.epochs, "eval_step": 1,
        "stopping_step": 10 ** 6, "invrl_iterations": 1, "num_envs": args.envs,
        "partition_epochs": 1, "partition_rounds": 1, "moved_threshold": 0.0,
        "mask_epochs": args.mask_epochs,
    }


def instrument(rec: StageRecorder, objects: dict) -> None:
    """Mark the library's stages (wrapping its functions in this process only)."""
    from recbole.data.dataset import Dataset
    from recbole.trainer import Trainer

    from recbole_invrl.data.dataset import MultimodalDataset
    from recbole_invrl.invariance import common
    from recbole_invrl.invariance.partition import EnvironmentModels
    from recbole_invrl.model import abstract_recommender, ultragcn_objective
    from recbole_invrl.trainer import invrl_trainer

    def load_feat_name(self, filepath, source):
        return "parse/cache .item" if str(filepath).endswith(".item") else "read .inter"

    rec.wrap(MultimodalDataset, "_load_feat", load_feat_name)
    rec.wrap(Dataset, "_change_feat_format", "frames -> tensors")
    rec.wrap(ultragcn_objective, "item_item_neighbors", "neighbour table")
    rec.wrap(abstract_recommender, "ContentEncoder", "content encoder")
    rec.wrap(Trainer, "_train_epoch", "train epoch")
    rec.wrap(Trainer, "_valid_epoch", "full-sort validation")
    rec.wrap(invrl_trainer.InvRLTrainer, "pretrain", "pretrain (fit)")
    rec.wrap(invrl_trainer.InvRLTrainer, "partition", "partition round")
    rec.wrap(invrl_trainer, "train_environments", "environment epoch(s)")
    rec.wrap(EnvironmentModels, "assign", "separation (eq. 7)")
    rec.wrap(invrl_trainer.InvRLTrainer, "learn_mask", "mask epoch(s)")

    def final_name(self, *args, **kwargs):
        return "final (fit)" if isinstance(self, invrl_trainer.InvRLTrainer) else "fit"

    rec.wrap(Trainer, "fit", final_name)
    original_frozen = common.FrozenBackbone.__init__

    def frozen_init(self, backbone, *args, **kwargs):
        rec.run("frozen backbone", original_frozen, self, backbone, *args, **kwargs)
        objects["frozen"] = self

    common.FrozenBackbone.__init__ = frozen_init


def cap_batches(train, limit: int) -> None:
    """Stop every training pass (RecBole epochs, M3 and M4 epochs) after ``limit`` batches:
    memory per batch is the same all epoch long, and time scales with the batch count."""
    from recbole_invrl.invariance import mask, partition

    def capped(iterate):
        @functools.wraps(iterate)
        def first_batches(*args, **kwargs):
            return itertools.islice(iterate(*args, **kwargs), limit)
        return first_batches

    train.__class__ = type(train.__class__.__name__, (train.__class__,),
                           {"__iter__": capped(train.__class__.__iter__)})
    for stage in (mask, partition):  # M4 and M3 take their steps from environment_batches
        batches = stage.environment_batches
        stage.environment_batches = functools.wraps(batches)(lambda *a, _b=batches, **k: _b(*a, **k)[:limit])


def dataset_settings(model: str | None, folder: Path) -> dict:
    """The dataset run parses the text and writes the feature cache: into the default
    cache folder if it is empty (later runs load it), else into a fresh one."""
    if model is not None or not any((folder / ".cache").glob("*.item.*")):
        return {}
    return {"feature_cache_dir": tempfile.mkdtemp(prefix=".bench-cache-", dir=folder)}


def child(model: str | None, folder: Path, name: str, args) -> dict:
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    import torch
    from recbole.utils import init_seed

    from recbole_invrl import allocator
    from recbole_invrl.config import Config
    from recbole_invrl.data import create_dataset, data_preparation
    from recbole_invrl.utils import get_model, get_trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    rec, objects = StageRecorder(), {}
    imports_kib = _status_kib("VmRSS")
    instrument(rec, objects)
    settings = dataset_settings(model, folder)
    config = Config(model or "UltraGCNMM", name, config_dict={
        "data_path": str(folder.parent), "checkpoint_dir": str(folder.parent / "saved"),
        "show_progress": False, "state": "WARNING", **schedule(args), **settings})
    allocator.apply_config(config)
    init_seed(config["seed"], config["reproducibility"])
    total = rec.begin("total")
    dataset = rec.run("dataset load", create_dataset, config)
    train, valid, test = rec.run("dataset build + dataloaders", data_preparation, config, dataset)
    if "feature_cache_dir" in settings:
        shutil.rmtree(settings["feature_cache_dir"], ignore_errors=True)
    if args.max_batches:
        cap_batches(train, args.max_batches)
    if model is not None:
        init_seed(config["seed"], config["reproducibility"])
        net = rec.run("model build", lambda: get_model(model)(config, train._dataset).to(config["device"]))
        trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
        rec.run("trainer.fit", trainer.fit, train, valid, saved=True, show_progress=False)
        result = rec.run("full-sort test", trainer.evaluate, test, load_best_model=True)
        objects.update(dataset=dataset, model=net)
    rec.end(total)
    return {
        "model": model or "dataset", "exact_peak": rec.exact, "imports_kib": imports_kib,
        "stages": [vars(s) | {"start": None} for s in rec.done],
        "objects": big_objects(objects),
        "test": {k: float(v) for k, v in result.items()} if model else None,
        "state_sum": state_sum(net) if model else None,
    }


def state_sum(model) -> float:
    """Sum of every trained value (float64): equal sums say the run computed the same."""
    return float(sum(t.double().sum() for t in model.state_dict().values() if t.is_floating_point()))


def big_objects(objects: dict) -> dict:
    """Bytes of the big tensors, and of their distinct storages (shared memory counted once)."""
    rows, storages = {}, {}

    def add(label: str, tensor) -> None:
        if tensor is None:
            return
        storage = tensor.untyped_storage()
        rows[label] = {"bytes": tensor.nbytes, "shape": list(tensor.shape),
                       "storage": storage.data_ptr()}
        storages[storage.data_ptr()] = storage.nbytes()

    dataset, model = objects.get("dataset"), objects.get("model")
    if dataset is not None:
        feat = dataset.get_item_feature()
        for key in feat.columns:
            if feat[key].dim() == 2 and feat[key].is_floating_point():
                add(f"dataset item_feat[{key}]", feat[key])
    if model is not None:
        for label, module in (("model", model), ("backbone", getattr(model, "backbone", None)),
                              ("final", getattr(model, "final", None))):
            if module is None or not hasattr(module, "content"):
                continue
            for buffer, tensor in module.content.named_buffers():
                if buffer.startswith("dense_"):
                    add(f"{label}.content.{buffer}", tensor)
            add(f"{label}.neighbor_index", getattr(module, "neighbor_index", None))
            add(f"{label}.neighbor_weight", getattr(module, "neighbor_weight", None))
    frozen = objects.get("frozen")
    if frozen is not None:
        add("FrozenBackbone.table", getattr(frozen, "table", None))
    return {"tensors": rows, "distinct_bytes": sum(storages.values())}


def run_child(model_key: str, folder: Path, name: str, args) -> dict:
    command = [sys.executable, __file__, "--child", model_key, "--folder", str(folder),
               "--name", name, "--epochs", str(args.epochs), "--envs", str(args.envs),
               "--mask_epochs", str(args.mask_epochs), "--threads", str(args.threads),
               "--max_batches", str(args.max_batches)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{model_key} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the report ---------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def merged_stages(result: dict) -> list[dict]:
    """The stages of one run with repeats (epochs, evaluations) merged: summed time, max peak."""
    merged: dict[tuple[int, str], dict] = {}
    for s in result["stages"]:
        row = merged.setdefault((s["depth"], s["name"]), {"depth": s["depth"], "name": s["name"], "calls": 0,
                                                         "seconds": 0.0, "peak": 0, "end": 0})
        row["calls"] += 1
        row["seconds"] += s["seconds"]
        row["peak"] = max(row["peak"], s["peak_kib"])
        row["end"] = s["end_kib"]
    return list(merged.values())


def report(result: dict) -> None:
    print(f"\n== {result['model']} (peak RSS {'exact, VmHWM reset per stage' if result['exact_peak'] else 'sampled every 5 ms'}; "
          f"a process with only the imports: {mib(result['imports_kib'])} MiB)")
    header = f"{'stage':<36}{'calls':>6}{'seconds':>10}{'peak RSS MiB':>14}{'RSS at end MiB':>16}"
    print(header)
    print("-" * len(header))
    for row in merged_stages(result):
        label = "  " * row["depth"] + row["name"]
        print(f"{label:<36}{row['calls']:>6}{row['seconds']:>10.1f}{mib(row['peak']):>14}{mib(row['end']):>16}")
    objects = result["objects"]
    if objects["tensors"]:
        print("big objects:")
        for label, o in objects["tensors"].items():
            print(f"  {label:<40}{str(tuple(o['shape'])):>16}{o['bytes'] / 2**20:>10,.1f} MiB"
                  f"  storage {o['storage']:#x}")
        print(f"  {'distinct storage of the above':<56}{objects['distinct_bytes'] / 2**20:>10,.1f} MiB")
    if result["test"] is not None:
        print(f"test NDCG@10 {result['test']['ndcg@10']:.8f}, Recall@10 {result['test']['recall@10']:.8f}; "
              f"sum of the trained state {result['state_sum']:.10g}")


def markdown(results: list[dict]) -> str:
    """A summary table and one stage table per run, in Markdown, from saved results."""
    lines = ["| run | seconds | peak RSS (MiB) | distinct bytes of the big tensors (MiB) |", "|---|---|---|---|"]
    for result in results:
        total = merged_stages(result)[0]
        lines.append(f"| {result['model']} | {total['seconds']:.1f} | {mib(total['peak'])} | "
                     f"{result['objects']['distinct_bytes'] / 2**20:,.0f} |")
    for result in results:
        lines += ["", f"### {result['model']}", "", "| stage | calls | seconds | peak RSS (MiB) | RSS at end (MiB) |",
                  "|---|---|---|---|---|"]
        for row in merged_stages(result):
            indent = "&nbsp;&nbsp;" * row["depth"]
            lines.append(f"| {indent}{row['name']} | {row['calls']} | {row['seconds']:.1f} | {mib(row['peak'])} | "
                         f"{mib(row['end'])} |")
    return "\n".join(lines)


def ensure_data(out: Path, scale: float, seed: int) -> tuple[Path, str]:
    from recbole_invrl.data.synthetic import generate

    name = f"bench-kwai-{scale}"
    folder = out / name
    if not (folder / f"{name}.train.inter").is_file():
        start = time.perf_counter()
        generate("kwai", scale, out, layout="atomic", seed=seed, name=name)
        print(f"generated {folder} in {time.perf_counter() - start:.0f} s", flush=True)
    return folder, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/out")
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="runs, in order: dataset (load only, writes the feature cache), ultragcn, "
                             "invrl, or any model name (e.g. LATTICE, FREEDOM, GRCN, MMGCN)")
    parser.add_argument("--epochs", type=int, default=1, help="UltraGCN-MM epochs; InvRL pretrain and final epochs")
    parser.add_argument("--envs", type=int, default=3, help="InvRL environments")
    parser.add_argument("--mask_epochs", type=int, default=1)
    parser.add_argument("--max_batches", type=int, default=0,
                        help="cap every training epoch (RecBole, M3, M4) at this many batches; 0: none")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--markdown", metavar="JSON",
                        help="print the tables of results saved with --json, in Markdown, and run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if args.child:
        print(json.dumps(child(MODELS.get(args.child, args.child), Path(args.folder), args.name, args)))
        return
    folder, name = ensure_data(Path(args.out), args.scale, args.seed)
    truth = json.loads((folder / "truth.json").read_text())["counts"]
    print(f"data: {name}: {truth['users']:,} users, {truth['items']:,} items, {truth['train']:,} train / "
          f"{truth['valid']:,} valid / {truth['test']:,} test interactions; v_feat 2,048-d")
    print(f"schedule: UltraGCN-MM {args.epochs} epoch(s); InvRL pretrain {args.epochs} + final "
          f"{args.epochs} epoch(s), T=1, {args.envs} envs, 1 partition round of 1 epoch, "
          f"{args.mask_epochs} mask epoch(s); full-sort validation after every epoch"
          + (f"; every epoch capped at {args.max_batches} batches" if args.max_batches else ""),
          flush=True)
    results = []
    for key in args.models:
        start = time.perf_counter()
        results.append(run_child(key, folder, name, args))
        report(results[-1])
        print(f"({key}: {time.perf_counter() - start:.0f} s in its process)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
