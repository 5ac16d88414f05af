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

Prompt, answer and reward follow the RESD task (checked by a differential run, docs/environments.md):
the prompt has the task's shape (context, question, then the answer format; our wording); the
answer is the last `<answer>...</answer>` (lower-case tags only) after removing every complete
`<think>...</think>` block and then anything before a remaining `</think>`; its comma-separated
tags are compared with the gold ones position by position, lower-cased and trimmed, with missing
positions wrong and extra ones ignored. `acc` is the fraction of entities tagged right (the
paper's per-test-case accuracy); a task is solved when all are right. The reward is binary
(all tags right) by default, as the paper states (per-task accuracy as reward); RESD's released
run scripts reward the fraction instead (`reward_mode="fraction"`). Feedback is the task's:
nothing when solved, one line saying the answer is partially or completely wrong with the correct
answer (`reveal_gold`), or a format note. Every step is linear in the completion's length, and
completions over `MAX_COMPLETION_CHARS` are refused unread.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable

from resd.envs.base import Environment, Outcome, Split, Task, clip_feedback
from resd.envs.text import MAX_COMPLETION_CHARS
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

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_ENTITY = re.compile(r'entity "(.*?)" in sentence', re.DOTALL)
_LEADING_SPACE = re.compile(r"\s*")


# --- prompt -------------------------------------------------------------------------------------
def split_context(record_context: str) -> tuple[str, str]:
    """(context, question) of an ACE record: an "Instruction: ... Input: ... Answer:" record splits
    into its input text and its instruction; any other (the FiNER batches) is all question."""
    if "Input: " in record_context and "Instruction: " in record_context:
        instruction = record_context.split("Input: ")[0].split("Instruction: ")[1].strip()
        return record_context.split("Input: ")[1].split("Answer: ")[0].strip(), instruction
    return "", record_context


def build_prompt(record_context: str) -> str:
    """The task's prompt shape (context, question, answer format), in our words."""
    context, question = split_context(record_context)
    return (f"Use the context below to answer the question.\n\n### Context:\n{context}\n\n### Question:\n"
            f"{question}\n\nThink it through, then give your final answer between <answer> and </answer>, "
            f"for example <answer>TagOne,TagTwo,TagThree,TagFour</answer>.\n")


# --- scoring (pure) -----------------------------------------------------------------------------
def _after_space(text: str, pos: int) -> int:
    return _LEADING_SPACE.match(text, pos).end()


def remove_thinking(text: str) -> str:
    """Drop every complete <think>...</think> block (each opening paired with the next closing,
    with the white space after it), then everything up to a remaining </think>, the reasoning
    whose opening tag was in the prompt. Tags are lower-case only. One pass: linear."""
    kept: list[str] = []
    pos = 0
    while True:
        opening = text.find(THINK_OPEN, pos)
        closing = text.find(THINK_CLOSE, opening + len(THINK_OPEN)) if opening >= 0 else -1
        if closing < 0:  # no complete block from here on
            kept.append(text[pos:])
            break
        kept.append(text[pos:opening])
        pos = _after_space(text, closing + len(THINK_CLOSE))
    rest = "".join(kept)
    closing = rest.find(THINK_CLOSE)
    return rest if closing < 0 else rest[_after_space(rest, closing + len(THINK_CLOSE)):]


def extract_answer(completion: str) -> str | None:
    """Text of the last <answer>...</answer> after the reasoning, trimmed; None if there is none.
    Pairs each opening tag with the next closing one in one linear pass: a run of unclosed
    <answer> tags costs one scan, not one scan per tag."""
    if not isinstance(completion, str):
        return None
    text = remove_thinking(completion)
    last: str | None = None
    pos = 0
    while True:
        opening = text.find(ANSWER_OPEN, pos)
        if opening < 0:
            return last
        closing = text.find(ANSWER_CLOSE, opening + len(ANSWER_OPEN))
        if closing < 0:  # no closing tag after this opening, so none after any later one
            return last
        last = text[opening + len(ANSWER_OPEN):closing].strip()
        pos = closing + len(ANSWER_CLOSE)


def split_tags(answer: str) -> list[str]:
    """The answer's comma-separated tags, as written."""
    return answer.split(",")


def judge_tags(predicted: list[str], gold: list[str]) -> list[bool]:
    """Position-wise, case-insensitive match of trimmed tags; the prediction is padded/truncated
    to the gold length."""
    padded = (predicted + [""] * len(gold))[: len(gold)]
    return [p.strip().lower() == g.strip().lower() for p, g in zip(padded, gold)]


FORMAT_FEEDBACK = "Wrong answer format: give the answer as <answer>your_answer</answer>."


def feedback_text(passed: list[bool], gold: list[str], reveal_gold: bool) -> str:
    """The task's feedback: nothing when all tags are right, else one verdict line."""
    if all(passed):
        return ""
    verdict = "partially" if any(passed) else "completely"
    return (f"Your answer is {verdict} wrong."
            + (f" The correct answer is {','.join(gold)}." if reveal_gold else ""))


def score_answer(completion: str, gold: list[str], *, reward_mode: str = "all", reveal_gold: bool = True) -> Outcome:
    n = len(gold)
    too_long = isinstance(completion, str) and len(completion) > MAX_COMPLETION_CHARS
    answer = None if too_long else extract_answer(completion)
    if answer is None:
        feedback = (f"The answer is longer than {MAX_COMPLETION_CHARS} characters and was not read. "
                    if too_long else "") + FORMAT_FEEDBACK
        return Outcome(reward=0.0, acc=0.0, passed=[False] * n, feedback=feedback,
                       details={"error": "format", "gold": gold})
    predicted = split_tags(answer)
    passed = judge_tags(predicted, gold)
    acc = sum(passed) / n
    reward = acc if reward_mode == "fraction" else float(all(passed))
    return Outcome(reward=reward, acc=acc, feedback=clip_feedback(feedback_text(passed, gold, reveal_gold)),
                   passed=passed, details={"predicted": predicted, "gold": gold})


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
    return Task(id=task_id, prompt=[{"role": "user", "content": build_prompt(record["context"])}],
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
    reward_mode: "all" (1.0 only when all four tags are right, the paper's per-task accuracy) or
                 "fraction" (the share right, as RESD's released run scripts reward it).
    reveal_gold: feedback names the correct answer (RESD's run scripts do; default True).
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
        return score_answer(completion, gold, reward_mode=self.reward_mode, reveal_gold=self.reveal_gold)

    def reference_solution(self, task: Task) -> str:
        """A completion with the gold tags (what a perfect tagger answers)."""
        return f"Each entity's sentence says what the number measures.\n<answer>{','.join(task.meta['target'])}</answer>"
