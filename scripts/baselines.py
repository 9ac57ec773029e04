#!/usr/bin/env python3
"""Score churnstream's test rows with three baselines and compare AUC and top-decile lift.

Input: an event history (JSONL, plain or gzip, as `churnstream generate` writes it) and the
scores CSV of `churnstream evaluate --events F --model M --churn-days 90 --scores-out S.csv`
(`customer_id,as_of,label,risk,band,baseline_recency_days`). Every baseline scores exactly those
rows: the same customers, observation dates and labels.

  churnstream   the `risk` column.
  RFM logistic  scikit-learn LogisticRegression (default C = 1, StandardScaler) on six features
                from the events up to the end of the as_of day (UTC): recency = days since the
                last purchase (since the last event of any type for a customer without a
                purchase; --rfm-recency event: since the last event of any type), tenure = as_of - first event day + 1, lifetime orders, lifetime
                revenue, orders and revenue of the 90 days ending on as_of; each log1p'd before
                standardising. Fitted on training rows built here from the events with
                churnstream's observation rule, at the observation dates (every --every-days
                after a --warmup-days warm-up, as churnstream's ObservationPlan) that lie at
                least --purge-days (default: the horizon) before the first test date, so no
                training label looks into the test period.
  BG/NBD        lifetimes BetaGeoFitter, fitted per test date on every customer's purchases up
                to the end of the as_of day (calibration: x = repeat purchases, t_x and T in
                days, continuous). Three scores: -E[purchases in the next horizon], 1 - P(alive),
                and P(no purchase in the next horizon) = 1 - P(alive) * (1 - ((alpha + T) /
                (alpha + T + h))^(r + x)) (the BG/NBD probability of the label's event for
                purchases: alive with a Gamma(r + x, alpha + T) posterior rate, or dead).
                All are reported; "BG/NBD" is the one with the best overall AUC (a choice made
                on the test rows, so slightly optimistic for BG/NBD).
  recency       churnstream's own rule, the `baseline_recency_days` column (days since the last
                event of any type, longest silent first).

churnstream's rules mirrored here (crates/churn-features/src/training.rs): observation dates
start at first event day + warmup and step by every_days while date <= last event day - horizon;
a customer is observed at day A if their first event is on or before A and their last event on
or before A is fewer than `horizon` days old (active_within_days = churn_days in the CLI); the
label is 1 when the customer has no event at all on days A+1 .. A+horizon. The script rebuilds
the label of every test row from the events and reports how many disagree with the CSV (0 is
expected: a non-zero count means the history or --churn-days do not match the evaluate run).

Setup (Python 3.11; the pins in scripts/baselines-requirements.txt install together):

    python3 -m venv ~/.cache/churnstream/venv
    ~/.cache/churnstream/venv/bin/pip install -r scripts/baselines-requirements.txt
    ~/.cache/churnstream/venv/bin/python scripts/baselines.py \
        --events data/events.jsonl --scores model/scores.csv --churn-days 90 --json out.json

The README section "Baselines on a retail history" has the whole sequence.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import warnings
from typing import Dict, List

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DAY_S = 86_400
RFM_FEATURES = [
    "recency_days",
    "tenure_days",
    "orders_lifetime",
    "revenue_lifetime",
    "orders_90d",
    "revenue_90d",
]


def open_text(path: str):
    """Plain or gzip by magic bytes, whatever the file is called (as churn_gen::open_text)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def load_events(path: str) -> pd.DataFrame:
    """customer_id, t (seconds since the epoch), day (UTC day number), purchase, amount."""
    ids: List[str] = []
    times: List[str] = []
    purchase: List[bool] = []
    amount: List[float] = []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            ids.append(ev["customer_id"])
            times.append(ev["occurred_at"])
            is_p = ev.get("type") == "purchase"
            purchase.append(is_p)
            amount.append(float(ev.get("amount") or 0.0) if is_p else 0.0)
    ts = pd.to_datetime(pd.Series(times), utc=True, format="ISO8601")
    t = ts.astype("int64").to_numpy() / 1e9
    df = pd.DataFrame(
        {
            "customer_id": pd.Categorical(ids),
            "t": t,
            "day": np.floor(t / DAY_S).astype(np.int64),
            "purchase": np.array(purchase, dtype=bool),
            "amount": np.array(amount, dtype=float),
        }
    )
    return df


def day_number(dates: pd.Series) -> np.ndarray:
    d = pd.to_datetime(dates, format="%Y-%m-%d", utc=True)
    return (d.astype("int64").to_numpy() // (DAY_S * 10**9)).astype(np.int64)


def observation_dates(first: int, last: int, warmup: int, every: int, horizon: int) -> List[int]:
    out, d = [], first + warmup
    while d <= last - horizon:
        out.append(d)
        d += every
    return out


class History:
    """Per-customer views of the events for fast as-of queries."""

    def __init__(self, ev: pd.DataFrame):
        self.ev = ev.sort_values(["customer_id", "t"], kind="stable").reset_index(drop=True)
        self.first_day = self.ev.groupby("customer_id", observed=True)["day"].min()
        self.purchases = self.ev[self.ev["purchase"]]

    def observed(self, as_of: int, horizon: int) -> pd.DataFrame:
        """Customers churnstream observes at as_of, with their label."""
        past = self.ev[self.ev["day"] <= as_of]
        g = past.groupby("customer_id", observed=True)["day"]
        last = g.max()
        obs = last[(as_of - last) < horizon].index
        future = self.ev[(self.ev["day"] > as_of) & (self.ev["day"] <= as_of + horizon)]
        active = set(future["customer_id"].unique())
        return pd.DataFrame(
            {
                "customer_id": obs.astype(str),
                "as_of": as_of,
                "label": [0 if c in active else 1 for c in obs],
            }
        )

    def labels_for(self, ids: pd.Series, as_of: int, horizon: int) -> np.ndarray:
        future = self.ev[(self.ev["day"] > as_of) & (self.ev["day"] <= as_of + horizon)]
        active = set(future["customer_id"].astype(str).unique())
        return np.array([0 if c in active else 1 for c in ids], dtype=int)

    def rfm(self, ids: pd.Series, as_of: int, recency_of: str = "purchase") -> pd.DataFrame:
        """The six RFM features as of the end of day as_of, for the customers `ids`."""
        past = self.ev[self.ev["day"] <= as_of]
        last_event = past.groupby("customer_id", observed=True)["day"].max()
        first_event = past.groupby("customer_id", observed=True)["day"].min()
        p = self.purchases[self.purchases["day"] <= as_of]
        gp = p.groupby("customer_id", observed=True)
        last_purchase = gp["day"].max()
        orders = gp.size()
        revenue = gp["amount"].sum()
        p90 = p[p["day"] > as_of - 90].groupby("customer_id", observed=True)
        orders90 = p90.size()
        revenue90 = p90["amount"].sum()
        idx = pd.Index(ids.astype(str))

        def at(s: pd.Series, fill: float) -> np.ndarray:
            s = s.copy()
            s.index = s.index.astype(str)
            return s.reindex(idx).fillna(fill).to_numpy(dtype=float)

        last_p = at(last_purchase, np.nan)
        last_e = at(last_event, np.nan)
        recency = as_of - np.where(np.isnan(last_p) | (recency_of == "event"), last_e, last_p)
        return pd.DataFrame(
            {
                "recency_days": recency,
                "tenure_days": as_of - at(first_event, np.nan) + 1,
                "orders_lifetime": at(orders, 0),
                "revenue_lifetime": at(revenue, 0),
                "orders_90d": at(orders90, 0),
                "revenue_90d": at(revenue90, 0),
            },
            index=idx,
        )

    def bgnbd_calibration(self, as_of: int) -> pd.DataFrame:
        """frequency (repeat purchases), recency t_x and age T in days, up to the end of as_of."""
        end = (as_of + 1) * DAY_S
        p = self.purchases[self.purchases["t"] < end]
        g = p.groupby("customer_id", observed=True)["t"]
        first, last, n = g.min(), g.max(), g.size()
        out = pd.DataFrame(
            {
                "frequency": (n - 1).astype(float),
                "recency": (last - first) / DAY_S,
                "T": (end - first) / DAY_S,
            }
        )
        out.index = out.index.astype(str)
        return out


def auc(y: np.ndarray, s: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def lift_top_decile(y: np.ndarray, s: np.ndarray) -> float:
    n = len(y)
    if n == 0 or y.mean() == 0:
        return float("nan")
    k = max(1, math.ceil(0.1 * n))
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def fit_bgnbd(cal: pd.DataFrame):
    from lifetimes import BetaGeoFitter

    last_err = None
    for pen in (0.0, 0.001, 0.01):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = BetaGeoFitter(penalizer_coef=pen)
                m.fit(cal["frequency"], cal["recency"], cal["T"])
            if all(np.isfinite(list(m.params_.values))):
                return m, pen
        except Exception as e:  # lifetimes raises ConvergenceError and friends
            last_err = e
    raise RuntimeError(f"BG/NBD fit failed: {last_err}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", required=True, help="event history (JSONL, plain or gzip)")
    ap.add_argument("--scores", required=True, help="scores CSV of churnstream evaluate --scores-out")
    ap.add_argument("--churn-days", type=int, default=90, help="horizon, as given to evaluate (default 90)")
    ap.add_argument("--every-days", type=int, default=7, help="days between observation dates, as given to evaluate (default 7)")
    ap.add_argument("--warmup-days", type=int, default=56, help="churnstream's observation warm-up (default 56)")
    ap.add_argument("--purge-days", type=int, default=None, help="gap between the last RFM training date and the first test date (default: --churn-days)")
    ap.add_argument("--rfm-recency", choices=["purchase", "event"], default="purchase",
                    help="RFM recency: days since the last purchase (default) or the last event")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    h = args.churn_days
    purge = h if args.purge_days is None else args.purge_days
    if purge < h:
        sys.exit(f"--purge-days {purge} < horizon {h}: training labels would overlap the test period")

    ev = load_events(args.events)
    hist = History(ev)
    scores = pd.read_csv(args.scores, dtype={"customer_id": str})
    scores["day"] = day_number(scores["as_of"])
    scores["label"] = scores["label"].astype(int)
    test_days = sorted(scores["day"].unique())
    first, last = int(ev["day"].min()), int(ev["day"].max())
    plan = observation_dates(first, last, args.warmup_days, args.every_days, h)
    missing = [d for d in test_days if d not in plan]
    if missing:
        print(f"warning: {len(missing)} test dates are not observation dates of this history "
              f"(warm-up/every-days differ?)", file=sys.stderr)

    # Sanity: the labels of the CSV are the ones the events give.
    mismatches = 0
    for d in test_days:
        rows = scores[scores["day"] == d]
        mismatches += int((hist.labels_for(rows["customer_id"], d, h) != rows["label"].to_numpy()).sum())

    # RFM logistic regression, trained before the purge gap.
    train_days = [d for d in plan if d <= test_days[0] - purge]
    if not train_days:
        sys.exit("no observation date lies --purge-days before the first test date: history too short")
    parts = []
    for d in train_days:
        obs = hist.observed(d, h)
        x = hist.rfm(obs["customer_id"], d, args.rfm_recency)
        parts.append((x.to_numpy(), obs["label"].to_numpy()))
    x_train = np.vstack([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    rfm_model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    rfm_model.fit(np.log1p(np.maximum(x_train, 0.0)), y_train)

    scores["rfm"] = np.nan
    scores["bg_expected"] = np.nan
    scores["bg_p_alive"] = np.nan
    scores["bg_p_none"] = np.nan
    bg_fits = []
    for d in test_days:
        m = scores["day"] == d
        ids = scores.loc[m, "customer_id"]
        x = hist.rfm(ids, d, args.rfm_recency).to_numpy()
        scores.loc[m, "rfm"] = rfm_model.predict_proba(np.log1p(np.maximum(x, 0.0)))[:, 1]
        cal = hist.bgnbd_calibration(d)
        bg, pen = fit_bgnbd(cal)
        bg_fits.append({"as_of": str(pd.Timestamp(d * DAY_S, unit="s").date()), "penalizer": pen,
                        **{k: float(v) for k, v in bg.params_.items()}})
        c = cal.reindex(pd.Index(ids.astype(str)))
        has = c["frequency"].notna().to_numpy()
        exp_n = np.zeros(len(c))
        alive = np.zeros(len(c))
        cc = c[has]
        exp_n[has] = bg.conditional_expected_number_of_purchases_up_to_time(
            h, cc["frequency"], cc["recency"], cc["T"]).to_numpy()
        alive[has] = np.asarray(bg.conditional_probability_alive(cc["frequency"], cc["recency"], cc["T"]))
        r_, a_ = float(bg.params_["r"]), float(bg.params_["alpha"])
        quiet = np.ones(len(c))
        quiet[has] = 1.0 - alive[has] * (1.0 - ((a_ + cc["T"].to_numpy()) / (a_ + cc["T"].to_numpy() + h))
                                         ** (r_ + cc["frequency"].to_numpy()))
        # Risk scores: higher = more likely to churn. No purchase yet: the riskiest.
        scores.loc[m, "bg_expected"] = -exp_n
        scores.loc[m, "bg_p_alive"] = 1.0 - alive
        scores.loc[m, "bg_p_none"] = quiet

    y = scores["label"].to_numpy()
    cols = {
        "churnstream": "risk",
        "rfm_logistic": "rfm",
        "bgnbd_expected": "bg_expected",
        "bgnbd_p_alive": "bg_p_alive",
        "bgnbd_p_no_purchase": "bg_p_none",
        "recency": "baseline_recency_days",
    }
    overall = {k: {"auc": auc(y, scores[c].to_numpy()), "lift_top_decile": lift_top_decile(y, scores[c].to_numpy())}
               for k, c in cols.items()}
    bg_keys = ("bgnbd_expected", "bgnbd_p_alive", "bgnbd_p_no_purchase")
    bg_names = {"bgnbd_expected": "-E[purchases]", "bgnbd_p_alive": "1-P(alive)",
                "bgnbd_p_no_purchase": "P(no purchase)"}
    best_bg = max(bg_keys, key=lambda k: overall[k]["auc"])
    per_date = []
    for d in test_days:
        r = scores[scores["day"] == d]
        yd = r["label"].to_numpy()
        row: Dict[str, object] = {"as_of": str(r["as_of"].iloc[0]), "rows": int(len(r)),
                                  "churn_rate": float(yd.mean())}
        for k, c in cols.items():
            row[k] = {"auc": auc(yd, r[c].to_numpy()), "lift_top_decile": lift_top_decile(yd, r[c].to_numpy())}
        per_date.append(row)

    result = {
        "events": args.events,
        "scores": args.scores,
        "horizon_days": h,
        "test_rows": int(len(scores)),
        "test_dates": len(test_days),
        "churn_rate": float(y.mean()),
        "label_mismatches": mismatches,
        "rfm_training": {"dates": len(train_days), "rows": int(len(y_train)),
                         "first": str(pd.Timestamp(train_days[0] * DAY_S, unit="s").date()),
                         "last": str(pd.Timestamp(train_days[-1] * DAY_S, unit="s").date()),
                         "purge_days": purge, "features": RFM_FEATURES,
                         "recency_of": args.rfm_recency},
        "bgnbd_score": best_bg,
        "bgnbd_fits": bg_fits,
        "overall": overall,
        "per_date": per_date,
    }

    names = [("churnstream", "churnstream"), ("rfm_logistic", "RFM logistic"),
             ("bgnbd", f"BG/NBD ({bg_names[best_bg]})")] + \
            [(k, f"  BG/NBD {bg_names[k]}") for k in bg_keys] + [("recency", "recency")]

    def cell(block: Dict[str, Dict[str, float]], key: str, what: str) -> str:
        v = block[best_bg if key == "bgnbd" else key][what]
        return "   -  " if v != v else f"{v:6.4f}" if what == "auc" else f"{v:6.2f}"

    print(f"{len(scores)} test rows over {len(test_days)} dates, churn rate {y.mean():.3f}, "
          f"label mismatches {mismatches}; RFM trained on {len(y_train)} rows of {len(train_days)} "
          f"dates up to {result['rfm_training']['last']} (purge {purge} d)")
    header = f"{'model':24} {'AUC':>7} {'lift@10%':>9}  " + " ".join(
        f"{r['as_of'][5:]:>6}" for r in per_date)
    print(header)
    for key, label in names:
        per = " ".join(cell(r, key, "auc") for r in per_date)
        print(f"{label:24} {cell(overall, key, 'auc'):>7} {cell(overall, key, 'lift_top_decile'):>9}  {per}")
    print("(per-date columns: AUC on the rows of that as_of date, MM-DD)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, allow_nan=True)
            f.write("\n")


if __name__ == "__main__":
    main()
