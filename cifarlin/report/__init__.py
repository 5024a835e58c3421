"""The report layer: ``cifarlin report`` assembles the assignment's report from an outputs folder.

:mod:`~cifarlin.report.gather` reads every run, sweep and gradient check under the folder into one
JSON-ready document (sections of tables, figures and notes; every number from a file);
:mod:`~cifarlin.report.pictures` finds or draws the figures it names; :mod:`~cifarlin.report.render`
writes it as one self-contained HTML page (figures as data URIs), as Markdown beside an
``images/`` folder, or as a PDF printed by a headless Chromium. It reads through ``work`` (the
catalog of runs), ``figures`` and ``search`` (sweep files), and is used only by the command line.
"""
