"""Comment Markdown to safe HTML: rendered with markdown-it-py (CommonMark, plus GFM tables and
strikethrough; decision 0052), then sanitised with `nh3` to an explicit allow-list (decision
0003). Raw HTML in the Markdown goes through the same sanitiser, so what is not on the list
comes back inert.

markdown-it-py's time grows linearly with the input, where Python-Markdown's was quadratic on
some inputs (5,000 `[` took seconds of CPU).
"""

import re
from collections.abc import Sequence

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "b",
    "i",
    "u",
    "s",
    "del",
    "ins",
    "sub",
    "sup",
    "kbd",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    # Only `language-…`, which fenced code writes for syntax highlighting (see _keep).
    "code": {"class"},
}
# Their content goes too, not just the tags.
DROPPED_WITH_CONTENT = {"script", "style"}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer"

_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")


def _keep(tag: str, attribute: str, value: str) -> str | None:
    if tag == "code" and attribute == "class":
        return value if _LANGUAGE_CLASS.fullmatch(value) else None
    return value


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_keep,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
    )


def _cell_with_align(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """Table cell alignment as an `align` attribute, not a `style` (no style attributes pass)."""
    token = tokens[idx]
    style = token.attrGet("style")
    if isinstance(style, str) and style.startswith("text-align:"):
        del token.attrs["style"]
        token.attrSet("align", style.removeprefix("text-align:"))
    return renderer.renderToken(tokens, idx, options, env)


def _make_renderer() -> MarkdownIt:
    # `breaks`: a single newline is a line break, as users of a comment box expect.
    renderer = MarkdownIt("commonmark", {"breaks": True, "html": True})
    renderer.enable(["table", "strikethrough"])
    # Every link is rendered; which URL schemes survive is the sanitiser's one decision.
    renderer.validateLink = lambda url: True
    renderer.add_render_rule("th_open", _cell_with_align)
    renderer.add_render_rule("td_open", _cell_with_align)
    return renderer


_RENDERER = _make_renderer()


def render_markdown(content: str) -> str:
    """The comment's HTML as served in `content_html`."""
    return sanitize(_RENDERER.render(content)).strip()
