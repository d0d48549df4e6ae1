"""The suite reader: the data model (``spec``), YAML with line numbers (``yamlio``), the typed reader
(``schema``), gate specs (``gatespec``), ``pkg://`` resources, and loading, section readers and planning
(``reader``). Plain data: it imports no torch and no engine."""
