"""One agent for an application: the graph, its SQLite memory, and the calls the interfaces make.

The terminal, the web page and the HTTP API all go through `Agent.ask` / `Agent.stream`, so they
behave the same: raw input (bytes or text) is checked before it reaches the graph, turns on one
thread are serialised, and every turn returns the reply plus the item cards the guard let through.

    with Agent.open("runs/ml100k") as agent:
        print(agent.ask("alice", "I loved Star Wars and Alien").reply)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from agent.chat_model import ChatModel
from agent.graph import AgentSettings, build_graph
from agent.planner import MAX_MESSAGE_CHARS, message_problem
from agent.tools import AgentContext
from finetune.ranking import Ranker
from serving.ranker import run_ranker

DEFAULT_LLM_URL = "http://127.0.0.1:8000/v1"
MAX_THREAD_CHARS = 200


@dataclass
class AgentReply:
    """One turn's answer."""

    reply: str
    items: list[dict[str, Any]] = field(default_factory=list)  # item_id, title, explanation, attributes, image
    thread_id: str = ""
    source: str = "rules"  # "model" if the model wrote the reply, else "rules"
    planner: str = "rules"  # "model" if the model chose the tools
    note: str = ""  # why the model did not write it, when it did not

    def public_items(self) -> list[dict[str, Any]]:
        """The items in the HTTP API's shape."""
        return [{"item_id": i["item_id"], "title": i["title"], "explanation": i.get("explanation", "")} for i in self.items]


def decode_message(raw: str | bytes | None) -> tuple[str, str | None]:
    """Text of a message as received, and the reason it cannot be answered (None when it can).

    Bytes that are not UTF-8 are refused (decoding them "with replacement" would make the agent
    answer a message the user never wrote); huge messages are refused before anything is stored.
    """
    if raw is None:
        raw = ""
    if isinstance(raw, bytes):
        if len(raw) > 4 * MAX_MESSAGE_CHARS:
            return "", message_problem("x" * (len(raw) // 4 + 1)) or ""
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "", message_problem("\udcff") or ""
    return raw, message_problem(raw)


class Agent:
    """The compiled graph over one run, with a SQLite checkpointer at `RUN/chat.sqlite`."""

    def __init__(self, ctx: AgentContext, chat: ChatModel | None, db_path: Path,
                 settings: AgentSettings | None = None):
        self.ctx = ctx
        self.chat = chat
        self.db_path = Path(db_path)
        from langgraph.checkpoint.sqlite import SqliteSaver

        # One connection shared by threads: SqliteSaver serialises its own use of it with a lock.
        self._conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30)
        self.checkpointer = SqliteSaver(self._conn)
        self.graph = build_graph(ctx, chat, self.checkpointer, settings)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def open(
        cls,
        run: str | Path,
        llm_url: str | None = DEFAULT_LLM_URL,
        *,
        chat_url: str | None = None,
        db_path: str | Path | None = None,
        settings: AgentSettings | None = None,
        ranker: Ranker | None = None,
        llm_timeout_s: float = 20.0,
    ) -> "Agent":
        """Open a run's agent; `llm_url=None` answers from retrieval alone (no model server at all).

        `llm_url` serves the fine-tuned recommender; `chat_url` the model that writes replies and
        explanations (default: `llm_url`, whose base model then chats)."""
        if ranker is None:
            ranker = run_ranker(run, llm_url, timeout_s=llm_timeout_s)
        ctx = AgentContext.open(run, ranker=ranker)
        talk = chat_url or llm_url
        chat = ChatModel(talk, timeout_s=llm_timeout_s) if talk else None
        if chat is not None:
            from agent.explainer import ChatExplainer

            ctx.explainer = ChatExplainer(chat, ctx.searcher.items)
        return cls(ctx, chat, Path(db_path) if db_path else ctx.paths.root / "chat.sqlite", settings)

    def close(self) -> None:
        """Close the memory database and model connections."""
        if self.chat is not None:
            self.chat.close()
        self._conn.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(thread_id, threading.Lock())

    @staticmethod
    def _config(thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": 12}

    @staticmethod
    def check_thread(thread_id: str) -> str:
        """A usable thread name (non-empty, bounded)."""
        thread_id = (thread_id or "").strip()
        if not thread_id:
            return "default"
        return thread_id[:MAX_THREAD_CHARS]

    def ask(self, thread_id: str, message: str | bytes | None) -> AgentReply:
        """Answer one message in a thread (memory is loaded from and saved to the checkpointer)."""
        thread_id = self.check_thread(thread_id)
        text, problem = decode_message(message)
        if problem:
            return AgentReply(problem, [], thread_id)
        with self._thread_lock(thread_id):
            state = self.graph.invoke({"messages": [HumanMessage(content=text)]}, self._config(thread_id))
        return self._reply(state, thread_id)

    def stream(self, thread_id: str, message: str | bytes | None) -> Iterator[dict[str, Any]]:
        """Answer one message as a stream of events: `step` (planner's tool calls, each tool's
        result size), then `reply` (text, items). The reply comes only after the guard checked it."""
        thread_id = self.check_thread(thread_id)
        text, problem = decode_message(message)
        if problem:
            yield {"event": "reply", "thread_id": thread_id, "reply": problem, "items": []}
            return
        with self._thread_lock(thread_id):
            for update in self.graph.stream({"messages": [HumanMessage(content=text)]}, self._config(thread_id),
                                            stream_mode="updates"):
                for node, delta in update.items():
                    if node == "planner" and delta and delta.get("messages"):
                        calls = [{"name": c["name"], "args": c["args"]} for c in delta["messages"][-1].tool_calls]
                        yield {"event": "step", "node": node, "planner": delta.get("planner"), "tool_calls": calls}
                    elif node == "tools" and delta:
                        yield {"event": "step", "node": node, "results": [m.name for m in delta.get("messages", [])]}
            state = self.graph.get_state(self._config(thread_id)).values
        answer = self._reply(state, thread_id)
        yield {"event": "reply", "thread_id": thread_id, "reply": answer.reply, "items": answer.items,
               "source": answer.source, "planner": answer.planner}

    def _reply(self, state: dict[str, Any], thread_id: str) -> AgentReply:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        return AgentReply(str(last.content), list(last.additional_kwargs.get("items") or []), thread_id,
                          last.additional_kwargs.get("source", "rules"), state.get("planner", "rules"),
                          state.get("llm_note", ""))

    def memory(self, thread_id: str) -> dict[str, Any]:
        """What a thread remembers: liked items, preferences, user, last items, number of turns."""
        values = self.graph.get_state(self._config(self.check_thread(thread_id))).values or {}
        titles = self.ctx.titles.titles
        return {
            "thread_id": thread_id,
            "turns": sum(isinstance(m, HumanMessage) for m in values.get("messages", [])),
            "history": [{"item_id": i, "title": titles.get(i, "")} for i in values.get("history") or []],
            "preferences": values.get("preferences") or {},
            "user_id": values.get("user_id"),
            "candidates": [{"item_id": c["item_id"], "title": c["title"]} for c in values.get("candidates") or []],
        }

    def transcript(self, thread_id: str) -> list[tuple[str, str]]:
        """The thread's human/assistant exchanges as (role, text), oldest first."""
        values = self.graph.get_state(self._config(self.check_thread(thread_id))).values or {}
        out = []
        for m in values.get("messages", []):
            if isinstance(m, HumanMessage):
                out.append(("user", str(m.content)))
            elif isinstance(m, AIMessage) and not m.tool_calls:
                out.append(("assistant", str(m.content)))
        return out
