"""Synthetic spurious-feature test bed shaped like the paper's data sets (Table 1).

Generative story
----------------
* User u: preference vector ``p_u ~ N(0, I_k)`` (k = 16) and style affinity
  ``a_u ~ N(0, I_s)`` (s = 4). Item i: preference factor ``q_i ~ N(0, I_k)``, style
  ``s_i ~ N(0, I_s)`` and popularity ``b_i ~ N(0, 0.5^2)``.
* Preference logit ``f_ui = 2 <p_u, q_i> / sqrt(k) + b_i``; style agreement
  ``g_ui = <a_u, s_i> / sqrt(s)``.
* Each user's interactions are drawn without replacement (Gumbel top-k over all items):
  validation and test items from ``f_ui`` alone (no style effect); training items from two
  environments, A (70 %: logit ``f_ui + 4 g_ui``, style drives exposure) and B (30 %: logit
  ``f_ui - g_ui``, style mildly reversed). A model that leans on style fits training and
  loses on test. Splits are about 8:1:1 per user and never overlap.
* Content: every dense modality's columns are split at random into invariant dims
  (``q_i W + noise``) and spurious dims (``s_i V + noise``), W and V random per modality.
  Word-id text (tiktok) is a real bag of words: the vocabulary is split into preference
  words and style words, each word has an embedding in the preference (resp. style)
  space, and an item draws ~Poisson(4) preference words with probability rising with
  ``<q_i, e_w>`` and ~Poisson(4) style words with probability rising with ``<s_i, e_w>``.

Structures
----------
``--structure`` picks one of a family of generators that differ in how the spurious signal
enters (``STRUCTURES``); ``tiktok-style`` above is the default and the others are held-out
test beds (docs/experiments.md says which beds choose defaults and which report):

* ``user-env``: the environment is a property of the user (80 % of users see a style
  boost in every training interaction, the rest none) and style is rank one;
* ``one-modality``: spurious dims in the first dense modality only, the others all
  invariant;
* ``weak-boost``: a weak boost (60/40 % at +1.5 / -0.5), rank-two style, a quarter of the
  dims spurious in two of three modalities.

The truth goes to ``truth.json`` (invariant/spurious dims per field, style/preference
words, seed, preset, scale, counts) and ``train_env.npy`` (environment 0 = A, 1 = B of each
training interaction, row-aligned with ``train.npy`` and ``NAME.train.inter``).

CLI::

    python -m recbole_invrl.data.synthetic --preset {movielens,tiktok,kwai,dense3} --scale 0.01 \\
        --out DIR [--structure NAME] [--layout grcn|atomic] [--seed N] [--name NAME]

writes ``DIR/NAME/`` (default NAME ``synthetic-<preset>``, ``planted-<structure>`` for another
structure) in the GRCN/MMGCN layout, or with
``--layout atomic`` converts it into RecBole atomic files there. Same seed -> same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .convert.atomic import ConversionError, atomic_output_dir, validate_name
from .convert.grcn import convert_grcn

K_PREF = 16
K_STYLE = 4
PREF_WEIGHT = 2.0
POP_STD = 0.5
FEATURE_NOISE = 0.5
ENVIRONMENTS = (("A", 0.7, 4.0), ("B", 0.3, -1.0))  # name, share of training items, style weight
WORD_TEMPERATURE = 2.0
WORDS_PER_KIND = 4.0  # Poisson mean of preference words and of style words per item
MAX_WORDS_PER_KIND = 20
MIN_USERS, MIN_ITEMS, MIN_PER_USER = 50, 100, 5
CELLS_PER_CHUNK = 1 << 22


@dataclass(frozen=True)
class Preset:
    """Paper sizes (Table 1) and modalities; ``dense`` maps field -> (file, width)."""

    users: int
    items: int
    interactions: int
    dense: dict[str, tuple[str, int]]
    words: tuple[str, int, int] | None = None  # (file, vocabulary, embedding width)


PRESETS = {
    "movielens": Preset(
        55485, 5986, 1239508,
        {"v_feat": ("v_feat.npy", 2048), "a_feat": ("a_feat.npy", 128), "t_feat": ("t_feat.npy", 100)},
    ),
    "tiktok": Preset(
        36656, 76085, 726065,
        {"v_feat": ("feat_v.pt", 128), "a_feat": ("feat_a.pt", 128)},
        words=("feat_t.pt", 1000, 128),
    ),
    "kwai": Preset(7010, 86483, 298492, {"v_feat": ("v_feat.npy", 2048)}),
    # not a paper data set: three small dense modalities (the GRCN layout's v/a/t files)
    "dense3": Preset(
        1000, 2000, 30000,
        {"v_feat": ("v_feat.npy", 64), "a_feat": ("a_feat.npy", 64), "t_feat": ("t_feat.npy", 64)},
    ),
}


@dataclass(frozen=True)
class Structure:
    """How the spurious signal enters a test bed.

    ``environments``: (name, share, style weight) of the training environments; ``unit``:
    ``interaction`` (each training interaction of a user is drawn from either environment,
    in the shares) or ``user`` (a user belongs to one environment, drawn with the shares,
    and all of its training interactions come from it); ``style_dim``: rank of the style
    signal; ``spurious_share``: share of a dense modality's dims that carry style;
    ``spurious_fields``: the dense modalities with spurious dims (None: all)."""

    environments: tuple[tuple[str, float, float], ...] = ENVIRONMENTS
    unit: str = "interaction"
    style_dim: int = K_STYLE
    spurious_share: float = 0.5
    spurious_fields: tuple[str, ...] | None = None


DEFAULT_STRUCTURE = "tiktok-style"
STRUCTURES = {
    DEFAULT_STRUCTURE: Structure(),
    "user-env": Structure(environments=(("A", 0.8, 3.0), ("B", 0.2, 0.0)), unit="user", style_dim=1),
    "one-modality": Structure(spurious_fields=("v_feat",)),
    "weak-boost": Structure(environments=(("A", 0.6, 1.5), ("B", 0.4, -0.5)), style_dim=2, spurious_share=0.25,
                            spurious_fields=("v_feat", "a_feat")),
    "strong-user": Structure(environments=(("A", 0.6, 5.0), ("B", 0.4, -2.0)), unit="user", style_dim=4,
                             spurious_share=0.75, spurious_fields=("a_feat", "t_feat")),
}


@dataclass
class _World:
    """Latent factors and the sampled interactions."""

    P: np.ndarray
    A: np.ndarray
    Q: np.ndarray
    S: np.ndarray
    bias: np.ndarray
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    train_env: np.ndarray | None = None


def sizes(preset: str, scale: float) -> tuple[int, int, int]:
    """(users, items, target interactions) for ``scale`` times the paper's counts."""
    p = PRESETS[preset]
    n_users = max(MIN_USERS, round(p.users * scale))
    n_items = max(MIN_ITEMS, round(p.items * scale))
    return n_users, n_items, max(round(p.interactions * scale), MIN_PER_USER * n_users)


def generate(
    preset: str,
    scale: float,
    out: Path | str,
    layout: str = "grcn",
    seed: int = 0,
    name: str | None = None,
    *,
    structure: str = DEFAULT_STRUCTURE,
    progress: bool = False,
) -> Path:
    """Write the test bed to ``<out>/<name>/`` (GRCN layout or atomic files); return that path."""
    if preset not in PRESETS:
        raise ConversionError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if structure not in STRUCTURES:
        raise ConversionError(f"unknown structure {structure!r} (choose from {', '.join(STRUCTURES)})")
    unknown = set(STRUCTURES[structure].spurious_fields or ()) - set(PRESETS[preset].dense)
    if unknown:
        raise ConversionError(f"structure {structure!r} plants style in {', '.join(sorted(unknown))}, "
                              f"which preset {preset!r} lacks (it has {', '.join(PRESETS[preset].dense)})")
    if not 0 < scale <= 1:
        raise ConversionError(f"--scale must be in (0, 1], got {scale}")
    if layout not in ("grcn", "atomic"):
        raise ConversionError(f"unknown layout {layout!r} (grcn or atomic)")
    default_name = f"synthetic-{preset}" if structure == DEFAULT_STRUCTURE else f"planted-{structure}"
    name = validate_name(name or default_name)
    if layout == "grcn":
        with atomic_output_dir(out, name) as tmp:
            _write_grcn(tmp, preset, scale, seed, name, layout, structure)
        return Path(out) / name
    with tempfile.TemporaryDirectory(prefix="invrl-synthetic-") as td:
        src = Path(td) / name
        src.mkdir()
        _write_grcn(src, preset, scale, seed, name, layout, structure)
        convert_grcn(
            src, name, out, progress=progress,
            extra_files=[src / "truth.json", src / "train_env.npy"],
        )
    return Path(out) / name


# ----------------------------------------------------------------------------- sampling


def _draw(logits: np.ndarray, ks: np.ndarray, rng: np.random.Generator):
    """Gumbel top-k per row without replacement; returns (row, item, rank) of the draws."""
    kmax = int(ks.max()) if ks.size else 0
    if kmax == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    g = logits + rng.gumbel(size=logits.shape)
    top = np.argpartition(-g, kmax - 1, axis=1)[:, :kmax]
    order = np.argsort(-np.take_along_axis(g, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    mask = np.arange(kmax)[None, :] < ks[:, None]
    rows = np.broadcast_to(np.arange(top.shape[0])[:, None], top.shape)[mask]
    ranks = np.broadcast_to(np.arange(kmax)[None, :], top.shape)[mask]
    return rows, top[mask].astype(np.int64), ranks


def _user_counts(rng: np.random.Generator, n_users: int, n_items: int, target: int,
                 structure: Structure = STRUCTURES[DEFAULT_STRUCTURE]):
    """Per-user (valid, test, env A, env B) counts, about 8:1:1 per user; with environments
    per user, a user's training count all goes to the environment drawn for it."""
    weights = rng.lognormal(0.0, 0.75, n_users)
    extra = rng.multinomial(max(0, target - MIN_PER_USER * n_users), weights / weights.sum())
    total = np.minimum(MIN_PER_USER + extra, max(MIN_PER_USER, n_items // 2))
    n_valid = np.maximum(1, np.rint(0.1 * total)).astype(np.int64)
    n_test = np.maximum(1, np.rint(0.1 * total)).astype(np.int64)
    n_train = total - n_valid - n_test
    share_a = structure.environments[0][1]
    if structure.unit == "user":
        n_a = np.where(rng.random(n_users) < share_a, n_train, 0).astype(np.int64)
    else:
        n_a = np.rint(share_a * n_train).astype(np.int64)
    return n_valid, n_test, n_a, n_train - n_a


def _sample_world(rng: np.random.Generator, n_users: int, n_items: int, target: int,
                  structure: Structure = STRUCTURES[DEFAULT_STRUCTURE]) -> _World:
    k_style = structure.style_dim
    w = _World(
        P=rng.standard_normal((n_users, K_PREF)),
        A=rng.standard_normal((n_users, k_style)),
        Q=rng.standard_normal((n_items, K_PREF)),
        S=rng.standard_normal((n_items, k_style)),
        bias=POP_STD * rng.standard_normal(n_items),
    )
    n_valid, n_test, n_a, n_b = _user_counts(rng, n_users, n_items, target, structure)
    parts: dict[str, list] = {k: [] for k in ("valid", "test", "A", "B")}
    step = max(1, CELLS_PER_CHUNK // n_items)
    for start in range(0, n_users, step):
        sl = slice(start, min(start + step, n_users))
        pref = PREF_WEIGHT * w.P[sl] @ w.Q.T / np.sqrt(K_PREF) + w.bias
        style = w.A[sl] @ w.S.T / np.sqrt(k_style)
        rows, items, ranks = _draw(pref, n_valid[sl] + n_test[sl], rng)
        is_valid = ranks < n_valid[sl][rows]
        parts["valid"].append((rows[is_valid] + start, items[is_valid]))
        parts["test"].append((rows[~is_valid] + start, items[~is_valid]))
        blocked = (rows, items)
        for (env, _, weight), ks in zip(structure.environments, (n_a[sl], n_b[sl])):
            logits = pref + weight * style
            logits[blocked] = -np.inf
            r, i, _ = _draw(logits, ks, rng)
            parts[env].append((r + start, i))
            blocked = (np.concatenate([blocked[0], r]), np.concatenate([blocked[1], i]))
    cat = {k: tuple(np.concatenate(x) for x in zip(*v)) for k, v in parts.items()}
    for split in ("valid", "test"):
        w.splits[split] = _sorted(*cat[split])
    users = np.concatenate([cat["A"][0], cat["B"][0]])
    items = np.concatenate([cat["A"][1], cat["B"][1]])
    env = np.repeat(np.arange(2, dtype=np.int8), [cat["A"][0].size, cat["B"][0].size])
    order = np.lexsort((items, users))
    w.splits["train"] = (users[order], items[order])
    w.train_env = env[order]
    return w


def _sorted(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((items, users))
    return users[order], items[order]


# ----------------------------------------------------------------------------- content


def _dense(rng: np.random.Generator, w: _World, width: int, target: np.ndarray,
           spurious_share: float = 0.5) -> dict:
    """Fill ``target`` (n_items, width) with invariant/spurious columns (``spurious_share``
    of them spurious); return their indices."""
    perm = rng.permutation(width)
    n_invariant = int(width * (1.0 - spurious_share))
    inv, sp = np.sort(perm[:n_invariant]), np.sort(perm[n_invariant:])
    k_style = w.S.shape[1]
    map_inv = rng.standard_normal((K_PREF, inv.size)) / np.sqrt(K_PREF)
    map_sp = rng.standard_normal((k_style, sp.size)) / np.sqrt(k_style)
    n_items = target.shape[0]
    step = max(1, CELLS_PER_CHUNK // width)
    for start in range(0, n_items, step):
        sl = slice(start, min(start + step, n_items))
        m = sl.stop - sl.start
        block = np.empty((m, width), dtype=np.float32)
        block[:, inv] = w.Q[sl] @ map_inv + FEATURE_NOISE * rng.standard_normal((m, inv.size))
        block[:, sp] = w.S[sl] @ map_sp + FEATURE_NOISE * rng.standard_normal((m, sp.size))
        target[sl] = block
    return {"width": width, "invariant_dims": inv.tolist(), "spurious_dims": sp.tolist()}


def _words(rng: np.random.Generator, w: _World, vocab: int) -> tuple[np.ndarray, dict]:
    """Bag of words per item: (2, nnz) int64 of (item, word) and the truth record."""
    perm = rng.permutation(vocab)
    pref_words, style_words = np.sort(perm[: vocab // 2]), np.sort(perm[vocab // 2 :])
    n_items = w.Q.shape[0]
    pairs = []
    for latent, dim, words in ((w.Q, K_PREF, pref_words), (w.S, w.S.shape[1], style_words)):
        emb = rng.standard_normal((words.size, dim))
        counts = np.minimum(rng.poisson(WORDS_PER_KIND, n_items), MAX_WORDS_PER_KIND)
        step = max(1, CELLS_PER_CHUNK // words.size)
        for start in range(0, n_items, step):
            sl = slice(start, min(start + step, n_items))
            logits = WORD_TEMPERATURE * latent[sl] @ emb.T / np.sqrt(dim)
            rows, idx, _ = _draw(logits, counts[sl], rng)
            pairs.append(np.stack([rows + start, words[idx]]))
    feat_t = np.concatenate(pairs, axis=1)
    feat_t = feat_t[:, np.lexsort((feat_t[1], feat_t[0]))]
    truth = {
        "vocab": vocab,
        "preference_words": pref_words.tolist(),
        "style_words": style_words.tolist(),
    }
    return feat_t, truth


# ----------------------------------------------------------------------------- GRCN writer


def _object_array(lists: list) -> np.ndarray:
    arr = np.empty(len(lists), dtype=object)
    for i, x in enumerate(lists):
        arr[i] = x
    return arr


def _per_user_lists(users: np.ndarray, items: np.ndarray, n_users: int) -> list[list[int]]:
    """``[u, item + n_users, ...]`` for every user (users with no items get ``[u]``)."""
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    offset = (items + n_users).tolist()
    return [[u] + offset[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def _write_grcn(
    dest: Path, preset: str, scale: float, seed: int, name: str, layout: str,
    structure_name: str = DEFAULT_STRUCTURE,
) -> None:
    import torch

    p = PRESETS[preset]
    structure = STRUCTURES[structure_name]
    rng = np.random.default_rng(seed)
    n_users, n_items, target = sizes(preset, scale)
    w = _sample_world(rng, n_users, n_items, target, structure)
    tu, ti = w.splits["train"]
    np.save(dest / "train.npy", np.stack([tu, ti + n_users], axis=1).astype(np.int64))
    for split, file in (("valid", "val_full.npy"), ("test", "test_full.npy")):
        np.save(dest / file, _object_array(_per_user_lists(*w.splits[split], n_users)))
    train_lists = _per_user_lists(tu, ti, n_users)
    np.save(dest / "user_item_dict.npy", {u: lst[1:] for u, lst in enumerate(train_lists)})
    np.save(dest / "train_env.npy", w.train_env)
    modalities: dict[str, dict] = {}
    for fld, (file, width) in p.dense.items():
        planted = structure.spurious_fields is None or fld in structure.spurious_fields
        share = structure.spurious_share if planted else 0.0
        if file.endswith(".npy"):
            target_arr = np.lib.format.open_memmap(dest / file, "w+", np.float32, (n_items, width))
            modalities[fld] = _dense(rng, w, width, target_arr, share)
            target_arr.flush()
            del target_arr
        else:
            arr = np.empty((n_items, width), dtype=np.float32)
            modalities[fld] = _dense(rng, w, width, arr, share)
            torch.save(torch.from_numpy(arr), dest / file)
        modalities[fld]["file"] = file
    if p.words is not None:
        file, vocab, emb_width = p.words
        feat_t, modalities["t_words"] = _words(rng, w, vocab)
        modalities["t_words"].update(file=file, embedding_width=emb_width)
        torch.save(torch.from_numpy(feat_t), dest / file)
    truth = {
        "name": name,
        "preset": preset,
        "scale": scale,
        "seed": seed,
        "layout": layout,
        "counts": {
            "users": n_users,
            "items": n_items,
            **{s: int(w.splits[s][0].size) for s in ("train", "valid", "test")},
            "interactions": int(sum(w.splits[s][0].size for s in w.splits)),
        },
        "generator": {
            "structure": structure_name,
            "environment_unit": structure.unit,
            "k": K_PREF,
            "style_dim": structure.style_dim,
            "preference_weight": PREF_WEIGHT,
            "popularity_std": POP_STD,
            "feature_noise": FEATURE_NOISE,
            "environments": [
                {"name": n, "share_of_train" if structure.unit == "interaction" else "share_of_users": s,
                 "style_weight": wt} for n, s, wt in structure.environments
            ],
            "valid_test": "preference only (style weight 0)",
            "train_env_file": "train_env.npy (0 = A, 1 = B, row-aligned with the train split)",
        },
        "modalities": modalities,
    }
    (dest / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_invrl.data.synthetic",
        description="Write a synthetic spurious-feature data set shaped like the paper's.",
    )
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--scale", type=float, default=0.01, help="fraction of the paper's sizes")
    parser.add_argument("--out", required=True, help="output root; writes OUT/NAME/")
    parser.add_argument("--structure", choices=sorted(STRUCTURES), default=DEFAULT_STRUCTURE,
                        help="how the spurious signal enters (module docstring)")
    parser.add_argument("--layout", choices=("grcn", "atomic"), default="grcn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="default: synthetic-<preset>")
    args = parser.parse_args(argv)
    try:
        path = generate(args.preset, args.scale, args.out, args.layout, args.seed, args.name,
                        structure=args.structure, progress=True)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = json.loads((path / "truth.json").read_text())["counts"]
    print(
        f"{path.name}: {counts['users']} users, {counts['items']} items; train {counts['train']} "
        f"/ valid {counts['valid']} / test {counts['test']} interactions ({args.layout} layout) "
        f"-> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
