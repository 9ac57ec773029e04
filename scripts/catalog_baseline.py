#!/usr/bin/env python3
"""The per-action baseline of "Fighting Churn With Data" next to churnstream, on the same rows.

Input: the training set churnstream exported with a metric catalog
(`churnstream --config CATALOG train --events F --churn cancel --export-training-set T.csv`):
one row per customer x observation date with every raw feature, `label` and `split`
(train/valid/test/purged, churnstream's purged time split). The baselines use exactly those rows
and that split:

  per-action logistic   scikit-learn LogisticRegression on the per-action 28-day counts (the
                        book's method: log1p, StandardScaler), columns given by --counts
                        (default: every column ending in `_28d` that is a catalog count metric,
                        i.e. listed with --counts or matched by --counts-regex). C is chosen on
                        the validation rows from a grid, then the model is refit on train +
                        validation and scored on the test rows.
  per-action + ratios   the same on --counts plus --ratios columns (identity, standardised).
  built-in features     the same on every non-catalog column churnstream exported (its registry).

churnstream's own test AUC is read from the `train` summary (--summary, the JSON it prints) or
given with --churnstream-auc. Prints a JSON object (also to --json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

GRID = [0.001, 0.01, 0.1, 1.0, 10.0]


def fit_auc(df: pd.DataFrame, cols: list[str], log: set[str]) -> dict:
    x = df[cols].astype(float).copy()
    for c in cols:
        if c in log:
            x[c] = np.log1p(x[c].clip(lower=0))
    y = df["label"].astype(int).to_numpy()
    split = df["split"].to_numpy()
    tr, va, te = split == "train", split == "valid", split == "test"
    best = None
    for c in GRID:
        sc = StandardScaler().fit(x[tr])
        m = LogisticRegression(C=c, max_iter=5000).fit(sc.transform(x[tr]), y[tr])
        auc = roc_auc_score(y[va], m.predict_proba(sc.transform(x[va]))[:, 1])
        if best is None or auc > best[1]:
            best = (c, auc)
    tv = tr | va
    sc = StandardScaler().fit(x[tv])
    m = LogisticRegression(C=best[0], max_iter=5000).fit(sc.transform(x[tv]), y[tv])
    p = m.predict_proba(sc.transform(x[te]))[:, 1]
    return {
        "columns": len(cols),
        "chosen_C": best[0],
        "valid_auc": round(best[1], 4),
        "test_auc": round(roc_auc_score(y[te], p), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--training-set", required=True)
    ap.add_argument("--counts", default="posts_28d,likes_28d,messages_28d,replies_28d,new_friends_28d,unfriends_28d,dislikes_28d,ad_views_28d")
    ap.add_argument("--ratios", default="likes_per_post_28d,replies_per_message_28d,unfriends_per_new_friend_28d,dislikes_per_like_28d,ad_views_per_post_28d")
    ap.add_argument("--catalog-regex", default=None, help="columns of the catalog (excluded from 'built-in'); default: --counts, --ratios and everything after the last built-in column `downgrade_before_decline`")
    ap.add_argument("--summary", help="JSON printed by `churnstream train` (test.auc)")
    ap.add_argument("--default-summary", help="JSON printed by `churnstream train` without the catalog")
    ap.add_argument("--json")
    a = ap.parse_args()

    df = pd.read_csv(a.training_set)
    df = df[df["split"] != "purged"]
    counts = [c for c in a.counts.split(",") if c]
    ratios = [c for c in a.ratios.split(",") if c]
    cols = list(df.columns)
    last_builtin = cols.index("downgrade_before_decline")
    builtin = cols[2 : last_builtin + 1]
    if a.catalog_regex:
        builtin = [c for c in builtin if not re.search(a.catalog_regex, c)]
    out = {
        "rows": {s: int((df["split"] == s).sum()) for s in ["train", "valid", "test"]},
        "test_churn_rate": round(float(df.loc[df["split"] == "test", "label"].mean()), 4),
        "per_action_logistic": fit_auc(df, counts, set(counts)),
        "per_action_plus_ratios_logistic": fit_auc(df, counts + ratios, set(counts)),
        "builtin_features_logistic": fit_auc(df, builtin, set()),
    }
    for key, path in [("churnstream_catalog", a.summary), ("churnstream_default", a.default_summary)]:
        if path:
            with open(path) as f:
                s = json.load(f)
            out[key] = {"test_auc": round(s["test"]["auc"], 4)}
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
