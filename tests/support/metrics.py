"""Reading relay's /metrics in tests with prometheus-client's own parser, never with regexes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# (sample name, sorted labels) → value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def family_names(text: str) -> set[str]:
    """Every metric family the scrape declares (counters without their `_total`)."""
    return {family.name for family in text_string_to_metric_families(text)}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, found), value in samples.items() if sample == name and wanted <= set(found))
