"""The veille classifier (issue 7): quality, throughput, load time and memory, in one run.

1. Quality. The shipped head (data/head.npz) on the held-out split (data/heldout.jsonl,
   never trained on): macro-F1 over the five labels and per-label F1. Target: >= 0.85.
   Beside it (issue 14), the false-outage rate: the share of the held-out all-clear notices
   (tagged all_clear: resolved, completed maintenance, all systems operational, EN and FR)
   labelled outage, at any confidence. Target: 0. And the outage alert threshold the head
   carries (measured on the held-out split by train.py), with the share of the held-out
   outages labelled outage at or above it, which still alert.
2. Throughput. Classifier.classify() on N realistic items (train + held-out texts, repeated
   to N, shuffled) in one call, as the worker does with a poll's items, after a warm-up of
   64 items, on this machine's cores (intra-op threads = os.cpu_count()), in runs of
   BATCH_SIZE texts (8, the default). Target: >= 200 items/s. Beside it, the same items one
   text per run, and the ratio.
3. Load time. A fresh interpreter (so the imports of numpy, onnxruntime and tokenizers
   count): from before `import aetherflow_tui.engine.veille.classifier` to a loaded
   Classifier (onnxruntime session, tokenizer, head). Target: <= 1.5 s.
4. Memory. In that fresh interpreter: RSS (psutil) before the import, then after loading
   and classifying every item of the dataset once. Target: increase <= 150 MB.

The machine is shared (2 cores): the load average at the start is printed, a busy core
shows in the items/s. Run from the repo root:
python benchmarks/veille_classifier.py [--n 2000] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TARGET_F1 = 0.85
TARGET_ITEMS_S = 200.0
TARGET_LOAD_S = 1.5
TARGET_RSS_MB = 150.0


def child(batch_size: int) -> dict[str, float]:
    """Runs in a fresh interpreter: load time and RSS increase, imports included."""
    import psutil

    process = psutil.Process()
    rss0 = process.memory_info().rss
    started = time.perf_counter()
    from aetherflow_tui.engine.veille.classifier import Classifier

    classifier = Classifier.load()
    load_s = time.perf_counter() - started
    from aetherflow_tui.engine.veille.train import HELDOUT_PATH, TRAIN_PATH, load_items

    texts = [i.text for i in load_items(TRAIN_PATH) + load_items(HELDOUT_PATH)]
    classifier.classify(texts, batch_size)
    rss1 = process.memory_info().rss
    return {"load_s": load_s, "rss_mb": (rss1 - rss0) / 2**20, "rss0_mb": rss0 / 2**20,
            "rss1_mb": rss1 / 2**20, "items": len(texts)}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000, help="items for the throughput run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from aetherflow_tui.engine.veille.classifier import BATCH_SIZE, MAX_TOKENS

    batch_size = args.batch_size or BATCH_SIZE
    if args.child:
        print(json.dumps(child(batch_size)))
        return 0

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} cores, load average {load:.2f} at the start; max {MAX_TOKENS} "
          f"tokens per item, {batch_size} text(s) per run", flush=True)
    results: list[bool] = []

    # 3 and 4 first, in a fresh interpreter, before this process heats the caches.
    out = subprocess.run([sys.executable, __file__, "--child", "--batch-size", str(batch_size)],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    if out.returncode != 0:
        print(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "child failed")
        return 1
    fresh = json.loads(out.stdout.strip().splitlines()[-1])

    from aetherflow_tui.engine.veille.classifier import Classifier
    from aetherflow_tui.engine.veille.train import (
        HELDOUT_PATH,
        TRAIN_PATH,
        evaluate,
        false_outage_rate,
        format_report,
        load_items,
        outage_recall,
    )

    classifier = Classifier.load()
    heldout = load_items(HELDOUT_PATH)
    f1, predictions = evaluate(classifier, heldout)
    ok = f1 >= TARGET_F1
    results.append(ok)
    print(f"[1. quality] held-out split, {len(heldout)} items")
    for line in format_report([i.label for i in heldout], [p.label for p in predictions]):
        print("  " + line)
    print(f"  macro-F1 {f1:.3f} (target >= {TARGET_F1:g}) {verdict(ok)}", flush=True)
    threshold = classifier.head.outage_threshold if classifier.head else 0.0
    labelled, clear = false_outage_rate(heldout, predictions)
    alerting, _ = false_outage_rate(heldout, predictions, threshold)
    ok = clear > 0 and labelled == 0
    results.append(ok)
    print(f"  false-outage rate on all-clear items: {labelled}/{clear} = "
          f"{labelled / max(1, clear):.3f} labelled outage, {alerting}/{clear} above the "
          f"threshold (target 0) {verdict(ok)}")
    print(f"  outage alert threshold {threshold:.2f}: "
          f"{outage_recall(heldout, predictions, threshold):.3f} of the held-out outages "
          f"alert", flush=True)

    pool = [i.text for i in load_items(TRAIN_PATH) + heldout]
    texts = (pool * (args.n // len(pool) + 1))[:args.n]
    random.Random(0).shuffle(texts)
    classifier.classify(texts[:64], batch_size)  # warm-up
    started_cpu, started = time.process_time(), time.perf_counter()
    classifier.classify(texts, batch_size)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    rate = len(texts) / wall
    ok = rate >= TARGET_ITEMS_S
    results.append(ok)
    mean_chars = sum(map(len, texts)) / len(texts)
    print(f"[2. throughput] {len(texts)} items (mean {mean_chars:.0f} characters), "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU ({cpu / wall:.2f} cores busy)")
    print(f"  {rate:.0f} items/s (target >= {TARGET_ITEMS_S:g}) {verdict(ok)}", flush=True)
    # Side by side, in the same run: one text per onnxruntime run (labels then depend on
    # the text alone, see classifier.BATCH_SIZE).
    reference = 1 if batch_size != 1 else 8
    started = time.perf_counter()
    classifier.classify(texts, reference)
    other = len(texts) / (time.perf_counter() - started)
    print(f"  beside it, in runs of {reference} text(s): {other:.0f} items/s "
          f"(batched / reference = {rate / other:.2f}x)", flush=True)

    ok = fresh["load_s"] <= TARGET_LOAD_S
    results.append(ok)
    print("[3. load] fresh interpreter, imports + onnxruntime session + tokenizer + head")
    print(f"  {fresh['load_s']:.2f} s (target <= {TARGET_LOAD_S:g} s) {verdict(ok)}")
    ok = fresh["rss_mb"] <= TARGET_RSS_MB
    results.append(ok)
    print(f"[4. memory] fresh interpreter, RSS before import vs after load + "
          f"{fresh['items']:.0f} items")
    print(f"  +{fresh['rss_mb']:.0f} MB ({fresh['rss0_mb']:.0f} -> {fresh['rss1_mb']:.0f} MB) "
          f"(target <= {TARGET_RSS_MB:g} MB) {verdict(ok)}")
    ok = all(results)
    print(verdict(ok), f"(targets: macro-F1 >= {TARGET_F1:g}, false-outage rate 0, "
          f">= {TARGET_ITEMS_S:g} items/s, "
          f"load <= {TARGET_LOAD_S:g} s, RSS <= +{TARGET_RSS_MB:g} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
