"""What an item keeps and finds again: result-cache keys (pure functions of cases, data and models), the
records, per-example outputs and fine-tuned weights behind the ``Store`` protocol the axes use."""
