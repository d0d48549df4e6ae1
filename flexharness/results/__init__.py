"""Results documents: JSON I/O, reports, plots, comparison and merging.

Plain functions of the ``--flex-json`` document; never imports torch, so
``flexharness report``, ``compare`` and ``merge`` start in a moment.
"""
