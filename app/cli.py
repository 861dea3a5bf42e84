"""The `genrec` console command: one entry point for every stage.

Commands live beside the code they drive (`retrieval/commands.py`, `finetune/commands.py`,
`serving/commands.py`, ...);
this module only registers them and turns `GenrecError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import os
import sys

import typer

from agent import commands as agent_commands
from app import demo as demo_command
from eval import commands as eval_commands
from finetune import commands as finetune_commands
from finetune.launch import report_error
from genrec.errors import GenrecError
from genrec.memory import keep_freed_memory, limit_onednn_cache
from retrieval import commands as retrieval_commands
from serving import commands as serving_commands

app = typer.Typer(
    help="genrec: multimodal generative recommendation with semantic IDs, LoRA, vLLM and a LangGraph agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("demo")(demo_command.demo)
app.command("index")(retrieval_commands.index)
app.command("search")(retrieval_commands.search)
app.add_typer(retrieval_commands.items_app, name="items")
app.command("train")(finetune_commands.train)
app.command("recommend")(serving_commands.recommend)
app.command("serve")(serving_commands.serve)
app.command("chat")(agent_commands.chat)
app.command("ui")(agent_commands.ui)
app.command("api")(agent_commands.api)
app.add_typer(eval_commands.eval_app, name="eval")
app.command("experiment")(eval_commands.experiment)


def offline_environment() -> None:
    """Nothing is ever fetched from a model hub; set that before any library reads the environment."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def main() -> None:
    """Run the command line; user errors print one line and exit 2."""
    offline_environment()
    keep_freed_memory()
    limit_onednn_cache()
    try:
        app()
    except GenrecError as exc:
        if not report_error(str(exc)):  # a process of `genrec train --processes N`: its launcher prints it once
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
