"""``get(config)``: the cascade loss named by a :class:`models.config.LossConfig`."""

from __future__ import annotations

from collections.abc import Sequence

from models.config import DEFAULT_STAGES, LossConfig, stage_keeps
from models.losses import baselines, lcron
from models.losses.base import CascadeLoss

LOSSES: dict[str, type[CascadeLoss]] = {
    cls.method: cls
    for cls in (
        lcron.LcronLoss,
        baselines.BceLoss,
        baselines.IccLoss,
        baselines.RankFlowLoss,
        baselines.FsRankNetLoss,
        baselines.FsLambdaLossLoss,
        baselines.ArfLoss,
        baselines.ArfV2Loss,
    )
}


def get(
    config: LossConfig | None = None,
    num_stages: int | None = None,
    stage_keep: Sequence[int] | None = None,
) -> CascadeLoss:
    """Builds the loss layer named by ``config.method`` with the config's knobs.

    Args:
      config: the loss configuration; None means the defaults (LCRON, the authors' settings).
      num_stages: stages in the cascade, first (retrieval) first; None: ``len(stage_keep)``.
      stage_keep: how many items each stage keeps, first stage first (``ModelConfig.stages``'
        keeps: the baselines' cut-offs); None: the default cascade's (30, 20), or
        ``num_stages`` stages where only LCRON (which needs no cut-off) is asked for.

    Returns:
      A :class:`CascadeLoss` layer; call it as ``layer(stage_logits, labels, mask)``.

    Raises:
      ValueError: for an unknown method name, a method without a form for ``num_stages``
        stages, or an inconsistent config.
    """
    if stage_keep is None and num_stages in (None, len(DEFAULT_STAGES)):
        stage_keep = stage_keeps(DEFAULT_STAGES)
    if num_stages is None:
        num_stages = len(stage_keep)  # type: ignore[arg-type]
    if stage_keep is not None and len(stage_keep) != num_stages:
        raise ValueError(
            f"losses.get: {num_stages} stages but {len(stage_keep)} cut-offs {tuple(stage_keep)}"
        )
    config = config or LossConfig()
    config.check_stages(num_stages)
    common = {"num_stages": num_stages, "gt_num": config.gt_num}
    method = config.method
    if method == lcron.LcronLoss.method:
        return lcron.LcronLoss(
            **common,
            sort_op=config.sort_op,
            tau=config.tau,
            stage_top_k=config.stage_top_k,
            use_e2e=config.use_e2e,
            use_single=config.use_single,
            weighting=config.weighting,
            fixed_weights=config.fixed_weights,
            impl=config.lcron_impl,
            block_rows=config.lcron_block_rows,
            single_weights=_single_weights(config.lcron_single_weights, num_stages),
        )
    if method not in LOSSES:
        raise ValueError(f"LossConfig.method: unknown loss {method!r}; known: {sorted(LOSSES)}")
    baseline = {
        **common,
        "group_size": config.group_size,
        "variant": config.baseline_variant,
        "stage_keep": tuple(stage_keep or ()),
    }
    if method in (baselines.ArfLoss.method, baselines.ArfV2Loss.method):
        return LOSSES[method](**baseline, tau=config.arf_tau)
    if method == baselines.RankFlowLoss.method:
        return baselines.RankFlowLoss(**baseline, alpha=config.rankflow_alpha)
    if method == baselines.FsLambdaLossLoss.method:
        return baselines.FsLambdaLossLoss(
            **baseline, topn=config.lambda_topn, smooth_fraction=config.lambda_smooth_fraction
        )
    return LOSSES[method](**baseline)


def _single_weights(setting: str, num_stages: int) -> str:
    """LCRON's L_single weights: the setting, or for "auto" the authors' code of this depth."""
    if setting != "auto":
        return setting
    return lcron.PER_ITEM if num_stages <= 2 else lcron.PER_TIED_RANK
