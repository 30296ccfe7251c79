"""The reward-model judge with tiny randomly initialised models built offline in the test.

Two shapes cover the two input formats: a BERT-style encoder whose tokenizer marks text
pairs (scored as ``tokenizer(prompt, response)``) and a Llama-style decoder whose tokenizer
has no pair template and no pad token (scored on "prompt, blank line, response").
"""

import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from ctrlalign.evaluation.judges.rm import RewardModelJudge
from ctrlalign.evaluation.verdicts import Comparison, reward_verdict

CORPUS = [
    "how do i boil an egg",
    "put the egg in boiling water for eight minutes",
    "eggs are round and white",
    "summarize the post about my roommates fighting",
    "my roommates are fighting and not speaking to each other",
    "the cat sat on the mat while the dog runs fast",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[EOS]"]

COMPARISONS = [
    Comparison("how do i boil an egg", "put the egg in boiling water", "eggs are round"),
    Comparison("summarize the post", "my roommates are fighting", "the cat sat on the mat"),
    Comparison("how do i boil an egg", "eggs are white", "eggs are white"),
    Comparison("the dog", "runs fast " * 40, "sat"),
    Comparison("my roommates", "not speaking", "the egg in water for eight minutes"),
]


def word_tokenizer(pair_template: bool) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    if pair_template:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token="[EOS]")


def save_tiny_reward_model(folder, kind: str):
    torch.manual_seed(0)
    tokenizer = word_tokenizer(pair_template=kind == "bert")
    # A wide initialisation: the default (0.02) gives near-equal rewards, all ties.
    size = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    common = {"intermediate_size": 64, "num_labels": 1, "initializer_range": 0.3, **size}
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **common))
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=None, **common)
        model = LlamaForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["bert", "llama"])
def reward_model(request, tmp_path_factory):
    return save_tiny_reward_model(tmp_path_factory.mktemp(request.param), request.param)


def test_rewards_are_finite_and_deterministic(reward_model):
    judge = RewardModelJudge(reward_model, batch_size=2)
    prompts = [c.prompt for c in COMPARISONS]
    responses = [c.candidate for c in COMPARISONS]
    rewards = judge.score(prompts, responses)

    assert len(rewards) == len(COMPARISONS)
    assert all(math.isfinite(r) for r in rewards)
    assert len(set(rewards)) > 1
    assert judge.score(prompts, responses) == rewards
    # Batching and padding do not change a reward; a fresh load gives the same numbers.
    single = RewardModelJudge(reward_model, batch_size=1).score(prompts, responses)
    assert single == pytest.approx(rewards, abs=1e-4)


def test_verdicts_follow_rewards(reward_model):
    judgement = RewardModelJudge(reward_model, batch_size=3).judge(COMPARISONS)

    assert len(judgement.verdicts) == len(COMPARISONS)
    for c, b, verdict in zip(
        judgement.candidate_rewards, judgement.baseline_rewards, judgement.verdicts, strict=True
    ):
        assert verdict is reward_verdict(c, b)
    assert judgement.candidate_rewards[2] == pytest.approx(judgement.baseline_rewards[2])
    assert len(set(judgement.verdicts)) > 1  # the wide initialisation decides some pairs
    assert judgement.win_rate().n == len(COMPARISONS)


def test_input_format_follows_the_tokenizer(reward_model):
    judge = RewardModelJudge(reward_model)
    assert judge.uses_pairs is (reward_model.name.startswith("bert"))
    assert judge.model.config.pad_token_id is not None


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        RewardModelJudge(tmp_path / "no-such-model")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="pass its folder"):
        RewardModelJudge(tmp_path / "weights.bin")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        RewardModelJudge(tmp_path)  # exists, but holds no model


def test_mismatched_inputs(tmp_path_factory):
    judge = RewardModelJudge(save_tiny_reward_model(tmp_path_factory.mktemp("m"), "bert"))
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        judge.score(["a", "b"], ["c"])


def test_folder_without_weights_names_the_model(tmp_path):
    saved = save_tiny_reward_model(tmp_path / "full", "bert")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((saved / "config.json").read_text())
    with pytest.raises(OSError, match="cannot load reward model .*partial"):
        RewardModelJudge(partial)
