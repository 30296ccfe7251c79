"""``ctrlalign experiment FILE.yaml``: train what is missing, then evaluate, from one file.

The YAML names the data, the base model, the methods (each a set of ``TrainConfig``
overrides on top of a shared ``train`` block), the baseline, the judges and the
evaluation settings; ``scales`` holds named overrides (``--scale small``) that shrink the
paper's settings to what 2 CPU cores can run (``small``: SmolLM2 with a few dozen pairs;
``smoke``: the tiny model, minutes); a scale's ``only`` lists the methods it runs, when
not all of them. Layout of ``--output DIR``::

    experiment.yaml     the settings actually used (after --scale)
    runs/<method>/      one run directory per method (``ctrlalign train``'s format)
    reward-model/       the judge ``rm:trained`` trains with ``train-rm``, when used
    generations/ cache/ the evaluation's caches
    report.md ...       tables and plots (``report_writer``)

A killed experiment resumes: a run directory with ``run.yaml`` is done and skipped (one
killed mid-training resumes from its last checkpoint), and generation and judging reuse
their caches. A done run trained with other settings than the file now asks for is an
error, never silently reused.

Judges are ``rm:DIR_OR_HF_ID``, ``llm:URL`` or ``rm:trained``; an entry
``{use: rm:HF_ID, offline: rm:trained}`` uses the hub model when it can be loaded and
otherwise the fallback, and the report says which judged.

A file with a ``controllability`` block instead of a baseline and judges measures each
run's controls (``evaluation.controllability``) on prompts of the training data's held-out
split, writing ``controllability/<method>/`` per run (a finished one is reused) and one
``report.md`` of all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import yaml

from ctrlalign.data.io import output_lock, write_atomic
from ctrlalign.evaluation.controllability import (
    Axis,
    check_axes,
    evaluate_controllability,
    write_controllability,
)
from ctrlalign.evaluation.eval_data import eval_set_apart_from_training
from ctrlalign.evaluation.judges import (
    JudgeOptions,
    build_judge,
    hub_model_available,
    parse_judge_spec,
)
from ctrlalign.evaluation.runner import EvalOptions, EvaluationSetupError, prepare, run
from ctrlalign.inference.generation import GenerationConfig
from ctrlalign.model.rundir import RUN_FILE, load_run, read_run_info
from ctrlalign.training import TrainConfig, train_any
from ctrlalign.training.config import RewardModelConfig, upgrade_settings
from ctrlalign.training.guard import RUNTIME_SETTINGS
from ctrlalign.training.reward_model import is_trained, train_reward_model
from ctrlalign.training.splits import DataSplit, load_splits

log = logging.getLogger(__name__)

KEYS = {"name", "description", "model", "data", "train", "methods", "baseline", "evaluation"}
KEYS |= {"judges", "reward_model", "scales", "only", "controllability"}
#: a ``controllability`` block's keys and their defaults
CONTROLLABILITY = {
    "axes": None,
    "alphas": [0, 0.5, 1, 1.5],
    "compose": "native",
    "held_out": [],
    "max_prompts": 16,
    "max_new_tokens": 128,
    "batch_size": 16,
}
TRAINED_RM = "rm:trained"
RM_FOLDER = "reward-model"


class ExperimentError(ValueError):
    """The experiment file cannot run as written; raised before any training."""


def _merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``, mappings merged key by key, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_spec(path: str | Path, scale: str | None = None) -> dict:
    """The experiment file with the named scale applied, its top-level keys checked."""
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict):
        raise ExperimentError(f"{path}: expected a mapping")
    scales = spec.pop("scales", None) or {}
    if scale is not None:
        if scale not in scales:
            raise ExperimentError(f"{path}: no scale {scale!r}; it has {sorted(scales) or 'none'}")
        spec = _merge(spec, scales[scale])
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ExperimentError(f"{path}: unknown keys {unknown}; known: {sorted(KEYS)}")
    if "controllability" in spec:
        return _controllability_spec(path, spec)
    for key in ("model", "data", "methods", "baseline", "judges"):
        if not spec.get(key):
            raise ExperimentError(f"{path}: `{key}` is missing")
    if not {"train", "eval"} <= set(spec["data"]):
        raise ExperimentError(f"{path}: `data` needs `train` and `eval` (KIND:PATH specs)")
    if spec["baseline"] not in spec["methods"]:
        raise ExperimentError(f"{path}: baseline {spec['baseline']!r} is not among `methods`")
    if "only" in spec:  # a scale's rows: the subset of `methods` it trains and reports
        only = list(spec.pop("only"))
        unknown = sorted(set(only) - set(spec["methods"]))
        if unknown:
            raise ExperimentError(f"{path}: `only` names unknown methods {unknown}")
        if spec["baseline"] not in only:
            raise ExperimentError(f"{path}: `only` must keep the baseline {spec['baseline']!r}")
        spec["methods"] = {name: spec["methods"][name] for name in only}
    return spec


def _controllability_spec(path: str | Path, spec: dict) -> dict:
    for key in ("model", "data", "methods"):
        if not spec.get(key):
            raise ExperimentError(f"{path}: `{key}` is missing")
    if "train" not in spec["data"]:
        raise ExperimentError(f"{path}: `data` needs `train` (a KIND:PATH spec)")
    block = spec["controllability"] or {}
    unknown = sorted(set(block) - set(CONTROLLABILITY))
    if unknown:
        raise ExperimentError(
            f"{path}: controllability: unknown keys {unknown}; known: {sorted(CONTROLLABILITY)}"
        )
    spec["controllability"] = {**CONTROLLABILITY, **block}
    try:
        check_axes([Axis.parse(text) for text in spec["controllability"]["axes"] or []])
    except ValueError as err:
        raise ExperimentError(f"{path}: controllability.axes: {err}") from None
    return spec


def train_configs(spec: dict, output: Path) -> dict[str, TrainConfig]:
    """One checked ``TrainConfig`` per method: shared ``train`` block, then its own keys."""
    configs = {}
    for name, overrides in spec["methods"].items():
        values = {**(spec.get("train") or {}), **(overrides or {})}
        values |= {"data": spec["data"]["train"], "model": spec["model"]}
        values["output"] = str(output / "runs" / name)
        config = TrainConfig.from_dict(values, source=f"methods.{name}")
        config.validate()
        configs[name] = config
    return configs


def reward_model_config(spec: dict, output: Path) -> RewardModelConfig:
    """``train-rm`` settings for ``rm:trained``: the policies' data, model and split.

    Sharing the split (``eval_fraction``, ``seed``) means the reward model never trains on
    an evaluation prompt, and its held-out accuracy is measured on exactly those prompts.
    """
    shared = {k: v for k, v in (spec.get("train") or {}).items() if k in ("eval_fraction", "seed")}
    values = {"model": spec["model"], "data": spec["data"]["train"], **shared}
    values |= spec.get("reward_model") or {}
    values["output"] = str(output / RM_FOLDER)
    return RewardModelConfig.from_dict(values, source="reward_model")


def eval_options(spec: dict) -> EvalOptions:
    values = dict(spec.get("evaluation") or {})
    known = {f.name for f in dataclasses.fields(EvalOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ExperimentError(f"evaluation: unknown keys {unknown}; known: {sorted(known)}")
    if "tie_band" in values:
        values["tie_band"] = tuple(values["tie_band"])
    return EvalOptions(**values)


def _differences(stored: dict, wanted: dict) -> list[str]:
    """Settings that differ; a key the run does not record is a setting added after it was
    trained, so it matches."""
    return [
        f"{key}: trained with {stored[key]!r}, asked for {value!r}"
        for key, value in wanted.items()
        if key not in RUNTIME_SETTINGS and key in stored and not _same(key, stored[key], value)
    ]


def _same(key: str, stored: object, wanted: object) -> bool:
    """Runs record what the data resolved: ``preferences: None`` asks for all the data has,
    and data without the chosen/rejected pair records them as None."""
    if key == "preferences" and wanted is None:
        return True
    if key in ("chosen", "rejected") and stored is None:
        return True
    return stored == wanted


def _check_done_judge(config: RewardModelConfig, output: Path) -> None:
    """A trained judge is reused only under the same settings: its cached rewards in
    ``cache/`` are keyed by its folder, so a changed judge would mix old and new rewards."""
    folder = Path(config.output)
    if not is_trained(folder):
        return
    stored = yaml.safe_load((folder / "train_rm.yaml").read_text())
    changed = _differences(stored, config.to_dict())
    if changed:
        raise ExperimentError(
            f"the reward-model judge in {folder} was trained with other settings "
            f"({'; '.join(changed)}); delete it and {output / 'cache'}, or use another --output"
        )


def _check_done_run(name: str, config: TrainConfig) -> bool:
    """True when the run is trained with these settings; an error when with others."""
    folder = Path(config.output)
    if not (folder / RUN_FILE).is_file():
        return False
    changed = _differences(upgrade_settings(read_run_info(folder)), config.to_dict())
    if changed:
        raise ExperimentError(
            f"run {name} in {folder} was trained with other settings ({'; '.join(changed)}); "
            "delete it or use another --output"
        )
    return True


def resolve_judges(entries: list, output: Path) -> tuple[list[str], list[str]]:
    """Judge specs to use and notes on fallbacks; ``rm:trained`` becomes the RM folder."""
    specs, notes = [], []
    for entry in entries:
        if isinstance(entry, dict):
            if set(entry) - {"use", "offline"} or "use" not in entry:
                raise ExperimentError(f"judge entry {entry}: expected {{use: SPEC, offline: SPEC}}")
            spec, fallback = entry["use"], entry.get("offline")
        else:
            spec, fallback = str(entry), None
        kind, target = parse_judge_spec(spec)
        local = Path(target).expanduser().exists()
        if fallback and kind == "rm" and not local and not hub_model_available(target):
            notes.append(f"{spec} cannot be loaded here (offline); judged by {fallback} instead")
            spec = fallback
        parse_judge_spec(spec)
        specs.append(f"rm:{output / RM_FOLDER}" if spec == TRAINED_RM else spec)
    return specs, notes


def _check_before_training(
    spec: dict, judges: list[str], output: Path, options, configs: dict[str, TrainConfig]
) -> None:
    """Fail on bad evaluation data or judges now, not after an hour of training: a missing
    file, prompts without the references ROUGE needs, or (``leave_out_trained`` off) a
    prompt some run will train on."""
    data = spec["data"]["eval"]
    splits = [DataSplit.of(c.to_dict()) for c in configs.values()]
    refuse = not options.leave_out_trained
    eval_set, _ = eval_set_apart_from_training(data, options.max_examples, splits, refuse)
    if options.rouge and not eval_set.has_references:
        missing = sum(not r.reference for r in eval_set.records)
        raise EvaluationSetupError(
            f"{data}: ROUGE asked for, but {missing} of its {len(eval_set.records)} evaluation "
            "prompts have no reference"
        )
    task = options.task or ("summary" if eval_set.has_references else "dialogue")
    trained_rm = f"rm:{output / RM_FOLDER}"
    for judge in judges:
        if judge != trained_rm:
            build_judge(judge, output / "cache", JudgeOptions(task, options.judge_model)).check()


def run_experiment(
    path: str | Path,
    output: str | Path,
    scale: str | None = None,
    judges: list[str] | None = None,
    judge_model: str | None = None,
    placement: dict[str, str] | None = None,
    engine: str | None = None,
    eval_data: str | None = None,
) -> Path:
    """Run the experiment in ``path`` into ``output``; returns the path of ``report.md``.

    ``judges`` and ``judge_model`` replace the file's (the command line's ``--judge``);
    ``placement`` (device, dtype, attn_implementation) applies to training and evaluation;
    ``engine`` replaces the file's ``evaluation.engine``; ``eval_data`` (KIND:PATH) replaces
    ``data.eval`` with prompts that must all be new to the runs (an overlap is an error).
    """
    output = Path(output)
    spec = load_spec(path, scale)
    if "controllability" in spec:
        if eval_data:
            raise ExperimentError(f"--eval-data: {path} measures controllability, no evaluation")
        return run_controllability(spec, output, scale, path, placement or {})
    if judges:
        spec["judges"] = judges
    if judge_model:
        spec["evaluation"] = {**(spec.get("evaluation") or {}), "judge_model": judge_model}
    if engine:
        spec["evaluation"] = {**(spec.get("evaluation") or {}), "engine": engine}
    if eval_data:
        spec["data"] = {**spec["data"], "eval": eval_data}
        spec["evaluation"] = {**(spec.get("evaluation") or {}), "leave_out_trained": False}
    if placement:  # --device, --dtype, --attn-implementation: for training and evaluation
        spec["train"] = {**(spec.get("train") or {}), **placement}
        spec["evaluation"] = {**(spec.get("evaluation") or {}), **placement}
    configs = train_configs(spec, output)
    options = eval_options(spec)
    judge_specs, notes = resolve_judges(spec["judges"], output)
    rm_config = reward_model_config(spec, output)
    uses_trained_rm = f"rm:{output / RM_FOLDER}" in judge_specs
    if uses_trained_rm:
        rm_config.validate()
        _check_done_judge(rm_config, output)
    _check_before_training(spec, judge_specs, output, options, configs)
    done = {name: _check_done_run(name, config) for name, config in configs.items()}

    with output_lock(output):
        resolved = {**spec, "judges": judge_specs, "scale": scale, "source": str(path)}
        write_atomic(output / "experiment.yaml", yaml.safe_dump(resolved, sort_keys=False))
        order = [spec["baseline"], *(name for name in configs if name != spec["baseline"])]
        for number, name in enumerate(order, start=1):
            if done[name]:
                log.info("[%d/%d] %s: already trained, skipped", number, len(order), name)
                continue
            log.info("[%d/%d] training %s (%s)", number, len(order), name, configs[name].method)
            train_any(configs[name])
        if uses_trained_rm and not is_trained(rm_config.output):
            log.info("training the reward-model judge into %s", rm_config.output)
            train_reward_model(rm_config)

        runs = {name: configs[name].output for name in order[1:]}
        baseline = (spec["baseline"], configs[spec["baseline"]].output)
        plan = prepare(runs, baseline, spec["data"]["eval"], judge_specs, output, options)
        plan.notes += notes
        return run(plan)


SETTINGS_FILE = "settings.yaml"


def _measured(target: Path, settings: dict) -> bool:
    """Whether ``target`` holds a finished measurement with these settings (its settings
    file is written last); one with other settings is an error, never reused."""
    path = target / SETTINGS_FILE
    if not path.is_file():
        return False
    stored = yaml.safe_load(path.read_text())
    if stored != settings:
        changed = sorted(
            k for k in settings.keys() | stored.keys() if stored.get(k) != settings.get(k)
        )
        raise ExperimentError(
            f"{target} was measured with other settings ({', '.join(changed)}); remove it "
            "or use another --output"
        )
    return True


def run_controllability(
    spec: dict, output: Path, scale: str | None, path: str | Path, placement: dict[str, str]
) -> Path:
    """Train what is missing, then measure every run's controls; returns ``report.md``."""
    if placement:
        spec["train"] = {**(spec.get("train") or {}), **placement}
    configs = train_configs(spec, output)
    block = spec["controllability"]
    axes = check_axes([Axis.parse(text) for text in block["axes"]])
    _, held_out = load_splits(next(iter(configs.values())))  # every run's split is the same
    prompts = [r.chat for r in held_out.records[: block["max_prompts"]]]
    if not prompts:
        raise ExperimentError("controllability: the held-out split is empty (eval_fraction)")
    done = {name: _check_done_run(name, config) for name, config in configs.items()}
    generation = GenerationConfig(block["max_new_tokens"], batch_size=block["batch_size"])
    settings = {**block, "prompts": len(prompts)}  # what a finished measurement must match
    with output_lock(output):
        resolved = {**spec, "scale": scale, "source": str(path)}
        write_atomic(output / "experiment.yaml", yaml.safe_dump(resolved, sort_keys=False))
        sections = [f"# {spec.get('name', 'controllability')}", ""]
        for number, (name, config) in enumerate(configs.items(), start=1):
            if done[name]:
                log.info("[%d/%d] %s: already trained, skipped", number, len(configs), name)
            else:
                log.info("[%d/%d] training %s (%s)", number, len(configs), name, config.method)
                train_any(config)
            target = output / "controllability" / name
            if _measured(target, settings):
                log.info("%s: controllability already measured, reused", name)
            else:
                run = load_run(config.output, **placement)
                result = evaluate_controllability(
                    run,
                    prompts,
                    axes,
                    block["alphas"],
                    generation,
                    block["compose"],
                    block["held_out"],
                    progress=True,
                )
                write_controllability(result, target, name)
                write_atomic(target / SETTINGS_FILE, yaml.safe_dump(settings, sort_keys=False))
            table = (target / "report.md").read_text()
            sections += [f"## {name}", "", f"![Pareto]({target.relative_to(output)}/pareto.png)"]
            sections += ["", table]
        report = write_atomic(output / "report.md", "\n".join(sections))
    return report
