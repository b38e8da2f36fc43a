"""Typed hyperparameters of the cascade: loss, model sizes and training.

One dataclass per concern, passed down explicitly (no globals, no environment reads). The Trainer
receives them as plain dicts through TFX ``custom_config`` and rebuilds them with ``from_dict``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

_T = TypeVar("_T")


def _from_dict(cls: type[_T], values: dict[str, Any] | None) -> _T:
    """Builds ``cls`` from a dict, rejecting unknown keys by name (typos must not pass)."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(known)}")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


# Names of ``models.losses.get`` (its registry is checked against this list by a test): known
# here, without TensorFlow, so a configuration fails on a typo before any training starts. In
# the paper's table order, baselines first.
LOSS_METHODS: tuple[str, ...] = (
    "bce",
    "icc",
    "rankflow",
    "fs_ranknet",
    "fs_lambdaloss",
    "arf",
    "arf_v2",
    "lcron",
)
SORT_OPS: tuple[str, ...] = ("neural_sort", "soft_sort")
# How LCRON computes its top-k probabilities (``models.losses.lcron.IMPLS``, checked by a test).
LCRON_IMPLS: tuple[str, ...] = ("auto", "dense", "blocked", "dense_xla", "blocked_xla")
WEIGHTINGS: tuple[str, ...] = ("uwl", "fixed")
# Which batch items are the sampled negatives of the retrieval corpus term (``corpus_weight``).
CORPUS_NEGATIVES: tuple[str, ...] = ("logged", "in_batch")
# The baselines as the authors' code computes them ("benchmark", accidents included) or with
# those accidents fixed ("clean"); see models/losses/baselines.
BASELINE_VARIANTS: tuple[str, ...] = ("benchmark", "clean")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which cascade loss to train with, and its knobs (defaults: the LCRON authors').

    Attributes:
      method: loss name for ``models.losses.get``: "lcron" (default), "bce", "icc", "rankflow",
        "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2".
      gt_num: number of ground-truth items per request (the largest labels).
      sort_op: differentiable sort, "neural_sort" or "soft_sort".
      tau: sort temperature, applied to the models' logits.
      label_tau: temperature of the near-hard sort of the labels.
      stage_top_k: per-stage k inside L_e2e / L_single; None means gt_num for every stage
        (the authors' choice), otherwise one k per stage, first stage first.
      use_e2e: include L_e2e (ablation switch).
      use_single: include the per-stage L_single terms (ablation switch).
      weighting: "uwl" (learnable uncertainty weights, Kendall et al. 2018) or "fixed".
      fixed_weights: per-stage weights of L_single when weighting == "fixed".
      stage_keep: how many items each stage passes downstream, first stage first (RecFlow:
        30 then 20); the baselines' cut-offs: ICC's gates, RankFlow's retrieval top-k, ARF's
        support sizes (the authors' joint_recall_k / joint_prerank_k / support_m).
      baseline_variant: "benchmark" (default: the baselines exactly as the authors' code
        computes them, its accidents included) or "clean" (those accidents fixed; each
        baseline's docstring lists them). No effect on LCRON.
      group_size: slots per stage group of the baselines' list layout (the authors': 10);
        None means list_size // 4, the ingestion's default.
      arf_tau: ARF / ARF-v2 sort temperature (the authors hard-code 200).
      lambda_topn / lambda_smooth_fraction: FS-LambdaLoss's rank cut-off and smoothing of
        the pair discount (the authors run 30 and 0.8).
      rankflow_alpha: RankFlow's weight of its ranking-order term against the distillation
        term, total = ... + (1 - alpha) L_distill + alpha L_rank (the authors run 0).
      corpus_weight: weight of the retrieval stage's corpus term (``models.losses.corpus``): a
        sampled softmax of each request's ground-truth items against the batch's items with
        logQ correction, added to the cascade loss (``loss + corpus_weight * l_corpus``) so
        retrieval learns to rank the whole corpus it serves, not only the logged lists. 0 here
        (the paper's methods, as the experiments compare them); the pipeline's configuration
        sets 1.0 (``pipeline.config.DEFAULT_LOSS``), chosen by the replay (docs/results.md).
      corpus_negatives: the sampled items: "in_batch" (the batch's ground-truth items, TFRS's
        in-batch softmax; the default: as good as "logged" in the replay and cheaper) or
        "logged" (every logged candidate of the batch's requests).
      corpus_logq: subtract log Q(item), the item's share of the sampled slots in the training
        data (Yi et al. 2019); False samples without correction (popular items over-penalised).
      lcron_impl: how LCRON computes each stage's relaxed top-k (same values and gradients,
        different time and memory; ``benchmarks/loss_bench.py``): "dense" (the [batch, n, n]
        permutation matrices, autodiff), "blocked" (rows in blocks, a hand-derived gradient,
        memory linear in n), "dense_xla" / "blocked_xla" (the same compiled with XLA), or
        "auto" (the fastest measured at the list size).
      lcron_block_rows: rows of a permutation matrix per block of the blocked path (memory
        per block: batch x rows x list_size floats; a list that fits one block is one block).
    """

    method: str = "lcron"
    gt_num: int = 10
    sort_op: str = "neural_sort"
    tau: float = 50.0
    label_tau: float = 1e-3
    stage_top_k: tuple[int, ...] | None = None
    use_e2e: bool = True
    use_single: bool = True
    weighting: str = "uwl"
    fixed_weights: tuple[float, ...] = (1.0, 1.0)
    stage_keep: tuple[int, ...] = (30, 20)
    baseline_variant: str = "benchmark"
    group_size: int | None = None
    arf_tau: float = 200.0
    lambda_topn: int = 30
    lambda_smooth_fraction: float = 0.8
    rankflow_alpha: float = 0.0
    corpus_weight: float = 0.0
    corpus_negatives: str = "in_batch"
    corpus_logq: bool = True
    lcron_impl: str = "auto"
    lcron_block_rows: int = 64

    def __post_init__(self) -> None:
        for name, known in (
            ("method", LOSS_METHODS),
            ("sort_op", SORT_OPS),
            ("weighting", WEIGHTINGS),
            ("corpus_negatives", CORPUS_NEGATIVES),
            ("baseline_variant", BASELINE_VARIANTS),
            ("lcron_impl", LCRON_IMPLS),
        ):
            value = getattr(self, name)
            if value not in known:
                raise ValueError(f"LossConfig.{name}: unknown value {value!r}; known: {known}")
        if self.corpus_weight < 0:
            raise ValueError(f"LossConfig.corpus_weight must be >= 0, got {self.corpus_weight}")
        if self.lcron_block_rows < 1:
            raise ValueError(
                f"LossConfig.lcron_block_rows must be >= 1, got {self.lcron_block_rows}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LossConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MetricConfig:
    """Cut-offs of the cascade metric Recall@gt_num@k1@k2 (the paper: 10 of 40, keep 30 then 20)."""

    gt_num: int = 10
    k1: int = 30
    k2: int = 20
    ndcg_k: int = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MetricConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the two stages (defaults: small, as the paper's 8-dim embeddings).

    Attributes:
      embedding_dim: size of every id embedding (both stages own their tables).
      retrieval_hidden: hidden layer widths of each retrieval tower's MLP.
      retrieval_output_dim: size of the query and candidate embeddings.
      retrieval_temperature: the retrieval score is <query, candidate> / temperature.
      ranking_hidden: hidden layer widths of the ranking stage's MLP head.
      attention_dim: width of the ranking stage's target-attention projections.
      top_k: K of the retrieval SavedModel's ``serving_default`` (fixed at export).
    """

    embedding_dim: int = 8
    retrieval_hidden: tuple[int, ...] = (32,)
    retrieval_output_dim: int = 16
    retrieval_temperature: float = 1.0
    ranking_hidden: tuple[int, ...] = (64, 32)
    attention_dim: int = 16
    top_k: int = 100

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "retrieval_output_dim", "attention_dim", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.retrieval_temperature <= 0:
            raise ValueError("ModelConfig.retrieval_temperature must be > 0")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


INDEX_KINDS: tuple[str, ...] = ("auto", "brute_force", "scann")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Retrieval's top-K index, built at export (the SavedModel's signatures are the same for
    every kind; docs/serving.md has the measurements behind the defaults).

    Attributes:
      kind: "brute_force" (exact: every item scored, ``tfrs.layers.factorized_top_k.BruteForce``),
        "scann" (approximate: ``tfrs.layers.factorized_top_k.ScaNN``, a partition tree plus
        anisotropic quantization and an exact re-scoring of the best candidates), or "auto":
        ScaNN from ``scann_min_items`` items up, brute force below.
      scann_min_items: corpus size from which "auto" picks ScaNN.
      num_leaves: ScaNN partitions; None: about sqrt(items).
      num_leaves_to_search: partitions searched per query; None: a tenth of ``num_leaves``.
      dimensions_per_block: embedding dimensions per quantization block (1: the most accurate
        scoring, 8 bytes per item at 16 dimensions).
      num_reordering_candidates: best candidates re-scored exactly before the top K is taken
        (also makes the returned scores exact); None: 10 x K.
      training_iterations: k-means iterations of the partitioning.
      recall_queries: queries (from the eval split) on which the export measures the index's
        recall@K against brute force; the push refuses an index below its recall floor.
    """

    kind: str = "auto"
    scann_min_items: int = 250_000
    num_leaves: int | None = None
    num_leaves_to_search: int | None = None
    dimensions_per_block: int = 1
    num_reordering_candidates: int | None = None
    training_iterations: int = 12
    recall_queries: int = 1000

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"IndexConfig.kind: unknown {self.kind!r}; known: {INDEX_KINDS}")
        for name in ("scann_min_items", "dimensions_per_block", "training_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_leaves", "num_leaves_to_search", "num_reordering_candidates"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1 or None, got {value}")
        if self.recall_queries < 0:
            raise ValueError("IndexConfig.recall_queries must be >= 0")

    def resolved_kind(self, num_items: int) -> str:
        """ "brute_force" or "scann" for a corpus of ``num_items``."""
        if self.kind != "auto":
            return self.kind
        return "scann" if num_items >= self.scann_min_items else "brute_force"

    def scann_params(self, num_items: int, k: int) -> dict[str, int]:
        """The ScaNN layer's arguments for ``num_items`` items and top ``k``."""
        leaves = self.num_leaves or max(1, round(num_items**0.5))
        leaves = min(leaves, num_items)
        return {
            "num_leaves": leaves,
            "num_leaves_to_search": min(leaves, self.num_leaves_to_search or max(1, leaves // 10)),
            "dimensions_per_block": self.dimensions_per_block,
            "num_reordering_candidates": self.num_reordering_candidates or 10 * k,
            "training_iterations": self.training_iterations,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> IndexConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DISTRIBUTION_STRATEGIES: tuple[str, ...] = (
    "default",
    "mirrored",
    "multi_worker_mirrored",
    "parameter_server",
)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """How the cascade is trained.

    Attributes:
      batch_size: requests per batch (the paper: 1024).
      learning_rate: Adam's learning rate.
      train_steps: total optimizer steps; the Trainer's TrainArgs.num_steps wins when set.
      steps_per_epoch: steps between two evaluations of the eval split (and TensorBoard points).
      eval_steps: batches of the eval split per evaluation; None: the whole split.
      shuffle_buffer: requests in the shuffle buffer of the training input.
      distribution: tf.distribute strategy, one of ``DISTRIBUTION_STRATEGIES``; "default" is
        the default strategy (one device), the others read the cluster from TF_CONFIG.
      seed: seed of the weights' initialisation and of the input shuffling.
      train_metrics_every: update the cascade metrics on every n-th training step (and on an
        epoch's first); the logged train metrics are means over those steps' requests, the
        loss terms are tracked on every step and evaluation on every batch. The metrics cost
        about a sixth of a step at list 40 and grow with list_size^2 (Kendall's tau).
    """

    batch_size: int = 256
    learning_rate: float = 0.005
    train_steps: int = 600
    steps_per_epoch: int = 100
    eval_steps: int | None = None
    shuffle_buffer: int = 4096
    distribution: str = "default"
    seed: int = 0
    train_metrics_every: int = 10

    def __post_init__(self) -> None:
        for name in ("batch_size", "train_steps", "steps_per_epoch", "train_metrics_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.distribution not in DISTRIBUTION_STRATEGIES:
            raise ValueError(
                f"TrainerConfig.distribution: unknown strategy {self.distribution!r};"
                f" known: {list(DISTRIBUTION_STRATEGIES)}"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainerConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
