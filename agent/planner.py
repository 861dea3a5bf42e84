"""The deterministic planner: what the user asked for, and which tools answer it.

Used when no tool-calling model is reachable (or the model's tool calls do not validate). It reads
one message plus the conversation's memory and returns tool calls with their arguments, and the
memory updates the message implies (stated likes, wanted and unwanted genres). Intents, in order:
a user id ("I'm user 42"), an explanation ("why that one?"), item details ("tell me about Fargo"),
more like an item ("more like Alien"), stated likes ("I loved Star Wars and Alien"), a refinement
("something funnier", "no horror"), else a search ("a 90s sci-fi comedy").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from agent.lookup import TitleIndex, normalize_title
from agent.state import AgentState, Preferences

MAX_MESSAGE_CHARS = 4000
DEFAULT_K = 5

# Words people use for a kind of item, mapped to MovieLens-style genres; any genre the catalog has is
# also recognised by its own name, so other catalogs work without a lexicon.
LEXICON: dict[str, tuple[str, ...]] = {
    "Comedy": (
        "funny",
        "funnier",
        "comedy",
        "comedies",
        "humor",
        "humour",
        "humorous",
        "laugh",
        "laughs",
        "hilarious",
        "lighter",
        "light-hearted",
        "lighthearted",
        "silly",
        "comedia",
        "comedias",
        "comédie",
        "comédies",
        "komödie",
        "komödien",
        "commedia",
        "comédia",
        "komedie",
    ),
    "Horror": ("horror", "scary", "scarier", "frightening", "creepy", "terrifying", "spooky", "terror", "épouvante"),
    "Romance": ("romance", "romantic", "love story", "love stories", "romántica", "romantique", "romantisch"),
    "Action": ("action", "action-packed", "explosive"),
    "Animation": (
        "animated",
        "animation",
        "cartoon",
        "cartoons",
        "animación",
        "animação",
        "dessin animé",
        "zeichentrick",
    ),
    "Children's": ("kids", "children", "family", "family-friendly", "niños", "crianças", "enfants", "kinder"),
    "Sci-Fi": (
        "sci-fi",
        "science fiction",
        "scifi",
        "science-fiction",
        "futuristic",
        "ciencia ficción",
        "ficção científica",
    ),
    "Thriller": ("thriller", "thrillers", "suspense", "suspenseful", "tense"),
    "Drama": ("drama", "dramas", "dramatic", "drame", "drames", "dramma"),
    "Documentary": ("documentary", "documentaries", "documental", "documentaire", "dokumentarfilm"),
    "Musical": ("musical", "musicals", "comédie musicale", "musicales"),
    "Mystery": ("mystery", "mysteries", "whodunit"),
    "War": ("war movie", "war film", "war movies", "war films", "guerra", "guerre", "kriegsfilm", "oorlog"),
    "Western": ("western", "westerns", "cowboy", "cowboys", "wéstern"),
    "Crime": ("crime", "gangster", "gangsters", "heist"),
    "Film-Noir": ("noir", "film-noir", "film noir"),
    "Fantasy": ("fantasy", "magic", "magical"),
    "Adventure": ("adventure", "adventures", "adventurous"),
}
_NEGATIONS = (
    "no",
    "not",
    "less",
    "without",
    "never",
    "avoid",
    "nothing",
    "fewer",
    "too",
    "hate",
    "dislike",
    "don't",
    "dont",
    "isn't",
    "isnt",
    "aren't",
    "except",
    "keine",
    "kein",
    "nada",
    "sin",
    "sans",
    "pas",
    "geen",
    "forget",
)

_GREETING = re.compile(r"^\s*(hi|hello|hey|help|yo|good (morning|evening|afternoon)|what can you do)\b[\s!.?]*$", re.I)
_USER = re.compile(
    r"\b(?:i am|i'm|im|as|for|this is)\s+user\s*(?:id\s*)?#?\s*(\w+)|^\s*user\s*(?:id\s*)?#?\s*(\w+)\s*$", re.I
)
_EXPLAIN = re.compile(r"\bwhy\b|\bexplain\b|\bhow come\b|\breason\b", re.I)
_DETAILS = re.compile(
    r"^\s*(?:tell me (?:more )?about|what(?:'s| is| was) |details (?:of|on|for|about)|info(?:rmation)? (?:on|about)|"
    r"describe|who (?:is|was) in)\s*(.+?)\s*[?.!]*\s*$",
    re.I,
)
_MORE_LIKE = re.compile(
    r"(?:more|movies?|films?|something|anything|items?|stuff|ones?|others?)\s+(?:like|similar to)\s+(.+?)\s*[?.!]*\s*$|"
    r"^\s*(?:similar to|like)\s+(.+?)\s*[?.!]*\s*$",
    re.I,
)
_LIKED = re.compile(
    r"\bi\s+(?:really |also |just |totally |absolutely )?(?:loved|love|liked|like|enjoyed|enjoy|adore|adored|"
    r"am a fan of|'m a fan of|m a fan of|watched and loved)\s+(.+)",
    re.I,
)
_REFINE = re.compile(r"\b(something|anything|another|other|different|else|more|less|fewer|instead|rather|but)\b", re.I)
_ASK = re.compile(r"\b(recommend|suggest|what should i|any ideas|give me|show me)\b", re.I)
_THAT = re.compile(r"^\s*(?:that|this|it|that one|this one|the (?:first|top) one|the first|the top)\s*$", re.I)
_ORDINAL = re.compile(
    r"\b(?:the\s+)?(first|second|third|fourth|fifth|last|#\s*\d+|number\s+\d+|\d+(?:st|nd|rd|th))\b(?:\s+one)?", re.I
)
_ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4}
_SPLIT = re.compile(r"(\s*(?:,|;|\band also\b|\bas well as\b|\band\b|&|\bplus\b)\s*)", re.I)
_TRAILING = re.compile(r"\s*(?:a lot|so much|very much|too|as well|also|really|,)\s*$", re.I)


@dataclass
class Plan:
    """This turn's tool calls and the memory the message changes."""

    intent: str
    calls: list[dict[str, Any]] = field(default_factory=list)  # {"name": ..., "args": {...}}
    preferences: Preferences = field(default_factory=dict)  # type: ignore[assignment]
    user_id: str | None = None
    direct: str | None = None  # a reply that needs no tool (greeting, bad input, nothing to explain)


def message_problem(text: str) -> str | None:
    """Why a message cannot be answered as it is (empty, too long, unreadable), or None if it can."""
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text) or "\ufffd" in text:
        return "I could not read that message: it is not valid UTF-8 text. Please send it again as plain text."
    if not text.strip() or not any(ch.isalnum() for ch in text):
        return (
            'Your message is empty. Tell me titles you liked ("I loved <title> and <title>") '
            'or what you are looking for ("a 90s sci-fi comedy").'
        )
    if len(text) > MAX_MESSAGE_CHARS:
        return (
            f"Your message is {len(text):,} characters long; I read at most {MAX_MESSAGE_CHARS:,}. "
            "Please send a shorter message: a few titles or a sentence about what you want."
        )
    return None


def clean_text(text: str) -> str:
    """Normalise a readable message: NFC, control characters out, whitespace squeezed."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return re.sub(r"[ \t]+", " ", text).strip()


def genre_mentions(text: str, genres: dict[str, str]) -> tuple[list[str], list[str]]:
    """Genres a message asks for and genres it rules out ("no horror", "less scary"), in the catalog's spelling."""
    said = " " + re.sub(r"\b(anything|everything|something) but\b", r"\1 without", text.lower()) + " "
    low = re.sub(r"[^\w'\- ]", " ", said)  # the same length: clause boundaries are read from `said`
    wanted: list[str] = []
    avoid: list[str] = []
    terms: list[tuple[str, str]] = [(w, g) for g, words in LEXICON.items() for w in words]
    terms += [(name, spelled) for name, spelled in genres.items()]
    for word, genre in sorted(terms, key=lambda t: -len(t[0])):
        target = genres.get(genre.lower())
        if target is None:
            continue
        for m in re.finditer(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", low):
            # the words before it in its own clause ("no horror, but a comedy": comedy is wanted)
            # ("not dramas or thrillers": "or" keeps the negation, so it does not end the clause)
            clause = re.split(r"[,.;!?]|\bbut\b|\band\b", said[: m.start()])[-1]
            before = clause.split()[-5:]
            (avoid if any(b in _NEGATIONS for b in before) else wanted).append(target)
    wanted = [g for g in dict.fromkeys(wanted) if g not in avoid]
    return wanted, list(dict.fromkeys(avoid))


_DECADE_WORDS = {
    "twenties": 1920,
    "thirties": 1930,
    "forties": 1940,
    "fifties": 1950,
    "sixties": 1960,
    "seventies": 1970,
    "eighties": 1980,
    "nineties": 1990,
}
_YEAR = r"((?:1[89]|20)\d\d)"
_DECADE = r"(?:(?:the|los|les|die|de|the early|the late)\s+)?((?:1[89]|20)?[0-9]0)'?s\b"
_BEFORE = r"\b(?:before|earlier than|older than|prior to|pre-?|until|antes de|avant|vor|prima del|voor)\s*"
_ONWARDS = r"\s*(?:on|onwards?|or later|and later|or newer|and up)\b"


def year_range(text: str) -> tuple[int | None, int | None]:
    """The inclusive year range a message states: "before 1960" -> (None, 1959), "after 1990" ->
    (1991, None), "since 1995" / "from 1993 onwards" / "no older than 1994" -> from that year, "between 1980
    and 1985", "from 1975 to 1985", "only 1997" -> (1997, 1997), "the 80s" / "the eighties" / "años 80"
    / "années 90" / "jaren 60" -> the decade, "nothing after 1965" -> (None, 1965). (None, None) when
    it states none."""
    low = text.lower()
    m = re.search(
        r"\b(?:between|from|de|entre|zwischen|tra il|van)\s+(?:the\s+years?\s+)?"
        + _YEAR
        + r"\s*(?:and|to|-|y|et|und|e|tot)\s*"
        + _YEAR,
        low,
    )
    if m:
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return a, b
    m = re.search(r"\b(?:nothing|none|no)\s+(?:made\s+|released\s+)?(?:after|newer than|later than)\s+" + _YEAR, low)
    if m:
        return None, int(m.group(1))
    m = re.search(r"\bno (?:older|earlier) than\s+" + _YEAR, low)
    if m:
        return int(m.group(1)), None
    m = re.search(_BEFORE + _YEAR, low)
    if m:
        return None, int(m.group(1)) - 1
    m = re.search(r"\b" + _YEAR + _ONWARDS, low) or re.search(r"\bsince\s+" + _YEAR, low)
    if m:
        return int(m.group(1)), None
    m = re.search(r"\b(?:after|newer than|later than|depuis|desde|nach|dopo il)\s+" + _YEAR, low)
    if m:
        return int(m.group(1)) + 1, None
    m = re.search(r"\b(?:años|années|jaren|anni|jahre)\s+(?:'|19)?([0-9]0)\b", low)
    if m:
        start = 1900 + int(m.group(1))
        return start, start + 9
    for word, start in _DECADE_WORDS.items():
        if re.search(rf"\b{word}\b", low):
            return start, start + 9
    m = re.search(r"\b" + _DECADE, low)
    if m:
        digits = m.group(1)
        start = int(digits) if len(digits) == 4 else 1900 + int(digits)
        return start, start + 9
    m = re.search(r"\b(?:only|just|from|in|released in|made in|of)\s+" + _YEAR + r"\b(?!\s*(?:to|and|-))", low)
    if m:
        return int(m.group(1)), int(m.group(1))
    return None, None


_SAME_DECADE = re.compile(r"\b(?:same|that)\s+(?:same\s+)?(?:decade|era)(?:\s+as\s+(.+?))?(?=[,.;!?]|\s+but\b|$)", re.I)
_OLDER = re.compile(r"\b(?:older|earlier|more classic)\b", re.I)
_SEEN = re.compile(
    r"[,.;]?\s*(?:but\s+)?(?:i(?:'ve| have)\s+(?:already\s+)?(?:seen|watched)|(?:that\s+)?isn't)\s+(.+?)"
    r"(?:\s+already)?(?:,\s*seen that(?: one)?)?\s*(?=[.;!?]|$)",
    re.I,
)
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def _title_year(title: str) -> int | None:
    m = _YEAR_IN_TITLE.search(title)
    return int(m.group(1)) if m else None


def _seen_names(text: str) -> list[str]:
    """Titles a message says the user has already seen ("I've seen A and B already", "that isn't A, seen that")."""
    m = _SEEN.search(text)
    if not m:
        return []
    names = [n.strip(" \"'") for n in re.split(r",\s*|\s+and\s+|\s*&\s*", m.group(1))]
    return [n for n in names if n and n.lower() not in ("it", "that", "them", "those", "all of those", "that one")]


def stated_request(text: str, ctx: Any) -> Any:
    """What a message itself asks of the items (an `agent.tools.Request`): genres wanted and not, and
    years, read by the rules. The check after a model's tool call compares the items with it."""
    from agent.tools import Request

    wanted, avoid = genre_mentions(text, ctx.genres)
    year_min, year_max = year_range(text) if ctx.has_years else (None, None)
    return Request(wanted, avoid, year_min, year_max)


def year_args(prefs: Preferences | dict[str, Any]) -> dict[str, int]:
    """A remembered inclusive year range as the tools' arguments (released_after / released_before)."""
    args = {}
    if prefs.get("year_min") is not None:
        args["released_after"] = int(prefs["year_min"]) - 1  # type: ignore[arg-type]
    if prefs.get("year_max") is not None:
        args["released_before"] = int(prefs["year_max"]) + 1  # type: ignore[arg-type]
    return args


def _strip_genre_words(fragment: str, genres: dict[str, str]) -> str:
    wanted, avoid = genre_mentions(fragment, genres)
    return "" if (wanted or avoid) and len(fragment.split()) <= 3 else fragment


def liked_names(text: str, genres: dict[str, str], titles: TitleIndex | None = None) -> list[str]:
    """Titles in "I loved A, B and C": the list after the verb, up to the end of the sentence.

    List separators inside a title ("Sense and Sensibility", "Terminator, The") are kept when the
    joined words are a catalog title. Fragments that only name a kind ("comedies") are left to the
    genre reading of the message.
    """
    m = _LIKED.search(text)
    if not m:
        return []
    # a "?" or "." right before "(1996)" ends a title ("Shall We Dance? (1996)"), not the sentence
    rest = re.split(
        r"[.?!;](?![.?!]*\s*\(\d{4}\))|\n|\bbut\b|\bso\b|\bcan you\b|\bwhat\b|\bany\b|\bplease\b",
        m.group(1),
        maxsplit=1,
        flags=re.I,
    )[0]
    pieces = _SPLIT.split(rest)
    frags, seps = pieces[0::2], pieces[1::2] + [""]
    names: list[str] = []
    i = 0
    while i < len(frags):
        j = i + 1
        if titles is not None:
            for end in range(len(frags), i + 1, -1):
                joined = "".join(f + s for f, s in zip(frags[i:end], seps[i : end - 1] + [""]))
                if normalize_title(joined) in titles.by_norm:
                    j = end
                    break
        frag = "".join(f + s for f, s in zip(frags[i:j], seps[i : j - 1] + [""]))
        i = j
        frag = _TRAILING.sub("", frag.strip(" \"'“”‘’")).strip(" \"'“”‘’")
        frag = re.sub(r"^(?:the movie|the film|movies like|films like)\s+", "", frag, flags=re.I)
        if frag and _strip_genre_words(frag, genres):
            names.append(frag)
    return names


def _reference(text: str, candidates: list[dict[str, Any]], titles: TitleIndex) -> str | None:
    """The item a message points at: a title it names, "the second one", or the last reply's first item."""
    m = _ORDINAL.search(text)
    if m and candidates:
        word = m.group(1).lower().replace("#", "").replace("number", "").strip()
        index = len(candidates) - 1 if word == "last" else _ORDINALS.get(word)
        if index is None:
            digits = re.sub(r"\D", "", word)
            index = int(digits) - 1 if digits else 0
        if 0 <= index < len(candidates):
            return f"id {candidates[index]['item_id']}"
    return None


def _named_item(fragment: str, titles: TitleIndex) -> str | None:
    fragment = fragment.strip(" \"'“”‘’?.!")
    return fragment if fragment and not _THAT.match(fragment) and titles.find(fragment) else None


def plan_turn(message: str, state: AgentState, titles: TitleIndex, genres: dict[str, str], k: int = DEFAULT_K) -> Plan:
    """Tool calls for one user message, given the conversation so far."""
    problem = message_problem(message)
    if problem:
        return Plan("invalid", direct=problem)
    text = clean_text(message)
    # copies: genre lists are lists, years plain numbers (the model's turns remember them too)
    prefs: Preferences = {
        key: list(value) if isinstance(value, (list, tuple)) else value
        for key, value in (state.get("preferences") or {}).items()
    }  # type: ignore[misc]
    history = [f"id {i}" for i in state.get("history") or []]
    user_id = state.get("user_id")
    candidates = list(state.get("candidates") or [])
    shown = [f"id {c['item_id']}" for c in candidates]

    wanted, avoid = genre_mentions(text, genres)
    if wanted or avoid:
        # The newest wish wins: "something funnier" after "scarier" means comedy now, not both.
        prefs["genres"] = wanted or [g for g in prefs.get("genres", []) if g not in avoid]
        prefs["exclude_genres"] = [g for g in dict.fromkeys(prefs.get("exclude_genres", []) + avoid) if g not in wanted]
    year_min, year_max = year_range(text)
    same = _SAME_DECADE.search(text)
    if same and year_min is None and year_max is None:  # "the same decade as Casablanca", "that same decade"
        named = titles.find(same.group(1)) if same.group(1) else None
        anchor = named or next((titles.find(n) for n in liked_names(text, genres, titles) if titles.find(n)), None)
        anchor = anchor or (state.get("history") or [None])[-1]
        year = _title_year(titles.titles.get(anchor or "", ""))
        if year is not None:
            year_min, year_max = year - year % 10, year - year % 10 + 9
    if year_min is None and year_max is None and candidates and _OLDER.search(text):
        shown_years = [y for c in candidates if (y := _title_year(str(c.get("title") or ""))) is not None]
        if shown_years:
            year_max = min(shown_years) - 1
    if year_min is not None or year_max is not None:  # new years replace the remembered ones
        prefs["year_min"], prefs["year_max"] = year_min, year_max
    seen_now = _seen_names(text)
    if seen_now:  # "I've seen A and B already": not liked, never recommended
        text = _SEEN.sub("", text).strip(" ,.")

    def rec(liked: list[str], query: str | None, exclude: list[str], intent: str) -> Plan:
        exclude = [*exclude, *seen_now]
        args: dict[str, Any] = {"liked": liked, "k": k}
        for key, value in (
            ("user_id", user_id),
            ("query", query),
            ("genres", prefs.get("genres")),
            ("exclude_genres", prefs.get("exclude_genres")),
            ("exclude", exclude),
        ):
            if value:
                args[key] = value
        args.update(year_args(prefs))
        return Plan(intent, [{"name": "recommend", "args": args}], prefs, user_id)

    if _GREETING.match(text):
        return Plan(
            "greeting",
            preferences=prefs,
            user_id=user_id,
            direct=(
                'Hi! Tell me titles you liked ("I loved <title> and <title>"), what you are in the mood for '
                '("a 90s sci-fi comedy"), then ask for "something funnier", "more like <title>", '
                '"tell me about <title>" or "why that one?".'
            ),
        )

    m = _USER.search(text)
    if m:
        user_id = m.group(1) or m.group(2)
        plan = rec(history, None, [], "user")
        plan.calls.insert(0, {"name": "user_history", "args": {"user_id": user_id, "n": 5}})
        return plan

    if _EXPLAIN.search(text):
        after = re.split(
            r"\bwhy\b(?:\s+(?:did you|do you|would i|should i)\s+(?:pick|recommend|suggest|like|choose))?|"
            r"\bexplain\b|\bhow come\b",
            text,
            maxsplit=1,
            flags=re.I,
        )[-1]
        target = _reference(text, candidates, titles) or _named_item(after, titles)
        if target is None and candidates:
            target = f"id {candidates[0]['item_id']}"
        if target is None:
            return Plan(
                "explain",
                preferences=prefs,
                user_id=user_id,
                direct=("Which item should I explain? Ask me for recommendations first, or name the title."),
            )
        args: dict[str, Any] = {"item": target, "liked": history}
        if user_id:
            args["user_id"] = user_id
        if prefs.get("genres"):
            args["genres"] = prefs["genres"]
        return Plan("explain", [{"name": "explain", "args": args}], prefs, user_id)

    m = _DETAILS.match(text)
    if m and not _LIKED.search(text):
        target = _reference(text, candidates, titles)
        name = m.group(1)
        if target is None and _THAT.match(name) and candidates:
            target = f"id {candidates[0]['item_id']}"
        return Plan("details", [{"name": "item_details", "args": {"item": target or name}}], prefs, user_id)

    m = _MORE_LIKE.search(text)
    if m:
        name = (m.group(1) or m.group(2) or "").strip()
        target = _reference(name, candidates, titles) if candidates else None
        if target is None and _THAT.match(name) and candidates:
            target = f"id {candidates[0]['item_id']}"
        target = target or name
        return rec([target] + [h for h in history if h != target], None, shown, "more_like")

    names = liked_names(text, genres, titles)
    if names or _LIKED.search(text):
        return rec(history + names, None, [], "liked")

    if (wanted or avoid or _REFINE.search(text)) and (history or user_id):
        return rec(history, text, shown, "refine")

    if (history or user_id) and _ASK.search(text):
        return rec(history, text, shown, "recommend")

    args = {"query": text, "k": k}
    if wanted:
        args["genres"] = wanted
    if prefs.get("exclude_genres"):
        args["exclude_genres"] = prefs["exclude_genres"]
    args.update(year_args(prefs))
    return Plan("search", [{"name": "search_items", "args": args}], prefs, user_id)
