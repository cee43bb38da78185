"""`make bench`: every benchmark, in one run, with ratios against same-run baselines.

    python -m bench                    # all sections
    python -m bench serving overhead   # some sections
Results are printed and written to bench-results/results.json (plots beside it).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

SECTIONS = {
    "overhead": "bench.gateway_overhead",
    "endpoints": "bench.endpoint_overhead",
    "upstream": "bench.upstream_latency",
    "decode": "bench.mlx_decode",
    "smollm2": "bench.smollm2_decode",
    "serving": "bench.serving",
    "serving-0.5b": "bench.serving_realistic",
    "embeddings": "bench.embeddings",
    "load": "bench.model_load",
    "grammar": "bench.grammar",
    "metrics": "bench.metrics_cost",
    "overload": "bench.overload",
    "kv_cache": "bench.kv_cache",
    "speculative": "bench.speculative",
}
RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def main(names: list[str]) -> None:
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections: {unknown}; choose from {sorted(SECTIONS)}")
    results = {}
    for name in names or list(SECTIONS):
        started = time.perf_counter()
        results[name] = importlib.import_module(SECTIONS[name]).run(lambda line: print(line, flush=True))
        print(f"({name}: {time.perf_counter() - started:.0f} s)\n", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {RESULTS / 'results.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
