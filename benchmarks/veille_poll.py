"""Veille polling (issue 7): 100 feeds polled at once, then polled again with validators.

A feed server on 127.0.0.1 (tests/support/feed_server.py) serves N distinct RSS feeds
(/feed/<n>.xml), each a realistic 20-item feed (titles and HTML summaries with prices,
about 12 kB) with an ETag and a Last-Modified; every 4th answers only after a 50 ms delay.
One httpx client (trust_env=False), as the cockpit holds one.

1. Cold poll: one poll_all over the N sources with no validators (concurrency 32, the
   default): every feed fetched in full and parsed off the event loop. Measured: wall time
   from the call to the last result, items parsed, the slowest source. Target: <= 5 s.
2. Conditional poll: the same poll_all again, each source with the validators the first
   poll returned: every answer must be a 304 (counted by the server), no body parsed.
   Shown side by side with the cold poll, as a ratio.

Run from the repo root: python benchmarks/veille_poll.py [--feeds 100] [--items 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from aetherflow_tui.engine.veille.sources import PollResult, Source, poll_all  # noqa: E402
from tests.support.feed_server import FeedServer, feed_xml  # noqa: E402

TARGET_S = 5.0
SLOW_EVERY = 4
DELAY_S = 0.05


async def timed_poll(client: httpx.AsyncClient, sources: list[Source],
                     validators: dict) -> tuple[float, list[PollResult]]:
    started = time.perf_counter()
    results = await poll_all(client, sources, validators)
    return time.perf_counter() - started, results


def describe(results: list[PollResult]) -> str:
    durations = [r.duration_s for r in results]
    return (f"per source: median {1000 * statistics.median(durations):.0f} ms, slowest "
            f"{1000 * max(durations):.0f} ms")


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=100)
    parser.add_argument("--items", type=int, default=20)
    args = parser.parse_args()

    with FeedServer() as server:
        urls = server.serve_many(args.feeds, items=args.items, slow_every=SLOW_EVERY,
                                 delay_s=DELAY_S)
        sources = [Source(f"feed-{n}", url, "feed") for n, url in enumerate(urls)]
        size = len(feed_xml("provider0", args.items))
        print(f"{args.feeds} feeds of {args.items} items (~{size / 1000:.0f} kB each) on "
              f"127.0.0.1, every {SLOW_EVERY}th delayed {1000 * DELAY_S:.0f} ms; one "
              "poll_all, concurrency 32")
        async with httpx.AsyncClient(trust_env=False) as client:
            cold_s, cold = await timed_poll(client, sources, {})
            validators = {r.source.name: r.validators for r in cold}
            requests_before = server.hits()
            warm_s, warm = await timed_poll(client, sources, validators)
            not_modified = server.not_modified()
            requests = server.hits() - requests_before

    items = sum(len(r.items) for r in cold)
    errors = [f"{r.source.name}: {r.error}" for r in cold + warm if r.outcome == "error"]
    cold_ok = (cold_s <= TARGET_S and all(r.outcome == "new" for r in cold)
               and items == args.feeds * args.items)
    warm_ok = (all(r.outcome == "not_modified" and not r.items for r in warm)
               and not_modified == requests == args.feeds)
    print(f"1. cold poll: {cold_s:.2f} s for {args.feeds} feeds, {items} items parsed "
          f"({items / cold_s:.0f} items/s); {describe(cold)}")
    print(f"   target <= {TARGET_S:g} s, every feed new, every item read: "
          f"{'PASS' if cold_ok else 'FAIL'}")
    print(f"2. conditional poll: {warm_s:.2f} s, {not_modified}/{requests} answers 304, "
          f"{sum(len(r.items) for r in warm)} items; {describe(warm)}")
    print(f"   cold / conditional: {cold_s:.2f} s / {warm_s:.2f} s = "
          f"{cold_s / warm_s:.1f}x; every answer a 304: {'PASS' if warm_ok else 'FAIL'}")
    for error in errors[:5]:
        print(f"   error: {error}")
    ok = cold_ok and warm_ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
