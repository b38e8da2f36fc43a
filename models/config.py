"""Typed hyperparameters of the cascade: loss, model sizes and training.

One dataclass per concern, passed down explicitly (no globals, no environment reads). The Trainer
receives them as plain dicts through TFX ``custom_config`` and rebuilds them with ``from_dict``.
Types and ranges are declared on the fields and checked by ``models.config_schema`` (pydantic).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, TypeVar

from annotated_types import Ge, Gt

from models.config_schema import build, config_dataclass

_T = TypeVar("_T")

# Field types with their ranges (checked by pydantic, named in errors: ``tau: must be > 0``).
AtLeast1 = Annotated[int, Ge(1)]
AtLeast0 = Annotated[int, Ge(0)]
Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]


def _from_dict(cls: type[_T], values: dict[str, Any] | None) -> _T:
    """Builds ``cls`` from a dict (JSON values): unknown keys, wrong types and out-of-range
    values fail naming the field."""
    return build(cls, values, cls.__name__)


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


@config_dataclass
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

    method: Literal[LOSS_METHODS] = "lcron"
    gt_num: AtLeast1 = 10
    sort_op: Literal[SORT_OPS] = "neural_sort"
    tau: Positive = 50.0
    label_tau: Positive = 1e-3
    stage_top_k: tuple[AtLeast1, ...] | None = None
    use_e2e: bool = True
    use_single: bool = True
    weighting: Literal[WEIGHTINGS] = "uwl"
    fixed_weights: tuple[NonNegative, ...] = (1.0, 1.0)
    stage_keep: tuple[AtLeast1, ...] = (30, 20)
    baseline_variant: Literal[BASELINE_VARIANTS] = "benchmark"
    group_size: AtLeast1 | None = None
    arf_tau: Positive = 200.0
    lambda_topn: AtLeast1 = 30
    lambda_smooth_fraction: NonNegative = 0.8
    rankflow_alpha: NonNegative = 0.0
    corpus_weight: NonNegative = 0.0
    corpus_negatives: Literal[CORPUS_NEGATIVES] = "in_batch"
    corpus_logq: bool = True
    lcron_impl: Literal[LCRON_IMPLS] = "auto"
    lcron_block_rows: AtLeast1 = 64

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LossConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@config_dataclass
class MetricConfig:
    """Cut-offs of the cascade metric Recall@gt_num@k1@k2 (the paper: 10 of 40, keep 30 then 20)."""

    gt_num: AtLeast1 = 10
    k1: AtLeast1 = 30
    k2: AtLeast1 = 20
    ndcg_k: AtLeast1 = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MetricConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@config_dataclass
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

    embedding_dim: AtLeast1 = 8
    retrieval_hidden: tuple[AtLeast1, ...] = (32,)
    retrieval_output_dim: AtLeast1 = 16
    retrieval_temperature: Positive = 1.0
    ranking_hidden: tuple[AtLeast1, ...] = (64, 32)
    attention_dim: AtLeast1 = 16
    top_k: AtLeast1 = 100

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


INDEX_KINDS: tuple[str, ...] = ("auto", "brute_force", "scann")


@config_dataclass
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

    kind: Literal[INDEX_KINDS] = "auto"
    scann_min_items: AtLeast1 = 250_000
    num_leaves: AtLeast1 | None = None
    num_leaves_to_search: AtLeast1 | None = None
    dimensions_per_block: AtLeast1 = 1
    num_reordering_candidates: AtLeast1 | None = None
    training_iterations: AtLeast1 = 12
    recall_queries: AtLeast0 = 1000

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


@config_dataclass
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

    batch_size: AtLeast1 = 256
    learning_rate: Positive = 0.005
    train_steps: AtLeast1 = 600
    steps_per_epoch: AtLeast1 = 100
    eval_steps: AtLeast1 | None = None
    shuffle_buffer: AtLeast1 = 4096
    distribution: Literal[DISTRIBUTION_STRATEGIES] = "default"
    seed: int = 0
    train_metrics_every: AtLeast1 = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainerConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
