#!/usr/bin/env python3
"""Issue 17 measurements, interleaved and repeated so that a shared machine's load falls on
every arm alike (docs/commitment.md, "Measured: overheads, interleaved"):

(a) the inferencer's cost of the commitment store: `infer --request R` against
    `infer --request R --no-store`, alternated (ABAB…), at each N: decode tok/s (the manifest's
    timings) and the command's wall seconds (which include keeping the store, hashing it into
    the Merkle tree and writing it; model loading is the same in both arms), and the store's size;
(b) the verification/inference ratio of a 3-verifier trial (exp1: f32 inferencer, three f32
    verifiers) in full mode and in segment mode with c = 1, 2, 4, the four arms rotated in
    each round: Σ verifier seconds / inference seconds, and the slowest verifier / inference.

Medians over the rounds; ratios are taken within a round (same load) before the median.

    python3 scripts/measure-protocol-overhead.py [--rounds 3] [--tokens 128 1024] [--work DIR]

BIN (environment) picks the binary (default target/release/verillm-tui).
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BIN = os.environ.get("BIN", "target/release/verillm-tui")


def sh(args, **kw):
    started = time.monotonic()
    subprocess.run([BIN, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - started


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def measure_store(work, tokens, rounds):
    rows = []
    for n in tokens:
        req = os.path.join(work, f"req{n}.json")
        sh(["request", "--prompt", "Write a long story about a lighthouse keeper.",
            "--min-tokens", str(n), "--max-tokens", str(n), "--out", req])
        arms = {"store": [], "no-store": []}
        ratios, walls, store_bytes = [], [], 0
        for r in range(rounds):
            order = ["store", "no-store"] if r % 2 == 0 else ["no-store", "store"]
            got = {}
            for arm in order:
                out = os.path.join(work, f"b{n}-{arm}-{r}")
                wall = sh(["infer", "--request", req, "--out", out]
                          + (["--no-store"] if arm == "no-store" else []))
                with open(os.path.join(out, "manifest.json")) as f:
                    tps = json.load(f)["timings"]["tokens_per_s"]
                if arm == "store":
                    store_bytes = sum(os.path.getsize(p)
                                      for p in glob.glob(os.path.join(out, "states", "*")))
                got[arm] = (tps, wall)
                arms[arm].append((tps, wall))
                shutil.rmtree(out)
            ratios.append(got["store"][0] / got["no-store"][0])
            walls.append(got["store"][1] / got["no-store"][1])
            print(f"  N={n} round {r + 1}: tok/s store {got['store'][0]:.1f} / no store "
                  f"{got['no-store'][0]:.1f}; wall {got['store'][1]:.1f} / {got['no-store'][1]:.1f} s "
                  f"(load {load()})", file=sys.stderr)
        med = lambda xs: statistics.median(xs)
        spread = lambda xs: f"{med(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"
        rows.append((n, med([a[0] for a in arms["no-store"]]), med([a[0] for a in arms["store"]]),
                     spread(ratios), med([a[1] for a in arms["no-store"]]),
                     med([a[1] for a in arms["store"]]), spread(walls), store_bytes))
    print(f"\n(a) the store, {rounds} rounds alternated, medians")
    print("| N | decode tok/s without / with store | with / without, per round: median (range) "
          "| infer wall s without / with | with / without, per round | store |")
    print("|---|---|---|---|---|---|")
    for n, tn, ts, tr, wn, ws, wr, b in rows:
        print(f"| {n} | {tn:.1f} / {ts:.1f} | {tr} | {wn:.1f} / {ws:.1f} | {wr} | "
              f"{b / 1e6:.1f} MB |")


def measure_trials(work, n, rounds):
    arms = [("full", ["--mode", "full"])] + [
        (f"segment c={c}", ["--mode", "segment", "--challenge-layers", str(c),
                              # The reference prefill would run beside the other verifiers.
                              "--no-reference-prefill"]) for c in (1, 2, 4)]
    per_arm = {name: [] for name, _ in arms}
    for r in range(rounds):
        # Rotate the order each round so no arm always runs first (model files cold/warm).
        order = arms[r % len(arms):] + arms[:r % len(arms)]
        for name, extra in order:
            out = os.path.join(work, f"run-{name.replace(' ', '').replace('=', '')}-{r}")
            sh(["run", "exp1", "--trials", "1", "--min-tokens", str(n), "--max-tokens", str(n),
                "--out", out, *extra])
            [trial] = glob.glob(os.path.join(out, "trial_*.json"))
            with open(trial) as f:
                t = json.load(f)
            inference = t["inference"]["time_s"]
            seconds = [v["overhead"]["verification_time_s"] for v in t["verifiers"]]
            per_arm[name].append((inference, sum(seconds) / inference, max(seconds) / inference,
                                  statistics.median(seconds)))
            print(f"  {name} round {r + 1}: inference {inference:.2f} s, verifiers "
                  f"{', '.join(f'{s:.2f}' for s in seconds)} s, verdict "
                  f"{t['summary']['final_verdict']} (load {load()})", file=sys.stderr)
            shutil.rmtree(out)
    print(f"\n(b) exp1, 3 f32 verifiers, N = {n}, {rounds} rounds rotated, medians")
    print("| mode | inference s | verifier s (median) | Σ verifiers / inference | slowest / inference |")
    print("|---|---|---|---|---|")
    for name, _ in arms:
        xs = per_arm[name]
        med = lambda i: statistics.median(x[i] for x in xs)
        print(f"| {name} | {med(0):.2f} | {med(3):.2f} | {med(1):.2f} | {med(2):.2f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--trial-tokens", type=int, default=128)
    p.add_argument("--work", default="/tmp/measure-protocol")
    p.add_argument("--skip-store", action="store_true")
    p.add_argument("--skip-trials", action="store_true")
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    print(f"load before: {load()} ({os.cpu_count()} CPUs), binary {BIN}")
    if not a.skip_store:
        measure_store(a.work, a.tokens, a.rounds)
    if not a.skip_trials:
        measure_trials(a.work, a.trial_tokens, a.rounds)
    print(f"\nload after: {load()}")


if __name__ == "__main__":
    main()
