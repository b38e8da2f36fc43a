"""The simulated world: users, videos, authors, and the true affinity between a user and a video.

The true affinity is deliberately not a dot product of a user vector and a video vector:

    taste(u, v)  = logsumexp_k(<U_uk, V_v> / sqrt(D)) - log K          (K = capacity interests)
    s(u, v, t)   = w_t * taste + w_c * C[u, cat2(v)] + w_a * q[author(v)] + w_p * pop[v]
                   - freshness_decay * log1p(hours since upload) + w_i * taste * q[author(v)]
                   + w_l * log1p(n_u(author(v)))
    affinity     = (s + sharpness * relu(s - 1) - mean) / std

``n_u(a)`` is how many of the user's recent effective views (the behaviour sequence at the
request) are by author ``a``: loyalty to creators the user has just been watching. It is a
user x author interaction that changes with every view; a ranking model that compares the
candidate with the sequence item by item sees it, a dot product of a pooled sequence and the
candidate can only approximate it with as many dimensions as there are authors.

``C`` is a user x category preference (partly shared by users of the same age and gender), ``q``
author quality and ``pop`` a video's log-popularity. With capacity > 1 the smooth maximum over
interests, the taste x author product and the relu make the function something a two-tower
model (one user vector . one video vector) can only approximate, while a ranking model that sees
the pair can learn more of it. ``mean`` / ``std`` are fixed on day 0 so stage noise and feedback
knobs are in units of the affinity's spread.

Ids are array indices: ``video_id`` = index into the video arrays (sorted by upload time, so the
videos available at time t are a prefix), ``user_id`` = index into the user arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from simulator.config import SimulatorConfig

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 24 * _MS_PER_HOUR
_CALIBRATION_PAIRS = 20_000


@dataclasses.dataclass
class World:
    """Mutable state of the world; grows by :meth:`start_day` (new users and videos, drift)."""

    config: SimulatorConfig
    # Users
    device_id: np.ndarray  # [U] int64
    age: np.ndarray  # [U] int64
    gender: np.ndarray  # [U] int64
    province: np.ndarray  # [U] int64
    activity: np.ndarray  # [U] float64, relative request rate
    interests: np.ndarray  # [U, K, D] float64
    category_pref: np.ndarray  # [U, C2] float64
    # Videos (sorted by upload time)
    upload_timestamp: np.ndarray  # [V] int64, ms
    author: np.ndarray  # [V] int64
    category_two: np.ndarray  # [V] int64
    upload_type: np.ndarray  # [V] int64
    duration: np.ndarray  # [V] int64, seconds
    item_vec: np.ndarray  # [V, D] float64
    log_popularity: np.ndarray  # [V] float64
    # Authors and demographics
    author_home: np.ndarray  # [A] int64
    author_quality: np.ndarray  # [A] float64
    demographic_pref: np.ndarray  # [ages, genders, C2] float64
    category_dir: np.ndarray  # [C2, D] float64, shared taste direction of a category's videos
    # Affinity standardisation (fixed on day 0)
    affinity_mean: float = 0.0
    affinity_std: float = 1.0

    @property
    def num_users(self) -> int:
        return len(self.age)

    @property
    def num_items(self) -> int:
        return len(self.upload_timestamp)

    @property
    def category_one(self) -> np.ndarray:
        return self.category_two // self.config.categories_per_level_one

    @classmethod
    def create(cls, config: SimulatorConfig, rng: np.random.Generator) -> World:
        """Day-0 world: ``num_users`` users and ``num_initial_items`` already-uploaded videos."""
        c = config
        n_c2 = c.num_categories_level_two
        world = cls(
            config=c,
            device_id=np.zeros(0, np.int64),
            age=np.zeros(0, np.int64),
            gender=np.zeros(0, np.int64),
            province=np.zeros(0, np.int64),
            activity=np.zeros(0),
            interests=np.zeros((0, c.capacity, c.latent_dim)),
            category_pref=np.zeros((0, n_c2)),
            upload_timestamp=np.zeros(0, np.int64),
            author=np.zeros(0, np.int64),
            category_two=np.zeros(0, np.int64),
            upload_type=np.zeros(0, np.int64),
            duration=np.zeros(0, np.int64),
            item_vec=np.zeros((0, c.latent_dim)),
            log_popularity=np.zeros(0),
            author_home=rng.integers(0, n_c2, c.num_authors),
            author_quality=rng.normal(0.0, 1.0, c.num_authors),
            demographic_pref=rng.normal(0.0, 1.0, (c.num_ages, c.num_genders, n_c2)),
            category_dir=rng.normal(0.0, 1.0, (n_c2, c.latent_dim)),
        )
        world._add_users(c.num_users, rng)
        start = c.start_timestamp_ms - c.initial_item_age_days * _MS_PER_DAY
        world._add_items(c.num_initial_items, start, c.start_timestamp_ms, rng)
        world._calibrate(rng)
        return world

    def start_day(self, day: int, rng: np.random.Generator) -> tuple[int, int]:
        """Applies drift and adds the day's new users and videos; returns (new users, new videos).

        Day 0 only adds nothing: the world is created as it is at the start of day 0.
        """
        c = self.config
        if day == 0:
            return 0, 0
        keep = np.sqrt(1.0 - c.taste_drift**2)
        self.interests = keep * self.interests + c.taste_drift * rng.normal(
            size=self.interests.shape
        )
        self.log_popularity = self.log_popularity + c.popularity_drift * rng.normal(
            size=self.num_items
        )
        self._add_users(c.new_users_per_day, rng)
        day_start = c.start_timestamp_ms + day * _MS_PER_DAY
        self._add_items(c.new_items_per_day, day_start, day_start + _MS_PER_DAY, rng)
        return c.new_users_per_day, c.new_items_per_day

    def _add_users(self, n: int, rng: np.random.Generator) -> None:
        c = self.config
        age = rng.integers(0, c.num_ages, n)
        gender = rng.integers(0, c.num_genders, n)
        share = c.demographic_category_share
        own = rng.normal(0.0, 1.0, (n, c.num_categories_level_two))
        pref = share * self.demographic_pref[age, gender] + np.sqrt(1.0 - share**2) * own
        self.device_id = np.concatenate([self.device_id, rng.integers(0, 10_000_000, n)])
        self.age = np.concatenate([self.age, age])
        self.gender = np.concatenate([self.gender, gender])
        self.province = np.concatenate([self.province, rng.integers(0, c.num_provinces, n)])
        self.activity = np.concatenate(
            [self.activity, rng.lognormal(0.0, c.user_activity_sigma, n)]
        )
        interests = rng.normal(0.0, 1.0, (n, c.capacity, c.latent_dim))
        self.interests = np.concatenate([self.interests, interests])
        self.category_pref = np.concatenate([self.category_pref, pref])

    def _add_items(self, n: int, start_ms: int, end_ms: int, rng: np.random.Generator) -> None:
        c = self.config
        author = rng.integers(0, c.num_authors, n)
        at_home = rng.random(n) < c.author_home_category_share
        category = np.where(
            at_home, self.author_home[author], rng.integers(0, c.num_categories_level_two, n)
        )
        # Videos of a category share a direction in taste space, so tastes and categories agree.
        vec = 0.6 * self.category_dir[category] + 0.8 * rng.normal(0.0, 1.0, (n, c.latent_dim))
        self.upload_timestamp = np.concatenate(
            [self.upload_timestamp, np.sort(rng.integers(start_ms, end_ms, n))]
        )
        self.author = np.concatenate([self.author, author])
        self.category_two = np.concatenate([self.category_two, category])
        self.upload_type = np.concatenate(
            [self.upload_type, rng.integers(0, c.num_upload_types, n)]
        )
        duration = np.clip(rng.lognormal(np.log(40.0), 0.8, n), 3, 600).astype(np.int64)
        self.duration = np.concatenate([self.duration, duration])
        self.item_vec = np.concatenate([self.item_vec, vec])
        self.log_popularity = np.concatenate([self.log_popularity, rng.normal(0.0, 1.0, n)])

    def _calibrate(self, rng: np.random.Generator) -> None:
        users = rng.integers(0, self.num_users, _CALIBRATION_PAIRS)
        items = rng.integers(0, self.num_items, (_CALIBRATION_PAIRS, 1))
        now = np.full(_CALIBRATION_PAIRS, self.config.start_timestamp_ms, np.int64)
        raw = self._raw_affinity(users, items, now)
        self.affinity_mean = float(raw.mean())
        self.affinity_std = float(raw.std()) or 1.0

    def affinity(
        self,
        users: np.ndarray,
        items: np.ndarray,
        now_ms: np.ndarray,
        author_counts: np.ndarray | None = None,
    ) -> np.ndarray:
        """True affinity, standardised with the day-0 mean and std.

        Args:
          users: [batch] user indices.
          items: [batch, n] video indices.
          now_ms: [batch] request times (ms), for the freshness term.
          author_counts: [batch, num_authors] the requests' recent views per author
            (:meth:`author_counts`); None means no recent views (the loyalty term is 0).

        Returns:
          [batch, n] float64.
        """
        raw = self._raw_affinity(users, items, now_ms, author_counts)
        return (raw - self.affinity_mean) / self.affinity_std

    def author_counts(self, histories: list[list[int]]) -> np.ndarray:
        """[len(histories), num_authors] int: views per author in each behaviour sequence."""
        counts = np.zeros((len(histories), self.config.num_authors), np.int64)
        for row, videos in enumerate(histories):
            if videos:
                np.add.at(counts[row], self.author[np.asarray(videos, np.int64)], 1)
        return counts

    def _raw_affinity(
        self,
        users: np.ndarray,
        items: np.ndarray,
        now_ms: np.ndarray,
        author_counts: np.ndarray | None = None,
    ) -> np.ndarray:
        c = self.config
        u = self.interests[users]  # [B, K, D]
        v = self.item_vec[items]  # [B, n, D]
        dots = np.einsum("bkd,bnd->bkn", u, v) / np.sqrt(c.latent_dim)
        peak = dots.max(axis=1)
        taste = peak + np.log(np.exp(dots - peak[:, None, :]).mean(axis=1))  # [B, n]
        quality = self.author_quality[self.author[items]]
        category = np.take_along_axis(self.category_pref[users], self.category_two[items], axis=1)
        age_hours = np.maximum(now_ms[:, None] - self.upload_timestamp[items], 0) / _MS_PER_HOUR
        s = (
            c.taste_weight * taste
            + c.category_weight * category
            + c.author_weight * quality
            + c.popularity_weight * self.log_popularity[items]
            - c.freshness_decay * np.log1p(age_hours)
            + c.interaction_weight * taste * quality
        )
        if author_counts is not None and c.loyalty_weight:
            seen = np.take_along_axis(author_counts, self.author[items], axis=1)
            s = s + c.loyalty_weight * np.log1p(seen)
        return s + c.nonlinearity_sharpness * np.maximum(s - 1.0, 0.0)
