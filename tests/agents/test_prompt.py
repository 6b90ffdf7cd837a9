"""Which templates render in place: an internal rule, tested here because its mistakes would be silent.

A template wrongly judged linear would render on the event loop with no time limit; one
wrongly judged not linear only costs a trip to a sandbox worker.
"""

from __future__ import annotations

import jinja2
import pytest

from wippy_agents.agents._prompt import is_linear

_environment = jinja2.Environment()


@pytest.mark.parametrize("source", [
    "Plain text.",
    "You are {{ agent.title }} ({{ agent.id }}). {{ context.topic | default('anything') | upper }}",
    "{% if context.formal %}Dear {{ context.name }},{% else %}Hi!{% endif %}",
    "{{ items | join(', ') }} and {{ a ~ b }} {{ x[0] }} {{ x[1:3] }} {{ n + 1 }}",
    "{# a comment #}{% raw %}{{ not a tag }}{% endraw %}",
])
def test_templates_that_take_linear_time_render_in_place(source: str) -> None:
    assert is_linear(_environment.parse(source))


@pytest.mark.parametrize("source", [
    "{% for i in range(10) %}{{ i }}{% endfor %}",
    "{% set a = 'x' %}{{ a }}",
    "{% with a = b ~ b %}{{ a }}{% endwith %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{{ 'a' * 1000000000 }}",
    "{{ '%1000000000s' % x }}",
    "{{ x.upper() }}",
    "{{ x | center(1000000000) }}",
    "{{ x | replace('a', 'aaaa') }}",
    "{{ x | join(y) }}",
    "{{ x | default('" + "y" * 200 + "') }}",
    "{% filter center(100000000) %}x{% endfilter %}",
])
def test_templates_that_could_run_long_or_grow_go_to_the_sandbox(source: str) -> None:
    assert not is_linear(_environment.parse(source))
