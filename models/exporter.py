"""Export of the trained cascade: one SavedModel per stage, raw features in (docs/signatures.md).

A cascade of N stages (``models.stage_spec``: retrieval first, then rescore stages such as
pre-ranking and ranking) is exported as ``<serving_model_dir>/<stage>/`` per stage plus
``cascade.json`` naming their order, role and cut-off (``export_cascade``). The first stage is
a ``RetrievalServing`` (its top-K index over the corpus), every later one a ``RescoreServing``
(scores a request's candidate list).

Each stage is a ``tf.Module`` that holds its Keras stage, the Transform graph
(``TFTransformOutput.transform_features_layer``) and the item table known at training time, so
TF Serving (or ``tf.saved_model.load``) can call it with raw request-time features only:

- ``RawFeatures`` feeds the Transform graph. Transform's graph has fixed per-request shapes
  (``list_size`` candidates), but serving scores any number N of candidates: the candidates are
  padded to a multiple of ``list_size`` and folded into extra rows (the request's context
  repeated), then unfolded, so training and serving share the one Transform graph.
- ``ItemTable``: raw video id -> the item's raw features; an id unknown at training time gets
  ids that are in no vocabulary (out-of-vocabulary buckets) and no upload time.
- The stages parse only request-time features (``features.RETRIEVAL_QUERY_FEATURES``,
  ``features.ITEM_FEATURES``): never feedback, stage flags or labels.
"""

from __future__ import annotations

import json
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models import features, stage_spec
from models.config import IndexConfig
from models.data import ItemCorpus
from models.ranking_stage import RankingStage
from models.retrieval_tower import RetrievalStage
from models.scann_index import ScannIndex
from models.stage_spec import StageSpec

STAGES: tuple[str, ...] = stage_spec.LEGACY_NAMES  # the two-stage default
# The retrieval export's index report (kind, parameters, recall@K vs brute force), beside the
# SavedModel where TF Serving ignores it and the pusher reads it.
INDEX_REPORT = Path("assets.extra") / "index.json"
QUERY_SCALARS: tuple[str, ...] = tuple(
    n for n in features.RETRIEVAL_QUERY_FEATURES if n not in features.SEQUENCE_FEATURES
)
# Raw item id features and their value for a feature unknown at training time: in no vocabulary,
# so Transform maps it to an out-of-vocabulary bucket (PAD_ID would mean padding).
UNKNOWN_ID = -2
ITEM_ID_FEATURES: tuple[str, ...] = (
    "video_id",
    "author_id",
    "category_level_one",
    "category_level_two",
    "upload_type",
)
# Padding of folded candidates, as the ingestion pads lists.
_PAD_VALUE = {name: features.PAD_ID for name in ITEM_ID_FEATURES}
_PAD_VALUE.update(upload_timestamp=0, duration=0)
# Transform outputs that are per candidate ([B, list_size]); everything else is per request.
ITEM_OUTPUTS: frozenset[str] = frozenset(
    [features.transformed_name(n) for n in features.ITEM_FEATURES]
    + [features.raw_passthrough_name(n) for n in features.ITEM_FEATURES]
    + [
        features.transformed_name(n)
        for n in (features.ITEM_AGE, features.DURATION_LOG, features.UPLOAD_TIME)
    ]
)


def query_specs() -> dict[str, tf.TensorSpec]:
    """Serving inputs of a request's user/context: int64 [B] scalars, [B, SEQ_LEN] sequences."""
    specs = {name: tf.TensorSpec([None], tf.int64, name=name) for name in QUERY_SCALARS}
    for name in features.SEQUENCE_FEATURES:
        specs[name] = tf.TensorSpec([None, features.SEQ_LEN], tf.int64, name=name)
    return specs


class RawFeatures(tf.Module):
    """Raw request/candidate features -> transformed features, through the Transform graph."""

    def __init__(self, tf_transform_output: Any, name: str = "raw_features") -> None:
        super().__init__(name=name)
        self.tft_layer = tf_transform_output.transform_features_layer()
        self.list_size = int(tf_transform_output.raw_feature_spec()["video_id"].shape[0])

    def __call__(
        self,
        query: Mapping[str, tf.Tensor] | None = None,
        items: Mapping[str, tf.Tensor] | None = None,
    ) -> dict[str, tf.Tensor]:
        """Transforms one batch.

        Args:
          query: ``QUERY_SCALARS`` [B] and ``SEQUENCE_FEATURES`` [B, SEQ_LEN], raw.
          items: raw ``ITEM_FEATURES`` [B, N] (any N), or [M] without a query.

        Returns:
          Transformed features: per request [B, ...], per candidate [B, N] (or [M]).
        """
        raw: dict[str, tf.Tensor] = {}
        if items is None:
            for name, value in query.items():
                raw[name] = value[:, None] if name in QUERY_SCALARS else value
            return dict(self.tft_layer(raw))
        flat = query is None
        if flat:
            items = {name: value[None, :] for name, value in items.items()}
        num = tf.shape(items["video_id"])[1]
        batch = tf.shape(items["video_id"])[0]
        folds = tf.maximum((num + self.list_size - 1) // self.list_size, 1)
        width = folds * self.list_size
        for name, value in items.items():
            padded = tf.pad(value, [[0, 0], [0, width - num]], constant_values=_PAD_VALUE[name])
            raw[name] = tf.reshape(padded, [-1, self.list_size])
        for name, value in (query or {}).items():
            value = value[:, None] if name in QUERY_SCALARS else value
            raw[name] = tf.repeat(value, folds, axis=0)
        out = {}
        for name, value in self.tft_layer(raw).items():
            if name in ITEM_OUTPUTS:
                out[name] = tf.reshape(value, [batch, width])[:, :num]
            else:
                shape = tf.concat([[batch, folds], tf.shape(value)[1:]], axis=0)
                out[name] = tf.reshape(value, shape)[:, 0]
        if flat:
            out = {name: value[0] for name, value in out.items() if name in ITEM_OUTPUTS}
        return out


class ItemTable(tf.Module):
    """Raw video id -> raw item features of the corpus known at training time."""

    def __init__(self, corpus: ItemCorpus, name: str = "item_table") -> None:
        super().__init__(name=name)
        n = len(corpus)
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(corpus.video_ids, tf.int64), tf.range(n, dtype=tf.int64)
            ),
            default_value=n,  # the "unknown item" row appended below
        )
        self.columns = {}
        for name in features.ITEM_FEATURES:
            if name == "video_id":
                continue
            unknown = UNKNOWN_ID if name in ITEM_ID_FEATURES else 0
            values = np.append(corpus.columns[name], unknown).astype(np.int64)
            self.columns[name] = tf.constant(values)

    def lookup(self, video_id: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw item features of ``video_id`` (any shape); padding (PAD_ID) stays padding."""
        rows = self.rows.lookup(video_id)
        pad = tf.equal(video_id, features.PAD_ID)
        out = {"video_id": video_id}
        for name, column in self.columns.items():
            pad_value = tf.constant(_PAD_VALUE[name], tf.int64)
            out[name] = tf.where(pad, pad_value, tf.gather(column, rows))
        return out


def _parse_listwise(examples: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """Serialized raw list-wise tf.Examples -> (query [B], items [B, list_size] as logged)."""
    spec: dict[str, Any] = {n: tf.io.FixedLenFeature([1], tf.int64) for n in QUERY_SCALARS}
    for name in features.SEQUENCE_FEATURES:
        spec[name] = tf.io.FixedLenFeature([features.SEQ_LEN], tf.int64)
    for name in features.ITEM_FEATURES:
        spec[name] = tf.io.VarLenFeature(tf.int64)
    parsed = tf.io.parse_example(examples, spec)
    query = {n: parsed[n][:, 0] for n in QUERY_SCALARS}
    query.update({n: parsed[n] for n in features.SEQUENCE_FEATURES})
    items = {
        n: tf.sparse.to_dense(parsed[n], default_value=_PAD_VALUE[n])
        for n in features.ITEM_FEATURES
    }
    return query, items


class RetrievalServing(tf.Module):
    """The retrieval stage with the Transform graph, the item table and a TFRS top-K index.

    The index (``IndexConfig``): ``BruteForce`` scores every item (exact); ``ScaNN`` searches a
    partition tree with quantized scores and re-scores its best candidates exactly. Either way
    ``serving_default`` is the same signature. ``index_report`` says which index was built, how
    long it took and, when ``recall_queries`` are given, its recall@K against brute force.
    """

    def __init__(
        self,
        stage: RetrievalStage,
        tf_transform_output: Any,
        corpus: ItemCorpus,
        top_k: int,
        index_batch: int = 4096,
        index: IndexConfig | None = None,
        recall_queries: np.ndarray | None = None,
    ) -> None:
        super().__init__(name="retrieval_serving")
        self.stage = stage
        self.raw_features = RawFeatures(tf_transform_output)
        self.items = ItemTable(corpus)
        self.top_k = min(int(top_k), len(corpus))
        index = index or IndexConfig()
        # Candidate embeddings are scaled by 1 / temperature so the index's dot products are
        # the stage's scores.
        embeddings = []
        for start in range(0, len(corpus), index_batch):
            chunk = {
                n: tf.constant(v[start : start + index_batch]) for n, v in corpus.columns.items()
            }
            embeddings.append(self._candidate_embedding(chunk))
        candidates = tf.concat(embeddings, axis=0) / stage.temperature
        identifiers = tf.constant(corpus.video_ids, tf.int64)
        self.index_kind = index.resolved_kind(len(corpus))
        have_queries = recall_queries is not None and len(recall_queries) > 0
        if self.index_kind != "brute_force" and not have_queries:
            raise ValueError(
                "index: an approximate index needs recall_queries to measure its recall at "
                "export (the push checks it against a floor)"
            )
        started = time.perf_counter()
        report: dict[str, Any] = {
            "kind": self.index_kind,
            "exact": self.index_kind == "brute_force",
            "items": len(corpus),
            "k": self.top_k,
            "dimensions": int(candidates.shape[-1]),
        }
        embeddings = candidates.numpy() if have_queries else None
        if self.index_kind == "scann":
            params = index.scann_params(len(corpus), self.top_k)
            partitionings = ("direction", "l2") if index.partitioning == "auto" else None
            choosing = partitionings is not None or index.num_leaves_to_search is None
            if choosing:
                # Choose on one half of the queries, measure on the other: the recall the push
                # checks is not the one the choice was made on.
                tuning, recall_queries = recall_queries[0::2], recall_queries[1::2]
                # Brute force over the corpus once, for every index tried.
                tuning_kth = exact_kth_scores(embeddings, tuning, self.top_k)
            tried = []
            for partitioning in partitionings or (params["partitioning"],):
                built = ScannIndex(k=self.top_k, **{**params, "partitioning": partitioning})
                built.index(candidates, identifiers=identifiers)
                if index.num_leaves_to_search is None:
                    ladder = tune_leaves_to_search(
                        built,
                        embeddings,
                        corpus.video_ids,
                        tuning,
                        index.target_recall,
                        exact_kth=tuning_kth,
                    )
                elif choosing:
                    ladder = [
                        {
                            "leaves_to_search": built.leaves_to_search,
                            **index_recall(
                                built, embeddings, corpus.video_ids, tuning, exact_kth=tuning_kth
                            ),
                        }
                    ]
                else:
                    ladder = [{"leaves_to_search": built.leaves_to_search}]
                tried.append((built, partitioning, ladder))
            # The fewest partitions searched wins; among equals, the better recall.
            built, partitioning, ladder = min(
                tried,
                key=lambda t: (
                    t[2][-1]["leaves_to_search"],
                    -t[2][-1].get("recall_at_k", 0.0),
                ),
            )
            self.index = built
            params.update(partitioning=partitioning, leaves_to_search=built.leaves_to_search)
            if choosing:
                report["tuning"] = {name: steps for _, name, steps in tried}
        else:
            params = {}
            self.index = tfrs.layers.factorized_top_k.BruteForce(k=self.top_k)
            self.index.index(candidates, identifiers=identifiers)
        # The layers build their state on the first call: call before saving.
        self.index(tf.zeros([1, candidates.shape[-1]]))
        report["params"] = params
        report["build_seconds"] = round(time.perf_counter() - started, 3)
        if have_queries:
            report.update(index_recall(self.index, embeddings, corpus.video_ids, recall_queries))
        # A string: tf.Module would track (and try to save) a dict attribute.
        self._index_report_json = json.dumps(report, sort_keys=True)

    @property
    def index_report(self) -> dict[str, Any]:
        """Kind, parameters, build time and (if measured) recall@K of the index."""
        return json.loads(self._index_report_json)

    def save_options(self) -> tf.saved_model.SaveOptions:
        """ScaNN's ops live in the ``Scann`` op namespace, which saving must allow."""
        namespaces = ["Scann"] if self.index_kind == "scann" else None
        return tf.saved_model.SaveOptions(namespace_whitelist=namespaces)

    def _candidate_embedding(self, items: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.stage.candidate_tower(self.raw_features(items=items))

    def _query_embedding(self, query: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.stage.query_tower(self.raw_features(query=query))

    def scores(self, query: Mapping[str, tf.Tensor], items: Mapping[str, tf.Tensor]) -> tf.Tensor:
        transformed = self.raw_features(query=query, items=items)
        return self.stage(transformed)

    def signatures(self) -> dict[str, Any]:
        qspecs = query_specs()
        qnames = list(qspecs)
        item_specs = [tf.TensorSpec([None], tf.int64, name=n) for n in features.ITEM_FEATURES]

        @tf.function(input_signature=list(qspecs.values()))
        def serving_default(*args):
            scores, ids = self.index(self._query_embedding(dict(zip(qnames, args, strict=True))))
            # ScaNN's ops leave the shapes unknown: pin them so the signature (what TF Serving
            # clients see) is the same for every index.
            shape = [None, self.top_k]
            return {
                "video_id": tf.ensure_shape(ids, shape),
                "scores": tf.ensure_shape(scores, shape),
            }

        @tf.function(input_signature=list(qspecs.values()))
        def query_embedding(*args):
            return {"embedding": self._query_embedding(dict(zip(qnames, args, strict=True)))}

        @tf.function(input_signature=item_specs)
        def candidate_embedding(*args):
            items = dict(zip(features.ITEM_FEATURES, args, strict=True))
            return {"embedding": self._candidate_embedding(items)}

        @tf.function(input_signature=[*qspecs.values(), _candidates_spec()])
        def score(*args):
            query = dict(zip(qnames, args[:-1], strict=True))
            return {"scores": self.scores(query, self.items.lookup(args[-1]))}

        @tf.function(input_signature=[_examples_spec()])
        def serving_tf_example(examples):
            return {"scores": self.scores(*_parse_listwise(examples))}

        return {
            "serving_default": serving_default,
            "query_embedding": query_embedding,
            "candidate_embedding": candidate_embedding,
            "score": score,
            "serving_tf_example": serving_tf_example,
        }


def index_recall(
    index: tf.keras.layers.Layer,
    candidates: np.ndarray,
    video_ids: np.ndarray,
    queries: np.ndarray,
    batch: int = 64,
    exact_kth: np.ndarray | None = None,
) -> dict[str, Any]:
    """Recall@K of ``index`` against brute force over ``queries``.

    For each query the exact top K is computed by scoring every candidate (the brute-force
    answer); an item the index returns counts as a hit when its exact score reaches the K-th
    best exact score (so ties at the boundary cannot make an exact index look inexact).

    Args:
      index: a TFRS top-K layer over ``candidates`` whose identifiers are ``video_ids``.
      candidates: float32 ``[N, D]`` the indexed embeddings.
      video_ids: int64 ``[N]`` their identifiers (unique).
      queries: float32 ``[M, D]`` query embeddings.
      batch: queries scored at once (bounds the ``[batch, N]`` score matrix).
      exact_kth: float32 ``[M]`` each query's exact K-th best score when already known.

    Returns:
      ``recall_at_k`` (mean over queries), ``recall_min`` and ``recall_p10`` (the worst and
      the 10th percentile query), ``recall_queries`` (M).
    """
    order = np.argsort(video_ids)
    sorted_ids = video_ids[order]
    per_query = []
    for start in range(0, len(queries), batch):
        q = np.asarray(queries[start : start + batch], np.float32)
        _, got = index(tf.constant(q))
        got = got.numpy()
        k = got.shape[1]
        if exact_kth is None:
            kth = exact_kth_scores(candidates, q, k, batch)
        else:
            kth = exact_kth[start : start + batch]
        positions = np.searchsorted(sorted_ids, got)
        rows = order[np.minimum(positions, len(order) - 1)]
        known = sorted_ids[np.minimum(positions, len(order) - 1)] == got
        true_scores = np.einsum("md,mkd->mk", q, candidates[rows])
        tolerance = 1e-5 * np.maximum(1.0, np.abs(kth))
        hits = known & (true_scores >= (kth - tolerance)[:, None])
        per_query.append(hits.sum(axis=1) / k)
    recall = np.concatenate(per_query)
    return {
        "recall_at_k": round(float(recall.mean()), 5),
        "recall_min": round(float(recall.min()), 5),
        "recall_p10": round(float(np.percentile(recall, 10)), 5),
        "recall_queries": len(recall),
    }


def exact_kth_scores(
    candidates: np.ndarray, queries: np.ndarray, k: int, batch: int = 64
) -> np.ndarray:
    """float32 ``[M]``: each query's K-th best score over every candidate (brute force)."""
    parts = []
    for start in range(0, len(queries), batch):
        q = tf.constant(np.asarray(queries[start : start + batch], np.float32))
        parts.append(tf.math.top_k(tf.matmul(q, candidates, transpose_b=True), k).values[:, -1])
    return np.concatenate([p.numpy() for p in parts])


def tune_leaves_to_search(
    index: ScannIndex,
    candidates: np.ndarray,
    video_ids: np.ndarray,
    queries: np.ndarray,
    target_recall: float,
    exact_kth: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Sets ``index`` to search the fewest partitions whose recall@K on ``queries`` reaches
    ``target_recall`` (every partition if none does), trying a ladder of shares of the leaves.
    ``exact_kth``: the queries' exact K-th best scores when already known (else computed).

    Returns:
      The ladder tried: ``[{"leaves_to_search", "recall_at_k"}, ...]`` (up to the choice).
    """
    leaves = index.num_leaves
    shares = (0.02, 0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    ladder = sorted({min(leaves, max(1, round(share * leaves))) for share in shares})
    kth = exact_kth_scores(candidates, queries, index.k) if exact_kth is None else exact_kth
    tried = []
    for n in ladder:
        index.set_leaves_to_search(n)
        recall = index_recall(index, candidates, video_ids, queries, exact_kth=kth)["recall_at_k"]
        tried.append({"leaves_to_search": n, "recall_at_k": recall})
        if recall >= target_recall:
            break
    return tried


def query_embeddings(stage: RetrievalStage, dataset: tf.data.Dataset, limit: int) -> np.ndarray:
    """Query embeddings ``[<= limit, D]`` of the requests of a transformed ``dataset``."""
    chunks, count = [], 0
    for batch in dataset:
        if count >= limit:
            break
        embedding = stage.query_tower(batch).numpy()[: limit - count]
        chunks.append(embedding)
        count += len(embedding)
    if not chunks:
        raise ValueError("query_embeddings: the dataset holds no request")
    return np.concatenate(chunks)


class RescoreServing(tf.Module):
    """A rescore stage (ranking, pre-ranking, ...) with the Transform graph and the item table.

    ``stage`` is any layer called as ``stage(transformed features) -> [B, L]`` logits (e.g.
    ``RankingStage``); ``serving_default`` scores a request's candidate list ``video_id``
    ``[B, N]`` (any N) from raw request features.
    """

    def __init__(
        self,
        stage: tf.keras.layers.Layer | RankingStage,
        tf_transform_output: Any,
        corpus: ItemCorpus,
        name: str = "ranking",
    ) -> None:
        super().__init__(name=f"{name}_serving")
        self.stage = stage
        self.raw_features = RawFeatures(tf_transform_output)
        self.items = ItemTable(corpus)

    def scores(self, query: Mapping[str, tf.Tensor], items: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.stage(self.raw_features(query=query, items=items))

    def signatures(self) -> dict[str, Any]:
        qspecs = query_specs()
        qnames = list(qspecs)

        @tf.function(input_signature=[*qspecs.values(), _candidates_spec()])
        def serving_default(*args):
            query = dict(zip(qnames, args[:-1], strict=True))
            return {"scores": self.scores(query, self.items.lookup(args[-1]))}

        @tf.function(input_signature=[_examples_spec()])
        def serving_tf_example(examples):
            return {"scores": self.scores(*_parse_listwise(examples))}

        return {"serving_default": serving_default, "serving_tf_example": serving_tf_example}


RankingServing = RescoreServing  # the two-stage name


def _candidates_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None, None], tf.int64, name="video_id")


def _examples_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None], tf.string, name="examples")


def export_cascade(
    model: Any,
    tf_transform_output: Any,
    corpus: ItemCorpus,
    serving_model_dir: str | Path,
    top_k: int,
    index: IndexConfig | None = None,
    recall_queries: np.ndarray | None = None,
    stages: Sequence[StageSpec] | None = None,
) -> dict[str, Path]:
    """Saves every stage of ``model`` to ``<serving_model_dir>/<stage>``; returns the folders.

    Args:
      model: the trained cascade: ``stage_configs`` (cascade order; any objects with ``name``,
        ``role``, ``keep``, ``kind``) and ``stage_layers`` (name -> layer), or a two-stage
        model with ``retrieval`` and ``ranking`` (exported as ``stage_spec.DEFAULT_STAGES``).
      top_k: K of the retrieval stage's index (its ``serving_default`` returns the top K).
      index / recall_queries: the retrieval index (default ``IndexConfig()``) and the query
        embeddings its recall@K against brute force is measured on; the report goes to
        ``<first stage>/assets.extra/index.json``, where the pusher reads it.
      stages: override the model's stages (``models.stage_spec.StageSpec``, cascade order).

    Returns:
      Stage name -> SavedModel folder, in cascade order; ``cascade.json`` beside them names
      the order (``stage_spec.read_export_spec``).
    """
    chain = stage_spec.check_chain(stages) if stages is not None else stage_spec.from_model(model)
    layers = stage_spec.stage_layers(model, chain)
    first = chain[0].name
    retrieval_module = RetrievalServing(
        layers[first],
        tf_transform_output,
        corpus,
        top_k,
        index=index,
        recall_queries=recall_queries,
    )
    out: dict[str, Path] = {}
    for spec in chain:
        if spec.name == first:
            module, options = retrieval_module, retrieval_module.save_options()
        else:
            module = RescoreServing(layers[spec.name], tf_transform_output, corpus, spec.name)
            options = None
        path = Path(serving_model_dir) / spec.name
        tf.saved_model.save(module, str(path), signatures=module.signatures(), options=options)
        out[spec.name] = path
    report_path = out[first] / INDEX_REPORT
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(retrieval_module.index_report, indent=2, sort_keys=True))
    stage_spec.write_export_spec(serving_model_dir, chain)
    return out


def export_stages(
    retrieval: RetrievalStage,
    ranking: RankingStage,
    tf_transform_output: Any,
    corpus: ItemCorpus,
    serving_model_dir: str | Path,
    top_k: int,
    index: IndexConfig | None = None,
    recall_queries: np.ndarray | None = None,
) -> dict[str, Path]:
    """``export_cascade`` of the two-stage cascade: ``<serving_model_dir>/{retrieval,ranking}``."""
    model = types.SimpleNamespace(retrieval=retrieval, ranking=ranking)
    return export_cascade(
        model,
        tf_transform_output,
        corpus,
        serving_model_dir,
        top_k,
        index=index,
        recall_queries=recall_queries,
    )
