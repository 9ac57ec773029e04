#!/usr/bin/env python3
"""Judge the reasons of an alerts file against the generator's labelled churn causes.

For alert files written before reason groups existed (per-feature reasons, no `group`): each
reason's feature is mapped to its group with the feature registry (`churnstream features`), the
same rule `churnstream backtest --labels` applies (crates/churn-pipeline/src/reasons.rs,
reason_group). Prints the cause x top-reason-group table for every alerted churner and for those
warned before the churn. Standard library only.

    churnstream features --out features.csv
    scripts/reasons_vs_cause.py alerts.jsonl labels.csv features.csv
"""
import collections
import csv
import json
import sys

CAUSE_GROUP = {
    "disengaged": "engagement_decline",
    "detractor": "detractor_feedback",
    "complaints": "complaints_support",
    "downgrade": "plan_downgrade",
    "price": "price_sensitivity",
}
# The playbook rows (crates/churn-pipeline/src/policy.rs, playbook).
PLAYBOOK = {
    "detractor_feedback": {"feedback_call"},
    "complaints_support": {"service_recovery"},
    "price_sensitivity": {"targeted_offer"},
    "plan_downgrade": {"targeted_offer"},
}
SYMPTOM_ROW = {"loyalty_reward", "reactivation_email", "engagement_nudge"}
AT_RISK = "com.churnstream.customer.at_risk"


def main(alerts_path, labels_path, features_path):
    group_of = {r["name"]: r["group"] for r in csv.DictReader(open(features_path))}
    first = {}
    for line in open(alerts_path):
        e = json.loads(line)
        if e.get("type") != AT_RISK:
            continue
        d = e["data"]
        c = d["customer_id"]
        if c not in first or d["as_of"] < first[c]["as_of"]:
            first[c] = d
    labels = {r["customer_id"]: r for r in csv.DictReader(open(labels_path))}
    for cohort in ("every alerted churner", "warned before churn"):
        top = collections.defaultdict(collections.Counter)
        n, top3, act = collections.Counter(), collections.Counter(), collections.Counter()
        for c, d in first.items():
            lab = labels.get(c)
            if not lab or lab["churned"] != "true" or lab["cause"] not in CAUSE_GROUP:
                continue
            if cohort.startswith("warned") and not d["as_of"] < lab["churn_at"]:
                continue
            cause, want = lab["cause"], CAUSE_GROUP[lab["cause"]]
            groups = [r.get("group") or group_of.get(r["feature"], "?") for r in d["reasons"]]
            top[cause][groups[0] if groups else "none"] += 1
            n[cause] += 1
            top3[cause] += want in groups[:3]
            act[cause] += d["recommended_action"] in PLAYBOOK.get(want, SYMPTOM_ROW)
        total = sum(n.values())
        m1 = sum(top[k][CAUSE_GROUP[k]] for k in n)
        pct = lambda a, b: f"{100 * a / b:.1f} %" if b else "–"
        print(f"## {cohort}: {total} churners; top reason group = cause {m1} ({pct(m1, total)}), "
              f"in top 3 {sum(top3.values())} ({pct(sum(top3.values()), total)}), "
              f"action = playbook row {sum(act.values())} ({pct(sum(act.values()), total)})")
        cols = sorted({g for k in top for g in top[k]})
        print("| cause | churners | " + " | ".join(cols) + " | top = cause | in top 3 | action |")
        print("|---|---|" + "---|" * len(cols) + "---|---|---|")
        for k in sorted(n):
            cells = " | ".join(str(top[k][g]) for g in cols)
            print(f"| {k} | {n[k]} | {cells} | {pct(top[k][CAUSE_GROUP[k]], n[k])} | "
                  f"{pct(top3[k], n[k])} | {pct(act[k], n[k])} |")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
