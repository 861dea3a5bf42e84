"""The web chat page (Gradio): a conversation on the left, the items it is about on the right as
cards (title, attributes, image when the item has one, and why it was chosen).

A turn streams: what the agent is doing ("choosing tools"), each tool call as it is made and its
result (collapsible steps in the conversation), then the reply as the model writes it, replaced at
the end by the checked reply (the guard's). A photo can be attached: the agent searches by it.
Each browser tab gets its own conversation thread; typing another conversation name resumes that
thread from the agent's SQLite memory. With API keys the page asks for one, and a thread opens
only with the key that started it.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.session import Agent, ThreadForbidden
from agent.tools import describe

MAX_INLINE_IMAGE_BYTES = 2_000_000

CSS = """
#cards .cards { display: flex; flex-direction: column; gap: 10px; }
#cards .card { display: flex; gap: 12px; border: 1px solid #d0d7de; border-radius: 10px; padding: 10px 12px; background: #fff; }
#cards .card img { width: 72px; height: 96px; object-fit: cover; border-radius: 6px; flex: none; }
#cards .card-title { font-weight: 600; font-size: 1.02em; color: #0b3d91; }
#cards .card-id { color: #57606a; font-size: 0.85em; margin-left: 4px; }
#cards .card-attrs { color: #24292f; font-size: 0.9em; margin-top: 2px; }
#cards .card-why { color: #57606a; font-size: 0.88em; margin-top: 4px; font-style: italic; }
#cards .empty { color: #57606a; }
"""


def image_src(image: str | None) -> str | None:
    """An <img> source for an item image: URLs as they are, local files inlined (so no file route is needed)."""
    if not image:
        return None
    if image.startswith(("http://", "https://", "data:")):
        return image
    path = Path(image)
    try:
        if not path.is_file() or path.stat().st_size > MAX_INLINE_IMAGE_BYTES:
            return None
        mime = mimetypes.guess_type(path.name)[0] or "image/png"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    except OSError:
        return None


def cards_html(items: list[dict[str, Any]]) -> str:
    """Item cards as HTML; every text is escaped (catalog text is data, never markup)."""
    if not items:
        return '<div class="cards"><p class="empty">Items I recommend or talk about appear here.</p></div>'
    out = ['<div class="cards">']
    for item in items:
        src = image_src(item.get("image"))
        img = (
            f'<img src="{html.escape(src, quote=True)}" alt="{html.escape(item["title"], quote=True)}">' if src else ""
        )
        attrs = describe(item.get("attributes") or {})
        why = item.get("explanation") or ""
        out.append(
            f'<div class="card" data-item-id="{html.escape(str(item["item_id"]), quote=True)}">{img}<div>'
            f'<div class="card-title">{html.escape(item["title"])}<span class="card-id">id {html.escape(str(item["item_id"]))}</span></div>'
            + (f'<div class="card-attrs">{html.escape(attrs)}</div>' if attrs else "")
            + (f'<div class="card-why">{html.escape(why)}</div>' if why else "")
            + "</div></div>"
        )
    out.append("</div>")
    return "".join(out)


def call_text(name: str, args: dict[str, Any]) -> str:
    """A tool call as the page shows it: `recommend(liked=["Alien"], genres=["Comedy"])`."""
    shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return f"{name}({shown})"


def turn_events(
    agent: Agent, thread: str, message: str, photo: bytes | None, key: str | None, history: list[dict[str, Any]]
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]]:
    """The conversation as it should look after each event of a streamed turn: (messages, cards or None)."""
    history = list(history) + [{"role": "user", "content": message or "(photo)"}]
    status = {
        "role": "assistant",
        "content": "",
        "metadata": {"title": "Working: reading your message", "status": "pending"},
    }
    history.append(status)
    yield history, None
    steps: list[dict[str, Any]] = []
    answer: dict[str, Any] | None = None
    for event in agent.stream(thread, message, photo, api_key=key):
        kind = event["event"]
        if kind == "status":
            status["metadata"] = {"title": f"Working: {event['text']}", "status": "pending"}
        elif kind == "tool_call":
            by = "the chat model" if event.get("planner") == "model" else "the rule-based fallback"
            step = {
                "role": "assistant",
                "content": f"`{call_text(event['name'], event['args'])}` (chosen by {by})",
                "metadata": {"title": f"Tool call: {event['name']}", "status": "pending"},
            }
            steps.append(step)
            history.insert(history.index(status), step)
        elif kind == "tool_result":
            step = next(
                (
                    s
                    for s in steps
                    if s["metadata"]["title"] == f"Tool call: {event['name']}" and s["metadata"]["status"] == "pending"
                ),
                None,
            )
            if step is not None:
                step["content"] += (
                    f"\n\n→ {'error: ' + str(event['error']) if event.get('error') else str(event['items']) + ' items'}"
                )
                step["metadata"]["status"] = "done"
        elif kind == "delta":
            if status in history and status.get("metadata"):
                status.pop("metadata")
                status["content"] = ""
            status["content"] += event["text"]
        elif kind == "reset":  # the reply is being rewritten: what was shown of it goes
            status["content"] = ""
        elif kind == "reply":
            answer = event
        yield history, None
    if answer is not None:
        status.pop("metadata", None)
        status["content"] = answer["reply"]
        yield history, answer["items"]


def create_ui(agent: Agent, api_keys: Sequence[str] = ()) -> Any:
    """The Gradio Blocks app of the chat page (launch it, or mount it on a FastAPI app)."""
    import gradio as gr

    keys = [k for k in api_keys if k]

    def key_of(entered: str | None) -> tuple[str | None, str | None]:
        """(the key to act with, why the request is refused or None)."""
        if not keys:
            return None, None
        entered = (entered or "").strip()
        if entered not in keys:
            return None, "Enter a valid API key above to chat."
        return entered, None

    def respond(
        message: str, photo: str | None, history: list[dict[str, Any]] | None, thread: str, entered: str | None
    ):
        thread = agent.check_thread(thread or uuid.uuid4().hex[:12])
        history = list(history or [])
        key, refused = key_of(entered)
        if refused:
            yield (
                "",
                None,
                history + [{"role": "user", "content": message or ""}, {"role": "assistant", "content": refused}],
                gr.skip(),
            )
            return
        data = Path(photo).read_bytes() if photo else None
        try:
            for shown, items in turn_events(agent, thread, message or "", data, key, history):
                yield "", None, shown, (cards_html(items) if items is not None else gr.skip())
        except ThreadForbidden as exc:
            yield "", None, history + [{"role": "assistant", "content": f"{exc}."}], gr.skip()

    def resume(thread: str, entered: str | None):
        thread = agent.check_thread(thread)
        key, refused = key_of(entered)
        if refused:
            return [{"role": "assistant", "content": refused}], cards_html([])
        try:
            history = [{"role": role, "content": text} for role, text in agent.transcript(thread, api_key=key)]
            memory = agent.memory(thread, api_key=key)
        except ThreadForbidden as exc:
            return [{"role": "assistant", "content": f"{exc}."}], cards_html([])
        items = [agent.ctx.card(c["item_id"], explanation="") for c in memory["candidates"]]
        return history, cards_html(items)

    def new_thread() -> str:
        return "web-" + uuid.uuid4().hex[:10]

    with gr.Blocks(title="genrec chat", analytics_enabled=False) as demo:
        gr.Markdown(
            "## genrec: tell me what you liked, I will find what to watch next\n"
            "Every item I name comes from the catalog; ask *why that one?* for the reasons, "
            "or attach a photo to find items that look like it."
        )
        key_box = gr.Textbox(label="API key", type="password", elem_id="api-key", visible=bool(keys))
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(elem_id="chat", height=460, label="Conversation", buttons=["copy"])
                with gr.Row():
                    box = gr.Textbox(
                        elem_id="message",
                        placeholder="I loved Star Wars and Alien",
                        show_label=False,
                        scale=5,
                        max_lines=4,
                        autofocus=True,
                    )
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=1)
                photo = gr.Image(
                    label="Photo (optional): find items that look like it",
                    type="filepath",
                    sources=["upload"],
                    elem_id="photo",
                    height=120,
                )
                thread = gr.Textbox(label="Conversation name (type one to resume it)", elem_id="thread")
            with gr.Column(scale=2):
                cards = gr.HTML(cards_html([]), elem_id="cards", label="Items")
        inputs = [box, photo, chatbot, thread, key_box]
        outputs = [box, photo, chatbot, cards]
        send.click(respond, inputs, outputs)
        box.submit(respond, inputs, outputs)
        thread.submit(resume, [thread, key_box], [chatbot, cards])
        demo.load(new_thread, None, thread)
    return demo


def launch_ui(
    agent: Agent, host: str = "127.0.0.1", port: int = 7860, block: bool = True, api_keys: Sequence[str] = ()
) -> Any:
    """Serve the page; with `block=False` return at once (tests), else until Ctrl-C. Up to 16
    conversations run at once (the chat server batches their requests)."""
    demo = create_ui(agent, api_keys)
    demo.queue(default_concurrency_limit=16)
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=not block,
        css=CSS,
        footer_links=[],
        show_error=True,
    )
    return demo
