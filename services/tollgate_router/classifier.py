"""Fast heuristic request classification: intent, confidence, complexity and tier.

Pure and allocation-light: it runs on every request, so it looks at a bounded
window of the (already truncated) texts, uses one translate+split pass and set
intersections for keywords, and substring checks before any regex. No text is
kept or logged.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

from tollgate_common.policy import TIERS

MAX_TEXT_CHARS = 4_000  # defensive cap, whatever the client sent
HEAD_CHARS = 700  # instructions sit at the start or the end of a prompt
TAIL_CHARS = 250
SYSTEM_CHARS = 400
SYSTEM_WEIGHT = 0.5  # the system prompt hints, the user text decides

# Ties go to the earlier intent: the more specific classes come first.
PRIORITY = ("code", "math", "translation", "summarization", "extraction", "creative", "chat")
# Code and math answers from a small model are too often wrong to be worth it.
INTENT_FLOOR = {"code": "medium", "math": "medium"}
# Complexity thresholds: below the first is small, below the second medium.
TIER_THRESHOLDS = (0.30, 0.55)
# A lone weak keyword ("class", "loop") is not enough to leave chat.
MIN_INTENT_SCORE = 1.5

_REASONING = "_reasoning"  # not an intent: a cue that the task needs a stronger model

# word -> (tag, weight) pairs. Words are matched after lowercasing and turning
# punctuation (except + # ' _) into spaces.
_WORDS: dict[str, tuple[tuple[str, float], ...]] = {}


def _add(tag: str, weight: float, words: str) -> None:
    for w in words.split():
        _WORDS[w] = (*_WORDS.get(w, ()), (tag, weight))


_add(
    "code",
    2.0,
    "python javascript typescript golang rust java kotlin c++ c# ruby php sql bash "
    "powershell dockerfile regex stacktrace segfault nullpointerexception typeerror "
    "valueerror syntaxerror compile compiler refactor debug debugging pytest unittest",
)
_add(
    "code",
    1.0,
    "code function functions class method script bug api endpoint variable async await "
    "exception library module implement implementation algorithm loop recursion json "
    "yaml html css react django flask kubernetes git npm pip repo",
)
_add(
    "math",
    3.0,
    "prove solve equation equations integral derivative theorem lemma polynomial",
)
_add(
    "math",
    1.5,
    "calculate compute probability matrix eigenvalue factorial prime primes sqrt algebra "
    "geometry arithmetic calculus logarithm modulo divisible fraction percentage",
)
_add(
    "summarization",
    3.0,
    "summarize summarise summary summarization summarisation tldr recap condense synopsis",
)
_add("summarization", 1.0, "shorten abstract gist")
_add("extraction", 3.0, "extract extraction")
_add("extraction", 1.5, "entities parse fields csv json")
_add("translation", 3.0, "translate translation translating translated")
_add(
    "creative",
    2.0,
    "poem poems haiku limerick sonnet lyrics song songs story stories tale fable fairytale "
    "screenplay "
    "novel fiction rhyme verse slogan",
)
_add("creative", 1.0, "creative imaginative character plot joke")
_add("chat", 1.0, "hi hello hey thanks thank cheers morning")
_add(
    _REASONING,
    1.0,
    "analyze analyse compare design architecture optimize optimise tradeoffs trade-offs "
    "rigorous rigorously comprehensive thorough thoroughly evaluate detailed prove "
    "refactor debug derive",
)

# Cues longer than a word, checked with `in` only when their trigger word (the
# token they start with after punctuation is removed) is in the text. Each cue
# counts once, however many of its spellings appear.
_CUES: tuple[tuple[str, str, str], ...] = (  # (trigger word, substring, cue)
    ("tl", "tl;dr", "tldr"),
    ("key", "key points", "key_points"),
    ("main", "main points", "key_points"),
    ("in", "in a nutshell", "nutshell"),
    ("pull", "pull out", "pull_out"),
    ("named", "named entities", "named_entities"),
    ("how", "how do you say", "how_say"),
    ("how", "how are you", "how_are_you"),
    ("what's", "what's up", "whats_up"),
    ("step", "step by step", "step_by_step"),
    ("explain", "explain why", "explain_why"),
    ("in", "in detail", "in_detail"),
    ("def", "def ", "code_syntax"),
    ("#include", "#include", "code_syntax"),
    ("console", "console.log", "code_syntax"),
    ("public", "public static", "code_syntax"),
    ("import", "\nimport ", "code_syntax"),
    ("__future__", "from __future__", "code_syntax"),
    ("fn", "fn main", "code_syntax"),
    ("select", "select * from", "code_syntax"),
    ("self", "self.", "code_syntax"),
    ("traceback", "traceback (most recent call last)", "stack_trace"),
    ("exception", "exception in thread", "stack_trace"),
    ("panic", "panic: ", "stack_trace"),
    ("errno", "errno", "stack_trace"),
)
_CUE_SCORES: dict[str, tuple[str, float]] = {
    "tldr": ("summarization", 3.0),
    "key_points": ("summarization", 2.0),
    "nutshell": ("summarization", 2.0),
    "pull_out": ("extraction", 2.0),
    "named_entities": ("extraction", 2.0),
    "how_say": ("translation", 2.0),
    "how_are_you": ("chat", 2.0),
    "whats_up": ("chat", 1.0),
    "step_by_step": (_REASONING, 1.0),
    "explain_why": (_REASONING, 1.0),
    "in_detail": (_REASONING, 1.0),
    "code_syntax": ("code", 2.0),
    "stack_trace": ("code", 3.0),
}
_CUES_BY_WORD: dict[str, tuple[tuple[str, str], ...]] = {}
for _word, _sub, _cue in _CUES:
    _CUES_BY_WORD[_word] = (*_CUES_BY_WORD.get(_word, ()), (_sub, _cue))

_KEYSET = frozenset(_WORDS) | frozenset(_CUES_BY_WORD)
_PUNCT = "".join(c for c in string.punctuation if c not in "+#'_-")
_TO_SPACE = str.maketrans(_PUNCT + "\n\t\r", " " * (len(_PUNCT) + 3))
# Code punctuation has no trigger word.
_CODE_PUNCT = re.compile(r"\(\);|\}\);|=> \{|</")
# Patterns that start with a literal or a small character set: the regex engine
# can skip ahead instead of trying every position (alternations defeat that).
_EQUATION = re.compile(r"[=^*/+\u00d7\u00f7]\s*\(?[0-9]")
_LATEX = re.compile(r"\\(?:frac|int|sum|sqrt|cdot|pi)\b")
_MATH_SYMBOLS = "\u222b\u2211\u221a\u2264\u2265\u2260\u03c0"  # integral sum root <= >= != pi
_LANGUAGES = (
    "english|french|spanish|german|italian|portuguese|dutch|polish|russian|ukrainian|"
    "chinese|mandarin|cantonese|japanese|korean|arabic|hebrew|hindi|turkish|greek|"
    "swedish|norwegian|danish|finnish|czech|vietnamese|thai|indonesian|latin"
)
_TRANSLATE_TO = re.compile(rf"translat\w*\b.{{0,120}}?\b(?:into|to|in)\s+(?:{_LANGUAGES})\b")
_CREATIVE_ASK = re.compile(
    r"\b(?:write|compose|create|draft|tell)\s+(?:me\s+)?(?:a|an|some)\s+(?:\w+\s+){0,3}?"
    r"(?:poem|haiku|limerick|sonnet|song|lyrics|story|tale|fable|joke|screenplay)"
)


@dataclass(frozen=True, slots=True)
class Features:
    """What the classifier sees of a request; texts are truncated here again."""

    last_user_text: str = ""
    system_text: str = ""
    turns: int = 1
    prompt_chars: int = 0
    estimated_prompt_tokens: int = 0
    has_tools: bool = False
    json_mode: bool = False
    max_tokens: int = 0  # 0: not set by the client
    has_images: bool = False  # only models with the "vision" capability fit

    def prompt_tokens(self) -> int:
        """The client's estimate, else ~4 characters per token."""
        if self.estimated_prompt_tokens > 0:
            return self.estimated_prompt_tokens
        chars = self.prompt_chars or len(self.last_user_text) + len(self.system_text)
        return (chars + 3) // 4


@dataclass(frozen=True, slots=True)
class Classification:
    intent: str
    confidence: float  # in [0, 1]
    complexity: float  # in [0, 1]
    tier: str  # before tenant caps and budget downgrades


def _window(text: str) -> str:
    low = text[:MAX_TEXT_CHARS].lower()
    if len(low) > HEAD_CHARS + TAIL_CHARS:
        return low[:HEAD_CHARS] + "\n" + low[-TAIL_CHARS:]
    return low


def _score_words(window: str, scores: dict[str, float], factor: float) -> None:
    # A set: a word repeated fifty times counts once.
    cues: set[str] = set()
    for word in _KEYSET.intersection(window.translate(_TO_SPACE).split()):
        for tag, weight in _WORDS.get(word, ()):
            scores[tag] = scores.get(tag, 0.0) + weight * factor
        for sub, cue in _CUES_BY_WORD.get(word, ()):
            if sub in window:
                cues.add(cue)
    for cue in cues:
        tag, weight = _CUE_SCORES[cue]
        scores[tag] = scores.get(tag, 0.0) + weight * factor


def _add_score(scores: dict[str, float], tag: str, weight: float) -> None:
    scores[tag] = scores.get(tag, 0.0) + weight


def _intent_scores(user: str, system: str, json_mode: bool) -> dict[str, float]:
    scores: dict[str, float] = {}
    win = _window(user)
    _score_words(win, scores, 1.0)
    if system:
        _score_words(system[:SYSTEM_CHARS].lower(), scores, SYSTEM_WEIGHT)
    if "```" in win:
        _add_score(scores, "code", 3.0)
    if _CODE_PUNCT.search(win):
        _add_score(scores, "code", 2.0)
    if _EQUATION.search(win) or _LATEX.search(win) or any(ch in win for ch in _MATH_SYMBOLS):
        _add_score(scores, "math", 2.0)
    if "translat" in win and _TRANSLATE_TO.search(win):
        _add_score(scores, "translation", 3.0)
    if "creative" in scores and _CREATIVE_ASK.search(win):
        _add_score(scores, "creative", 3.0)
    if json_mode:
        _add_score(scores, "extraction", 2.0)
    return scores


def classify_intent(
    user: str, system: str = "", json_mode: bool = False
) -> tuple[str, float, float]:
    """Return (intent, confidence, reasoning cue score) from the texts."""
    scores = _intent_scores(user, system, json_mode)
    reasoning = scores.pop(_REASONING, 0.0)
    best, first, second = "chat", 0.0, 0.0
    for intent in PRIORITY:
        s = scores.get(intent, 0.0)
        if s > first:
            best, first, second = intent, s, first
        elif s > second:
            second = s
    if first < MIN_INTENT_SCORE:
        # Nothing specific: short texts are small talk, long ones are merely unknown.
        return "chat", (0.6 if len(user) < 200 else 0.4), reasoning
    return best, first / (first + second + 1.0), reasoning


def complexity_score(f: Features, reasoning: float) -> float:
    """0..1 from size, conversation length, tools, JSON mode, output budget and cues."""
    length = min(1.0, math.log1p(f.prompt_tokens()) / math.log1p(4_000))
    turns = min(1.0, max(0, f.turns - 1) / 10)
    out = 0.0
    if f.max_tokens > 0:
        out = min(1.0, max(0.0, (math.log2(f.max_tokens) - 8) / 6))  # 256 -> 0, 16k -> 1
    score = (
        0.5 * length
        + 0.1 * turns
        + (0.1 if f.has_tools else 0.0)
        + (0.05 if f.json_mode else 0.0)
        + 0.1 * out
        + 0.15 * min(1.0, reasoning / 2)
    )
    return min(1.0, score)


def tier_for(intent: str, complexity: float) -> str:
    if complexity < TIER_THRESHOLDS[0]:
        tier = TIERS[0]
    elif complexity < TIER_THRESHOLDS[1]:
        tier = TIERS[1]
    else:
        tier = TIERS[2]
    floor = INTENT_FLOOR.get(intent)
    if floor is not None and TIERS.index(tier) < TIERS.index(floor):
        return floor
    return tier


def classify(f: Features) -> Classification:
    intent, confidence, reasoning = classify_intent(f.last_user_text, f.system_text, f.json_mode)
    complexity = complexity_score(f, reasoning)
    return Classification(intent, confidence, complexity, tier_for(intent, complexity))
