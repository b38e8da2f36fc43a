"""``get(config)``: the cascade loss named by a :class:`models.config.LossConfig`."""

from __future__ import annotations

from models.config import LossConfig
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


def get(config: LossConfig | None = None, num_stages: int = 2) -> CascadeLoss:
    """Builds the loss layer named by ``config.method`` with the config's knobs.

    Args:
      config: the loss configuration; None means the defaults (LCRON, the authors' settings).
      num_stages: stages in the cascade, first (retrieval) first.

    Returns:
      A :class:`CascadeLoss` layer; call it as ``layer(stage_logits, labels, mask)``.

    Raises:
      ValueError: for an unknown method name or an inconsistent config.
    """
    config = config or LossConfig()
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
        )
    if method not in LOSSES:
        raise ValueError(f"LossConfig.method: unknown loss {method!r}; known: {sorted(LOSSES)}")
    baseline = {
        **common,
        "group_size": config.group_size,
        "variant": config.baseline_variant,
        "stage_keep": config.stage_keep,
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
