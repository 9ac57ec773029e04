#!/usr/bin/env python3
"""Convert public non-contractual purchase histories into churnstream purchase events.

An evaluation aid, not part of the product: it turns real transaction logs that nobody on this
project wrote into the JSONL contract of the `purchases` topic (README, "Train on your own
events"; crates/churn-events/schemas/purchases.schema.json), so that `churnstream validate`,
`train` and `evaluate` can be run on them. Standard library only (plus openpyxl for .xlsx input).
The data files stay out of the repository: keep them under ~/.cache/churnstream/realdata/.

Usage:

    scripts/realdata.py cdnow IN OUT.jsonl.gz
    scripts/realdata.py online-retail IN OUT.jsonl.gz [--dayfirst] [--sheet NAME]

    # e.g.
    D=~/.cache/churnstream/realdata
    python3 scripts/realdata.py cdnow $D/CDNOW_master.txt $D/cdnow.jsonl.gz
    python3 scripts/realdata.py online-retail $D/online_retail.csv $D/online_retail.jsonl.gz
    churnstream validate --events $D/cdnow.jsonl.gz
    churnstream train --events $D/cdnow.jsonl.gz --churn-days 90 --out /tmp/rd/cdnow/model.json
    churnstream evaluate --events $D/cdnow.jsonl.gz --model /tmp/rd/cdnow/model.json \
        --churn-days 90 --scores-out /tmp/rd/cdnow/scores.csv

OUT ending in .gz is written gzip-compressed (mtime 0, so reruns are byte-identical); anything
else is written as plain JSONL. A JSON summary (rows read, rows skipped by reason, events,
customers, first and last event) goes to stderr.

Inputs and rules:

cdnow     CDNOW_master.txt (Fader & Hardie): whitespace-separated `customer_id YYYYMMDD n_cds
          dollars`, one row per customer and day. One event per row (two rows of one customer on
          one day stay two events): event_id = order_id = "cdnow-<data row number, 1-based>",
          customer_id as in the file (e.g. "00001"), occurred_at = that day at 12:00:00Z (the
          file has no time of day), amount = dollars, items = n_cds (as is, >= 0), currency USD.
          Dates are taken as they are in the file (a copy may have its years shifted).

online-retail
          UCI Online Retail (InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
          CustomerID, Country) or Online Retail II (Invoice, ..., Price, Customer ID, Country),
          as .csv (UTF-8 or Latin-1) or .xlsx (every sheet, or --sheet NAME). One event per
          invoice and customer: amount = sum of Quantity x Price over its lines (exact decimal
          sum), items = sum of Quantity clamped to >= 1, order_id = the invoice number,
          event_id = "online-retail-<invoice>-<customer>", customer_id = Customer ID without a
          trailing ".0", currency GBP, occurred_at = InvoiceDate read as UTC (the file's own
          clock time; an invoice's earliest line time). Skipped: lines without Customer ID,
          cancellations (invoice starting with "C"), and invoices whose total is <= 0.
          Online Retail II's two sheets may share invoices: an invoice keeps only the lines of
          the first sheet (or, in a CSV, the first stretch before the clock goes back more than
          a day) it appears in; the others are counted as skipped.
          InvoiceDate may be ISO ("2010-12-01 08:26:00") or "M/D/YYYY H:MM" / "M/D/YY H:MM"
          (month first, as in the UCI/Kaggle CSV exports; --dayfirst for D/M/YYYY copies).

Events are sorted by occurred_at, ties in input order (`backtest` and `replay` read files in
order).
"""

import argparse
import csv
import gzip
import io
import json
import sys
from collections import Counter
from datetime import datetime
from decimal import Decimal, InvalidOperation

NOON = "T12:00:00Z"


def open_out(path):
    raw = open(path, "wb")
    if path.endswith(".gz"):
        # filename="" and mtime=0: no name or time in the header, byte-identical reruns.
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        return io.TextIOWrapper(gz, encoding="utf-8", newline="\n"), (gz, raw)
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n"), (raw,)


def write_events(events, out_path, summary):
    events.sort(key=lambda e: e["occurred_at"])  # stable: ties keep the input order
    ids = Counter(e["event_id"] for e in events)
    dup = [k for k, n in ids.items() if n > 1]
    if dup:
        sys.exit(f"duplicate event_id (first: {dup[0]}); refusing to write")
    text, closers = open_out(out_path)
    for e in events:
        text.write(json.dumps(e, separators=(",", ":"), ensure_ascii=False))
        text.write("\n")
    text.flush()
    text.detach()
    for c in closers:
        c.close()
    summary.update(
        events=len(events),
        customers=len({e["customer_id"] for e in events}),
        first_event=events[0]["occurred_at"] if events else None,
        last_event=events[-1]["occurred_at"] if events else None,
        out=out_path,
    )
    print(json.dumps(summary, indent=2), file=sys.stderr)


def number(d):
    """A Decimal as a JSON number: integral values as int, others as the shortest float."""
    return int(d) if d == d.to_integral_value() else float(d)


# ---------------------------------------------------------------------------------------- CDNOW


def cdnow(args):
    events, skipped, rows = [], Counter(), 0
    with open(args.input, encoding="ascii", newline="") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            rows += 1
            if len(parts) != 4:
                skipped["wrong_column_count"] += 1
                continue
            cust, day, ncds, dollars = parts
            try:
                date = datetime.strptime(day, "%Y%m%d").date()
                items = int(ncds)
                amount = Decimal(dollars)
            except (ValueError, InvalidOperation):
                skipped["unparsable"] += 1
                continue
            if items < 0 or amount < 0:
                skipped["negative"] += 1
                continue
            oid = f"cdnow-{rows}"
            events.append(
                {
                    "event_id": oid,
                    "customer_id": cust,
                    "occurred_at": date.isoformat() + NOON,
                    "type": "purchase",
                    "order_id": oid,
                    "amount": number(amount),
                    "currency": "USD",
                    "items": items,
                }
            )
    write_events(events, args.output, {"source": "cdnow", "rows": rows, "skipped": dict(skipped)})


# -------------------------------------------------------------------------------- Online Retail

COLUMNS = {  # canonical name -> accepted headers (Online Retail, Online Retail II)
    "invoice": ("InvoiceNo", "Invoice"),
    "quantity": ("Quantity",),
    "date": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
}


def column_index(header):
    names = [str(h).strip() if h is not None else "" for h in header]
    idx = {}
    for key, accepted in COLUMNS.items():
        found = [names.index(a) for a in accepted if a in names]
        if not found:
            sys.exit(f"no column {' or '.join(accepted)} in header {names}")
        idx[key] = found[0]
    return idx


def csv_rows(path):
    data = open(path, "rb").read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    idx = column_index(header)
    for row in reader:
        if row:
            yield 0, idx, row


def xlsx_rows(path, sheet):
    try:
        import openpyxl
    except ImportError:
        sys.exit("reading .xlsx needs openpyxl (pip install openpyxl), or export the sheets to CSV")
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    for n, ws in enumerate([wb[sheet]] if sheet else wb.worksheets):
        it = ws.iter_rows(values_only=True)
        idx = column_index(next(it))
        for row in it:
            if row and any(v is not None for v in row):
                yield n, idx, row


DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_date(value, dayfirst):
    if isinstance(value, datetime):
        return value.replace(tzinfo=None, microsecond=0)
    s = str(value).strip()
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            pass
    dm = "%d/%m" if dayfirst else "%m/%d"
    for fmt in (f"{dm}/%Y %H:%M", f"{dm}/%y %H:%M", f"{dm}/%Y %H:%M:%S"):
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            pass
    raise ValueError(f"unrecognised InvoiceDate {s!r}")


def customer_key(value):
    if value is None:
        return None
    s = str(value).strip()
    if s.endswith(".0"):
        s = s[:-2]
    return s if s and s.lower() not in ("nan", "na", "null", "none") else None


def online_retail(args):
    if args.input.lower().endswith((".xlsx", ".xlsm")):
        rows_iter = xlsx_rows(args.input, args.sheet)
    else:
        rows_iter = csv_rows(args.input)
    orders = {}  # (invoice, customer) -> [first time, amount, items, lines]
    invoice_segment, segment, last_sheet, prev_at = {}, 0, 0, None
    skipped, rows = Counter(), 0
    for sheet_no, idx, row in rows_iter:
        rows += 1
        invoice = str(row[idx["invoice"]]).strip()
        if invoice.endswith(".0"):  # numeric cells of an .xlsx
            invoice = invoice[:-2]
        cust = customer_key(row[idx["customer"]])
        if cust is None:
            skipped["no_customer_id_lines"] += 1
            continue
        if invoice.upper().startswith("C"):
            skipped["cancellation_lines"] += 1
            continue
        try:
            qty = Decimal(str(row[idx["quantity"]]).strip())
            price = Decimal(str(row[idx["price"]]).strip())
            at = parse_date(row[idx["date"]], args.dayfirst)
        except (InvalidOperation, ValueError) as e:
            sys.exit(f"data row {rows}: {e}")
        # Online Retail II is two sheets (and its Kaggle CSV their concatenation) that may
        # share invoices around the sheet boundary: a new sheet, or the clock going back more
        # than a day, starts a new segment, and an invoice keeps the lines of its first one.
        if sheet_no != last_sheet or (prev_at is not None and (prev_at - at).days >= 1):
            segment += 1
        last_sheet, prev_at = sheet_no, at
        first = invoice_segment.setdefault(invoice, segment)
        if first != segment:
            skipped["repeated_invoice_lines_of_a_later_segment"] += 1
            continue
        o = orders.get((invoice, cust))
        if o is None:
            orders[(invoice, cust)] = [at, qty * price, qty, 1]
        else:
            o[0] = min(o[0], at)
            o[1] += qty * price
            o[2] += qty
            o[3] += 1
    events = []
    for (invoice, cust), (at, amount, qty, _) in orders.items():
        if amount <= 0:
            skipped["non_positive_total_invoices"] += 1
            continue
        events.append(
            {
                "event_id": f"online-retail-{invoice}-{cust}",
                "customer_id": cust,
                "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "type": "purchase",
                "order_id": invoice,
                "amount": number(amount),
                "currency": "GBP",
                "items": max(1, int(qty)),
            }
        )
    summary = {
        "source": "online-retail",
        "rows": rows,
        "invoices_with_customer": len(orders),
        "skipped": dict(skipped),
    }
    write_events(events, args.output, summary)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="source", required=True)
    c = sub.add_parser("cdnow", help="CDNOW_master.txt -> purchase events")
    c.add_argument("input")
    c.add_argument("output")
    c.set_defaults(run=cdnow)
    o = sub.add_parser("online-retail", help="UCI Online Retail (II) .csv/.xlsx -> purchase events")
    o.add_argument("input")
    o.add_argument("output")
    o.add_argument("--dayfirst", action="store_true", help="slash dates are D/M/Y, not M/D/Y")
    o.add_argument("--sheet", help=".xlsx: only this sheet (default: every sheet)")
    o.set_defaults(run=online_retail)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
