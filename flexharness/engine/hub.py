"""Once the hub proves unreachable, this process stops asking it.

huggingface_hub retries a failed request five times with backoff: about 25 s
for a dataset and 50 s for a model on a machine without network. Without this,
every case of a run would wait that long to fail the same way. After the first
such failure the process goes offline, as ``HF_HUB_OFFLINE=1`` would have it:
what is in the local caches still loads, the rest fails at once.
"""

from __future__ import annotations

from flexharness.errors import causes

OFFLINE_NOTE = ("the hub could not be reached earlier in this run, so the run no longer asks it "
                "and reads only the local caches")

_went_offline = False


def unreachable(exc: BaseException) -> bool:
    """Whether a load failed because the hub could not be reached (not a missing or private repository)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    return any(isinstance(cause, (ConnectionError, LocalEntryNotFoundError)) for cause in causes(exc))


def go_offline() -> None:
    """Offline for datasets and for transformers (through huggingface_hub) for the rest of the process."""
    global _went_offline
    import datasets
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE:
        return  # the user's own HF_HUB_OFFLINE=1: nothing for the note to explain
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    _went_offline = True


def note() -> str:
    """Said with every later failure, so that a user knows why it came without a network attempt."""
    return f" ({OFFLINE_NOTE})" if _went_offline else ""
