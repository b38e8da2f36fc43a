"""The Beam ingestion: log files -> validated rows -> one list-wise tf.Example per request.

Per split::

    file paths -> plan units (row groups / record batches) -> Reshuffle
      -> read + validate a unit            (dead letters, rows_read)
      -> (request_id, chunk of rows)       (grouped inside the unit first)
      -> GroupByKey                        (a request's rows from every unit and file)
      -> build the example                 (duplicates, context checks, selection, labels)
      -> TFRecord (gzip) | dead letters as JSON lines | counts combined into stats

No step holds the whole data on one worker: reading is per unit, grouping is keyed by request
and the counts are combined (``CombineGlobally`` of small counters, lifted per worker). The same
transform runs in the TFX executor and standalone (``lcron ingest``); ``beam_pipeline_args`` go
to ``PipelineOptions`` unchanged (DirectRunner here, Dataflow / Flink / Spark elsewhere).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam

from components.recflow_example_gen import listwise, rows
from models import progress

PROGRESS_TASK = "ingestion"  # progress records: one unit per row group / record batch / CSV

DEAD_LETTER_PREFIX = "dead_letters"
EXAMPLES_PREFIX = "data_tfrecord"  # TFX ExampleGen's file name: Split-<name>/data_tfrecord-*.gz
STATS_FILE = "stats.json"
SPLIT_PATTERN_SEPARATOR = ","
# Files in a matched folder that are never log data.
_IGNORED_SUFFIXES = (".json", ".txt", ".md", ".crc")

COUNT_KEYS = (
    "rows_read",
    "rows_in_examples",
    "rows_dead_lettered",
    "rows_not_in_examples",
    "requests_written",
    "requests_without_ground_truth",
)


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """Everything the ingestion needs besides paths.

    Attributes:
      input_format: "parquet", "csv" or "feather".
      list: shape and labels of the list-wise example.
      validation: bounds of the row checks.
    """

    input_format: str = "parquet"
    list: listwise.ListConfig = dataclasses.field(default_factory=listwise.ListConfig)
    validation: rows.ValidationConfig = dataclasses.field(default_factory=rows.ValidationConfig)

    def __post_init__(self) -> None:
        if self.input_format not in rows.FORMATS:
            raise ValueError(f"input_format {self.input_format!r} not in {rows.FORMATS}")


def match_split_files(input_base: str, pattern: str) -> list[str]:
    """The data files of one split: ``pattern`` holds one or more globs relative to
    ``input_base``, separated by commas (``"day_00/*,day_01/*"``).

    Hidden files, names starting with ``_`` (``_SUCCESS``) and ``.json/.txt/.md/.crc`` files are
    skipped.

    Raises:
      ValueError: a glob matches no data file (a typo must not yield an empty split).
    """
    from apache_beam.io.filesystems import FileSystems

    paths: list[str] = []
    for glob in pattern.split(SPLIT_PATTERN_SEPARATOR):
        glob = glob.strip()
        full = FileSystems.join(input_base, glob)
        matched = [m.path for r in FileSystems.match([full]) for m in r.metadata_list]
        data = sorted(
            p
            for p in matched
            if not os.path.basename(p).startswith((".", "_")) and not p.endswith(_IGNORED_SUFFIXES)
        )
        if not data:
            raise ValueError(f"pattern {full!r} matched no data file")
        paths.extend(data)
    return sorted(set(paths))


class _ReadAndValidate(beam.DoFn):
    """(path, unit, first_row) -> (request_id, chunk); dead letters and counts on side tags."""

    def __init__(self, config: IngestConfig):
        self._config = config

    def process(self, unit: tuple[str, int, int]):
        path, index, first_row = unit
        table = rows.read_unit(path, self._config.input_format, index)
        result = rows.validate_table(table, path, first_row, self._config.validation)
        yield from rows.split_by_request(result)
        for letter in result.dead_letters:
            yield beam.pvalue.TaggedOutput("dead", letter)
        counts = collections.Counter(rows_read=result.rows_read)
        counts["rows_dead_lettered"] += len(result.dead_letters)
        for letter in result.dead_letters:
            counts[f"dead:{letter['kind']}:{letter['field']}"] += 1
        yield beam.pvalue.TaggedOutput("counts", counts)
        progress.advance(PROGRESS_TASK)


class _BuildExamples(beam.DoFn):
    """(request_id, [chunks]) -> serialized tf.Example; dead letters and counts on side tags."""

    def __init__(self, config: IngestConfig):
        self._config = config

    def process(self, element: tuple[int, Iterable[dict[str, Any]]]):
        request_id, chunks = element
        result = listwise.build_request(request_id, chunks, self._config.list)
        if result.example is not None:
            yield result.example
        counts = result.counts
        for letter in result.dead_letters:
            counts[f"dead:{letter['kind']}:{letter['field']}"] += 1
            yield beam.pvalue.TaggedOutput("dead", letter)
        yield beam.pvalue.TaggedOutput("counts", counts)


class _SumCounters(beam.CombineFn):
    def create_accumulator(self) -> collections.Counter:
        return collections.Counter()

    def add_input(self, acc: collections.Counter, counts: collections.Counter):
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs):
        total = collections.Counter()
        for acc in accs:
            total.update(acc)
        return total

    def extract_output(self, acc):
        return dict(acc)


@beam.ptransform_fn
def IngestSplit(  # noqa: N802 (Beam transform naming)
    pipeline: beam.Pipeline,
    paths: Sequence[str],
    config: IngestConfig,
    examples_dir: str,
    dead_letters_dir: str,
    stats_dir: str,
) -> beam.pvalue.PDone:
    """Ingests one split's files; writes examples, dead letters and a raw count file."""
    read = (
        pipeline
        | "Paths" >> beam.Create(list(paths))
        | "PlanUnits" >> beam.FlatMap(rows.plan_units, config.input_format)
        | "Distribute" >> beam.Reshuffle()
        | "ReadValidate"
        >> beam.ParDo(_ReadAndValidate(config)).with_outputs("dead", "counts", main="chunks")
    )
    built = (
        read.chunks
        | "GroupByRequest" >> beam.GroupByKey()
        | "BuildExamples"
        >> beam.ParDo(_BuildExamples(config)).with_outputs("dead", "counts", main="examples")
    )
    _ = built.examples | "WriteExamples" >> beam.io.WriteToTFRecord(
        os.path.join(examples_dir, EXAMPLES_PREFIX), file_name_suffix=".gz"
    )
    _ = (
        (read.dead, built.dead)
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
        | "WriteDeadLetters"
        >> beam.io.WriteToText(
            os.path.join(dead_letters_dir, DEAD_LETTER_PREFIX), file_name_suffix=".jsonl"
        )
    )
    return (
        (read.counts, built.counts)
        | "AllCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(_SumCounters())
        | "CountsJson" >> beam.Map(lambda c: json.dumps(c, sort_keys=True))
        | "WriteCounts"
        >> beam.io.WriteToText(
            os.path.join(stats_dir, "counts"), file_name_suffix=".json", shard_name_template=""
        )
    )


def split_stats(raw: dict[str, int]) -> dict[str, Any]:
    """Shapes the summed counters of one split into its stats section."""
    stats: dict[str, Any] = {key: int(raw.get(key, 0)) for key in COUNT_KEYS}
    stats["dead_letter_reasons"] = {
        k.split(":", 1)[1]: v for k, v in sorted(raw.items()) if k.startswith("dead:") and v
    }
    stats["not_in_examples_reasons"] = {
        k.split(":", 1)[1]: v
        for k, v in sorted(raw.items())
        if k.startswith("not_in_examples:") and v
    }
    return stats


def combine_stats(per_split: dict[str, dict[str, Any]], config: IngestConfig) -> dict[str, Any]:
    """Totals over splits plus each split's section; checks that the row counts add up."""
    total: dict[str, Any] = {key: sum(s[key] for s in per_split.values()) for key in COUNT_KEYS}
    for section in ("dead_letter_reasons", "not_in_examples_reasons"):
        merged: collections.Counter = collections.Counter()
        for s in per_split.values():
            merged.update(s[section])
        total[section] = dict(sorted(merged.items()))
    accounted = total["rows_in_examples"] + total["rows_dead_lettered"]
    accounted += total["rows_not_in_examples"]
    if accounted != total["rows_read"]:  # a bug, never bad data: fail loudly
        raise RuntimeError(f"ingestion lost rows: {accounted} accounted of {total['rows_read']}")
    total["splits"] = per_split
    total["input_format"] = config.input_format
    total["list_size"] = config.list.list_size
    total["group_size"] = config.list.resolved_group_size
    total["label_mode"] = config.list.label_mode
    return total


def ingest(
    pipeline: beam.Pipeline,
    split_paths: dict[str, Sequence[str]],
    config: IngestConfig,
    examples_dir: str,
    dead_letters_dir: str,
    work_dir: str,
) -> None:
    """Adds every split's ingestion to ``pipeline`` (runs when the pipeline runs).

    Layout: ``examples_dir/Split-<name>/data_tfrecord-*.gz`` (TFX's Examples layout),
    ``dead_letters_dir/Split-<name>/dead_letters-*.jsonl``, raw counts under ``work_dir``
    (read them with ``read_stats`` after the run).
    """
    progress.total(
        PROGRESS_TASK,
        sum(rows.count_units(p, config.input_format) for ps in split_paths.values() for p in ps),
    )
    for name, paths in split_paths.items():
        _ = pipeline | f"Ingest[{name}]" >> IngestSplit(
            paths,
            config,
            os.path.join(examples_dir, f"Split-{name}"),
            os.path.join(dead_letters_dir, f"Split-{name}"),
            os.path.join(work_dir, f"Split-{name}"),
        )


def read_stats(split_names: Iterable[str], config: IngestConfig, work_dir: str) -> dict[str, Any]:
    """Reads the per-split counts written by ``ingest`` and combines them."""
    from apache_beam.io.filesystems import FileSystems

    per_split = {}
    for name in split_names:
        with FileSystems.open(os.path.join(work_dir, f"Split-{name}", "counts.json")) as f:
            per_split[name] = split_stats(json.loads(f.read().decode()))
    return combine_stats(per_split, config)


def write_stats(stats: dict[str, Any], path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write(json.dumps(stats, indent=2, sort_keys=True).encode())
    logging.info(
        "ingestion: %s",
        json.dumps({k: stats[k] for k in (*COUNT_KEYS, "dead_letter_reasons")}),
    )


def run_ingestion(
    split_patterns: dict[str, str],
    input_base: str,
    output_dir: str,
    config: IngestConfig,
    beam_pipeline_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs the ingestion standalone and returns the stats (also in ``output_dir/stats.json``).

    Layout of ``output_dir``: ``examples/Split-<name>/``, ``dead_letters/Split-<name>/``,
    ``stats.json`` (and ``.counts/``, the raw per-split counters).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    split_paths = {name: match_split_files(input_base, p) for name, p in split_patterns.items()}
    work_dir = os.path.join(output_dir, ".counts")
    with beam.Pipeline(options=PipelineOptions(list(beam_pipeline_args))) as pipeline:
        ingest(
            pipeline,
            split_paths,
            config,
            os.path.join(output_dir, "examples"),
            os.path.join(output_dir, "dead_letters"),
            work_dir,
        )
    stats = read_stats(split_paths, config, work_dir)
    write_stats(stats, os.path.join(output_dir, STATS_FILE))
    return stats
