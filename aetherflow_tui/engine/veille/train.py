"""Train the veille head: python -m aetherflow_tui.engine.veille.train [--l2 X] [--out PATH]

Reads data/train.jsonl, embeds every item with the shipped MiniLM encoder (plus its hashed
words, see classifier.word_features), fits a multinomial logistic regression (softmax,
L2-regularised, class-weighted, L-BFGS in plain numpy) and writes data/head.npz with the
sha256 of the train file and the model id it was trained for.
The regularisation strength is chosen by 5-fold cross-validation on the train split alone.
Then it reports macro-F1 and per-label F1 on data/heldout.jsonl, which is never trained on,
and measures there the outage alert threshold (see outage_threshold), written into the
head with the held-out file's sha256.
Items tagged "all_clear" (resolved incidents, completed maintenance, "all systems
operational", in English and French) are noise; the share of them labelled outage is the
false-outage rate.

The metrics (macro_f1, per_label_metrics) are used by the tests and the benchmark too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aetherflow_tui.engine.veille.classifier import (
    DATA_DIR,
    EMBEDDING_DIM,
    FEATURES,
    HEAD_PATH,
    LABELS,
    MAX_TOKENS,
    MODEL_ID,
    Classifier,
    Head,
    Prediction,
    item_text,
)

TRAIN_PATH = DATA_DIR / "train.jsonl"
HELDOUT_PATH = DATA_DIR / "heldout.jsonl"
ALL_CLEAR = "all_clear"
L2_GRID = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
CV_FOLDS = 5


@dataclass(frozen=True, slots=True)
class Item:
    title: str
    summary: str
    label: str
    tag: str | None = None  # ALL_CLEAR for a notice that nothing is wrong (label noise)

    @property
    def text(self) -> str:
        return item_text(self.title, self.summary)


@dataclass(frozen=True, slots=True)
class LabelMetrics:
    precision: float
    recall: float
    f1: float
    support: int  # items of this label in the truth


def load_items(path: Path | str) -> list[Item]:
    """The items of a dataset file (JSON lines: title, summary, label in LABELS)."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in LABELS:
            raise ValueError(f"{path}:{number}: label {row.get('label')!r} is not one of {LABELS}")
        tag = row.get("tag")
        if tag not in (None, ALL_CLEAR) or (tag == ALL_CLEAR and row["label"] != "noise"):
            raise ValueError(f"{path}:{number}: tag {tag!r} is not {ALL_CLEAR!r} on a noise item")
        items.append(Item(str(row["title"]), str(row.get("summary", "")), row["label"], tag))
    return items


def file_sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- metrics ----------------------------------------------------------------------------------

def per_label_metrics(truth: Sequence[str], predicted: Sequence[str],
                      labels: Sequence[str] = LABELS) -> dict[str, LabelMetrics]:
    """Precision, recall, F1 and support of each label (0 where undefined)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truths for {len(predicted)} predictions")
    out = {}
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted, strict=True) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = LabelMetrics(precision, recall, f1, tp + fn)
    return out


def macro_f1(truth: Sequence[str], predicted: Sequence[str],
             labels: Sequence[str] = LABELS) -> float:
    """Unweighted mean of the per-label F1 scores over ``labels``."""
    metrics = per_label_metrics(truth, predicted, labels)
    return sum(m.f1 for m in metrics.values()) / len(metrics)


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / max(1, len(truth))


def outage_threshold(truth: Sequence[str], predictions: Sequence[Prediction]) -> float:
    """The lowest confidence, in steps of 0.01, above every item labelled outage that is
    not one: below it an outage label raises no alert (0 when there is no false outage)."""
    false = [p.confidence for t, p in zip(truth, predictions, strict=True)
             if p.label == "outage" and t != "outage"]
    return (math.floor(max(false) * 100) + 1) / 100 if false else 0.0


def false_outage_rate(items: Sequence[Item], predictions: Sequence[Prediction],
                      threshold: float = 0.0) -> tuple[int, int]:
    """(all-clear items labelled outage at or above threshold, all-clear items)."""
    pairs = [(i, p) for i, p in zip(items, predictions, strict=True) if i.tag == ALL_CLEAR]
    return sum(p.label == "outage" and p.confidence >= threshold for _, p in pairs), len(pairs)


def outage_recall(items: Sequence[Item], predictions: Sequence[Prediction],
                  threshold: float) -> float:
    """Share of the outages labelled outage at or above threshold (they raise an alert)."""
    outages = [p for i, p in zip(items, predictions, strict=True) if i.label == "outage"]
    return sum(p.label == "outage" and p.confidence >= threshold
               for p in outages) / max(1, len(outages))


def format_report(truth: Sequence[str], predicted: Sequence[str]) -> list[str]:
    lines = [f"{'label':18} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>4}"]
    for label, m in per_label_metrics(truth, predicted).items():
        lines.append(f"{label:18} {m.precision:9.3f} {m.recall:7.3f} {m.f1:6.3f} {m.support:4d}")
    lines.append(f"macro-F1 {macro_f1(truth, predicted):.3f}, accuracy "
                 f"{accuracy(truth, predicted):.3f} over {len(truth)} items")
    return lines


# -- the softmax head -------------------------------------------------------------------------

def _lbfgs(fun: Callable[[Any], tuple[float, Any]], x: Any, *, memory: int = 10,
           max_iter: int = 500, tol: float = 1e-5) -> Any:
    """Minimise a smooth convex fun(x) -> (value, gradient) with L-BFGS + Armijo backtracking."""
    import numpy as np

    value, grad = fun(x)
    steps: list[tuple[Any, Any, float]] = []  # (s, y, 1 / y.s)
    for _ in range(max_iter):
        if np.abs(grad).max() < tol:
            break
        q = grad.copy()
        alphas = []
        for s, y, rho in reversed(steps):
            alpha = rho * (s @ q)
            q -= alpha * y
            alphas.append(alpha)
        if steps:
            s, y, _ = steps[-1]
            q *= (s @ y) / (y @ y)
        for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
            q += s * (alpha - rho * (y @ q))
        direction = -q
        slope = grad @ direction
        if slope >= 0:  # not a descent direction: restart from the gradient
            steps.clear()
            direction, slope = -grad, -(grad @ grad)
        t = 1.0 if steps else min(1.0, 1.0 / max(1e-12, float(np.abs(grad).sum())))
        while True:
            new_value, new_grad = fun(x + t * direction)
            if new_value <= value + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        s, y = t * direction, new_grad - grad
        x, value, grad = x + s, new_value, new_grad
        if s @ y > 1e-12:
            steps.append((s, y, 1.0 / (s @ y)))
            del steps[:-memory]
    return x


def fit_softmax(features: Any, targets: Any, *, l2: float, class_weighted: bool = True,
                max_iter: int = 500, standardised: int | None = EMBEDDING_DIM,
                ) -> tuple[Any, Any]:
    """Multinomial logistic regression: (weights (k, d), bias (k,)) in the original feature
    space. The first ``standardised`` columns (the embedding; None: all) are standardised
    for the fit (the L2 penalty then treats those dimensions alike), the rest (the hashed
    words, see classifier.word_features) are left as they are: standardised, a word seen in
    three items would get a weight scaled up tenfold. The scaling is folded back into the
    weights and bias."""
    import numpy as np

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    n, d = x.shape
    k = len(LABELS)
    cut = d if standardised is None else min(d, standardised)
    mean, scale = np.zeros(d), np.ones(d)
    mean[:cut], scale[:cut] = x[:, :cut].mean(axis=0), x[:, :cut].std(axis=0) + 1e-6
    z = (x - mean) / scale
    onehot = np.eye(k)[y]
    counts = np.bincount(y, minlength=k).astype(np.float64)
    per_class = n / (k * np.maximum(counts, 1.0)) if class_weighted else np.ones(k)
    sample_weight = per_class[y] / per_class[y].sum()

    def fun(theta: Any) -> tuple[float, Any]:
        w, b = theta[:k * d].reshape(k, d), theta[k * d:]
        logits = z @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        log_prob = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(sample_weight * (onehot * log_prob).sum(axis=1)).sum() + 0.5 * l2 * (w * w).sum()
        residual = (np.exp(log_prob) - onehot) * sample_weight[:, None]
        grad_w = residual.T @ z + l2 * w
        return float(loss), np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

    theta = _lbfgs(fun, np.zeros(k * d + k), max_iter=max_iter)
    w, b = theta[:k * d].reshape(k, d), theta[k * d:]
    weights = w / scale
    bias = b - weights @ mean
    return weights.astype(np.float32), bias.astype(np.float32)


def predict_labels(weights: Any, bias: Any, features: Any) -> list[str]:
    return [LABELS[i] for i in (features @ weights.T + bias).argmax(axis=1)]


def cross_validate_l2(features: Any, targets: Any, grid: Sequence[float] = L2_GRID,
                      folds: int = CV_FOLDS, seed: int = 0) -> tuple[float, dict[float, float]]:
    """The L2 strength of ``grid`` with the best mean macro-F1 over stratified folds."""
    import numpy as np

    y = np.asarray(targets)
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for label in range(len(LABELS)):
        members = np.flatnonzero(y == label)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    scores: dict[float, float] = {}
    for l2 in grid:
        fold_scores = []
        for fold in range(folds):
            train, test = fold_of != fold, fold_of == fold
            w, b = fit_softmax(features[train], y[train], l2=l2)
            truth = [LABELS[i] for i in y[test]]
            fold_scores.append(macro_f1(truth, predict_labels(w, b, features[test])))
        scores[l2] = float(np.mean(fold_scores))
    best = max(grid, key=lambda l2: (round(scores[l2], 4), l2))  # ties: the stronger penalty
    return best, scores


def save_head(path: Path | str, weights: Any, bias: Any, **meta: str) -> None:
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, weights=weights, bias=bias, labels=np.array(LABELS),
             **{key: np.array(str(value)) for key, value in meta.items()})
    tmp.replace(path)


@dataclass(frozen=True, slots=True)
class TrainResult:
    head: Head
    l2: float
    cv_scores: dict[float, float]
    train_items: int
    train_sha256: str


def train_head(train_path: Path | str = TRAIN_PATH, out_path: Path | str | None = HEAD_PATH,
               *, l2: float | None = None, classifier: Classifier | None = None,
               heldout_path: Path | str | None = None) -> TrainResult:
    """Embed the train split, fit the head (l2 by cross-validation unless given), measure
    its outage threshold on ``heldout_path`` if given, write it to ``out_path`` unless that
    is None, and return it."""
    import numpy as np

    items = load_items(train_path)
    encoder = classifier or Classifier.load_encoder_only()
    features = encoder.features([item.text for item in items])
    targets = np.array([LABELS.index(item.label) for item in items])
    cv_scores: dict[float, float] = {}
    if l2 is None:
        l2, cv_scores = cross_validate_l2(features, targets)
    weights, bias = fit_softmax(features, targets, l2=l2)
    meta = {"train_sha256": file_sha256(train_path), "model_id": MODEL_ID, "features": FEATURES,
            "encoder_graph": encoder.encoder_graph, "l2": repr(l2),
            "max_tokens": str(MAX_TOKENS), "train_items": str(len(items))}
    if heldout_path is not None:
        heldout = load_items(heldout_path)
        _, found = evaluate(encoder.with_head(Head(weights, bias, meta)), heldout)
        threshold = outage_threshold([i.label for i in heldout], found)
        meta |= {"outage_threshold": repr(threshold),
                 "heldout_sha256": file_sha256(heldout_path)}
    if out_path is not None:
        save_head(out_path, weights, bias, **meta)
    return TrainResult(Head(weights, bias, meta), l2, cv_scores, len(items), meta["train_sha256"])


def evaluate(classifier: Classifier, items: Sequence[Item]) -> tuple[float, list[Prediction]]:
    """(macro-F1, predictions) of a classifier with a head on labelled items."""
    predictions = classifier.classify([item.text for item in items])
    return macro_f1([i.label for i in items], [p.label for p in predictions]), predictions


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aetherflow_tui.engine.veille.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=TRAIN_PATH)
    parser.add_argument("--heldout", type=Path, default=HELDOUT_PATH)
    parser.add_argument("--out", type=Path, default=HEAD_PATH)
    parser.add_argument("--l2", type=float, default=None,
                        help="L2 strength (default: chosen by 5-fold cross-validation)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    encoder = Classifier.load_encoder_only()
    result = train_head(args.train, args.out, l2=args.l2, classifier=encoder,
                        heldout_path=args.heldout)
    for l2, score in result.cv_scores.items():
        print(f"cv l2={l2:g}: macro-F1 {score:.3f}")
    print(f"trained on {result.train_items} items of {args.train} (sha256 "
          f"{result.train_sha256[:12]}), l2={result.l2:g}, wrote {args.out} "
          f"in {time.perf_counter() - started:.1f} s")
    heldout = load_items(args.heldout)
    _, predictions = evaluate(encoder.with_head(result.head), heldout)
    print(f"held-out {args.heldout}:")
    for line in format_report([i.label for i in heldout], [p.label for p in predictions]):
        print("  " + line)
    threshold = result.head.outage_threshold
    raw, total = false_outage_rate(heldout, predictions)
    alerts, _ = false_outage_rate(heldout, predictions, threshold)
    print(f"  outage alert threshold {threshold:.2f} (outage recall there "
          f"{outage_recall(heldout, predictions, threshold):.3f}); all-clear items labelled "
          f"outage: {raw}/{total}, of which would alert: {alerts}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
