"""MkDocs hook: render npoptim's reStructuredText-flavoured docstrings as Markdown.

npoptim's docstrings follow torch's: Google-style sections (``Args:``, ``Example:``) around
reStructuredText markup. mkdocstrings parses the sections and hands every piece of text to
Python-Markdown, with the extensions listed in ``mkdocs.yml``; this hook adds one more, a
preprocessor that rewrites the reST it finds into the Markdown those extensions understand:

=====================================  =================================================
reST                                   Markdown
=====================================  =================================================
``.. math::`` block                    ``$$ ... $$`` (pymdownx.arithmatex, MathJax)
``:math:`x```                          ``\\(x\\)``
``.. warning::`` (note, tip, ...)      ``!!! warning`` admonition
``:class:`~npoptim.Adam``` (meth,      a link to the API reference where the object is
func, attr, mod, ...)                  documented, inline code otherwise
```text <url>`_``                      ``[text](url)``
``text::`` + indented block            ``text:`` + a fenced Python block
``>>>`` doctest block                  a fenced ``pycon`` block
simple table (``====  ====``)          a Markdown table
=====================================  =================================================

Fenced code blocks are left alone, so the Markdown pages of the site are unaffected.
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig

_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?P<name>[\w-]+)::\s*(?P<arg>.*)$")
_ADMONITIONS = {
    "note": "note",
    "warning": "warning",
    "tip": "tip",
    "hint": "tip",
    "important": "important",
    "caution": "warning",
    "danger": "danger",
    "attention": "warning",
    "seealso": "info",
    "deprecated": "warning",
}
_ROLES = "class|meth|func|attr|mod|obj|exc|data|const"
_INLINE = re.compile(
    r"(?P<literal>``.+?``)"  # ``code``: left as it is (Markdown reads it the same way)
    r"|:math:`(?P<tex>[^`]+)`"
    rf"|:(?:py:)?(?P<role>{_ROLES}):`(?P<body>[^`]+)`"
    r"|`(?P<text>[^`<]+?)\s*<(?P<url>[^`>]+)>`__?",
    re.DOTALL,
)
_TABLE_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")

# Short names ("Adam", "LRScheduler.step") -> the identifiers mkdocstrings registers for them.
_IDENTIFIERS: dict[str, str] = {}
_MODULES = [
    "npoptim",
    "npoptim.optimizer",
    "npoptim.parameter",
    "npoptim.lr_scheduler",
    "npoptim.swa_utils",
    "npoptim.clip_grad",
    "npoptim.serialization",
    "npoptim.functional",
    "npoptim.interop.torch",
]


def _collect_identifiers() -> None:
    top = importlib.import_module("npoptim")
    for module_name in _MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a module still being written
            continue
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if inspect.ismodule(obj):
                continue
            home = "npoptim" if name in getattr(top, "__all__", []) else module_name
            ident = f"{home}.{name}"
            _IDENTIFIERS.setdefault(name, ident)
            _IDENTIFIERS.setdefault(f"{module_name}.{name}", ident)
            if inspect.isclass(obj):
                for member in vars(obj):
                    if not member.startswith("_"):
                        _IDENTIFIERS.setdefault(f"{name}.{member}", f"{ident}.{member}")
                        _IDENTIFIERS.setdefault(f"{ident}.{member}", f"{ident}.{member}")


def _role(role: str, body: str) -> str:
    body = body.strip()
    explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body, re.DOTALL)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
    if role in ("meth", "func"):
        title += "()"
    ident = _IDENTIFIERS.get(target, target if target.startswith("npoptim.") else "")
    code = f"<code>{title}</code>"
    if not ident:
        return code
    # "optional": a link when the target is documented on the site, plain code (and no
    # warning, so no failure of `mkdocs build --strict`) when it is not.
    return f'<autoref identifier="{ident}" optional>{code}</autoref>'


def _inline_one(match: re.Match[str]) -> str:
    if match["literal"]:
        return match["literal"]
    if match["tex"]:
        return "\\(" + match["tex"] + "\\)"
    if match["role"]:
        return _role(match["role"], match["body"])
    return f"[{match['text']}]({match['url']})"


def _inline(text: str) -> str:
    """Rewrite the inline reST of ``text``: math, roles and links."""
    return _INLINE.sub(_inline_one, text)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines after ``start`` indented deeper than ``indent`` (blank lines included)."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > indent):
        end += 1
    body = lines[start:end]
    while body and not body[-1].strip():
        body.pop()
        end -= 1
    return textwrap.dedent("\n".join(body)).split("\n") if body else [], end


def _table(lines: list[str], start: int) -> tuple[list[str], int] | None:
    """A reST simple table starting at ``start`` as Markdown table lines, and its end."""
    border = lines[start]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
    borders = [start]
    i = start + 1
    while i < len(lines) and lines[i].strip() and len(borders) < 3:
        if _TABLE_BORDER.match(lines[i]):
            borders.append(i)
        i += 1
    if len(borders) < 2:
        return None
    if len(borders) == 2 or borders[1] == borders[-1]:  # no header row
        header: list[str] = [""] * len(spans)
        body_lines = lines[borders[0] + 1 : borders[1]]
        end = borders[1] + 1
    else:
        header = [_cell(lines[start + 1], s, e, last) for s, e, last in _columns(spans)]
        body_lines = lines[borders[1] + 1 : borders[2]]
        end = borders[2] + 1
    rows: list[list[str]] = []
    for line in body_lines:
        cells = [_cell(line, s, e, last) for s, e, last in _columns(spans)]
        if rows and (not cells[0] or not any(cells[1:])):  # a continuation line
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    out = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(spans)]
    out += ["| " + " | ".join(_inline(c).replace("|", r"\|") for c in row) + " |" for row in rows]
    return [*out, ""], end


def _columns(spans: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    return [(s, e, i == len(spans) - 1) for i, (s, e) in enumerate(spans)]


def _cell(line: str, start: int, end: int, last: bool) -> str:
    return (line[start:] if last else line[start:end]).strip()


class RstPreprocessor(Preprocessor):  # type: ignore[misc]
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        paragraph: list[str] = []  # inline markup may span the lines of a paragraph
        in_fence = False
        i = 0

        def flush() -> None:
            if paragraph:
                out.extend(_inline("\n".join(paragraph)).split("\n"))
                paragraph.clear()

        while i < len(lines):
            line = lines[i]
            if _FENCE.match(line):
                flush()
                in_fence = not in_fence
                out.append(line)
                i += 1
                continue
            if in_fence:
                out.append(line)
                i += 1
                continue
            directive = _DIRECTIVE.match(line)
            if directive:
                flush()
                indent = directive["indent"]
                body, i = _block(lines, i + 1, len(indent))
                name = directive["name"]
                if name == "math":
                    tex = [directive["arg"], *body] if directive["arg"] else body
                    out += ["", f"{indent}$$"] + [indent + t for t in tex if t.strip()]
                    out += [f"{indent}$$", ""]
                elif name in _ADMONITIONS:
                    title = f' "{directive["arg"]}"' if directive["arg"] else ""
                    out += ["", f"{indent}!!! {_ADMONITIONS[name]}{title}", ""]
                    out += [f"{indent}    {b}" if b.strip() else "" for b in self.run(body)]
                    out.append("")
                elif name in ("code-block", "code", "sourcecode"):
                    out += ["", f"{indent}```{directive['arg'] or 'python'}"]
                    out += [indent + b for b in body] + [f"{indent}```", ""]
                else:  # an unknown directive: keep its body as text
                    out += ["", *body, ""]
                continue
            if _TABLE_BORDER.match(line) and (table := _table(lines, i)):
                flush()
                rows, i = table
                out += rows
                continue
            stripped = line.rstrip()
            if stripped.endswith("::") and i + 1 < len(lines):
                body, end = _block(lines, i + 1, _indent_of(line))
                if body and any(b.strip() for b in body):
                    text = stripped[:-2].rstrip()
                    paragraph.append(text + ":" if text.strip() else "")
                    flush()
                    indent = " " * _indent_of(line)
                    while body and not body[0].strip():
                        body.pop(0)
                    lang = "pycon" if body[0].lstrip().startswith(">>>") else "python"
                    out += ["", f"{indent}```{lang}"] + [indent + b for b in body]
                    out += [f"{indent}```", ""]
                    i = end
                    continue
            if not paragraph and line.lstrip().startswith(">>>"):  # a doctest block
                indent = " " * _indent_of(line)
                end = i
                while end < len(lines) and lines[end].strip():
                    end += 1
                out += ["", f"{indent}```pycon", *lines[i:end], f"{indent}```", ""]
                i = end
                continue
            if not line.strip():
                flush()
                out.append(line)
            else:
                paragraph.append(line)
            i += 1
        flush()
        return out


class RstExtension(Extension):  # type: ignore[misc]
    def extendMarkdown(self, md: Markdown) -> None:  # Python-Markdown's name for the hook
        # After whitespace normalisation (30), before fenced code is stashed (25).
        md.preprocessors.register(RstPreprocessor(md), "npoptim_rst", 27)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    _collect_identifiers()
    config.markdown_extensions.append(RstExtension())
    return config


def _debug(text: str) -> str:  # a helper for working on this hook: the Markdown for ``text``
    return "\n".join(RstPreprocessor(Markdown()).run(text.split("\n")))
