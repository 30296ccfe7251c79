"""Loaders on the real data slices in ../shared/data and on small hand-made bad files."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from ctrlalign.data import DataError, PreferenceData, load_preference_data, split_records

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared(relative: str) -> Path:
    """A real data slice; absent, the test skips, or fails where CI sets
    ``CTRLALIGN_REQUIRE_SHARED_DATA=1`` (so a CI without the data cannot pass on less)."""
    path = DATA / relative
    if not path.is_file():
        message = f"real data slice {relative} absent: expected under {DATA.resolve()}"
        if os.environ.get("CTRLALIGN_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def jsonl_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def response_of(record) -> str:
    (text,) = record.responses.values()
    return text


def level_of(record) -> str:
    (name,) = record.responses
    return name


def hh(*turns: str) -> str:
    return "".join(
        f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns)
    )


def squash(text: str) -> str:
    return " ".join(text.split())


# --- Real data ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["helpful-base-test", "harmless-base-test"])
def test_hh_rlhf_splits_each_dialogue_at_its_last_assistant_turn(name):
    path = shared(f"hh-rlhf/{name}.jsonl.gz")
    raw = jsonl_lines(path)
    data = load_preference_data(f"hh-rlhf:{path}")

    assert data.pairwise and data.preferences == ["good", "bad"]
    assert (data.chosen, data.rejected) == ("good", "bad")
    assert len(data) > 2000
    assert data.dropped["prompt_mismatch"] > 0
    assert len(data) + sum(data.dropped.values()) == len(raw)

    first = raw[0]["chosen"]
    prompt, _, reply = first.rpartition("\n\nAssistant:")
    assert data.records[0].source == f"{name}.jsonl.gz:1"
    assert data.records[0].messages[-1] == ("user", prompt.split("\n\nHuman:")[-1].strip())
    assert data.records[0].responses["good"] == reply.strip()

    for record in data.records:
        line = int(record.source.rpartition(":")[2])
        assert record.messages[0][0] == "user" and record.messages[-1][0] == "user"
        for key, preference in (("chosen", "good"), ("rejected", "bad")):
            rebuilt = "".join(
                f"\n\n{'Human' if role == 'user' else 'Assistant'}: {content}"
                for role, content in record.messages
            )
            rebuilt += f"\n\nAssistant: {record.responses[preference]}"
            assert squash(rebuilt) == squash(raw[line - 1][key])


def test_pairwise_reads_the_gpt4_judged_tldr_pairs():
    path = shared("tldr/gpt4-judged-pairs.jsonl")
    raw = jsonl_lines(path)
    data = load_preference_data(f"pairwise:{path}", chosen="preferred", rejected="other")

    assert len(data) == len(raw) == 1000
    assert data.preferences == ["preferred", "other"] and data.pairwise
    first = data.records[0]
    assert first.messages == (("user", raw[0]["prompt"].strip()),)
    assert first.prompt_text.endswith("TL;DR:")
    assert first.responses == {
        "preferred": raw[0]["chosen"].strip(),
        "other": raw[0]["rejected"].strip(),
    }
    assert first.reference is None and first.source == "gpt4-judged-pairs.jsonl:1"


def test_pairwise_reads_ultrafeedback_and_drops_its_empty_responses():
    path = shared("ultrafeedback/binarized-1000.jsonl")
    raw = jsonl_lines(path)
    data = load_preference_data(f"pairwise:{path}")

    assert data.dropped == {"empty_response": 2}
    assert len(data) == 998
    assert data.records[0].messages == (("user", raw[0]["prompt"]),)
    assert data.records[0].responses["good"] == raw[0]["chosen"].strip()


def test_pairwise_takes_ultrafeedback_message_lists_minus_the_final_reply(tmp_path):
    raw = jsonl_lines(shared("ultrafeedback/binarized-1000.jsonl"))[:3]
    as_hub = [  # the Hugging Face layout: chosen/rejected are [user, assistant] lists
        {
            "prompt": row["prompt"],
            "chosen": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["chosen"]},
            ],
            "rejected": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["rejected"]},
            ],
        }
        for row in raw
    ]
    data = load_preference_data(f"pairwise:{write_jsonl(tmp_path / 'uf.jsonl', as_hub)}")

    assert len(data) == 3
    for record, row in zip(data.records, raw, strict=True):
        assert record.messages == (("user", row["prompt"].strip()),)
        assert record.responses == {"good": row["chosen"].strip(), "bad": row["rejected"].strip()}


def test_prompts_keep_the_human_reference_and_no_responses():
    path = shared("tldr/posts-references.jsonl")
    raw = jsonl_lines(path)
    data = load_preference_data(f"prompts:{path}")

    assert len(data) == len(raw) == 1300
    assert not data.pairwise and data.preferences == []
    assert all(record.responses == {} for record in data.records)
    assert data.records[0].reference == raw[0]["reference"].strip()
    assert data.records[0].prompt_text == raw[0]["prompt"].strip()


def test_labels_read_the_llama_factory_kto_demo():
    path = shared("pointwise/kto-demo.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    data = load_preference_data(f"labels:{path}")

    assert not data.pairwise and (data.chosen, data.rejected) == ("good", "bad")
    assert len(data) == 300
    assert Counter(name for r in data.records for name in r.responses) == {"good": 150, "bad": 150}
    first = data.records[0]
    assert first.source == "kto-demo.json[0]"
    assert first.messages == (("user", raw[0]["messages"][0]["content"].strip()),)
    assert first.responses == {"good": raw[0]["messages"][-1]["content"].strip()}
    longest = max(data.records, key=lambda record: len(record.messages))
    assert len(longest.messages) == 11 and longest.messages[-1][0] == "user"


def test_labels_read_trl_kto_rows(tmp_path):
    rows = [
        {"prompt": "Say hi.", "completion": "Hi!", "label": True},
        {"prompt": [{"role": "user", "content": "Say hi."}],
         "completion": [{"role": "assistant", "content": "Go away."}], "label": False},
    ]  # fmt: skip
    data = load_preference_data(
        f"labels:{write_jsonl(tmp_path / 'kto.jsonl', rows)}", chosen="ok", rejected="not-ok"
    )
    assert [r.responses for r in data.records] == [{"ok": "Hi!"}, {"not-ok": "Go away."}]
    assert {r.messages for r in data.records} == {(("user", "Say hi."),)}


def test_scores_quantise_real_ultrafeedback_scores_by_rank(tmp_path):
    raw = jsonl_lines(shared("ultrafeedback/binarized-1000.jsonl"))
    rows = [
        {"prompt": row["prompt"], "response": row[side], "score": row["metadata"][f"score_{side}"]}
        for row in raw
        for side in ("chosen", "rejected")
    ]
    data = load_preference_data(f"scores:{write_jsonl(tmp_path / 's.jsonl', rows)}", levels=2)

    assert data.preferences == ["level-1", "level-0"] and not data.pairwise
    assert (data.chosen, data.rejected) == ("level-1", "level-0")
    sizes = Counter(level_of(r) for r in data.records)
    assert 0.4 < sizes["level-0"] / len(data) < 0.6  # ties in 0.5 steps keep it from 50/50

    def score(record) -> float:
        return rows[int(record.source.rpartition(":")[2]) - 1]["score"]

    low = [score(r) for r in data.records if level_of(r) == "level-0"]
    high = [score(r) for r in data.records if level_of(r) == "level-1"]
    assert max(low) < min(high)  # tied scores never straddle two levels


def test_scores_split_distinct_scores_into_equal_levels(tmp_path):
    rows = [
        {"prompt": f"p{i % 7}", "response": f"r{i}", "score": (i * 37) % 100} for i in range(100)
    ]
    data = load_preference_data(f"scores:{write_jsonl(tmp_path / 's.jsonl', rows)}", levels=4)

    assert data.preferences == ["level-3", "level-2", "level-1", "level-0"]
    assert Counter(level_of(r) for r in data.records) == {f"level-{k}": 25 for k in range(4)}
    top = {response_of(r) for r in data.records if "level-3" in r.responses}
    assert top == {row["response"] for row in rows if row["score"] >= 75}


def test_attributes_give_one_record_per_attribute_on_topical_chat():
    path = shared("pointwise/topical-chat-multiattr.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    attributes = list(raw[0]["scores"])
    data = load_preference_data(f"attributes:{path}", levels=3)

    assert len(data) + data.dropped.get("duplicate", 0) == len(raw) * len(attributes)
    assert data.preferences[:3] == [f"{attributes[0]}-{k}" for k in (2, 1, 0)]
    assert len(data.preferences) == 3 * len(attributes) and data.chosen is None
    per_response = Counter(r.source for r in data.records)
    assert per_response["topical-chat-multiattr.json[0]"] == len(attributes)
    first = [r for r in data.records if r.source == "topical-chat-multiattr.json[0]"]
    assert [name.rpartition("-")[0] for r in first for name in r.responses] == attributes
    assert {response_of(r) for r in first} == {raw[0]["system_output"].strip()}
    context = [line.strip() for line in raw[0]["source"].split("\n") if line.strip()]
    assert first[0].messages[-1] == ("user", context[-1])
    assert [content for _, content in first[0].messages] == context


def test_attributes_can_be_restricted_and_quantise_each_one_alone():
    path = shared("pointwise/topical-chat-multiattr.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    data = load_preference_data(f"attributes:{path}", levels=2, attributes=["coherence"])

    assert data.preferences == ["coherence-1", "coherence-0"]
    assert (data.chosen, data.rejected) == ("coherence-1", "coherence-0")
    assert len(data) + data.dropped.get("duplicate", 0) == len(raw)
    score = {
        f"topical-chat-multiattr.json[{i}]": row["scores"]["coherence"] for i, row in enumerate(raw)
    }
    low = [score[r.source] for r in data.records if "coherence-0" in r.responses]
    high = [score[r.source] for r in data.records if "coherence-1" in r.responses]
    assert max(low) < min(high) and 0.3 < len(low) / len(data) < 0.7


def test_attributes_read_helpsteer2_nemo_rows():
    path = shared("pointwise/helpsteer2-sample.jsonl")
    raw = jsonl_lines(path)
    data = load_preference_data(f"attributes:{path}", levels=2)

    names = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    assert data.preferences == [f"{n}-{k}" for n in names for k in (1, 0)]
    assert len(data) == 5 * len(raw)
    first = data.records[0]
    assert first.messages[0][0] == "system" and first.messages[0][1].startswith("A chat between")
    assert first.messages[1:] == (("user", "explain master slave replication nsql"),)
    assert response_of(first).startswith("In the context of NoSQL databases")
    assert first.responses.keys() == {"helpfulness-1"}  # 4.0, the top helpfulness here


def test_attributes_read_the_generic_layout(tmp_path):
    rows = [
        {"prompt": "q", "response": "short", "scores": {"brevity": 9, "detail": 1}},
        {"prompt": "q", "response": "long and detailed", "scores": {"brevity": 2, "detail": 8}},
    ]
    data = load_preference_data(f"attributes:{write_jsonl(tmp_path / 'a.jsonl', rows)}")
    assert [r.responses for r in data.records] == [
        {"brevity-1": "short"},
        {"detail-0": "short"},
        {"brevity-0": "long and detailed"},
        {"detail-1": "long and detailed"},
    ]


# --- Bad input ------------------------------------------------------------------------


GOOD_PAIR = {"prompt": "q", "chosen": "yes", "rejected": "no"}


def bad_pairs(tmp_path: Path, third_line: str) -> str:
    lines = [json.dumps(GOOD_PAIR), json.dumps({**GOOD_PAIR, "prompt": "q2"}), third_line]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"pairwise:{path}"


@pytest.mark.parametrize(
    ("third_line", "message"),
    [
        ('{"prompt": "q", "chosen": ', r"data\.jsonl line 3: not valid JSON"),
        ('{"prompt": "q", "rejected": "no"}', r"data\.jsonl line 3: field 'chosen' is missing"),
        (
            '{"prompt": "q", "chosen": 7, "rejected": "no"}',
            r"data\.jsonl line 3: field 'chosen' must be a string or a list of messages, got a num",
        ),
        (
            '{"prompt": "  ", "chosen": "a", "rejected": "b"}',
            r"data\.jsonl line 3: field 'prompt' has an empty prompt",
        ),
        (
            '{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant"}], "rejected": 1}',
            r"data\.jsonl line 3: field 'chosen\[1\]\.content' is missing",
        ),
        (
            '{"prompt": "q", "chosen": [{"role": "user", "content": "q"}], "rejected": "b"}',
            r"data\.jsonl line 3: field 'chosen' must end with an assistant message",
        ),
        ('["q", "a", "b"]', r"data\.jsonl line 3: expected a JSON object, got a list"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, third_line, message):
    with pytest.raises(DataError, match=message):
        load_preference_data(bad_pairs(tmp_path, third_line))


def test_json_list_errors_name_the_index(tmp_path):
    path = tmp_path / "kto.json"
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    path.write_text(json.dumps([{**rows[0], "label": True}, {**rows[0], "label": "yes"}]))
    with pytest.raises(DataError, match=r"kto\.json index 1: field 'label' must be true or false"):
        load_preference_data(f"labels:{path}")


def test_bad_scores_name_the_field(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "q", "response": "a", "score": "high"}])
    with pytest.raises(DataError, match=r"s\.jsonl line 1: field 'score' must be a finite number"):
        load_preference_data(f"scores:{path}")
    path = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "q", "response": "a", "scores": {"x": 1}}])
    with pytest.raises(DataError, match=r"a\.jsonl line 1: field 'scores' has no score for 'y'"):
        load_preference_data(f"attributes:{path}", attributes=["y"])


def test_empty_responses_are_dropped_and_counted(tmp_path):
    spec = bad_pairs(tmp_path, '{"prompt": "q3", "chosen": " ", "rejected": "no"}')
    data = load_preference_data(spec)
    assert len(data) == 2 and data.dropped == {"empty_response": 1}


def test_hh_pairs_with_different_prompts_are_dropped_and_counted(tmp_path):
    rows = [
        {"chosen": hh("hi", "hello"), "rejected": hh("hi", "go away")},
        {"chosen": hh("a", "b", "c", "d"), "rejected": hh("a", "X", "c", "e")},
    ]
    data = load_preference_data(f"hh-rlhf:{write_jsonl(tmp_path / 'hh.jsonl', rows)}")
    assert len(data) == 1 and data.dropped == {"prompt_mismatch": 1}
    assert data.records[0].messages == (("user", "hi"),)
    assert data.records[0].responses == {"good": "hello", "bad": "go away"}
    with pytest.raises(DataError, match=r"hh\.jsonl line 1: field 'chosen' has no"):
        load_preference_data(f"hh-rlhf:{write_jsonl(tmp_path / 'hh.jsonl', [GOOD_PAIR])}")


def test_duplicates_are_dropped_and_counted(tmp_path):
    rows = [GOOD_PAIR, {**GOOD_PAIR, "prompt": " q "}, {**GOOD_PAIR, "chosen": "sure"}]
    data = load_preference_data(f"pairwise:{write_jsonl(tmp_path / 'd.jsonl', rows)}")
    assert len(data) == 2 and data.dropped == {"duplicate": 1}
    assert [r.source for r in data.records] == ["d.jsonl:1", "d.jsonl:3"]


@pytest.mark.parametrize("spec", ["data.jsonl", "csv:data.csv", "HH-RLHF:x.jsonl"])
def test_unknown_kinds_list_the_accepted_ones(spec):
    with pytest.raises(
        DataError, match="hh-rlhf, pairwise, preferences, prompts, scores, labels, attributes, hf"
    ):
        load_preference_data(spec)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_preference_data(f"pairwise:{tmp_path / 'nope.jsonl'}")


def test_bad_arguments_are_refused(tmp_path):
    spec = bad_pairs(tmp_path, json.dumps(GOOD_PAIR))
    with pytest.raises(ValueError, match="levels"):
        load_preference_data(spec, levels=1)
    with pytest.raises(ValueError, match="attributes"):
        load_preference_data(spec, attributes=["x"])
    with pytest.raises(ValueError, match="chosen and rejected"):
        load_preference_data(spec, chosen="same", rejected="same")


def test_loading_writes_nothing(tmp_path):
    spec = bad_pairs(tmp_path, json.dumps(GOOD_PAIR))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    load_preference_data(spec)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


# --- Hugging Face datasets ------------------------------------------------------------


def test_a_missing_hub_dataset_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets  # a dependency, not optional: a missing one fails here
    import huggingface_hub.constants as hub_constants

    # Both libraries read those variables at import, which another test may have done first.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(DataError, match=r"hf:ctrlalign-tests/no-such-dataset split 'test'"):
        load_preference_data("hf:ctrlalign-tests/no-such-dataset:test")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [
                {
                    "chosen": "\n\nHuman: hi\n\nAssistant: hello",
                    "rejected": "\n\nHuman: hi\n\nAssistant: go",
                }
            ],
            {"good": "hello", "bad": "go"},
        ),
        ([{**GOOD_PAIR, "extra": 1}], {"good": "yes", "bad": "no"}),
    ],
)
def test_hub_layouts_are_detected_from_the_columns(monkeypatch, rows, expected):
    import datasets

    calls = []

    def fake_load(dataset_id, split):
        calls.append((dataset_id, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = load_preference_data("hf:someone/pairs")
    assert calls == [("someone/pairs", "train")]
    assert data.records[0].responses == expected
    assert data.records[0].source == "someone/pairs:train[0]"


def test_hub_columns_of_no_known_layout_are_refused(monkeypatch):
    import datasets

    monkeypatch.setattr(
        datasets, "load_dataset", lambda dataset_id, split: datasets.Dataset.from_list([{"x": 1}])
    )
    with pytest.raises(DataError, match=r"columns \['x'\] match no layout"):
        load_preference_data("hf:someone/other:validation")


# --- Splitting ------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_covers_everything():
    data = load_preference_data(f"pairwise:{shared('tldr/gpt4-judged-pairs.jsonl')}")
    train, held_out = split_records(data, 0.1, seed=3)

    assert isinstance(train, PreferenceData) and train.preferences == data.preferences
    assert len(held_out) == 100 and len(train) == 900
    assert {r.key() for r in train.records}.isdisjoint({r.key() for r in held_out.records})
    assert sorted(train.records + held_out.records, key=lambda r: r.source) == sorted(
        data.records, key=lambda r: r.source
    )
    again, again_held_out = split_records(data, 0.1, seed=3)
    assert again.records == train.records and again_held_out.records == held_out.records
    other_train, _ = split_records(data, 0.1, seed=4)
    assert other_train.records != train.records


def test_split_keeps_every_prompt_on_one_side():
    data = load_preference_data(f"attributes:{shared('pointwise/topical-chat-multiattr.json')}")
    train, held_out = split_records(data, 0.25, seed=0)
    assert len(train) + len(held_out) == len(data) and len(held_out) > 0
    assert {r.messages for r in train.records}.isdisjoint({r.messages for r in held_out.records})


def test_preferences_kind_keeps_every_named_response(tmp_path):
    path = tmp_path / "styles.jsonl"
    rows = [
        {
            "prompt": "Why is the sky blue?",
            "responses": {
                "concise": "Scattering.",
                "detailed": "Air molecules scatter blue light more than red light.",
            },
        },
        {"prompt": "What is rain?", "responses": {"concise": "Falling water.", "formal": "Water."}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_preference_data(f"preferences:{path}", chosen="detailed", rejected="concise")
    assert data.preferences == ["concise", "detailed", "formal"]
    assert (data.chosen, data.rejected) == ("detailed", "concise")
    assert data.records[1].responses == {"concise": "Falling water.", "formal": "Water."}
    path.write_text(json.dumps({"prompt": "x", "responses": {"concise": 3}}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'responses.concise' must be a string"):
        load_preference_data(f"preferences:{path}")
    path.write_text(json.dumps({"prompt": "x", "responses": []}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'responses' must be an object"):
        load_preference_data(f"preferences:{path}")
