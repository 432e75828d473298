"""Parses OpenMetrics text from stdin with the Prometheus project's own Python parser (strict: it
rejects a malformed line, a sample outside its family, buckets that are not cumulative, a missing
`# EOF`) and prints each sample as one JSON line: {"series": "name{k=\"v\",...}", "value": N}, the
labels sorted by name. Exits non-zero, with the parser's complaint on stderr, if the text does not
parse."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def series(sample):
    if not sample.labels:
        return sample.name
    labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
    return f"{sample.name}{{{labels}}}"


def main():
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({"family": family.name, "type": family.type, "series": series(sample), "value": sample.value}))


if __name__ == "__main__":
    main()
