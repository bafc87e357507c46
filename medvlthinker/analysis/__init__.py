"""Analysis: the paper table, plots, the HTML report."""
