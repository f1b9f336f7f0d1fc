"""Each rule in one place: the trainer's Config accepts exactly the values the module that uses them accepts (the
ERC and penalty bands, the clip settings, the Clip-Cov / KL-Cov options, the tasks' sizes), and its error names
the config key with the owner's allowed range."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from erc_core.band import Band
from erc_core.checks import ParamError
from erc_core.losses import entropy_ratio_penalty, policy_loss
from erc_core.rl.config import Config, ConfigError
from erc_core.rl.tasks import ArithmeticTask, CountdownTask

NUMBERS = st.floats(-0.5, 3.0) | st.sampled_from([0.0, 1.0, math.inf, -math.inf, math.nan])


def accepts(make) -> bool:
    try:
        make()
    except ValueError:   # ConfigError and ParamError are ValueErrors
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(low=NUMBERS, high=NUMBERS)
def test_config_takes_the_bands_that_band_takes(low, high):
    band_ok = accepts(lambda: Band(low, high))
    assert accepts(lambda: Config(erc_low=low, erc_high=high)) == band_ok
    h = torch.ones(1, 2)   # the penalty's dead zone is a band too
    penalty_ok = accepts(lambda: entropy_ratio_penalty(h, h, h, bounds=(low, high)))
    assert penalty_ok == band_ok == accepts(lambda: Config(entropy_penalty_low=low, entropy_penalty_high=high))


@settings(max_examples=200, deadline=None)
@given(clip_low=NUMBERS, clip_high=NUMBERS, clip_c=NUMBERS)
def test_config_takes_the_clips_that_policy_loss_takes(clip_low, clip_high, clip_c):
    logp, mask = torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)
    loss_ok = accepts(lambda: policy_loss(logp, logp, torch.ones(1), mask, erc_bounds=None, clip_low=clip_low,
                                          clip_high=clip_high, clip_c=clip_c))
    assert accepts(lambda: Config(clip_low=clip_low, clip_high=clip_high, clip_c=clip_c)) == loss_ok


@settings(max_examples=100, deadline=None)
@given(ratio=NUMBERS, lb=NUMBERS, ub=NUMBERS, coef=NUMBERS)
def test_config_takes_the_cov_options_that_the_losses_take(ratio, lb, ub, coef):
    logp, mask = torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)

    def loss(mode, **options):
        return lambda: policy_loss(logp, logp, torch.ones(1), mask, erc_bounds=None, mode=mode, mode_options=options)

    clip_cov_ok = accepts(loss("clip_cov", clip_cov_ratio=ratio, clip_cov_lb=lb, clip_cov_ub=ub))
    assert accepts(lambda: Config(clip_cov_ratio=ratio, clip_cov_lb=lb, clip_cov_ub=ub)) == clip_cov_ok
    kl_cov_ok = accepts(loss("kl_cov", kl_cov_ratio=ratio, ppo_kl_coef=coef))
    assert accepts(lambda: Config(kl_cov_ratio=ratio, ppo_kl_coef=coef)) == kl_cov_ok


@settings(max_examples=60, deadline=None)
@given(max_operand=st.integers(-2, 6), ops=st.text("+-*/x", max_size=3), n_numbers=st.integers(0, 6),
       max_number=st.integers(-2, 6))
def test_config_takes_the_task_sizes_that_the_tasks_take(max_operand, ops, n_numbers, max_number):
    arith_ok = accepts(lambda: ArithmeticTask(max_operand=max_operand, ops=ops, eval_size=1))
    assert accepts(lambda: Config(arith_max_operand=max_operand, arith_ops=ops, eval_size=1)) == arith_ok
    countdown_ok = accepts(lambda: CountdownTask(n_numbers=n_numbers, max_number=max_number, eval_size=1))
    assert accepts(lambda: Config(task="countdown", countdown_numbers=n_numbers, countdown_max_number=max_number,
                                  eval_size=1)) == countdown_ok


@pytest.mark.parametrize("key, value, owner", [
    ("erc_high", 1.0, lambda: Band(0.95, 1.0)),
    ("clip_c", 0.5, lambda: policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1),
                                        torch.ones(1, 2, dtype=torch.bool), erc_bounds=None, clip_c=0.5)),
    ("arith_ops", "+/", lambda: ArithmeticTask(ops="+/", eval_size=1)),
])
def test_config_errors_name_the_key_and_the_owners_range(key, value, owner):
    with pytest.raises(ParamError) as owned:
        owner()
    with pytest.raises(ConfigError) as err:
        Config(**{key: value})
    allowed = owned.value.allowed.replace(owned.value.name, key)   # the owner's range, under the config's key
    assert str(err.value) == f"config key {key!r} = {value!r} is invalid: allowed {allowed}"
