"""Tasks: rule-based rewards on hand-written cases, seeded generation, held-out eval split."""

import numpy as np
import pytest

from erc_core.rl.tasks import ArithmeticTask, CountdownTask, Example, format_prompt, make_task, parse_int, safe_eval


def arith_example(a, op, b):
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Example(prompt=f"{a}{op}{b}=", instruction="", answer=str(value), meta={"value": value})


@pytest.mark.parametrize("response, expected", [
    ("46", 1.0), (" 46 ", 1.0), ("046", 1.0),           # correct (leading zeros parse as the same integer)
    ("45", 0.0), ("-46", 0.0),                          # wrong
    ("", 0.0), ("4 6", 0.0), ("46abc", 0.0), ("forty-six", 0.0), ("46=46", 0.0), ("+", 0.0),  # malformed
])
def test_arith_reward_strict(response, expected):
    task = ArithmeticTask(eval_size=5)
    assert task.reward(response, arith_example(12, "+", 34)) == expected


def test_arith_reward_negative_and_lenient():
    ex = arith_example(3, "-", 15)
    assert ArithmeticTask(eval_size=5).reward("-12", ex) == 1.0
    lenient = ArithmeticTask(eval_size=5, strict=False)
    assert lenient.reward("The answer is -12.", ex) == 1.0
    assert lenient.reward("3 - 15 = -13", ex) == 0.0
    assert lenient.reward("no idea", ex) == 0.0
    assert parse_int("x 7 y 9", strict=False) == 9 and parse_int("x 7", strict=True) is None


def cd_example(nums, target):
    return Example(prompt="", instruction="", answer="", meta={"numbers": tuple(sorted(nums)), "target": target})


@pytest.mark.parametrize("response, expected", [
    ("3*5+7", 1.0), ("7+5*3", 1.0), (" (5*3)+7 ", 1.0),      # correct, any order / parentheses
    ("3*5+6", 0.0), ("5*5+7", 0.0),                          # wrong numbers
    ("3*5-7", 0.0),                                          # right numbers, wrong value
    ("3*5", 0.0), ("3*5+7+7", 0.0),                          # numbers missing / used twice
    ("", 0.0), ("3*5+", 0.0), ("3/5+7", 0.0), ("3**5+7", 0.0), ("__import__('os')", 0.0), ("-3+5*7", 0.0),
])
def test_countdown_reward(response, expected):
    task = CountdownTask(eval_size=5)
    assert task.reward(response, cd_example([3, 5, 7], 22)) == expected


def test_safe_eval():
    assert safe_eval("(2+3)*4") == 20 and safe_eval("2-3") == -1
    for bad in ("2/3", "2**3", "-2", "a+1", "f(1)", "1e3", "2+", "9" * 80):
        assert safe_eval(bad) is None


@pytest.mark.parametrize("name", ["arith", "countdown"])
def test_generation_is_seeded_and_eval_split_held_out(name):
    task = make_task(name, eval_size=50)
    a = task.sample(np.random.default_rng(3), 200)
    b = task.sample(np.random.default_rng(3), 200)
    assert [e.prompt for e in a] == [e.prompt for e in b]
    assert len({e.prompt for e in task.eval_split}) == 50
    assert not {e.prompt for e in a} & {e.prompt for e in task.eval_split}
    assert [e.prompt for e in make_task(name, eval_size=50).eval_split] == [e.prompt for e in task.eval_split]
    for e in a[:50] + task.eval_split[:10]:  # the reference answer earns the reward; every char is in the alphabet
        assert task.reward(e.answer, e) == 1.0
        assert set(e.prompt + e.answer) <= set(task.chars)


def test_countdown_targets_are_reachable():
    task = CountdownTask(eval_size=20)
    for e in task.eval_split:
        sol = CountdownTask.solve(e.meta["numbers"], e.meta["target"])
        assert sol is not None and task.reward(sol, e) == 1.0


def test_format_prompt():
    ex = arith_example(1, "+", 2)
    assert format_prompt(ex, None, "plain") == "1+2="

    class Tok:
        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return f"<user>{msgs[0]['content']}<assistant>"

    ex = ArithmeticTask(eval_size=1).eval_split[0]
    assert format_prompt(ex, Tok(), "chat") == f"<user>{ex.instruction}<assistant>"
    with pytest.raises(ValueError, match="style"):
        format_prompt(ex, None, "xml")


def test_eval_split_covering_every_problem_is_an_error_not_a_hang():
    import numpy as np

    from erc_core.rl.tasks import make_task

    task = make_task("arith", max_operand=2, ops="+", eval_size=9)  # 3 x 3 = 9 problems, all held out
    with pytest.raises(ValueError, match="eval_size"):
        task.sample(np.random.default_rng(0), 4)


def test_answer_prefix_chat_prompt_and_strict_reward():
    """answer_prefix: empty system message, the reply opened with "a + b = ", and only the bare number earns 1."""
    task = ArithmeticTask(max_operand=20, ops="+", answer_prefix=True, eval_size=10)
    ex = task.sample(np.random.default_rng(0), 1)[0]
    a, b = (int(x) for x in ex.prompt[:-1].split("+"))
    assert ex.prefix == f"{a} + {b} = " and ex.system == "" and ex.meta["value"] == a + b
    assert ex.instruction == f"What is {a} + {b}? Reply with the number only."

    class Tok:
        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}" for m in msgs) + "<assistant>"

    assert format_prompt(ex, Tok(), "chat") == f"<system><user>{ex.instruction}<assistant>{a} + {b} = "
    plain = ArithmeticTask(max_operand=20, ops="+", eval_size=10).eval_split[0]
    assert format_prompt(plain, Tok(), "chat") == f"<user>{plain.instruction}<assistant>"  # no system, no prefix
    right = str(a + b)
    for response, expected in [(right, 1.0), (f" {right}\n", 1.0), (f"{right}.", 0.0), (f"{right}\n\nThis", 0.0),
                               (f"{a + b + 1}", 0.0), (f"{right} + 1", 0.0)]:
        assert task.reward(response, ex) == expected, response
