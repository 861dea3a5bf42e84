"""vLLM `structured_outputs` constraints built from the trie of valid semantic IDs.

Three shapes of the same constraint, compared by `bench/serve.py`:

- `regex`: one nested alternation following the trie, `(<a_1>(<b_2><c_0>|<b_5><c_1>)|...)`;
- `choice`: the flat list of every item's rendered code;
- `grammar`: an EBNF grammar (xgrammar dialect) with one rule per inner trie node.

All three constrain text, not tokens: a model may also spell `<b_2>` out as `<`, `b`, `_`, `2`,
`>` and still match, so callers parse the text back with `parse_sids` and allow more tokens than
the code has levels. (A grammar over token ids, xgrammar's `Token(403)`, would forbid that, but
vLLM 0.32 fails such requests with HTTP 500 "grammar rejected tokens" whenever a grammar state
admits a single token, which every trie with a one-child node has.) The exact, token-level
constraint is the client's own trie beam search in `agent.llm_client`.
"""

from __future__ import annotations

from typing import Literal

from finetune.sid_tokens import CodeTrie, render_sid, sid_token

ConstraintKind = Literal["regex", "choice", "grammar"]
CONSTRAINT_KINDS: tuple[str, ...] = ("regex", "choice", "grammar")


def trie_regex(trie: CodeTrie) -> str:
    """A regex matching exactly the rendered codes of the trie, shaped like the trie (compact)."""

    def node(prefix: tuple[int, ...]) -> str:
        kids = trie.children(prefix)
        if not kids:
            return ""
        alts = [sid_token(len(prefix), k) + node(prefix + (k,)) for k in kids]
        return alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"

    return node(())


def trie_choice(trie: CodeTrie) -> list[str]:
    """Every item's rendered code: the `choice` form of the constraint."""
    return [render_sid(code) for code in trie.codes()]


def trie_grammar(trie: CodeTrie) -> str:
    """An EBNF grammar (xgrammar dialect) of the trie: one rule per inner node, `root` first."""
    rules: list[str] = []

    def name(prefix: tuple[int, ...]) -> str:
        return "root" if not prefix else "n" + "_".join(map(str, prefix))

    def terminal(level: int, code: int) -> str:
        return f'"{sid_token(level, code)}"'

    # Breadth-first so that `root` is the first rule.
    frontier: list[tuple[int, ...]] = [()]
    while frontier:
        next_frontier: list[tuple[int, ...]] = []
        for prefix in frontier:
            alts = []
            for k in trie.children(prefix):
                child = prefix + (k,)
                if trie.children(child):
                    alts.append(f"{terminal(len(prefix), k)} {name(child)}")
                    next_frontier.append(child)
                else:
                    alts.append(terminal(len(prefix), k))
            rules.append(f"{name(prefix)} ::= " + " | ".join(alts))
        frontier = next_frontier
    return "\n".join(rules)


def structured_outputs(trie: CodeTrie, kind: ConstraintKind) -> dict:
    """The `structured_outputs` request field that restricts generation to the trie's codes."""
    if kind == "regex":
        return {"regex": trie_regex(trie)}
    if kind == "choice":
        return {"choice": trie_choice(trie)}
    if kind == "grammar":
        return {"grammar": trie_grammar(trie)}
    raise ValueError(f"unknown constraint kind {kind!r}; expected one of {', '.join(CONSTRAINT_KINDS)}")
