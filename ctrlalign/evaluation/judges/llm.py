"""The paper's GPT-4 judge, sent to any OpenAI-compatible chat-completions endpoint.

Appendix C of the MEET paper (seed 002) gives two prompts: DPO's summary prompt for TL;DR
and MT-bench's pairwise prompt for dialogue. Every pair is judged twice, with the candidate
shown first and then second, and the two verdicts are combined (``combine_orders``) to
cancel the judge's position bias.

Only the standard library is used, so the judge runs wherever Python does and works with
vLLM, llama.cpp, TGI or OpenAI alike. Replies are cached on disk keyed by (model, prompt):
an interrupted or repeated evaluation never pays for the same judgement twice. A reply that
names no verdict is counted as ``unparseable`` and a request that keeps failing as
``failed``; neither is turned into a tie, so the reader sees how many pairs were decided.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ctrlalign.evaluation.judges.base import Decisions, JudgeSpecError, ReplyCache
from ctrlalign.evaluation.verdicts import Comparison, Verdict, WinRate, combine_orders

Message = dict[str, str]

TASKS = ("summary", "dialogue")

# Appendix C, summarization: "We use the same prompt as DPO (Rafailov et al., 2023)". The
# backslashes in the paper are line continuations of DPO's Python string; the placeholders
# sit on their own lines as in DPO's appendix.
SUMMARY_PROMPT = """Which of the following summaries does a better job of summarizing the \
most important points in the given forum post, without including unimportant or irrelevant \
details? A good summary is both precise and concise.

Post:
{prompt}

Summary A:
{answer_a}

Summary B:
{answer_b}

FIRST provide a one-sentence comparison of the two summaries, explaining which you prefer \
and why. SECOND, on a new line, state only "A" or "B" to indicate your choice. Your response \
should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"A" or "B">"""

# Appendix C, dialogue: MT-bench's pairwise prompt (Zheng et al., 2023), system + template.
DIALOGUE_SYSTEM_PROMPT = """Please act as an impartial judge and evaluate the quality of the \
responses provided by two AI assistants to the user question displayed below. You should \
choose the assistant that follows the user's instructions and answers the user's question \
better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, \
depth, creativity, and level of detail of their responses. Begin your evaluation by comparing \
the two responses and provide a short explanation. Avoid any positional biases and ensure \
that the order in which the responses were presented does not influence your decision. Do \
not allow the length of the responses to influence your evaluation. Do not favor certain \
names of the assistants. Be as objective as possible. After providing your explanation, \
output your final verdict by strictly following this format: "[[A]]" if assistant A is \
better, "[[B]]" if assistant B is better, and "[[C]]" for a tie."""

DIALOGUE_PROMPT = """[User Question]
{prompt}
[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]
[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]"""

_SUMMARY_CHOICE = re.compile(r"Preferred:\**\s*[\"'<(\[*]*\s*([AB])\b")
_DIALOGUE_CHOICE = re.compile(r"\[\[([ABC])\]\]")

# Verdict for the candidate given the judge's choice, by the candidate's position.
_CANDIDATE_AS_A = {"A": Verdict.WIN, "B": Verdict.LOSE, "C": Verdict.TIE}
_CANDIDATE_AS_B = {"A": Verdict.LOSE, "B": Verdict.WIN, "C": Verdict.TIE}


class JudgeUnreachableError(ConnectionError):
    """The judge endpoint could not be contacted at all; the message names the URL."""


def build_messages(task: str, prompt: str, answer_a: str, answer_b: str) -> list[Message]:
    """The chat messages the paper sends for one ordering of a pair."""
    fields = {"prompt": prompt, "answer_a": answer_a, "answer_b": answer_b}
    if task == "summary":
        return [{"role": "user", "content": SUMMARY_PROMPT.format(**fields)}]
    if task == "dialogue":
        return [
            {"role": "system", "content": DIALOGUE_SYSTEM_PROMPT},
            {"role": "user", "content": DIALOGUE_PROMPT.format(**fields)},
        ]
    raise ValueError(f"unknown judge task {task!r}; expected one of {TASKS}")


def parse_choice(task: str, reply: str) -> str | None:
    """ "A", "B" or "C" (tie, dialogue only) from a judge reply, or None when it names none.

    The last match wins because judges often quote the format in their explanation before
    giving the final verdict.
    """
    pattern = _SUMMARY_CHOICE if task == "summary" else _DIALOGUE_CHOICE
    matches = pattern.findall(reply)
    return matches[-1] if matches else None


def cache_key(model: str, messages: Sequence[Message]) -> str:
    """Hash of the judge model and the full prompt text: what determines a reply."""
    text = json.dumps([model, list(messages)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OrderJudgement:
    """The judge's answer for one ordering; ``verdict`` is from the candidate's view."""

    reply: str | None
    choice: str | None
    verdict: Verdict | None
    error: str | None

    @property
    def failed(self) -> bool:
        return self.reply is None

    @property
    def unparseable(self) -> bool:
        return self.reply is not None and self.choice is None


@dataclass(frozen=True)
class PairJudgement:
    """Both orderings of one comparison; ``verdict`` is None unless both were decided."""

    comparison: Comparison
    candidate_first: OrderJudgement
    candidate_second: OrderJudgement
    verdict: Verdict | None


@dataclass(frozen=True)
class JudgeRun:
    """Per-pair results plus the counts a report must show next to the win rate.

    ``requests_sent`` counts HTTP requests including retries; ``cache_hits`` counts distinct
    prompts answered from the cache; ``unparseable`` and ``failed`` count orderings.
    """

    pairs: list[PairJudgement]
    requests_sent: int
    cache_hits: int
    unparseable: int
    failed: int

    @property
    def undecided(self) -> int:
        """Pairs left out of the win rate because an ordering failed or was unparseable."""
        return sum(pair.verdict is None for pair in self.pairs)

    def verdicts(self) -> list[Verdict]:
        return [pair.verdict for pair in self.pairs if pair.verdict is not None]

    def win_rate(self, n_boot: int = 2000, seed: int = 0) -> WinRate:
        return WinRate.from_verdicts(self.verdicts(), n_boot=n_boot, seed=seed)

    def summary(self) -> str:
        return (
            f"{len(self.pairs)} pairs, {self.undecided} undecided; "
            f"{self.requests_sent} requests sent, {self.cache_hits} cache hits, "
            f"{self.unparseable} unparseable, {self.failed} failed"
        )


class LLMJudge:
    """Pairwise judge over an OpenAI-compatible ``/chat/completions`` endpoint.

    Arguments left out are read from ``CTRLALIGN_JUDGE_URL``, ``CTRLALIGN_JUDGE_MODEL`` and
    ``OPENAI_API_KEY`` (the key is optional: local servers rarely want one). Requests failing
    with HTTP 429, 5xx or a connection error are retried ``retries`` times, waiting
    ``backoff * 2**k`` seconds before retry k.
    """

    def __init__(
        self,
        task: str,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        cache_path: str | Path | None = None,
        concurrency: int = 8,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 120.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown judge task {task!r}; expected one of {TASKS}")
        base_url = base_url or os.environ.get("CTRLALIGN_JUDGE_URL")
        model = model or os.environ.get("CTRLALIGN_JUDGE_MODEL")
        if not base_url:
            raise ValueError("no judge URL: pass base_url or set CTRLALIGN_JUDGE_URL")
        if not model:
            raise ValueError("no judge model: pass model or set CTRLALIGN_JUDGE_MODEL")
        self.task = task
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.cache = ReplyCache(cache_path)
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.temperature = temperature

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def check_reachable(self) -> None:
        """Fail fast, naming the URL, when nothing answers there.

        Any HTTP answer (even 404 from servers without ``/models``) proves a server listens;
        only a transport error means the URL is wrong or the server is down.
        """
        request = urllib.request.Request(f"{self.base_url}/models", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, 10.0)):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise JudgeUnreachableError(
                f"LLM judge endpoint {self.base_url} is unreachable ({reason}); start the "
                "server or point CTRLALIGN_JUDGE_URL / base_url at a running one"
            ) from err

    def judge(self, comparisons: Sequence[Comparison]) -> JudgeRun:
        """Judge every comparison in both orders and combine the two verdicts."""
        keys: list[tuple[str, str]] = []
        messages: dict[str, list[Message]] = {}
        for comp in comparisons:
            first = build_messages(self.task, comp.prompt, comp.candidate, comp.baseline)
            second = build_messages(self.task, comp.prompt, comp.baseline, comp.candidate)
            key_first, key_second = cache_key(self.model, first), cache_key(self.model, second)
            messages[key_first], messages[key_second] = first, second
            keys.append((key_first, key_second))

        replies = {key: self.cache.get(key) for key in messages}
        pending = [key for key, reply in replies.items() if reply is None]
        cache_hits = len(messages) - len(pending)
        errors: dict[str, str] = {}
        requests_sent = 0
        if pending:
            self.check_reachable()
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                futures = {pool.submit(self._ask, messages[key]): key for key in pending}
                for future in as_completed(futures):
                    key = futures[future]
                    reply, error, attempts = future.result()
                    requests_sent += attempts
                    if reply is None:
                        errors[key] = error
                    else:
                        replies[key] = reply
                        self.cache.put(key, reply)

        pairs = []
        for comp, (key_first, key_second) in zip(comparisons, keys, strict=True):
            first = self._order(replies[key_first], errors.get(key_first), _CANDIDATE_AS_A)
            second = self._order(replies[key_second], errors.get(key_second), _CANDIDATE_AS_B)
            decided = first.verdict is not None and second.verdict is not None
            verdict = combine_orders(first.verdict, second.verdict) if decided else None
            pairs.append(PairJudgement(comp, first, second, verdict))
        orders = [
            order for pair in pairs for order in (pair.candidate_first, pair.candidate_second)
        ]
        return JudgeRun(
            pairs=pairs,
            requests_sent=requests_sent,
            cache_hits=cache_hits,
            unparseable=sum(order.unparseable for order in orders),
            failed=sum(order.failed for order in orders),
        )

    def _order(
        self, reply: str | None, error: str | None, verdicts: dict[str, Verdict]
    ) -> OrderJudgement:
        if reply is None:
            return OrderJudgement(reply=None, choice=None, verdict=None, error=error)
        choice = parse_choice(self.task, reply)
        if choice is None:
            return OrderJudgement(reply, None, None, error="reply names no verdict")
        return OrderJudgement(reply, choice, verdicts[choice], error=None)

    def _ask(self, messages: list[Message]) -> tuple[str | None, str | None, int]:
        """(reply, error, requests made): retries transient failures with backoff."""
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._post(messages), None, attempt + 1
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code} {err.reason} from {self.endpoint}"
                if err.code != 429 and err.code < 500:
                    return None, error, attempt + 1
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                error = f"request to {self.endpoint} failed: {getattr(err, 'reason', err)}"
            except (ValueError, KeyError, IndexError, TypeError) as err:
                return None, f"malformed reply from {self.endpoint}: {err!r}", attempt + 1
        return None, f"{error} (gave up after {self.retries + 1} attempts)", self.retries + 1

    def _post(self, messages: list[Message]) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        request = urllib.request.Request(
            self.endpoint,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", **self._headers()},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.load(response)
        return payload["choices"][0]["message"]["content"] or ""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class CachedLLMJudge:
    """``LLMJudge`` with its reply cache in the report folder; undecided pairs stay None."""

    kind = "llm"

    def __init__(self, url: str, model: str | None, task: str, cache_path: Path) -> None:
        try:
            self.llm = LLMJudge(task, base_url=url, model=model, cache_path=cache_path)
        except ValueError as err:
            raise JudgeSpecError(
                f"judge llm:{url}: {err} (on the command line: --judge-model NAME)"
            ) from err
        self.name = f"llm:{self.llm.model}"

    def check(self) -> None:
        try:
            self.llm.check_reachable()
        except ConnectionError as err:
            raise JudgeSpecError(str(err)) from err

    def describe(self) -> str:
        return (
            f"{self.name}: {self.llm.task} prompt of the paper's appendix C at {self.llm.base_url}"
        )

    def judge(self, comparisons: Sequence[Comparison]) -> Decisions:
        run = self.llm.judge(comparisons)
        return Decisions([pair.verdict for pair in run.pairs], [run.summary()])
