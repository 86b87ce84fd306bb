"""The words of the pages the package writes, kept in Jinja2 templates (``cxr_utils/templates``).

The Python that calls ``render`` computes the numbers, the tables and which case applies; the
templates hold the sentences, headings and captions around them. One environment renders them all:

- ``StrictUndefined``: a value the caller did not pass raises instead of printing an empty string
  into a published page;
- ``trim_blocks`` and ``lstrip_blocks``: a ``{% if %}`` on a line of its own leaves no blank line
  or indent in the Markdown, so the templates read like the pages they write;
- ``keep_trailing_newline``: a template's last line ends like every other;
- no autoescaping: the output is Markdown, not HTML.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from cxr_utils.report import counted, duration_text, p_value


def code(value) -> str:
    return f"`{value}`"


def thousands(number) -> str:
    return f"{number:,}"


def percent(share) -> str:
    """A share in [0, 1] as a whole percentage: 0.53 -> 53%."""
    return f"{share:.0%}"


ENVIRONMENT = Environment(loader=PackageLoader("cxr_utils", "templates"), undefined=StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
ENVIRONMENT.filters.update(counted=counted, code=code, thousands=thousands, percent=percent,
                           p_value=p_value, duration=duration_text)


def render(template: str, **values) -> str:
    """The template ``template`` (a file name in ``cxr_utils/templates``) filled with ``values``."""
    return ENVIRONMENT.get_template(template).render(**values)
