"""Prompt templates of the SFT tasks: Jinja files in `inference/templates/`, several per task.

A template file is named `<task>.<n>.j2` (e.g. `next_item.2.j2`); a task's templates are all the
files with its prefix, in order. Training picks one at random per example so the model does not
learn one wording; inference uses the first unless told otherwise. A template may also be given as
a path to any `.j2` file (prompt experiments).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from genrec.errors import GenrecError

TEMPLATE_DIR = Path(__file__).parent / "templates"
TASKS = ("next_item", "item_to_text", "text_to_item", "query_to_item", "explain", "explain_answer")


@functools.cache
def _environment(folder: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def template_names(task: str) -> list[str]:
    """File names of the templates of `task`, in order (`next_item.1.j2`, `next_item.2.j2`, ...)."""
    names = sorted(p.name for p in TEMPLATE_DIR.glob(f"{task}.*.j2"))
    if not names:
        raise GenrecError(f"{TEMPLATE_DIR}: no templates for task {task!r} (expected {task}.1.j2, ...)")
    return names


def render(template: str, **values) -> str:
    """Render one template (a name in `inference/templates/` or a path to a .j2 file), stripped."""
    path = Path(template)
    if path.suffix == ".j2" and path.is_file() and path.parent.resolve() != TEMPLATE_DIR.resolve():
        env, name = _environment(str(path.parent.resolve())), path.name
    else:
        env, name = _environment(str(TEMPLATE_DIR)), path.name
    try:
        return env.get_template(name).render(**values).strip()
    except jinja2.TemplateNotFound:
        raise GenrecError(f"{template}: prompt template not found (templates live in {TEMPLATE_DIR})") from None
    except jinja2.UndefinedError as exc:
        raise GenrecError(f"{template}: template uses an undefined value ({exc.message})") from None
