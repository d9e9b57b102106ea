#!/usr/bin/env python3
"""Score Microsoft Presidio's pattern recognizers on the DLP bench corpus.

The corpus is written by `cargo bench -p portcullis-proxy --bench dlp` (JSON lines:
text, labels [{detector, start, end}] in character offsets, kind, target); see the
comment at the top of proxy/benches/dlp.rs for how it is generated.

Setup (pinned; no spaCy model is needed or downloaded):
    python3 -m venv e2e/.venv
    e2e/.venv/bin/pip install presidio-analyzer==2.2.366
    e2e/.venv/bin/python e2e/bench/presidio_compare.py [CORPUS] [--threshold 0.0]

Presidio's AnalyzerEngine insists on an NLP engine (a spaCy model such as en_core_web_lg)
which cannot be downloaded here. So the predefined recognizers are called directly with
`nlp_artifacts=None`: regexes, validators (Luhn, IBAN checksum, SSN rules) and the
phonenumbers library all run; only spaCy-based context enhancement (score boosts from
nearby words such as "ssn") is missing. That lowers some scores, which matters only with
a non-zero --threshold. Presidio has no recognizers for JWTs, private keys or vendor API
tokens, so only the PII detectors are compared. Presidio's IP_ADDRESS covers both IPv4
and IPv6; a finding is attributed to ipv6 when it contains ':'.

The email recognizer's tldextract tries to download the public suffix list at start-up;
offline it logs a connection error and falls back to its bundled snapshot (results are
unaffected, the printed throughput includes that retry delay).

Scoring is the same as the Rust harness: a finding is a true positive when it overlaps a
label of the same detector, otherwise a false positive; a label with no overlapping
finding of its detector is a false negative.
"""

import argparse
import json
import os
import sys
import time

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

RECOGNIZERS = [
    (CreditCardRecognizer(), "CREDIT_CARD", "creditCard"),
    (UsSsnRecognizer(), "US_SSN", "usSsn"),
    (IbanRecognizer(), "IBAN_CODE", "iban"),
    (EmailRecognizer(), "EMAIL_ADDRESS", "email"),
    (PhoneRecognizer(), "PHONE_NUMBER", "phone"),
    (IpRecognizer(), "IP_ADDRESS", None),
]
COMPARED = ["creditCard", "usSsn", "iban", "email", "phone", "ipv4", "ipv6"]


def default_corpus():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(__file__), "..", "..", "target"
    )
    return os.path.join(target, "dlp-corpus.jsonl")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", nargs="?", default=default_corpus())
    ap.add_argument("--threshold", type=float, default=0.0, help="minimum Presidio score")
    args = ap.parse_args()

    stats = {d: [0, 0, 0] for d in COMPARED}
    n = 0
    t0 = time.perf_counter()
    nbytes = 0
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            text = item["text"]
            nbytes += len(text.encode())
            n += 1
            found = []
            for rec, entity, det in RECOGNIZERS:
                for r in rec.analyze(text, [entity], nlp_artifacts=None):
                    if r.score < args.threshold:
                        continue
                    d = det or ("ipv6" if ":" in text[r.start : r.end] else "ipv4")
                    found.append((d, r.start, r.end))
            labels = [
                (l["detector"], l["start"], l["end"])
                for l in item["labels"]
                if l["detector"] in stats
            ]

            def overlaps(a, b):
                return a[1] < b[2] and b[1] < a[2]

            for fd in found:
                if any(l[0] == fd[0] and overlaps(fd, l) for l in labels):
                    stats[fd[0]][0] += 1
                else:
                    stats[fd[0]][1] += 1
            for l in labels:
                if not any(fd[0] == l[0] and overlaps(fd, l) for fd in found):
                    stats[l[0]][2] += 1
    elapsed = time.perf_counter() - t0
    print(
        f"Presidio {presidio_version()} pattern recognizers (no NLP engine), "
        f"score >= {args.threshold}: {n} items from {args.corpus}"
    )
    print(f"  {'detector':<15} {'tp':>5} {'fp':>5} {'fn':>5} {'precision':>10} {'recall':>8}")
    for d in COMPARED:
        tp, fp, fn = stats[d]
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        print(f"  {d:<15} {tp:>5} {fp:>5} {fn:>5} {p:>10.3f} {r:>8.3f}")
    print(f"  throughput: {nbytes / elapsed / 1e6:.2f} MB/s ({elapsed:.1f} s for {nbytes / 1e6:.2f} MB)")


def presidio_version():
    try:
        from importlib.metadata import version

        return version("presidio-analyzer")
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
