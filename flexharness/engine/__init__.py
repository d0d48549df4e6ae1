"""The engine: data, models, fine-tuning, surgery and one case end to end.

It knows no pytest: the pytest side calls it, and it reports failures as
:class:`flexharness.errors.FlexError` subclasses.
"""
