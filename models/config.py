"""Typed hyperparameters of the cascade: loss, model sizes and training.

One dataclass per concern, passed down explicitly (no globals, no environment reads). The Trainer
receives them as plain dicts through TFX ``custom_config`` and rebuilds them with ``from_dict``.
Types and ranges are declared on the fields and checked by ``models.config_schema`` (pydantic).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from annotated_types import Ge, Gt, Interval

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


STAGE_KINDS: tuple[str, ...] = ("two_tower", "mlp", "din")
STAGE_ROLES: tuple[str, ...] = ("retrieval", "rescore")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@config_dataclass
class StageConfig:
    """One stage of the cascade: what model it is, how many items it keeps, how it serves.

    Attributes:
      name: the stage's name: its logits' key, its metrics' prefix, its SavedModel's folder
        (lower-case letters, digits and "_", starting with a letter).
      kind: "two_tower" (query and candidate towers, ``models.retrieval_tower``), "mlp" (a
        light pre-ranking MLP over context and candidate features, ``models.prerank_stage``)
        or "din" (target attention over the behaviour sequence, ``models.ranking_stage``).
      keep: how many items the stage passes downstream (its cut-off k_s of Recall@gt@k1@...).
      role: "retrieval" (the first stage: top-K over the whole corpus, a two-tower) or
        "rescore" (every later stage: re-scores what the previous stage kept).
    """

    name: str
    kind: Literal[STAGE_KINDS]
    keep: AtLeast1
    role: Literal[STAGE_ROLES] = "rescore"

    @pydantic.model_validator(mode="after")
    def _check(self) -> StageConfig:
        from models.stage_spec import RESERVED_NAMES  # no TensorFlow: a plain record module

        if self.name in RESERVED_NAMES:
            raise ValueError(
                f"StageConfig.name {self.name!r} is reserved (the service's timing, metrics and"
                f" answer keys use it): not one of {sorted(RESERVED_NAMES)}"
            )
        if not _STAGE_NAME.match(self.name):
            raise ValueError(
                f"StageConfig.name {self.name!r}: lower-case letters, digits and '_', starting"
                " with a letter (it names metrics and SavedModel folders)"
            )
        if self.role == "retrieval" and self.kind != "two_tower":
            raise ValueError(
                f"StageConfig: stage {self.name!r} has role 'retrieval' but kind {self.kind!r};"
                " retrieval searches the corpus with a two-tower model (kind 'two_tower')"
            )
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any] | StageConfig) -> StageConfig:
        if isinstance(values, StageConfig):
            return values
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Today's cascade (the paper's two-stage RecFlow setting): two-tower retrieval keeps 30 of the
# 40 logged candidates, DIN-style ranking keeps 20 of those.
DEFAULT_STAGES: tuple[StageConfig, ...] = (
    StageConfig("retrieval", "two_tower", 30, "retrieval"),
    StageConfig("ranking", "din", 20, "rescore"),
)


def parse_stages(values: Any) -> tuple[StageConfig, ...]:
    """A tuple of ``StageConfig`` from dicts or ``StageConfig`` objects (JSON lists welcome)."""
    if isinstance(values, str | bytes) or not isinstance(values, list | tuple):
        raise ValueError(f"ModelConfig.stages must be a list of stages, got {values!r}")
    return tuple(StageConfig.from_dict(v) for v in values)


def validate_stages(
    stages: tuple[StageConfig, ...],
    *,
    list_size: int | None = None,
    gt_num: int | None = None,
    where: str = "ModelConfig.stages",
) -> tuple[StageConfig, ...]:
    """Checks the cascade's shape; raises ``ValueError`` naming ``where`` and the stage.

    Rules: at least two stages with distinct names; the first has role "retrieval", every later
    one "rescore"; keeps strictly decrease; the first keep is at most ``list_size`` and
    ``gt_num`` at most the last keep (when given).
    """
    if len(stages) < 2:
        raise ValueError(f"{where}: a cascade needs at least two stages, got {len(stages)}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: stage names must be distinct, got {names}")
    if stages[0].role != "retrieval":
        raise ValueError(
            f"{where}: the first stage ({stages[0].name!r}) must have role 'retrieval',"
            f" got {stages[0].role!r}"
        )
    for stage in stages[1:]:
        if stage.role != "rescore":
            raise ValueError(
                f"{where}: stage {stage.name!r} comes after the first, so its role must be"
                f" 'rescore', got {stage.role!r}"
            )
    for before, after in itertools.pairwise(stages):
        if after.keep >= before.keep:
            raise ValueError(
                f"{where}: keeps must strictly decrease, but stage {after.name!r} keeps"
                f" {after.keep} after {before.name!r} kept {before.keep}"
            )
    if list_size is not None and stages[0].keep > list_size:
        raise ValueError(
            f"{where}: stage {stages[0].name!r} keeps {stages[0].keep}, more than the list size"
            f" {list_size}"
        )
    if gt_num is not None and gt_num > stages[-1].keep:
        raise ValueError(
            f"{where}: gt_num {gt_num} exceeds the last stage's keep ({stages[-1].name!r}:"
            f" {stages[-1].keep}); Recall@gt@k1@...@kN needs gt_num <= kN"
        )
    return stages


def stage_keeps(stages: tuple[StageConfig, ...]) -> tuple[int, ...]:
    """Each stage's keep, first stage first: the cut-offs k1, ..., kN."""
    return tuple(s.keep for s in stages)


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
# How many stages each method has a reference form for (the authors' two_stage/ and
# three_stage/ code); None: any number (LCRON's terms are written for N stages). A method is
# refused by name at configuration time for any other count (``LossConfig.check_stages``).
LOSS_STAGE_COUNTS: dict[str, tuple[int, ...] | None] = {
    "bce": (2, 3),
    "icc": (2, 3),
    "rankflow": (2, 3),
    "fs_ranknet": (2, 3),
    "fs_lambdaloss": (2, 3),
    "arf": (2, 3),
    "arf_v2": (2, 3),
    "lcron": None,
}
SORT_OPS: tuple[str, ...] = ("neural_sort", "soft_sort")
# How LCRON computes its top-k probabilities (``models.losses.lcron.IMPLS``, checked by a test).
LCRON_IMPLS: tuple[str, ...] = ("auto", "dense", "blocked", "dense_xla", "blocked_xla")
WEIGHTINGS: tuple[str, ...] = ("uwl", "fixed")
# LCRON's L_single item weights (``models.losses.lcron.SINGLE_WEIGHTS``, checked by a test),
# or "auto": the authors' code of the cascade's depth (two_stage/: per_item; three_stage/:
# per_tied_rank, also used for deeper cascades).
LCRON_SINGLE_WEIGHTS: tuple[str, ...] = ("auto", "per_item", "per_tied_rank")
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
      lcron_single_weights: how L_single weighs each item (``models.losses.lcron``):
        "per_item" (y_i and 1 - y_i: the authors' two-stage code), "per_tied_rank" (the ranks
        an item's tied label group spans: their three-stage code, where a negative of a full
        group of 10 weighs 10) or "auto" (the authors' code of the cascade's depth: per_item
        for two stages, per_tied_rank for three and more).

    The stages' cut-offs (the baselines' ICC gates, RankFlow top-k, ARF supports) are the keeps
    of ``ModelConfig.stages``, the one source the metrics share.
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
    lcron_single_weights: Literal[LCRON_SINGLE_WEIGHTS] = "auto"

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> LossConfig:
        if values and "stage_keep" in values:
            raise ValueError(
                "LossConfig.stage_keep: the stages' cut-offs come from ModelConfig.stages (one"
                " source for the loss, the metrics and the model); set the stages' keep there"
            )
        return _from_dict(cls, values)

    def check_stages(self, num_stages: int) -> None:
        """Refuses, by name, a method without a reference form for ``num_stages`` stages."""
        counts = LOSS_STAGE_COUNTS[self.method]
        if counts is not None and num_stages not in counts:
            raise ValueError(
                f"LossConfig.method {self.method!r} has no {num_stages}-stage form (the"
                f" reference defines it for {list(counts)} stages); methods for any number of"
                f" stages: {[m for m, c in LOSS_STAGE_COUNTS.items() if c is None]}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@config_dataclass
class MetricConfig:
    """The cascade metrics' knobs; their cut-offs k1..kN are the stages' keeps
    (``ModelConfig.stages``): Recall@gt_num@k1@...@kN (the paper: 10 of 40, keep 30 then 20).
    """

    gt_num: AtLeast1 = 10
    ndcg_k: AtLeast1 = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> MetricConfig:
        if values and ({"k1", "k2"} & set(values)):
            raise ValueError(
                "MetricConfig.k1/k2: the metric's cut-offs are the stages' keeps; set them in"
                " ModelConfig.stages"
            )
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@config_dataclass
class ModelConfig:
    """The cascade's stages and their sizes (defaults: small, as the paper's 8-dim embeddings).

    Attributes:
      stages: the cascade, first (retrieval) stage first (``StageConfig``): the one source of
        the stage names, model kinds, cut-offs (the loss's and the metrics' k1..kN) and
        serving roles. Default: two-tower retrieval keeps 30, DIN ranking keeps 20.
      embedding_dim: size of every id embedding (both stages own their tables).
      retrieval_hidden: hidden layer widths of each retrieval tower's MLP.
      retrieval_output_dim: size of the query and candidate embeddings.
      retrieval_temperature: the retrieval score is <query, candidate> / temperature.
      ranking_hidden: hidden layer widths of the ranking stage's MLP head.
      attention_dim: width of the ranking stage's target-attention projections.
      prerank_hidden: hidden layer widths of a light pre-ranking stage's MLP (kind "mlp").
      top_k: K of the retrieval SavedModel's ``serving_default`` (fixed at export).
    """

    stages: tuple[StageConfig, ...] = DEFAULT_STAGES
    embedding_dim: AtLeast1 = 8
    retrieval_hidden: tuple[AtLeast1, ...] = (32,)
    retrieval_output_dim: AtLeast1 = 16
    retrieval_temperature: Positive = 1.0
    ranking_hidden: tuple[AtLeast1, ...] = (64, 32)
    attention_dim: AtLeast1 = 16
    prerank_hidden: tuple[AtLeast1, ...] = (32,)
    top_k: AtLeast1 = 100

    @pydantic.model_validator(mode="after")
    def _check_stages(self) -> ModelConfig:
        validate_stages(self.stages)
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ModelConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def stage_keeps(self) -> tuple[int, ...]:
        return stage_keeps(self.stages)


def check_cascade(
    model: ModelConfig,
    loss: LossConfig | None = None,
    metrics: MetricConfig | None = None,
    list_size: int | None = None,
) -> None:
    """Checks that the loss, the metrics and the list fit the model's stages, at configuration
    time; raises ``ValueError`` naming the field.

    ``ModelConfig.stages`` is the one source of the cut-offs; this checks what depends on them:
    ``LossConfig.gt_num`` / ``MetricConfig.gt_num`` at most the last keep, the first keep at
    most ``list_size``, and a loss method with a form for this many stages.
    """
    validate_stages(model.stages, list_size=list_size)
    if loss is not None:
        validate_stages(model.stages, gt_num=loss.gt_num, where="LossConfig.gt_num")
        loss.check_stages(len(model.stages))
    if metrics is not None:
        validate_stages(model.stages, gt_num=metrics.gt_num, where="MetricConfig.gt_num")


INDEX_KINDS: tuple[str, ...] = ("auto", "brute_force", "scann")


@config_dataclass
class IndexConfig:
    """Retrieval's top-K index, built at export (the SavedModel's signatures are the same for
    every kind; docs/serving.md has the measurements behind the defaults).

    Attributes:
      kind: "brute_force" (exact: every item scored, ``tfrs.layers.factorized_top_k.BruteForce``),
        "scann" (approximate: a ScaNN partition tree, ``models.scann_index.ScannIndex``; only
        the searched partitions are scored), or "auto": ScaNN from ``scann_min_items`` items
        up, brute force below.
      scann_min_items: corpus size from which "auto" picks ScaNN.
      num_leaves: ScaNN partitions; None: about sqrt(items).
      num_leaves_to_search: partitions searched per query; None: tuned at export, the fewest
        that reach ``target_recall`` against brute force on half of the recall queries (the
        other half measures the recall the push checks).
      target_recall: the recall@K the tuning aims at (above the push's floor, for a margin).
      scoring: "exact" (float32 dot products within the searched partitions: at tens of
        dimensions this costs little and leaves the partitions as the only approximation) or
        "quantized" (anisotropic hashing, then ``num_reordering_candidates`` re-scored exactly:
        for wide embeddings; at 16 dimensions it loses the large-norm items that a dot product
        ranks first, docs/serving.md).
      partitioning: "direction" (the embeddings centred on the mean item and partitioned by
        direction, spherical k-means), "l2" (k-means on the embeddings as they are, TFRS's
        layer), or "auto": the export builds both and keeps the one that reaches the target
        with fewer partitions searched (which is better depends on the embeddings' shape:
        docs/serving.md).
      dimensions_per_block: embedding dimensions per 4-bit code (quantized scoring).
      num_reordering_candidates: candidates re-scored exactly (quantized scoring); None: 10 x K.
      training_iterations: k-means iterations of the partitioning.
      query_groups: a batch's queries are searched in this many groups at once (one ScaNN op
        each, run concurrently by TensorFlow's inter-op threads; ScaNN searches one op's
        queries one after the other). Around the serving machine's cores; groups a batch does
        not fill cost ~0.05 ms each (docs/serving.md).
      recall_queries: queries (from the eval split) on which the export measures the index's
        recall@K against brute force; the push refuses an index below its recall floor.
    """

    kind: Literal[INDEX_KINDS] = "auto"
    scann_min_items: AtLeast1 = 250_000
    num_leaves: AtLeast1 | None = None
    num_leaves_to_search: AtLeast1 | None = None
    target_recall: Annotated[float, Interval(gt=0.0, le=1.0)] = 0.97
    scoring: Literal["exact", "quantized"] = "exact"
    partitioning: Literal["auto", "direction", "l2"] = "auto"
    dimensions_per_block: AtLeast1 = 1
    num_reordering_candidates: AtLeast1 | None = None
    training_iterations: AtLeast1 = 12
    query_groups: AtLeast1 = 4
    recall_queries: AtLeast0 = 1000

    def resolved_kind(self, num_items: int) -> str:
        """ "brute_force" or "scann" for a corpus of ``num_items``."""
        if self.kind != "auto":
            return self.kind
        return "scann" if num_items >= self.scann_min_items else "brute_force"

    def scann_params(self, num_items: int, k: int) -> dict[str, Any]:
        """``ScannIndex`` arguments for ``num_items`` items and top ``k``; ``leaves_to_search``
        is every leaf when the export tunes it (``num_leaves_to_search`` None)."""
        leaves = min(self.num_leaves or max(1, round(num_items**0.5)), num_items)
        return {
            "num_leaves": leaves,
            "leaves_to_search": min(leaves, self.num_leaves_to_search or leaves),
            "scoring": self.scoring,
            "partitioning": self.partitioning,
            "dimensions_per_block": self.dimensions_per_block,
            "reordering_candidates": self.num_reordering_candidates or 10 * k,
            "training_iterations": self.training_iterations,
            "query_groups": self.query_groups,
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
