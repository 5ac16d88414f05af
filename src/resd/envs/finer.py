"""FiNER (RESD paper §4.1, Table 1: 1000 train / 500 test): tag numeric entities in financial
sentences with US-GAAP XBRL tags, four questions per task.

Data: the ACE-format JSONL batches (`{"context": ..., "target": "Tag1,Tag2,Tag3,Tag4"}`) read from
local files, or FiNER-139 (`nlpaueb/finer-139`, Loukas et al. 2022, CC BY-SA 4.0) from the
Hugging Face hub, batched four entities to a task by `batch_finer139`.

Which file is which (task-environments notes §3): RESD trains on
`finer_train_batched_1000_samples.jsonl` and tests on `finer_val_batched_500_samples.jsonl`. The
1000-record train file is not in any public snapshot we could read, so when it is missing the
train split is an error that names two fixes: point `train_path` at another disjoint file (ACE's
`finer_test_subset_006_seed42.jsonl` shares no sentence with the 500 test records), or set
`carve_train=N` to move N test records (a seeded shuffle) into train and test on the rest.

Scoring (notes §3): the answer is the last <answer>...</answer> after removing <think>...</think>;
tags are compared position by position, case-insensitively, after trimming spaces (missing
positions count as wrong, extra ones are ignored). `acc` is the fraction of entities tagged right
(the paper's per-test-case accuracy); a task is solved when all four are right. The reward is
binary all-four by default, as the paper states; RESD's released scripts reward the fraction
instead (`reward_mode="fraction"`).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable

from resd.envs.base import Environment, Outcome, Split, Task, clip_feedback
from resd.envs.text import strip_reasoning
from resd.errors import UserError

TRAIN_FILE = "finer_train_batched_1000_samples.jsonl"
TEST_FILE = "finer_val_batched_500_samples.jsonl"
DISJOINT_TRAIN_CANDIDATE = "finer_test_subset_006_seed42.jsonl"
DATA_DIR_ENV = "RESD_FINER_DIR"
DEFAULT_DATA_DIR = Path("..") / "shared" / "data" / "finer"
HF_DATASET = "nlpaueb/finer-139"
HF_SPLITS = {"train": "train", "test": "validation"}
"""RESD's test set is ACE's *validation* batches, so `source="hf"` tests on FiNER-139 validation."""
REWARD_MODES = ("all", "fraction")
CARVE_SEED = 0

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ENTITY = re.compile(r'entity "(.*?)" in sentence', re.DOTALL)
_OPTIONS = re.compile(r"tags(?: options)?:\s*,?(.*?)\.\s*Answer the following", re.DOTALL)


# --- prompt -------------------------------------------------------------------------------------
def build_prompt(context: str, n_entities: int) -> str:
    """Our wrapper around the ACE question text: ask for reasoning, then tags in <answer> tags."""
    example = ",".join(f"Tag{i}" for i in range(1, n_entities + 1))
    return (f"Tag the financial entities below with US-GAAP XBRL tags.\n\n{context.strip()}\n\n"
            f"Reason about each entity first. Then give exactly {n_entities} tags from the list, in the "
            f"order of the questions and separated by commas, between <answer> and </answer>, for "
            f"example <answer>{example}</answer>.")


def tag_options(context: str) -> list[str]:
    """The allowed tags listed in an ACE-format context ([] when the list cannot be found)."""
    match = _OPTIONS.search(context)
    if not match:
        return []
    return [t.strip() for t in match.group(1).split(",") if t.strip()]


# --- scoring (pure) -----------------------------------------------------------------------------
def extract_answer(completion: str) -> str | None:
    """Text of the last <answer>...</answer> after the reasoning, or None."""
    answers = _ANSWER.findall(strip_reasoning(completion))
    return answers[-1] if answers else None


def split_tags(answer: str) -> list[str]:
    """Comma-separated tags, trimmed of spaces and stray quotes/brackets."""
    return [t.strip().strip("\"'`[]").strip() for t in answer.split(",")]


def judge_tags(predicted: list[str], gold: list[str]) -> list[bool]:
    """Position-wise, case-insensitive match; the prediction is padded/truncated to the gold length."""
    padded = (predicted + [""] * len(gold))[: len(gold)]
    return [p.strip().lower() == g.strip().lower() for p, g in zip(padded, gold)]


def _positions(indices: list[int]) -> str:
    names = [str(i + 1) for i in indices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def feedback_text(predicted: list[str], gold: list[str], passed: list[bool], entities: list[str],
                  options: list[str], reveal_gold: bool) -> str:
    n = len(gold)
    k = sum(passed)
    if k == n:
        return f"All {n} tags are correct."
    wrong = [i for i, ok in enumerate(passed) if not ok]
    verdict = "completely" if k == 0 else "partially"
    lines = [f"The answer is {verdict} incorrect: {k}/{n} tags right; position{'s' if len(wrong) > 1 else ''} "
             f"{_positions(wrong)} {'are' if len(wrong) > 1 else 'is'} wrong."]
    if len(predicted) != n:
        lines.append(f"You gave {len(predicted)} tag{'s' if len(predicted) != 1 else ''}; exactly {n} are needed, "
                     f"one per question, in order.")
    allowed = {o.lower() for o in options}
    for i in wrong:
        said = predicted[i] if i < len(predicted) else ""
        entity = f' (entity "{entities[i]}")' if i < len(entities) and entities[i] else ""
        line = f"- {i + 1}{entity}: you said {said or '(nothing)'}"
        if said and allowed and said.lower() not in allowed:
            line += ", which is not one of the allowed tags"
        if reveal_gold:
            line += f"; the correct tag is {gold[i]}"
        lines.append(line)
    if reveal_gold:
        lines.append(f"The correct answer is <answer>{','.join(gold)}</answer>.")
    return "\n".join(lines)


def score_answer(completion: str, gold: list[str], entities: list[str], options: list[str], *,
                 reward_mode: str = "all", reveal_gold: bool = True) -> Outcome:
    n = len(gold)
    answer = extract_answer(completion)
    if answer is None or not answer.strip():
        why = "no <answer>...</answer> found" if answer is None else "the <answer></answer> is empty"
        example = ",".join(f"Tag{i}" for i in range(1, n + 1))
        return Outcome(reward=0.0, acc=0.0, passed=[False] * n,
                       feedback=(f"Format error: {why}. End your reply with the {n} tags, comma-separated, "
                                 f"inside <answer> tags, e.g. <answer>{example}</answer>."),
                       details={"error": "format", "gold": gold})
    predicted = split_tags(answer)
    passed = judge_tags(predicted, gold)
    acc = sum(passed) / n
    reward = acc if reward_mode == "fraction" else float(all(passed))
    feedback = feedback_text(predicted, gold, passed, entities, options, reveal_gold)
    return Outcome(reward=reward, acc=acc, feedback=clip_feedback(feedback), passed=passed,
                   details={"predicted": predicted, "gold": gold})


# --- data -------------------------------------------------------------------------------------
def read_batches(path: Path) -> list[dict[str, str]]:
    """ACE-format records of a JSONL file; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read FiNER file {path}: {exc.strerror or exc}") from exc
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("context"), str) or not isinstance(row.get("target"), str):
            raise UserError(f"{path}:{n}: expected {{\"context\": str, \"target\": \"Tag1,Tag2,...\"}} "
                            f"(the ACE FiNER format)")
        rows.append({"context": row["context"], "target": row["target"]})
    return rows


def batch_task(record: dict[str, str], task_id: str, origin: str) -> Task:
    gold = [t.strip() for t in record["target"].split(",")]
    return Task(id=task_id, prompt=[{"role": "user", "content": build_prompt(record["context"], len(gold))}],
                meta={"target": gold, "entities": _ENTITY.findall(record["context"]), "origin": origin})


def batch_finer139(rows: Iterable[dict[str, Any]], label_names: list[str], per_task: int = 4,
                   limit: int | None = None) -> list[dict[str, str]]:
    """FiNER-139 sentences ({"tokens": [...], "ner_tags": [...]}, IOB2 labels) -> ACE-style records
    of `per_task` entity questions each, in reading order."""
    options = sorted({name[2:] for name in label_names if name[:2] in ("B-", "I-")})
    header = ("You are given a list of US-GAAP XBRL tags: ," + ",".join(options)
              + ". Answer the following {n} questions, one tag per entity, in order.")
    questions: list[tuple[str, str, str]] = []  # (entity, sentence, tag)
    records: list[dict[str, str]] = []

    def flush() -> None:
        body = "\n".join(f'{i + 1}. Which tag fits entity "{e}" in sentence: "{s}"?'
                         for i, (e, s, _) in enumerate(questions))
        records.append({"context": header.format(n=len(questions)) + "\n" + body,
                        "target": ",".join(tag for _, _, tag in questions)})
        questions.clear()

    for row in rows:
        tokens, tags = list(row["tokens"]), [label_names[i] for i in row["ner_tags"]]
        sentence = " ".join(tokens)
        i = 0
        while i < len(tokens):
            if tags[i].startswith("B-"):
                tag = tags[i][2:]
                j = i + 1
                while j < len(tokens) and tags[j] == f"I-{tag}":
                    j += 1
                questions.append((" ".join(tokens[i:j]), sentence, tag))
                if len(questions) == per_task:
                    flush()
                    if limit is not None and len(records) >= limit:
                        return records
                i = j
            else:
                i += 1
    return records


class FiNER(Environment):
    """FiNER entity tagging, four entities per task.

    data_dir:    folder holding the ACE-format files (default: $RESD_FINER_DIR, else
                 ../shared/data/finer relative to the working directory).
    train_path:  train JSONL (default: data_dir/finer_train_batched_1000_samples.jsonl).
    test_path:   test JSONL (default: data_dir/finer_val_batched_500_samples.jsonl, RESD's test set).
    carve_train: when no train file exists, move this many test records (seeded shuffle) into train.
    source:      "files" (default) or "hf" (FiNER-139 from the hub, batched by `batch_finer139`).
    hf_limit:    tasks per split with source="hf" (default: the paper's 1000 train / 500 test).
    reward_mode: "all" (1.0 only when all four tags are right, the paper) or "fraction".
    reveal_gold: feedback names the correct tags (RESD's scripts do; default True).
    """

    name: ClassVar[str] = "finer"
    description: ClassVar[str] = ("FiNER: tag 4 numeric entities in financial text with US-GAAP XBRL tags "
                                  "(139 options); 1000 train / 500 test")

    def __init__(self, data_dir: str | None = None, train_path: str | None = None, test_path: str | None = None,
                 carve_train: int = 0, source: str = "files", hf_limit: dict[str, int] | None = None,
                 reward_mode: str = "all", reveal_gold: bool = True) -> None:
        if reward_mode not in REWARD_MODES:
            raise UserError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        if source not in ("files", "hf"):
            raise UserError(f"finer source must be 'files' (ACE-format JSONL) or 'hf' ({HF_DATASET}), got {source!r}")
        if not isinstance(carve_train, int) or isinstance(carve_train, bool) or carve_train < 0:
            raise UserError(f"carve_train must be a non-negative integer, got {carve_train!r}")
        root = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
        self.train_path = Path(train_path) if train_path else root / TRAIN_FILE
        self.test_path = Path(test_path) if test_path else root / TEST_FILE
        self.carve_train = carve_train
        self.source = source
        self.hf_limit = {"train": 1000, "test": 500, **(hf_limit or {})}
        self.reward_mode = reward_mode
        self.reveal_gold = bool(reveal_gold)
        self._tasks: dict[str, list[Task]] = {}

    def tasks(self, split: Split) -> list[Task]:
        if split not in ("train", "test"):
            raise UserError(f"split must be 'train' or 'test', got {split!r}")
        if split not in self._tasks:
            self._tasks.update(self._load_hf(split) if self.source == "hf" else self._load_files())
        if split not in self._tasks:
            raise self._train_missing()
        return self._tasks[split]

    def sizes(self) -> dict[str, int]:
        """Split sizes; a split whose file is missing counts 0 (tasks() says how to fix it)."""
        out = {}
        for split in ("train", "test"):
            try:
                out[split] = len(self.tasks(split))  # type: ignore[arg-type]
            except UserError:
                out[split] = 0
        return out

    def _load_files(self) -> dict[str, list[Task]]:
        if not self.test_path.is_file():
            raise UserError(f"FiNER test file not found: {self.test_path}. Download "
                            f"{TEST_FILE} from ace-agent/ace (finance/data/) and pass data_dir=... or "
                            f"test_path=..., set ${DATA_DIR_ENV}, or use source='hf'")
        test = [batch_task(r, f"finer-test-{i:04d}", f"{self.test_path}:{i + 1}")
                for i, r in enumerate(read_batches(self.test_path))]
        loaded: dict[str, list[Task]] = {"test": test}
        if self.train_path.is_file():
            loaded["train"] = [batch_task(r, f"finer-train-{i:04d}", f"{self.train_path}:{i + 1}")
                               for i, r in enumerate(read_batches(self.train_path))]
            if self.carve_train:
                raise UserError(f"carve_train={self.carve_train} is only for when there is no train file, "
                                f"but {self.train_path} exists; drop carve_train or pass another train_path")
        elif self.carve_train:
            if self.carve_train >= len(test):
                raise UserError(f"carve_train={self.carve_train} leaves no test tasks ({len(test)} in {self.test_path})")
            order = list(range(len(test)))
            random.Random(CARVE_SEED).shuffle(order)
            chosen = set(order[: self.carve_train])
            # Both splits keep the file order and the tasks keep their finer-test-NNNN ids.
            loaded = {"train": [t for i, t in enumerate(test) if i in chosen],
                      "test": [t for i, t in enumerate(test) if i not in chosen]}
        return loaded

    def _train_missing(self) -> UserError:
        alternative = self.test_path.parent / DISJOINT_TRAIN_CANDIDATE
        hint = (f"train_path={alternative} (ACE's test subset, no sentence shared with the test set), "
                if alternative.is_file() else "")
        return UserError(f"FiNER train file not found: {self.train_path} (RESD's {TRAIN_FILE} is not in any "
                         f"offline copy). Pass {hint}train_path=<your ACE-format JSONL>, carve_train=N to "
                         f"train on N records of the test file and test on the rest, or source='hf'")

    def _load_hf(self, split: str) -> dict[str, list[Task]]:
        try:
            import datasets

            data = datasets.load_dataset(HF_DATASET, split=HF_SPLITS[split])
            names = list(data.features["ner_tags"].feature.names)
        except Exception as exc:  # offline, hub errors, format changes: all reported the same way
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise UserError(f"could not load {HF_DATASET} from the Hugging Face hub ({type(exc).__name__}: "
                            f"{first}). Offline, use the ACE-format files: data_dir=... or "
                            f"train_path=/test_path=") from exc
        records = batch_finer139(data, names, limit=self.hf_limit[split])
        origin = f"{HF_DATASET}:{HF_SPLITS[split]}"
        return {split: [batch_task(r, f"finer-{split}-{i:04d}", f"{origin} batch {i}") for i, r in enumerate(records)]}

    def score(self, task: Task, completion: str) -> Outcome:
        gold = list(task.meta.get("target") or [])
        if not gold:
            raise UserError(f"task {task.id!r} has no FiNER gold tags in meta['target']")
        return score_answer(completion, gold, list(task.meta.get("entities") or []), tag_options(task.prompt_text),
                            reward_mode=self.reward_mode, reveal_gold=self.reveal_gold)

    def reference_solution(self, task: Task) -> str:
        """A completion with the gold tags (what a perfect tagger answers)."""
        return f"Each entity's sentence says what the number measures.\n<answer>{','.join(task.meta['target'])}</answer>"
