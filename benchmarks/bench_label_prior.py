"""What the label prior costs a training run: the time and peak memory of building the model with it and without.

    python benchmarks/bench_label_prior.py

Builds the default recipe's model (packaged EfficientNet-Lite0 and MiniLM) twice, each in a fresh process so
its peak RSS is its own: with the label prior (every ImageNet class and its WordNet ancestors embedded once by
the text tower) and with `label_prior=False`. Printed: seconds to build each, the prior's share, the peak
RSS of each and the load average (the machine may be shared). Reproduces docs/benchmarks.md's "about 5 s
and 125 MiB at the start of a run".
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def child(prior: bool) -> None:
    import tinymvlm.models.factory as factory
    from tinymvlm.models.config import ModelConfig

    spent = []
    build = factory.build_label_prior

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = build(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    factory.build_label_prior = timed
    start = time.perf_counter()
    factory.create_model(ModelConfig(label_prior=prior))
    print(json.dumps({"create_s": time.perf_counter() - start, "prior_s": sum(spent),
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        child(sys.argv[2] == "on")
        return
    rows = {}
    for prior in ("on", "off"):
        out = subprocess.run([sys.executable, __file__, "_child", prior], check=True, capture_output=True, text=True)
        rows[prior] = json.loads(out.stdout.strip().splitlines()[-1])
    on, off = rows["on"], rows["off"]
    print(f"with the label prior:    {on['create_s']:.1f} s to build ({on['prior_s']:.1f} s of it the prior), "
          f"peak RSS {on['rss_mib']:.0f} MiB")
    print(f"without (--no-label-prior): {off['create_s']:.1f} s, peak RSS {off['rss_mib']:.0f} MiB")
    print(f"the prior costs {on['create_s'] - off['create_s']:.1f} s and {on['rss_mib'] - off['rss_mib']:.0f} MiB; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
