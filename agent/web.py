"""The web chat page (Gradio): a conversation on the left, the items it is about on the right as
cards (title, attributes, image when the item has one, and why it was chosen).

Each browser tab gets its own conversation thread; typing another conversation name resumes that
thread from the agent's SQLite memory.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import uuid
from pathlib import Path
from typing import Any

from agent.session import Agent
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
        img = f'<img src="{html.escape(src, quote=True)}" alt="{html.escape(item["title"], quote=True)}">' if src else ""
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


def create_ui(agent: Agent) -> Any:
    """The Gradio Blocks app of the chat page (launch it, or mount it on a FastAPI app)."""
    import gradio as gr

    def respond(message: str, history: list[dict[str, Any]] | None, thread: str):
        thread = agent.check_thread(thread or uuid.uuid4().hex[:12])
        answer = agent.ask(thread, message or "")
        history = list(history or []) + [{"role": "user", "content": message or ""},
                                         {"role": "assistant", "content": answer.reply}]
        return "", history, cards_html(answer.items)

    def resume(thread: str):
        thread = agent.check_thread(thread)
        history = [{"role": role, "content": text} for role, text in agent.transcript(thread)]
        memory = agent.memory(thread)
        items = [agent.ctx.card(c["item_id"], explanation="") for c in memory["candidates"]]
        return history, cards_html(items)

    def new_thread() -> str:
        return "web-" + uuid.uuid4().hex[:10]

    with gr.Blocks(title="genrec chat", analytics_enabled=False) as demo:
        gr.Markdown("## genrec: tell me what you liked, I will find what to watch next\n"
                    "Every item I name comes from the catalog; ask *why that one?* for the reasons.")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(elem_id="chat", height=460, label="Conversation", buttons=["copy"])
                with gr.Row():
                    box = gr.Textbox(elem_id="message", placeholder="I loved Star Wars and Alien", show_label=False,
                                     scale=5, max_lines=4, autofocus=True)
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=1)
                thread = gr.Textbox(label="Conversation name (type one to resume it)", elem_id="thread")
            with gr.Column(scale=2):
                cards = gr.HTML(cards_html([]), elem_id="cards", label="Items")
        send.click(respond, [box, chatbot, thread], [box, chatbot, cards])
        box.submit(respond, [box, chatbot, thread], [box, chatbot, cards])
        thread.submit(resume, [thread], [chatbot, cards])
        demo.load(new_thread, None, thread)
    return demo


def launch_ui(agent: Agent, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve the page; with `block=False` return at once (tests), else until Ctrl-C."""
    demo = create_ui(agent)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                css=CSS, footer_links=[], show_error=True)
    return demo
