"""Every knob of the log simulator in one typed, documented dataclass.

The world (users, items, the true affinity), the production cascade (pool size, how many items
each stage keeps, how noisy each stage's scorer is), exposure/feedback and drift between days all
read from :class:`SimulatorConfig`. Run-level choices (days, requests per day, seed, output format,
corruption) are arguments of :func:`simulator.simulate`, not config fields, so one config describes
one world and can be reused across runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Annotated, Any

import pydantic
from annotated_types import Ge, Interval

from models.config_schema import build, config_dataclass
from models.features import GROUP_SIZE, SEQ_LEN

# Field types with their ranges (checked by pydantic, named in errors).
AtLeast1 = Annotated[int, Ge(1)]
AtLeast0 = Annotated[int, Ge(0)]
NonNegative = Annotated[float, Ge(0)]
Share = Annotated[float, Interval(ge=0.0, le=1.0)]


@config_dataclass
class SimulatorConfig:
    """World, cascade and feedback knobs of the simulator (defaults give RecFlow-like logs).

    Sizes:
      num_users: users present on day 0.
      new_users_per_day: users who appear at the start of each later day (empty history).
      num_initial_items: videos uploaded during the ``initial_item_age_days`` before day 0.
      new_items_per_day: videos uploaded during each simulated day (upload times spread over the
        day; a video is a candidate only for requests after its upload).
      initial_item_age_days: how far back the initial videos' upload times reach.
      num_authors: authors; each has a home category most of their videos belong to.
      num_categories_level_one: top-level categories.
      categories_per_level_one: second-level categories under each top-level one
        (``category_level_two`` ids are global: ``level_one * categories_per_level_one + k``).
      num_upload_types, num_provinces, num_ages, num_genders: cardinalities of those fields.
      author_home_category_share: probability that a video is in its author's home category.

    True affinity (what the user really likes; feedback is drawn from it):
      latent_dim: size of the user interest and video embedding vectors.
      capacity: number of interest vectors per user. The taste term is a smooth maximum
        (log-sum-exp) over them, so capacity 1 is a dot product and larger values give tastes no
        single user vector (two-tower) can express, while a ranking model that sees the pair can.
      taste_weight, category_weight, author_weight, popularity_weight: scale of the taste term,
        of the user x category preference (part shared by age/gender, part individual), of author
        quality and of video popularity.
      demographic_category_share: share of the category preference explained by (age, gender).
      freshness_decay: penalty per log1p(hours since upload).
      interaction_weight: weight of a multiplicative term, taste x author quality (a
        non-additive effect that no sum of per-side scores reproduces).
      nonlinearity_sharpness: the summed score ``s`` passes through
        ``s + sharpness * relu(s - 1)`` (strong matches count for more than linearly).
      loyalty_weight: weight of ``log1p(n)``, n = how many of the user's recent effective views
        (the behaviour sequence at the request) are by the video's author: loyalty to the
        creators the user has just been watching, a user x author interaction that only a
        model comparing the candidate with the sequence item by item can see (0 turns it off).

    Cascade (one request = one candidate pool scored by four stages of increasing quality):
      pool_size: candidates per request, drawn from videos already uploaded, weighted by
        popularity and (with ``pool_personalization``) the user's category preference, standing in
        for the retrieval stage whose output the cascade logs start from.
      prerank_keep: candidates pre-ranking passes on (the rest are ``prerank_neg``).
      coarse_keep: candidates coarse ranking passes on (the rest are ``coarse_neg``); all of these
        are ranked, the top ``rerank_candidates`` are ``rank_pos``, the others ``rank_neg``.
      rerank_candidates: candidates ranking passes on to re-ranking (``rank_pos``). 10 (the
        default): re-ranking's output is what it exposes (``rerank_pos = realshow``, 4-8 items)
        and the ranking stage's top 10 are the two-stage setting's ground truth. 20: the paper's
        three-stage setting: re-ranking keeps its top 10 (``rerank_pos``, the ground truth),
        passes over the other 10 (``rerank_neg``) and exposes the first k of its top 10; with
        ``group_size`` 10 a request then logs 50 rows, 10 per group of ``rerank_pos``,
        ``rerank_neg``, ``rank_neg``, ``coarse_neg``, ``prerank_neg``.
      prerank_noise, coarse_noise, rank_noise, rerank_noise: standard deviation of each stage's
        scorer error, in units of the true affinity's standard deviation. Half of it is a fixed
        per-(user, video) bias of the stage, half fresh per request. Must not increase stage to
        stage (pre-ranking is the noisiest).
      min_exposed, max_exposed: the re-ranking stage reorders the ``rank_pos`` items and
        exposes its top k, k uniform in [min_exposed, max_exposed] per request.

    Feedback on exposed videos (0 everywhere else):
      feedback_reference: the affinity at which feedback rates are the nominal ones below; the
        exposed videos are the cascade's best, often by creators the user has just watched, and
        with the defaults sit several (about 8-10) standard deviations of a random pair above
        it, so that about half of the exposures are effective views.
      view_bias, view_scale: each exposure draws ``z = view_bias + view_scale * (a - ref) +
        logistic noise`` (``a`` the standardised affinity, ``ref`` = feedback_reference); the
        watched share of the video is ``sigmoid(z)``, ``playing_time = duration * sigmoid(z)``,
        and an effective view is ``z > 0`` (so P(effective_view) = sigmoid(view_bias +
        view_scale * (a - ref))).
      long_view_margin: a long view is ``z > long_view_margin`` (implies an effective view).
      like_rate, follow_rate, forward_rate, comment_rate: P(action | effective view) at
        ``a = ref``, times ``exp(a - ref)`` (capped at 1).

    Logging:
      group_size: rows logged per request from each of rank_neg, coarse_neg and prerank_neg
        (sampled uniformly); all rank_pos rows are always logged (``rerank_candidates`` of them).
      seq_len: length of the behaviour sequence (the user's last effective views).
      initial_history_max: day-0 users start with 0..this many past effective views.

    Time and drift:
      start_timestamp_ms: start of day 0 (UTC, ms since the epoch).
      taste_drift: per-day drift of users' interest vectors: u <- sqrt(1 - d^2) u + d * noise.
      popularity_drift: per-day random walk (std) on the videos' log-popularity.
      user_activity_sigma: lognormal spread of how often users send requests.
    """

    # Sizes
    num_users: AtLeast1 = 2000
    new_users_per_day: AtLeast0 = 100
    num_initial_items: AtLeast1 = 5000
    new_items_per_day: AtLeast0 = 500
    initial_item_age_days: AtLeast0 = 30
    num_authors: AtLeast1 = 400
    num_categories_level_one: AtLeast1 = 8
    categories_per_level_one: AtLeast1 = 6
    num_upload_types: AtLeast1 = 4
    num_provinces: AtLeast1 = 34
    num_ages: AtLeast1 = 8
    num_genders: AtLeast1 = 3
    author_home_category_share: Share = 0.7
    # True affinity
    latent_dim: AtLeast1 = 16
    capacity: AtLeast1 = 3
    taste_weight: float = 0.6
    category_weight: float = 0.4
    author_weight: float = 0.2
    popularity_weight: float = 0.2
    demographic_category_share: Share = 0.5
    freshness_decay: float = 0.15
    interaction_weight: float = 0.3
    nonlinearity_sharpness: float = 1.0
    loyalty_weight: float = 4.0
    # Cascade
    pool_size: AtLeast1 = 200
    pool_personalization: Share = 0.5
    prerank_keep: int = 100
    coarse_keep: int = 40
    rerank_candidates: int = GROUP_SIZE
    prerank_noise: NonNegative = 1.0
    coarse_noise: NonNegative = 0.6
    rank_noise: NonNegative = 0.3
    rerank_noise: NonNegative = 0.15
    min_exposed: int = 4
    max_exposed: int = 8
    # Feedback
    feedback_reference: float = 9.5
    view_bias: float = 0.0
    view_scale: NonNegative = 1.5
    long_view_margin: float = 1.5
    like_rate: Share = 0.08
    follow_rate: Share = 0.02
    forward_rate: Share = 0.02
    comment_rate: Share = 0.03
    # Logging
    group_size: AtLeast1 = GROUP_SIZE
    seq_len: AtLeast1 = SEQ_LEN
    initial_history_max: AtLeast0 = 30
    # Time and drift
    start_timestamp_ms: int = 1_704_067_200_000  # 2024-01-01 00:00 UTC
    taste_drift: Share = 0.1
    popularity_drift: NonNegative = 0.1
    user_activity_sigma: NonNegative = 1.0

    @pydantic.model_validator(mode="after")
    def _cascade_is_consistent(self) -> SimulatorConfig:
        if not self.pool_size > self.prerank_keep > self.coarse_keep > GROUP_SIZE:
            raise ValueError(
                "need pool_size > prerank_keep > coarse_keep > "
                f"{GROUP_SIZE} (every stage group non-empty), got {self.pool_size}, "
                f"{self.prerank_keep}, {self.coarse_keep}"
            )
        if not GROUP_SIZE <= self.rerank_candidates < self.coarse_keep:
            raise ValueError(
                f"need {GROUP_SIZE} <= rerank_candidates < coarse_keep (rank_neg non-empty), got "
                f"{self.rerank_candidates}, {self.coarse_keep}"
            )
        if self.num_initial_items < self.pool_size:
            raise ValueError(
                f"num_initial_items ({self.num_initial_items}) must be >= "
                f"pool_size ({self.pool_size})"
            )
        if not 1 <= self.min_exposed <= self.max_exposed <= GROUP_SIZE:
            raise ValueError(
                f"need 1 <= min_exposed <= max_exposed <= {GROUP_SIZE}, got "
                f"{self.min_exposed}, {self.max_exposed}"
            )
        noises = (self.prerank_noise, self.coarse_noise, self.rank_noise, self.rerank_noise)
        if any(a < b for a, b in itertools.pairwise(noises)):
            raise ValueError(
                "stage noise must not increase from pre-ranking to re-ranking, got " f"{noises}"
            )
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> SimulatorConfig:
        """Builds a config from a dict (JSON values); errors name the field."""
        return build(cls, values, cls.__name__)

    @classmethod
    def from_json_file(cls, path: str | Path) -> SimulatorConfig:
        """Reads a JSON object of field overrides (fields not named keep their defaults)."""
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of SimulatorConfig fields")
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def num_categories_level_two(self) -> int:
        return self.num_categories_level_one * self.categories_per_level_one
