#!/usr/bin/env python3
"""Decode speed of verillm-tui and llama.cpp side by side, measured in one run (issue 19).

Same GGUF, same chat prompt (bench's "What is the capital of France?" through the GGUF's own
chat template), greedy, the same number of new tokens, 1 and 2 threads. The two alternate,
`--reps` times each, and the medians are compared, so a neighbour's load hits both alike.
Kept out of `make test`: it needs llama-cpp-python (a ~15 min native build), e.g.
  python -m venv /work/venv-llama && CMAKE_ARGS="-DGGML_NATIVE=ON" \
      /work/venv-llama/bin/pip install llama-cpp-python==0.3.36
Usage:
  /work/venv-llama/bin/python scripts/llama-side-by-side.py [--reps 3] [--threads 1,2] [--ab]
Prints a Markdown table (for the README) and, with --json FILE, writes every sample.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT = "What is the capital of France?"  # src/bench.rs BENCH_PROMPT
NEW_TOKENS = 128  # bench decodes 128 tokens


def llama_decode(gguf, threads, new_tokens):
    import jinja2
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=512, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=False)
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        sys.exit(f"{gguf}: no tokenizer.chat_template in the GGUF metadata")
    text = jinja2.Environment().from_string(template).render(
        messages=[{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    started = time.perf_counter()
    first = None
    count = 0
    # generate() evaluates the prompt before the first token; greedy = temp 0. EOS does not
    # stop it, so every run decodes the same count, like bench (min_new_tokens).
    for _tok in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == new_tokens:
            break
    end = time.perf_counter()
    return {
        "prompt_tokens": len(ids),
        "prefill_tokens_per_s": len(ids) / (first - started),
        # The first token comes with the prefill; the other new_tokens-1 are decode steps.
        "decode_tokens_per_s": (new_tokens - 1) / (end - first),
    }


def ours_decode(binary, threads, candle=False):
    # VERILLM_CANDLE_KERNELS=1: candle's kernels and ops (no fast decode step), the "before".
    env = dict(os.environ, VERILLM_CANDLE_KERNELS="1" if candle else "0")
    out = subprocess.run(
        [binary, "bench", "--json", "--threads", str(threads), "--ratio-at", "8",
         "--long-prompt", "0"],
        check=True, capture_output=True, text=True, env=env)
    report = json.loads(out.stdout)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", default=os.path.expanduser(
        "~/.cache/verillm-tui/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--binary", default="target/release/verillm-tui")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write every sample here")
    ap.add_argument("--ab", action="store_true",
                    help="also run ours with VERILLM_CANDLE_KERNELS=1 (the before) each time")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    samples = {t: {"native": [], "full": [], "llama": [], "bandwidth_fraction": [],
                   "native_candle": [], "full_candle": [],
                   "native_prompt": None, "llama_prompt": None} for t in threads}
    for rep in range(args.reps):
        for t in threads:
            r = ours_decode(args.binary, t)
            for d in r["decode"]:
                samples[t][d["precision"]].append(d["decode_tokens_per_s"])
                if d["precision"] == "native":
                    samples[t]["native_prompt"] = d["prompt_tokens"]
            frac = r.get("memory_bandwidth", {}) or {}
            if frac.get("full_decode_fraction") is not None:
                samples[t]["bandwidth_fraction"].append(frac["full_decode_fraction"])
            if args.ab:
                for d in ours_decode(args.binary, t, candle=True)["decode"]:
                    samples[t][d["precision"] + "_candle"].append(d["decode_tokens_per_s"])
            ll = llama_decode(args.gguf, t, NEW_TOKENS)
            samples[t]["llama"].append(ll["decode_tokens_per_s"])
            samples[t]["llama_prompt"] = ll["prompt_tokens"]
            print(f"rep {rep + 1} threads {t}: native {samples[t]['native'][-1]:.1f}, "
                  f"full {samples[t]['full'][-1]:.1f}, llama.cpp {ll['decode_tokens_per_s']:.1f} "
                  "tok/s", file=sys.stderr)
    med = {t: {k: statistics.median(v) for k, v in s.items() if isinstance(v, list) and v}
           for t, s in samples.items()}
    load = os.getloadavg()
    print(f"decode tok/s, {NEW_TOKENS} new tokens, median of {args.reps} alternating runs; "
          f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; prompt "
          f"{samples[threads[0]]['native_prompt']} tokens (ours) / "
          f"{samples[threads[0]]['llama_prompt']} (llama.cpp)\n")
    print("| decode tok/s | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads)
          + " |")
    print("|---|" + "---|" * len(threads))
    rows = [("verillm-tui native Q4_1, with capture", "native"),
            ("verillm-tui full f32, with capture", "full"),
            ("llama.cpp (llama-cpp-python 0.3.36)", "llama")]
    if args.ab:
        rows[2:2] = [("before (VERILLM_CANDLE_KERNELS=1): native", "native_candle"),
                     ("before (VERILLM_CANDLE_KERNELS=1): full", "full_candle")]
    for label, key in rows:
        print(f"| {label} | " + " | ".join(f"{med[t][key]:.1f}" for t in threads) + " |")
    print("| native ÷ llama.cpp | " + " | ".join(
        f"{med[t]['native'] / med[t]['llama']:.2f}×" for t in threads) + " |")
    if args.ab:
        print("| native after ÷ before | " + " | ".join(
            f"{med[t]['native'] / med[t]['native_candle']:.2f}×" for t in threads) + " |")
        print("| full after ÷ before | " + " | ".join(
            f"{med[t]['full'] / med[t]['full_candle']:.2f}×" for t in threads) + " |")
    if len(threads) > 1:
        a, b = threads[0], threads[1]
        print(f"\nfrom {a} to {b} threads: native {med[b]['native'] / med[a]['native']:.2f}×, "
              f"full {med[b]['full'] / med[a]['full']:.2f}×, llama.cpp "
              f"{med[b]['llama'] / med[a]['llama']:.2f}×; full decode ÷ streaming read "
              + ", ".join(f"{med[t]['bandwidth_fraction']:.0%} ({t})" for t in threads
                          if 'bandwidth_fraction' in med[t]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": samples, "median": med, "loadavg": load}, f, indent=1)


if __name__ == "__main__":
    main()
