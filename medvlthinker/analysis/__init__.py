"""Analysis: the paper table, plots, the HTML report.

- ``runs``: the eval runs an analysis reads (specs, trees, the one records reader, grading);
- ``published``: the paper's numbers and the interval a reproduction should land in;
- ``paper_table``: the table's statistics (cells, intervals, published and paired comparisons);
- ``render``: Markdown, LaTeX, TSV and JSON; ``tables``: one call for the scripts, and every public name above;
- ``plots``, ``report``: the figures and the self-contained HTML report.
"""

from medvlthinker.errors import UserError


class AnalysisError(UserError):
    """Input that cannot be tabulated; the message names the file or row and the fix."""
