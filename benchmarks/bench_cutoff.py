"""The page's relevance cut-off, measured on a labelled real-photo query set.

    .venv/bin/python benchmarks/bench_cutoff.py --index IDX --queries QUERIES.json [--k 24]

QUERIES.json maps a query to the file names of its relevant photos (e.g. /tmp/proto24/queries.json,
143 real photos labelled by looking); IDX indexes those photos (`tmv index PHOTOS --index IDX`). For each
rule the table prints, summed over the queries: irrelevant results shown, relevant results hidden
(among the top k a page would show), and queries whose best relevant photo was hidden. Rules: "all k"
(what the page did); "typical + f (best - typical)", typical being the query's median score over a sample
of the collection (the page's rule with f = serve.service.RELATIVE_CUTOFF); "best - d"; absolute
--min-score values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--k", type=int, default=24)
    args = parser.parse_args()
    from tinymvlm.index import Index
    from tinymvlm.index.query_syntax import parse_query
    from tinymvlm.serve.service import RELATIVE_CUTOFF

    queries = json.load(open(args.queries, encoding="utf-8"))
    idx = Index(args.index)
    ranked, typical = {}, {}
    for query in queries:
        vector = idx.embed_query(parse_query(query))
        ranked[query] = [(h.score, os.path.basename(h.path)) for h in idx.search_vector(vector, k=args.k)]
        typical[query] = idx.searcher().typical_score(vector)
    rules = [("all k (before)", lambda q, best: -2.0)]
    rules += [(f"typical + {f:.1f}·(best - typical)" + (" [page]" if abs(f - RELATIVE_CUTOFF) < 1e-9 else ""),
               lambda q, best, f=f: typical[q] + f * (best - typical[q])) for f in (0.3, 0.4, 0.5, 0.6, 0.7)]
    rules += [(f"best - {d:.2f}", lambda q, best, d=d: best - d) for d in (0.05, 0.10, 0.15)]
    rules += [(f"min-score {s:.2f}", lambda q, best, s=s: s) for s in (0.10, 0.15, 0.20)]
    table = Table(title=f"{len(queries)} queries, top {args.k} of {idx.info()['counts']['images']} photos")
    for column in ("rule", "shown", "irrelevant shown", "relevant hidden", "queries losing their best hit"):
        table.add_column(column, justify="right")
    relevant_total = sum(len([1 for _, n in ranked[q] if n in set(queries[q])]) for q in queries)
    for name, floor_of in rules:
        shown = irrelevant = hidden = lost = 0
        for query, hits in ranked.items():
            wanted = set(queries[query])
            floor = floor_of(query, hits[0][0])
            shown_names = [n for s, n in hits if s >= floor]
            shown += len(shown_names)
            irrelevant += sum(n not in wanted for n in shown_names)
            hidden += sum(n in wanted for s, n in hits if s < floor)
            first = next((s for s, n in hits if n in wanted), None)
            lost += first is not None and first < floor
        table.add_row(name, str(shown), str(irrelevant), f"{hidden} of {relevant_total}", str(lost))
    Console(file=sys.stdout, width=140).print(table)
    idx.close()


if __name__ == "__main__":
    main()
